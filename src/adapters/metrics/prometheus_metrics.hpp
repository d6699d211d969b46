#pragma once
#include <cstdint>
// The Metrics port on prometheus-cpp, exported as Prometheus' text format by GET /metrics.
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "app/ports.hpp"

namespace tally {

/// Every series Tally exports, named `tally_*`. Thread-safe: prometheus-cpp's metrics are atomics, and
/// families' label lookups take their own lock.
class PrometheusMetrics final : public Metrics {
public:
    PrometheusMetrics();
    void WebhookReceived(std::string_view outcome, std::string_view reason) override;
    void WebhookProcessed(std::string_view outcome, int64_t lag_seconds) override;
    void StoreCommit(double seconds, bool ok) override;
    void HttpRequest(std::string_view route, std::string_view method, int status, double seconds) override;
    void StripeCall(std::string_view method, std::string_view outcome) override;
    void EventDeliveryAttempt(std::string_view outcome, double attempt_seconds, double age_seconds) override;

    /// Sets a gauge read at scrape time (open connections, ...); |read| runs on the scraping thread.
    void AddGauge(const std::string& name, const std::string& help, std::function<double()> read);
    /// The text exposition format (version 0.0.4).
    std::string Render();

private:
    const uint64_t instance_;  // unique per object ever made in this process: keys the per-thread series caches
    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Family<prometheus::Counter>& webhooks_received_;
    prometheus::Family<prometheus::Counter>& webhooks_processed_;
    prometheus::Family<prometheus::Histogram>& webhook_lag_;
    prometheus::Family<prometheus::Histogram>& commit_seconds_;
    prometheus::Family<prometheus::Counter>& commit_failures_;
    prometheus::Family<prometheus::Counter>& http_requests_;
    prometheus::Family<prometheus::Histogram>& http_seconds_;
    prometheus::Family<prometheus::Counter>& stripe_calls_;
    prometheus::Family<prometheus::Counter>& event_attempts_;
    prometheus::Family<prometheus::Histogram>& event_attempt_seconds_;
    prometheus::Family<prometheus::Histogram>& event_delivered_age_;
    prometheus::Histogram& webhook_lag_all_;
    prometheus::Histogram& commit_all_;
    prometheus::Histogram& event_attempt_all_;
    prometheus::Histogram& event_delivered_age_all_;
    std::mutex gauges_mu_;
    std::vector<std::pair<prometheus::Gauge*, std::function<double()>>> gauges_;
};

}  // namespace tally
