// The events aggregate on real SQLite: the outbox's delivery lines (one delivery per endpoint and object at a time,
// in the order deliveries were made), the next-due lookup the dispatcher sleeps on, and migration 4's backfill of
// each delivery's predecessor.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

#include "adapters/sqlite/migrations.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::TempDb;

DeliveryRecord Delivery(int64_t event_seq, const std::string& endpoint, const std::string& object, int64_t due_ms) {
    DeliveryRecord d;
    d.event_seq = event_seq;
    d.event_id = "evt_" + std::to_string(event_seq);
    d.endpoint_id = endpoint;
    d.object_id = object;
    d.next_attempt_ms = due_ms;
    d.event_created_ms = due_ms;
    return d;
}

std::vector<int64_t> Ids(const std::vector<DeliveryRecord>& deliveries) {
    std::vector<int64_t> ids;
    for (const auto& d : deliveries) ids.push_back(d.id);
    return ids;
}

class EventStoreTest : public ::testing::TestWithParam<testing::StoreKind> {
protected:
    void SetUp() override {
        store_ = db_.Open();
        ASSERT_TRUE(store_);
    }

    std::vector<int64_t> Insert(const std::vector<DeliveryRecord>& deliveries) {
        std::vector<int64_t> ids;
        EXPECT_TRUE(store_->Write([&](StoreTx& tx) -> Status {
            ids.clear();
            for (const auto& d : deliveries) {
                TALLY_ASSIGN_OR_RETURN(auto id, tx.events().InsertDelivery(d));
                ids.push_back(id);
            }
            return {};
        }).ok());
        return ids;
    }
    std::vector<int64_t> Claim(const std::string& endpoint, int64_t now_ms, int limit = 10) {
        std::vector<DeliveryRecord> claimed;
        EXPECT_TRUE(store_->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(claimed, tx.events().ClaimDueDeliveries(endpoint, now_ms, now_ms + 30000, limit));
            return {};
        }).ok());
        return Ids(claimed);
    }
    void Finish(int64_t id, DeliveryState state) {
        ASSERT_TRUE(store_->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto d, tx.events().GetDelivery(id));
            EXPECT_TRUE(d.has_value());
            if (!d) return {};
            d->state = state;
            d->lease_until_ms.reset();
            return tx.events().UpdateDelivery(*d);
        }).ok());
    }
    void Retry(int64_t id, int64_t due_ms) {
        ASSERT_TRUE(store_->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto d, tx.events().GetDelivery(id));
            d->attempts += 1;
            d->next_attempt_ms = due_ms;
            d->lease_until_ms.reset();
            return tx.events().UpdateDelivery(*d);
        }).ok());
    }
    std::optional<int64_t> NextDue(const std::string& endpoint, int64_t after_ms) {
        std::optional<int64_t> due;
        EXPECT_TRUE(store_->Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(due, tx.events().NextDeliveryDueMs(endpoint, after_ms));
            return {};
        }).ok());
        return due;
    }

    testing::TestStore db_{GetParam()};
    std::unique_ptr<Store> store_;
};
INSTANTIATE_TEST_SUITE_P(Stores, EventStoreTest, testing::kBothStores, testing::StoreKindName);

TEST_P(EventStoreTest, OnlyTheHeadOfEachEndpointObjectLineIsClaimed) {
    const auto ids = Insert({Delivery(1, "we_1", "cust_a", 100), Delivery(2, "we_1", "cust_a", 100),
                             Delivery(3, "we_1", "cust_b", 100), Delivery(4, "we_2", "cust_a", 100),
                             Delivery(5, "we_1", "cust_a", 100)});
    // cust_a's first delivery and cust_b's to we_1; we_2 has a line of its own.
    EXPECT_EQ(Claim("we_1", 200), (std::vector<int64_t>{ids[0], ids[2]}));
    EXPECT_EQ(Claim("we_2", 200), (std::vector<int64_t>{ids[3]}));
    EXPECT_TRUE(Claim("we_1", 200).empty()) << "claimed ones are leased; the rest wait behind them";
    // A retry keeps its place: the line waits while its head is pending, however late it is due.
    Retry(ids[0], 5000);
    EXPECT_TRUE(Claim("we_1", 200).empty());
    EXPECT_EQ(Claim("we_1", 5000), (std::vector<int64_t>{ids[0]}));
    Finish(ids[0], DeliveryState::kDelivered);
    EXPECT_EQ(Claim("we_1", 5000), (std::vector<int64_t>{ids[1]}));
    // A delivery given up on (failed after the retry window) lets the next one go.
    Finish(ids[1], DeliveryState::kFailed);
    EXPECT_EQ(Claim("we_1", 5000), (std::vector<int64_t>{ids[4]}));
}

