#include "domain/catalog.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

Money Usd(int64_t minor) { return Money(minor, Currency::Parse("usd").value()); }

std::vector<Plan> TwoPlans() {
    Plan free{PlanId("free"), "Free", "member", 0, {{{BillingInterval::Unit::kMonth, 1}, Usd(0), "", std::nullopt}},
              {{"ai", false}}, {{"projects", 1}}, 0};
    Plan pro{PlanId("pro"), "Pro", "professional", 0,
             {{{BillingInterval::Unit::kMonth, 1}, Usd(6000), "pro_monthly", std::nullopt},
              {{BillingInterval::Unit::kYear, 1}, Usd(60000), "pro_yearly", std::string("price_123")}},
             {{"ai", true}}, {{"projects", 3}}, 1000};
    return {free, pro};
}

TEST(CatalogTest, BuildsAndMatchesByLookupKeyThenPriceId) {
    auto catalog = Catalog::Create({"member", "professional"}, TwoPlans(), PlanId("free"));
    ASSERT_TRUE(catalog.ok()) << catalog.error().message;
    EXPECT_EQ(catalog->default_plan().id.str(), "free");
    EXPECT_EQ(catalog->default_role(), "member");
    EXPECT_EQ(catalog->MatchPrice("pro_monthly", "price_unknown").plan->id.str(), "pro");
    EXPECT_EQ(catalog->MatchPrice("", "price_123").price->lookup_key, "pro_yearly");
    EXPECT_EQ(catalog->MatchPrice("nope", "price_nope").plan, nullptr);
    EXPECT_EQ(catalog->RoleRank("professional"), 1);
    EXPECT_EQ(catalog->RoleRank("admin"), -1);
    EXPECT_EQ(catalog->FindPlan(PlanId("pro"))->rank, 1);
}

TEST(CatalogTest, ValidationErrorsNameThePath) {
    struct Case {
        const char* name;
        void (*mutate)(std::vector<Plan>&);
        const char* param;
    };
    const Case cases[] = {
        {"dup id", [](std::vector<Plan>& p) { p[1].id = PlanId("free"); }, "plans[1].id"},
        {"unknown role", [](std::vector<Plan>& p) { p[1].role = "admin"; }, "plans[1].role"},
        {"dup lookup", [](std::vector<Plan>& p) { p[1].prices[1].lookup_key = "pro_monthly"; }, "plans[1].prices[1].lookup_key"},
        {"paid without key", [](std::vector<Plan>& p) { p[1].prices[0].lookup_key = ""; }, "plans[1].prices[0].lookup_key"},
        {"negative", [](std::vector<Plan>& p) { p[1].prices[0].unit_amount = Usd(-1); }, "plans[1].prices[0].amount"},
        {"missing feature", [](std::vector<Plan>& p) { p[1].features = {{"other", true}}; }, "plans[1].features"},
        {"extra limit", [](std::vector<Plan>& p) { p[1].limits["seats"] = 2; }, "plans[1].limits"},
        {"negative limit", [](std::vector<Plan>& p) { p[1].limits["projects"] = -1; }, "plans[1].limits.projects"},
        {"paid default", [](std::vector<Plan>& p) { p[0].prices[0].unit_amount = Usd(100); p[0].prices[0].lookup_key = "x"; }, "plans[0].prices"},
        {"archived default", [](std::vector<Plan>& p) { p[0].archived = true; }, "plans[0].archived"},
        {"two active monthly usd prices", [](std::vector<Plan>& p) {
             p[1].prices.push_back({{BillingInterval::Unit::kMonth, 1}, Usd(7000), "pro_monthly_2", std::nullopt});
         }, "plans[1].prices[2].interval"},
    };
    for (const auto& c : cases) {
        auto plans = TwoPlans();
        c.mutate(plans);
        auto catalog = Catalog::Create({"member", "professional"}, plans, PlanId("free"));
        ASSERT_FALSE(catalog.ok()) << c.name;
        EXPECT_EQ(catalog.error().param, c.param) << c.name << ": " << catalog.error().message;
    }
    EXPECT_EQ(Catalog::Create({"member", "professional"}, TwoPlans(), PlanId("gold")).error().param, "default_plan");
    EXPECT_EQ(Catalog::Create({}, TwoPlans(), PlanId("free")).error().param, "roles");
}

