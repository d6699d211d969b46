#include "adapters/sqlite/sqlite_store.hpp"

#include <gtest/gtest.h>

#include "adapters/sqlite/migrations.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::TempDb;

CustomerRecord Customer(const std::string& id, const std::string& external_id) {
    CustomerRecord c;
    c.id = CustomerId(id);
    c.external_id = external_id;
    c.role = "member";
    c.plan_id = "free";
    c.created_at = Timestamp(100);
    return c;
}

InboxEvent Inbox(const std::string& id) {
    InboxEvent e;
    e.id = StripeEventId(id);
    e.type = "customer.created";
    e.created = Timestamp(10);
    e.payload = R"({"id":")" + id + R"("})";
    e.received_at = Timestamp(20);
    return e;
}

TEST(SqliteStoreTest, MigrationsAreIdempotentAndRefuseNewerSchemas) {
    TempDb db;
    { ASSERT_TRUE(sqlite::SqliteStore::Open(db.path()).ok()); }
    auto conn = sqlite::Connection::Open(db.path());
    ASSERT_TRUE(conn.ok());
    EXPECT_EQ(*sqlite::Migrate((*conn)->raw()), 0);  // nothing left to apply
    ASSERT_TRUE((*conn)->Exec("INSERT INTO schema_migrations VALUES (999, 0)").ok());
    auto newer = sqlite::Migrate((*conn)->raw());
    ASSERT_FALSE(newer.ok());
    EXPECT_EQ(newer.error().code, ErrorCode::kConflict);
}

TEST(SqliteStoreTest, CustomersRoundTripAndExternalIdIsUnique) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    CustomerRecord c = Customer("cust_1", "user_1");
    c.stripe_customer_id = StripeCustomerId("cus_1");
    c.role_override = RoleOverride{"professional", "partner", Timestamp(500), Timestamp(100)};
    c.stripe_stamp = EventStamp{10, 1, "evt_1", false};
    c.role_check_at = Timestamp(500);
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.InsertCustomer(c); }).ok());
    Status dup = store->Write([&](StoreTx& tx) { return tx.InsertCustomer(Customer("cust_2", "user_1")); });
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.error().code, ErrorCode::kConflict);
    // Empty external ids do not collide.
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.InsertCustomer(Customer("cust_3", "")); }).ok());
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.InsertCustomer(Customer("cust_4", "")); }).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto by_stripe = tx.FindCustomerByStripeId(StripeCustomerId("cus_1"));
        EXPECT_TRUE(by_stripe.ok() && by_stripe->has_value());
        const CustomerRecord& got = **by_stripe;
        EXPECT_EQ(got.external_id, "user_1");
        EXPECT_EQ(got.role_override->reason, "partner");
        EXPECT_EQ(got.role_override->expires_at->unix_seconds(), 500);
        EXPECT_EQ(got.stripe_stamp->event_id, "evt_1");
        auto due = tx.ListCustomersDueForRoleCheck(Timestamp(499), 10);
        EXPECT_TRUE(due->empty());
        due = tx.ListCustomersDueForRoleCheck(Timestamp(500), 10);
        EXPECT_EQ(due->size(), 1u);
        return {};
    }).ok());
}

TEST(SqliteStoreTest, FailedWriteRollsBackEverything) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    Status s = store->Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(tx.InsertCustomer(Customer("cust_1", "user_1")));
        return InvalidArgument("boom");
    });
    ASSERT_FALSE(s.ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_FALSE(tx.GetCustomer(CustomerId("cust_1"))->has_value());
        return {};
    }).ok());
}

TEST(SqliteStoreTest, AuditLogIsAppendOnly) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    ASSERT_TRUE(store->Write([&](StoreTx& tx) {
        return tx.AppendAudit({0, CustomerId("cust_1"), Timestamp(1), "role_changed", "member", "professional", "event:evt_1", ""});
    }).ok());
    auto conn = sqlite::Connection::Open(db.path()).value();
    EXPECT_FALSE(conn->Exec("UPDATE audit_log SET after='member'").ok());
    EXPECT_FALSE(conn->Exec("DELETE FROM audit_log").ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto entries = tx.ListAudit(CustomerId("cust_1"), 10);
        EXPECT_EQ(entries->size(), 1u);
        EXPECT_EQ(entries->front().after, "professional");
        return {};
    }).ok());
}

TEST(SqliteStoreTest, InboxDeduplicatesWithinAndAcrossBatchesAndSurvivesReopen) {
    TempDb db;
    {
        auto store = sqlite::SqliteStore::Open(db.path()).value();
        auto first = store->AppendInbox({Inbox("evt_a"), Inbox("evt_b"), Inbox("evt_a")});
        ASSERT_TRUE(first.ok());
        EXPECT_EQ(*first, (std::vector<bool>{true, true, false}));
        auto second = store->AppendInbox({Inbox("evt_b"), Inbox("evt_c")});
        EXPECT_EQ(*second, (std::vector<bool>{false, true}));
    }
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto due = tx.ListDueInbox(Timestamp(20), 100);
        EXPECT_EQ(due->size(), 3u);
        auto pending = tx.ListInbox(InboxStatus::kPending, 100);
        EXPECT_EQ(pending->size(), 3u);
        auto a = tx.GetInboxEvent(StripeEventId("evt_a"));
        EXPECT_EQ(*tx.GetInboxPayload(StripeEventId("evt_a")).value(), R"({"id":"evt_a"})");
        EXPECT_FALSE(tx.GetInboxPayload(StripeEventId("evt_zz")).value().has_value());
        EXPECT_EQ((*a)->next_attempt_at->unix_seconds(), 20);
        return {};
    }).ok());
}

TEST(SqliteStoreTest, IdempotencyKeysAndApiKeys) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(tx.PutIdempotency({"k1", "h1", 201, "{}", Timestamp(1)}));
        return tx.InsertApiKey({"key_1", "abc", "admin", Timestamp(1)});
    }).ok());
    EXPECT_FALSE(store->Write([&](StoreTx& tx) { return tx.PutIdempotency({"k1", "h2", 200, "{}", Timestamp(2)}); }).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_EQ((*tx.GetIdempotency("k1"))->request_hash, "h1");
        EXPECT_EQ((*tx.FindApiKeyByHash("abc"))->id, "key_1");
        EXPECT_FALSE(tx.FindApiKeyByHash("nope")->has_value());
        return {};
    }).ok());
    EXPECT_TRUE(store->Ping().ok());
}

}  // namespace
}  // namespace tally
