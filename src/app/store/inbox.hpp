#pragma once
// The inbox aggregate of the Store port: Stripe events as received (raw payload) and their processing state.
// Reached from a transaction as StoreTx::inbox(); new events arrive through Store::AppendInbox (group commit).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

enum class InboxStatus { kPending, kProcessed, kFailed };
const char* InboxStatusName(InboxStatus status);
Result<InboxStatus> ParseInboxStatus(const std::string& text);

/// A received Stripe event: the raw payload as signed, plus processing state. Reads through
/// InboxStoreTx::Get/List leave |payload| empty; GetPayload returns it.
struct InboxEvent {
    StripeEventId id;
    std::string type;
    Timestamp created;
    std::string payload;
    InboxStatus status = InboxStatus::kPending;
    int attempts = 0;
    std::string last_error;
    std::string outcome;  // applied, stale, ignored
    Timestamp received_at;
    std::optional<Timestamp> next_attempt_at;  // null once processed or given up
    std::optional<Timestamp> processed_at;
};

/// Reads and processing-state writes of the inbox inside one transaction. Not thread-safe.
class InboxStoreTx {
public:
    virtual ~InboxStoreTx() = default;
    /// The event's state without its payload.
    virtual Result<std::optional<InboxEvent>> Get(const StripeEventId& id) = 0;
    /// The raw payload as received; nullopt for an unknown id.
    virtual Result<std::optional<std::string>> GetPayload(const StripeEventId& id) = 0;
    /// The event's place in the inbox's arrival order (larger: received later); nullopt for an unknown id.
    virtual Result<std::optional<int64_t>> GetSequence(const StripeEventId& id) = 0;
    /// Newest received first, optionally filtered by status, at most |limit|. Filtering by `failed` is
    /// indexed; other statuses scan from the newest event.
    virtual Result<std::vector<InboxEvent>> List(std::optional<InboxStatus> status, int limit) = 0;
    /// Ids of events due for (re)processing at |now|, earliest due first, at most |limit|.
    virtual Result<std::vector<StripeEventId>> ListDue(Timestamp now, int limit) = 0;
    /// Locks the events of |ids| that no other transaction holds, for processing them in this one; for each id,
    /// whether it is this transaction's to process. With several nodes on one database, an event another node is
    /// processing right now is skipped rather than waited for (PostgreSQL: FOR UPDATE SKIP LOCKED); a single
    /// writer (SQLite) holds them all. Write transactions only.
    virtual Result<std::vector<bool>> LockForProcessing(const std::vector<StripeEventId>& ids) = 0;
    /// Replaces status, attempts, last_error, outcome, next_attempt_at and processed_at of |event.id|.
    virtual Status UpdateState(const InboxEvent& event) = 0;
};

}  // namespace tally
