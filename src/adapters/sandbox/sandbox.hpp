#pragma once
// A stateful, offline stand-in for Stripe's HTTP API. Speaks Stripe's wire format so the official SDKs and
// Tally's own client use it unchanged. This first slice covers customers, products, prices, events and
// webhook endpoints, with Stripe's idempotency and error semantics and signed webhook delivery.
#include <boost/json.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "adapters/http/server.hpp"

namespace tally::sandbox {

constexpr int kListLimitDefault = 10;            // Stripe's default page size
constexpr int kListLimitMax = 100;               // Stripe's maximum
constexpr int kDeliveryAttemptsMax = 8;          // per event and endpoint, then the delivery is abandoned
constexpr int64_t kDeliveryTimeoutMs = 10000;    // one webhook POST
constexpr size_t kIdempotencyKeyBytesMax = 255;  // Stripe's limit
constexpr const char* kApiVersion = "2025-03-31.basil";

struct SandboxConfig {
    /// Unix seconds; test clocks will move this per customer in a later slice.
    std::function<int64_t()> now;
    /// Delay before delivery attempt n+1 is |delivery_retry_base_ms| * 2^(n-1).
    int64_t delivery_retry_base_ms = 1000;
};

/// One attempt to deliver an event to an endpoint.
struct Delivery {
    std::string event_id;
    std::string endpoint_id;
    std::string url;
    int attempt = 0;
    int http_status = 0;   // 0: no HTTP answer
    std::string error;     // transport error, if any
    int64_t at = 0;
};

/// Thread-safe: API calls are serialised on one mutex; webhooks are delivered by a background thread.
class Sandbox {
public:
    explicit Sandbox(SandboxConfig config);
    ~Sandbox();
    Sandbox(const Sandbox&) = delete;
    Sandbox& operator=(const Sandbox&) = delete;

    /// Answers one API request, as Stripe would.
    http::Response Handle(const http::Request& req);
    /// Every delivery attempt so far, oldest first.
    std::vector<Delivery> deliveries() const;

private:
    struct Pending {
        std::string event_id;
        std::string endpoint_id;
        int attempt = 1;
        std::chrono::steady_clock::time_point due;
    };
    struct IdempotentResult {
        std::string request_hash;
        http::Response response;
    };

    http::Response Route(const http::Request& req, const boost::json::object& params);
    http::Response CreateCustomer(const boost::json::object& params);
    http::Response UpdateCustomer(const std::string& id, const boost::json::object& params);
    http::Response CreateProduct(const boost::json::object& params);
    http::Response CreatePrice(const boost::json::object& params);
    http::Response CreateWebhookEndpoint(const boost::json::object& params);
    http::Response CreateSubscription(const boost::json::object& params);
    http::Response UpdateSubscription(const std::string& id, const boost::json::object& params);
    http::Response CancelSubscription(const std::string& id);
    http::Response CreateTestClock(const boost::json::object& params);
    /// Bills the subscription's current period (|billing_reason| as Stripe names it) and pays it at |at|:
    /// emits invoice.created, .finalized, .paid and .payment_succeeded, and sets the subscription's
    /// latest_invoice. This slice assumes the payment succeeds.
    void InvoiceSubscription(boost::json::object& subscription, const std::string& billing_reason, int64_t at);
    http::Response AdvanceTestClock(const std::string& id, const boost::json::object& params);
    /// Unix seconds for objects of |customer_id|: its test clock's frozen time, else the wall clock.
    int64_t NowFor(const std::string& customer_id);
    /// Runs the next transition of |subscription| due at or before |until|; returns false when none is due.
    bool RunNextTransition(boost::json::object& subscription, int64_t until);
    http::Response Retrieve(const std::string& prefix, const std::string& id);
    http::Response List(const std::string& type, const boost::json::object& params, const std::string& url);
    http::Response DeleteObject(const std::string& type, const std::string& id);

    /// Stores |object| as the newest of its type.
    void Put(const std::string& type, boost::json::object object);
    boost::json::object* Find(const std::string& type, const std::string& id);
    /// Records an event about |object| and queues its deliveries.
    void Emit(const std::string& type, const boost::json::object& object,
              const boost::json::object* previous_attributes = nullptr, std::optional<int64_t> created = std::nullopt);
    std::string NewId(const std::string& prefix);
    boost::json::object Template(const char* resource) const;

    void DeliveryLoop();
    void Deliver(const Pending& p);

    SandboxConfig config_;
    boost::json::object fixtures_;
    mutable std::mutex mu_;
    std::map<std::string, std::vector<std::string>> order_;  // type -> ids, oldest first
    std::map<std::string, boost::json::object> objects_;     // id -> object
    std::map<std::string, IdempotentResult> idempotency_;
    std::set<std::string> trial_notice_sent_;  // subscriptions whose trial_will_end was sent
    std::string current_request_id_;
    std::string current_idempotency_key_;
    std::vector<Delivery> deliveries_;
    std::deque<Pending> pending_;
    std::condition_variable delivery_cv_;
    bool stopping_ = false;
    std::thread delivery_thread_;
};

}  // namespace tally::sandbox
