// The webhook pipeline on a real SQLite file: record, process, and check state, order-independence,
// grace periods, overrides, checkout linking, and retries.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>

#include "adapters/config/catalog_json.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "adapters/stripe/event_decoder.hpp"
#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/subscription_service.hpp"
#include "app/webhook_processor.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::EventJson;
using testing::InvoiceObject;
using testing::ManualClock;
using testing::SubscriptionObject;
using testing::TempDb;

constexpr int64_t kT0 = 1'700'000'000;
constexpr int64_t kDay = 86400;

struct Harness {
    explicit Harness(testing::StoreKind kind) : db(kind) {}
    testing::TestStore db;
    ManualClock clock{kT0};
    Catalog catalog = LoadCatalogFile(std::string(TALLY_SOURCE_DIR) + "/config/pricing.json").value();
    std::unique_ptr<Store> store = db.Open();
    StripeEventDecoder decoder;
    BillingService billing{*store, catalog, clock, BillingConfig{7 * kDay}};
    WebhookProcessor processor{*store, decoder, billing, clock};

    void Deliver(const std::string& payload) {
        auto env = decoder.DecodeEnvelope(payload).value();
        InboxEvent e;
        e.id = env.id;
        e.type = env.type;
        e.created = env.created;
        e.payload = payload;
        e.received_at = clock.Now();
        ASSERT_TRUE(store->AppendInbox({e}).ok());
    }
    void DeliverAndProcess(const std::string& payload) {
        Deliver(payload);
        ASSERT_TRUE(processor.ProcessDue().ok());
    }
    CustomerView ByStripe(const std::string& id) {
        auto found = billing.FindByStripeCustomerId(StripeCustomerId(id)).value();
        EXPECT_EQ(found.size(), 1u) << id;
        return found.at(0);
    }
    std::vector<AuditEntry> Audit(const CustomerId& id) { return billing.ListAudit(id, 500).value(); }
};

class WebhookFlowTest : public ::testing::TestWithParam<testing::StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, WebhookFlowTest, testing::kBothStores, testing::StoreKindName);

TEST_P(WebhookFlowTest, ActiveSubscriptionGrantsThePlansRoleWithAnAuditedCause) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0)));
    const auto view = h.ByStripe("cus_1");
    EXPECT_EQ(view.decision.role, "professional");
    EXPECT_EQ(view.decision.plan->id.str(), "pro");
    ASSERT_TRUE(view.primary.has_value());
    EXPECT_EQ(view.primary->current_period_end.unix_seconds(), kT0 + 30 * kDay);
    const auto audit = h.Audit(view.customer.id);
    const auto it = std::find_if(audit.begin(), audit.end(), [](const AuditEntry& e) { return e.kind == "role_changed"; });
    ASSERT_NE(it, audit.end());
    EXPECT_EQ(it->before, "member");
    EXPECT_EQ(it->after, "professional");
    EXPECT_EQ(it->cause, "event:evt_1");
}

TEST_P(WebhookFlowTest, UnknownPriceGrantsNothingAndIsAudited) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_1", "active", "mystery_plan", kT0)));
    const auto view = h.ByStripe("cus_1");
    EXPECT_EQ(view.decision.role, "member");
    const auto audit = h.Audit(view.customer.id);
    EXPECT_TRUE(std::any_of(audit.begin(), audit.end(), [](const AuditEntry& e) { return e.kind == "unknown_price"; }));
}

// A customer.updated takes email and name only when its previous_attributes name them: the echo of a change to
// metadata alone (Tally's own profile push) must not carry Stripe's older name over a newer one.
TEST_P(WebhookFlowTest, CustomerUpdatedTakesOnlyTheFieldsItChanged) {
    Harness h(GetParam());
    boost::json::object customer{{"id", "cus_1"}, {"object", "customer"}, {"email", "ada@example.com"},
                                 {"name", "Ada"}, {"metadata", boost::json::object{}}};
    h.DeliverAndProcess(EventJson("evt_c1", "customer.created", kT0, customer));
    customer["name"] = "Ada Old";
    customer["email"] = "ada@old.example.com";
    customer["metadata"] = boost::json::object{{"tier", "gold"}};
    h.DeliverAndProcess(EventJson("evt_c2", "customer.updated", kT0 + 10, customer, {{"metadata", "changed"}}));
    EXPECT_EQ(h.ByStripe("cus_1").customer.name, "Ada");
    EXPECT_EQ(h.ByStripe("cus_1").customer.email, "ada@example.com");
    h.DeliverAndProcess(EventJson("evt_c3", "customer.updated", kT0 + 20, customer, {{"name", "Ada"}}));
    EXPECT_EQ(h.ByStripe("cus_1").customer.name, "Ada Old");
    EXPECT_EQ(h.ByStripe("cus_1").customer.email, "ada@example.com");
}

