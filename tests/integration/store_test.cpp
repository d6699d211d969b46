// The Store port's contract, run against SQLite and PostgreSQL alike.
#include "app/store.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "adapters/postgres/migrations.hpp"
#include "test_store.hpp"

namespace tally {
namespace {

using testing::StoreKind;
using testing::TestStore;

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

class StoreTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, testing::kBothStores, testing::StoreKindName);

TEST_P(StoreTest, CustomersRoundTripAndExternalIdIsUnique) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    CustomerRecord c = Customer("cust_1", "user_1");
    c.stripe_customer_id = StripeCustomerId("cus_1");
    c.role_override = RoleOverride{"professional", "partner", Timestamp(500), Timestamp(100)};
    c.stripe_stamp = EventStamp{10, 1, "evt_1", false};
    c.role_check_at = Timestamp(500);
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.customers().Insert(c); }).ok());
    Status dup = store->Write([&](StoreTx& tx) { return tx.customers().Insert(Customer("cust_2", "user_1")); });
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.error().code, ErrorCode::kConflict);
    // Empty external ids do not collide.
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.customers().Insert(Customer("cust_3", "")); }).ok());
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.customers().Insert(Customer("cust_4", "")); }).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto by_stripe = tx.customers().FindByStripeId(StripeCustomerId("cus_1"));
        EXPECT_TRUE(by_stripe.ok() && by_stripe->has_value());
        const CustomerRecord& got = **by_stripe;
        EXPECT_EQ(got.external_id, "user_1");
        EXPECT_EQ(got.role_override->reason, "partner");
        EXPECT_EQ(got.role_override->expires_at->unix_seconds(), 500);
        EXPECT_EQ(got.stripe_stamp->event_id, "evt_1");
        auto due = tx.customers().ListDueForRoleCheck(Timestamp(499), 10);
        EXPECT_TRUE(due->empty());
        due = tx.customers().ListDueForRoleCheck(Timestamp(500), 10);
        EXPECT_EQ(due->size(), 1u);
        return {};
    }).ok());
}

TEST_P(StoreTest, FailedWriteRollsBackEverything) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    Status s = store->Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(tx.customers().Insert(Customer("cust_1", "user_1")));
        return InvalidArgument("boom");
    });
    ASSERT_FALSE(s.ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_FALSE(tx.customers().Get(CustomerId("cust_1"))->has_value());
        return {};
    }).ok());
}

TEST_P(StoreTest, AuditLogIsAppendOnly) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Write([&](StoreTx& tx) {
        return tx.audit().Append({0, CustomerId("cust_1"), Timestamp(1), "role_changed", "member", "professional", "event:evt_1", ""});
    }).ok());
    // Refused by the schema itself, whoever connects: SQLite triggers, a PostgreSQL trigger function.
    if (db.kind() == StoreKind::kSqlite) {
        auto conn = sqlite::Connection::Open(db.url()).value();
        EXPECT_FALSE(conn->Exec("UPDATE audit_log SET after='member'").ok());
        EXPECT_FALSE(conn->Exec("DELETE FROM audit_log").ok());
    } else {
        auto conn = db.Connect();
        EXPECT_FALSE(conn->Exec("UPDATE audit_log SET after='member'").ok());
        EXPECT_FALSE(conn->Exec("DELETE FROM audit_log").ok());
        EXPECT_FALSE(conn->Exec("TRUNCATE audit_log").ok());
    }
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto entries = tx.audit().List(CustomerId("cust_1"), 10);
        EXPECT_EQ(entries->size(), 1u);
        EXPECT_EQ(entries->front().after, "professional");
        return {};
    }).ok());
}

TEST_P(StoreTest, InboxDeduplicatesWithinAndAcrossBatchesAndSurvivesReopen) {
    TestStore db(GetParam());
    {
        auto store = db.Open();
        auto first = store->AppendInbox({Inbox("evt_a"), Inbox("evt_b"), Inbox("evt_a")});
        ASSERT_TRUE(first.ok());
        EXPECT_EQ(*first, (std::vector<bool>{true, true, false}));
        auto second = store->AppendInbox({Inbox("evt_b"), Inbox("evt_c")});
        EXPECT_EQ(*second, (std::vector<bool>{false, true}));
    }
    auto store = db.Open();
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto due = tx.inbox().ListDue(Timestamp(20), 100);
        EXPECT_EQ(due->size(), 3u);
        auto pending = tx.inbox().List(InboxStatus::kPending, 100);
        EXPECT_EQ(pending->size(), 3u);
        auto a = tx.inbox().Get(StripeEventId("evt_a"));
        EXPECT_EQ(*tx.inbox().GetPayload(StripeEventId("evt_a")).value(), R"({"id":"evt_a"})");
        EXPECT_FALSE(tx.inbox().GetPayload(StripeEventId("evt_zz")).value().has_value());
        EXPECT_EQ((*a)->next_attempt_at->unix_seconds(), 20);
        return {};
    }).ok());
}

