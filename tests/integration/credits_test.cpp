// Credits on both stores (issue 13, first slice): grants and deductions in the spend order, transfer ids as
// idempotency keys, nothing written when short of credits, and 200 concurrent deductions of the last 50 credits
// taking exactly 50 (on PostgreSQL over three nodes with their own pools).
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "adapters/config/catalog_json.hpp"
#include "app/billing_service.hpp"
#include "app/credit_service.hpp"
#include "app/write_group.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::ManualClock;
using testing::StoreKind;

constexpr int64_t kT0 = 1'767'225'600;  // 2026-01-01T00:00:00Z

class CreditsTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, CreditsTest, testing::kBothStores, testing::StoreKindName);

struct Harness {
    explicit Harness(StoreKind kind) : db(kind) {
        stores.push_back(db.Open());
        if (kind == StoreKind::kPostgres) {
            stores.push_back(db.Open());
            stores.push_back(db.Open());
        }
        billing = std::make_unique<BillingService>(*stores[0], catalog, clock, BillingConfig{});
        for (auto& s : stores) services.push_back(std::make_unique<CreditService>(*s, clock, actions));
        EXPECT_TRUE(stores[0]->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto created, billing->CreateCustomer(tx, "ada", CustomerInput{}));
            customer = created.first.customer.id;
            return {};
        }).ok());
    }
    size_t Nodes() const { return services.size(); }
    Result<CreditGrantOutcome> Grant(CreditGrantInput in, size_t node = 0) {
        if (in.customer.str().empty()) in.customer = customer;
        std::optional<CreditGrantOutcome> out;
        TALLY_TRY(stores[node]->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, services[node]->Grant(tx, in));
            return {};
        }));
        return *out;
    }
    /// Runs |fn| as the HTTP handlers do: serialized on the customer's credits.
    template <typename T, typename Fn>
    Result<T> Serialized(Fn fn, size_t node = 0) {
        std::optional<T> out;
        TALLY_TRY(stores[node]->WriteSerialized("credits:" + customer.str(), [&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, fn(tx, *services[node]));
            return {};
        }));
        return *out;
    }
    Result<CreditReservationOutcome> Reserve(const std::string& id, int64_t amount, int64_t expires_in = 600,
                                             size_t node = 0) {
        return Serialized<CreditReservationOutcome>(
            [&](StoreTx& tx, CreditService& s) {
                return s.Reserve(tx, CreditReserveInput{customer, id, amount, expires_in, "", "app"});
            },
            node);
    }
    Result<CreditReservationOutcome> Capture(const std::string& id, int64_t amount, size_t node = 0) {
        return Serialized<CreditReservationOutcome>(
            [&](StoreTx& tx, CreditService& s) { return s.Capture(tx, id, amount, "app"); }, node);
    }
    Result<CreditReservationOutcome> Release(const std::string& id, size_t node = 0) {
        return Serialized<CreditReservationOutcome>(
            [&](StoreTx& tx, CreditService& s) { return s.Release(tx, id, "app"); }, node);
    }
    Result<CreditReversal> Reverse(const std::string& id, size_t node = 0) {
        return Serialized<CreditReversal>([&](StoreTx& tx, CreditService& s) { return s.Reverse(tx, id, "admin"); },
                                          node);
    }
    /// A bundle bought and paid (as CreditPurchaseService completes one, without Stripe): the purchase recorded and
    /// its grant issued.
    Status Purchase(const std::string& id, int64_t credits, int64_t paid, size_t node = 0) {
        return stores[node]->WriteSerialized("credits:" + customer.str(), [&](StoreTx& tx) -> Status {
            const Timestamp now = clock.Now();
            CreditPurchaseRecord p{id, customer, "b", credits, paid, "usd", std::nullopt, "api", "pending", "pi_" + id,
                                   "", "", "", "", "", 0, 0, 0, "purchase " + id, "model", now, now};
            TALLY_TRY(tx.credits().InsertPurchase(p));
            TALLY_ASSIGN_OR_RETURN(CreditGrantRecord g, services[node]->GrantPurchase(tx, p));
            p.status = "succeeded";
            p.grant_id = g.id;
            return tx.credits().UpdatePurchase(p);
        });
    }
    /// Stripe's charge.refunded for purchase |id| with |refunded_total| refunded so far.
    Result<CreditPurchaseRecord> Refund(const std::string& id, int64_t refunded_total, size_t node = 0) {
        std::optional<CreditPurchaseRecord> out;
        TALLY_TRY(stores[node]->WriteSerialized("credits:" + customer.str(), [&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, tx.credits().GetPurchase(id));
            if (!out) return NotFound("no purchase " + id);
            TALLY_ASSIGN_OR_RETURN(auto plan, services[node]->TakeBackRefund(tx, *out, refunded_total));
            (void)plan;
            return tx.credits().UpdatePurchase(*out);
        }));
        return *out;
    }
    void ExpectVerified() {
        auto problems = services[0]->Verify();
        ASSERT_TRUE(problems.ok()) << problems.error().message;
        EXPECT_TRUE(problems->empty()) << problems->front();
    }
    Result<CreditDeduction> Deduct(CreditDeductInput in, size_t node = 0) {
        if (in.customer.str().empty()) in.customer = customer;
        std::optional<CreditDeduction> out;
        TALLY_TRY(stores[node]->WriteSerialized("credits:" + in.customer.str(), [&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, services[node]->Deduct(tx, in));
            return {};
        }));
        return *out;
    }

    testing::TestStore db;
    ManualClock clock{kT0};
    Catalog catalog = ParseCatalogJson(R"({"roles":["member"],"default_plan":"free",
        "plans":[{"id":"free","name":"Free","role":"member"}]})").value();
    CreditActionCosts actions{{"SEND_EMAIL", 1}, {"ANALYZE_LEAD", 2}, {"GENERATE_CAMPAIGN", 5}};
    std::vector<std::unique_ptr<Store>> stores;
    std::unique_ptr<BillingService> billing;
    std::vector<std::unique_ptr<CreditService>> services;
    CustomerId customer;
};

