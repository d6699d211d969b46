// `tally db copy`: a SQLite database with something in every table, copied into PostgreSQL and read back through
// the Store port; identity sequences continue; a non-empty target or an old source is refused, leaving nothing.
#include "adapters/db_copy/db_copy.hpp"

#include <gtest/gtest.h>

#include "adapters/sqlite/migrations.hpp"
#include "test_store.hpp"

namespace tally {
namespace {

using testing::StoreKind;
using testing::TestStore;

const std::string kPayload = std::string("{\"id\":\"evt_1\"}\xff\x00raw", 20);

void Fill(Store& store) {
    InboxEvent e;
    e.id = StripeEventId("evt_1");
    e.type = "customer.created";
    e.created = Timestamp(10);
    e.payload = kPayload;  // the bytes as received, not necessarily text
    e.received_at = Timestamp(20);
    InboxEvent e2 = e;
    e2.id = StripeEventId("evt_2");
    ASSERT_TRUE(store.AppendInbox({e, e2}).ok());
    ASSERT_TRUE(store.Write([&](StoreTx& tx) -> Status {
        CustomerRecord c;
        c.id = CustomerId("cust_1");
        c.external_id = "user_1";
        c.email = "ada@example.com";
        c.stripe_customer_id = StripeCustomerId("cus_1");
        c.role = "professional";
        c.plan_id = "pro";
        c.created_at = Timestamp(100);
        c.stripe_stamp = EventStamp{10, 2, "evt_1", true};
        c.role_override = RoleOverride{"enterprise", "partner", Timestamp(900), Timestamp(100)};
        c.role_check_at = Timestamp(900);
        TALLY_TRY(tx.customers().Insert(c));
        SubscriptionRecord s;
        s.id = StripeSubscriptionId("sub_1");
        s.customer = StripeCustomerId("cus_1");
        s.status = SubscriptionStatus::kActive;
        s.price_lookup_key = "pro_monthly";
        s.plan_id = "pro";
        s.unit_amount_minor = 6000;
        s.currency = "usd";
        s.cancel_at_period_end = true;
        s.trial_end = Timestamp(50);
        s.stamp = EventStamp{10, 1, "evt_1", false};
        TALLY_TRY(tx.billing().UpsertSubscription(s));
        TALLY_TRY(tx.billing().UpsertInvoice({"in_1", StripeCustomerId("cus_1"), "sub_1", "paid", 6000, 6000, "usd",
                                              EventStamp{10, 1, "evt_1", false}}));
        TALLY_TRY(tx.billing().InsertPaymentAttempt({"evt_1", "in_1", "sub_1", Timestamp(10), true}));
        TALLY_TRY(tx.billing().UpsertPayment({"ch_1", "charge", StripeCustomerId("cus_1"), 6000, 100, "usd",
                                              "succeeded", EventStamp{10, 1, "evt_1", false}}));
        for (int i = 0; i < 3; ++i) {
            TALLY_TRY(tx.audit().Append({0, CustomerId("cust_1"), Timestamp(100 + i), "role_changed", "member",
                                         "professional", "event:evt_1", "n=" + std::to_string(i)}));
        }
        TALLY_TRY(tx.keys().InsertApiKey({"key_1", "abc", "admin", Timestamp(1), "ci", Timestamp(5), std::nullopt}));
        TALLY_TRY(tx.keys().InsertIdempotency(
            {"key_1", "k1", "h1", IdempotencyState::kDone, 201, R"({"id":"cust_1"})", Timestamp(1), std::nullopt}));
        TALLY_TRY(tx.events().InsertEndpoint({"we_1", "http://127.0.0.1:9/x", "app", {"*"}, false, "", "whsec_a",
                                              "whsec_old", 777, std::nullopt, 1}));
        TALLY_ASSIGN_OR_RETURN(auto seq, tx.events().NextObjectSequence("cust_1"));
        TALLY_ASSIGN_OR_RETURN(auto event_seq, tx.events().InsertEvent({0, "evt_app_1", "customer.created", 1000,
                                                                        "cust_1", seq, "cust_1", R"({"id":"evt_app_1"})"}));
        DeliveryRecord d;
        d.event_seq = event_seq;
        d.event_id = "evt_app_1";
        d.endpoint_id = "we_1";
        d.object_id = "cust_1";
        d.next_attempt_ms = 1000;
        d.event_created_ms = 1000;
        TALLY_ASSIGN_OR_RETURN(auto delivery, tx.events().InsertDelivery(d));
        return tx.events().InsertDeliveryAttempt({0, delivery, "we_1", "evt_app_1", 1001, 500, 12, "HTTP 500"});
    }).ok());
}

TEST(DbCopyTest, EveryTableArrivesAndTheStoreReadsItBackAsWritten) {
    TestStore source(StoreKind::kSqlite);
    {
        auto store = source.Open();
        Fill(*store);
    }
    TestStore target(StoreKind::kPostgres);
    auto copied = db_copy::CopySqliteToPostgres(source.url(), target.url());
    ASSERT_TRUE(copied.ok()) << copied.error().message;
    int64_t rows = 0;
    for (const auto& t : *copied) rows += t.rows;
    EXPECT_EQ(rows, 2 + 1 + 1 + 1 + 1 + 1 + 3 + 1 + 1 + 1 + 1 + 1 + 1 + 1);

    auto store = target.Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto c = tx.customers().FindByStripeId(StripeCustomerId("cus_1")).value();
        EXPECT_EQ(c->external_id, "user_1");
        EXPECT_EQ(c->role_override->role, "enterprise");
        EXPECT_EQ(c->role_override->expires_at->unix_seconds(), 900);
        EXPECT_TRUE(c->stripe_stamp->terminal);
        auto s = tx.billing().GetSubscription(StripeSubscriptionId("sub_1")).value();
        EXPECT_TRUE(s->cancel_at_period_end);
        EXPECT_EQ(s->unit_amount_minor, 6000);
        EXPECT_EQ(s->trial_end->unix_seconds(), 50);
        EXPECT_TRUE(tx.billing().ListPaymentAttempts("sub_1")->front().succeeded);
        EXPECT_EQ((*tx.billing().GetPayment("ch_1"))->amount_refunded_minor, 100);
        auto audit = tx.audit().List(CustomerId("cust_1"), 10).value();
        EXPECT_EQ(audit.size(), 3u);
        EXPECT_EQ(audit.front().detail, "n=2");
        EXPECT_EQ(*tx.inbox().GetPayload(StripeEventId("evt_1")).value(), kPayload) << "payload bytes unchanged";
        EXPECT_LT(*tx.inbox().GetSequence(StripeEventId("evt_1")).value(),
                  *tx.inbox().GetSequence(StripeEventId("evt_2")).value());
        EXPECT_EQ((*tx.keys().FindApiKeyByHash("abc"))->name, "ci");
        EXPECT_EQ((*tx.keys().GetIdempotency("key_1", "k1"))->status, 201);
        auto endpoint = tx.events().GetEndpoint("we_1").value();
        EXPECT_EQ(endpoint->previous_secret_expires_ms, 777);
        EXPECT_EQ(tx.events().ListDeliveryAttempts("we_1", std::nullopt, 10)->front().error, "HTTP 500");
        EXPECT_EQ(tx.events().CountPendingDeliveries().value(), 1);
        return {};
    }).ok());
    // New rows continue after the copied ones: ids, sequences, per-object event numbers.
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(tx.audit().Append({0, CustomerId("cust_1"), Timestamp(200), "role_changed", "professional", "member",
                                     "admin:x", "after"}));
        auto audit = tx.audit().List(CustomerId("cust_1"), 1).value();
        EXPECT_EQ(audit.front().detail, "after");
        EXPECT_GT(audit.front().id, 3);
        EXPECT_EQ(tx.events().NextObjectSequence("cust_1").value(), 2);
        return {};
    }).ok());
    InboxEvent e3;
    e3.id = StripeEventId("evt_3");
    e3.type = "customer.updated";
    e3.payload = "{}";
    ASSERT_TRUE(store->AppendInbox({e3}).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_GT(*tx.inbox().GetSequence(StripeEventId("evt_3")).value(),
                  *tx.inbox().GetSequence(StripeEventId("evt_2")).value());
        return {};
    }).ok());

    // The same copy again: the target is no longer empty, and nothing more is written.
    auto again = db_copy::CopySqliteToPostgres(source.url(), target.url());
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, ErrorCode::kConflict);
    EXPECT_EQ(target.Connect()->QueryValue("SELECT COUNT(*) FROM audit_log").value(), "4");
}

TEST(DbCopyTest, ASourceAtAnOlderSchemaOrMissingIsRefused) {
    TestStore old(StoreKind::kSqlite);
    {
        auto conn = sqlite::Connection::Open(old.url()).value();
        ASSERT_EQ(*sqlite::Migrate(conn->raw(), 3), 3);
    }
    TestStore target(StoreKind::kPostgres);
    auto refused = db_copy::CopySqliteToPostgres(old.url(), target.url());
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(refused.error().message.find("tally migrate"), std::string::npos) << refused.error().message;
    auto missing = db_copy::CopySqliteToPostgres("/nonexistent/tally.db", target.url());
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace tally