boost::json::object ScheduleObject(const std::string& status, const std::vector<std::pair<int64_t, std::string>>& phases,
                                   bool attached = true) {
    namespace bj = boost::json;
    bj::array ps;
    for (size_t i = 0; i < phases.size(); ++i) {
        const int64_t end = i + 1 < phases.size() ? phases[i + 1].first : phases[i].first + 30 * kDay;
        ps.push_back(bj::object{{"start_date", phases[i].first},
                                {"end_date", end},
                                {"items", bj::array{bj::object{{"price", phases[i].second}, {"quantity", 1}}}}});
    }
    return bj::object{{"id", "sub_sched_1"},        {"object", "subscription_schedule"},
                      {"status", status},           {"created", kT0 + 100},
                      {"customer", "cus_1"},        {"subscription", attached ? bj::value("sub_1") : bj::value(nullptr)},
                      {"released_subscription", attached ? bj::value(nullptr) : bj::value("sub_1")},
                      {"phases", std::move(ps)}};
}

// A downgrade at period end made in Stripe (a schedule from the subscription, then a second phase): whatever the
// order of its events and the subscription's, the pending change is the same, and gone once the period moved.
TEST_P(WebhookFlowTest, ScheduleEventsInAnyOrderGiveTheSamePendingChange) {
    const int64_t end = kT0 + 30 * kDay;
    const std::vector<std::pair<int64_t, std::string>> one = {{kT0, "price_pro_monthly"}};
    const std::vector<std::pair<int64_t, std::string>> two = {{kT0, "price_pro_monthly"}, {end, "price_starter_monthly"}};
    const std::vector<std::string> scheduled = {
        EventJson("evt_s1", "customer.subscription.created", kT0,
                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0)),
        EventJson("evt_k1", "subscription_schedule.created", kT0 + 100, ScheduleObject("active", one)),
        EventJson("evt_k2", "subscription_schedule.updated", kT0 + 100, ScheduleObject("active", two),
                  {{"phases", boost::json::value_from(ScheduleObject("active", one).at("phases"))}}),
    };
    std::vector<std::string> happened = scheduled;
    happened.push_back(EventJson("evt_s2", "customer.subscription.updated", end,
                                 SubscriptionObject("sub_1", "cus_1", "active", "starter_monthly", end),
                                 {{"items", "changed"}}));
    happened.push_back(EventJson("evt_k3", "subscription_schedule.updated", end, ScheduleObject("active", two),
                                 {{"current_phase", "changed"}}));
    std::mt19937 rng(7);
    for (int round = 0; round < 12; ++round) {
        for (const bool moved : {false, true}) {
            Harness h(GetParam());
            auto events = moved ? happened : scheduled;
            std::shuffle(events.begin(), events.end(), rng);
            events.push_back(events[rng() % events.size()]);  // a duplicate
            for (const auto& e : events) h.DeliverAndProcess(e);
            const auto v = h.ByStripe("cus_1");
            ASSERT_TRUE(v.primary) << "round " << round;
            if (!moved) {
                ASSERT_TRUE(v.primary->pending_change) << "round " << round;
                EXPECT_EQ(v.primary->pending_change->price_id, "price_starter_monthly");
                EXPECT_EQ(v.primary->pending_change->schedule_id, "sub_sched_1");
                EXPECT_EQ(v.primary->pending_change->effective_at, Timestamp(end));
                EXPECT_EQ(v.primary->plan_id, "pro");
            } else {
                EXPECT_FALSE(v.primary->pending_change) << "round " << round;
                EXPECT_EQ(v.primary->plan_id, "starter") << "round " << round;
            }
        }
    }
    // Released: the change is dropped.
    Harness h(GetParam());
    for (const auto& e : scheduled) h.DeliverAndProcess(e);
    ASSERT_TRUE(h.ByStripe("cus_1").primary->pending_change);
    h.DeliverAndProcess(EventJson("evt_k4", "subscription_schedule.released", kT0 + 200,
                                  ScheduleObject("released", two, false)));
    EXPECT_FALSE(h.ByStripe("cus_1").primary->pending_change);
    // Both moves are audited with the event that caused them.
    std::vector<std::pair<std::string, std::string>> moves;
    for (const auto& e : h.Audit(h.ByStripe("cus_1").customer.id)) {
        if (e.kind == "pending_change") moves.emplace_back(e.after, e.cause);
    }
    std::sort(moves.begin(), moves.end());
    EXPECT_EQ(moves, (std::vector<std::pair<std::string, std::string>>{{"", "event:evt_k4"},
                                                                        {"price_starter_monthly", "event:evt_k2"}}));
}

