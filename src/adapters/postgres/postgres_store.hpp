#pragma once
// The Store port on PostgreSQL (libpq): a bounded pool of connections, SERIALIZABLE write transactions rerun when
// they lose a conflict, synchronous_commit=on, and forward-only migrations under an advisory lock. Any number of
// processes may share one database.
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "app/store.hpp"

namespace tally::postgres {

class PgConnection;

constexpr int kPoolConnectionsDefault = 8;    // connections one store opens at most (its transactions at once)
constexpr int kPoolConnectionsMax = 64;
constexpr int kPoolWaitMs = 5'000;            // a transaction waiting longer for a connection fails (kUnavailable)
// A write that loses a serialization conflict (40001) or a deadlock (40P01) runs again from the start, after a
// random pause of up to kRetryPauseUsMax << attempt, at most this many times.
constexpr int kSerializationRetriesMax = 12;
constexpr int kRetryPauseUsMax = 200;

struct PostgresOptions {
    int pool_connections = kPoolConnectionsDefault;
};

/// Store on one PostgreSQL database. Thread-safe: each transaction takes a connection from the pool.
class PostgresStore final : public Store {
public:
    /// Connects to |url| (postgresql://...; libpq's multi-host form and parameters such as
    /// target_session_attrs=read-write are accepted), applies migrations and opens the pool lazily.
    /// kInvalidArgument for a malformed URL, kUnavailable when the server cannot be reached, kConflict for a
    /// schema newer than this build.
    static Result<std::unique_ptr<PostgresStore>> Open(const std::string& url, const PostgresOptions& options = {});
    ~PostgresStore() override;

    Status Read(const std::function<Status(StoreTx&)>& fn) override;
    Status Write(const std::function<Status(StoreTx&)>& fn) override;
    /// SET LOCAL synchronous_commit = off: "a transaction that is committed asynchronously may be lost if the
    /// database server crashes", never corrupted, and later synchronous commits flush it too
    /// (https://www.postgresql.org/docs/15/wal-async-commit.html).
    Status WriteAsyncCommit(const std::function<Status(StoreTx&)>& fn) override;
    /// pg_advisory_lock(hash of |key|) on the session before BEGIN, pg_advisory_unlock after COMMIT or ROLLBACK
    /// (https://www.postgresql.org/docs/15/explicit-locking.html#ADVISORY-LOCKS): the serializable transaction's
    /// snapshot is then taken after the previous holder's commit, so same-key writers queue instead of conflicting.
    /// A connection lost meanwhile releases its session's locks.
    using Store::WriteSerialized;
    Status WriteSerialized(const std::vector<std::string>& keys, const std::function<Status(StoreTx&)>& fn) override;
    /// READ COMMITTED with INSERT ... ON CONFLICT DO NOTHING: atomic against concurrent inserts of the same id from
    /// any node, so a duplicate is reported as one and never aborts the batch.
    Result<std::vector<bool>> AppendInbox(const std::vector<InboxEvent>& events) override;
    Status Ping() override;
    void SetCommitObserver(std::function<void(double seconds, bool ok)> observer) override {
        commit_observer_ = std::move(observer);
    }
    /// Write transactions rerun after a serialization conflict since open (tests and metrics read it).
    int64_t conflict_retries() const;

private:
    enum class Mode { kRead, kWrite, kWriteAsync, kInbox };
    PostgresStore(std::string url, const PostgresOptions& options, std::unique_ptr<PgConnection> first);
    Result<std::unique_ptr<PgConnection>> Acquire();
    void Release(std::unique_ptr<PgConnection> conn);
    /// |lock_keys| (sorted, distinct): session advisory locks held from before BEGIN to after COMMIT, so the
    /// transactions of writers sharing a key run one after another, on every node.
    Status Run(Mode mode, const std::function<Status(StoreTx&)>& fn, const std::vector<int64_t>& lock_keys = {});

    const std::string url_;
    const PostgresOptions options_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<PgConnection>> idle_;
    int open_ = 0;  // connections handed out or idle
    int64_t conflict_retries_ = 0;
    std::function<void(double, bool)> commit_observer_;
};

}  // namespace tally::postgres
