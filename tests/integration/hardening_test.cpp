// The hardened core on a real SQLite file: exceptions never escape (handler, group commit, transactions),
// idempotency claims and their lapse, and API key revocation.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <future>
#include <stdexcept>

#include "adapters/config/catalog_json.hpp"
#include "adapters/http/api.hpp"
#include "adapters/openssl_secret_hasher.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "adapters/stripe/event_decoder.hpp"
#include "adapters/stripe/stripe_api.hpp"
#include "adapters/stripe/webhook_signature.hpp"
#include "app/api_keys.hpp"
#include "app/group_commit.hpp"
#include "app/idempotency.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::ManualClock;
using testing::TempDb;

constexpr int64_t kT0 = 1'700'000'000;

/// The real store, with reads that throw while |armed| (a bug deep inside a handler, say).
class ThrowingReads final : public Store {
public:
    explicit ThrowingReads(Store& inner) : inner_(inner) {}
    Status Read(const std::function<Status(StoreTx&)>& fn) override {
        if (armed) throw std::runtime_error("simulated bug");
        return inner_.Read(fn);
    }
    Status Write(const std::function<Status(StoreTx&)>& fn) override { return inner_.Write(fn); }
    Result<std::vector<bool>> AppendInbox(const std::vector<InboxEvent>& events) override {
        return inner_.AppendInbox(events);
    }
    Status Ping() override { return inner_.Ping(); }
    void SetCommitObserver(std::function<void(double, bool)> observer) override {
        inner_.SetCommitObserver(std::move(observer));
    }
    std::atomic<bool> armed{false};

private:
    Store& inner_;
};

class StoreHardeningTest : public ::testing::TestWithParam<testing::StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, StoreHardeningTest, testing::kBothStores, testing::StoreKindName);

TEST_P(StoreHardeningTest, AnExceptionInAWriteRollsItBackAndTheStoreGoesOn) {
    testing::TestStore db(GetParam());
    auto store = db.Open();
    CustomerRecord c;
    c.id = CustomerId("cust_throw");
    c.external_id = "u_throw";
    c.role = "member";
    c.plan_id = "free";
    EXPECT_THROW((void)store->Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(tx.customers().Insert(c));
        throw std::runtime_error("bug after the insert");
    }), std::runtime_error);
    // Rolled back: the row is gone and the connection is not left inside a transaction.
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_FALSE(tx.customers().Get(c.id)->has_value());
        return {};
    }).ok());
    ASSERT_TRUE(store->Write([&](StoreTx& tx) { return tx.customers().Insert(c); }).ok());
}

TEST(HardeningTest, AThrowingGroupCommitSinkFailsItsBatchAndTheCommitterGoesOn) {
    std::atomic<bool> fail{true};
    GroupCommitter<int, int> committer(
        [&](const std::vector<int>& items) -> Result<std::vector<int>> {
            if (fail.exchange(false)) throw std::runtime_error("sink bug");
            return items;
        },
        16, 64);
    std::promise<Result<int>> first;
    committer.Submit(1, [&](Result<int> r) { first.set_value(std::move(r)); });
    auto r1 = first.get_future().get();
    ASSERT_FALSE(r1.ok());
    EXPECT_EQ(r1.error().code, ErrorCode::kInternal);
    std::promise<Result<int>> second;
    committer.Submit(2, [&](Result<int> r) { second.set_value(std::move(r)); });
    auto r2 = second.get_future().get();
    ASSERT_TRUE(r2.ok());
    EXPECT_EQ(*r2, 2);
}

