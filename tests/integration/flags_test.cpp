// Rollout flags on both stores (issue 12): seeding from the catalog file once (runtime changes win), changes and
// per-customer overrides audited, buckets stable across nodes, restarts and percentage changes.
#include <gtest/gtest.h>

#include <set>

#include "adapters/config/catalog_json.hpp"
#include "app/billing_service.hpp"
#include "app/flag_service.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::ManualClock;
using testing::StoreKind;

constexpr const char* kCatalog = R"({"roles":["member"],"default_plan":"free",
  "flags":{"billing_v2":{"description":"the new billing","enabled":true,"rollout_percentage":10},
           "dark_mode":{}},
  "plans":[{"id":"free","name":"Free","role":"member"}]})";

class FlagsTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, FlagsTest, testing::kBothStores, testing::StoreKindName);

struct Harness {
    explicit Harness(StoreKind kind) : db(kind) {
        store = db.Open();
        billing = std::make_unique<BillingService>(*store, catalog, clock, BillingConfig{});
        flags = std::make_unique<FlagService>(*store, clock);
    }
    std::vector<CustomerId> Customers(int n) {
        std::vector<CustomerId> out;
        Status s = store->Write([&](StoreTx& tx) -> Status {
            for (int i = 0; i < n; ++i) {
                TALLY_ASSIGN_OR_RETURN(auto created,
                                       billing->CreateCustomer(tx, "user_" + std::to_string(i), CustomerInput{}));
                out.push_back(created.first.customer.id);
            }
            return {};
        });
        EXPECT_TRUE(s.ok()) << s.error().message;
        return out;
    }
    Result<FlagView> Update(const std::string& name, const FlagChange& change) {
        std::optional<FlagView> out;
        TALLY_TRY(store->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, flags->Update(tx, name, change, "admin:key_1"));
            return {};
        }));
        return std::move(*out);
    }
    std::set<std::string> OnFor(const std::vector<CustomerId>& customers, const std::string& flag) {
        std::set<std::string> on;
        for (const auto& c : customers) {
            auto e = flags->Evaluate(c, flag);
            EXPECT_TRUE(e.ok());
            if (e.ok() && e->decision.enabled) on.insert(c.str());
        }
        return on;
    }
    std::vector<AuditEntry> Audit() {
        std::vector<AuditEntry> out;
        EXPECT_TRUE(store->Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, tx.audit().List(CustomerId(""), 100));
            return {};
        }).ok());
        return out;
    }

    testing::TestStore db;
    ManualClock clock{1'767'225'600};
    Catalog catalog = ParseCatalogJson(kCatalog).value();
    std::vector<FeatureFlag> seeds = ParseFlagsJson(kCatalog).value();
    std::unique_ptr<Store> store;
    std::unique_ptr<BillingService> billing;
    std::unique_ptr<FlagService> flags;
};

TEST_P(FlagsTest, TheCatalogFileSeedsOnceAndRuntimeChangesWin) {
    Harness h(GetParam());
    ASSERT_EQ(h.seeds.size(), 2u);
    ASSERT_TRUE(h.flags->Seed(h.seeds).ok());
    auto list = h.flags->List();
    ASSERT_TRUE(list.ok());
    ASSERT_EQ(list->size(), 2u);
    EXPECT_EQ((*list)[0].record.flag, (FeatureFlag{"billing_v2", "the new billing", true, 10}));
    EXPECT_EQ((*list)[0].record.updated_by, "config");
    EXPECT_EQ((*list)[1].record.flag, (FeatureFlag{"dark_mode", "", false, 0}));
    ASSERT_TRUE(h.Update("billing_v2", FlagChange{std::nullopt, 50, std::nullopt, {}}).ok());
    // Another start (this node's or another's) seeds again: the flag keeps its runtime percentage.
    ASSERT_TRUE(h.flags->Seed(h.seeds).ok());
    EXPECT_EQ(h.flags->Get("billing_v2")->record.flag.rollout_percentage, 50);
    int seeded = 0, updated = 0;
    for (const auto& e : h.Audit()) {
        seeded += e.kind == "flag_seeded";
        updated += e.kind == "flag_updated";
        if (e.kind == "flag_updated") {
            EXPECT_EQ(e.before, "enabled 10%");
            EXPECT_EQ(e.after, "enabled 50%");
            EXPECT_EQ(e.cause, "admin:key_1");
            EXPECT_EQ(e.detail, "flag=billing_v2");
        }
    }
    EXPECT_EQ(seeded, 2);
    EXPECT_EQ(updated, 1);
}

TEST_P(FlagsTest, RaisingThePercentageOnlyAddsCustomersAndBucketsSurviveARestart) {
    Harness h(GetParam());
    ASSERT_TRUE(h.flags->Seed(h.seeds).ok());
    const auto customers = h.Customers(200);
    const auto at10 = h.OnFor(customers, "billing_v2");
    EXPECT_GT(at10.size(), 2u);  // random ids: 20 expected
    EXPECT_LT(at10.size(), 50u);
    ASSERT_TRUE(h.Update("billing_v2", FlagChange{std::nullopt, 40, std::nullopt, {}}).ok());
    const auto at40 = h.OnFor(customers, "billing_v2");
    EXPECT_GT(at40.size(), at10.size());
    for (const auto& c : at10) EXPECT_TRUE(at40.count(c)) << c << " left the rollout when it grew";
    // A new service over the same database (a restart, or another node): the same customers.
    FlagService again(*h.store, h.clock);
    std::set<std::string> after;
    for (const auto& c : customers) {
        if (again.Evaluate(c, "billing_v2")->decision.enabled) after.insert(c.str());
    }
    EXPECT_EQ(after, at40);
    // Each customer's answer is the domain's bucket rule.
    for (const auto& c : customers) {
        EXPECT_EQ(at40.count(c.str()) == 1, FlagBucket("billing_v2", c.str()) < 40);
    }
    // Disabled: off for everyone.
    ASSERT_TRUE(h.Update("billing_v2", FlagChange{false, std::nullopt, std::nullopt, {}}).ok());
    EXPECT_TRUE(h.OnFor(customers, "billing_v2").empty());
}

