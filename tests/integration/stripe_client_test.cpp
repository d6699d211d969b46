// The Stripe client over real sockets against a scripted local server (Tally's own HTTP server).
#include "adapters/stripe/stripe_client.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <deque>
#include <mutex>

#include "adapters/http/server.hpp"
#include "adapters/stripe/form_encoding.hpp"

namespace tally {
namespace {

namespace bj = boost::json;

/// Answers requests from a script, recording what it received.
class FakeStripe {
public:
    FakeStripe() : server_("127.0.0.1", 0, 1, [this](http::Request req, http::Responder respond) {
                       std::lock_guard lock(mu_);
                       requests_.push_back(req);
                       http::Response r{200, R"({"id":"cus_default","object":"customer"})", "application/json", {}};
                       if (!script_.empty()) {
                           r = script_.front();
                           script_.pop_front();
                       }
                       respond(std::move(r));
                   }) {
        EXPECT_EQ(server_.Start(), "");
    }
    ~FakeStripe() { server_.Stop(1000); }
    void Then(int status, std::string body, std::vector<std::pair<std::string, std::string>> headers = {}) {
        std::lock_guard lock(mu_);
        script_.push_back(http::Response{status, std::move(body), "application/json", std::move(headers)});
    }
    std::vector<http::Request> requests() {
        std::lock_guard lock(mu_);
        return requests_;
    }
    std::string base() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }

private:
    std::mutex mu_;
    std::deque<http::Response> script_;
    std::vector<http::Request> requests_;
    http::Server server_;
};

stripe::ClientConfig Config(const FakeStripe& fake, std::vector<int64_t>* sleeps) {
    stripe::ClientConfig c;
    c.api_base = fake.base();
    c.secret_key = "sk_test_1234567890abcdef";
    c.timeout_ms = 2000;
    c.sleep = [sleeps](std::chrono::milliseconds d) { sleeps->push_back(d.count()); };
    return c;
}

TEST(StripeClientTest, SendsStripeHeadersAndFormBody) {
    FakeStripe fake;
    std::vector<int64_t> sleeps;
    stripe::Client client(Config(fake, &sleeps));
    auto r = client.Post("/v1/customers", {{"email", "a b@example.com"}, {"metadata", bj::object{{"external_id", "u1"}}}},
                         "idem-1");
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->body.at("id").as_string(), "cus_default");
    const auto reqs = fake.requests();
    ASSERT_EQ(reqs.size(), 1u);
    EXPECT_EQ(reqs[0].method, "POST");
    EXPECT_EQ(reqs[0].path, "/v1/customers");
    EXPECT_EQ(reqs[0].Header("authorization"), "Bearer sk_test_1234567890abcdef");
    EXPECT_EQ(reqs[0].Header("stripe-version"), stripe::kStripeVersion);
    EXPECT_EQ(reqs[0].Header("idempotency-key"), "idem-1");
    EXPECT_EQ(reqs[0].Header("content-type"), "application/x-www-form-urlencoded");
    EXPECT_EQ(reqs[0].body, "email=a%20b%40example.com&metadata[external_id]=u1");
    EXPECT_EQ(client.RedactedKey(), "sk_test_...cdef");
}

TEST(StripeClientTest, PostsAlwaysCarryAnIdempotencyKeyThatSurvivesRetries) {
    FakeStripe fake;
    std::vector<int64_t> sleeps;
    stripe::Client client(Config(fake, &sleeps));
    fake.Then(500, R"({"error":{"type":"api_error","message":"boom"}})");
    fake.Then(409, R"({"error":{"type":"invalid_request_error","code":"lock_timeout","message":"busy"}})");
    fake.Then(200, R"({"id":"sub_1","object":"subscription"})", {{"Request-Id", "req_123"}});
    auto r = client.Post("/v1/subscriptions", {{"customer", "cus_1"}});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->attempts, 3);
    EXPECT_EQ(r->request_id, "req_123");
    const auto reqs = fake.requests();
    ASSERT_EQ(reqs.size(), 3u);
    const std::string key = reqs[0].Header("idempotency-key");
    EXPECT_FALSE(key.empty());
    for (const auto& req : reqs) EXPECT_EQ(req.Header("idempotency-key"), key);
    ASSERT_EQ(sleeps.size(), 2u);
    EXPECT_GE(sleeps[0], stripe::kStripeRetryDelayInitialMs);
    EXPECT_LE(sleeps[1], 1000);
}

TEST(StripeClientTest, StripeShouldRetryHeaderDecides) {
    FakeStripe fake;
    std::vector<int64_t> sleeps;
    stripe::Client client(Config(fake, &sleeps));
    fake.Then(500, R"({"error":{"type":"api_error","message":"no"}})", {{"Stripe-Should-Retry", "false"}});
    auto r = client.Post("/v1/customers", {});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
    EXPECT_EQ(fake.requests().size(), 1u);

    fake.Then(429, R"({"error":{"type":"invalid_request_error","code":"rate_limit","message":"slow down"}})",
              {{"Stripe-Should-Retry", "true"}});
    fake.Then(200, R"({"id":"cus_2"})");
    auto ok = client.Post("/v1/customers", {});
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(ok->attempts, 2);
}