/// A Stripe whose subscription update lets a webhook in before it answers (|during_update|), as a real one can:
/// the answer then reaches Tally after the event, and Retrieve shows the state after both.
class RacingStripe final : public StripeApi {
public:
    std::function<void()> during_update;
    StripeSubscriptionData answer;
    bool retrieve_down = false;
    int retrieves = 0;
    Result<StripeSubscriptionData> UpdateSubscription(const StripeSubscriptionId&, const StripeSubscriptionUpdate&) override {
        if (during_update) during_update();
        return answer;
    }
    Result<StripePaymentData> CreatePaymentIntent(const StripePaymentIntentCreate&) override { return Unavailable("down"); }
    Result<StripePaymentData> RefundPayment(const std::string&, int64_t, const std::string&) override {
        return Unavailable("down");
    }
    Result<StripePaymentData> RetrievePaymentIntent(const std::string&) override { return Unavailable("down"); }
    Result<StripeSubscriptionData> RetrieveSubscription(const StripeSubscriptionId&) override {
        ++retrieves;
        if (retrieve_down) return Unavailable("down");
        return answer;
    }
    Result<StripeCustomerId> CreateCustomer(const std::string&, const std::string&, const std::string&,
                                            const std::string&) override {
        return Unavailable("not in this test");
    }
    Result<std::string> FindPriceId(const std::string&) override { return Unavailable("not in this test"); }
    Result<HostedSession> CreateCheckoutSession(const CheckoutSessionRequest&) override {
        return Unavailable("not in this test");
    }
    Result<HostedSession> CreatePortalSession(const StripeCustomerId&, const std::string&) override {
        return Unavailable("not in this test");
    }
    Result<std::vector<std::string>> SyncPlan(const StripePlanSpec&) override { return Unavailable("not in this test"); }
    Result<std::pair<std::string, bool>> EnsurePrice(const StripePriceSpec&) override {
        return Unavailable("not in this test");
    }
    Status UpdateCustomerProfile(const StripeCustomerId&, const StripeCustomerProfile&) override {
        return Unavailable("not in this test");
    }
    Result<Timestamp> SubscriptionNow(const StripeSubscriptionId&, Timestamp now) override { return now; }
    Result<std::string> DefaultPaymentMethod(const StripeCustomerId&) override { return Unavailable("not in this test"); }
    Result<StripeSubscriptionData> CreateSubscription(const StripeSubscriptionCreate&) override {
        return Unavailable("not in this test");
    }
    Result<StripeSubscriptionData> CancelSubscription(const StripeSubscriptionId&, bool, const std::string&) override {
        return Unavailable("not in this test");
    }
    Result<StripeInvoicePreview> PreviewSubscriptionChange(const StripeSubscriptionId&, const std::string&, int64_t,
                                                           const std::string&) override {
        return Unavailable("not in this test");
    }
    Result<StripeScheduleData> ScheduleSubscriptionChange(const StripeSubscriptionId&, const std::string&,
                                                          const SchedulePhase&, const SchedulePhase&,
                                                          const std::string&) override {
        return Unavailable("not in this test");
    }
    Result<StripeScheduleData> ReleaseSchedule(const std::string&, const std::string&) override {
        return Unavailable("not in this test");
    }
};

// Read your writes: a webhook applied between Tally's read and Stripe's answer keeps the answer out of the store
// (compare-and-set), so Tally reads the subscription back from Stripe and stores that; the next read sees the change.
TEST_P(WebhookFlowTest, AnAnswerRacedByAWebhookIsReadBackFromStripe) {
    for (const bool retrieve_down : {false, true}) {
        Harness h(GetParam());
        const auto sub = SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0);
        h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0, sub));
        RacingStripe stripe;
        auto canceling = sub;
        canceling["cancel_at_period_end"] = true;
        stripe.answer = DecodeStripeSubscription(canceling).value();
        stripe.retrieve_down = retrieve_down;
        stripe.during_update = [&] {
            auto other = sub;
            other["metadata"] = boost::json::object{{"note", "an earlier change still arriving"}};
            h.DeliverAndProcess(EventJson("evt_2", "customer.subscription.updated", kT0, other,
                                          {{"metadata", boost::json::object{}}}));
        };
        CheckoutService checkout(*h.store, h.billing, stripe, h.clock, CheckoutConfig{});
        SubscriptionService service(*h.store, h.billing, checkout, h.processor, stripe, h.clock, SubscriptionConfig{});
        auto answered = service.Cancel(StripeSubscriptionId("sub_1"), true, false, "");
        ASSERT_TRUE(answered.ok()) << answered.error().message;
        EXPECT_TRUE(answered->subscription.cancel_at_period_end) << "retrieve_down=" << retrieve_down;
        EXPECT_EQ(stripe.retrieves, 1);
        // Stored when Stripe could be read back; otherwise the answer is still returned and the webhooks decide.
        EXPECT_EQ(service.Get(StripeSubscriptionId("sub_1"))->subscription.cancel_at_period_end, !retrieve_down);
    }
}