TEST_P(CreditsTest, ADeductionTakesTheSoonestExpiringPromotionFirstAndSpansGrants) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g_bundle", GrantType::kBundle, 100, std::nullopt, std::nullopt, "bought", "admin"}).ok());
    auto promo = h.Grant({{}, "g_promo", GrantType::kPromotional, 20, Timestamp(kT0 + 86400), std::nullopt, "launch", "admin"});
    ASSERT_TRUE(promo.ok()) << promo.error().message;
    EXPECT_EQ(promo->grant.remaining, 20);
    auto d = h.Deduct({{}, "d1", std::nullopt, "GENERATE_CAMPAIGN", "{}", "admin"});  // 5
    ASSERT_TRUE(d.ok()) << d.error().message;
    ASSERT_EQ(d->breakdown.size(), 1u);
    EXPECT_EQ(d->breakdown[0].grant, promo->grant.id);
    EXPECT_EQ(d->balance.promotional, 15);
    auto span = h.Deduct({{}, "d2", 25, "", "{\"job\":\"42\"}", "admin"});
    ASSERT_TRUE(span.ok());
    ASSERT_EQ(span->breakdown.size(), 2u);  // one entry per grant
    EXPECT_EQ(span->breakdown[0].amount, 15);
    EXPECT_EQ(span->breakdown[1].amount, 10);
    EXPECT_EQ(span->balance.total(), 90);
    EXPECT_EQ(h.services[0]->Balance(h.customer)->bundle, 90);
    // An expired grant is not spent, and not counted.
    ASSERT_TRUE(h.Grant({{}, "g_soon", GrantType::kPromotional, 7, Timestamp(kT0 + 10), std::nullopt, "x", "a"}).ok());
    EXPECT_EQ(h.services[0]->Balance(h.customer)->promotional, 7);
    h.clock.Advance(10);
    EXPECT_EQ(h.services[0]->Balance(h.customer)->promotional, 0);
    auto after = h.Deduct({{}, "d3", 1, "", "", "a"});
    std::string bundle;
    const auto grants = h.services[0]->Grants(h.customer);
    for (const auto& g : *grants) {
        if (g.transfer_id == "g_bundle") bundle = g.id;
    }
    EXPECT_EQ(after->breakdown[0].grant, bundle);
}

TEST_P(CreditsTest, ATransferIdIsItsIdempotencyKey) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kPromotional, 10, std::nullopt, std::nullopt, "gift", "a"}).ok());
    auto first = h.Deduct({{}, "d", 4, "", "", "a"});
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE(h.Deduct({{}, "other", 1, "", "", "a"}).ok());
    auto replay = h.Deduct({{}, "d", 4, "", "", "a"});
    ASSERT_TRUE(replay.ok());
    EXPECT_TRUE(replay->replayed);
    EXPECT_EQ(replay->balance.total(), 6);  // as the first answer said, not the 5 left now
    EXPECT_EQ(replay->breakdown.size(), 1u);
    EXPECT_EQ(h.services[0]->Balance(h.customer)->total(), 5);
    auto conflict = h.Deduct({{}, "d", 5, "", "", "a"});
    ASSERT_FALSE(conflict.ok());
    EXPECT_EQ(conflict.error().reason, ErrorReason::kIdempotencyKeyReused);
    EXPECT_EQ(conflict.error().param, "id");
    EXPECT_EQ(h.Grant({{}, "d", GrantType::kPromotional, 4, std::nullopt, std::nullopt, "", "a"}).error().reason,
              ErrorReason::kIdempotencyKeyReused);
    auto regrant = h.Grant({{}, "g", GrantType::kPromotional, 10, std::nullopt, std::nullopt, "gift", "a"});
    EXPECT_TRUE(regrant->replayed);
    EXPECT_EQ(h.services[0]->Grants(h.customer)->size(), 1u);
}

