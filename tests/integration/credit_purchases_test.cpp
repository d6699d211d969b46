// Credit bundle purchases on both stores (issue 13, item 5), with a Stripe that the test scripts: a purchase left
// pending when Stripe could not answer (a crash between the charge and its record looks the same) is granted by its
// webhook, once however often it arrives; a refund seen before its payment's own event completes the purchase and
// then takes back; an older refund snapshot changes nothing; a payment of another amount is audited and ignored;
// and concurrent requests with one id (on PostgreSQL over three nodes) grant once.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "adapters/config/catalog_json.hpp"
#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/credit_purchases.hpp"
#include "app/credit_service.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::ManualClock;
using testing::StoreKind;

constexpr int64_t kT0 = 1'767'225'600;  // 2026-01-01T00:00:00Z

/// Stripe as the test says: a customer with a saved card, and PaymentIntents that succeed (one per idempotency key,
/// as Stripe's idempotency keeps them), fail, or cannot be reached.
class ScriptedStripe final : public testing::UnreachableStripeApi {
public:
    enum class Answer { kSucceeds, kDeclines, kUnreachable, kProcessing };
    std::atomic<Answer> answer{Answer::kSucceeds};
    std::atomic<int> intents_created{0};

    Result<StripeCustomerId> CreateCustomer(const std::string&, const std::string&, const std::string&,
                                            const std::string&) override {
        return StripeCustomerId("cus_scripted");
    }
    Result<std::string> DefaultPaymentMethod(const StripeCustomerId&) override { return std::string("pm_scripted"); }
    Result<StripePaymentData> CreatePaymentIntent(const StripePaymentIntentCreate& r) override {
        if (answer == Answer::kUnreachable) return Down();
        if (answer == Answer::kDeclines) {
            return Error{ErrorCode::kPaymentRequired, "Your card was declined.", "", ErrorReason::kCardDeclined};
        }
        std::lock_guard lock(mu_);
        auto [it, created] = by_key_.try_emplace(r.idempotency_key);
        if (created) {
            ++intents_created;
            it->second.id = "pi_" + std::to_string(by_key_.size());
            it->second.object = "payment_intent";
            it->second.customer = r.customer;
            it->second.amount_minor = r.amount_minor;
            it->second.currency = r.currency;
            it->second.status = answer == Answer::kProcessing ? "processing" : "succeeded";
            it->second.payment_intent = it->second.id;
            it->second.purchase = r.metadata.at("tally_purchase");
        }
        return it->second;
    }

    /// A processing PaymentIntent ends (the bank answered).
    void Finish(const std::string& status) {
        std::lock_guard lock(mu_);
        for (auto& [_, pi] : by_key_) pi.status = status;
    }
    Result<StripePaymentData> RetrievePaymentIntent(const std::string& id) override {
        std::lock_guard lock(mu_);
        for (const auto& [_, pi] : by_key_) {
            if (pi.id == id) return pi;
        }
        return NotFound("no such payment_intent: " + id);
    }

private:
    std::mutex mu_;
    std::map<std::string, StripePaymentData> by_key_;
};

class CreditPurchasesTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, CreditPurchasesTest, testing::kBothStores, testing::StoreKindName);

struct Node {
    Node(Store& store, const Catalog& catalog, ManualClock& clock, ScriptedStripe& stripe,
         const std::vector<CreditBundle>& bundles)
        : billing(store, catalog, clock, BillingConfig{}),
          credits(store, clock, {}),
          checkout(store, billing, stripe, clock, CheckoutConfig{"https://app.example/ok", "https://app.example/no", ""}),
          purchases(store, credits, checkout, stripe, clock, bundles, nullptr) {
        credits.SetSpendListener([this](StoreTx& tx, const CustomerId& customer, const CreditBalance& after) {
            return purchases.OnSpent(tx, customer, after);
        });
    }
    BillingService billing;
    CreditService credits;
    CheckoutService checkout;
    CreditPurchaseService purchases;
};