TEST_P(StoreTest, IdempotencyKeysAndApiKeys) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    const IdempotencyRecord claim{"key_1", "k1", "h1", IdempotencyState::kInFlight, 0, "", Timestamp(1), Timestamp(121)};
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(tx.keys().InsertIdempotency(claim));
        // The same Idempotency-Key under another API key is another record.
        TALLY_TRY(tx.keys().InsertIdempotency({"key_2", "k1", "h9", IdempotencyState::kDone, 200, "{}", Timestamp(1), {}}));
        return tx.keys().InsertApiKey({"key_1", "abc", "admin", Timestamp(1), "ci", std::nullopt, std::nullopt});
    }).ok());
    // (API key, Idempotency-Key) is unique: a second claim is a conflict, and nothing of it is written.
    auto twin = store->Write([&](StoreTx& tx) { return tx.keys().InsertIdempotency(claim); });
    ASSERT_FALSE(twin.ok());
    EXPECT_EQ(twin.error().code, ErrorCode::kConflict);
    // Finishing is fenced on the claim: a stale holder (another locked_until) writes nothing.
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        const IdempotencyRecord done{"key_1", "k1", "h1", IdempotencyState::kDone, 201, R"({"id":1})", Timestamp(1), {}};
        EXPECT_FALSE(tx.keys().FinishIdempotencyClaim(done, Timestamp(999)).value());
        EXPECT_TRUE(tx.keys().FinishIdempotencyClaim(done, Timestamp(121)).value());
        return {};
    }).ok());
    ASSERT_TRUE(store->Write([&](StoreTx& tx) {
        return tx.keys().UpdateApiKey({"key_1", "", "", Timestamp(0), "", Timestamp(50), Timestamp(60)});
    }).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto done = tx.keys().GetIdempotency("key_1", "k1").value();
        EXPECT_EQ(done->state, IdempotencyState::kDone);
        EXPECT_EQ(done->status, 201);
        EXPECT_EQ(done->response_body, R"({"id":1})");
        EXPECT_FALSE(done->locked_until.has_value());
        EXPECT_EQ((*tx.keys().GetIdempotency("key_2", "k1"))->request_hash, "h9");
        EXPECT_FALSE(tx.keys().GetIdempotency("key_3", "k1")->has_value());
        auto key = tx.keys().FindApiKeyByHash("abc").value();
        EXPECT_EQ(key->id, "key_1");
        EXPECT_EQ(key->name, "ci");
        EXPECT_EQ(key->last_used_at->unix_seconds(), 50);
        EXPECT_EQ(key->revoked_at->unix_seconds(), 60);
        EXPECT_FALSE(tx.keys().FindApiKeyByHash("nope")->has_value());
        EXPECT_EQ(tx.keys().ListApiKeys()->size(), 1u);
        return {};
    }).ok());
    // Revocation is set once: a later update does not move it.
    ASSERT_TRUE(store->Write([&](StoreTx& tx) {
        return tx.keys().UpdateApiKey({"key_1", "", "", Timestamp(0), "", std::nullopt, Timestamp(99)});
    }).ok());
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        EXPECT_EQ((*tx.keys().GetApiKey("key_1"))->revoked_at->unix_seconds(), 60);
        EXPECT_EQ(tx.keys().PruneIdempotency(Timestamp(2)).value(), 2);
        EXPECT_FALSE(tx.keys().GetIdempotency("key_1", "k1")->has_value());
        return {};
    }).ok());
    EXPECT_TRUE(store->Ping().ok());
}

