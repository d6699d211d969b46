#pragma once
// Usage limits on the app's hot path (seeds 002 and 004): recording metered usage, checking a feature or an amount
// against the customer's plan, and the check and the increment as one atomic step, so concurrent callers never
// pass a hard limit (the store's transactions serialise them: SQLite runs one writer at a time, PostgreSQL runs
// them SERIALIZABLE across every node). Crossing 80%, 95% and 100% of a limit emits usage.threshold_reached once
// per threshold, meter and period.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/billing_service.hpp"
#include "app/store.hpp"
#include "app/write_group.hpp"
#include "domain/usage.hpp"

namespace tally {

class EventOutbox;

constexpr int64_t kUsageClockSkewSecondsMax = 300;  // a usage timestamp this far ahead of Tally's clock is refused

/// One meter's state for a customer.
struct MeterState {
    Meter meter;
    int64_t current = 0;
    std::optional<int64_t> limit;  // the plan's; nullopt when the plan has none for it
    int64_t remaining = 0;
    int64_t overage = 0;
    std::optional<Period> period;  // counters: the billing period it accumulates in; gauges: none
    std::optional<LimitOverrideRecord> override_record;  // an admin's exception in force, which |limit| includes
};

/// What a check or a record did.
struct UsageOutcome {
    bool allowed = true;
    std::string reason;  // "", "limit_exceeded", "overage"
    bool recorded = false;
    MeterState state;
};

/// POST /v1/usage.
struct UsageInput {
    CustomerId customer;
    std::string meter;
    int64_t value = 0;
    bool set = false;                 // action "set" (else "increment")
    std::optional<Timestamp> at;      // when the usage happened; default now
};

/// One event to record, as POST /v1/usage and each item of POST /v1/usage/batch give it. With |idempotency_key| it
/// is recorded at most once per API key: a later event with that key replays the first record when its customer,
/// meter, action, value and timestamp (given or not, and if given equal) are the same, and is refused otherwise.
struct UsageEventInput {
    UsageInput in;
    std::string idempotency_key;  // 1..kIdempotencyKeyBytesMax bytes; empty: not deduplicated
};

/// What became of one event of UsageService::RecordEvents.
struct UsageEventResult {
    enum class Status { kRecorded, kReplayed, kRejected };
    Status status = Status::kRejected;
    UsageEventRecord record;     // kRecorded, kReplayed: the event as stored, with what it left (current, limit)
    const Meter* meter = nullptr;  // the catalog's meter of |record|; null when it has been removed since
    std::optional<Error> error;  // kRejected: why (as Record's errors, or kIdempotencyKeyReused)
    std::optional<std::string> legacy_response;  // kReplayed from a UsageLegacyKey: the response stored then
};

/// A recorded check (POST /v1/check with record: true) submitted to a group committer (GroupedWrite with
/// UsageService::checks()): its input, and its outcome or refusal once its group ran.
struct PendingCheck final : BatchedWriteItem {
    CustomerId customer;
    std::string meter;
    int64_t amount = 1;
    std::optional<Result<UsageOutcome>> out;
};

struct UsageSummary {
    CustomerView customer;
    std::vector<MeterState> meters;
};

/// GET /v1/customers/{id}/usage/history.
struct UsageHistory {
    Meter meter;
    UsageGranularity granularity;
    std::vector<UsageBucket> buckets;
};

class UsageService {
public:
    /// |thresholds_percent| ascending (DefaultUsageThresholds()).
    UsageService(Store& store, BillingService& billing, const Clock& clock, EventOutbox* outbox = nullptr,
                 std::vector<int> thresholds_percent = {80, 95, 100});
    ~UsageService();
    UsageService(const UsageService&) = delete;
    UsageService& operator=(const UsageService&) = delete;