struct Harness {
    explicit Harness(StoreKind kind) : db(kind) {
        stores.push_back(db.Open());
        if (kind == StoreKind::kPostgres) {
            stores.push_back(db.Open());
            stores.push_back(db.Open());
        }
        for (auto& s : stores) nodes.push_back(std::make_unique<Node>(*s, catalog, clock, stripe, bundles));
        EXPECT_TRUE(stores[0]->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto created, nodes[0]->billing.CreateCustomer(tx, "ada", CustomerInput{}));
            customer = created.first.customer.id;
            return {};
        }).ok());
        EXPECT_TRUE(nodes[0]->checkout.EnsureStripeCustomer(customer).ok());  // "cus_scripted", with a saved card
    }
    Result<CreditPurchaseOutcome> Buy(const std::string& id, size_t node = 0) {
        return nodes[node]->purchases.Purchase(CreditPurchaseInput{customer, "credits_1000", id, "", "", "app"});
    }
    /// A Stripe event about a payment, applied as the webhook worker applies it (in its own transaction).
    Status Deliver(const std::string& type, StripePaymentData payment) {
        DecodedEvent event;
        event.id = StripeEventId("evt_" + std::to_string(++events));
        event.type = type;
        event.object = std::move(payment);
        return stores[0]->Write([&](StoreTx& tx) { return nodes[0]->purchases.OnStripeEvent(tx, event); });
    }
    static StripePaymentData Payment(const std::string& object, const std::string& purchase, int64_t amount,
                                     int64_t refunded = 0) {
        StripePaymentData p;
        p.id = object == "charge" ? "ch_1" : "pi_1";
        p.object = object;
        p.customer = StripeCustomerId("cus_scripted");
        p.amount_minor = amount;
        p.amount_refunded_minor = refunded;
        p.currency = "usd";
        p.status = "succeeded";
        p.payment_intent = "pi_1";
        p.purchase = purchase;
        return p;
    }
    Result<CreditDeduction> Spend(const std::string& id, int64_t amount, size_t node = 0) {
        std::optional<CreditDeduction> out;
        TALLY_TRY(stores[node]->WriteSerialized("credits:" + customer.str(), [&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, nodes[node]->credits.Deduct(tx, {customer, id, amount, "", "", "app"}));
            return {};
        }));
        return *out;
    }
    void Gift(int64_t amount) {
        ASSERT_TRUE(stores[0]->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto g, nodes[0]->credits.Grant(tx, {customer, "gift-" + std::to_string(++gifts),
                                                                      GrantType::kPromotional, amount, std::nullopt,
                                                                      std::nullopt, "", "admin"}));
            (void)g;
            return {};
        }).ok());
    }
    AutoPurchaseState Auto() { return nodes[0]->purchases.GetAutoPurchase(customer).value(); }
    std::vector<CreditPurchaseRecord> AutoPurchases() {
        std::vector<CreditPurchaseRecord> out;
        const auto all = nodes[0]->purchases.List(customer, std::nullopt, 100);
        for (const auto& p : all.value()) {
            if (p.source == "auto") out.push_back(p);
        }
        return out;
    }
    CreditPurchaseRecord Stored(const std::string& id) { return nodes[0]->purchases.Get(id).value().purchase; }
    int64_t BundleGrants() {
        int64_t n = 0;
        const auto grants = nodes[0]->credits.Grants(customer);
        for (const auto& g : grants.value()) n += g.type == GrantType::kBundle ? 1 : 0;
        return n;
    }
    void ExpectExactLedger() {
        auto problems = nodes[0]->credits.Verify();
        ASSERT_TRUE(problems.ok()) << problems.error().message;
        for (const auto& p : *problems) ADD_FAILURE() << p;
    }

    testing::TestStore db;
    ManualClock clock{kT0};
    ScriptedStripe stripe;
    Catalog catalog = ParseCatalogJson(R"({"roles":["member"],"default_plan":"free",
        "plans":[{"id":"free","name":"Free","role":"member"}]})").value();
    std::vector<CreditBundle> bundles = ParseCreditBundlesJson(R"({"credit_bundles":[
        {"id":"credits_1000","name":"1,000 credits","credits":1000,"unit_amount":1000,"currency":"usd"}]})").value();
    std::vector<std::unique_ptr<Store>> stores;
    std::vector<std::unique_ptr<Node>> nodes;
    CustomerId customer;
    int events = 0;
    int gifts = 0;
};

