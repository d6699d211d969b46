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

/// The period a counter accumulates in at |at|: the subscription's current period when one is given and holds
/// |at| (Stripe's current_period_start..end), else the calendar month of |at| in UTC.
Period UsagePeriod(Timestamp at, const std::optional<Period>& subscription_period);

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

/// "80,95,100" -> {80, 95, 100}: strictly ascending percents in 1..1000. kInvalidArgument otherwise.
Result<std::vector<int>> ParseUsageThresholds(std::string_view text);

/// The default warning thresholds (seed 004): 80%, 95% and 100%.
std::span<const int> DefaultUsageThresholds();

}  // namespace tally
