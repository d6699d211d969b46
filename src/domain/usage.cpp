#include "domain/usage.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <sstream>

namespace tally {

Result<MeterKind> ParseMeterKind(std::string_view text) {
    if (text == "gauge") return MeterKind::kGauge;
    if (text == "counter") return MeterKind::kCounter;
    return InvalidArgument("meter kind must be gauge or counter", "kind");
}

const char* MeterKindName(MeterKind kind) { return kind == MeterKind::kCounter ? "counter" : "gauge"; }

Result<LimitMode> ParseLimitMode(std::string_view text) {
    if (text == "hard") return LimitMode::kHard;
    if (text == "soft") return LimitMode::kSoft;
    return InvalidArgument("limit mode must be hard or soft", "mode");
}

const char* LimitModeName(LimitMode mode) { return mode == LimitMode::kSoft ? "soft" : "hard"; }

std::string MetersToText(const std::vector<Meter>& meters) {
    std::string out;
    for (const auto& m : meters) {
        out += m.name;
        out += ' ';
        out += MeterKindName(m.kind);
        out += ' ';
        out += LimitModeName(m.mode);
        out += ' ';
        out += m.unit;
        if (m.counts_members) out += " members";
        out += '\n';
    }
    return out;
}

std::vector<Meter> MetersFromText(std::string_view text) {
    std::vector<Meter> out;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream words(line);
        std::string name, kind, mode, unit, source;
        if (!(words >> name >> kind >> mode >> unit)) continue;
        words >> source;
        // A word this build does not know reads as the strictest meaning: a hard gauge.
        Meter m{name, MeterKind::kGauge, LimitMode::kHard, unit, source == "members"};
        if (auto k = ParseMeterKind(kind); k.ok()) m.kind = *k;
        if (auto l = ParseLimitMode(mode); l.ok()) m.mode = *l;
        out.push_back(std::move(m));
    }
    return out;
}

Period UsagePeriod(Timestamp at, const std::optional<BillingCycle>& cycle) {
    if (cycle && cycle->current.end > cycle->current.start) {
        if (at < cycle->current.end) return cycle->current;
        auto next = PeriodContaining(cycle->current.start, cycle->interval, at);
        if (next.ok()) return *next;
    }
    // The calendar month: months anchored on 1970-01-01T00:00Z.
    auto month = PeriodContaining(Timestamp(0), BillingInterval{BillingInterval::Unit::kMonth, 1}, at);
    if (month.ok()) return *month;
    return Period{at, at.PlusSeconds(1)};  // outside 1970..9999: a period of its own
}

Result<Period> CounterPeriodFor(Timestamp at, Timestamp now, const Period& current, Timestamp previous_start) {
    if (at >= current.start) return current;
    if (at < previous_start || now.unix_seconds() >= current.start.unix_seconds() + kUsageLateGraceSeconds) {
        return InvalidArgument("timestamp is before the current period (from " + FormatRfc3339(current.start) +
                                   ") and its period is closed: late usage counts in the previous period only "
                                   "within " + std::to_string(kUsageLateGraceSeconds / 3600) + " h of its end",
                               "timestamp");
    }
    return Period{previous_start, current.start};
}

Result<UsageGranularity> ParseUsageGranularity(std::string_view text) {
    if (text == "day") return UsageGranularity::kDay;
    if (text == "month") return UsageGranularity::kMonth;
    return InvalidArgument("granularity must be day or month", "granularity");
}

Result<std::vector<UsageBucket>> BucketUsage(std::span<const UsageDay> days, UsageGranularity granularity,
                                             Timestamp from, Timestamp to, int64_t value_before) {
    if (from >= to) return InvalidArgument("from must be before to", "from");
    const BillingInterval step{granularity == UsageGranularity::kDay ? BillingInterval::Unit::kDay
                                                                      : BillingInterval::Unit::kMonth,
                               1};
    // Days and calendar months anchored on 1970-01-01T00:00Z, as usage periods without a subscription are.
    TALLY_ASSIGN_OR_RETURN(Period first, PeriodContaining(Timestamp(0), step, from));
    TALLY_ASSIGN_OR_RETURN(Period last, PeriodContaining(Timestamp(0), step, to.PlusSeconds(-1)));
    std::vector<UsageBucket> out;
    int64_t value = value_before;
    size_t d = 0;
    for (Period p = first;; ) {
        if (out.size() >= static_cast<size_t>(kUsageHistoryBucketsMax)) {
            return InvalidArgument("at most " + std::to_string(kUsageHistoryBucketsMax) + " buckets per request",
                                   "to");
        }
        UsageBucket b{p, 0, 0, 0};
        for (; d < days.size() && days[d].day < p.end; ++d) {
            if (days[d].day < p.start) continue;
            b.usage += days[d].delta;
            b.events += days[d].events;
        }
        value += b.usage;
        b.value = value;
        out.push_back(b);
        if (p == last) break;
        TALLY_ASSIGN_OR_RETURN(p, PeriodContaining(Timestamp(0), step, p.end));
    }
    return out;
}

UsageDecision DecideUsage(LimitMode mode, int64_t current, int64_t amount, std::optional<int64_t> limit) {
    UsageDecision d;
    d.after = current + amount;
    if (!limit) return d;
    if (d.after > *limit && mode == LimitMode::kHard && amount > 0) {
        d.allowed = false;
        d.reason = "limit_exceeded";
        d.after = current;
    }
    d.remaining = std::max<int64_t>(0, *limit - d.after);
    d.overage = std::max<int64_t>(0, d.after - *limit);
    if (d.allowed && d.overage > 0) d.reason = "overage";
    return d;
}

std::vector<int> CrossedThresholds(int64_t before, int64_t after, std::optional<int64_t> limit,
                                   std::span<const int> thresholds_percent) {
    std::vector<int> out;
    if (!limit || *limit <= 0 || after <= before) return out;
    for (int t : thresholds_percent) {
        // value >= t% of limit, exactly: value * 100 >= t * limit (no rounding; values stay far below 2^63/100).
        const bool was = before * 100 >= static_cast<int64_t>(t) * *limit;
        const bool is = after * 100 >= static_cast<int64_t>(t) * *limit;
        if (!was && is) out.push_back(t);
    }
    return out;
}

Result<std::vector<int>> ParseUsageThresholds(std::string_view text) {
    std::vector<int> out;
    size_t start = 0;
    while (start <= text.size()) {
        const size_t end = std::min(text.find(',', start), text.size());
        const std::string_view part = text.substr(start, end - start);
        int v = 0;
        const auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
        if (part.empty() || ec != std::errc() || p != part.data() + part.size() || v < 1 || v > 1000) {
            return InvalidArgument("thresholds are percents from 1 to 1000, comma-separated: '" + std::string(part) + "'",
                                   "thresholds");
        }
        if (!out.empty() && v <= out.back()) return InvalidArgument("thresholds must ascend", "thresholds");
        out.push_back(v);
        start = end + 1;
    }
    return out;
}

std::span<const int> DefaultUsageThresholds() {
    static constexpr std::array<int, 3> kThresholds = {80, 95, 100};
    return kThresholds;
}

}  // namespace tally