TEST_P(CreditPurchasesTest, APurchaseLeftPendingIsGrantedByItsWebhookOnce) {
    Harness h(GetParam());
    h.stripe.answer = ScriptedStripe::Answer::kUnreachable;
    auto unreachable = h.Buy("p-1");
    ASSERT_FALSE(unreachable.ok());
    EXPECT_EQ(unreachable.error().code, ErrorCode::kUnavailable);
    EXPECT_EQ(h.Stored("p-1").status, "pending");
    EXPECT_EQ(h.BundleGrants(), 0);

    // Stripe did charge (its answer was lost): payment_intent.succeeded says so, twice.
    ASSERT_TRUE(h.Deliver("payment_intent.succeeded", Harness::Payment("payment_intent", "p-1", 1000)).ok());
    ASSERT_TRUE(h.Deliver("payment_intent.succeeded", Harness::Payment("payment_intent", "p-1", 1000)).ok());
    const CreditPurchaseRecord paid = h.Stored("p-1");
    EXPECT_EQ(paid.status, "succeeded");
    EXPECT_EQ(paid.payment_intent, "pi_1");
    EXPECT_EQ(h.BundleGrants(), 1);
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->bundle, 1000);

    // The client retries: the purchase answers as paid, with the same grant, and Stripe is not asked again.
    h.stripe.answer = ScriptedStripe::Answer::kSucceeds;
    auto retried = h.Buy("p-1");
    ASSERT_TRUE(retried.ok()) << retried.error().message;
    EXPECT_TRUE(retried->replayed);
    ASSERT_TRUE(retried->grant.has_value());
    EXPECT_EQ(retried->grant->id, paid.grant_id);
    EXPECT_EQ(h.stripe.intents_created.load(), 0);
    EXPECT_EQ(h.BundleGrants(), 1);
    h.ExpectExactLedger();
}

TEST_P(CreditPurchasesTest, ARefundSeenBeforeItsPaymentCompletesThePurchaseThenTakesBack) {
    Harness h(GetParam());
    h.stripe.answer = ScriptedStripe::Answer::kUnreachable;
    ASSERT_FALSE(h.Buy("p-2").ok());
    // Half refunded, delivered before payment_intent.succeeded: the charge was paid, so the bundle was bought.
    ASSERT_TRUE(h.Deliver("charge.refunded", Harness::Payment("charge", "p-2", 1000, 500)).ok());
    CreditPurchaseRecord p = h.Stored("p-2");
    EXPECT_EQ(p.status, "succeeded");
    EXPECT_EQ(p.amount_refunded, 500);
    EXPECT_EQ(p.credits_refunded, 500);
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->bundle, 500);
    // The late payment event and an older snapshot of the refund change nothing.
    ASSERT_TRUE(h.Deliver("payment_intent.succeeded", Harness::Payment("payment_intent", "p-2", 1000)).ok());
    ASSERT_TRUE(h.Deliver("charge.refunded", Harness::Payment("charge", "p-2", 1000, 200)).ok());
    EXPECT_EQ(h.Stored("p-2").credits_refunded, 500);
    EXPECT_EQ(h.BundleGrants(), 1);
    // Spent 400 of the 500 left; the rest refunded: 500 more due, 100 left to take, 400 recorded as spent. A charge
    // found by its PaymentIntent alone (no metadata) is the same purchase's.
    CreditDeductInput spend{h.customer, "d-1", 400, "", "", "app"};
    ASSERT_TRUE(h.stores[0]->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto spent, h.nodes[0]->credits.Deduct(tx, spend));
        (void)spent;
        return {};
    }).ok());
    ASSERT_TRUE(h.Deliver("charge.refunded", Harness::Payment("charge", "", 1000, 1000)).ok());
    p = h.Stored("p-2");
    EXPECT_EQ(p.amount_refunded, 1000);
    EXPECT_EQ(p.credits_refunded, 600);
    EXPECT_EQ(p.credits_refund_spent, 400);
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->total(), 0);
    h.ExpectExactLedger();
}

