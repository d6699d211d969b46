#include "domain/role.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace tally {
namespace {

constexpr int64_t kGrace = 7 * 86400;

Catalog MakeCatalog() {
    auto usd = Currency::Parse("usd").value();
    std::vector<Plan> plans = {
        {PlanId("free"), "Free", "member", 0, {}, {}, {}, 0},
        {PlanId("starter"), "Starter", "professional", 0, {{{BillingInterval::Unit::kMonth, 1}, Money(3000, usd), "starter_monthly", {}}}, {}, {}, 0},
        {PlanId("pro"), "Pro", "professional", 0, {{{BillingInterval::Unit::kMonth, 1}, Money(6000, usd), "pro_monthly", {}}}, {}, {}, 0},
    };
    return Catalog::Create({"member", "professional"}, plans, PlanId("free")).value();
}

TEST(RoleTest, StatusTable) {
    const Catalog catalog = MakeCatalog();
    const Plan* starter = catalog.FindPlan(PlanId("starter"));
    const Timestamp now(1'000'000);
    struct Case { SubscriptionStatus status; std::optional<Timestamp> past_due_since; const char* role; };
    const Case cases[] = {
        {SubscriptionStatus::kActive, {}, "professional"},
        {SubscriptionStatus::kTrialing, {}, "professional"},
        {SubscriptionStatus::kPastDue, now.PlusSeconds(-kGrace + 1), "professional"},  // inside grace
        {SubscriptionStatus::kPastDue, now.PlusSeconds(-kGrace), "member"},            // grace over (half-open)
        {SubscriptionStatus::kCanceled, {}, "member"},
        {SubscriptionStatus::kUnpaid, {}, "member"},
        {SubscriptionStatus::kIncompleteExpired, {}, "member"},
        {SubscriptionStatus::kIncomplete, {}, "member"},
        {SubscriptionStatus::kPaused, {}, "member"},
    };
    for (const auto& c : cases) {
        const SubscriptionAccessInput sub{"sub_1", c.status, starter, c.past_due_since};
        const auto d = DecideAccess(catalog, std::span(&sub, 1), std::nullopt, now, kGrace);
        EXPECT_EQ(d.role, c.role) << SubscriptionStatusName(c.status);
        EXPECT_EQ(d.plan->id.str(), d.role == std::string("member") ? "free" : "starter");
    }
}

TEST(RoleTest, GraceEndIsTheNextChange) {
    const Catalog catalog = MakeCatalog();
    const SubscriptionAccessInput sub{"sub_1", SubscriptionStatus::kPastDue, catalog.FindPlan(PlanId("pro")), Timestamp(100)};
    const auto d = DecideAccess(catalog, std::span(&sub, 1), std::nullopt, Timestamp(200), kGrace);
    EXPECT_EQ(d.role, "professional");
    ASSERT_TRUE(d.grace_ends_at.has_value());
    EXPECT_EQ(d.grace_ends_at->unix_seconds(), 100 + kGrace);
    EXPECT_EQ(d.next_change_at->unix_seconds(), 100 + kGrace);
}

TEST(RoleTest, HighestPlanWinsAcrossSubscriptions) {
    const Catalog catalog = MakeCatalog();
    const std::vector<SubscriptionAccessInput> subs = {
        {"sub_a", SubscriptionStatus::kActive, catalog.FindPlan(PlanId("starter")), {}},
        {"sub_b", SubscriptionStatus::kActive, catalog.FindPlan(PlanId("pro")), {}},
        {"sub_c", SubscriptionStatus::kCanceled, catalog.FindPlan(PlanId("pro")), {}},
        {"sub_d", SubscriptionStatus::kActive, nullptr, {}},  // unknown price grants nothing
    };
    const auto d = DecideAccess(catalog, subs, std::nullopt, Timestamp(0), kGrace);
    EXPECT_EQ(d.plan->id.str(), "pro");
    EXPECT_EQ(d.subscription_id, "sub_b");
}

TEST(RoleTest, OverrideBeatsAutomationUntilItExpires) {
    const Catalog catalog = MakeCatalog();
    const SubscriptionAccessInput sub{"sub_1", SubscriptionStatus::kActive, catalog.FindPlan(PlanId("pro")), {}};
    const RoleOverride demote{"member", "abuse", Timestamp(500), Timestamp(0)};
    auto d = DecideAccess(catalog, std::span(&sub, 1), demote, Timestamp(499), kGrace);
    EXPECT_EQ(d.role, "member");
    EXPECT_EQ(d.role_source, "override");
    EXPECT_EQ(d.plan->id.str(), "pro");  // the plan (and its features) still comes from billing
    EXPECT_EQ(d.next_change_at->unix_seconds(), 500);
    d = DecideAccess(catalog, std::span(&sub, 1), demote, Timestamp(500), kGrace);
    EXPECT_EQ(d.role, "professional");
    const RoleOverride promote{"professional", "partner", std::nullopt, Timestamp(0)};
    d = DecideAccess(catalog, {}, promote, Timestamp(1'000'000'000), kGrace);
    EXPECT_EQ(d.role, "professional");
    EXPECT_EQ(d.plan->id.str(), "free");
}

}  // namespace
}  // namespace tally
