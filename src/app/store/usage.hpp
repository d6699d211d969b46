#pragma once
// The usage aggregate of the Store port: each meter's current value per customer (gauges in period 0, counters per
// billing period), the append-only ledger of what was recorded, and the warning thresholds already announced.
// Reached from a transaction as StoreTx::usage().
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

/// One recorded change of a meter (the ledger row).
struct UsageEventRecord {
    int64_t id = 0;  // assigned by the store, in commit order
    CustomerId customer_id;
    std::string meter;
    Timestamp period_start;  // 0 for gauges
    std::string action;      // "increment" | "set"
    int64_t value = 0;       // as given
    int64_t delta = 0;       // how the meter moved
    Timestamp at;            // when the usage happened (the caller's timestamp, or when it was recorded)
    Timestamp recorded_at;
    // Set for events recorded through the API (POST /v1/usage, /v1/usage/batch): the key that deduplicates the event
    // (scoped to the API key), whether the caller gave |at|, and what the event left, from which a replay of the
    // key is answered. Empty |idempotency_key| for usage recorded by a check.
    std::string api_key_id;
    std::string idempotency_key;
    bool timestamp_given = false;
    int64_t current = 0;                // the meter's value after the event
    std::optional<int64_t> limit;       // the limit in force then (overrides included); nullopt: none
    std::optional<Timestamp> period_end;  // counters: the end of the period it counted in
};

/// A usage event's idempotency key recorded before events carried their keys (SQLite migration 14, PostgreSQL 11):
/// its request digest and stored response, replayed until the key's retention ends.
struct UsageLegacyKey {
    std::string request_hash;
    std::string response_body;
};

/// An admin's exception to a customer's plan limit for one meter: a different limit, or extra allowance on top of
/// the plan's, until |expires_at| (none: until removed).
struct LimitOverrideRecord {
    CustomerId customer_id;
    std::string meter;
    std::optional<int64_t> limit;  // replaces the plan's limit
    int64_t extra = 0;             // added to the (plan's or replaced) limit
    std::optional<Timestamp> expires_at;
    std::string reason;
    Timestamp created;
    std::string actor;
};

/// What was recorded for one meter on one UTC day (by when the usage happened).
struct UsageDayRecord {
    Timestamp day;       // 00:00 UTC
    int64_t delta = 0;   // the sum of the day's moves
    int64_t events = 0;  // how many were recorded
};

class UsageStoreTx {
public:
    virtual ~UsageStoreTx() = default;
    /// The meter's value in the period starting at |period_start| (0 if nothing was recorded).
    virtual Result<int64_t> Value(const CustomerId& customer, const std::string& meter, Timestamp period_start) = 0;
    virtual Status PutValue(const CustomerId& customer, const std::string& meter, Timestamp period_start, int64_t value,
                            Timestamp updated) = 0;
    /// Appends |event|; kConflict if its (api_key_id, idempotency_key) is already recorded (a key is checked with
    /// FindKeyedEvent first, in the same transaction).
    virtual Status AppendEvent(const UsageEventRecord& event) = 0;
    /// AppendEvent for each of |events| in order, in fewer statements; kConflict as AppendEvent (then the caller
    /// rolls back: which of them were appended is not said).
    virtual Status AppendEvents(const std::vector<const UsageEventRecord*>& events) {
        for (const UsageEventRecord* e : events) TALLY_TRY(AppendEvent(*e));
        return {};
    }
    /// The event recorded under (|api_key_id|, |idempotency_key|), if any.
    virtual Result<std::optional<UsageEventRecord>> FindKeyedEvent(const std::string& api_key_id,
                                                                   const std::string& idempotency_key) = 0;
    /// Whether any UsageLegacyKey is left (they are pruned with the other idempotency keys).
    virtual Result<bool> HasLegacyKeys() = 0;
    /// The legacy key (|idempotency_key| as the event gave it), if recorded.
    virtual Result<std::optional<UsageLegacyKey>> FindLegacyKey(const std::string& api_key_id,
                                                                const std::string& idempotency_key) = 0;
    /// The latest period a value was recorded in that starts before |before|, if any.
    virtual Result<std::optional<Timestamp>> LatestPeriodBefore(const CustomerId& customer, const std::string& meter,
                                                                Timestamp before) = 0;
    /// The meter's moves per UTC day for usage that happened in [from, to), by day; days without any are absent.
    virtual Result<std::vector<UsageDayRecord>> DailyUsage(const CustomerId& customer, const std::string& meter,
                                                           Timestamp from, Timestamp to) = 0;
    /// The sum of the meter's moves for usage that happened before |at| (a gauge's value then).
    virtual Result<int64_t> DeltaBefore(const CustomerId& customer, const std::string& meter, Timestamp at) = 0;
    /// Records that |threshold| was announced for the meter in that period; false if it already was.
    virtual Result<bool> MarkThreshold(const CustomerId& customer, const std::string& meter, Timestamp period_start,
                                       int threshold, Timestamp at) = 0;
    /// Forgets the announced thresholds from |threshold| up (a gauge fell back under them: crossing again warns again).
    virtual Status ClearThresholds(const CustomerId& customer, const std::string& meter, Timestamp period_start,
                                   int threshold) = 0;
    /// The customer's overrides (expired ones too), by meter.
    virtual Result<std::vector<LimitOverrideRecord>> ListOverrides(const CustomerId& customer) = 0;
    /// Sets the customer's override for its meter (one per meter).
    virtual Status PutOverride(const LimitOverrideRecord& override_record) = 0;
    /// Removes it; false if there was none.
    virtual Result<bool> DeleteOverride(const CustomerId& customer, const std::string& meter) = 0;
};

}  // namespace tally
