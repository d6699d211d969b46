#pragma once
// The WebhookSender port over libcurl's multi interface: every delivery is a POST on one event loop thread, with
// connections kept alive per host, so thousands of deliveries a second need no thread each.
#include <curl/curl.h>

#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "app/event_dispatcher.hpp"

namespace tally {

constexpr int64_t kDeliveryConnectTimeoutMs = 5000;
constexpr long kDeliveryConnectionsPerHostMax = kEndpointDeliveriesInFlightMax;

/// Sends deliveries concurrently on its own thread. Thread-safe. Stop() (also run by the destructor) ends requests
/// still running with the error "sender stopped"; every Send's callback runs exactly once.
class CurlWebhookSender final : public WebhookSender {
public:
    CurlWebhookSender();
    ~CurlWebhookSender() override;
    CurlWebhookSender(const CurlWebhookSender&) = delete;
    CurlWebhookSender& operator=(const CurlWebhookSender&) = delete;

    void Send(OutgoingDelivery delivery, int64_t timeout_ms, std::function<void(DeliveryOutcome)> done) override;
    void Stop();

private:
    struct Job;
    void Loop();
    void Finish(Job& job, int status, const std::string& error);

    CURLM* multi_;
    std::mutex mu_;
    std::vector<std::unique_ptr<Job>> queued_;  // guarded by mu_
    bool stopping_ = false;                      // guarded by mu_
    std::thread thread_;
};

}  // namespace tally
