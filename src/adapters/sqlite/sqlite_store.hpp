#pragma once
// The Store port on SQLite: WAL, synchronous=FULL (a commit is fsync'd before it returns), foreign keys,
// a busy timeout, and forward-only migrations applied at open.
#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <thread>
#include <mutex>
#include <shared_mutex>
#include <vector>
#include <string>
#include <unordered_map>

#include "app/store.hpp"

namespace tally::sqlite {

constexpr int kBusyTimeoutMs = 5000;
/// Read connections: WAL readers run concurrently, so every HTTP and worker thread may read at once (one mutexed
/// connection serialised them: 9% of a read-only check was waiting for it).
constexpr size_t kReaderConnections = 4;
constexpr int kCheckpointIntervalMs = 50;     // how often the checkpointer looks at the WAL
// Checkpoints copy the WAL into the database file and fsync it. Done while commits run, that I/O delays their
// fsyncs (commits of one event took 12-31 ms), so the checkpointer waits for a quiet moment (no commit for
// kCheckpointIdleMs) and then copies everything and restarts the WAL. Only if writes never pause does it checkpoint
// under load, once the WAL holds kWalBusyFramesMax frames (~1 GiB with 4 KiB pages), so the WAL stays bounded.
// Either way the copy (PASSIVE) runs beside writers, repeated until fewer than kWalRestartResidualFramesMax frames
// are left; only then does the checkpointer hold the store's own write and read locks for the RESTART, which
// copies that residue and lets the next commit start the WAL over. Without the locks, RESTART held SQLite's write
// lock while it waited for readers to let go of the WAL: 470 ms without a commit, measured at 1 GiB under load.
constexpr int64_t kCheckpointIdleMs = 100;
constexpr int kWalBusyFramesMax = 262144;
// A restarted WAL is not truncated while the store is open (journal_size_limit=-1): the next commit after a
// restart would pay for it, and freeing a 1 GiB file on a disk mounted with `discard` held one commit for 378 ms.
// The file keeps its high-water mark (at most ~kWalBusyFramesMax frames) and is overwritten in place; closing the
// store truncates it to zero.
constexpr int64_t kWalSizeLimitBytes = -1;
constexpr int kWalRestartFramesMin = 256;  // in a quiet moment, restart a WAL of at least this many frames
constexpr int kWalRestartResidualFramesMax = 512;  // frames (2 MiB) a RESTART may still have to copy
constexpr int kCheckpointCopyRoundsMax = 6;        // PASSIVE rounds to get there; else no RESTART this time
constexpr int kCheckpointReadLockWaitMs = 20;      // how long the RESTART waits for a read to finish
constexpr int64_t kCheckpointWritebackSliceBytes = int64_t{4} * 1024 * 1024;  // database writeback per wait
constexpr int64_t kSlowOperationMs = 100;  // commits and checkpoints slower than this are logged

/// How a store opens its database.
struct StoreOptions {
    /// synchronous=FULL (every COMMIT fsync'd before it returns) and checkpoints that fsync the database. false:
    /// synchronous=OFF and no fsync anywhere, for a database the caller can regenerate (`tally simulate`) only.
    bool durable = true;
    /// Experimental, off by default: the WAL write-coalescing VFS shim (wal_write_vfs.hpp), about +6% peak webhook
    /// throughput. It relies on SQLite calling xShmBarrier before it publishes WAL frames, which SQLite does but does
    /// not document as a contract; Tally's durability must not rest on it, so it is opt-in.
    bool wal_write_coalescing = false;
    /// The VFS to open the database with; nullptr for SQLite's default (tests inject faults through this).
    const char* vfs = nullptr;
};

/// One SQLite connection with a cache of prepared statements. Not thread-safe: guarded by its owner.
class Connection {
public:
    /// Opens |path| as |options| say (durability, VFS).
    static Result<std::unique_ptr<Connection>> Open(const std::string& path, const StoreOptions& options = {});
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    sqlite3* raw() { return db_; }
    /// A cached prepared statement, reset and cleared; kInternal if the SQL does not compile.
    Result<sqlite3_stmt*> Prepare(const char* sql);
    Status Exec(const char* sql);
    /// Runs a cached prepared statement that returns no rows (BEGIN, COMMIT, ...).
    Status Step(const char* sql);
    tally::Error LastError();

private:
    explicit Connection(sqlite3* db) : db_(db) {}
    sqlite3* db_;
    std::unordered_map<const char*, sqlite3_stmt*> cache_;
};

/// Store on one SQLite file. Thread-safe: writes are serialised on one connection, reads use another.
class SqliteStore final : public Store {
public:
    /// Opens (creating if needed) and migrates |path|. kUnavailable if the file cannot be opened.
    /// |options|.durable false skips every fsync (`tally simulate` fills a new database it can regenerate): never
    /// for a database that acknowledges anything to anyone.
    static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path, const StoreOptions& options = {});

