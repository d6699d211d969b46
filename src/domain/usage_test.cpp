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
    const Period billing{MakeUtc(2026, 3, 10).value(), MakeUtc(2026, 4, 10).value()};
    EXPECT_EQ(UsagePeriod(mid_march, billing), billing);
    // A subscription period that does not hold the time (it ended) gives way to the month.
    const Period old{MakeUtc(2026, 1, 10).value(), MakeUtc(2026, 2, 10).value()};
    EXPECT_EQ(UsagePeriod(mid_march, old), march);
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

}  // namespace
}  // namespace tally