TEST_P(CreditsTest, AGroupsDeductionsRunAsOneBatchDecidedInOrderWithNothingWrittenForARefusal) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kBundle, 10, std::nullopt, std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Deduct({{}, "old", 2, "", "", "a"}).ok());  // 8 left
    CustomerId bob;
    ASSERT_TRUE(h.stores[0]->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto created, h.billing->CreateCustomer(tx, "bob", CustomerInput{}));
        bob = created.first.customer.id;
        return {};
    }).ok());
    ASSERT_TRUE(h.Grant({bob, "gb", GrantType::kPromotional, 5, std::nullopt, std::nullopt, "", "a"}).ok());
    const CustomerId ada = h.customer;
    const std::vector<CreditDeductInput> inputs = {
        {ada, "a1", 3, "", "", "app"},                       // 0: ok, 5 left
        {ada, "a2", 6, "", "", "app"},                       // 1: short of credits
        {ada, "a1", 3, "", "", "app"},                       // 2: a replay of 0
        {ada, "a1", 4, "", "", "app"},                       // 3: 0's id with another amount
        {ada, "old", 2, "", "", "app"},                      // 4: a replay of one stored before
        {CustomerId("cus_nope"), "n1", 1, "", "", "app"},    // 5: no such customer
        {bob, "b1", std::nullopt, "SEND_EMAIL", "", "app"},  // 6: ok, bob 4 left
        {ada, "a3", std::nullopt, "ANALYZE_LEAD", "", "app"},  // 7: ok, 3 left
        {ada, "z", 0, "", "", "app"},                        // 8: bad amount
    };
    // One group as the committer hands it to its sink: the deductions batched, a grant between them run on its own.
    std::vector<std::shared_ptr<PendingDeduction>> items;
    std::vector<GroupedWrite> group;
    for (size_t i = 0; i < inputs.size(); ++i) {
        auto item = std::make_shared<PendingDeduction>();
        item->in = inputs[i];
        items.push_back(item);
        GroupedWrite w{{"credits:" + inputs[i].customer.str()}, nullptr};
        w.batch = &h.services[0]->deductions();
        w.item = item;
        group.push_back(std::move(w));
        if (i == 0) {
            group.push_back(GroupedWrite{{"credits:" + ada.str()}, [&](StoreTx& tx) -> Status {
                TALLY_ASSIGN_OR_RETURN(auto g, h.services[0]->Grant(tx, {ada, "gp", GrantType::kPromotional, 10,
                                                                           std::nullopt, std::nullopt, "", "a"}));
                (void)g;
                return {};
            }});
        }
    }
    auto outcomes = WriteGroupSink(*h.stores[0])(group);
    ASSERT_TRUE(outcomes.ok()) << outcomes.error().message;
    ASSERT_EQ(outcomes->size(), group.size());
    // Each write's outcome is its own: the grant's (index 1) ok, each deduction's its refusal or ok.
    EXPECT_TRUE((*outcomes)[1].status.ok());
    const auto code_of = [&](size_t i) {
        const size_t at = i == 0 ? 0 : i + 1;
        EXPECT_EQ((*outcomes)[at].status.ok(), items[i]->out->ok()) << i;
        return items[i]->out->ok() ? std::string("ok") : std::string(ErrorCodeName(items[i]->out->error().code));
    };
    EXPECT_EQ(code_of(0), "ok");
    EXPECT_EQ((*items[0]->out)->balance.total(), 5);  // the batch ran where its first write was, before the grant
    EXPECT_EQ(code_of(1), ErrorCodeName(ErrorCode::kInsufficientCredits));
    ASSERT_EQ(code_of(2), "ok");
    EXPECT_TRUE((*items[2]->out)->replayed);
    EXPECT_EQ((*items[2]->out)->balance.total(), 5);
    EXPECT_EQ((*items[2]->out)->breakdown.size(), 1u);
    ASSERT_FALSE(items[3]->out->ok());
    EXPECT_EQ(items[3]->out->error().reason, ErrorReason::kIdempotencyKeyReused);
    ASSERT_EQ(code_of(4), "ok");
    EXPECT_TRUE((*items[4]->out)->replayed);
    EXPECT_EQ((*items[4]->out)->balance.total(), 8);
    ASSERT_FALSE(items[5]->out->ok());
    EXPECT_EQ(items[5]->out->error().param, "customer");
    ASSERT_EQ(code_of(6), "ok");
    EXPECT_EQ((*items[6]->out)->balance.total(), 4);
    ASSERT_EQ(code_of(7), "ok");
    EXPECT_EQ((*items[7]->out)->balance.total(), 3);
    EXPECT_EQ((*items[7]->out)->transfer.amount, 2);
    ASSERT_FALSE(items[8]->out->ok());
    EXPECT_EQ(items[8]->out->error().param, "amount");
    // What was written: the three new deductions, each with its entry; nothing for the refusals.
    EXPECT_EQ(h.services[0]->Balance(ada)->total(), 13);
    EXPECT_EQ(h.services[0]->Balance(bob)->total(), 4);
    auto listed = h.services[0]->Transactions(CreditTransferFilter{ada, std::nullopt, std::nullopt, std::nullopt,
                                                                    std::nullopt, 100});
    ASSERT_TRUE(listed.ok()) << listed.error().message;
    std::vector<std::string> ids;
    for (const auto& t : *listed) ids.push_back(t.id);
    EXPECT_EQ(ids, (std::vector<std::string>{"gp", "a3", "a1", "old", "g"}));
    ASSERT_TRUE(h.stores[0]->Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto a2, tx.credits().GetTransfer("a2"));
        EXPECT_FALSE(a2.has_value());
        TALLY_ASSIGN_OR_RETURN(auto a1, tx.credits().ListEntries("a1"));
        EXPECT_EQ(a1.size(), 1u);
        TALLY_ASSIGN_OR_RETURN(auto a3, tx.credits().ListEntries("a3"));
        EXPECT_EQ(a3.size(), 1u);
        return {};
    }).ok());
    h.ExpectVerified();
    // The same deductions again (a client retrying all of them): each one done is a replay with its first answer;
    // the one short of credits before was not used up and, with the grant since, goes through now.
    for (auto& item : items) item->out.reset();
    group.erase(group.begin() + 1);
    auto again = WriteGroupSink(*h.stores[0])(group);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE((*items[0]->out)->replayed);
    EXPECT_EQ((*items[0]->out)->balance.total(), 5);
    EXPECT_TRUE((*items[7]->out)->replayed);
    EXPECT_EQ((*items[7]->out)->balance.total(), 3);
    ASSERT_TRUE(items[1]->out->ok());
    EXPECT_FALSE((*items[1]->out)->replayed);
    EXPECT_EQ((*items[1]->out)->balance.total(), 7);
    EXPECT_EQ(h.services[0]->Balance(ada)->total(), 7);
    h.ExpectVerified();
}

TEST_P(CreditsTest, ShortOfCreditsIsA402AndBadInputWritesNothing) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kPromotional, 3, std::nullopt, std::nullopt, "gift", "a"}).ok());
    auto short_of = h.Deduct({{}, "d", 4, "", "", "a"});
    ASSERT_FALSE(short_of.ok());
    EXPECT_EQ(short_of.error().code, ErrorCode::kInsufficientCredits);
    EXPECT_EQ(h.services[0]->Balance(h.customer)->total(), 3);
    // The id was not used up: the same id succeeds once there are credits.
    ASSERT_TRUE(h.Grant({{}, "g2", GrantType::kBundle, 10, std::nullopt, std::nullopt, "", "a"}).ok());
    EXPECT_TRUE(h.Deduct({{}, "d", 4, "", "", "a"}).ok());
    struct Case {
        CreditDeductInput in;
        const char* param;
    };
    const Case cases[] = {
        {{{}, "x1", 0, "", "", "a"}, "amount"},
        {{{}, "x2", -3, "", "", "a"}, "amount"},
        {{{}, "x3", kCreditAmountMax + 1, "", "", "a"}, "amount"},
        {{{}, "x4", std::nullopt, "", "", "a"}, "amount"},
        {{{}, "x5", 1, "SEND_EMAIL", "", "a"}, "action"},
        {{{}, "x6", std::nullopt, "TELEPORT", "", "a"}, "action"},
        {{{}, "", 1, "", "", "a"}, "id"},
        {{CustomerId("cust_nope"), "x7", 1, "", "", "a"}, "customer"},
    };
    for (const auto& c : cases) {
        auto r = h.Deduct(c.in);
        ASSERT_FALSE(r.ok()) << c.param;
        EXPECT_EQ(r.error().param, c.param);
    }
    EXPECT_EQ(h.Grant({{}, "y1", GrantType::kSubscription, 5, std::nullopt, std::nullopt, "", "a"}).error().param, "type");
    EXPECT_EQ(h.Grant({{}, "y2", GrantType::kPromotional, 5, Timestamp(kT0), std::nullopt, "", "a"}).error().param,
              "expires_at");
    EXPECT_EQ(h.Grant({CustomerId("cust_nope"), "y3", GrantType::kPromotional, 5, std::nullopt, std::nullopt, "", "a"})
                  .error()
                  .param,
              "customer");
    EXPECT_EQ(h.services[0]->Balance(h.customer)->total(), 9);
    EXPECT_EQ(h.services[0]->Grants(h.customer)->size(), 2u);
}

