// Plans at runtime on both stores (issue 11, item 4): the file seeds an empty database once however many nodes start
// together; plans are created, changed and archived with their rules (immutable prices, grandfathering, the default
// plan, features new to the catalog); every change waits for its push to Stripe, which one node does, retried with
// backoff while Stripe is down; and `tally catalog diff|apply` make the database equal the file.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "adapters/config/catalog_json.hpp"
#include "adapters/http/json_views.hpp"
#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/event_outbox.hpp"
#include "app/plan_service.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::ManualClock;
using testing::StoreKind;

constexpr int64_t kT0 = 1'700'000'000;

/// Stripe as the plan push sees it: records each pushed plan and hands out price ids; can be down.
class PlanStripe final : public testing::UnreachableStripeApi {
public:
    Result<std::vector<std::string>> SyncPlan(const StripePlanSpec& spec) override {
        std::lock_guard lock(mu);
        ++calls[spec.product_id];
        if (down) return Unavailable("Stripe cannot be reached");
        last[spec.product_id] = spec;
        std::vector<std::string> ids;
        for (const auto& p : spec.prices) {
            ids.push_back(!p.stripe_price_id.empty() ? p.stripe_price_id : p.active ? "price_" + p.tally_id : "");
        }
        return ids;
    }
    std::mutex mu;
    std::atomic<bool> down{false};
    std::map<std::string, int> calls;
    std::map<std::string, StripePlanSpec> last;
};

/// One Tally node: its own services (and installed catalog) over the shared store.
struct Node {
    Node(Store& store, const Catalog& file, const Clock& clock, StripeApi* stripe, EventOutbox& outbox)
        : billing(store, file, clock, BillingConfig{}, &outbox), plans(store, billing, stripe, clock, &outbox) {}
    BillingService billing;
    PlanService plans;
};

struct Harness {
    explicit Harness(StoreKind kind) : db(kind) {}
    testing::TestStore db;
    ManualClock clock{kT0};
    Catalog file = LoadCatalogFile(std::string(TALLY_SOURCE_DIR) + "/config/pricing.json").value();
    std::unique_ptr<Store> store = db.Open();
    http::JsonObjectRenderer renderer;
    EventOutbox outbox{renderer, clock};
    PlanStripe stripe;
    Node a{*store, file, clock, &stripe, outbox};
    Node b{*store, file, clock, &stripe, outbox};

    void Seed() {
        ASSERT_TRUE(a.plans.SeedAndLoad(file).ok());
        ASSERT_TRUE(b.plans.SeedAndLoad(file).ok());
    }
    template <typename Fn>
    Result<PlanRecord> Write(Fn fn) {
        std::optional<PlanRecord> out;
        TALLY_TRY(store->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, fn(tx));
            return {};
        }));
        a.plans.Changed();
        return *out;
    }
    Result<PlanRecord> Create(const std::string& json) {
        auto plan = ParsePlanJson(boost::json::parse(json));
        if (!plan.ok()) return plan.error();
        return Write([&](StoreTx& tx) { return a.plans.Create(tx, *plan, "test"); });
    }
    Result<PlanRecord> Update(const std::string& id, const PlanChange& change) {
        return Write([&](StoreTx& tx) { return a.plans.Update(tx, PlanId(id), change, "test"); });
    }
    Result<PlanRecord> Archive(const std::string& id) {
        return Write([&](StoreTx& tx) { return a.plans.Archive(tx, PlanId(id), "test"); });
    }
    /// Runs the push on both nodes until nothing is due now.
    void SyncAll() {
        for (int i = 0; i < 5; ++i) {
            clock.Advance(10);  // past SyncDue's quiet period
            ASSERT_TRUE(a.plans.SyncDue().ok());
            ASSERT_TRUE(b.plans.SyncDue().ok());
        }
    }
    std::vector<AppEventRecord> Events(const std::string& type) {
        std::vector<AppEventRecord> events;
        EXPECT_TRUE(store->Read([&](StoreTx& tx) -> Status {
            AppEventFilter filter;
            filter.limit = 1000;
            filter.type = type;
            TALLY_ASSIGN_OR_RETURN(events, tx.events().ListEvents(filter));
            return {};
        }).ok());
        return events;
    }
};

CatalogPrice Price(const std::string& interval, int64_t amount, const std::string& lookup_key = "") {
    return CatalogPrice{BillingInterval{ParseIntervalUnit(interval).value(), 1}, Money(amount, Currency::Parse("usd").value()),
                        lookup_key, std::nullopt};
}

