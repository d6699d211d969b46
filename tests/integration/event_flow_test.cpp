// Events to the app on a real SQLite file, with a manual clock: which event each billing change emits (trial,
// dunning, grace, payment, cancellation), and the dispatcher's long-running rules that the end-to-end tests cannot
// wait for: a delivery given up on after the 3-day window, an endpoint disabled (and audited) after failing for 3
// days, and events pruned after their retention.
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "adapters/config/catalog_json.hpp"
#include "adapters/http/json_views.hpp"
#include "adapters/openssl_secret_hasher.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "adapters/stripe/event_decoder.hpp"
#include "app/billing_service.hpp"
#include "app/event_dispatcher.hpp"
#include "app/event_outbox.hpp"
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
constexpr int64_t kHour = 3600;

/// Answers every delivery at once with |status| (from the dispatcher's thread, as a sender may), and counts them.
class FakeSender final : public WebhookSender {
public:
    explicit FakeSender(int status) : status_(status) {}
    void Send(OutgoingDelivery delivery, int64_t, std::function<void(DeliveryOutcome)> done) override {
        {
            std::lock_guard lock(mu_);
            sent_.push_back(delivery.event_id);
        }
        cv_.notify_all();
        done(DeliveryOutcome{delivery.delivery_id, status_.load(), status_ == 200 ? "" : "HTTP error", 3});
    }
    /// Waits (real time, at most 10 s) until more than |n| deliveries were sent; returns how many.
    size_t WaitForMoreThan(size_t n) {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::seconds(10), [&] { return sent_.size() > n; });
        return sent_.size();
    }
    size_t sent() {
        std::lock_guard lock(mu_);
        return sent_.size();
    }
    std::atomic<int> status_;

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::string> sent_;
};

struct Harness {
    explicit Harness(testing::StoreKind kind) : db(kind) {}
    testing::TestStore db;
    ManualClock clock{kT0};
    Catalog catalog = LoadCatalogFile(std::string(TALLY_SOURCE_DIR) + "/config/pricing.json").value();
    std::unique_ptr<Store> store = db.Open();
    http::JsonObjectRenderer renderer;
    EventOutbox outbox{renderer, clock};
    StripeEventDecoder decoder;
    BillingService billing{*store, catalog, clock, BillingConfig{7 * kDay}, &outbox};
    WebhookProcessor processor{*store, decoder, billing, clock};

    void DeliverAndProcess(const std::string& payload) {
        auto env = decoder.DecodeEnvelope(payload).value();
        InboxEvent e;
        e.id = env.id;
        e.type = env.type;
        e.created = env.created;
        e.payload = payload;
        e.received_at = clock.Now();
        ASSERT_TRUE(store->AppendInbox({e}).ok());
        ASSERT_TRUE(processor.ProcessDue().ok());
    }
    void AddEndpoint(const std::string& id) {
        WebhookEndpointRecord e;
        e.id = id;
        e.url = "https://app.example/tally";
        e.enabled_events = {"*"};
        e.secret = "whsec_test";
        e.created_ms = clock.NowMs();
        ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.events().InsertEndpoint(e); }).ok());
    }
    std::vector<AppEventRecord> Events() {  // oldest first
        std::vector<AppEventRecord> events;
        EXPECT_TRUE(store->Read([&](StoreTx& tx) -> Status {
            AppEventFilter filter;
            filter.limit = 1000;
            TALLY_ASSIGN_OR_RETURN(events, tx.events().ListEvents(filter));
            return {};
        }).ok());
        std::reverse(events.begin(), events.end());
        return events;
    }
    WebhookEndpointRecord Endpoint(const std::string& id) {
        std::optional<WebhookEndpointRecord> e;
        EXPECT_TRUE(store->Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(e, tx.events().GetEndpoint(id));
            return {};
        }).ok());
        return e.value();
    }
    /// Deliveries to |endpoint|, oldest first (the port lists none: read by id, and these tests make fewer than 100).
    std::vector<DeliveryRecord> Deliveries(const std::string& endpoint) {
        std::vector<DeliveryRecord> out;
        EXPECT_TRUE(store->Read([&](StoreTx& tx) -> Status {
            for (int64_t id = 1; id < 100; ++id) {
                TALLY_ASSIGN_OR_RETURN(auto d, tx.events().GetDelivery(id));
                if (d && d->endpoint_id == endpoint) out.push_back(*d);
            }
            return {};
        }).ok());
        return out;
    }
};