// A conflict the use case handles (an insert of a taken id, reported as kConflict) leaves the transaction usable
// on both stores: PostgreSQL would abort the whole transaction on a failed statement, so its adapter must not let
// one fail.
TEST_P(StoreTest, AHandledConflictLeavesTheTransactionUsable) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.customers().Insert(Customer("cust_1", "user_1")); }).ok());
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        Status taken = tx.customers().Insert(Customer("cust_2", "user_1"));
        EXPECT_EQ(taken.error().code, ErrorCode::kConflict);
        Status twin = tx.keys().InsertIdempotency({"key_1", "k", "h", IdempotencyState::kDone, 200, "{}", Timestamp(1), {}});
        EXPECT_TRUE(twin.ok());
        twin = tx.keys().InsertIdempotency({"key_1", "k", "h", IdempotencyState::kDone, 200, "{}", Timestamp(1), {}});
        EXPECT_EQ(twin.error().code, ErrorCode::kConflict);
        return tx.customers().Insert(Customer("cust_3", "user_3"));
    }).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_TRUE(tx.customers().Get(CustomerId("cust_3"))->has_value());
        EXPECT_FALSE(tx.customers().Get(CustomerId("cust_2"))->has_value());
        EXPECT_TRUE(tx.keys().GetIdempotency("key_1", "k")->has_value());
        return {};
    }).ok());
}

// A lookup by text no row can hold (not UTF-8, or with a NUL byte) finds nothing on either store; PostgreSQL, which
// cannot store such text, refuses to write it with kInvalidArgument and the transaction goes on.
TEST_P(StoreTest, TextThatIsNotUtf8FindsNothing) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        EXPECT_FALSE(tx.customers().Get(CustomerId("cust_\xff\xfe"))->has_value());
        EXPECT_FALSE(tx.customers().FindByExternalId(std::string("user\0x", 6))->has_value());
        EXPECT_FALSE(tx.inbox().GetPayload(StripeEventId("evt_\xc0\x80")).value().has_value());
        EXPECT_TRUE(tx.audit().List(CustomerId("cust_\xed\xa0\x80"), 10)->empty());
        if (db.kind() == StoreKind::kPostgres) {
            Status refused = tx.customers().Insert(Customer("cust_\xff", "u"));
            EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
        }
        return tx.customers().Insert(Customer("cust_ok", "ok"));
    }).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_TRUE(tx.customers().Get(CustomerId("cust_ok"))->has_value());
        return {};
    }).ok());
}

// Writes behave as if each ran alone: read-modify-write from several threads loses no update (SQLite runs them
// one at a time; PostgreSQL runs them at SERIALIZABLE and reruns the ones that lose a conflict).
TEST_P(StoreTest, ConcurrentReadModifyWritesLoseNoUpdate) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.customers().Insert(Customer("cust_n", "n")); }).ok());
    constexpr int kThreads = 4;
    constexpr int kEach = 40;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < kEach; ++i) {
                Status s = store->Write([&](StoreTx& tx) -> Status {
                    TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(CustomerId("cust_n")));
                    c->created_at = c->created_at.PlusSeconds(1);
                    return tx.customers().Update(*c);
                });
                if (!s.ok()) failures.fetch_add(1);
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(failures.load(), 0);
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_EQ((*tx.customers().Get(CustomerId("cust_n")))->created_at.unix_seconds(), 100 + kThreads * kEach);
        return {};
    }).ok());
}

// A Read is one snapshot: a write committed while it runs is not half-seen.
TEST_P(StoreTest, AReadSeesOneSnapshot) {
    TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.customers().Insert(Customer("cust_s", "s")); }).ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_EQ((*tx.customers().Get(CustomerId("cust_s")))->email, "");
        std::thread writer([&] {
            EXPECT_TRUE(store->Write([&](StoreTx& w) -> Status {
                TALLY_ASSIGN_OR_RETURN(auto c, w.customers().Get(CustomerId("cust_s")));
                c->email = "s@example.com";
                return w.customers().Update(*c);
            }).ok());
        });
        writer.join();
        EXPECT_EQ((*tx.customers().Get(CustomerId("cust_s")))->email, "");
        return {};
    }).ok());
}