const PlanPriceRecord* ActivePrice(const PlanRecord& plan, const std::string& interval) {
    for (const auto& p : plan.prices) {
        if (p.active && p.interval == interval) return &p;
    }
    return nullptr;
}

class PlansTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, PlansTest, testing::kBothStores, testing::StoreKindName);

TEST_P(PlansTest, TheFileSeedsAnEmptyDatabaseOnceWhenNodesStartTogether) {
    Harness h(GetParam());
    std::thread t1([&] { EXPECT_TRUE(h.a.plans.SeedAndLoad(h.file).ok()); });
    std::thread t2([&] { EXPECT_TRUE(h.b.plans.SeedAndLoad(h.file).ok()); });
    t1.join();
    t2.join();
    auto plans = h.a.plans.List(true);
    ASSERT_TRUE(plans.ok());
    ASSERT_EQ(plans->size(), 4u);
    EXPECT_EQ((*plans)[2].id, "pro");
    EXPECT_TRUE((*plans)[2].stripe_sync_pending);
    for (Node* n : {&h.a, &h.b}) {
        EXPECT_EQ(n->billing.catalog().plans().size(), 4u);
        EXPECT_EQ(n->billing.catalog().FindPlan(PlanId("pro"))->prices[0].unit_amount.amount_minor(), 6000);
    }
    // A seeded database is left as it is; the file's differences are reported, not applied.
    auto changed = ParseCatalogJson(R"({"roles":["member","professional"],"default_plan":"free","plans":[
        {"id":"free","name":"Free","role":"member","features":{"ai_features":false,"sync_tools":false,"priority_support":false,"autoscale":false,"isolated_db":false},"limits":{"projects":1,"build_hours":5,"storage_gb":1,"users":5}}]})");
    ASSERT_TRUE(changed.ok()) << changed.error().message;
    auto diffs = h.a.plans.SeedAndLoad(*changed);
    ASSERT_TRUE(diffs.ok());
    EXPECT_EQ(diffs->size(), 4u);  // starter, pro, scale would be archived; the file declares no meters
    EXPECT_EQ(h.a.plans.List(false)->size(), 4u);
}

TEST_P(PlansTest, CreateValidatesAndANewFeatureIsOffOnEveryOtherPlan) {
    Harness h(GetParam());
    h.Seed();
    auto team = h.Create(R"({"id":"team","name":"Team","role":"professional",
        "prices":[{"interval":"month","unit_amount":20000,"currency":"usd"}],"features":{"sso":true},"limits":{"seats":25}})");
    ASSERT_TRUE(team.ok()) << team.error().param << ": " << team.error().message;
    EXPECT_EQ(team->position, 4);
    EXPECT_EQ(team->prices[0].lookup_key, "team_monthly");
    EXPECT_EQ(team->features.at("sso"), true);
    EXPECT_EQ(team->features.at("ai_features"), false);  // what it left out is off
    EXPECT_EQ(team->limits.at("projects"), 0);
    auto free = h.a.plans.Get(PlanId("free"));
    EXPECT_EQ(free->features.at("sso"), false);
    EXPECT_EQ(free->limits.at("seats"), 0);
    // Both nodes sell it: the other one once it sees the version move.
    EXPECT_NE(h.a.billing.catalog().FindPlan(PlanId("team")), nullptr);
    EXPECT_EQ(h.b.billing.catalog().FindPlan(PlanId("team")), nullptr);
    EXPECT_TRUE(*h.b.plans.ReloadIfChanged());
    EXPECT_NE(h.b.billing.catalog().FindPlan(PlanId("team")), nullptr);
    EXPECT_FALSE(*h.b.plans.ReloadIfChanged());
    EXPECT_EQ(h.Events("plan.created").size(), 1u);

    // Each refusal names its field and changes nothing.
    EXPECT_EQ(h.Create(R"({"id":"team","role":"professional"})").error().reason, ErrorReason::kResourceAlreadyExists);
    EXPECT_EQ(h.Create(R"({"id":"x","role":"wizard"})").error().param, "role");
    EXPECT_EQ(h.Create(R"({"id":"x","role":"member","prices":[{"interval":"month","unit_amount":-1,"currency":"usd"}]})")
                  .error().param, ".prices[0].amount");
    EXPECT_EQ(h.Create(R"({"id":"y","role":"member","prices":[{"interval":"month","unit_amount":100,"currency":"usd",
        "lookup_key":"pro_monthly"}]})").error().param, "prices[0].lookup_key");
    EXPECT_EQ(h.Create(R"({"id":"z","role":"member","prices":[{"interval":"month","unit_amount":100,"currency":"usd"},
        {"interval":"month","unit_amount":200,"currency":"usd","lookup_key":"z2"}]})").error().param, "prices[1].interval");
    EXPECT_EQ(h.a.plans.List(true)->size(), 5u);
}