TEST_P(CreditsTest, TwoHundredConcurrentDeductionsTakeExactlyTheLastFifty) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kPromotional, 30, std::nullopt, std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Grant({{}, "g2", GrantType::kBundle, 20, std::nullopt, std::nullopt, "", "a"}).ok());
    std::atomic<int> ok{0}, refused{0}, failed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 200; ++i) {
        threads.emplace_back([&, i] {
            auto r = h.Deduct({{}, "race_" + std::to_string(i), 1, "", "", "a"}, static_cast<size_t>(i) % h.Nodes());
            if (r.ok()) {
                ++ok;
            } else if (r.error().code == ErrorCode::kInsufficientCredits) {
                ++refused;
            } else {
                ++failed;
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 50);
    EXPECT_EQ(refused.load(), 150);
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(h.services[0]->Balance(h.customer)->total(), 0);
    const auto grants = h.services[0]->Grants(h.customer);
    for (const auto& g : *grants) EXPECT_EQ(g.remaining, 0);
}

TEST_P(CreditsTest, TwoHundredDeductionsBatchedByGroupCommittersTakeExactlyTheLastFifty) {
    // As the API submits them: each node's group committer runs its groups' deductions as batches, and a replayed
    // id in the same stream answers as the first time.
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kPromotional, 30, std::nullopt, std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Grant({{}, "g2", GrantType::kBundle, 20, std::nullopt, std::nullopt, "", "a"}).ok());
    std::vector<std::unique_ptr<WriteGroupCommitter>> committers;
    for (size_t n = 0; n < h.Nodes(); ++n) {
        committers.push_back(
            std::make_unique<WriteGroupCommitter>(WriteGroupSink(*h.stores[n]), kWriteGroupMax, kWriteGroupQueueMax));
    }
    std::mutex mu;
    std::condition_variable all_done;
    int answered = 0, ok = 0, refused = 0, failed = 0;
    std::set<std::string> spent;  // ids answered ok (a replay answers ok with the first answer)
    std::vector<std::shared_ptr<PendingDeduction>> items;
    for (int i = 0; i < 240; ++i) {
        auto item = std::make_shared<PendingDeduction>();
        // 40 of them replay an earlier id.
        const int id = i < 200 ? i : (i - 200) * 5;
        item->in = CreditDeductInput{h.customer, "race_" + std::to_string(id), 1, "", "", "a"};
        items.push_back(item);
    }
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (size_t i = static_cast<size_t>(t); i < items.size(); i += 8) {
                auto item = items[i];
                GroupedWrite w{{"credits:" + h.customer.str()}, nullptr};
                w.batch = &h.services[i % h.Nodes()]->deductions();
                w.item = item;
                committers[i % h.Nodes()]->Submit(std::move(w), [&, item](Result<GroupedWriteOutcome> r) {
                    std::lock_guard lock(mu);
                    ++answered;
                    if (r.ok() && r->status.ok()) {
                        ++ok;
                        spent.insert(item->in.id);
                    } else if (r.ok() && r->status.error().code == ErrorCode::kInsufficientCredits) {
                        ++refused;
                    } else {
                        ++failed;
                    }
                    all_done.notify_all();
                });
            }
        });
    }
    for (auto& t : threads) t.join();
    {
        std::unique_lock lock(mu);
        ASSERT_TRUE(all_done.wait_for(lock, std::chrono::seconds(60), [&] { return answered == 240; }));
    }
    for (auto& c : committers) c->Stop();
    EXPECT_EQ(failed, 0);
    EXPECT_EQ(spent.size(), 50u);  // exactly the last fifty, each once
    EXPECT_EQ(ok + refused, 240);
    EXPECT_EQ(h.services[0]->Balance(h.customer)->total(), 0);
    auto listed = h.services[0]->Transactions(CreditTransferFilter{h.customer, std::string("deduct"), std::nullopt,
                                                                    std::nullopt, std::nullopt, 100});
    ASSERT_TRUE(listed.ok());
    EXPECT_EQ(listed->size(), 50u);
    h.ExpectVerified();
}

TEST_P(CreditsTest, VerifyFindsAnExactLedgerExactAndNamesATamperedGrant) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kPromotional, 30, std::nullopt, std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Grant({{}, "g2", GrantType::kBundle, 20, std::nullopt, std::nullopt, "", "a"}).ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(h.Deduct({{}, "v" + std::to_string(i), 4, "", "", "a"}).ok());
    auto clean = h.services[0]->Verify();
    ASSERT_TRUE(clean.ok()) << clean.error().message;
    EXPECT_TRUE(clean->empty()) << clean->front();
    // A balance moved without its entry (what a bug elsewhere would do): named.
    const auto grants = h.services[0]->Grants(h.customer);
    const CreditGrantRecord* left = nullptr;  // the bundle: the promotion went first and is spent
    for (const auto& g : *grants) {
        if (g.remaining > 0) left = &g;
    }
    ASSERT_NE(left, nullptr);
    EXPECT_EQ(left->remaining, 10);
    ASSERT_TRUE(h.stores[0]->Write([&](StoreTx& tx) -> Status {
        return tx.credits().SetGrantRemaining(left->id, left->remaining - 1);
    }).ok());
    auto found = h.services[0]->Verify();
    ASSERT_TRUE(found.ok());
    ASSERT_EQ(found->size(), 1u);
    EXPECT_NE(found->front().find(left->id), std::string::npos) << found->front();
}

