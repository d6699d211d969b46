// The WAL write-combining VFS shim on real SQLite files: readers on other connections never see a frame that
// is still in a buffer, a writer reads back its own spilled frames, checkpoints and restarts work, the data
// survives reopening, and the shim really writes fewer times than SQLite asked it to.
#include "adapters/sqlite/wal_write_vfs.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

namespace tally::sqlite {
namespace {

class Db {
  public:
    /// |plain|: open through SQLite's default VFS, as another process would, instead of the shim.
    Db(const std::string& path, const char* synchronous, bool plain = false) {
        const char* vfs = RegisterWalWriteVfs();
        EXPECT_NE(vfs, nullptr);
        if (plain) vfs = nullptr;
        EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
        sqlite3_busy_timeout(db_, 5000);
        Exec("PRAGMA journal_mode=WAL");
        Exec(std::string("PRAGMA synchronous=") + synchronous);
    }
    ~Db() { sqlite3_close(db_); }
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    void Exec(const std::string& sql) {
        char* err = nullptr;
        ASSERT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "") << sql;
    }
    int64_t Int(const std::string& sql) {
        sqlite3_stmt* s = nullptr;
        EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
        EXPECT_EQ(sqlite3_step(s), SQLITE_ROW)
            << sqlite3_errmsg(db_) << " (extended code " << sqlite3_extended_errcode(db_) << ")";
        const int64_t v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
    }
    std::string Text(const std::string& sql) {
        sqlite3_stmt* s = nullptr;
        EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK);
        EXPECT_EQ(sqlite3_step(s), SQLITE_ROW);
        std::string v(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
        sqlite3_finalize(s);
        return v;
    }
    void InsertBlob(int64_t id, int64_t bytes) {
        sqlite3_stmt* s = nullptr;
        ASSERT_EQ(sqlite3_prepare_v2(db_, "INSERT INTO items(id, body) VALUES (?1, zeroblob(?2))", -1, &s, nullptr),
                  SQLITE_OK);
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_int64(s, 2, bytes);
        ASSERT_EQ(sqlite3_step(s), SQLITE_DONE) << sqlite3_errmsg(db_);
        sqlite3_finalize(s);
    }