TEST_P(PlansTest, ANewAmountIsANewPriceAndSubscribersOnTheOldOneKeepTheirPlan) {
    Harness h(GetParam());
    h.Seed();
    h.SyncAll();
    auto pro = h.a.plans.Get(PlanId("pro"));
    const std::string old_stripe_id = ActivePrice(*pro, "month")->stripe_price_id;
    ASSERT_FALSE(old_stripe_id.empty());
    PlanChange change;
    change.name = "Pro 2027";
    change.prices = std::vector<CatalogPrice>{Price("month", 7000), Price("year", 60000)};
    auto updated = h.Update("pro", change);
    ASSERT_TRUE(updated.ok()) << updated.error().message;
    ASSERT_EQ(updated->prices.size(), 3u);
    EXPECT_FALSE(updated->prices[0].active);  // the old monthly price, deactivated
    EXPECT_EQ(updated->prices[0].unit_amount, 6000);
    EXPECT_TRUE(updated->prices[1].active);   // the yearly price, unchanged
    EXPECT_EQ(updated->prices[2].unit_amount, 7000);
    EXPECT_EQ(updated->prices[2].lookup_key, "pro_monthly");  // the key moves to the new price
    EXPECT_TRUE(updated->stripe_sync_pending);

    // Until the push, a sale would charge the old amount under the key: refused, not guessed.
    const Catalog& before_push = h.a.billing.catalog();
    auto sale = PaidPrice(before_push, PlanId("pro"), "month");
    ASSERT_TRUE(sale.ok());
    EXPECT_EQ((*sale)->unit_amount.amount_minor(), 7000);
    EXPECT_EQ(SalePriceId(before_push, PlanId("pro"), **sale, h.stripe).error().reason, ErrorReason::kStripeSyncPending);

    h.SyncAll();
    const StripePlanSpec& pushed = h.stripe.last.at("tally_pro");
    EXPECT_EQ(pushed.name, "Pro 2027");
    ASSERT_EQ(pushed.prices.size(), 3u);
    EXPECT_FALSE(pushed.prices[0].active);  // deactivated in Stripe
    EXPECT_EQ(pushed.prices[0].stripe_price_id, old_stripe_id);
    EXPECT_TRUE(pushed.prices[2].stripe_price_id.empty());  // created, taking the key over
    auto synced = h.a.plans.Get(PlanId("pro"));
    EXPECT_FALSE(synced->stripe_sync_pending);
    const std::string new_stripe_id = ActivePrice(*synced, "month")->stripe_price_id;
    EXPECT_EQ(new_stripe_id, "price_" + synced->prices[2].id);

    // Grandfathering, on every node: a subscription still on the old price matches pro by its Stripe id (its key
    // moved), and a new sale gets the new price.
    ASSERT_TRUE(h.b.plans.ReloadIfChanged().ok());
    for (Node* n : {&h.a, &h.b}) {
        const Catalog& c = n->billing.catalog();
        EXPECT_EQ(c.MatchPrice("", old_stripe_id).plan->id.str(), "pro");
        EXPECT_EQ(c.MatchPrice("", old_stripe_id).price->unit_amount.amount_minor(), 6000);
        EXPECT_EQ(c.MatchPrice("pro_monthly", "").price->unit_amount.amount_minor(), 7000);
        auto price = PaidPrice(c, PlanId("pro"), "month");
        EXPECT_EQ(SalePriceId(c, PlanId("pro"), **price, h.stripe).value(), new_stripe_id);
    }
    // The same prices again change nothing.
    const int64_t updated_at = synced->updated.unix_seconds();
    h.clock.Advance(100);
    PlanChange same;
    same.prices = std::vector<CatalogPrice>{Price("month", 7000), Price("year", 60000)};
    auto again = h.Update("pro", same);
    EXPECT_EQ(again->updated.unix_seconds(), updated_at);
    EXPECT_FALSE(again->stripe_sync_pending);
    EXPECT_EQ(h.Events("plan.updated").size(), 1u);
}