// A reservation holds credits so they cannot be spent twice; a capture spends part of the hold as a deduction of
// that amount would and gives the rest back; a release gives all of it back; settling twice is refused, and a
// capture replayed with the same amount answers as the first time.
TEST_P(CreditsTest, AReservationHoldsCreditsAndACaptureSpendsPartAndReturnsTheRest) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g_promo", GrantType::kPromotional, 30, Timestamp(kT0 + 86400), std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Grant({{}, "g_bundle", GrantType::kBundle, 50, std::nullopt, std::nullopt, "", "a"}).ok());
    auto held = h.Reserve("ai_1", 60);
    ASSERT_TRUE(held.ok()) << held.error().message;
    EXPECT_EQ(held->reservation.status, "pending");
    ASSERT_EQ(held->breakdown.size(), 2u);  // the promotion (30), then 30 of the bundle
    EXPECT_EQ(held->balance.total(), 20);
    auto summary = h.services[0]->Summary(h.customer);
    ASSERT_TRUE(summary.ok()) << summary.error().message;
    EXPECT_EQ(summary->reserved, 60);
    EXPECT_EQ(summary->balance.total(), 20);
    // Held credits cannot be spent: 21 is more than what is left.
    EXPECT_EQ(h.Deduct({{}, "d_over", 21, "", "", "a"}).error().code, ErrorCode::kInsufficientCredits);
    // A replayed reservation answers as the first time; the same id with another amount is refused.
    auto again = h.Reserve("ai_1", 60);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(again->replayed);
    EXPECT_EQ(h.Reserve("ai_1", 61).error().reason, ErrorReason::kIdempotencyKeyReused);

    // Capture 45 of 60: the promotion's 30 and 15 of the bundle stay spent, 15 go back to the bundle.
    EXPECT_EQ(h.Capture("ai_1", 61).error().param, "amount");
    EXPECT_EQ(h.Capture("ai_1", 0).error().param, "amount");
    auto captured = h.Capture("ai_1", 45);
    ASSERT_TRUE(captured.ok()) << captured.error().message;
    EXPECT_EQ(captured->reservation.status, "captured");
    EXPECT_EQ(captured->reservation.captured, 45);
    ASSERT_EQ(captured->breakdown.size(), 1u);
    EXPECT_EQ(captured->breakdown[0].amount, 15);
    EXPECT_EQ(captured->balance.bundle, 35);
    EXPECT_EQ(captured->balance.promotional, 0);
    EXPECT_TRUE(h.Capture("ai_1", 45)->replayed);
    EXPECT_EQ(h.Capture("ai_1", 40).error().reason, ErrorReason::kReservationSettled);
    EXPECT_EQ(h.Release("ai_1").error().reason, ErrorReason::kReservationSettled);
    EXPECT_EQ(h.services[0]->Summary(h.customer)->reserved, 0);
    EXPECT_EQ(h.services[0]->Summary(h.customer)->used_this_period, 45);

    // A release gives everything back to where it came from.
    ASSERT_TRUE(h.Reserve("ai_2", 35).ok());
    EXPECT_EQ(h.services[0]->Balance(h.customer)->total(), 0);
    auto released = h.Release("ai_2");
    ASSERT_TRUE(released.ok()) << released.error().message;
    EXPECT_EQ(released->reservation.status, "released");
    EXPECT_EQ(released->balance.bundle, 35);
    EXPECT_TRUE(h.Release("ai_2")->replayed);
    EXPECT_EQ(h.Capture("ai_2", 1).error().reason, ErrorReason::kReservationSettled);
    EXPECT_EQ(h.Capture("nope", 1).error().code, ErrorCode::kNotFound);
    h.ExpectVerified();
}

// An expired reservation stops holding at once (reads count its credits as given back) and is released, as
// "expired", by the customer's next write; it can no longer be captured.
TEST_P(CreditsTest, AnExpiredReservationReleasesItself) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kBundle, 10, std::nullopt, std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Reserve("r", 8, 60).ok());
    EXPECT_EQ(h.services[0]->Balance(h.customer)->total(), 2);
    h.clock.Advance(60);
    auto summary = h.services[0]->Summary(h.customer);
    EXPECT_EQ(summary->reserved, 0);
    EXPECT_EQ(summary->balance.total(), 10);
    EXPECT_EQ(h.services[0]->GetReservation("r")->status, "expired");
    EXPECT_EQ(h.Capture("r", 8).error().reason, ErrorReason::kReservationSettled);
    auto after = h.Release("r");  // already released by the capture's write: answers as it is
    ASSERT_TRUE(after.ok()) << after.error().message;
    EXPECT_EQ(after->reservation.status, "expired");
    auto d = h.Deduct({{}, "d", 10, "", "", "a"});
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->balance.total(), 0);
    EXPECT_EQ(h.Reserve("r_bad", 1, 0).error().param, "expires_in");
    EXPECT_EQ(h.Reserve("r_bad", 1, kCreditReservationExpiresInMax + 1).error().param, "expires_in");
    h.ExpectVerified();
}

// The expiry sweep settles what lapsed without waiting for the customer's next write: a lapsed reservation is
// released and a lapsed grant's credits left expire (their transfers written), once however many nodes sweep.
TEST_P(CreditsTest, TheExpirySweepSettlesLapsedReservationsAndGrantsOnce) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g_promo", GrantType::kPromotional, 30, Timestamp(kT0 + 3600), std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Grant({{}, "g_bundle", GrantType::kBundle, 50, std::nullopt, std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Reserve("r", 40, 60).ok());  // 30 from the promotion, 10 from the bundle
    EXPECT_EQ(h.services[0]->SettleLapsed().value(), 0);  // nothing lapsed yet
    const auto kinds = [&] {
        std::map<std::string, int> out;
        EXPECT_TRUE(h.stores[0]->Read([&](StoreTx& tx) -> Status {
            CreditTransferFilter f;
            f.customer = h.customer;
            f.limit = 100;
            TALLY_ASSIGN_OR_RETURN(auto transfers, tx.credits().ListTransfers(f));
            for (const auto& t : transfers) ++out[t.kind];
            return {};
        }).ok());
        return out;
    };
    h.clock.Advance(61);
    EXPECT_EQ(h.services[0]->SettleLapsed().value(), 1);
    EXPECT_EQ(h.services[0]->GetReservation("r")->status, "expired");
    EXPECT_EQ(kinds()["release"], 1);
    EXPECT_EQ(kinds().count("expire"), 0u);
    // The promotion lapses an hour in: every node sweeps, one expiry is written.
    h.clock.Advance(3600);
    std::vector<std::thread> nodes;
    std::atomic<int> failed{0};
    for (size_t n = 0; n < h.Nodes(); ++n) {
        nodes.emplace_back([&, n] {
            if (!h.services[n]->SettleLapsed().ok()) ++failed;
        });
    }
    for (auto& t : nodes) t.join();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(kinds()["expire"], 1);
    EXPECT_EQ(h.services[0]->SettleLapsed().value(), 0);  // settled: not found again
    auto balance = h.services[0]->Balance(h.customer);
    ASSERT_TRUE(balance.ok());
    EXPECT_EQ(balance->promotional, 0);
    EXPECT_EQ(balance->bundle, 50);
    h.ExpectVerified();
}