TEST_P(EventStoreTest, ARedeliveryOfAnOlderEventGoesAfterWhatIsQueued) {
    const auto first = Insert({Delivery(1, "we_1", "cust_a", 100), Delivery(2, "we_1", "cust_a", 100)});
    Finish(first[0], DeliveryState::kDelivered);
    // The app asks for event 1 again while event 2 is still pending: it is sent after event 2, not before.
    const auto again = Insert({Delivery(1, "we_1", "cust_a", 150)});
    EXPECT_EQ(Claim("we_1", 200), (std::vector<int64_t>{first[1]}));
    Finish(first[1], DeliveryState::kDelivered);
    EXPECT_EQ(Claim("we_1", 200), (std::vector<int64_t>{again[0]}));
}

TEST_P(EventStoreTest, ClaimsAreEarliestDueFirstAndBoundedByTheLimit) {
    const auto ids = Insert({Delivery(1, "we_1", "cust_a", 300), Delivery(2, "we_1", "cust_b", 100),
                             Delivery(3, "we_1", "cust_c", 200), Delivery(4, "we_1", "cust_d", 900)});
    EXPECT_EQ(Claim("we_1", 500, 2), (std::vector<int64_t>{ids[1], ids[2]}));
    EXPECT_EQ(Claim("we_1", 500, 2), (std::vector<int64_t>{ids[0]})) << "cust_d is not due until 900";
}

TEST_P(EventStoreTest, NextDueIsTheEarliestPendingDeliveryDueLater) {
    EXPECT_EQ(NextDue("we_1", 0), std::nullopt);
    const auto ids = Insert({Delivery(1, "we_1", "cust_a", 100), Delivery(2, "we_1", "cust_b", 700),
                             Delivery(3, "we_1", "cust_c", 400), Delivery(4, "we_2", "cust_a", 50)});
    EXPECT_EQ(NextDue("we_1", 0), 100);
    EXPECT_EQ(NextDue("we_1", 100), 400) << "what is due already is not looked at";
    EXPECT_EQ(NextDue("we_2", 0), 50);
    Finish(ids[2], DeliveryState::kDelivered);
    EXPECT_EQ(NextDue("we_1", 100), 700) << "only pending deliveries";
    EXPECT_EQ(NextDue("we_1", 700), std::nullopt);
}

TEST(EventStoreMigrationTest, MigrationFourLinksEachExistingDeliveryToTheOneBeforeIt) {
    TempDb db;
    {
        auto conn = sqlite::Connection::Open(db.path()).value();
        ASSERT_EQ(*sqlite::Migrate(conn->raw(), 3), 3);
        // Deliveries as a version-3 Tally left them, one line per (endpoint, object).
        const char* rows[][3] = {{"we_1", "cust_a", "delivered"}, {"we_1", "cust_b", "pending"},
                                 {"we_1", "cust_a", "pending"},   {"we_2", "cust_a", "pending"},
                                 {"we_1", "cust_a", "pending"}};
        int seq = 0;
        for (const auto& r : rows) {
            ++seq;
            const std::string sql =
                "INSERT INTO event_deliveries(event_seq, event_id, endpoint_id, object_id, state, next_attempt_ms, "
                "event_created_ms) VALUES (" + std::to_string(seq) + ", 'evt_" + std::to_string(seq) + "', '" + r[0] +
                "', '" + r[1] + "', '" + r[2] + "', 100, 100)";
            ASSERT_TRUE(conn->Exec(sql.c_str()).ok()) << sql;
        }
    }
    auto store = sqlite::SqliteStore::Open(db.path()).value();  // applies migration 4
    {
        auto conn = sqlite::Connection::Open(db.path()).value();
        sqlite3_stmt* stmt = nullptr;
        ASSERT_EQ(sqlite3_prepare_v2(conn->raw(), "SELECT id, prev_delivery_id FROM event_deliveries ORDER BY id", -1,
                                     &stmt, nullptr),
                  SQLITE_OK);
        std::vector<std::pair<int64_t, int64_t>> got;  // (id, prev or 0)
        while (sqlite3_step(stmt) == SQLITE_ROW) got.emplace_back(sqlite3_column_int64(stmt, 0), sqlite3_column_int64(stmt, 1));
        sqlite3_finalize(stmt);
        EXPECT_EQ(got, (std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {2, 0}, {3, 1}, {4, 0}, {5, 3}}));
    }
    // And the lines hold after the upgrade: cust_a's delivery 3 is the head (1 was delivered), 5 waits behind it.
    std::vector<DeliveryRecord> claimed;
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(claimed, tx.events().ClaimDueDeliveries("we_1", 200, 30200, 10));
        return {};
    }).ok());
    EXPECT_EQ(Ids(claimed), (std::vector<int64_t>{2, 3}));
}

}  // namespace
}  // namespace tally