struct ApiHarness {
    TempDb db;
    ManualClock clock{kT0};
    Catalog catalog = LoadCatalog("").value();
    std::unique_ptr<sqlite::SqliteStore> sqlite_store = sqlite::SqliteStore::Open(db.path()).value();
    ThrowingReads store{*sqlite_store};
    StripeEventDecoder decoder;
    StripeWebhookVerifier verifier{{"whsec_test"}, 300};
    OpenSslSecretHasher hasher;
    BillingService billing{store, catalog, clock, BillingConfig{}};
    WebhookProcessor processor{store, decoder, billing, clock};
    WebhookReceiver receiver{store, verifier, decoder, clock, [] {}};
    stripe::UnconfiguredStripeApi stripe_api;
    CheckoutService checkout{store, billing, stripe_api, clock, CheckoutConfig{}};
    ApiKeyService keys{store, clock, hasher, "tk_env_admin_key_of_at_least_32_characters"};
    IdempotencyService idempotency{store, clock};
    WebhookEndpointService endpoints{store, hasher, clock};
    http::Api api{http::ApiDeps{store, billing, processor, receiver, checkout, keys, idempotency, endpoints, clock,
                                http::StripeHealth{"not_configured", {}}, "test"}};

    http::Response Call(const std::string& method, const std::string& path, const std::string& body = {}) {
        http::Request req;
        req.method = method;
        req.target = path;
        req.path = path;
        req.segments = http::PathSegments(path);
        req.headers["authorization"] = "Bearer tk_env_admin_key_of_at_least_32_characters";
        req.body = body;
        http::Response out;
        api.Handle(std::move(req), [&](http::Response r) { out = std::move(r); });
        return out;
    }
};

TEST(HardeningTest, AnExceptionInAHandlerIsA500WithAnErrorIdAndTheNextRequestWorks) {
    ApiHarness h;
    h.store.armed = true;
    const http::Response r = h.Call("GET", "/v1/customers/cust_1");
    EXPECT_EQ(r.status, 500);
    const auto body = boost::json::parse(r.body).as_object().at("error").as_object();
    EXPECT_EQ(body.at("type").as_string(), "api_error");
    EXPECT_EQ(body.at("code").as_string(), "internal_error");
    EXPECT_NE(std::string(body.at("message").as_string()).find("err_"), std::string::npos);
    EXPECT_EQ(std::string(body.at("message").as_string()).find("simulated bug"), std::string::npos)
        << "the exception's text stays in the log";
    h.store.armed = false;
    EXPECT_EQ(h.Call("GET", "/v1/customers/cust_1").status, 404);
    EXPECT_EQ(h.Call("POST", "/v1/customers", R"({"external_id":"u1"})").status, 201);
}

