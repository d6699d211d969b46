#pragma once
// The Store port: everything Tally persists, split by aggregate (app/store/*.hpp). SQLite and PostgreSQL implement
// it, so nothing in app/ knows which database it runs on.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "app/store/audit.hpp"
#include "app/store/billing.hpp"
#include "app/store/credits.hpp"
#include "app/store/customers.hpp"
#include "app/store/events.hpp"
#include "app/store/flags.hpp"
#include "app/store/inbox.hpp"
#include "app/store/keys.hpp"
#include "app/store/plans.hpp"
#include "app/store/usage.hpp"
#include "domain/result.hpp"

namespace tally {

/// Reads and writes inside one transaction. Not thread-safe: used by one thread inside Store::Read/Write.
class StoreTx {
public:
    virtual ~StoreTx() = default;

    /// The store's aggregates, each its own small interface (app/store/*.hpp), all in this transaction.
    virtual CustomerStoreTx& customers() = 0;
    virtual BillingStoreTx& billing() = 0;
    virtual InboxStoreTx& inbox() = 0;
    virtual AuditStoreTx& audit() = 0;
    virtual KeyStoreTx& keys() = 0;
    virtual EventStoreTx& events() = 0;
    virtual PlanStoreTx& plans() = 0;
    virtual UsageStoreTx& usage() = 0;
    virtual FlagStoreTx& flags() = 0;
    virtual CreditStoreTx& credits() = 0;

    /// Nested rollback points inside the transaction (SQL SAVEPOINT, on SQLite and PostgreSQL alike): lets one
    /// transaction apply many items and undo only the one that failed.
    virtual Status Savepoint() = 0;
    virtual Status RollbackToSavepoint() = 0;
    virtual Status ReleaseSavepoint() = 0;
};

/// Transactional access to the store. Thread-safe. Write transactions are serializable: each behaves as if it ran
/// alone (SQLite runs them one at a time; PostgreSQL runs them at SERIALIZABLE isolation, from any number of
/// processes, and reruns one that lost a serialization conflict). So |fn| may run more than once before Write
/// returns: it must have no effect outside the transaction but on its own results, which each run sets afresh.
/// Read transactions see one consistent snapshot. A Write that returns an error is rolled back; one that returns
/// ok is durable on return. kUnavailable when the database cannot be reached (nothing was committed, or, if the
/// connection was lost during COMMIT itself, the outcome is unknown: callers retry idempotently).
class Store {
public:
    virtual ~Store() = default;
    virtual Status Read(const std::function<Status(StoreTx&)>& fn) = 0;
    virtual Status Write(const std::function<Status(StoreTx&)>& fn) = 0;
    /// A Write whose commit does not wait for durability (PostgreSQL's and SQLite's "asynchronous commit"): only
    /// for work that is redone if a crash loses it, such as delivery claims and the outcomes of at-least-once
    /// deliveries. Never corrupts: after a crash the store holds a prefix of the committed transactions, and a
    /// later Write's durable commit makes every earlier one durable too.
    virtual Status WriteAsyncCommit(const std::function<Status(StoreTx&)>& fn) { return Write(fn); }
    /// A Write that waits for every other WriteSerialized holding any of |keys| (on any node) before its
    /// transaction starts, so writers of one hot row (a customer's usage meter) queue instead of failing each
    /// other's serializable transactions. Same guarantees as Write. SQLite runs one writer at a time anyway.
    virtual Status WriteSerialized(const std::vector<std::string>& keys, const std::function<Status(StoreTx&)>& fn) {
        (void)keys;
        return Write(fn);
    }
    Status WriteSerialized(std::string_view key, const std::function<Status(StoreTx&)>& fn) {
        return WriteSerialized(std::vector<std::string>{std::string(key)}, fn);
    }
    /// Inserts a batch of received events in one durable transaction (group commit). For each event,
    /// true if it was new, false if its id was already recorded (a duplicate delivery).
    virtual Result<std::vector<bool>> AppendInbox(const std::vector<InboxEvent>& events) = 0;
    /// Cheap liveness probe of the database; kUnavailable when it cannot be read.
    virtual Status Ping() = 0;
    /// Told of every write transaction's duration (seconds, BEGIN to durable COMMIT) and outcome. Set before the
    /// store is shared between threads.
    virtual void SetCommitObserver(std::function<void(double seconds, bool ok)> observer) = 0;
};

}  // namespace tally
