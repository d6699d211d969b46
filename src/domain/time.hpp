#pragma once
// UTC time and billing-period arithmetic. Periods are half-open [start, end).
#include <cstdint>
#include <string>
#include <string_view>

#include "domain/result.hpp"

namespace tally {

/// Seconds since the Unix epoch, UTC (Stripe's unit for `created`, `current_period_end`, ...). Value type.
class Timestamp {
public:
    constexpr Timestamp() = default;
    constexpr explicit Timestamp(int64_t unix_seconds) : s_(unix_seconds) {}
    constexpr int64_t unix_seconds() const { return s_; }
    constexpr Timestamp PlusSeconds(int64_t seconds) const { return Timestamp(s_ + seconds); }
    // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
    constexpr auto operator<=>(const Timestamp&) const = default;

private:
    int64_t s_ = 0;
};

/// The latest instant Tally accepts from a caller: 9999-12-31T23:59:59Z (RFC 3339 has four-digit years, and
/// Stripe's timestamps stay within them).
constexpr int64_t kTimestampSecondsMax = 253402300799;
/// kInvalidArgument naming |param| unless 0 <= t <= kTimestampSecondsMax.
Status CheckTimestampRange(Timestamp t, const char* param);

/// RFC 3339 UTC text, e.g. "2024-01-31T00:00:00Z".
std::string FormatRfc3339(Timestamp t);
/// Parses "YYYY-MM-DDTHH:MM:SSZ" (UTC only); kInvalidArgument otherwise.
Result<Timestamp> ParseRfc3339(std::string_view text);
/// Builds a UTC timestamp from calendar fields; kInvalidArgument if the date does not exist.
Result<Timestamp> MakeUtc(int year, unsigned month, unsigned day, int hour = 0, int minute = 0, int second = 0);

/// A recurring price's interval, as Stripe's `recurring{interval, interval_count}`.
struct BillingInterval {
    enum class Unit { kDay, kWeek, kMonth, kYear };
    Unit unit = Unit::kMonth;
    int64_t count = 1;
    bool operator==(const BillingInterval&) const = default;
};

/// "day"|"week"|"month"|"year" -> unit; kInvalidArgument otherwise.
Result<BillingInterval::Unit> ParseIntervalUnit(std::string_view text);
const char* IntervalUnitName(BillingInterval::Unit unit);

/// A half-open billing period [start, end).
struct Period {
    Timestamp start;
    Timestamp end;
    bool Contains(Timestamp t) const { return start <= t && t < end; }
    int64_t length_seconds() const { return end.unix_seconds() - start.unix_seconds(); }
    bool operator==(const Period&) const = default;
};

/// The n-th period boundary after |anchor| (n >= 0). Months and years keep the anchor's day of month,
/// clamped to the target month's length, and its time of day: anchored on Jan 31 it gives Feb 28 (29 in
/// leap years), Mar 31, Apr 30 (Stripe's billing_cycle_anchor rule, ../shared/stripe/README.md).
/// kInvalidArgument if n < 0, interval.count < 1, or the result leaves years 1970..9999.
Result<Timestamp> NthBoundary(Timestamp anchor, BillingInterval interval, int64_t n);

/// The billing period that contains |at| for a cycle anchored at |anchor|.
/// kInvalidArgument if at < anchor or the interval is invalid.
Result<Period> PeriodContaining(Timestamp anchor, BillingInterval interval, Timestamp at);

}  // namespace tally
