#pragma once
// The Store port on SQLite: WAL, synchronous=FULL (a commit is fsync'd before it returns), foreign keys,
// a busy timeout, and forward-only migrations applied at open.
#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <thread>
#include <mutex>
#include <string>
#include <unordered_map>

#include "app/store.hpp"

namespace tally::sqlite {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kCheckpointIntervalMs = 50;     // how often the checkpointer looks at the WAL
// Checkpoints copy the WAL into the database file and fsync it. Done while commits run, that I/O delays their
// fsyncs (commits of one event took 12-31 ms), and the RESTART that lets the WAL start over blocks writers
// for 20-50 ms. So the checkpointer waits for a quiet moment (no commit for kCheckpointIdleMs) and then copies
// everything and restarts the WAL. Only if writes never pause does it checkpoint under load, once the WAL holds
// kWalBusyFramesMax frames (~1 GiB with 4 KiB pages), so the WAL stays bounded; that checkpoint stalls writers
// (150 ms measured at 256 MiB), so the cap sits above any burst we expect: ~25 s of 10k events/s.
constexpr int64_t kCheckpointIdleMs = 100;
constexpr int kWalBusyFramesMax = 262144;
constexpr int64_t kWalSizeLimitBytes = int64_t{64} * 1024 * 1024;  // what a reset WAL is truncated to
constexpr int kWalRestartFramesMin = 256;  // in a quiet moment, restart a WAL of at least this many frames
constexpr int64_t kSlowOperationMs = 100;  // commits and checkpoints slower than this are logged

/// One SQLite connection with a cache of prepared statements. Not thread-safe: guarded by its owner.
class Connection {
public:
    /// |durable|: synchronous=FULL (every COMMIT fsync'd); false: synchronous=OFF, for bulk generation only.
    static Result<std::unique_ptr<Connection>> Open(const std::string& path, bool durable = true);
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
    /// |durable| false skips fsync on commit (`tally simulate` fills a new database it can regenerate):
    /// never for a database that acknowledges anything to anyone.
    static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path, bool durable = true);

    Status Read(const std::function<Status(StoreTx&)>& fn) override;
    Status Write(const std::function<Status(StoreTx&)>& fn) override;
    Result<std::vector<bool>> AppendInbox(const std::vector<InboxEvent>& events) override;
    Status Ping() override;
    ~SqliteStore() override;

private:
    SqliteStore(std::unique_ptr<Connection> writer, std::unique_ptr<Connection> reader,
                std::unique_ptr<Connection> checkpointer);
    /// Copies committed WAL frames into the database file off the commit path (PASSIVE: never blocks writers
    /// or readers), so no commit pays for a checkpoint.
    void CheckpointLoop();
    Status Run(Connection& conn, const char* begin, const std::function<Status(StoreTx&)>& fn);

    std::mutex write_mu_;
    std::mutex read_mu_;
    std::unique_ptr<Connection> writer_;
    std::unique_ptr<Connection> reader_;
    std::unique_ptr<Connection> checkpointer_;
    std::mutex checkpoint_mu_;
    std::condition_variable checkpoint_cv_;
    bool stopping_ = false;
    std::atomic<int64_t> last_commit_ms_{0};  // steady clock, ms: when the writer last committed
    std::atomic<int> wal_frames_{0};          // frames in the WAL after the writer's last commit (wal hook)
    std::thread checkpoint_thread_;
};

}  // namespace tally::sqlite