std::vector<std::string> Types(const std::vector<AppEventRecord>& events) {
    std::vector<std::string> types;
    for (const auto& e : events) types.push_back(e.type);
    return types;
}

/// True if |wanted| appears in |types| in this order (other types may come between).
bool InOrder(const std::vector<std::string>& types, const std::vector<std::string>& wanted) {
    auto it = types.begin();
    for (const auto& w : wanted) {
        it = std::find(it, types.end(), w);
        if (it == types.end()) return false;
        ++it;
    }
    return true;
}

class EventFlowTest : public ::testing::TestWithParam<testing::StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, EventFlowTest, testing::kBothStores, testing::StoreKindName);

TEST_P(EventFlowTest, ATrialDunningGraceAndCancellationEmitEachTypeInOrder) {
    Harness h(GetParam());
    h.AddEndpoint("we_1");
    auto trialing = SubscriptionObject("sub_1", "cus_1", "trialing", "pro_monthly", kT0);
    trialing["trial_end"] = kT0 + 14 * kDay;
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0, trialing));
    h.clock.Set(kT0 + 11 * kDay);
    h.DeliverAndProcess(EventJson("evt_2", "customer.subscription.trial_will_end", kT0 + 11 * kDay, trialing));
    const int64_t fail_at = kT0 + 14 * kDay;
    h.clock.Set(fail_at);
    h.DeliverAndProcess(EventJson("evt_3", "invoice.payment_failed", fail_at, InvoiceObject("in_1", "cus_1", "sub_1", "open")));
    h.DeliverAndProcess(EventJson("evt_4", "customer.subscription.updated", fail_at,
                                  SubscriptionObject("sub_1", "cus_1", "past_due", "pro_monthly", fail_at),
                                  {{"status", "trialing"}}));
    h.clock.Set(fail_at + 2 * kDay);
    h.DeliverAndProcess(EventJson("evt_5", "invoice.paid", fail_at + 2 * kDay, InvoiceObject("in_1", "cus_1", "sub_1", "paid")));
    h.DeliverAndProcess(EventJson("evt_6", "customer.subscription.updated", fail_at + 2 * kDay,
                                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", fail_at),
                                  {{"status", "past_due"}}));
    h.clock.Set(fail_at + 40 * kDay);
    h.DeliverAndProcess(EventJson("evt_7", "customer.subscription.deleted", fail_at + 40 * kDay,
                                  SubscriptionObject("sub_1", "cus_1", "canceled", "pro_monthly", fail_at + 30 * kDay),
                                  {{"status", "active"}}));
    const auto events = h.Events();
    const auto types = Types(events);
    std::string all;
    for (const auto& t : types) all += t + " ";
    // The grace starts when the subscription goes past_due and ends when it is active again.
    EXPECT_TRUE(InOrder(types, {"customer.created", "subscription.created", "customer.role_changed",
                                "customer.entitlements_updated", "subscription.trial_will_end", "invoice.payment_failed",
                                "subscription.updated", "customer.grace_period_started", "invoice.paid",
                                "subscription.updated", "customer.grace_period_ended", "subscription.canceled",
                                "customer.role_changed", "customer.entitlements_updated"}))
        << all;
    // Per object, sequences count 1, 2, 3, ... in commit order; every event got a delivery to the endpoint.
    std::map<std::string, int64_t> last;
    for (const auto& e : events) {
        EXPECT_EQ(e.object_sequence, last[e.object_id] + 1) << e.type << " " << e.object_id;
        last[e.object_id] = e.object_sequence;
    }
    EXPECT_EQ(h.Deliveries("we_1").size(), events.size());
    // The grace events carry the grace end and its previous value.
    const auto started = std::find_if(events.begin(), events.end(),
                                      [](const auto& e) { return e.type == "customer.grace_period_started"; });
    ASSERT_NE(started, events.end());
    const auto envelope = boost::json::parse(started->payload).as_object();
    EXPECT_EQ(envelope.at("data").at("object").at("grace_period_ends_at").as_int64(), fail_at + 7 * kDay);
    EXPECT_TRUE(envelope.at("data").at("previous_attributes").at("grace_period_ends_at").is_null());
}