  private:
    sqlite3* db_ = nullptr;
};

std::string TempDb(const char* name) {
    auto dir = std::filesystem::temp_directory_path() / ("tally-walvfs-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto path = dir / name;
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
    return path.string();
}

// One writer commits transactions of 1-40 rows (blobs of 1-20 KB, so pages overflow) and keeps a running total
// in a second table; a reader on another connection checks on every read transaction that the two agree, and a
// third connection checkpoints (PASSIVE and RESTART) as it goes. A reader that saw a published frame whose bytes
// were still buffered would read a stale or torn page and the totals would disagree (or the b-tree be corrupt).
void ConcurrentReadersSeeOnlyWrittenFrames(const char* synchronous) {
    const std::string path = TempDb((std::string("concurrent-") + synchronous + ".db").c_str());
    Db writer(path, synchronous);
    writer.Exec("CREATE TABLE items(id INTEGER PRIMARY KEY, body BLOB NOT NULL)");
    writer.Exec("CREATE TABLE totals(k INTEGER PRIMARY KEY, n INTEGER NOT NULL, bytes INTEGER NOT NULL)");
    writer.Exec("INSERT INTO totals VALUES (1, 0, 0)");
    const auto before = GetWalWriteVfsStats();

    std::atomic<bool> done{false};
    std::atomic<int> checks{0};
    std::atomic<int> mismatches{0};
    std::thread reader([&] {
        Db r(path, synchronous);
        while (!done.load()) {
            r.Exec("BEGIN");
            const int64_t n = r.Int("SELECT COUNT(*) FROM items");
            const int64_t bytes = r.Int("SELECT COALESCE(SUM(length(body)), 0) FROM items");
            const int64_t want_n = r.Int("SELECT n FROM totals WHERE k = 1");
            const int64_t want_bytes = r.Int("SELECT bytes FROM totals WHERE k = 1");
            r.Exec("COMMIT");
            if (n != want_n || bytes != want_bytes) mismatches.fetch_add(1);
            checks.fetch_add(1);
        }
    });
    std::thread checkpointer([&] {
        Db c(path, synchronous);
        int round = 0;
        while (!done.load()) {
            c.Exec(++round % 4 == 0 ? "PRAGMA wal_checkpoint(RESTART)" : "PRAGMA wal_checkpoint(PASSIVE)");
            std::this_thread::sleep_for(std::chrono::milliseconds(3));
        }
    });

    std::mt19937 rng(7);
    int64_t id = 0;
    int64_t total_bytes = 0;
    for (int tx = 0; tx < 300; ++tx) {
        writer.Exec("BEGIN IMMEDIATE");
        const int rows = 1 + static_cast<int>(rng() % 40);
        for (int i = 0; i < rows; ++i) {
            const int64_t bytes = 1000 + static_cast<int64_t>(rng() % 20000);
            writer.InsertBlob(++id, bytes);
            total_bytes += bytes;
        }
        writer.Exec("UPDATE totals SET n = " + std::to_string(id) + ", bytes = " + std::to_string(total_bytes) +
                    " WHERE k = 1");
        writer.Exec("COMMIT");
    }
    // Let the reader see the final state at least once.
    const int seen = checks.load();
    while (checks.load() < seen + 2) std::this_thread::yield();
    done = true;
    reader.join();
    checkpointer.join();
    EXPECT_EQ(mismatches.load(), 0) << "of " << checks.load() << " read transactions";
    EXPECT_GT(checks.load(), 10);

    EXPECT_EQ(writer.Text("PRAGMA integrity_check"), "ok");
    const auto after = GetWalWriteVfsStats();
    const long long received = after.writes_received - before.writes_received;
    const long long issued = after.writes_issued - before.writes_issued;
    EXPECT_GT(received, 300 * 2);     // at least a header and a page per commit reached the shim
    EXPECT_LT(issued * 4, received);  // ... and went out in far fewer writes
}

TEST(WalWriteVfs, ConcurrentReadersSeeOnlyWrittenFramesWithoutSync) { ConcurrentReadersSeeOnlyWrittenFrames("OFF"); }

TEST(WalWriteVfs, ConcurrentReadersSeeOnlyWrittenFramesWithFullSync) { ConcurrentReadersSeeOnlyWrittenFrames("FULL"); }

// A connection that does not go through the shim (another process, say) reads the file directly, so every
// committed frame must be written before the commit is published, even without a sync.
TEST(WalWriteVfs, CommittedFramesAreInTheFileForOtherProcesses) {
    const std::string path = TempDb("plain-reader.db");
    Db writer(path, "OFF");
    writer.Exec("CREATE TABLE items(id INTEGER PRIMARY KEY, body BLOB NOT NULL)");
    Db plain(path, "OFF", /*plain=*/true);
    for (int64_t i = 1; i <= 30; ++i) {
        writer.InsertBlob(i, 2000 + i * 300);
        ASSERT_EQ(plain.Int("SELECT COUNT(*) FROM items"), i);
        ASSERT_EQ(plain.Int("SELECT MAX(length(body)) FROM items"), 2000 + i * 300);
    }
    EXPECT_EQ(plain.Text("PRAGMA integrity_check"), "ok");
}

// A transaction larger than the page cache spills frames into the WAL mid-transaction and reads them back;
// pages rewritten after the spill overwrite their frames in place (not an append). All of it reaches the file.
TEST(WalWriteVfs, SpilledAndRewrittenFramesAreReadBackAndSurviveReopen) {
    const std::string path = TempDb("spill.db");
    {
        Db db(path, "FULL");
        db.Exec("PRAGMA cache_size=20");
        db.Exec("CREATE TABLE items(id INTEGER PRIMARY KEY, body BLOB NOT NULL)");
        db.Exec("BEGIN IMMEDIATE");
        for (int64_t i = 1; i <= 2000; ++i) db.InsertBlob(i, 3000);
        db.Exec("UPDATE items SET body = zeroblob(100) WHERE id % 3 = 0");
        db.Exec("COMMIT");
        EXPECT_EQ(db.Int("SELECT COUNT(*) FROM items"), 2000);
        EXPECT_EQ(db.Int("SELECT SUM(length(body)) FROM items"), 1334 * 3000 + 666 * 100);
    }
    Db reopened(path, "FULL");  // the WAL is checkpointed on the last close, and read back from the database
    EXPECT_EQ(reopened.Int("SELECT SUM(length(body)) FROM items"), 1334 * 3000 + 666 * 100);
    EXPECT_EQ(reopened.Text("PRAGMA integrity_check"), "ok");
}

// Without a checkpoint on close, the next open recovers the database from the WAL file alone.
TEST(WalWriteVfs, WalIsRecoveredByANewConnection) {
    const std::string path = TempDb("recover.db");
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + ".copy" + suffix);
    {
        Db db(path, "FULL");
        db.Exec("PRAGMA wal_autocheckpoint=0");
        db.Exec("CREATE TABLE items(id INTEGER PRIMARY KEY, body BLOB NOT NULL)");
        for (int64_t i = 1; i <= 50; ++i) db.InsertBlob(i, 5000);
        // Copy the database and WAL as a crash would leave them, before the close checkpoints.
        for (const char* suffix : {"", "-wal"}) {
            std::filesystem::copy_file(path + suffix, path + ".copy" + suffix,
                                       std::filesystem::copy_options::overwrite_existing);
        }
    }
    Db recovered(path + ".copy", "FULL");
    EXPECT_EQ(recovered.Int("SELECT COUNT(*) FROM items"), 50);
    EXPECT_EQ(recovered.Int("SELECT SUM(length(body)) FROM items"), 50 * 5000);
    EXPECT_EQ(recovered.Text("PRAGMA integrity_check"), "ok");
}

}  // namespace
}  // namespace tally::sqlite