TEST_P(CreditPurchasesTest, APaymentOfAnotherAmountIsAuditedAndGrantsNothing) {
    Harness h(GetParam());
    h.stripe.answer = ScriptedStripe::Answer::kUnreachable;
    ASSERT_FALSE(h.Buy("p-3").ok());
    ASSERT_TRUE(h.Deliver("payment_intent.succeeded", Harness::Payment("payment_intent", "p-3", 999)).ok());
    EXPECT_EQ(h.Stored("p-3").status, "pending");
    EXPECT_EQ(h.BundleGrants(), 0);
    bool audited = false;
    ASSERT_TRUE(h.stores[0]->Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto entries, tx.audit().List(h.customer, 50));
        for (const auto& e : entries) audited = audited || e.kind == "credit_purchase_mismatch";
        return {};
    }).ok());
    EXPECT_TRUE(audited);
    // A declined card fails it for good; the payment's failure event afterwards changes nothing more.
    h.stripe.answer = ScriptedStripe::Answer::kDeclines;
    auto declined = h.Buy("p-3");
    ASSERT_FALSE(declined.ok());
    EXPECT_EQ(declined.error().reason, ErrorReason::kCardDeclined);
    EXPECT_EQ(h.Stored("p-3").status, "failed");
    h.ExpectExactLedger();
}

TEST_P(CreditPurchasesTest, ConcurrentRequestsWithOneIdGrantOnce) {
    Harness h(GetParam());
    std::atomic<int> ok{0}, failed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 12; ++i) {
        threads.emplace_back([&, i] {
            auto r = h.Buy("p-race", static_cast<size_t>(i) % h.nodes.size());
            (r.ok() ? ok : failed)++;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 12);
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(h.stripe.intents_created.load(), 1);
    EXPECT_EQ(h.BundleGrants(), 1);
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->bundle, 1000);
    h.ExpectExactLedger();
}

// A charge left processing is looked at again after the lease, never created again (Stripe forgets idempotency
// keys after 24 hours): paid, it completes; one PaymentIntent in all.
TEST_P(CreditPurchasesTest, AnAutoPurchaseLeftProcessingIsLookedAtNotChargedAgain) {
    Harness h(GetParam());
    h.Gift(10);
    ASSERT_TRUE(h.nodes[0]->purchases.SetAutoPurchase(h.customer, {true, std::nullopt, 100, "credits_1000",
                                                                   std::nullopt, "admin"}).ok());
    h.stripe.answer = ScriptedStripe::Answer::kProcessing;
    ASSERT_TRUE(h.Spend("d-1", 1).ok());
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 1);
    const std::string id = h.Auto().settings.pending_purchase;
    EXPECT_EQ(h.Stored(id).status, "pending");
    EXPECT_FALSE(h.Stored(id).payment_intent.empty());
    h.stripe.Finish("succeeded");
    h.clock.Advance(kAutoPurchaseLeaseSeconds);
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 1);
    EXPECT_EQ(h.Stored(id).status, "succeeded");
    EXPECT_EQ(h.stripe.intents_created.load(), 1);
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->total(), 1009);
    h.ExpectExactLedger();
}

// Credits a refund found held (so counted as spent) are taken back when the hold is released: the customer never
// keeps credits whose money was refunded.
TEST_P(CreditPurchasesTest, CreditsARefundFoundHeldAreTakenBackWhenTheHoldIsReleased) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Buy("p-held").ok());
    const std::string pi = h.Stored("p-held").payment_intent;
    ASSERT_TRUE(h.stores[0]->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto r, h.nodes[0]->credits.Reserve(tx, {h.customer, "hold-1", 1000, 600, "", "app"}));
        (void)r;
        return {};
    }).ok());
    StripePaymentData refunded = Harness::Payment("charge", "p-held", 1000, 1000);
    refunded.payment_intent = pi;
    ASSERT_TRUE(h.Deliver("charge.refunded", refunded).ok());
    EXPECT_EQ(h.Stored("p-held").credits_refunded, 0);
    EXPECT_EQ(h.Stored("p-held").credits_refund_spent, 1000);
    ASSERT_TRUE(h.stores[0]->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto r, h.nodes[0]->credits.Release(tx, "hold-1", "app"));
        (void)r;
        return {};
    }).ok());
    const CreditPurchaseRecord p = h.Stored("p-held");
    EXPECT_EQ(p.credits_refunded, 1000);
    EXPECT_EQ(p.credits_refund_spent, 0);
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->total(), 0);
    h.ExpectExactLedger();
}

