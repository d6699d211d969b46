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
