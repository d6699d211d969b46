#pragma once
// Integration tests run against both stores: TestStore makes a fresh, migrated one of either kind. SQLite: a file in
// a temporary directory. PostgreSQL: a schema of its own in the test server that scripts/pg-test.sh started (its URL
// is in the file named by TALLY_TEST_PG_URL_FILE, which ctest sets), dropped afterwards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>

#include "adapters/postgres/pg_connection.hpp"
#include "adapters/postgres/postgres_store.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "test_support.hpp"

namespace tally::testing {

enum class StoreKind { kSqlite, kPostgres };

inline std::string StoreKindName(const ::testing::TestParamInfo<StoreKind>& info) {
    return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
}

/// Both stores, for INSTANTIATE_TEST_SUITE_P(Stores, Suite, kBothStores, StoreKindName).
inline const auto kBothStores = ::testing::Values(StoreKind::kSqlite, StoreKind::kPostgres);

/// The test server's URL; fails the test (never skips it) when ctest's fixture did not provide one.
inline std::string TestPostgresUrl() {
    const char* file = std::getenv("TALLY_TEST_PG_URL_FILE");
    std::string url;
    if (file != nullptr) {
        std::ifstream in(file);
        std::getline(in, url);
    }
    if (url.empty()) {
        ADD_FAILURE() << "no PostgreSQL test server: run through ctest (which starts one with scripts/pg-test.sh), or "
                         "set TALLY_TEST_PG_URL_FILE to a file holding a postgresql:// URL";
    }
    return url;
}

/// A fresh database of one kind. Not thread-safe; the store it opens is.
class TestStore {
public:
    explicit TestStore(StoreKind kind) : kind_(kind) {
        if (kind_ == StoreKind::kPostgres) {
            static std::atomic<int> counter{0};
            schema_ = "t" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
            const std::string base = TestPostgresUrl();
            admin_url_ = base;
            auto admin = postgres::PgConnection::Open(admin_url_);
            if (!admin.ok()) {
                ADD_FAILURE() << admin.error().message;
                return;
            }
            EXPECT_TRUE((*admin)->Exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_).ok());
            url_ = base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema_;
        } else {
            url_ = file_.path();
        }
    }
    ~TestStore() {
        if (kind_ != StoreKind::kPostgres || admin_url_.empty()) return;
        if (auto admin = postgres::PgConnection::Open(admin_url_); admin.ok()) {
            (void)(*admin)->Exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
        }
    }
    TestStore(const TestStore&) = delete;
    TestStore& operator=(const TestStore&) = delete;

    StoreKind kind() const { return kind_; }
    /// The SQLite path or the PostgreSQL URL (with this test's schema on its search_path).
    const std::string& url() const { return url_; }
    /// Opens (and migrates) the database; a second call opens it again, as a restarted process would.
    std::unique_ptr<Store> Open() const {
        if (kind_ == StoreKind::kPostgres) {
            auto store = postgres::PostgresStore::Open(url_);
            if (!store.ok()) {
                ADD_FAILURE() << store.error().message;
                return nullptr;
            }
            return std::move(*store);
        }
        auto store = sqlite::SqliteStore::Open(url_);
        if (!store.ok()) {
            ADD_FAILURE() << store.error().message;
            return nullptr;
        }
        return std::move(*store);
    }
    /// A raw SQL connection to the PostgreSQL schema (tests that look under the store); kPostgres only.
    std::unique_ptr<postgres::PgConnection> Connect() const { return postgres::PgConnection::Open(url_).value(); }

private:
    StoreKind kind_;
    TempDb file_;
    std::string schema_;
    std::string admin_url_;
    std::string url_;
};

}  // namespace tally::testing