TEST_P(StoreHardeningTest, IdempotencyClaimsBlockTwinsUntilDoneAndLapseAfterACrash) {
    testing::TestStore db(GetParam());
    ManualClock clock{kT0};
    auto store = db.Open();
    IdempotencyService idem(*store, clock);
    const IdempotencyRequest req{"key_a", "k1", "hash1"};
    int runs = 0;
    // A twin that arrives while the first runs its external effect gets kIdempotencyKeyInUse.
    auto first = idem.RunWithExternalEffects(req, [&]() -> Result<StoredResponse> {
        ++runs;
        auto twin = idem.RunWithExternalEffects(req, [&]() -> Result<StoredResponse> {
            ++runs;
            return StoredResponse{200, "twin"};
        });
        EXPECT_FALSE(twin.ok());
        EXPECT_EQ(twin.error().code, ErrorCode::kConflict);
        EXPECT_EQ(twin.error().reason, ErrorReason::kIdempotencyKeyInUse);
        return StoredResponse{200, "first"};
    });
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(runs, 1);
    auto replay = idem.RunWithExternalEffects(req, [&]() -> Result<StoredResponse> { return StoredResponse{}; });
    ASSERT_TRUE(replay.ok());
    EXPECT_TRUE(replay->replayed);
    EXPECT_EQ(replay->response.body, "first");
    auto other = idem.RunWithExternalEffects({"key_a", "k1", "hash2"}, [&]() -> Result<StoredResponse> { return StoredResponse{}; });
    ASSERT_FALSE(other.ok());
    EXPECT_EQ(other.error().reason, ErrorReason::kIdempotencyKeyReused);

    // A claim whose holder crashed (left in flight) blocks until it lapses, then a retry takes it over.
    ASSERT_TRUE(store->Write([&](StoreTx& tx) {
        return tx.keys().InsertIdempotency({"key_a", "k2", "hash", IdempotencyState::kInFlight, 0, "", clock.Now(),
                                     clock.Now().PlusSeconds(kIdempotencyLockSeconds)});
    }).ok());
    const IdempotencyRequest crashed{"key_a", "k2", "hash"};
    auto blocked = idem.RunWithExternalEffects(crashed, [&]() -> Result<StoredResponse> { return StoredResponse{}; });
    ASSERT_FALSE(blocked.ok());
    EXPECT_EQ(blocked.error().reason, ErrorReason::kIdempotencyKeyInUse);
    clock.Advance(kIdempotencyLockSeconds + 1);
    auto taken = idem.RunWithExternalEffects(crashed, [&]() -> Result<StoredResponse> { return StoredResponse{201, "retried"}; });
    ASSERT_TRUE(taken.ok());
    EXPECT_FALSE(taken->replayed);

    // A failed run stores nothing: the retry runs again.
    int failing_runs = 0;
    const IdempotencyRequest flaky{"key_a", "k3", "hash"};
    auto failed = idem.RunWithExternalEffects(flaky, [&]() -> Result<StoredResponse> {
        ++failing_runs;
        return Unavailable("stripe down");
    });
    EXPECT_FALSE(failed.ok());
    auto again = idem.RunWithExternalEffects(flaky, [&]() -> Result<StoredResponse> {
        ++failing_runs;
        return StoredResponse{200, "ok"};
    });
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(failing_runs, 2);

    // In-store work: the record commits with the change, or neither does.
    auto store_failed = idem.RunInStore({"key_a", "k4", "hash"}, [&](StoreTx& tx) -> Result<StoredResponse> {
        CustomerRecord c;
        c.id = CustomerId("cust_k4");
        c.role = "member";
        c.plan_id = "free";
        TALLY_TRY(tx.customers().Insert(c));
        return InvalidArgument("refused after the insert");
    });
    EXPECT_FALSE(store_failed.ok());
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        EXPECT_FALSE(tx.customers().Get(CustomerId("cust_k4"))->has_value());
        EXPECT_FALSE(tx.keys().GetIdempotency("key_a", "k4")->has_value());
        return {};
    }).ok());

    // Keys older than the retention are pruned.
    clock.Advance(kIdempotencyRetentionSeconds + 1);
    EXPECT_GE(idem.Prune().value(), 3);
}

TEST_P(StoreHardeningTest, ARevokedKeyIsRefusedAtOnceAndACliRevocationWithinTheRecheckBound) {
    testing::TestStore db(GetParam());
    ManualClock clock{kT0};
    auto store = db.Open();
    OpenSslSecretHasher hasher;
    ApiKeyService keys(*store, clock, hasher, "");
    auto made = keys.Create(ApiKeyScope::kReadOnly, "dashboard", "test").value();
    auto who = keys.Authenticate(made.secret);
    ASSERT_TRUE(who.ok());
    EXPECT_EQ(who->scope, ApiKeyScope::kReadOnly);
    ASSERT_TRUE(keys.Revoke(made.record.id, "test").ok());
    auto refused = keys.Authenticate(made.secret);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().reason, ErrorReason::kApiKeyRevoked);

    // Another process (another service over the same database) revokes: this one notices once its cached check
    // is older than kApiKeyRecheckSeconds.
    auto second = keys.Create(ApiKeyScope::kAdmin, "ci", "test").value();
    ASSERT_TRUE(keys.Authenticate(second.secret).ok());
    ApiKeyService other_process(*store, clock, hasher, "");
    ASSERT_TRUE(other_process.Revoke(second.record.id, "cli").ok());
    clock.Advance(kApiKeyRecheckSeconds);
    EXPECT_FALSE(keys.Authenticate(second.secret).ok());
    EXPECT_FALSE(keys.Authenticate("tk_unknown").ok());
    EXPECT_FALSE(keys.Create(ApiKeyScope::kAdmin, " ", "test").ok());
}

}  // namespace
}  // namespace tally