// The final state must not depend on delivery order or duplicates.
std::vector<std::string> Lifecycle() {
    std::vector<std::string> events;
    boost::json::object customer{{"id", "cus_1"}, {"object", "customer"}, {"email", "ada@example.com"},
                                 {"name", "Ada"}, {"metadata", boost::json::object{{"external_id", "user_1"}}}};
    events.push_back(EventJson("evt_c1", "customer.created", kT0, customer));
    customer["email"] = "ada@new.example.com";
    events.push_back(EventJson("evt_c2", "customer.updated", kT0 + 50, customer, {{"email", "ada@example.com"}}));
    events.push_back(EventJson("evt_s1", "customer.subscription.created", kT0,
                               SubscriptionObject("sub_1", "cus_1", "incomplete", "starter_monthly", kT0)));
    // Same second as created: the chain (previous_attributes) says this came after.
    events.push_back(EventJson("evt_s2", "customer.subscription.updated", kT0,
                               SubscriptionObject("sub_1", "cus_1", "active", "starter_monthly", kT0),
                               {{"status", "incomplete"}}));
    events.push_back(EventJson("evt_s3", "customer.subscription.updated", kT0 + 10,
                               SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0),
                               {{"items", "changed"}}));
    events.push_back(EventJson("evt_i1", "invoice.payment_failed", kT0 + 30 * kDay,
                               InvoiceObject("in_2", "cus_1", "sub_1", "open")));
    events.push_back(EventJson("evt_s4", "customer.subscription.updated", kT0 + 30 * kDay,
                               SubscriptionObject("sub_1", "cus_1", "past_due", "pro_monthly", kT0 + 30 * kDay),
                               {{"status", "active"}}));
    events.push_back(EventJson("evt_i2", "invoice.paid", kT0 + 31 * kDay, InvoiceObject("in_2", "cus_1", "sub_1", "paid")));
    events.push_back(EventJson("evt_s5", "customer.subscription.updated", kT0 + 31 * kDay,
                               SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0 + 30 * kDay, true),
                               {{"status", "past_due"}}));
    events.push_back(EventJson("evt_x1", "plan.created", kT0, {{"id", "plan_1"}, {"object", "plan"}}));
    return events;
}

struct Snapshot {
    std::string role, plan, status, email, external_id;
    bool cancel_at_period_end;
    bool operator==(const Snapshot&) const = default;
};

Snapshot Final(Harness& h) {
    const auto v = h.ByStripe("cus_1");
    return {v.decision.role, v.decision.plan->id.str(), SubscriptionStatusName(v.primary->status),
            v.customer.email, v.customer.external_id, v.primary->cancel_at_period_end};
}

TEST_P(WebhookFlowTest, ShuffledDuplicatedDeliveryEqualsInOrderDelivery) {
    Harness in_order(GetParam());
    in_order.clock.Set(kT0 + 32 * kDay);
    for (const auto& e : Lifecycle()) in_order.DeliverAndProcess(e);
    const Snapshot want = Final(in_order);
    EXPECT_EQ(want, (Snapshot{"professional", "pro", "active", "ada@new.example.com", "user_1", true}));

    std::mt19937 rng(42);
    for (int round = 0; round < 25; ++round) {
        Harness h(GetParam());
        h.clock.Set(kT0 + 32 * kDay);
        auto events = Lifecycle();
        const size_t n = events.size();
        for (size_t i = 0; i < n; ++i) {
            if (rng() % 3 == 0) events.push_back(events[i]);  // duplicates
        }
        std::shuffle(events.begin(), events.end(), rng);
        for (const auto& e : events) {
            // Process after each delivery or in bursts, to vary interleavings.
            h.Deliver(e);
            if (rng() % 2 == 0) {
                ASSERT_TRUE(h.processor.ProcessDue().ok());
            }
        }
        ASSERT_TRUE(h.processor.ProcessDue().ok());
        EXPECT_EQ(Final(h), want) << "round " << round;
    }
}

TEST_P(WebhookFlowTest, ProcessRecordedAppliesPayloadsInHandLikeProcessBatch) {
    Harness in_order(GetParam());
    in_order.clock.Set(kT0 + 32 * kDay);
    for (const auto& e : Lifecycle()) in_order.DeliverAndProcess(e);

    // The simulation's path: record a batch, then apply it from the payloads already in memory.
    Harness h(GetParam());
    h.clock.Set(kT0 + 32 * kDay);
    std::vector<InboxEvent> batch;
    for (const auto& payload : Lifecycle()) {
        auto env = h.decoder.DecodeEnvelope(payload).value();
        InboxEvent e;
        e.id = env.id;
        e.type = env.type;
        e.created = env.created;
        e.payload = payload;
        e.received_at = h.clock.Now();
        batch.push_back(std::move(e));
    }
    ASSERT_TRUE(h.store->AppendInbox(batch).ok());
    auto results = h.processor.ProcessRecorded(batch);
    ASSERT_TRUE(results.ok());
    ASSERT_EQ(results->size(), batch.size());
    for (const auto& r : *results) EXPECT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(Final(h), Final(in_order));
    // Every event is marked processed, so the worker finds nothing left and a replay changes nothing.
    EXPECT_EQ(*h.processor.ProcessDue(), 0);
    auto again = h.processor.ProcessRecorded(batch);
    ASSERT_TRUE(again.ok());
    for (const auto& r : *again) EXPECT_EQ(*r, "already_processed");
    EXPECT_EQ(Final(h), Final(in_order));
}

