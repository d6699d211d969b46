#include "domain/subscription.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

constexpr int64_t kMay = 1'746'057'600;   // 2025-05-01T00:00:00Z
constexpr int64_t kJune = 1'748'736'000;  // 2025-06-01T00:00:00Z
constexpr int64_t kJuly = 1'751'328'000;  // 2025-07-01T00:00:00Z

SchedulePhase P(int64_t start, int64_t end, const char* price, int64_t quantity = 1) {
    return SchedulePhase{Timestamp(start), Timestamp(end), price, quantity};
}

// Source: Stripe moves the subscription to the next phase's items at the boundary (subscription schedules guide).
TEST(PhaseChangeAtTest, TheNextPhaseIsAPendingChangeOnlyWhenItChangesSomething) {
    struct Case {
        const char* name;
        std::vector<SchedulePhase> phases;
        int64_t period_end;
        const char* price;
        int64_t quantity;
        std::optional<SchedulePhase> want;
    };
    const std::vector<Case> cases = {
        {"downgrade next period", {P(kMay, kJune, "price_pro"), P(kJune, kJuly, "price_starter")}, kJune, "price_pro", 1,
         P(kJune, kJuly, "price_starter")},
        {"fewer seats next period", {P(kMay, kJune, "price_pro", 5), P(kJune, kJuly, "price_pro", 2)}, kJune,
         "price_pro", 5, P(kJune, kJuly, "price_pro", 2)},
        {"the next phase keeps the price", {P(kMay, kJune, "price_pro"), P(kJune, kJuly, "price_pro")}, kJune,
         "price_pro", 1, std::nullopt},
        {"only the current phase (from_subscription)", {P(kMay, kJune, "price_pro")}, kJune, "price_pro", 1, std::nullopt},
        {"the change already happened (the period moved on)",
         {P(kMay, kJune, "price_pro"), P(kJune, kJuly, "price_starter")}, kJuly, "price_starter", 1, std::nullopt},
        {"no phases", {}, kJune, "price_pro", 1, std::nullopt},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(PhaseChangeAt(c.phases, Timestamp(c.period_end), c.price, c.quantity), c.want) << c.name;
    }
}

TEST(PhaseChangeAtTest, ScheduleStatusesSplitIntoOpenAndTerminal) {
    for (const char* s : {"not_started", "active"}) {
        EXPECT_TRUE(IsOpenScheduleStatus(s)) << s;
        EXPECT_FALSE(IsTerminalScheduleStatus(s)) << s;
    }
    for (const char* s : {"completed", "released", "canceled"}) {
        EXPECT_FALSE(IsOpenScheduleStatus(s)) << s;
        EXPECT_TRUE(IsTerminalScheduleStatus(s)) << s;
    }
    EXPECT_FALSE(IsOpenScheduleStatus("paused"));
}

TEST(PhaseChangeAtTest, PhasesRoundTripThroughTheirTextForm) {
    const std::vector<SchedulePhase> phases = {P(kMay, kJune, "price_pro", 3), P(kJune, kJuly, "")};
    EXPECT_EQ(SchedulePhasesFromText(SchedulePhasesToText(phases)), phases);
    EXPECT_TRUE(SchedulePhasesFromText("").empty());
    EXPECT_EQ(SchedulePhasesFromText("garbage\n1 2 1 price_x\n").size(), 1u);
}

}  // namespace
}  // namespace tally
