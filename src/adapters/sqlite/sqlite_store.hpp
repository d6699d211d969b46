#pragma once
// The Store port on SQLite: WAL, synchronous=FULL (a commit is fsync'd before it returns), foreign keys,
// a busy timeout, and forward-only migrations applied at open.
#include <sqlite3.h>

#include <condition_variable>
#include <memory>
#include <thread>
#include <mutex>
#include <string>
#include <unordered_map>

#include "app/store.hpp"

namespace tally::sqlite {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kCheckpointIntervalMs = 200;    // background WAL checkpoint cadence
// ~32 MiB of WAL: then make the next writer start it over. A RESTART blocks writers for 20-40 ms here; at
// ordinary rates the WAL restarts on its own in idle moments. Keep the WAL under kWalSizeLimitBytes: a larger
// one is truncated at every reset, and freeing hundreds of MB (on a disk mounted with discard) stalls fsyncs.
// Measured: 256 MiB gave a worse p99 than 32 MiB; no RESTART at all let the WAL reach 490 MB in 8 s.
constexpr int kWalRestartFramesMin = 8192;
constexpr int64_t kWalSizeLimitBytes = int64_t{64} * 1024 * 1024;  // what a reset WAL is truncated to
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
    std::thread checkpoint_thread_;
};

}  // namespace tally::sqlite