TEST_P(WebhookFlowTest, MirrorImageUpdatesInOneSecondFollowArrivalOrder) {
    // Cancel at period end, then renew, in the same second: each event's previous_attributes match the other's
    // object. The ids are chosen so that the id tiebreak alone would pick the wrong one.
    namespace bj = boost::json;
    const auto created = EventJson("evt_m0", "customer.subscription.created", kT0,
                                   SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0));
    const auto cancel = EventJson("evt_mz", "customer.subscription.updated", kT0 + 60,
                                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0, true),
                                  bj::object{{"cancel_at_period_end", false}});
    const auto renew = EventJson("evt_ma", "customer.subscription.updated", kT0 + 60,
                                 SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0, false),
                                 bj::object{{"cancel_at_period_end", true}});
    {
        Harness h(GetParam());
        for (const auto& e : {created, cancel, renew}) h.DeliverAndProcess(e);
        EXPECT_FALSE(h.ByStripe("cus_1").primary->cancel_at_period_end) << "renew arrived last";
    }
    {
        Harness h(GetParam());
        for (const auto& e : {created, renew, cancel}) h.DeliverAndProcess(e);
        EXPECT_TRUE(h.ByStripe("cus_1").primary->cancel_at_period_end) << "cancel arrived last";
    }
    {
        // Recorded in order but applied in one batch: the inbox order still decides.
        Harness h(GetParam());
        for (const auto& e : {created, cancel, renew}) h.Deliver(e);
        ASSERT_TRUE(h.processor.ProcessDue().ok());
        EXPECT_FALSE(h.ByStripe("cus_1").primary->cancel_at_period_end);
    }
}

TEST_P(WebhookFlowTest, PastDueKeepsRoleThroughGraceThenDropsWithWarning) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0)));
    const int64_t fail_at = kT0 + 30 * kDay;
    h.clock.Set(fail_at);
    h.DeliverAndProcess(EventJson("evt_2", "invoice.payment_failed", fail_at, InvoiceObject("in_1", "cus_1", "sub_1", "open")));
    h.DeliverAndProcess(EventJson("evt_3", "customer.subscription.updated", fail_at,
                                  SubscriptionObject("sub_1", "cus_1", "past_due", "pro_monthly", fail_at),
                                  {{"status", "active"}}));
    auto view = h.ByStripe("cus_1");
    EXPECT_EQ(view.decision.role, "professional");
    ASSERT_TRUE(view.decision.grace_ends_at.has_value());
    EXPECT_EQ(view.decision.grace_ends_at->unix_seconds(), fail_at + 7 * kDay);
    auto audit = h.Audit(view.customer.id);
    auto warning = std::find_if(audit.begin(), audit.end(), [](const AuditEntry& e) { return e.kind == "downgrade_warning"; });
    ASSERT_NE(warning, audit.end());
    EXPECT_NE(warning->detail.find("drops to 'member'"), std::string::npos) << warning->detail;
    EXPECT_EQ(warning->cause, "event:evt_2");

    h.clock.Set(fail_at + 7 * kDay - 1);
    EXPECT_EQ(*h.billing.SweepRoles(), 0);
    EXPECT_EQ(h.ByStripe("cus_1").decision.role, "professional");
    h.clock.Set(fail_at + 7 * kDay);
    EXPECT_EQ(*h.billing.SweepRoles(), 1);
    view = h.ByStripe("cus_1");
    EXPECT_EQ(view.decision.role, "member");
    EXPECT_EQ(view.customer.role, "member");  // persisted, not only derived
    audit = h.Audit(view.customer.id);
    EXPECT_EQ(audit.front().kind, "plan_changed");
    EXPECT_EQ(audit[1].kind, "role_changed");
    EXPECT_EQ(audit[1].cause, "time:grace_period_expired");
    EXPECT_EQ(audit[1].before, "professional");
}

TEST(WebhookFlowRulesTest, PaymentAfterFailureEndsTheDunningRun) {
    const auto since = BillingService::PastDueSince;
    EXPECT_FALSE(since({}).has_value());
    EXPECT_EQ(since({{"e1", "in", "sub", Timestamp(10), false}, {"e2", "in", "sub", Timestamp(20), false}})->unix_seconds(), 10);
    EXPECT_FALSE(since({{"e1", "in", "sub", Timestamp(10), false}, {"e2", "in", "sub", Timestamp(15), true}}).has_value());
    EXPECT_EQ(since({{"e1", "in", "sub", Timestamp(10), false}, {"e2", "in", "sub", Timestamp(15), true},
                     {"e3", "in2", "sub", Timestamp(40), false}})->unix_seconds(), 40);
}