// Issue 13, item 6: however many deductions race past the threshold (on PostgreSQL over three nodes), exactly one
// purchase starts, and however many nodes run the due attempts, Stripe is charged once.
TEST_P(CreditPurchasesTest, AutoPurchaseStartsOncePerCrossingAndIsChargedOnce) {
    Harness h(GetParam());
    h.Gift(1000);
    auto set = h.nodes[0]->purchases.SetAutoPurchase(h.customer, {true, std::nullopt, 500, "credits_1000", 2, "admin"});
    ASSERT_TRUE(set.ok()) << set.error().message;
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 60; ++i) {
        threads.emplace_back([&, i] {
            if (h.Spend("d-" + std::to_string(i), 10, static_cast<size_t>(i) % h.nodes.size()).ok()) ++ok;
        });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(ok.load(), 60);
    ASSERT_EQ(h.AutoPurchases().size(), 1u);
    EXPECT_EQ(h.AutoPurchases()[0].status, "pending");
    EXPECT_EQ(h.Auto().settings.pending_purchase, h.AutoPurchases()[0].id);
    std::atomic<int> attempts{0};
    threads.clear();
    for (size_t n = 0; n < h.nodes.size() * 2; ++n) {
        threads.emplace_back([&, n] {
            auto r = h.nodes[n % h.nodes.size()]->purchases.RunDueAutoPurchases();
            if (r.ok()) attempts += *r;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(attempts.load(), 1);
    EXPECT_EQ(h.stripe.intents_created.load(), 1);
    EXPECT_EQ(h.AutoPurchases()[0].status, "succeeded");
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->total(), 400 + 1000);
    EXPECT_EQ(h.Auto().settings.pending_purchase, "");
    EXPECT_EQ(h.Auto().purchases_this_month, 1);
    // Back above the threshold: spending more starts nothing until the balance falls under it again.
    ASSERT_TRUE(h.Spend("d-above", 100).ok());
    EXPECT_EQ(h.AutoPurchases().size(), 1u);
    ASSERT_TRUE(h.Spend("d-below", 850).ok());  // 450 left
    EXPECT_EQ(h.AutoPurchases().size(), 2u);
    h.ExpectExactLedger();
}

TEST_P(CreditPurchasesTest, AFailedAutoPurchaseBacksOffAndTheThirdFailureDisablesIt) {
    Harness h(GetParam());
    h.Gift(100);
    h.stripe.answer = ScriptedStripe::Answer::kDeclines;
    ASSERT_TRUE(h.nodes[0]->purchases.SetAutoPurchase(h.customer, {std::nullopt, std::nullopt, 50, "credits_1000",
                                                                   std::nullopt, "admin"}).ok());
    ASSERT_TRUE(h.Spend("d-1", 60).ok());
    const std::string id = h.Auto().settings.pending_purchase;
    ASSERT_FALSE(id.empty());
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 1);
    EXPECT_EQ(h.Auto().settings.failures, 1);
    EXPECT_EQ(h.Auto().settings.next_attempt_at->unix_seconds(), kT0 + 300);
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 0);  // not due yet
    ASSERT_TRUE(h.Spend("d-2", 1).ok());  // still in flight: no second purchase
    EXPECT_EQ(h.AutoPurchases().size(), 1u);
    h.clock.Advance(300);
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 1);
    EXPECT_EQ(h.Auto().settings.failures, 2);
    EXPECT_EQ(h.Auto().settings.next_attempt_at->unix_seconds(), kT0 + 300 + 1800);
    h.clock.Advance(1800);
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 1);
    const AutoPurchaseState off = h.Auto();
    EXPECT_FALSE(off.settings.enabled);
    EXPECT_EQ(off.settings.pending_purchase, "");
    EXPECT_NE(off.settings.disabled_reason.find("3 failed payments"), std::string::npos) << off.settings.disabled_reason;
    EXPECT_EQ(h.Stored(id).status, "failed");
    EXPECT_EQ(h.Auto().purchases_this_month, 0);  // a failed purchase does not count against max_per_month
    ASSERT_TRUE(h.Spend("d-3", 1).ok());
    EXPECT_EQ(h.AutoPurchases().size(), 1u);  // disabled: nothing starts
    // Enabled again, with a card that works: the failures are forgotten and the next crossing buys.
    h.stripe.answer = ScriptedStripe::Answer::kSucceeds;
    auto again = h.nodes[0]->purchases.SetAutoPurchase(h.customer, {true, std::nullopt, std::nullopt, std::nullopt,
                                                                     std::nullopt, "admin"});
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->settings.failures, 0);
    EXPECT_EQ(again->settings.disabled_reason, "");
    ASSERT_TRUE(h.Spend("d-4", 1).ok());
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 1);
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->total(), 100 - 63 + 1000);
    h.ExpectExactLedger();
}