    Status Read(const std::function<Status(StoreTx&)>& fn) override;
    Status Write(const std::function<Status(StoreTx&)>& fn) override;
    /// Commits with synchronous=NORMAL: in WAL mode the WAL is not synced at COMMIT, and "a transaction committed
    /// in WAL mode with synchronous=NORMAL might roll back following a power loss or system crash" while the
    /// database stays consistent (https://www.sqlite.org/pragma.html#pragma_synchronous). The next FULL commit's
    /// sync covers its frames too.
    Status WriteAsyncCommit(const std::function<Status(StoreTx&)>& fn) override;
    Result<std::vector<bool>> AppendInbox(const std::vector<InboxEvent>& events) override;
    Status Ping() override;
    ~SqliteStore() override;
    void SetCommitObserver(std::function<void(double seconds, bool ok)> observer) override {
        commit_observer_ = std::move(observer);
    }
    /// How many times the checkpointer has restarted the WAL since open (tests wait on it instead of sleeping).
    int64_t wal_restart_count() const { return wal_restarts_.load(); }
    /// How many times the checkpointer has written back and fdatasync'd the database file itself.
    int64_t database_sync_count() const { return database_syncs_.load(); }

private:
    /// A descriptor of the database file held from Open to destruction. close(2) on any descriptor of a file drops
    /// every POSIX advisory lock the process holds on it, SQLite's included, after which another process may
    /// checkpoint and delete the WAL under this one ("How To Corrupt An SQLite Database File", 2.2,
    /// https://www.sqlite.org/howtocorrupt.html#_posix_advisory_locks_canceled_by_a_separate_thread_doing_close_).
    /// So the file is opened once, and closed only after every connection is (it is declared before them).
    class DatabaseFile {
    public:
        explicit DatabaseFile(int fd) : fd_(fd) {}
        ~DatabaseFile();
        DatabaseFile(const DatabaseFile&) = delete;
        DatabaseFile& operator=(const DatabaseFile&) = delete;
        int fd() const { return fd_; }

    private:
        int fd_;
    };

    SqliteStore(std::unique_ptr<DatabaseFile> file, std::unique_ptr<Connection> writer,
                std::vector<std::unique_ptr<Connection>> readers, std::unique_ptr<Connection> checkpointer,
                bool durable);
    /// Runs |fn| on an idle read connection (waiting for one if all are busy).
    Status WithReader(const std::function<Status(Connection&)>& fn);
    /// Copies committed WAL frames into the database file off the commit path (PASSIVE: never blocks writers
    /// or readers), so no commit pays for a checkpoint.
    void CheckpointLoop();
    /// Under the store's write and read locks, copies what is left of the WAL and restarts it (RESTART). Returns
    /// how long commits were blocked, in ms; does nothing if a read does not finish within
    /// kCheckpointReadLockWaitMs.
    int64_t RestartWal();
    /// Writes back the database file (not its WAL) in kCheckpointWritebackSliceBytes slices, waiting for each,
    /// then fdatasyncs it, through file_; takes no lock.
    void SyncDatabaseFile();
    Status Run(Connection& conn, const char* begin, const std::function<Status(StoreTx&)>& fn);

    std::unique_ptr<DatabaseFile> file_;  // first: destroyed after every connection
    std::mutex write_mu_;
    std::shared_mutex read_mu_;  // shared by each read; RestartWal takes it alone, so no reader holds a snapshot
    std::unique_ptr<Connection> writer_;
    std::vector<std::unique_ptr<Connection>> readers_;
    std::mutex readers_mu_;
    std::condition_variable reader_idle_;
    std::vector<Connection*> idle_readers_;
    std::unique_ptr<Connection> checkpointer_;
    std::mutex checkpoint_mu_;
    std::condition_variable checkpoint_cv_;
    bool stopping_ = false;
    std::atomic<int64_t> last_commit_ms_{0};  // steady clock, ms: when the writer last committed
    std::atomic<int> wal_frames_{0};          // frames in the WAL after the writer's last commit (wal hook)
    std::atomic<int64_t> wal_restarts_{0};
    std::atomic<int64_t> database_syncs_{0};
    const bool durable_;
    std::function<void(double, bool)> commit_observer_;
    std::thread checkpoint_thread_;
};

}  // namespace tally::sqlite
