#include "domain/usage.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

TEST(UsageTest, DecideUsageTable) {
    struct Case {
        const char* name;
        LimitMode mode;
        int64_t current, amount;
        std::optional<int64_t> limit;
        bool allowed;
        const char* reason;
        int64_t after, remaining, overage;
    };
    const Case cases[] = {
        {"fits", LimitMode::kHard, 3, 2, 10, true, "", 5, 5, 0},
        {"exactly the last unit", LimitMode::kHard, 9, 1, 10, true, "", 10, 0, 0},
        {"one past a hard limit", LimitMode::kHard, 10, 1, 10, false, "limit_exceeded", 10, 0, 0},
        {"a hard limit refuses all of an amount that does not fit", LimitMode::kHard, 8, 5, 10, false,
         "limit_exceeded", 8, 2, 0},
        {"past a soft limit: allowed, overage", LimitMode::kSoft, 8, 5, 10, true, "overage", 13, 0, 3},
        {"no limit", LimitMode::kHard, 1000, 1, std::nullopt, true, "", 1001, 0, 0},
        {"a limit of 0 blocks", LimitMode::kHard, 0, 1, 0, false, "limit_exceeded", 0, 0, 0},
        {"already past after a downgrade: blocks, reports", LimitMode::kHard, 12, 1, 10, false, "limit_exceeded", 12,
         0, 2},
    };
    for (const auto& c : cases) {
        const UsageDecision d = DecideUsage(c.mode, c.current, c.amount, c.limit);
        EXPECT_EQ(d.allowed, c.allowed) << c.name;
        EXPECT_EQ(d.reason, c.reason) << c.name;
        EXPECT_EQ(d.after, c.after) << c.name;
        EXPECT_EQ(d.remaining, c.remaining) << c.name;
        EXPECT_EQ(d.overage, c.overage) << c.name;
    }
}

// Seed 004 warns at 80% and 95%; 100% is the block. Each threshold is reached once, by the move that reaches it.
TEST(UsageTest, CrossedThresholdsTable) {
    const auto t = DefaultUsageThresholds();
    EXPECT_EQ(CrossedThresholds(0, 1, 1, t), (std::vector<int>{80, 95, 100}));  // a 1-unit limit: all at once
    EXPECT_EQ(CrossedThresholds(79, 80, 100, t), (std::vector<int>{80}));
    EXPECT_EQ(CrossedThresholds(80, 94, 100, t), (std::vector<int>{}));  // 80% was reached before
    EXPECT_EQ(CrossedThresholds(94, 96, 100, t), (std::vector<int>{95}));
    EXPECT_EQ(CrossedThresholds(3, 4, 5, t), (std::vector<int>{80}));    // 4/5 = 80% exactly, no rounding
    EXPECT_EQ(CrossedThresholds(5, 4, 5, t), (std::vector<int>{}));      // going down reaches nothing
    EXPECT_EQ(CrossedThresholds(0, 10, std::nullopt, t), (std::vector<int>{}));
    EXPECT_EQ(CrossedThresholds(0, 10, 0, t), (std::vector<int>{}));
    EXPECT_EQ(CrossedThresholds(0, kUsageAmountMax, kUsageAmountMax, t), (std::vector<int>{80, 95, 100}));
}

TEST(UsageTest, PeriodIsTheSubscriptionsOrTheCalendarMonth) {
    const Timestamp mid_march = MakeUtc(2026, 3, 17, 12).value();
    const Period march{MakeUtc(2026, 3, 1).value(), MakeUtc(2026, 4, 1).value()};
    EXPECT_EQ(UsagePeriod(mid_march, std::nullopt), march);
    const BillingInterval monthly{BillingInterval::Unit::kMonth, 1};
    const Period billing{MakeUtc(2026, 3, 10).value(), MakeUtc(2026, 4, 10).value()};
    EXPECT_EQ(UsagePeriod(mid_march, BillingCycle{billing, monthly}), billing);
    // Stripe's period ahead of Tally's clock (a test clock advanced): Stripe's period is the one billed.
    const Period ahead{MakeUtc(2026, 4, 10).value(), MakeUtc(2026, 5, 10).value()};
    EXPECT_EQ(UsagePeriod(mid_march, BillingCycle{ahead, monthly}), ahead);
    // Past the period's end before the renewal is heard of: the cycle continues (Jan 10 + 2 months = Mar 10).
    const Period old{MakeUtc(2026, 1, 10).value(), MakeUtc(2026, 2, 10).value()};
    EXPECT_EQ(UsagePeriod(mid_march, BillingCycle{old, monthly}), billing);
    const Period jan31{MakeUtc(2026, 1, 31).value(), MakeUtc(2026, 2, 28).value()};
    EXPECT_EQ(UsagePeriod(mid_march, BillingCycle{jan31, monthly}),
              (Period{MakeUtc(2026, 2, 28).value(), MakeUtc(2026, 3, 31).value()}));
    EXPECT_EQ(UsagePeriod(MakeUtc(2024, 2, 29, 23, 59, 59).value(), std::nullopt),
              (Period{MakeUtc(2024, 2, 1).value(), MakeUtc(2024, 3, 1).value()}));
}

