#pragma once
// Metered usage against a plan's limits (seeds 002 and 004): what a meter counts, the period a counter accumulates
// in, whether an amount fits a limit, and which warning thresholds a change crosses. Pure rules, no I/O.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

/// A gauge holds a current value the app sets or adjusts (projects, seats, storage); a counter accumulates and
/// starts again at each billing period (build hours, AI embeddings).
enum class MeterKind { kGauge, kCounter };
/// At a hard limit a check is refused; past a soft one it is allowed and reported as overage.
enum class LimitMode { kHard, kSoft };

/// How one of the catalog's limits is metered. |name| is the limit's name in every plan's `limits`.
struct Meter {
    std::string name;
    MeterKind kind = MeterKind::kGauge;
    LimitMode mode = LimitMode::kHard;
    std::string unit;  // what one unit is ("projects", "hours", "GB"): for people, never converted
    /// Seats (catalog "source": "members", gauges only): for an organization its value is the number of its
    /// members, counted live, and adding a member past the limit is refused; for an individual customer a gauge as
    /// any other.
    bool counts_members = false;
    bool operator==(const Meter&) const = default;
};

constexpr int64_t kUsageAmountMax = int64_t{1} << 53;  // JSON's exact integers (Stripe's meters share the bound)

Result<MeterKind> ParseMeterKind(std::string_view text);
const char* MeterKindName(MeterKind kind);
Result<LimitMode> ParseLimitMode(std::string_view text);
const char* LimitModeName(LimitMode mode);

/// "name kind mode unit" lines, and back (names and units hold no space or newline: Catalog::Create checks).
std::string MetersToText(const std::vector<Meter>& meters);
std::vector<Meter> MetersFromText(std::string_view text);

/// The billing cycle a subscription's counters follow: Stripe's current period and the price's interval.
struct BillingCycle {
    Period current;  // current_period_start..current_period_end, as Stripe last reported it
    BillingInterval interval;
};

/// The period a counter accumulates in at |now|. Without a subscription: the calendar month of |now| in UTC.
/// With one: Stripe's current period while |now| is before its end, also when |now| is before its start (Stripe's
/// clock is ahead of Tally's: a test clock advanced, or skew), since that is the period Stripe bills; once |now| is
/// past its end and the renewal has not been heard of yet, the period the cycle continues into (so counters start
/// again at the period's end, not when the webhook arrives).
Period UsagePeriod(Timestamp now, const std::optional<BillingCycle>& cycle);

/// A counter's previous period stays open for late usage this long after it ended (Lago's invoice grace period,
/// Stripe's meter events accepting past timestamps): a late event that happened in it counts there, not now.
constexpr int64_t kUsageLateGraceSeconds = int64_t{24} * 3600;

/// Where a counter's usage that happened at |at| counts, seen at |now| while the meter's current period is
/// |current|: |current| when at >= current.start; the previous period [previous_start, current.start) when |at| is
/// in it and now < current.start + kUsageLateGraceSeconds; kInvalidArgument (param "timestamp") otherwise: that
/// period is closed.
Result<Period> CounterPeriodFor(Timestamp at, Timestamp now, const Period& current, Timestamp previous_start);

/// Whether |amount| more fits: |current| + |amount| <= |limit| (no limit: always). A hard limit refuses what does
/// not fit ("limit_exceeded"); a soft one allows it with |overage| > 0.
struct UsageDecision {
    bool allowed = true;
    std::string reason;  // "" when allowed within the limit; "limit_exceeded"; "overage" (soft, allowed)
    int64_t after = 0;   // the value once recorded (== current when refused)
    int64_t remaining = 0;  // limit - value, at least 0; 0 without a limit
    int64_t overage = 0;    // value - limit when above it
};
UsageDecision DecideUsage(LimitMode mode, int64_t current, int64_t amount, std::optional<int64_t> limit);

/// The thresholds (percent of |limit|, ascending) a move from |before| to |after| reaches for the first time:
/// those t with before < t% of limit <= after. None for a limit of 0 or none.
std::vector<int> CrossedThresholds(int64_t before, int64_t after, std::optional<int64_t> limit,
                                   std::span<const int> thresholds_percent);

/// History for charts: the usage of one meter per day or per calendar month (UTC).
enum class UsageGranularity { kDay, kMonth };
Result<UsageGranularity> ParseUsageGranularity(std::string_view text);  // "day" | "month"; param "granularity"
constexpr int kUsageHistoryBucketsMax = 366;  // buckets one history request may ask for

struct UsageBucket {
    Period period;
    int64_t usage = 0;  // the sum of the moves recorded for usage that happened in the bucket
    int64_t value = 0;  // the meter's value at the bucket's end (a gauge's; a counter's sum since |from|)
    int64_t events = 0;
};
/// Every bucket of |granularity| from the one holding |from| through the one holding |to| - 1s, in order, from the
/// daily moves |days| (sorted by day, days without moves absent) and the meter's value before |from|
/// (|value_before|). kInvalidArgument ("from") when from >= to, ("to") for more than kUsageHistoryBucketsMax.
struct UsageDay {
    Timestamp day;
    int64_t delta = 0;
    int64_t events = 0;
};
Result<std::vector<UsageBucket>> BucketUsage(std::span<const UsageDay> days, UsageGranularity granularity,
                                             Timestamp from, Timestamp to, int64_t value_before);

/// "80,95,100" -> {80, 95, 100}: strictly ascending percents in 1..1000. kInvalidArgument otherwise.
Result<std::vector<int>> ParseUsageThresholds(std::string_view text);

/// The default warning thresholds (seed 004): 80%, 95% and 100%.
std::span<const int> DefaultUsageThresholds();

}  // namespace tally