TEST(StripeClientTest, ErrorsAreMappedAndNotRetried) {
    FakeStripe fake;
    std::vector<int64_t> sleeps;
    stripe::Client client(Config(fake, &sleeps));
    struct Case { int status; const char* body; ErrorCode code; const char* param; const char* fragment; };
    const Case cases[] = {
        {400, R"({"error":{"type":"invalid_request_error","code":"parameter_missing","message":"Missing required param: customer.","param":"customer"}})",
         ErrorCode::kInvalidArgument, "customer", "invalid_request_error/parameter_missing"},
        {402, R"({"error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline","message":"Your card was declined."}})",
         ErrorCode::kPaymentRequired, "", "card_error/card_declined (generic_decline)"},
        {404, R"({"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_x'","param":"id"}})",
         ErrorCode::kNotFound, "id", "resource_missing"},
        {400, R"({"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters they were first used with."}})",
         ErrorCode::kConflict, "", "idempotency_error"},
        {401, R"({"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****"}})",
         ErrorCode::kUnauthenticated, "", "Invalid API Key"},
        {400, "not json", ErrorCode::kInvalidArgument, "", "without a Stripe error body"},
    };
    for (const auto& c : cases) {
        fake.Then(c.status, c.body);
        auto r = client.Post("/v1/customers", {});
        ASSERT_FALSE(r.ok()) << c.body;
        EXPECT_EQ(r.error().code, c.code) << c.body;
        EXPECT_EQ(r.error().param, c.param) << c.body;
        EXPECT_NE(r.error().message.find(c.fragment), std::string::npos) << r.error().message;
        EXPECT_EQ(r.error().message.find("1234567890abcdef"), std::string::npos);  // never the key
    }
    EXPECT_TRUE(sleeps.empty());
    EXPECT_EQ(fake.requests().size(), std::size(cases));
}

TEST(StripeClientTest, ConnectionFailuresAreRetriedThenUnavailable) {
    std::vector<int64_t> sleeps;
    stripe::ClientConfig c;
    c.api_base = "http://127.0.0.1:1";  // nothing listens on port 1
    c.secret_key = "sk_test_x";
    c.sleep = [&sleeps](std::chrono::milliseconds d) { sleeps.push_back(d.count()); };
    stripe::Client client(c);
    auto r = client.Get("/v1/customers/cus_1");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
    EXPECT_NE(r.error().message.find("3 attempt(s)"), std::string::npos) << r.error().message;
    EXPECT_EQ(sleeps.size(), 2u);
}

TEST(StripeClientTest, DeleteSendsNoBodyAndNoIdempotencyKey) {
    FakeStripe fake;
    std::vector<int64_t> sleeps;
    stripe::Client client(Config(fake, &sleeps));
    fake.Then(200, R"({"id":"sub_1","object":"subscription","status":"canceled"})");
    auto r = client.Delete("/v1/subscriptions/sub_1");
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->body.at("status").as_string(), "canceled");
    const auto reqs = fake.requests();
    ASSERT_EQ(reqs.size(), 1u);
    EXPECT_EQ(reqs[0].method, "DELETE");
    EXPECT_EQ(reqs[0].path, "/v1/subscriptions/sub_1");
    EXPECT_TRUE(reqs[0].body.empty());
    EXPECT_TRUE(reqs[0].Header("idempotency-key").empty());
}

TEST(StripeClientTest, ListAllFollowsPagination) {
    FakeStripe fake;
    std::vector<int64_t> sleeps;
    stripe::Client client(Config(fake, &sleeps));
    fake.Then(200, R"({"object":"list","data":[{"id":"cus_1"},{"id":"cus_2"}],"has_more":true,"url":"/v1/customers"})");
    fake.Then(200, R"({"object":"list","data":[{"id":"cus_3"}],"has_more":true,"url":"/v1/customers"})");
    fake.Then(200, R"({"object":"list","data":[{"id":"cus_4"}],"has_more":false,"url":"/v1/customers"})");
    std::vector<std::string> ids;
    ASSERT_TRUE(client.ListAll("/v1/customers", {{"email", "x@example.com"}}, [&ids](const bj::object& o) {
        ids.emplace_back(o.at("id").as_string());
        return true;
    }).ok());
    EXPECT_EQ(ids, (std::vector<std::string>{"cus_1", "cus_2", "cus_3", "cus_4"}));
    const auto reqs = fake.requests();
    ASSERT_EQ(reqs.size(), 3u);
    EXPECT_EQ(reqs[0].query.at("limit"), "100");
    EXPECT_EQ(reqs[0].query.at("email"), "x@example.com");
    EXPECT_EQ(reqs[0].query.count("starting_after"), 0u);
    EXPECT_EQ(reqs[1].query.at("starting_after"), "cus_2");
    EXPECT_EQ(reqs[2].query.at("starting_after"), "cus_3");
}

}  // namespace
}  // namespace tally