TEST_P(FlagsTest, OverridesPinACustomerAndAreAudited) {
    Harness h(GetParam());
    ASSERT_TRUE(h.flags->Seed(h.seeds).ok());
    const auto customers = h.Customers(2);
    const CustomerId& a = customers[0];
    const CustomerId& b = customers[1];
    ASSERT_TRUE(h.Update("billing_v2", FlagChange{std::nullopt, 0, std::nullopt, {}}).ok());
    auto pinned = h.Update("billing_v2", FlagChange{std::nullopt, std::nullopt, std::nullopt,
                                                    {{a.str(), true}, {b.str(), std::nullopt}}});
    ASSERT_TRUE(pinned.ok()) << pinned.error().message;
    ASSERT_EQ(pinned->overrides.size(), 1u);
    auto ea = h.flags->Evaluate(a, "billing_v2");
    EXPECT_TRUE(ea->decision.enabled);
    EXPECT_EQ(ea->decision.reason, FlagReason::kOverride);
    auto eb = h.flags->Evaluate(b, "billing_v2");
    EXPECT_FALSE(eb->decision.enabled);
    EXPECT_EQ(eb->decision.reason, FlagReason::kNotInRollout);
    auto all = h.flags->ForCustomer(a);
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[0].flag, "billing_v2");
    EXPECT_TRUE((*all)[0].decision.enabled);
    EXPECT_EQ((*all)[1].decision.reason, FlagReason::kDisabled);  // dark_mode
    // Off at 100%, then removed: the bucket decides again.
    ASSERT_TRUE(h.Update("billing_v2", FlagChange{std::nullopt, 100, std::nullopt, {{a.str(), false}}}).ok());
    EXPECT_FALSE(h.flags->Evaluate(a, "billing_v2")->decision.enabled);
    ASSERT_TRUE(h.Update("billing_v2", FlagChange{std::nullopt, std::nullopt, std::nullopt, {{a.str(), std::nullopt}}}).ok());
    EXPECT_EQ(h.flags->Evaluate(a, "billing_v2")->decision.reason, FlagReason::kRollout);
    std::vector<std::string> kinds;
    for (const auto& e : h.Audit()) {
        if (e.customer_id == a && e.kind.starts_with("flag_")) kinds.push_back(e.kind + ":" + e.before + "->" + e.after);
    }
    // Newest first.
    EXPECT_EQ(kinds, (std::vector<std::string>{"flag_override_cleared:off->", "flag_override_set:on->off",
                                               "flag_override_set:->on"}));
}

TEST_P(FlagsTest, BadInputNamesItsParameterAndChangesNothing) {
    Harness h(GetParam());
    ASSERT_TRUE(h.flags->Seed(h.seeds).ok());
    const auto customers = h.Customers(1);
    EXPECT_EQ(h.Update("Bad Name", {}).error().param, "name");
    EXPECT_EQ(h.Update("billing_v2", FlagChange{std::nullopt, 101, std::nullopt, {}}).error().param,
              "rollout_percentage");
    EXPECT_EQ(h.Update("billing_v2", FlagChange{std::nullopt, -1, std::nullopt, {}}).error().param,
              "rollout_percentage");
    EXPECT_EQ(h.Update("billing_v2", FlagChange{std::nullopt, std::nullopt, std::string(501, 'x'), {}}).error().param,
              "description");
    // An unknown customer among the overrides: the whole change is refused, the percentage included.
    auto unknown = h.Update("billing_v2", FlagChange{true, 90, std::nullopt,
                                                     {{customers[0].str(), true}, {"cust_nope", true}}});
    EXPECT_EQ(unknown.error().param, "overrides.cust_nope");
    FlagChange many;
    for (size_t i = 0; i <= kFlagOverridesPerRequestMax; ++i) many.overrides["cust_" + std::to_string(i)] = true;
    EXPECT_EQ(h.Update("billing_v2", many).error().param, "overrides");
    auto flag = h.flags->Get("billing_v2");
    EXPECT_EQ(flag->record.flag.rollout_percentage, 10);
    EXPECT_TRUE(flag->overrides.empty());
    EXPECT_EQ(h.flags->Get("nope").error().param, "name");
    EXPECT_EQ(h.flags->Evaluate(customers[0], "nope").error().param, "flag");
    EXPECT_EQ(h.flags->Evaluate(CustomerId("cust_nope"), "billing_v2").error().param, "customer");
    EXPECT_EQ(h.flags->ForCustomer(CustomerId("cust_nope")).error().param, "id");
    // A catalog file's flags are checked when it is read.
    const std::pair<const char*, const char*> files[] = {
        {R"({"flags":{"Bad":{}}})", "flags.Bad"},
        {R"({"flags":{"x":{"rollout_percentage":101}}})", "flags.x.rollout_percentage"},
        {R"({"flags":{"x":{"enabled":"yes"}}})", "flags.x.enabled"},
        {R"({"flags":{"x":{"colour":"red"}}})", "flags.x.colour"},
        {R"({"flags":[]})", "flags"},
    };
    for (const auto& [text, param] : files) {
        auto parsed = ParseFlagsJson(text);
        ASSERT_FALSE(parsed.ok()) << text;
        EXPECT_EQ(parsed.error().param, param) << text;
    }
}

}  // namespace
}  // namespace tally
