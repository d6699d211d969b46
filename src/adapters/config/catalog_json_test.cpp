#include "adapters/config/catalog_json.hpp"

#include <gtest/gtest.h>

#include <tuple>

namespace tally {
namespace {

TEST(CatalogJsonTest, DefaultCatalogMatchesSeedTiers) {
    auto catalog = LoadCatalogFile(std::string(TALLY_SOURCE_DIR) + "/config/pricing.json");
    ASSERT_TRUE(catalog.ok()) << catalog.error().message;
    struct Row { const char* plan; int64_t monthly; int64_t yearly; int64_t projects; int64_t build_hours; int64_t storage_gb; const char* role; };
    const Row rows[] = {{"free", 0, 0, 1, 5, 1, "member"},
                        {"starter", 3000, 30000, 1, 40, 10, "professional"},
                        {"pro", 6000, 60000, 3, 150, 50, "professional"},
                        {"scale", 12000, 120000, 8, 500, 200, "professional"}};
    for (const auto& r : rows) {
        const Plan* plan = catalog->FindPlan(PlanId(r.plan));
        ASSERT_NE(plan, nullptr) << r.plan;
        EXPECT_EQ(plan->role, r.role);
        EXPECT_EQ(plan->limits.at("projects"), r.projects);
        EXPECT_EQ(plan->limits.at("build_hours"), r.build_hours);
        EXPECT_EQ(plan->limits.at("storage_gb"), r.storage_gb);
        if (r.monthly > 0) {
            const std::string id(r.plan);
            EXPECT_EQ(catalog->MatchPrice(id + "_monthly", "").price->unit_amount.amount_minor(), r.monthly);
            EXPECT_EQ(catalog->MatchPrice(id + "_yearly", "").price->unit_amount.amount_minor(), r.yearly);
            EXPECT_EQ(catalog->MatchPrice(id + "_yearly", "").price->interval.unit, BillingInterval::Unit::kYear);
        }
    }
    EXPECT_EQ(catalog->default_plan().id.str(), "free");
}

TEST(CatalogJsonTest, ErrorsNameTheJsonPath) {
    struct Case { const char* json; const char* param; };
    const Case cases[] = {
        {"{", ""},
        {R"({"roles":["member"],"default_plan":"free"})", "plans"},
        {R"({"roles":"member","default_plan":"free","plans":[]})", "roles"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"member"}],"extra":1})", "extra"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"member","prices":[{"interval":"month","unit_amount":5,"currency":"usd"}]}]})", "plans[0].prices[0].lookup_key"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"member","prices":[{"lookup_key":"a","interval":"fortnight","unit_amount":0,"currency":"usd"}]}]})", "plans[0].prices[0].interval"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"member","prices":[{"lookup_key":"a","interval":"month","unit_amount":1.5,"currency":"usd"}]}]})", "plans[0].prices[0].unit_amount"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"member","prices":[{"lookup_key":"a","interval":"month","unit_amount":0,"currency":"zzz"}]}]})", "plans[0].prices[0].currency"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"boss"}]})", "plans[0].role"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"member","features":{"ai":"yes"}}]})", "plans[0].features.ai"},
        {R"({"roles":["member"],"default_plan":"free","plans":[{"id":"free","role":"member","limits":{"seats":"many"}}]})", "plans[0].limits.seats"},
        {R"({"roles":["member"],"default_plan":"gold","plans":[{"id":"free","role":"member"}]})", "default_plan"},
    };
    for (const auto& c : cases) {
        auto catalog = ParseCatalogJson(c.json);
        ASSERT_FALSE(catalog.ok()) << c.json;
        EXPECT_EQ(catalog.error().param, c.param) << c.json << " -> " << catalog.error().message;
    }
    auto missing = LoadCatalogFile("/nonexistent/pricing.json");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

// Issue 13's default bundles: 1,000 credits for 10.00 USD, 5,000 for 45.00, 20,000 for 160.00.
TEST(CatalogJsonTest, DefaultCreditBundles) {
    auto text = ReadCatalogText(std::string(TALLY_SOURCE_DIR) + "/config/pricing.json");
    ASSERT_TRUE(text.ok());
    auto bundles = ParseCreditBundlesJson(*text);
    ASSERT_TRUE(bundles.ok()) << bundles.error().message;
    ASSERT_EQ(bundles->size(), 3U);
    const std::tuple<const char*, int64_t, int64_t> want[] = {
        {"credits_1000", 1000, 1000}, {"credits_5000", 5000, 4500}, {"credits_20000", 20000, 16000}};
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ((*bundles)[i].id, std::get<0>(want[i]));
        EXPECT_EQ((*bundles)[i].credits, std::get<1>(want[i]));
        EXPECT_EQ((*bundles)[i].price.amount_minor(), std::get<2>(want[i]));
        EXPECT_EQ((*bundles)[i].price.currency().code(), "usd");
        EXPECT_FALSE((*bundles)[i].expires_in_days.has_value());
    }
    auto none = ParseCreditBundlesJson(R"({"roles":[]})");
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->empty());
}

TEST(CatalogJsonTest, CreditBundleErrorsNameTheJsonPath) {
    struct Case { const char* json; const char* param; };
    const Case cases[] = {
        {R"({"credit_bundles":{}})", "credit_bundles"},
        {R"({"credit_bundles":[{"id":"a","name":"A","credits":10,"unit_amount":100}]})", "credit_bundles[0].currency"},
        {R"({"credit_bundles":[{"id":"a","name":"A","credits":0,"unit_amount":100,"currency":"usd"}]})", "credit_bundles[0].credits"},
        {R"({"credit_bundles":[{"id":"a","name":"A","credits":10,"unit_amount":0,"currency":"usd"}]})", "credit_bundles[0].unit_amount"},
        {R"({"credit_bundles":[{"id":"a","name":"A","credits":10,"unit_amount":5,"currency":"zzz"}]})", "credit_bundles[0].currency"},
        {R"({"credit_bundles":[{"id":"a b","name":"A","credits":10,"unit_amount":5,"currency":"usd"}]})", "credit_bundles[0].id"},
        {R"({"credit_bundles":[{"id":"a","name":"A","credits":10,"unit_amount":5,"currency":"usd","expires_in_days":0}]})", "credit_bundles[0].expires_in_days"},
        {R"({"credit_bundles":[{"id":"a","name":"A","credits":10,"unit_amount":5,"currency":"usd","color":"red"}]})", "credit_bundles[0].color"},
        {R"({"credit_bundles":[{"id":"a","name":"A","credits":10,"unit_amount":5,"currency":"usd"},{"id":"a","name":"B","credits":1,"unit_amount":5,"currency":"usd"}]})", "credit_bundles[1].id"},
    };
    for (const auto& c : cases) {
        auto bundles = ParseCreditBundlesJson(c.json);
        ASSERT_FALSE(bundles.ok()) << c.json;
        EXPECT_EQ(bundles.error().param, c.param) << c.json << " -> " << bundles.error().message;
    }
}

}  // namespace
}  // namespace tally