// A reversal returns a deduction to the grants it came from, once; a part whose grant expired since is expired
// again at once; a reversal of a reversal, or of a grant, is refused.
TEST_P(CreditsTest, AReversalReturnsADeductionToItsGrantsAndReExpiresWhatExpiredSince) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g_promo", GrantType::kPromotional, 10, Timestamp(kT0 + 100), std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Grant({{}, "g_bundle", GrantType::kBundle, 10, std::nullopt, std::nullopt, "", "a"}).ok());
    auto d = h.Deduct({{}, "d", 15, "", "", "a"});  // 10 from the promotion, 5 from the bundle
    ASSERT_TRUE(d.ok());
    auto early = h.Reverse("d");
    ASSERT_TRUE(early.ok()) << early.error().message;
    EXPECT_EQ(early->transfer.id, "reversal:d");
    EXPECT_EQ(early->balance.total(), 20);
    EXPECT_TRUE(h.Reverse("d")->replayed);
    EXPECT_EQ(h.Reverse("reversal:d").error().reason, ErrorReason::kTransferNotReversible);
    EXPECT_EQ(h.Reverse("g_bundle").error().reason, ErrorReason::kTransferNotReversible);
    EXPECT_EQ(h.Reverse("nope").error().code, ErrorCode::kNotFound);

    // Spent again, then the promotion expires; reversing gives the bundle its 5 and expires the promotion's 10.
    ASSERT_TRUE(h.Deduct({{}, "d2", 15, "", "", "a"}).ok());
    h.clock.Advance(200);
    auto late = h.Reverse("d2");
    ASSERT_TRUE(late.ok()) << late.error().message;
    EXPECT_EQ(late->balance.total(), 10);
    EXPECT_EQ(late->balance.bundle, 10);
    EXPECT_EQ(late->balance.promotional, 0);
    CreditTransferFilter f;
    f.customer = h.customer;
    f.kind = "expire";
    auto expiries = h.services[0]->Transactions(f);
    ASSERT_TRUE(expiries.ok()) << expiries.error().message;
    ASSERT_EQ(expiries->size(), 1u);
    EXPECT_EQ(expiries->front().amount, 10);
    EXPECT_EQ(expiries->front().id.rfind("expire:", 0), 0u);
    const auto grants = h.services[0]->Grants(h.customer);
    for (const auto& g : *grants) {
        if (g.type == GrantType::kPromotional) {
            EXPECT_EQ(g.remaining, 0);
        }
    }
    h.ExpectVerified();
}

// A grant past its expiry with credits left gets an expiry transfer on the customer's next write; transactions
// list newest first, by kind and page.
TEST_P(CreditsTest, TransactionsListNewestFirstByKindAndPage) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kPromotional, 10, Timestamp(kT0 + 50), std::nullopt, "", "a"}).ok());
    ASSERT_TRUE(h.Grant({{}, "g2", GrantType::kBundle, 10, std::nullopt, std::nullopt, "", "a"}).ok());
    for (int i = 0; i < 4; ++i) {
        h.clock.Advance(1);
        ASSERT_TRUE(h.Deduct({{}, "t" + std::to_string(i), 1, "", "", "a"}).ok());
    }
    h.clock.Advance(100);
    ASSERT_TRUE(h.Deduct({{}, "t_late", 1, "", "", "a"}).ok());  // writes the promotion's expiry (6 left) first
    CreditTransferFilter f;
    f.customer = h.customer;
    f.limit = 3;
    auto page = h.services[0]->Transactions(f);
    ASSERT_TRUE(page.ok()) << page.error().message;
    ASSERT_EQ(page->size(), 3u);
    EXPECT_EQ((*page)[0].id, "t_late");
    EXPECT_EQ((*page)[1].kind, "expire");
    EXPECT_EQ((*page)[1].amount, 6);
    EXPECT_EQ((*page)[2].id, "t3");
    f.starting_after = (*page)[2].id;
    f.limit = 10;
    auto rest = h.services[0]->Transactions(f);
    ASSERT_TRUE(rest.ok());
    ASSERT_EQ(rest->size(), 5u);  // t2 t1 t0, then the two grants
    EXPECT_EQ((*rest)[0].id, "t2");
    f.starting_after.reset();
    f.kind = "grant";
    EXPECT_EQ(h.services[0]->Transactions(f)->size(), 2u);
    f.kind.reset();
    f.created_gte = Timestamp(kT0 + 2);
    f.created_lte = Timestamp(kT0 + 3);
    EXPECT_EQ(h.services[0]->Transactions(f)->size(), 2u);  // t1, t2
    f.created_gte.reset();
    f.created_lte.reset();
    f.starting_after = "someone_elses";
    EXPECT_EQ(h.services[0]->Transactions(f).error().param, "starting_after");
    h.ExpectVerified();
}