TEST_P(CreditPurchasesTest, MaxPerMonthIsNeverExceededPauseStopsAndForceBuys) {
    Harness h(GetParam());
    h.Gift(10);
    ASSERT_TRUE(h.nodes[0]->purchases.SetAutoPurchase(h.customer, {true, true, 2000, "credits_1000", 2, "admin"}).ok());
    ASSERT_TRUE(h.Spend("d-paused", 1).ok());  // paused: nothing starts
    EXPECT_EQ(h.AutoPurchases().size(), 0u);
    ASSERT_TRUE(h.nodes[0]->purchases.SetAutoPurchase(h.customer, {std::nullopt, false, std::nullopt, std::nullopt,
                                                                   std::nullopt, "admin"}).ok());
    // Each crossing buys while the month allows: two, then the balance stays under the threshold unbought.
    for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(h.Spend("d-" + std::to_string(i), 1).ok());
        (void)h.nodes[0]->purchases.RunDueAutoPurchases();
    }
    EXPECT_EQ(h.AutoPurchases().size(), 2u);
    EXPECT_EQ(h.Auto().purchases_this_month, 2);
    auto forced = h.nodes[0]->purchases.ForceAutoPurchase(h.customer, "admin");
    ASSERT_FALSE(forced.ok());
    EXPECT_EQ(forced.error().reason, ErrorReason::kAutoPurchaseLimitReached);
    // A new month: the admin forces one, charged at once.
    h.clock.Set(1'769'904'000);  // 2026-02-01T00:00:00Z
    forced = h.nodes[0]->purchases.ForceAutoPurchase(h.customer, "admin");
    ASSERT_TRUE(forced.ok()) << forced.error().message;
    EXPECT_EQ(forced->purchase.status, "succeeded");
    ASSERT_TRUE(forced->grant.has_value());
    EXPECT_EQ(h.stripe.intents_created.load(), 3);
    h.ExpectExactLedger();
}

TEST_P(CreditPurchasesTest, AnAutoPurchaseWhoseChargeWasLostIsCompletedByItsWebhook) {
    Harness h(GetParam());
    h.Gift(10);
    ASSERT_TRUE(h.nodes[0]->purchases.SetAutoPurchase(h.customer, {true, std::nullopt, 100, "credits_1000",
                                                                   std::nullopt, "admin"}).ok());
    h.stripe.answer = ScriptedStripe::Answer::kUnreachable;
    ASSERT_TRUE(h.Spend("d-1", 1).ok());
    const std::string id = h.Auto().settings.pending_purchase;
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 1);
    EXPECT_EQ(h.Auto().settings.failures, 0);  // unreachable is not a failure
    EXPECT_EQ(h.Auto().settings.next_attempt_at->unix_seconds(), kT0 + kAutoPurchaseUnavailableRetrySeconds);
    ASSERT_TRUE(h.Deliver("payment_intent.succeeded", Harness::Payment("payment_intent", id, 1000)).ok());
    EXPECT_EQ(h.Stored(id).status, "succeeded");
    EXPECT_EQ(h.Auto().settings.pending_purchase, "");
    EXPECT_EQ(h.nodes[0]->credits.Balance(h.customer)->total(), 1009);
    h.clock.Advance(kAutoPurchaseUnavailableRetrySeconds);
    EXPECT_EQ(h.nodes[0]->purchases.RunDueAutoPurchases().value(), 0);
    h.ExpectExactLedger();
}

}  // namespace
}  // namespace tally
