#include "adapters/metrics/prometheus_metrics.hpp"

#include <prometheus/text_serializer.h>

#include <atomic>
#include <cstdint>
#include <unordered_map>

namespace tally {
namespace {

namespace pm = prometheus;

// Latency buckets in seconds: from a 100 us commit to a 10 s Stripe round trip.
const pm::Histogram::BucketBoundaries& LatencyBuckets() {
    static const pm::Histogram::BucketBoundaries kBuckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                          0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                                          5,      10};
    return kBuckets;
}
// Processing lag in whole seconds (received_at and processed_at are second-resolution).
const pm::Histogram::BucketBoundaries& LagBuckets() {
    static const pm::Histogram::BucketBoundaries kBuckets{0, 1, 2, 5, 10, 30, 60, 300, 900, 3600};
    return kBuckets;
}

// From an event's commit to its delivery: milliseconds when the receiver is up, up to Stripe's 3-day retry window.
const pm::Histogram::BucketBoundaries& DeliveryAgeBuckets() {
    static const pm::Histogram::BucketBoundaries kBuckets{0.005, 0.01, 0.025, 0.05, 0.1,  0.25,  0.5,   1,
                                                          5,     30,   60,    300,  3600, 21600, 86400, 259200};
    return kBuckets;
}

std::string StatusClass(int status) { return std::to_string(status); }

}  // namespace

namespace {
std::atomic<uint64_t> next_instance{1};
}  // namespace

PrometheusMetrics::PrometheusMetrics()
    : instance_(next_instance.fetch_add(1)),
      registry_(std::make_shared<pm::Registry>()),
      webhooks_received_(pm::BuildCounter()
                             .Name("tally_webhooks_received_total")
                             .Help("Stripe webhook deliveries answered, by outcome (recorded, duplicate, rejected) "
                                   "and rejection reason")
                             .Register(*registry_)),
      webhooks_processed_(pm::BuildCounter()
                              .Name("tally_webhooks_processed_total")
                              .Help("Recorded events processed in a committed transaction, by outcome")
                              .Register(*registry_)),
      webhook_lag_(pm::BuildHistogram()
                       .Name("tally_webhook_processing_lag_seconds")
                       .Help("From an event's receipt to its processing, in seconds (second resolution)")
                       .Register(*registry_)),
      commit_seconds_(pm::BuildHistogram()
                          .Name("tally_store_commit_seconds")
                          .Help("Write transactions from BEGIN to durable COMMIT")
                          .Register(*registry_)),
      commit_failures_(pm::BuildCounter()
                           .Name("tally_store_commit_failures_total")
                           .Help("Write transactions that failed (rolled back)")
                           .Register(*registry_)),
      http_requests_(pm::BuildCounter()
                         .Name("tally_http_requests_total")
                         .Help("HTTP requests answered, by route template, method and status")
                         .Register(*registry_)),
      http_seconds_(pm::BuildHistogram()
                        .Name("tally_http_request_seconds")
                        .Help("HTTP request latency inside Tally (handler and store), by route template")
                        .Register(*registry_)),
      stripe_calls_(pm::BuildCounter()
                        .Name("tally_stripe_api_calls_total")
                        .Help("Calls to Stripe's API (after retries), by method and outcome")
                        .Register(*registry_)),
      event_attempts_(pm::BuildCounter()
                          .Name("tally_event_delivery_attempts_total")
                          .Help("Attempts to deliver Tally's events to the app's endpoints, by outcome (delivered, "
                                "retrying, failed: no retry left)")
                          .Register(*registry_)),
      event_attempt_seconds_(pm::BuildHistogram()
                                 .Name("tally_event_delivery_attempt_seconds")
                                 .Help("HTTP round trip of one event delivery attempt to an app endpoint")
                                 .Register(*registry_)),
      event_delivered_age_(pm::BuildHistogram()
                               .Name("tally_event_delivered_age_seconds")
                               .Help("From an event's commit to its successful delivery (retries included)")
                               .Register(*registry_)),
      webhook_lag_all_(webhook_lag_.Add({}, LagBuckets())),
      commit_all_(commit_seconds_.Add({}, LatencyBuckets())),
      event_attempt_all_(event_attempt_seconds_.Add({}, LatencyBuckets())),
      event_delivered_age_all_(event_delivered_age_.Add({}, DeliveryAgeBuckets())) {}

void PrometheusMetrics::WebhookReceived(std::string_view outcome, std::string_view reason) {
    webhooks_received_.Add({{"outcome", std::string(outcome)}, {"reason", std::string(reason)}}).Increment();
}

void PrometheusMetrics::WebhookProcessed(std::string_view outcome, int64_t lag_seconds) {
    webhooks_processed_.Add({{"outcome", std::string(outcome)}}).Increment();
    webhook_lag_all_.Observe(static_cast<double>(lag_seconds < 0 ? 0 : lag_seconds));
}

void PrometheusMetrics::StoreCommit(double seconds, bool ok) {
    commit_all_.Observe(seconds);
    if (!ok) commit_failures_.Add({}).Increment();
}

void PrometheusMetrics::HttpRequest(std::string_view route, std::string_view method, int status, double seconds) {
    // The series of a (route, method, status) once found are kept per thread: prometheus-cpp's Family::Add builds a
    // label map and takes the family's lock on every call (3% of a read-only usage check). Series are never
    // removed, so the pointers stay valid for the registry's life; the instance id (never reused, unlike an address)
    // is in the key, so a cache never reaches into another, destroyed registry.
    struct Series {
        prometheus::Counter* requests;
        prometheus::Histogram* seconds;
    };
    thread_local std::unordered_map<std::string, Series> cache;
    std::string key = std::to_string(instance_);
    key += ' ';
    key += route;
    key += ' ';
    key += method;
    key += ' ';
    key += std::to_string(status);
    auto it = cache.find(key);
    if (it == cache.end()) {
        Series s{&http_requests_.Add({{"route", std::string(route)}, {"method", std::string(method)},
                                      {"status", StatusClass(status)}}),
                 &http_seconds_.Add({{"route", std::string(route)}}, LatencyBuckets())};
        it = cache.emplace(std::move(key), s).first;
    }
    it->second.requests->Increment();
    it->second.seconds->Observe(seconds);
}

void PrometheusMetrics::StripeCall(std::string_view method, std::string_view outcome) {
    stripe_calls_.Add({{"method", std::string(method)}, {"outcome", std::string(outcome)}}).Increment();
}

void PrometheusMetrics::EventDeliveryAttempt(std::string_view outcome, double attempt_seconds, double age_seconds) {
    event_attempts_.Add({{"outcome", std::string(outcome)}}).Increment();
    event_attempt_all_.Observe(attempt_seconds);
    if (outcome == "delivered") event_delivered_age_all_.Observe(age_seconds < 0 ? 0 : age_seconds);
}

void PrometheusMetrics::AddGauge(const std::string& name, const std::string& help, std::function<double()> read) {
    auto& family = pm::BuildGauge().Name(name).Help(help).Register(*registry_);
    std::lock_guard lock(gauges_mu_);
    gauges_.emplace_back(&family.Add({}), std::move(read));
}

std::string PrometheusMetrics::Render() {
    {
        std::lock_guard lock(gauges_mu_);
        for (auto& [gauge, read] : gauges_) gauge->Set(read());
    }
    return pm::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace tally
