#include "adapters/sqlite/wal_write_vfs.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

namespace tally::sqlite {
namespace {

std::atomic<long long> g_writes_received{0};
std::atomic<long long> g_writes_issued{0};

struct ShimFile;

// The WAL files open on one database, one per connection. Any connection's xShmBarrier flushes all of them.
struct WalGroup {
    std::mutex mu;
    std::vector<ShimFile*> wals;
    std::atomic<int> buffered{0};  // files in |wals| whose buffer holds data: the barrier's fast path
};

WalGroup* GroupFor(const std::string& database_path) {
    static std::mutex registry_mu;
    static auto* registry = new std::unordered_map<std::string, std::unique_ptr<WalGroup>>();  // never freed
    std::lock_guard lock(registry_mu);
    auto& slot = (*registry)[database_path];
    if (!slot) slot = std::make_unique<WalGroup>();
    return slot.get();
}

struct ShimFile {
    sqlite3_file base{};  // must be first: SQLite sees this
    sqlite3_file* real = nullptr;
    WalGroup* group = nullptr;  // the main database file's and its WAL files' group; null for other files
    bool is_wal = false;
    std::mutex mu;  // guards the buffer: another connection's barrier may flush it
    std::vector<char> buffer;
    sqlite3_int64 buffer_offset = 0;
    int sticky_error = SQLITE_OK;  // a flush failed where the writer could not be told (FlushGroup)
};

constexpr size_t kRealFileOffset = (sizeof(ShimFile) + 15) & ~size_t{15};

ShimFile* Shim(sqlite3_file* f) { return reinterpret_cast<ShimFile*>(f); }
sqlite3_file* Real(sqlite3_file* f) { return Shim(f)->real; }

// Writes the buffer to the real file, in as few calls as it takes. Caller holds f->mu.
int FlushLocked(ShimFile* f) {
    if (f->buffer.empty()) return f->sticky_error;
    int rc = SQLITE_OK;
    for (size_t done = 0; done < f->buffer.size() && rc == SQLITE_OK; done += kWalWriteChunkBytes) {
        const size_t n = std::min(kWalWriteChunkBytes, f->buffer.size() - done);
        rc = f->real->pMethods->xWrite(f->real, f->buffer.data() + done, static_cast<int>(n),
                                       f->buffer_offset + static_cast<sqlite3_int64>(done));
        g_writes_issued.fetch_add(1, std::memory_order_relaxed);
    }
    f->buffer.clear();
    if (f->group) f->group->buffered.fetch_sub(1, std::memory_order_release);
    return rc;
}

int Flush(ShimFile* f) {
    std::lock_guard lock(f->mu);
    return FlushLocked(f);
}

// Before an operation that must see every write: flush, if this is a WAL file.
int FlushIfWal(ShimFile* f) { return f->is_wal ? Flush(f) : SQLITE_OK; }

// Flushes every WAL buffer of the group (at most one holds data: SQLite has one writer per database). A failure
// here is not the writer's to see: its frames may be published without their bytes, so that WAL file refuses
// every further write and sync (sticky_error) until it is closed, and the caller gets the error too.
int FlushGroup(WalGroup* group) {
    if (group == nullptr || group->buffered.load(std::memory_order_acquire) == 0) return SQLITE_OK;
    std::lock_guard lock(group->mu);
    int first_error = SQLITE_OK;
    for (ShimFile* wal : group->wals) {
        std::lock_guard file_lock(wal->mu);
        const int rc = FlushLocked(wal);
        if (rc != SQLITE_OK && wal->sticky_error == SQLITE_OK) wal->sticky_error = rc;
        if (rc != SQLITE_OK && first_error == SQLITE_OK) first_error = rc;
    }
    return first_error;
}

int ShimClose(sqlite3_file* file) {
    ShimFile* f = Shim(file);
    int rc = SQLITE_OK;
    if (f->is_wal) {
        if (f->group) {
            std::lock_guard lock(f->group->mu);
            auto& v = f->group->wals;
            v.erase(std::remove(v.begin(), v.end(), f), v.end());
        }
        rc = Flush(f);
    }
    const int close_rc = f->real->pMethods->xClose(f->real);
    f->~ShimFile();
    return rc != SQLITE_OK ? rc : close_rc;
}

int ShimRead(sqlite3_file* file, void* out, int amount, sqlite3_int64 offset) {
    ShimFile* f = Shim(file);
    if (f->is_wal) {
        if (int rc = FlushGroup(f->group); rc != SQLITE_OK) return rc;
    }
    return f->real->pMethods->xRead(f->real, out, amount, offset);
}

int ShimWrite(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
    ShimFile* f = Shim(file);
    if (!f->is_wal) return f->real->pMethods->xWrite(f->real, data, amount, offset);
    g_writes_received.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(f->mu);
    if (f->sticky_error != SQLITE_OK) return f->sticky_error;
    if (!f->buffer.empty() &&
        offset != f->buffer_offset + static_cast<sqlite3_int64>(f->buffer.size())) {  // not an append: write out
        if (int rc = FlushLocked(f); rc != SQLITE_OK) return rc;
    }
    if (f->buffer.empty()) {
        f->buffer_offset = offset;
        if (f->group) f->group->buffered.fetch_add(1, std::memory_order_release);
    }
    const char* bytes = static_cast<const char*>(data);
    f->buffer.insert(f->buffer.end(), bytes, bytes + amount);
    if (f->buffer.size() >= kWalWriteBufferBytesMax) return FlushLocked(f);
    return SQLITE_OK;
}

int ShimTruncate(sqlite3_file* file, sqlite3_int64 size) {
    ShimFile* f = Shim(file);
    if (int rc = FlushIfWal(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xTruncate(f->real, size);
}

int ShimSync(sqlite3_file* file, int flags) {
    ShimFile* f = Shim(file);
    if (int rc = FlushIfWal(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xSync(f->real, flags);
}

int ShimFileSize(sqlite3_file* file, sqlite3_int64* size) {
    ShimFile* f = Shim(file);
    if (int rc = FlushIfWal(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xFileSize(f->real, size);
}

int ShimLock(sqlite3_file* file, int level) { return Real(file)->pMethods->xLock(Real(file), level); }
int ShimUnlock(sqlite3_file* file, int level) { return Real(file)->pMethods->xUnlock(Real(file), level); }
int ShimCheckReservedLock(sqlite3_file* file, int* out) {
    return Real(file)->pMethods->xCheckReservedLock(Real(file), out);
}

int ShimFileControl(sqlite3_file* file, int op, void* arg) {
    ShimFile* f = Shim(file);
    if (int rc = FlushIfWal(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

int ShimSectorSize(sqlite3_file* file) { return Real(file)->pMethods->xSectorSize(Real(file)); }
int ShimDeviceCharacteristics(sqlite3_file* file) { return Real(file)->pMethods->xDeviceCharacteristics(Real(file)); }

int ShimShmMap(sqlite3_file* file, int region, int size, int extend, void volatile** out) {
    return Real(file)->pMethods->xShmMap(Real(file), region, size, extend, out);
}
int ShimShmLock(sqlite3_file* file, int offset, int n, int flags) {
    return Real(file)->pMethods->xShmLock(Real(file), offset, n, flags);
}
// SQLite calls this right before it publishes new WAL frames in the wal-index header: the frames must be in
// the file by then, since every other connection reads them from there.
void ShimShmBarrier(sqlite3_file* file) {
    (void)FlushGroup(Shim(file)->group);  // a failure is kept as the WAL's sticky error
    Real(file)->pMethods->xShmBarrier(Real(file));
}
int ShimShmUnmap(sqlite3_file* file, int delete_flag) {
    return Real(file)->pMethods->xShmUnmap(Real(file), delete_flag);
}
int ShimFetch(sqlite3_file* file, sqlite3_int64 offset, int amount, void** out) {
    ShimFile* f = Shim(file);
    if (int rc = FlushIfWal(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xFetch(f->real, offset, amount, out);
}
int ShimUnfetch(sqlite3_file* file, sqlite3_int64 offset, void* p) {
    return Real(file)->pMethods->xUnfetch(Real(file), offset, p);
}

const sqlite3_io_methods kShimMethods = {
    3,
    ShimClose,
    ShimRead,
    ShimWrite,
    ShimTruncate,
    ShimSync,
    ShimFileSize,
    ShimLock,
    ShimUnlock,
    ShimCheckReservedLock,
    ShimFileControl,
    ShimSectorSize,
    ShimDeviceCharacteristics,
    ShimShmMap,
    ShimShmLock,
    ShimShmBarrier,
    ShimShmUnmap,
    ShimFetch,
    ShimUnfetch,
};

sqlite3_vfs* RealVfs(sqlite3_vfs* vfs) { return static_cast<sqlite3_vfs*>(vfs->pAppData); }

int ShimOpen(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
    sqlite3_vfs* real_vfs = RealVfs(vfs);
    auto* f = new (file) ShimFile();
    f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kRealFileOffset);
    std::memset(f->real, 0, static_cast<size_t>(real_vfs->szOsFile));
    const int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        if (f->real->pMethods) f->real->pMethods->xClose(f->real);
        f->~ShimFile();
        file->pMethods = nullptr;
        return rc;
    }
    // Files without shared memory (version < 2) never reach the Shm methods: SQLite uses heap memory instead.
    if (name != nullptr && f->real->pMethods->iVersion >= 3) {
        const std::string path(name);
        if ((flags & SQLITE_OPEN_WAL) != 0 && path.size() > 4 && path.compare(path.size() - 4, 4, "-wal") == 0) {
            f->is_wal = true;
            f->group = GroupFor(path.substr(0, path.size() - 4));
            std::lock_guard lock(f->group->mu);
            f->group->wals.push_back(f);
        } else if ((flags & SQLITE_OPEN_MAIN_DB) != 0) {
            f->group = GroupFor(path);
        }
    }
    f->base.pMethods = &kShimMethods;
    return rc;
}

int ShimDelete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
    return RealVfs(vfs)->xDelete(RealVfs(vfs), name, sync_dir);
}
int ShimAccess(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
    return RealVfs(vfs)->xAccess(RealVfs(vfs), name, flags, out);
}
int ShimFullPathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
    return RealVfs(vfs)->xFullPathname(RealVfs(vfs), name, n, out);
}
void* ShimDlOpen(sqlite3_vfs* vfs, const char* name) { return RealVfs(vfs)->xDlOpen(RealVfs(vfs), name); }
void ShimDlError(sqlite3_vfs* vfs, int n, char* out) { RealVfs(vfs)->xDlError(RealVfs(vfs), n, out); }
void (*ShimDlSym(sqlite3_vfs* vfs, void* handle, const char* symbol))(void) {
    return RealVfs(vfs)->xDlSym(RealVfs(vfs), handle, symbol);
}
void ShimDlClose(sqlite3_vfs* vfs, void* handle) { RealVfs(vfs)->xDlClose(RealVfs(vfs), handle); }
int ShimRandomness(sqlite3_vfs* vfs, int n, char* out) { return RealVfs(vfs)->xRandomness(RealVfs(vfs), n, out); }
int ShimSleep(sqlite3_vfs* vfs, int us) { return RealVfs(vfs)->xSleep(RealVfs(vfs), us); }
int ShimCurrentTime(sqlite3_vfs* vfs, double* out) { return RealVfs(vfs)->xCurrentTime(RealVfs(vfs), out); }
int ShimGetLastError(sqlite3_vfs* vfs, int n, char* out) { return RealVfs(vfs)->xGetLastError(RealVfs(vfs), n, out); }
int ShimCurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
    return RealVfs(vfs)->xCurrentTimeInt64(RealVfs(vfs), out);
}
int ShimSetSystemCall(sqlite3_vfs* vfs, const char* name, sqlite3_syscall_ptr p) {
    return RealVfs(vfs)->xSetSystemCall(RealVfs(vfs), name, p);
}
sqlite3_syscall_ptr ShimGetSystemCall(sqlite3_vfs* vfs, const char* name) {
    return RealVfs(vfs)->xGetSystemCall(RealVfs(vfs), name);
}
const char* ShimNextSystemCall(sqlite3_vfs* vfs, const char* name) {
    return RealVfs(vfs)->xNextSystemCall(RealVfs(vfs), name);
}

sqlite3_vfs* MakeShim() {
    sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
    if (real == nullptr || real->iVersion < 3) return nullptr;
    auto* vfs = new sqlite3_vfs{};  // lives for the process, like every registered VFS
    vfs->iVersion = 3;
    vfs->szOsFile = static_cast<int>(kRealFileOffset) + real->szOsFile;
    vfs->mxPathname = real->mxPathname;
    vfs->zName = kWalWriteVfsName;
    vfs->pAppData = real;
    vfs->xOpen = ShimOpen;
    vfs->xDelete = ShimDelete;
    vfs->xAccess = ShimAccess;
    vfs->xFullPathname = ShimFullPathname;
    vfs->xDlOpen = ShimDlOpen;
    vfs->xDlError = ShimDlError;
    vfs->xDlSym = ShimDlSym;
    vfs->xDlClose = ShimDlClose;
    vfs->xRandomness = ShimRandomness;
    vfs->xSleep = ShimSleep;
    vfs->xCurrentTime = ShimCurrentTime;
    vfs->xGetLastError = ShimGetLastError;
    vfs->xCurrentTimeInt64 = ShimCurrentTimeInt64;
    vfs->xSetSystemCall = ShimSetSystemCall;
    vfs->xGetSystemCall = ShimGetSystemCall;
    vfs->xNextSystemCall = ShimNextSystemCall;
    if (sqlite3_vfs_register(vfs, 0) != SQLITE_OK) {
        delete vfs;
        return nullptr;
    }
    return vfs;
}

}  // namespace

const char* RegisterWalWriteVfs() {
    static sqlite3_vfs* shim = MakeShim();
    return shim ? kWalWriteVfsName : nullptr;
}

WalWriteVfsStats GetWalWriteVfsStats() {
    return {g_writes_received.load(std::memory_order_relaxed), g_writes_issued.load(std::memory_order_relaxed)};
}

}  // namespace tally::sqlite