// Reservations race like deductions: 100 concurrent holds of 1 against 40 credits (over three nodes on PostgreSQL)
// take exactly 40, and capturing half of each and releasing the rest leaves exactly what the ledger says.
TEST_P(CreditsTest, ConcurrentReservationsNeverHoldACreditTwice) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Grant({{}, "g", GrantType::kBundle, 40, std::nullopt, std::nullopt, "", "a"}).ok());
    std::atomic<int> ok{0}, refused{0}, failed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 100; ++i) {
        threads.emplace_back([&, i] {
            auto r = h.Reserve("hold_" + std::to_string(i), 1, 600, static_cast<size_t>(i) % h.Nodes());
            if (r.ok()) {
                ++ok;
            } else if (r.error().code == ErrorCode::kInsufficientCredits) {
                ++refused;
            } else {
                ++failed;
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 40);
    EXPECT_EQ(refused.load(), 60);
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(h.services[0]->Summary(h.customer)->reserved, 40);
    h.ExpectVerified();
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {

// The ledger against a reference model (issue 13, item 8): a thousand random grants, bundle purchases, deductions,
// holds, captures, releases, reversals, refunds, replays and clock moves, each checked against a plain model of grants written here from the
// rules in the README (not from domain/credits), the balance and what is held compared after every step and the
// ledger verified every 100 steps. Deterministic (a fixed seed), on both stores.
struct ModelGrant {
    std::string id;  // the transfer id
    bool promotional = true;
    int64_t remaining = 0;
    std::optional<int64_t> expires_at;
    int order = 0;  // creation order
};
struct ModelDraw {
    std::string grant;
    int64_t amount = 0;
};
struct ModelPurchase {
    int64_t credits = 0;
    int64_t paid = 0;      // minor units
    int64_t refunded = 0;  // the largest refunded total seen
    int64_t taken = 0;     // credits taken back
    int64_t spent = 0;     // credits refunds found already spent
};
struct ModelHold {
    std::vector<ModelDraw> draws;
    int64_t expires_at = 0;
    bool pending = true;
    std::optional<int64_t> captured;
};

class Model {
public:
    int64_t now = kT0;
    std::vector<ModelGrant> grants;
    std::map<std::string, std::vector<ModelDraw>> deductions;
    std::map<std::string, ModelHold> holds;
    std::set<std::string> reversed;
    std::map<std::string, ModelPurchase> purchases;  // by purchase id; its grant is "purchase:<id>"

    bool Usable(const ModelGrant& g) const { return g.remaining > 0 && (!g.expires_at || now < *g.expires_at); }
    int64_t Available() const {
        int64_t sum = 0;
        for (const auto& g : grants) sum += Usable(g) ? g.remaining : 0;
        return sum;
    }
    int64_t Reserved() const {
        int64_t sum = 0;
        for (const auto& [id, h] : holds) {
            if (h.pending) {
                for (const auto& d : h.draws) sum += d.amount;
            }
        }
        return sum;
    }
    ModelGrant* Find(const std::string& id) {
        for (auto& g : grants) {
            if (g.id == id) return &g;
        }
        return nullptr;
    }
    /// What is past its expiry is over: holds give everything back.
    int lapsed = 0;
    void Lapse() {
        for (auto& [id, h] : holds) {
            if (h.pending && now >= h.expires_at) {
                GiveBack(h.draws, 0);
                h.pending = false;
                ++lapsed;
            }
        }
    }
    /// Spend order as the README states it: priority (all 10 here), soonest expiry (none last), promotional before
    /// paid, oldest.
    std::optional<std::vector<ModelDraw>> Take(int64_t amount) {
        if (Available() < amount) return std::nullopt;
        std::vector<ModelGrant*> order;
        for (auto& g : grants) {
            if (Usable(g)) order.push_back(&g);
        }
        std::sort(order.begin(), order.end(), [](const ModelGrant* a, const ModelGrant* b) {
            const int64_t ea = a->expires_at.value_or(INT64_MAX);
            const int64_t eb = b->expires_at.value_or(INT64_MAX);
            if (ea != eb) return ea < eb;
            if (a->promotional != b->promotional) return a->promotional;
            return a->order < b->order;
        });
        std::vector<ModelDraw> draws;
        for (ModelGrant* g : order) {
            if (amount == 0) break;
            const int64_t take = std::min(amount, g->remaining);
            g->remaining -= take;
            amount -= take;
            draws.push_back({g->id, take});
        }
        return draws;
    }
    /// Keeps the first |keep| credits of |draws| spent and gives the rest back, last-taken first.
    void GiveBack(const std::vector<ModelDraw>& draws, int64_t keep) {
        for (const auto& d : draws) {
            const int64_t kept = std::min(keep, d.amount);
            keep -= kept;
            Return(d.grant, d.amount - kept);
        }
    }
    /// Credits back in a grant; a purchase's that a refund found spent are taken back at once (README: refunds).
    int owed_taken = 0;
    void Return(const std::string& grant, int64_t amount) {
        ModelGrant* g = Find(grant);
        g->remaining += amount;
        if (!grant.starts_with("purchase:")) return;
        ModelPurchase& p = purchases[grant.substr(9)];
        const int64_t take = std::min({amount, p.spent, g->remaining});
        g->remaining -= take;
        p.spent -= take;
        p.taken += take;
        owed_taken += take > 0 ? 1 : 0;
    }
};

TEST_P(CreditsTest, ARandomHistoryMatchesTheReferenceModel) {
    Harness h(GetParam());
    Model m;
    std::mt19937_64 rng(20261207);
    auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    std::vector<std::string> used_ids;  // every transfer id that moved credits
    int grants = 0;
    int ops = 0;
    std::map<std::string, int64_t> deducted;  // each deduction's amount, to replay it
    std::map<std::string, int> seen;  // what the history exercised, so a change of the mix cannot hollow it out
    std::map<std::string, ModelPurchase>& purchases = m.purchases;
    const int kSteps = 1000;
    for (int step = 0; step < kSteps; ++step) {
        SCOPED_TRACE("step " + std::to_string(step));
        m.now += pick(0, 3) == 0 ? pick(1, 120) : 0;
        h.clock.Set(m.now);
        m.Lapse();
        const int64_t op = pick(0, 99);
        if (op < 15) {
            // A new grant a second after the last: grants of one second are ordered by id (random), which the model
            // cannot know, and refunds see which grant a deduction drew from.
            m.now += 1;
            h.clock.Set(m.now);
            m.Lapse();
        }
        if (op < 15 && pick(0, 2) == 0) {
            // A bundle bought: paid 1.00 to 50.00 for 1 to 60 credits.
            const std::string id = "p" + std::to_string(purchases.size());
            const int64_t credits = pick(1, 60);
            const int64_t paid = pick(100, 5000);
            ASSERT_TRUE(h.Purchase(id, credits, paid).ok());
            m.grants.push_back({"purchase:" + id, false, credits, std::nullopt, ++grants});
            purchases[id] = ModelPurchase{credits, paid};
            ++seen["bought"];
        } else if (op < 15 || grants == 0) {
            const bool promo = pick(0, 1) == 0;
            const int64_t amount = pick(1, 60);
            std::optional<int64_t> expires;
            if (promo && pick(0, 1) == 0) expires = m.now + pick(30, 900);
            const std::string id = "g" + std::to_string(grants++);
            auto r = h.Grant({{}, id, promo ? GrantType::kPromotional : GrantType::kBundle, amount,
                              expires ? std::optional<Timestamp>(Timestamp(*expires)) : std::nullopt, std::nullopt, "",
                              "model"});
            ASSERT_TRUE(r.ok()) << r.error().message;
            m.grants.push_back({id, promo, amount, expires, grants});
            used_ids.push_back(id);
        } else if (op < 45) {
            const int64_t amount = pick(1, 40);
            const std::string id = "d" + std::to_string(ops++);
            auto r = h.Deduct({{}, id, amount, "", "", "model"});
            auto want = m.Take(amount);
            ASSERT_EQ(r.ok(), want.has_value()) << (r.ok() ? "" : r.error().message);
            ++seen[want ? "deducted" : "refused"];
            if (want) {
                m.deductions[id] = *want;
                used_ids.push_back(id);
                deducted[id] = amount;
            } else {
                EXPECT_EQ(r.error().code, ErrorCode::kInsufficientCredits);
            }
        } else if (op < 60) {
            const int64_t amount = pick(1, 30);
            const int64_t expires_in = pick(10, 400);
            const std::string id = "r" + std::to_string(ops++);
            auto r = h.Reserve(id, amount, expires_in);
            auto want = m.Take(amount);
            ASSERT_EQ(r.ok(), want.has_value()) << (r.ok() ? "" : r.error().message);
            if (want) m.holds[id] = ModelHold{*want, m.now + expires_in, true};
            ++seen[want ? "held" : "refused"];
        } else if (op < 75 && !m.holds.empty()) {
            // Mostly a pending hold (settling a settled one is the rarer case to check).
            std::vector<std::string> pending;
            for (const auto& [id, hold] : m.holds) {
                if (hold.pending) pending.push_back(id);
            }
            auto it = !pending.empty() && pick(0, 4) > 0
                          ? m.holds.find(pending[static_cast<size_t>(pick(0, static_cast<int64_t>(pending.size()) - 1))])
                          : std::next(m.holds.begin(), pick(0, static_cast<int64_t>(m.holds.size()) - 1));
            int64_t held = 0;
            for (const auto& d : it->second.draws) held += d.amount;
            if (pick(0, 1) == 0) {
                // On a captured hold, half the time the same capture again (a client retrying).
                const int64_t keep = it->second.captured && pick(0, 1) == 0 ? *it->second.captured : pick(1, held);
                auto r = h.Capture(it->first, keep);
                // A capture of a settled hold is refused, unless it repeats the capture (then it is a replay).
                const bool replay = it->second.captured == keep;
                ASSERT_EQ(r.ok(), it->second.pending || replay) << (r.ok() ? "" : r.error().message);
                ++seen[it->second.pending ? "captured" : replay ? "capture replayed" : "settled"];
                if (it->second.pending) {
                    m.GiveBack(it->second.draws, keep);
                    it->second.pending = false;
                    it->second.captured = keep;
                    std::vector<ModelDraw> kept;
                    int64_t left = keep;
                    for (const auto& d : it->second.draws) {
                        const int64_t k = std::min(left, d.amount);
                        left -= k;
                        if (k > 0) kept.push_back({d.grant, k});
                    }
                    m.deductions["capture:" + it->first] = kept;
                } else if (!replay) {
                    EXPECT_EQ(r.error().reason, ErrorReason::kReservationSettled);
                }
            } else {
                auto r = h.Release(it->first);
                // Released or expired: answers as it is; captured: refused.
                const bool captured = it->second.captured.has_value();
                ASSERT_EQ(r.ok(), !captured) << (r.ok() ? "" : r.error().message);
                ++seen[it->second.pending ? "released" : "settled"];
                if (it->second.pending) {
                    m.GiveBack(it->second.draws, 0);
                    it->second.pending = false;
                }
            }
        } else if (op < 85 && !m.deductions.empty()) {
            auto it = std::next(m.deductions.begin(), pick(0, static_cast<int64_t>(m.deductions.size()) - 1));
            auto r = h.Reverse(it->first);
            ASSERT_TRUE(r.ok()) << it->first << ": " << r.error().message;
            EXPECT_EQ(r->replayed, m.reversed.contains(it->first));
            ++seen[r->replayed ? "reversal replayed" : "reversed"];
            if (m.reversed.insert(it->first).second) {
                for (const auto& d : it->second) m.Return(d.grant, d.amount);
            }
        } else if (op < 92 && !purchases.empty()) {
            // A refund in Stripe (cumulative; sometimes an older or repeated snapshot): the README's rule, the
            // bundle's credits in proportion to what was refunded (half up), never more than is left of its grant.
            auto it = std::next(purchases.begin(), pick(0, static_cast<int64_t>(purchases.size()) - 1));
            ModelPurchase& mp = it->second;
            const int64_t total = pick(0, 3) == 0 ? mp.refunded : pick(mp.refunded, mp.paid);
            auto r = h.Refund(it->first, total);
            ASSERT_TRUE(r.ok()) << r.error().message;
            if (total > mp.refunded) {
                const int64_t due = (2 * mp.credits * total + mp.paid) / (2 * mp.paid);
                const int64_t increment = std::max<int64_t>(0, due - mp.taken - mp.spent);
                ModelGrant* g = m.Find("purchase:" + it->first);
                const int64_t take = std::min(increment, g->remaining);
                g->remaining -= take;
                mp.taken += take;
                mp.spent += increment - take;
                mp.refunded = total;
                ++seen[increment > take ? "refund past spent" : take > 0 ? "refunded" : "refund of nothing"];
            } else {
                ++seen["refund seen before"];
            }
            EXPECT_EQ(r->amount_refunded, mp.refunded);
            EXPECT_EQ(r->credits_refunded, mp.taken);
            EXPECT_EQ(r->credits_refund_spent, mp.spent);
        } else if (!deducted.empty()) {
            // A replayed deduction (a client retrying): the first answer, nothing moves; another amount is refused.
            auto it = std::next(deducted.begin(), pick(0, static_cast<int64_t>(deducted.size()) - 1));
            auto r = h.Deduct({{}, it->first, it->second, "", "", "model"});
            ASSERT_TRUE(r.ok()) << r.error().message;
            EXPECT_TRUE(r->replayed);
            EXPECT_EQ(r->transfer.amount, it->second);
            EXPECT_EQ(h.Deduct({{}, it->first, it->second + 1, "", "", "model"}).error().reason,
                      ErrorReason::kIdempotencyKeyReused);
            ++seen["deduction replayed"];
        }
        auto summary = h.services[step % h.Nodes()]->Summary(h.customer);
        ASSERT_TRUE(summary.ok()) << summary.error().message;
        ASSERT_EQ(summary->balance.total(), m.Available());
        ASSERT_EQ(summary->reserved, m.Reserved());
        if (step % 100 == 99) h.ExpectVerified();
    }
    h.ExpectVerified();
    seen["lapsed"] = m.lapsed;
    seen["owed taken back"] = m.owed_taken;
    for (const char* what : {"deducted", "refused", "held", "captured", "released", "settled", "reversed",
                             "reversal replayed", "deduction replayed", "capture replayed", "lapsed", "bought",
                             "refunded", "refund past spent", "refund seen before", "owed taken back"}) {
        EXPECT_GE(seen[what], 3) << what;
    }
}

}  // namespace
}  // namespace tally
