#include "adapters/sqlite/sqlite_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
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

// The checkpointer writes the database file back through a descriptor it holds from open to close. One opened
// and closed per checkpoint dropped every POSIX lock this process held on the file (close(2) does that), so
// another process (here the sqlite3 shell, as `tally keys` in production) saw no other connection when it
// closed, checkpointed and deleted the WAL under the server: later reads failed with "database disk image is
// malformed" and missed that process's writes.
TEST(SqliteStoreTest, AnotherProcessWritingBesideACheckpointSeesTheStoreAndIsSeen) {
    TempDb db;
    auto store = sqlite::SqliteStore::Open(db.path()).value();
    // A reader of the test's own pins an old snapshot, so the checkpoint cannot catch up and writes the
    // database file back itself (the path that used to open and close its own descriptor).
    sqlite3* pin = nullptr;
    ASSERT_EQ(sqlite3_open_v2(db.path().c_str(), &pin, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(pin, "BEGIN; SELECT COUNT(*) FROM sqlite_master", nullptr, nullptr, nullptr), SQLITE_OK);
    const std::string body(3000, 'x');
    for (int i = 0; i < 120; ++i) {
        InboxEvent e = Inbox("evt_" + std::to_string(i));
        e.payload = R"({"pad":")" + body + R"("})";
        ASSERT_TRUE(store->AppendInbox({e}).ok());
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (store->database_sync_count() == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GT(store->database_sync_count(), 0) << "the checkpointer never wrote the database file back";
    ASSERT_EQ(sqlite3_exec(pin, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(pin);

    const std::string insert = "sqlite3 '" + db.path() +
                               "' \"INSERT INTO api_keys(id, hash, scope, created_at, name) "
                               "VALUES ('key_other_process', 'h', 'admin', 1, 'other')\"";
    ASSERT_EQ(std::system(insert.c_str()), 0);
    // The other process saw this one's connections, so it left the WAL alone.
    EXPECT_TRUE(std::filesystem::exists(db.path() + "-wal"));
    std::optional<ApiKeyRecord> key;
    ASSERT_TRUE(store
                    ->Read([&](StoreTx& tx) -> Status {
                        TALLY_ASSIGN_OR_RETURN(key, tx.keys().GetApiKey("key_other_process"));
                        return {};
                    })
                    .ok());
    ASSERT_TRUE(key.has_value());
    EXPECT_EQ(key->name, "other");
    // And this process goes on writing and reading what it wrote, all of it.
    ASSERT_TRUE(store->AppendInbox({Inbox("evt_after")}).ok());
    int64_t found = 0;
    ASSERT_TRUE(store
                    ->Read([&](StoreTx& tx) -> Status {
                        for (int i = 0; i < 120; ++i) {
                            TALLY_ASSIGN_OR_RETURN(auto e, tx.inbox().Get(StripeEventId("evt_" + std::to_string(i))));
                            found += e.has_value() ? 1 : 0;
                        }
                        TALLY_ASSIGN_OR_RETURN(auto last, tx.inbox().Get(StripeEventId("evt_after")));
                        found += last.has_value() ? 1 : 0;
                        return {};
                    })
                    .ok());
    EXPECT_EQ(found, 121);
}

}  // namespace
}  // namespace tally