TEST_P(WebhookFlowTest, TerminalStatusesDropTheRole) {
    for (const char* status : {"canceled", "unpaid", "incomplete_expired"}) {
        Harness h(GetParam());
        h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                      SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0)));
        h.DeliverAndProcess(EventJson("evt_2", "customer.subscription.updated", kT0 + 5,
                                      SubscriptionObject("sub_1", "cus_1", status, "pro_monthly", kT0)));
        EXPECT_EQ(h.ByStripe("cus_1").decision.role, "member") << status;
    }
}

TEST_P(WebhookFlowTest, HighestRoleWinsAcrossSubscriptions) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_1", "canceled", "scale_monthly", kT0)));
    h.DeliverAndProcess(EventJson("evt_2", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_2", "cus_1", "active", "starter_monthly", kT0)));
    const auto view = h.ByStripe("cus_1");
    EXPECT_EQ(view.decision.role, "professional");
    EXPECT_EQ(view.decision.plan->id.str(), "starter");
    EXPECT_EQ(view.primary->id.str(), "sub_2");
}

TEST_P(WebhookFlowTest, OverrideBeatsAutomationUntilItExpires) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0)));
    const CustomerId id = h.ByStripe("cus_1").customer.id;
    auto bad = h.billing.SetRoleOverride(id, "emperor", "x", std::nullopt, "key_1");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().param, "role");
    EXPECT_EQ(h.billing.SetRoleOverride(id, "member", "x", Timestamp(kT0), "key_1").error().param, "expires_at");
    auto set = h.billing.SetRoleOverride(id, "member", "chargeback review", Timestamp(kT0 + 100), "key_1");
    ASSERT_TRUE(set.ok());
    EXPECT_EQ(set->decision.role, "member");
    // A webhook does not undo the override.
    h.DeliverAndProcess(EventJson("evt_2", "customer.subscription.updated", kT0 + 1,
                                  SubscriptionObject("sub_1", "cus_1", "active", "scale_monthly", kT0)));
    EXPECT_EQ(h.ByStripe("cus_1").decision.role, "member");
    h.clock.Set(kT0 + 100);
    EXPECT_EQ(*h.billing.SweepRoles(), 1);
    const auto view = h.ByStripe("cus_1");
    EXPECT_EQ(view.decision.role, "professional");
    EXPECT_FALSE(view.customer.role_override.has_value());
    const auto audit = h.Audit(id);
    EXPECT_EQ(audit.front().cause, "time:role_override_expired");
    ASSERT_TRUE(h.billing.ClearRoleOverride(id, "key_1").error().code == ErrorCode::kNotFound);
}

TEST_P(WebhookFlowTest, CheckoutLinksTheAppsCustomerAndFoldsInThePlaceholder) {
    Harness h(GetParam());
    auto created = h.billing.CreateCustomer("user_7", "u7@example.com", "U7");
    ASSERT_TRUE(created.ok());
    const CustomerId app_id = created->first.customer.id;
    // The subscription event races ahead of checkout.session.completed: a placeholder holds it.
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_7", "active", "pro_monthly", kT0)));
    h.DeliverAndProcess(EventJson("evt_2", "checkout.session.completed", kT0 + 1,
                                  {{"id", "cs_1"}, {"object", "checkout.session"}, {"customer", "cus_7"},
                                   {"subscription", "sub_1"}, {"client_reference_id", app_id.str()},
                                   {"mode", "subscription"}, {"payment_status", "paid"}}));
    const auto view = h.billing.GetCustomer(app_id).value();
    EXPECT_EQ(view.customer.stripe_customer_id->str(), "cus_7");
    EXPECT_EQ(view.decision.role, "professional");
    EXPECT_EQ(view.customer.external_id, "user_7");
    EXPECT_EQ(h.ByStripe("cus_7").customer.id, app_id);
}

TEST_P(WebhookFlowTest, CustomerCreatedLinksByMetadataExternalId) {
    Harness h(GetParam());
    const CustomerId app_id = h.billing.CreateCustomer("user_9", "", "").value().first.customer.id;
    h.DeliverAndProcess(EventJson("evt_1", "customer.created", kT0,
                                  {{"id", "cus_9"}, {"object", "customer"}, {"email", "nine@example.com"},
                                   {"metadata", boost::json::object{{"external_id", "user_9"}}}}));
    const auto view = h.billing.GetCustomer(app_id).value();
    EXPECT_EQ(view.customer.stripe_customer_id->str(), "cus_9");
    EXPECT_EQ(view.customer.email, "nine@example.com");
}