TEST_P(PlansTest, APushWaitsWhileStripeIsDownAndOneNodeDoesEach) {
    Harness h(GetParam());
    h.stripe.down = true;
    h.Seed();
    h.clock.Advance(10);
    ASSERT_TRUE(h.a.plans.SyncDue().ok());
    auto pro = h.a.plans.Get(PlanId("pro"));
    EXPECT_TRUE(pro->stripe_sync_pending);
    EXPECT_EQ(pro->stripe_sync_attempts, 1);
    EXPECT_EQ(pro->stripe_sync_error, "Stripe cannot be reached");
    EXPECT_EQ(pro->next_sync_at.unix_seconds(), h.clock.Now().unix_seconds() + 1);  // backoff 1, 2, 4, ...
    EXPECT_EQ(h.a.plans.Get(PlanId("free"))->stripe_sync_pending, false);  // nothing of a free plan goes to Stripe
    h.clock.Advance(10);
    ASSERT_TRUE(h.b.plans.SyncDue().ok());
    EXPECT_EQ(h.a.plans.Get(PlanId("pro"))->stripe_sync_attempts, 2);
    // Back up: both nodes race for the due pushes; each plan is pushed exactly once.
    h.stripe.down = false;
    h.stripe.calls.clear();
    h.clock.Advance(60);
    std::thread t1([&] { EXPECT_TRUE(h.a.plans.SyncDue().ok()); });
    std::thread t2([&] { EXPECT_TRUE(h.b.plans.SyncDue().ok()); });
    t1.join();
    t2.join();
    EXPECT_EQ(h.stripe.calls["tally_pro"], 1);
    EXPECT_EQ(h.stripe.calls["tally_starter"], 1);
    EXPECT_EQ(h.stripe.calls["tally_scale"], 1);
    auto all = h.a.plans.List(true);
    ASSERT_TRUE(all.ok());
    for (const auto& plan : *all) {
        EXPECT_FALSE(plan.stripe_sync_pending) << plan.id;
        EXPECT_TRUE(plan.stripe_sync_error.empty());
    }
}

TEST_P(PlansTest, AnArchivedPlanIsNotSoldButKeepsItsSubscribers) {
    Harness h(GetParam());
    h.Seed();
    h.SyncAll();
    auto starter = h.a.plans.Get(PlanId("starter"));
    const std::string starter_price = ActivePrice(*starter, "month")->stripe_price_id;
    EXPECT_EQ(h.Archive("free").error().param, "id");  // the default plan
    auto archived = h.Archive("starter");
    ASSERT_TRUE(archived.ok());
    EXPECT_TRUE(archived->archived_at.has_value());
    EXPECT_TRUE(h.Archive("starter").ok());  // again: the same plan
    EXPECT_EQ(h.Events("plan.archived").size(), 1u);
    const Catalog& c = h.a.billing.catalog();
    EXPECT_EQ(PaidPrice(c, PlanId("starter"), "month").error().reason, ErrorReason::kPlanArchived);
    EXPECT_EQ(c.MatchPrice("starter_monthly", starter_price).plan->id.str(), "starter");
    EXPECT_EQ(h.a.plans.List(false)->size(), 3u);
    EXPECT_EQ(h.a.plans.List(true)->size(), 4u);
    h.SyncAll();
    EXPECT_FALSE(h.stripe.last.at("tally_starter").active);  // the product is deactivated, its prices too
    EXPECT_FALSE(h.stripe.last.at("tally_starter").prices[0].active);
    EXPECT_EQ(h.a.plans.Get(PlanId("nope")).error().code, ErrorCode::kNotFound);
    EXPECT_EQ(h.Archive("nope").error().code, ErrorCode::kNotFound);
    // Every change is audited with its actor.
    std::vector<AuditEntry> audit;
    ASSERT_TRUE(h.store->Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(audit, tx.audit().List(CustomerId(""), 100));
        return {};
    }).ok());
    EXPECT_EQ(audit.front().kind, "plan_archived");
    EXPECT_EQ(audit.front().cause, "test");
    EXPECT_EQ(audit.front().detail, "plan=starter");
}