TEST_P(EventFlowTest, GraceRunningOutEmitsGraceEndedAndTheRoleChange) {
    Harness h(GetParam());
    h.DeliverAndProcess(EventJson("evt_1", "customer.subscription.created", kT0,
                                  SubscriptionObject("sub_1", "cus_1", "active", "pro_monthly", kT0)));
    const int64_t fail_at = kT0 + 30 * kDay;
    h.clock.Set(fail_at);
    h.DeliverAndProcess(EventJson("evt_2", "invoice.payment_failed", fail_at, InvoiceObject("in_1", "cus_1", "sub_1", "open")));
    h.DeliverAndProcess(EventJson("evt_3", "customer.subscription.updated", fail_at,
                                  SubscriptionObject("sub_1", "cus_1", "past_due", "pro_monthly", fail_at),
                                  {{"status", "active"}}));
    const size_t before = h.Events().size();
    h.clock.Set(fail_at + 7 * kDay);
    EXPECT_EQ(*h.billing.SweepRoles(), 1);
    const auto events = h.Events();
    std::vector<std::string> types;
    for (size_t i = before; i < events.size(); ++i) types.push_back(events[i].type);
    EXPECT_TRUE(InOrder(types, {"customer.role_changed"})) << types.size();
    EXPECT_NE(std::find(types.begin(), types.end(), "customer.grace_period_ended"), types.end());
    const auto changed = std::find_if(events.begin() + static_cast<std::ptrdiff_t>(before), events.end(),
                                      [](const auto& e) { return e.type == "customer.role_changed"; });
    ASSERT_NE(changed, events.end());
    const auto envelope = boost::json::parse(changed->payload).as_object();
    EXPECT_EQ(envelope.at("data").at("object").at("role").as_string(), "member");
    EXPECT_EQ(envelope.at("data").at("previous_attributes").at("role").as_string(), "professional");
}