TEST_P(WebhookFlowTest, FailuresAreRetriedWithBackoffThenLeftFailed) {
    Harness h(GetParam());
    auto bad = SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0);
    bad["status"] = "sleeping";
    h.Deliver(EventJson("evt_bad", "customer.subscription.updated", kT0, bad));
    auto r = h.processor.ProcessOne(StripeEventId("evt_bad"));
    ASSERT_FALSE(r.ok());
    auto get = [&] {
        std::optional<InboxEvent> e;
        EXPECT_TRUE(h.store->Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(e, tx.inbox().Get(StripeEventId("evt_bad")));
            return {};
        }).ok());
        return *e;
    };
    InboxEvent e = get();
    EXPECT_EQ(e.status, InboxStatus::kFailed);
    EXPECT_EQ(e.attempts, 1);
    EXPECT_NE(e.last_error.find("data.object.status"), std::string::npos) << e.last_error;
    EXPECT_EQ(e.next_attempt_at->unix_seconds(), kT0 + 1);
    EXPECT_EQ(*h.processor.ProcessDue(), 0);  // not due yet
    for (int attempt = 2; attempt <= kWebhookAttemptCountMax; ++attempt) {
        h.clock.Set(get().next_attempt_at->unix_seconds());
        EXPECT_EQ(*h.processor.ProcessDue(), 1);
        EXPECT_EQ(get().attempts, attempt);
    }
    EXPECT_FALSE(get().next_attempt_at.has_value());  // given up: only an admin retry runs it again
    auto retried = h.processor.Retry(StripeEventId("evt_bad"));
    ASSERT_TRUE(retried.ok());
    EXPECT_EQ(*h.processor.ProcessDue(), 1);
    EXPECT_EQ(get().attempts, kWebhookAttemptCountMax + 1);
    EXPECT_EQ(h.processor.Retry(StripeEventId("evt_nope")).error().code, ErrorCode::kNotFound);
}

TEST_P(WebhookFlowTest, ProcessingTwiceChangesNothing) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0)));
    const auto before = h.Audit(h.ByStripe("cus_1").customer.id).size();
    EXPECT_EQ(*h.processor.ProcessOne(StripeEventId("evt_1")), "already_processed");
    EXPECT_EQ(h.Audit(h.ByStripe("cus_1").customer.id).size(), before);
}

TEST_P(WebhookFlowTest, RefundsOnlyGrow) {
    Harness h(GetParam());
    boost::json::object charge{{"id", "ch_1"}, {"object", "charge"}, {"customer", "cus_1"}, {"amount", 5000},
                               {"amount_refunded", 2000}, {"currency", "usd"}, {"status", "succeeded"}};
    h.DeliverAndProcess(EventJson("evt_r2", "charge.refunded", kT0 + 10, charge));
    charge["amount_refunded"] = 1000;
    h.DeliverAndProcess(EventJson("evt_r1", "charge.refunded", kT0, charge));
    ASSERT_TRUE(h.store->Read([&](StoreTx& tx) -> Status {
        EXPECT_EQ((*tx.billing().GetPayment("ch_1"))->amount_refunded_minor, 2000);
        return {};
    }).ok());
}

// Answers of Stripe API calls Tally made itself (subscriptions through Tally's API) go through the same ordering
// rules: applied at once, and the webhooks that follow are stale or bring the same state.
namespace {
StripeSubscriptionData Answer(boost::json::object o, int64_t created) {
    o["created"] = created;
    return DecodeStripeSubscription(o).value();
}
std::optional<SubscriptionRecord> Stored(Harness& h, const std::string& id) {
    std::optional<SubscriptionRecord> out;
    EXPECT_TRUE(h.store->Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, tx.billing().GetSubscription(StripeSubscriptionId(id)));
        return {};
    }).ok());
    return out;
}
Result<AppliedSubscription> ApplyAnswer(Harness& h, const StripeSubscriptionData& data,
                                        const std::optional<EventStamp>& read_before) {
    std::optional<AppliedSubscription> out;
    TALLY_TRY(h.store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, h.processor.ApplySubscriptionResponse(tx, data, read_before, "req_1", "api:test",
                                                                          h.clock.Now()));
        return {};
    }));
    return std::move(*out);
}
}  // namespace

TEST_P(WebhookFlowTest, ACreationAnswerAppliesAtOnceAndItsWebhooksChangeNothing) {
    Harness h(GetParam());
    auto object = SubscriptionObject("sub_api", "cus_api", "active", "pro_monthly", kT0);
    auto applied = ApplyAnswer(h, Answer(object, kT0), std::nullopt);
    ASSERT_TRUE(applied.ok()) << applied.error().message;
    EXPECT_TRUE(applied->stored);
    EXPECT_EQ(applied->subscription.plan_id, "pro");
    EXPECT_EQ(h.ByStripe("cus_api").decision.role, "professional");
    // The same second's creation event carries an earlier state (incomplete): stale against the answer.
    auto incomplete = SubscriptionObject("sub_api", "cus_api", "incomplete", "pro_monthly", kT0);
    incomplete["created"] = kT0;
    h.DeliverAndProcess(EventJson("evt_c", "customer.subscription.created", kT0, incomplete));
    EXPECT_EQ(Stored(h, "sub_api")->status, SubscriptionStatus::kActive);
    // The update that made it active supersedes the answer with the same state.
    object["created"] = kT0;
    h.DeliverAndProcess(EventJson("evt_u", "customer.subscription.updated", kT0, object,
                                  boost::json::object{{"status", "incomplete"}}));
    const auto after = Stored(h, "sub_api");
    EXPECT_EQ(after->status, SubscriptionStatus::kActive);
    EXPECT_EQ(after->stamp.event_id, "evt_u");
}