TEST_P(PlansTest, ConcurrentCreatesOnTwoNodesGetDistinctRanks) {
    Harness h(GetParam());
    h.Seed();
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&, i] {
            Node& n = i % 2 ? h.a : h.b;
            auto plan = ParsePlanJson(boost::json::parse(R"({"id":"p)" + std::to_string(i) + R"(","role":"member"})"));
            Status s = h.store->Write([&](StoreTx& tx) -> Status {
                TALLY_TRY(n.plans.Create(tx, *plan, "test"));
                return {};
            });
            if (s.ok()) ++ok;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 8);
    auto plans = h.a.plans.List(true);
    std::set<int64_t> ranks;
    for (const auto& p : *plans) ranks.insert(p.position);
    EXPECT_EQ(plans->size(), 12u);
    EXPECT_EQ(ranks.size(), 12u);
}

TEST_P(PlansTest, ApplyMakesTheDatabaseEqualTheFile) {
    Harness h(GetParam());
    h.Seed();
    EXPECT_TRUE(h.a.plans.Diff(h.file)->empty());
    std::string text = R"({"roles":["member","professional"],"default_plan":"free","plans":[
      {"id":"free","name":"Free","role":"member","features":{"ai_features":false,"sync_tools":false,"priority_support":false,"autoscale":false,"isolated_db":false},"limits":{"projects":1,"build_hours":5,"storage_gb":1,"users":5}},
      {"id":"pro","name":"Pro","role":"professional","prices":[{"lookup_key":"pro_monthly","interval":"month","unit_amount":6500,"currency":"usd"}],
       "features":{"ai_features":true,"sync_tools":true,"priority_support":true,"autoscale":true,"isolated_db":false},"limits":{"projects":3,"build_hours":150,"storage_gb":50,"users":20},"credits_monthly":5000},
      {"id":"enterprise","name":"Enterprise","role":"professional","prices":[{"lookup_key":"enterprise_yearly","interval":"year","unit_amount":500000,"currency":"usd"}],
       "features":{"ai_features":true,"sync_tools":true,"priority_support":true,"autoscale":true,"isolated_db":true},"limits":{"projects":100,"build_hours":5000,"storage_gb":2000,"users":null}}]})";
    auto next = ParseCatalogJson(text);
    ASSERT_TRUE(next.ok()) << next.error().message;
    auto diff = h.a.plans.Diff(*next);
    ASSERT_TRUE(diff.ok());
    std::set<std::string> what;
    for (const auto& d : *diff) what.insert(d.plan + ":" + d.what);
    EXPECT_EQ(what, (std::set<std::string>{"pro:prices", "enterprise:added", "starter:archived", "scale:archived",
                                           "*:meters"}));
    auto applied = h.a.plans.Apply(*next, "cli");
    ASSERT_TRUE(applied.ok()) << applied.error().message;
    EXPECT_EQ(applied->size(), diff->size());
    EXPECT_TRUE(h.a.plans.Diff(*next)->empty());
    auto plans = h.a.plans.List(false);
    ASSERT_EQ(plans->size(), 3u);
    EXPECT_EQ((*plans)[2].id, "enterprise");
    EXPECT_EQ(ActivePrice((*plans)[1], "month")->unit_amount, 6500);
    EXPECT_FALSE(ActivePrice((*plans)[1], "year"));  // the file has no yearly pro price any more
    EXPECT_EQ(h.a.billing.catalog().FindPlan(PlanId("starter"))->archived, true);
    EXPECT_EQ(h.Events("plan.archived").size(), 2u);
    EXPECT_EQ(h.Events("plan.created").size(), 1u);
    // The original file again restores what it has; a role change is refused whole.
    ASSERT_TRUE(h.a.plans.Apply(h.file, "cli").ok());
    EXPECT_EQ(h.a.plans.List(false)->size(), 4u);  // enterprise archived, starter and scale back
    std::string moved = text;
    const std::string from = R"("name":"Pro","role":"professional")";
    moved.replace(moved.find(from), from.size(), R"("name":"Pro","role":"member")");
    auto role_changed = ParseCatalogJson(moved);
    ASSERT_TRUE(role_changed.ok()) << role_changed.error().message;
    auto refused = h.a.plans.Apply(*role_changed, "cli");
    EXPECT_EQ(refused.error().param, "plans[1].role");
    EXPECT_EQ(h.a.plans.List(false)->size(), 4u);
}

}  // namespace
}  // namespace tally
