#include "adapters/sqlite/sqlite_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <thread>

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

TEST(SqliteStoreTest, FailedWriteRollsBackEverything) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
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

TEST(SqliteStoreTest, AuditLogIsAppendOnly) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    ASSERT_TRUE(store->Write([&](StoreTx& tx) {
        return tx.audit().Append({0, CustomerId("cust_1"), Timestamp(1), "role_changed", "member", "professional", "event:evt_1", ""});
    }).ok());
    auto conn = sqlite::Connection::Open(db.path()).value();
    EXPECT_FALSE(conn->Exec("UPDATE audit_log SET after='member'").ok());
    EXPECT_FALSE(conn->Exec("DELETE FROM audit_log").ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        auto entries = tx.audit().List(CustomerId("cust_1"), 10);
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

TEST(SqliteStoreTest, IdempotencyKeysAndApiKeys) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
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

}  // namespace
}  // namespace tally

namespace tally {
namespace {

// Frames in the WAL, read through a connection of the test's own (a PASSIVE checkpoint reports them).
int WalFrames(const std::string& path) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    // Reading the schema first puts the connection in WAL mode; before that the checkpoint reports -1.
    EXPECT_EQ(sqlite3_exec(db, "SELECT COUNT(*) FROM sqlite_master", nullptr, nullptr, nullptr), SQLITE_OK);
    int log = -1;
    int done = -1;
    EXPECT_EQ(sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
    return log;
}

// The checkpointer copies the WAL in a quiet moment and restarts it under the store's own write and read locks.
// Readers and writers keep going on other threads meanwhile: nothing fails, nothing deadlocks, nothing is lost,
// and after the quiet moment the WAL starts over instead of growing.
TEST(SqliteStoreTest, QuietCheckpointRestartsTheWalBesideReadersAndWriters) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    std::atomic<bool> done{false};
    std::atomic<int> read_failures{0};
    std::atomic<int> reads{0};
    std::thread reader([&] {
        while (!done.load()) {
            Status s = store->Read([&](StoreTx& tx) -> Status {
                TALLY_ASSIGN_OR_RETURN(auto e, tx.inbox().Get(StripeEventId("evt_0")));
                (void)e;
                return {};
            });
            if (!s.ok()) read_failures.fetch_add(1);
            reads.fetch_add(1);
        }
    });
    const std::string body(3000, 'x');
    int n = 0;
    for (int burst = 0; burst < 4; ++burst) {
        for (int i = 0; i < 100; ++i, ++n) {
            InboxEvent e = Inbox("evt_" + std::to_string(n));
            e.payload = R"({"pad":")" + body + R"("})";
            auto inserted = store->AppendInbox({e});
            ASSERT_TRUE(inserted.ok()) << inserted.error().message;
        }
        // A quiet moment: no commit until the checkpointer has restarted the WAL (waited for, not timed; the
        // deadline only keeps a broken checkpointer from hanging the suite).
        const int64_t restarts = store->wal_restart_count();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (store->wal_restart_count() == restarts && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        ASSERT_GT(store->wal_restart_count(), restarts) << "no WAL restart in a quiet moment";
    }
    done = true;
    reader.join();
    EXPECT_EQ(read_failures.load(), 0);
    EXPECT_GT(reads.load(), 0);
    // One more commit after the restart: the WAL holds just that transaction's frames, not the 400 events before.
    ASSERT_TRUE(store->AppendInbox({Inbox("evt_last")}).ok());
    const int frames = WalFrames(db.path());
    EXPECT_GE(frames, 1);
    EXPECT_LT(frames, 20);
    int64_t found = 0;
    ASSERT_TRUE(store
                    ->Read([&](StoreTx& tx) -> Status {
                        for (int i = 0; i < n; ++i) {
                            TALLY_ASSIGN_OR_RETURN(auto e, tx.inbox().Get(StripeEventId("evt_" + std::to_string(i))));
                            found += e.has_value() ? 1 : 0;
                        }
                        return {};
                    })
                    .ok());
    EXPECT_EQ(found, n);
}

}  // namespace
}  // namespace tally