// Two nodes' workers on one database: what one transaction holds, the other skips instead of applying it twice.
TEST(PostgresStoreTest, EventsAndCustomersHeldByOneTransactionAreSkippedByAnother) {
    TestStore db(StoreKind::kPostgres);
    auto store = db.Open();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->AppendInbox({Inbox("evt_1"), Inbox("evt_2"), Inbox("evt_3")}).ok());
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        for (const char* id : {"cust_a", "cust_b"}) {
            CustomerRecord c = Customer(id, id);
            c.role_check_at = Timestamp(50);
            TALLY_TRY(tx.customers().Insert(c));
        }
        return {};
    }).ok());
    std::mutex mu;
    std::condition_variable cv;
    bool holding = false;
    bool release = false;
    std::thread first([&] {
        EXPECT_TRUE(store->Write([&](StoreTx& tx) -> Status {
            auto mine = tx.inbox().LockForProcessing({StripeEventId("evt_1"), StripeEventId("evt_2")});
            EXPECT_EQ(*mine, (std::vector<bool>{true, true}));
            auto due = tx.customers().ClaimDueForRoleCheck(Timestamp(100), 1);
            EXPECT_EQ(due->size(), 1u);
            std::unique_lock lock(mu);
            holding = true;
            cv.notify_all();
            cv.wait(lock, [&] { return release; });
            return {};
        }).ok());
    });
    {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return holding; });
    }
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        auto mine = tx.inbox().LockForProcessing(
            {StripeEventId("evt_1"), StripeEventId("evt_2"), StripeEventId("evt_3"), StripeEventId("evt_none")});
        EXPECT_EQ(*mine, (std::vector<bool>{false, false, true, false}));
        auto due = tx.customers().ClaimDueForRoleCheck(Timestamp(100), 10);
        EXPECT_EQ(due->size(), 1u) << "the customer the other sweep holds is skipped";
        return {};
    }).ok());
    {
        std::lock_guard lock(mu);
        release = true;
        cv.notify_all();
    }
    first.join();
}

TEST(PostgresStoreTest, MigrationsAreIdempotentConcurrentAndRefuseNewerSchemas) {
    TestStore db(StoreKind::kPostgres);
    // Several nodes starting at once: the advisory lock makes them migrate one at a time.
    std::vector<std::thread> nodes;
    std::atomic<int> failures{0};
    for (int i = 0; i < 3; ++i) {
        nodes.emplace_back([&] {
            if (!db.Open()) failures.fetch_add(1);
        });
    }
    for (auto& t : nodes) t.join();
    EXPECT_EQ(failures.load(), 0);
    auto conn = db.Connect();
    EXPECT_EQ(*postgres::Migrate(*conn), 0);
    EXPECT_EQ(conn->QueryValue("SELECT COUNT(*) FROM schema_migrations").value(),
              std::to_string(postgres::LatestSchemaVersion()));
    ASSERT_TRUE(conn->Exec("INSERT INTO schema_migrations VALUES (999, 0)").ok());
    auto newer = postgres::Migrate(*conn);
    ASSERT_FALSE(newer.ok());
    EXPECT_EQ(newer.error().code, ErrorCode::kConflict);
}

TEST(PostgresStoreTest, BadUrlsAndUnreachableServersAreClearErrorsWithoutThePassword) {
    auto bad = postgres::PostgresStore::Open("postgresql://tally:s3cret@127.0.0.1:5432/db?sslmode=nonsense");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().message.find("s3cret"), std::string::npos) << bad.error().message;
    // Port 1 on loopback: nothing listens there.
    auto unreachable = postgres::PostgresStore::Open("postgresql://tally:s3cret@127.0.0.1:1/db");
    ASSERT_FALSE(unreachable.ok());
    EXPECT_EQ(unreachable.error().code, ErrorCode::kUnavailable);
    EXPECT_NE(unreachable.error().message.find("127.0.0.1"), std::string::npos) << unreachable.error().message;
    EXPECT_EQ(unreachable.error().message.find("s3cret"), std::string::npos) << unreachable.error().message;
    std::string url = testing::TestPostgresUrl();
    url.replace(url.find("postgres@"), 9, "nobody_here@");
    auto wrong_user = postgres::PostgresStore::Open(url);
    ASSERT_FALSE(wrong_user.ok());
    EXPECT_NE(wrong_user.error().message.find("nobody_here"), std::string::npos) << wrong_user.error().message;
    EXPECT_EQ(postgres::RedactUrl("postgresql://u:pw@h/db"), "postgresql://u:***@h/db");
    EXPECT_EQ(postgres::RedactUrl("postgresql://h/db?user=u&password=pw&x=1"), "postgresql://h/db?user=u&password=***&x=1");
}

}  // namespace
}  // namespace tally