// Prices are immutable, as Stripe's: a new amount is a new price that takes the lookup key over
// (https://docs.stripe.com/api/prices/create#create_price-transfer_lookup_key), and the old one stays, inactive,
// matching the subscriptions still on it (https://docs.stripe.com/products-prices/manage-prices#edit-price).
TEST(CatalogTest, AReplacedPriceKeepsMatchingItsPlanAndIsNeverSold) {
    auto plans = TwoPlans();
    CatalogPrice replaced = plans[1].prices[0];
    replaced.active = false;
    replaced.stripe_price_id = "price_old";
    plans[1].prices[0].unit_amount = Usd(7000);
    plans[1].prices[0].stripe_price_id = "price_new";
    plans[1].prices.push_back(replaced);  // same lookup key, inactive: not a duplicate
    auto catalog = Catalog::Create({"member", "professional"}, plans, PlanId("free"));
    ASSERT_TRUE(catalog.ok()) << catalog.error().param << ": " << catalog.error().message;
    struct Case {
        std::string lookup_key, price_id;
        int64_t amount;
    };
    for (const Case& c : std::vector<Case>{{"pro_monthly", "", 7000},        // the key names the active price
                                           {"", "price_old", 6000},          // a grandfathered subscription
                                           {"", "price_new", 7000},
                                           {"pro_monthly", "price_old", 7000}}) {  // the key wins, same plan
        const PriceMatch m = catalog->MatchPrice(c.lookup_key, c.price_id);
        ASSERT_NE(m.plan, nullptr) << c.lookup_key << c.price_id;
        EXPECT_EQ(m.plan->id.str(), "pro");
        EXPECT_EQ(m.price->unit_amount.amount_minor(), c.amount) << c.lookup_key << c.price_id;
    }
    EXPECT_EQ(catalog->FindPlan(PlanId("pro"))->ActivePaidPrice(BillingInterval::Unit::kMonth)->unit_amount.amount_minor(),
              7000);
    EXPECT_EQ(catalog->FindPlan(PlanId("free"))->ActivePaidPrice(BillingInterval::Unit::kMonth), nullptr);
}

TEST(CatalogTest, MetersNameLimitsAndDefaultToHardGauges) {
    auto catalog = Catalog::Create({"member", "professional"}, TwoPlans(), PlanId("free"),
                                   {Meter{"projects", MeterKind::kGauge, LimitMode::kSoft, "projects"}});
    ASSERT_TRUE(catalog.ok());
    EXPECT_EQ(catalog->FindMeter("projects")->mode, LimitMode::kSoft);
    EXPECT_EQ(catalog->declared_meters().size(), 1u);
    auto bare = Catalog::Create({"member", "professional"}, TwoPlans(), PlanId("free"));
    ASSERT_TRUE(bare.ok());
    EXPECT_EQ(*bare->FindMeter("projects"), (Meter{"projects", MeterKind::kGauge, LimitMode::kHard, "projects"}));
    EXPECT_EQ(bare->FindMeter("nope"), nullptr);
    EXPECT_EQ(Catalog::Create({"member", "professional"}, TwoPlans(), PlanId("free"),
                              {Meter{"widgets", MeterKind::kCounter, LimitMode::kHard, "w"}})
                  .error()
                  .param,
              "meters.widgets");
    EXPECT_EQ(Catalog::Create({"member", "professional"}, TwoPlans(), PlanId("free"),
                              {Meter{"projects", MeterKind::kCounter, LimitMode::kHard, "two words"}})
                  .error()
                  .param,
              "meters.projects");
}

TEST(CatalogTest, ANullLimitIsUnlimitedAndANegativeOneIsRefused) {
    auto plans = TwoPlans();
    for (auto& p : plans) p.limits["projects"] = std::nullopt;
    auto catalog = Catalog::Create({"member", "professional"}, plans, PlanId("free"));
    ASSERT_TRUE(catalog.ok()) << catalog.error().message;
    EXPECT_FALSE(catalog->default_plan().limits.at("projects").has_value());
    plans[1].limits["projects"] = -1;
    EXPECT_EQ(Catalog::Create({"member", "professional"}, plans, PlanId("free")).error().param, "plans[1].limits.projects");
}

}  // namespace
}  // namespace tally