TEST(UsageTest, ThresholdsParse) {
    EXPECT_EQ(ParseUsageThresholds("80,95,100").value(), (std::vector<int>{80, 95, 100}));
    EXPECT_EQ(ParseUsageThresholds("50").value(), (std::vector<int>{50}));
    for (const char* bad : {"", "80,", "95,80", "0", "1001", "80,80", "eighty", "80;95"}) {
        EXPECT_FALSE(ParseUsageThresholds(bad).ok()) << bad;
    }
}

TEST(UsageTest, MetersRoundTripThroughText) {
    const std::vector<Meter> meters = {{"projects", MeterKind::kGauge, LimitMode::kHard, "projects"},
                                       {"build_hours", MeterKind::kCounter, LimitMode::kSoft, "hours"}};
    EXPECT_EQ(MetersFromText(MetersToText(meters)), meters);
    EXPECT_TRUE(MetersFromText("").empty());
    // A word this build does not know reads as the strictest meaning.
    EXPECT_EQ(MetersFromText("x quantum elastic units\n")[0],
              (Meter{"x", MeterKind::kGauge, LimitMode::kHard, "units"}));
    EXPECT_EQ(ParseMeterKind("tally").error().param, "kind");
    EXPECT_EQ(ParseLimitMode("maybe").error().param, "mode");
}

// Late usage (Lago's grace period; Stripe's meter events take past timestamps): the previous period takes it for
// kUsageLateGraceSeconds after it ended; older usage, or later arrival, is refused.
TEST(UsageTest, CounterPeriodForLateUsage) {
    const Period current{Timestamp(1000000), Timestamp(2000000)};
    const Timestamp previous_start(500000);
    const int64_t grace_end = 1000000 + kUsageLateGraceSeconds;
    struct Case {
        const char* name;
        int64_t at, now;
        bool ok;
        int64_t start;
    };
    const Case cases[] = {
        {"in the current period", 1500000, 1600000, true, 1000000},
        {"at the current period's start", 1000000, 1000001, true, 1000000},
        {"in the previous period, within the grace window", 999999, grace_end - 1, true, 500000},
        {"at the previous period's start", 500000, 1000001, true, 500000},
        {"in the previous period, the window just passed", 999999, grace_end, false, 0},
        {"before the previous period", 499999, 1000001, false, 0},
    };
    for (const auto& c : cases) {
        auto p = CounterPeriodFor(Timestamp(c.at), Timestamp(c.now), current, previous_start);
        ASSERT_EQ(p.ok(), c.ok) << c.name;
        if (c.ok) {
            EXPECT_EQ(p->start.unix_seconds(), c.start) << c.name;
        } else {
            EXPECT_EQ(p.error().param, "timestamp") << c.name;
        }
    }
}

TEST(UsageTest, BucketUsageFillsEveryBucketAndCarriesTheValue) {
    const int64_t jan1 = 1767225600;  // 2026-01-01T00:00:00Z
    const UsageDay days[] = {{Timestamp(jan1 + 86400), 3, 2}, {Timestamp(jan1 + 3 * 86400), -1, 1},
                             {Timestamp(jan1 + 31 * 86400), 5, 1}};
    auto by_day = BucketUsage(days, UsageGranularity::kDay, Timestamp(jan1 + 10), Timestamp(jan1 + 4 * 86400), 7);
    ASSERT_TRUE(by_day.ok());
    ASSERT_EQ(by_day->size(), 4u);  // Jan 1 (holding from) .. Jan 4
    EXPECT_EQ((*by_day)[0].period, (Period{Timestamp(jan1), Timestamp(jan1 + 86400)}));
    const int64_t usage[] = {0, 3, 0, -1}, value[] = {7, 10, 10, 9}, events[] = {0, 2, 0, 1};
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ((*by_day)[i].usage, usage[i]) << i;
        EXPECT_EQ((*by_day)[i].value, value[i]) << i;
        EXPECT_EQ((*by_day)[i].events, events[i]) << i;
    }
    auto by_month = BucketUsage(days, UsageGranularity::kMonth, Timestamp(jan1), Timestamp(jan1 + 59 * 86400), 0);
    ASSERT_TRUE(by_month.ok());
    ASSERT_EQ(by_month->size(), 2u);  // January (31 days) and February (28)
    EXPECT_EQ((*by_month)[0].usage, 2);
    EXPECT_EQ((*by_month)[1].period, (Period{Timestamp(jan1 + 31 * 86400), Timestamp(jan1 + 59 * 86400)}));
    EXPECT_EQ((*by_month)[1].usage, 5);
    EXPECT_EQ((*by_month)[1].value, 7);
    EXPECT_EQ(BucketUsage(days, UsageGranularity::kDay, Timestamp(jan1), Timestamp(jan1), 0).error().param, "from");
    EXPECT_EQ(BucketUsage(days, UsageGranularity::kDay, Timestamp(jan1), Timestamp(jan1 + 367 * 86400), 0)
                  .error()
                  .param,
              "to");
    EXPECT_TRUE(BucketUsage(days, UsageGranularity::kDay, Timestamp(jan1), Timestamp(jan1 + 366 * 86400), 0).ok());
    EXPECT_EQ(ParseUsageGranularity("week").error().param, "granularity");
}

}  // namespace
}  // namespace tally