    /// Records |in| inside |tx| (the caller's idempotency record goes in the same transaction): usage is a fact,
    /// so it counts past a limit (reported as overage). kNotFound (param "customer" or "meter"); kInvalidArgument for
    /// a negative increment or a negative set of a counter ("value"), |value| past kUsageAmountMax, a timestamp
    /// more than kUsageClockSkewSecondsMax ahead or in a closed period ("timestamp"; a counter's usage that happened in
    /// the previous period counts there while it is within kUsageLateGraceSeconds of its end).
    Result<UsageOutcome> Record(StoreTx& tx, const UsageInput& in);
    /// Records |events| in order inside |tx|, each accepted or rejected on its own (one event's rejection leaves
    /// nothing of it; the others are recorded), keys scoped to |api_key_id|. Each customer, meter and period is
    /// read once and written once for the whole call, so a batch costs about one append per event. A rejected
    /// event carries Record's error, or kInvalidArgument reason kIdempotencyKeyReused (param "idempotency_key") for
    /// a key recorded with other fields; |legacy_request_hash| gives an event's digest as keys recorded before
    /// usage events carried them were stored (only asked when such a key is found). The call's own error (a store
    /// failure) fails the whole call: |tx| must then be rolled back.
    Result<std::vector<UsageEventResult>> RecordEvents(
        StoreTx& tx, const std::string& api_key_id, const std::vector<UsageEventInput>& events,
        const std::function<std::string(size_t index)>& legacy_request_hash = nullptr);
    /// The meter state a recorded event left (its limit, remaining, overage and period as of then).
    static MeterState StateAfter(const UsageEventRecord& record, const Meter* meter);
    /// Whether |amount| (1..kUsageAmountMax) more of |meter| fits the customer's limit; with |record| inside a write
    /// transaction |tx|, the increment is made in the same step when allowed (a refused check records nothing).
    Result<UsageOutcome> Check(StoreTx& tx, const CustomerId& customer, const std::string& meter, int64_t amount,
                               bool record);
    /// Check with |record| for each of |items|, in order, as if one after the other, each customer's view and
    /// overrides and each meter's value read once, the events appended together (one statement per 64 rows) and
    /// each meter's value written once. Each item's outcome, or its refusal with nothing written for it, is put in
    /// its |out|. An error is the store's failure (nothing of the batch is to be kept).
    Status CheckBatch(StoreTx& tx, const std::vector<PendingCheck*>& items);
    /// The WriteBatch that runs a group's recorded checks (PendingCheck items) through CheckBatch.
    const WriteBatch& checks() const { return *checks_; }
    /// The meters whose current value is above |plan|'s limit for the customer (its overrides included): what a move
    /// to |plan| blocks. Nothing is deleted; new usage of those meters is refused (hard limits) until it is back
    /// under. kNotFound (customer as "id", plan as "plan").
    Result<std::vector<MeterState>> OverLimits(const CustomerId& customer, const PlanId& plan);
    /// For MemberService::Add: kConflict reason kUsageLimitExceeded (param "user") when one more member would pass
    /// the hard limit of a meter that counts members; ok when it fits or there is no such meter.
    Status CheckSeat(StoreTx& tx, const CustomerId& customer);
    /// Whether the customer's plan has |feature| on. kNotFound for an unknown customer or feature.
    Result<bool> CheckFeature(const CustomerId& customer, const std::string& feature);
    /// Every meter's state for the customer (GET /v1/customers/{id}/usage).
    Result<UsageSummary> Summary(const CustomerId& customer);

    /// The meter's usage per day or calendar month (UTC) over [from, to) (default: the last 30 days, or the last 12
    /// months, through now), every bucket listed. kNotFound (meter; customer as "id"); kInvalidArgument for from >=
    /// to ("from") or more than kUsageHistoryBucketsMax buckets ("to").
    Result<UsageHistory> History(const CustomerId& customer, const std::string& meter, UsageGranularity granularity,
                                 std::optional<Timestamp> from, std::optional<Timestamp> to);

    /// Gives the customer a different limit (|limit|) and/or extra allowance (|override_record.extra|, added to the
    /// plan's or the given limit) for one meter, until |expires_at|; replaces an earlier one; a limit_override_set
    /// audit entry. kNotFound (customer, meter); kInvalidArgument: a negative limit or extra ("limit", "extra"),
    /// neither given, a blank reason ("reason"), an expiry not in the future ("expires_at").
    Result<LimitOverrideRecord> SetOverride(StoreTx& tx, LimitOverrideRecord override_record);
    /// Removes the override (limit_override_cleared audit). kNotFound when there is none (param "meter").
    Result<LimitOverrideRecord> ClearOverride(StoreTx& tx, const CustomerId& customer, const std::string& meter,
                                              const std::string& actor);
    /// The overrides in force.
    Result<std::vector<LimitOverrideRecord>> ListOverrides(const CustomerId& customer);

private:
    /// The meter's state; a counter's in |counter_period| (default: the current one).
    Result<MeterState> Load(StoreTx& tx, const CustomerView& view, const Meter& meter,
                            const std::optional<Period>& counter_period,
                            const std::vector<LimitOverrideRecord>& overrides);
    Status Announce(StoreTx& tx, const CustomerView& view, const MeterState& before, const MeterState& after);

    Store& store_;
    BillingService& billing_;
    const Clock& clock_;
    EventOutbox* outbox_;
    std::vector<int> thresholds_;
    std::unique_ptr<WriteBatch> checks_;
};

}  // namespace tally