/// Runs |dispatcher| (Notify, 5 ms pause) until |done| holds, at most ~10 s of real time; false if it never did.
template <typename Pred>
bool Eventually(EventDispatcher& dispatcher, Pred done) {
    for (int i = 0; i < 2000; ++i) {
        if (done()) return true;
        dispatcher.Notify();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return done();
}

TEST_P(EventFlowTest, AnEndpointFailingForThreeDaysHasItsDeliveryGivenUpAndIsDisabledWithAnAuditEntry) {
    Harness h(GetParam());
    h.AddEndpoint("we_down");
    FakeSender sender(503);
    OpenSslSecretHasher hasher;
    EventDispatcher dispatcher(*h.store, sender, hasher, h.clock, DispatcherConfig{});
    h.outbox.SetListener([&dispatcher] { dispatcher.Notify(); });
    dispatcher.Start();
    ASSERT_TRUE(h.billing.CreateCustomer("user_1", "", "").ok());
    const auto first = [&] { return h.Deliveries("we_down").at(0); };
    ASSERT_TRUE(Eventually(dispatcher, [&] { return first().attempts == 1; }));
    EXPECT_EQ(h.Endpoint("we_down").failing_since_ms, kT0 * 1000);
    // Each retry is due at most 1 h (+20% jitter) after the one before: step the clock 2 h at a time, each step
    // once the last attempt is recorded.
    int attempts = 1;
    while (first().state == DeliveryState::kPending) {
        ASSERT_LT(h.clock.Now().unix_seconds(), kT0 + 4 * kDay) << "still pending after the window";
        h.clock.Advance(2 * kHour);
        ASSERT_TRUE(Eventually(dispatcher, [&] {
            const auto d = first();
            return d.attempts > attempts || d.state != DeliveryState::kPending;
        }));
        attempts = first().attempts;
    }
    const auto given_up = first();
    EXPECT_EQ(given_up.state, DeliveryState::kFailed);
    EXPECT_GE(given_up.attempts, 30) << "retried every 2 h of the clock over 3 days";
    EXPECT_LE(given_up.attempts, 3 * 12 + 1);
    // Failing for the whole window, the endpoint is disabled at its next failure at the latest.
    if (!h.Endpoint("we_down").disabled) {
        h.clock.Advance(kHour);
        ASSERT_TRUE(h.billing.CreateCustomer("user_2", "", "").ok());
        ASSERT_TRUE(Eventually(dispatcher, [&] { return h.Endpoint("we_down").disabled; }));
    }
    const auto endpoint = h.Endpoint("we_down");
    EXPECT_TRUE(endpoint.disabled);
    EXPECT_NE(endpoint.disabled_reason.find("every delivery failed for 72 hours"), std::string::npos)
        << endpoint.disabled_reason;
    const auto audit = h.billing.ListAudit(CustomerId(""), 50).value();
    const auto entry = std::find_if(audit.begin(), audit.end(),
                                    [](const AuditEntry& e) { return e.kind == "webhook_endpoint_disabled"; });
    ASSERT_NE(entry, audit.end());
    EXPECT_NE(entry->detail.find("we_down"), std::string::npos);
    EXPECT_EQ(entry->cause, "time:delivery_failures");
    // A disabled endpoint gets nothing more; its new deliveries stay queued for when it is turned back on.
    const size_t at_disable = sender.sent();
    ASSERT_TRUE(h.billing.CreateCustomer("user_3", "", "").ok());
    h.clock.Advance(2 * kHour);
    for (int i = 0; i < 20; ++i) {
        dispatcher.Notify();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(sender.sent(), at_disable);
    EXPECT_EQ(h.Deliveries("we_down").back().state, DeliveryState::kPending);
    dispatcher.Stop();
}

TEST_P(EventFlowTest, EventsArePrunedWithTheirDeliveriesAfterTheRetention) {
    Harness h(GetParam());
    h.AddEndpoint("we_up");
    FakeSender sender(200);
    OpenSslSecretHasher hasher;
    DispatcherConfig config;
    config.event_retention_ms = int64_t{30} * kDay * 1000;
    EventDispatcher dispatcher(*h.store, sender, hasher, h.clock, config);
    h.outbox.SetListener([&dispatcher] { dispatcher.Notify(); });
    dispatcher.Start();
    ASSERT_TRUE(h.billing.CreateCustomer("user_old", "", "").ok());
    const auto old_events = h.Events();
    ASSERT_FALSE(old_events.empty());
    ASSERT_TRUE(Eventually(dispatcher, [&] { return h.Deliveries("we_up").at(0).state == DeliveryState::kDelivered; }));
    h.clock.Advance(29 * kDay);
    ASSERT_TRUE(h.billing.CreateCustomer("user_new", "", "").ok());
    const auto is_old = [&](const std::string& event_id) {
        return std::any_of(old_events.begin(), old_events.end(), [&](const auto& e) { return e.id == event_id; });
    };
    // 31 days after the first events and 2 after the second: the first go, with their deliveries, at the next prune.
    h.clock.Advance(2 * kDay);
    ASSERT_TRUE(Eventually(dispatcher, [&] { return !is_old(h.Events().at(0).id); }));
    dispatcher.Stop();
    const auto left = h.Events();
        EXPECT_TRUE(std::none_of(left.begin(), left.end(), [&](const auto& e) { return is_old(e.id); }));
    const auto deliveries = h.Deliveries("we_up");
    EXPECT_FALSE(deliveries.empty()) << "the newer events' deliveries stay";
    for (const auto& d : deliveries) EXPECT_FALSE(is_old(d.event_id)) << "delivery " << d.id << " of a pruned event";
}

}  // namespace
}  // namespace tally