TEST_P(WebhookFlowTest, ACreationAnswerLosingTheRaceToItsWebhooksOnlyReplacesAnEarlierState) {
    Harness h(GetParam());
    auto incomplete = SubscriptionObject("sub_race", "cus_race", "incomplete", "pro_monthly", kT0);
    incomplete["created"] = kT0;
    h.DeliverAndProcess(EventJson("evt_c", "customer.subscription.created", kT0, incomplete));
    auto active = SubscriptionObject("sub_race", "cus_race", "active", "pro_monthly", kT0);
    auto applied = ApplyAnswer(h, Answer(active, kT0), std::nullopt);
    ASSERT_TRUE(applied.ok());
    EXPECT_TRUE(applied->stored);
    EXPECT_EQ(Stored(h, "sub_race")->status, SubscriptionStatus::kActive);
    // A later event got there first: the answer is returned, not stored.
    auto canceled = SubscriptionObject("sub_race", "cus_race", "canceled", "pro_monthly", kT0);
    h.DeliverAndProcess(EventJson("evt_d", "customer.subscription.deleted", kT0 + 5, canceled));
    auto late = ApplyAnswer(h, Answer(active, kT0), std::nullopt);
    ASSERT_TRUE(late.ok());
    EXPECT_FALSE(late->stored);
    EXPECT_EQ(late->subscription.status, SubscriptionStatus::kActive);
    EXPECT_EQ(Stored(h, "sub_race")->status, SubscriptionStatus::kCanceled);
}

TEST_P(WebhookFlowTest, AChangeAnswerIsStoredOnlyIfNoWebhookLandedSinceItWasRead) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_cas", "cus_cas", "active", "starter_monthly", kT0)));
    const EventStamp read = Stored(h, "sub_cas")->stamp;
    auto upgraded = SubscriptionObject("sub_cas", "cus_cas", "active", "pro_monthly", kT0);
    auto applied = ApplyAnswer(h, Answer(upgraded, kT0), read);
    ASSERT_TRUE(applied.ok());
    EXPECT_TRUE(applied->stored);
    EXPECT_EQ(Stored(h, "sub_cas")->plan_id, "pro");
    EXPECT_EQ(Stored(h, "sub_cas")->stamp.event_id, "api_req_1");
    // The change's own webhook, a second later, brings the same state and takes over the stamp.
    upgraded["created"] = kT0;
    h.DeliverAndProcess(EventJson("evt_2", "customer.subscription.updated", kT0 + 1, upgraded));
    EXPECT_EQ(Stored(h, "sub_cas")->stamp.event_id, "evt_2");
    EXPECT_EQ(Stored(h, "sub_cas")->plan_id, "pro");
    // An answer based on a stamp that has moved on since is not stored (the events decide).
    auto stale = ApplyAnswer(h, Answer(SubscriptionObject("sub_cas", "cus_cas", "active", "scale_monthly", kT0), kT0),
                             read);
    ASSERT_TRUE(stale.ok());
    EXPECT_FALSE(stale->stored);
    EXPECT_EQ(Stored(h, "sub_cas")->plan_id, "pro");
}

TEST_P(WebhookFlowTest, AnImmediateCancelAnswerInTheSameSecondBeatsOlderEvents) {
    Harness h(GetParam());
    auto trial = SubscriptionObject("sub_t", "cus_t", "trialing", "pro_monthly", kT0);
    ASSERT_TRUE(ApplyAnswer(h, Answer(trial, kT0), std::nullopt).ok());
    const EventStamp read = Stored(h, "sub_t")->stamp;
    auto canceled = SubscriptionObject("sub_t", "cus_t", "canceled", "pro_monthly", kT0);
    ASSERT_TRUE(ApplyAnswer(h, Answer(canceled, kT0), read)->stored);
    trial["created"] = kT0;
    h.DeliverAndProcess(EventJson("evt_tc", "customer.subscription.created", kT0, trial));
    EXPECT_EQ(Stored(h, "sub_t")->status, SubscriptionStatus::kCanceled);
    EXPECT_EQ(h.ByStripe("cus_t").decision.role, "member");
    canceled["created"] = kT0;
    h.DeliverAndProcess(EventJson("evt_td", "customer.subscription.deleted", kT0, canceled));
    EXPECT_EQ(Stored(h, "sub_t")->stamp.event_id, "evt_td");
}

}  // namespace
}  // namespace tally
