#include "domain/time.hpp"

#include <chrono>
#include <cstdio>

namespace tally {

Status CheckTimestampRange(Timestamp t, const char* param) {
    if (t.unix_seconds() < 0 || t.unix_seconds() > kTimestampSecondsMax) {
        return InvalidArgument(std::string(param) + " must be a Unix time in seconds between 0 and " +
                                   std::to_string(kTimestampSecondsMax) + " (9999-12-31T23:59:59Z)",
                               param);
    }
    return {};
}

namespace {

using std::chrono::days;
using std::chrono::sys_days;
using std::chrono::year_month_day;

constexpr int64_t kSecondsPerDay = 86400;
constexpr int kYearMin = 1970;
constexpr int kYearMax = 9999;

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

year_month_day DateOf(Timestamp t) {
    return year_month_day{sys_days{days{FloorDiv(t.unix_seconds(), kSecondsPerDay)}}};
}

int64_t SecondOfDay(Timestamp t) { return t.unix_seconds() - FloorDiv(t.unix_seconds(), kSecondsPerDay) * kSecondsPerDay; }

}  // namespace

std::string FormatRfc3339(Timestamp t) {
    const auto ymd = DateOf(t);
    const int64_t sod = SecondOfDay(t);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), static_cast<int>(sod / 3600),
                  static_cast<int>(sod / 60 % 60), static_cast<int>(sod % 60));
    return buf;
}

Result<Timestamp> MakeUtc(int year, unsigned month, unsigned day, int hour, int minute, int second) {
    const year_month_day ymd{std::chrono::year{year}, std::chrono::month{month}, std::chrono::day{day}};
    if (!ymd.ok() || year < kYearMin || year > kYearMax) return InvalidArgument("date does not exist");
    if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59) {
        return InvalidArgument("time of day out of range");
    }
    const int64_t day_index = sys_days{ymd}.time_since_epoch().count();
    return Timestamp(day_index * kSecondsPerDay + int64_t{hour} * 3600 + int64_t{minute} * 60 + second);
}

Result<Timestamp> ParseRfc3339(std::string_view text) {
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
    char z = 0;
    int consumed = 0;
    const std::string copy(text);
    if (std::sscanf(copy.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c%n", &y, &mo, &d, &h, &mi, &s, &z, &consumed) != 7 ||
        z != 'Z' || static_cast<size_t>(consumed) != copy.size() || mo < 1 || d < 1) {
        return InvalidArgument("timestamp must be RFC 3339 UTC, e.g. 2024-01-31T00:00:00Z");
    }
    return MakeUtc(y, static_cast<unsigned>(mo), static_cast<unsigned>(d), h, mi, s);
}

Result<BillingInterval::Unit> ParseIntervalUnit(std::string_view text) {
    if (text == "day") return BillingInterval::Unit::kDay;
    if (text == "week") return BillingInterval::Unit::kWeek;
    if (text == "month") return BillingInterval::Unit::kMonth;
    if (text == "year") return BillingInterval::Unit::kYear;
    return InvalidArgument("interval must be one of day, week, month, year");
}

const char* IntervalUnitName(BillingInterval::Unit unit) {
    switch (unit) {
        case BillingInterval::Unit::kDay: return "day";
        case BillingInterval::Unit::kWeek: return "week";
        case BillingInterval::Unit::kMonth: return "month";
        case BillingInterval::Unit::kYear: return "year";
    }
    return "month";
}

Result<Timestamp> NthBoundary(Timestamp anchor, BillingInterval interval, int64_t n) {
    if (n < 0) return InvalidArgument("period index must be non-negative");
    if (interval.count < 1) return InvalidArgument("interval_count must be at least 1");
    int64_t steps = 0;
    if (__builtin_mul_overflow(n, interval.count, &steps)) return InvalidArgument("period index overflow");
    switch (interval.unit) {
        case BillingInterval::Unit::kDay:
        case BillingInterval::Unit::kWeek: {
            const int64_t unit_s = interval.unit == BillingInterval::Unit::kDay ? kSecondsPerDay : 7 * kSecondsPerDay;
            int64_t offset = 0;
            if (__builtin_mul_overflow(steps, unit_s, &offset)) return InvalidArgument("period index overflow");
            const Timestamp out = anchor.PlusSeconds(offset);
            if (static_cast<int>(DateOf(out).year()) > kYearMax) return InvalidArgument("date beyond year 9999");
            return out;
        }
        case BillingInterval::Unit::kMonth:
        case BillingInterval::Unit::kYear: {
            int64_t months = steps;
            if (interval.unit == BillingInterval::Unit::kYear && __builtin_mul_overflow(steps, 12, &months)) {
                return InvalidArgument("period index overflow");
            }
            const auto ymd = DateOf(anchor);
            const int64_t month_index = static_cast<int64_t>(static_cast<int>(ymd.year())) * 12 +
                                        (static_cast<unsigned>(ymd.month()) - 1) + months;
            const int64_t year = month_index / 12;
            if (year > kYearMax) return InvalidArgument("date beyond year 9999");
            const auto month = std::chrono::month{static_cast<unsigned>(month_index % 12 + 1)};
            const auto last = std::chrono::year_month_day_last{std::chrono::year{static_cast<int>(year)},
                                                               std::chrono::month_day_last{month}};
            const unsigned day = std::min(static_cast<unsigned>(ymd.day()), static_cast<unsigned>(last.day()));
            const year_month_day target{std::chrono::year{static_cast<int>(year)}, month, std::chrono::day{day}};
            return Timestamp(sys_days{target}.time_since_epoch().count() * kSecondsPerDay + SecondOfDay(anchor));
        }
    }
    return InvalidArgument("unknown interval");
}

Result<Period> PeriodContaining(Timestamp anchor, BillingInterval interval, Timestamp at) {
    if (at < anchor) return InvalidArgument("instant precedes the billing cycle anchor");
    if (interval.count < 1) return InvalidArgument("interval_count must be at least 1");
    // Estimate the index from the Gregorian calendar's average period length (365.2425 days a year), then correct:
    // boundaries are monotonic in n, so the estimate is off by a step or two at most.
    int64_t approx_len = kSecondsPerDay;
    switch (interval.unit) {
        case BillingInterval::Unit::kDay: approx_len = kSecondsPerDay; break;
        case BillingInterval::Unit::kWeek: approx_len = 7 * kSecondsPerDay; break;
        case BillingInterval::Unit::kMonth: approx_len = 2629746; break;  // 365.2425 days / 12
        case BillingInterval::Unit::kYear: approx_len = 31556952; break;  // 365.2425 days
    }
    int64_t n = (at.unix_seconds() - anchor.unix_seconds()) / (approx_len * interval.count);
    for (;;) {
        TALLY_ASSIGN_OR_RETURN(Timestamp start, NthBoundary(anchor, interval, n));
        if (start > at) {
            --n;
            continue;
        }
        TALLY_ASSIGN_OR_RETURN(Timestamp end, NthBoundary(anchor, interval, n + 1));
        if (at < end) return Period{start, end};
        ++n;
    }
}

}  // namespace tally
