#include "adapters/outbound/curl_webhook_sender.hpp"

#include <chrono>
#include <map>
#include <pthread.h>

namespace tally {

struct CurlWebhookSender::Job {
    OutgoingDelivery delivery;
    int64_t timeout_ms = 0;
    std::function<void(DeliveryOutcome)> done;
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::chrono::steady_clock::time_point started;
    size_t response_bytes = 0;
};

namespace {
size_t DiscardBody(char*, size_t size, size_t count, void* user) {
    // The receiver's answer is not used; reading stops (an error) past the limit so a huge body cannot hold a slot.
    auto* seen = static_cast<size_t*>(user);
    *seen += size * count;
    return *seen > kDeliveryResponseBytesMax ? 0 : size * count;
}
}  // namespace

CurlWebhookSender::CurlWebhookSender() : multi_(curl_multi_init()) {
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, kDeliveryConnectionsPerHostMax);
    // Keep connections for reuse: by default the cache holds 4 per easy handle in use, so with a few deliveries in
    // flight most answers closed their connection and the next delivery opened a new one (9 deliveries per
    // connection in bench/events before, at ~400/s).
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(kDeliveriesInFlightMax));
    thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "tally-send");
        Loop();
    });
}

CurlWebhookSender::~CurlWebhookSender() {
    Stop();
    curl_multi_cleanup(multi_);
}

void CurlWebhookSender::Stop() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    curl_multi_wakeup(multi_);
    if (thread_.joinable()) thread_.join();
}

void CurlWebhookSender::Send(OutgoingDelivery delivery, int64_t timeout_ms, std::function<void(DeliveryOutcome)> done) {
    auto job = std::make_unique<Job>();
    job->delivery = std::move(delivery);
    job->timeout_ms = timeout_ms;
    job->done = std::move(done);
    {
        std::lock_guard lock(mu_);
        if (!stopping_) {
            queued_.push_back(std::move(job));
            job = nullptr;
        }
    }
    if (job) {
        Finish(*job, 0, "sender stopped");
        return;
    }
    curl_multi_wakeup(multi_);
}

void CurlWebhookSender::Finish(Job& job, int status, const std::string& error) {
    DeliveryOutcome outcome;
    outcome.delivery_id = job.delivery.delivery_id;
    outcome.status = status;
    outcome.error = error;
    outcome.latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                               job.started)
                             .count();
    try {
        job.done(std::move(outcome));
    } catch (...) {  // NOLINT(bugprone-empty-catch): a callback's failure must not end the sender's loop
    }
}

void CurlWebhookSender::Loop() {
    std::map<CURL*, std::unique_ptr<Job>> active;
    for (;;) {
        std::vector<std::unique_ptr<Job>> fresh;
        bool stopping = false;
        {
            std::lock_guard lock(mu_);
            fresh.swap(queued_);
            stopping = stopping_;
        }
        for (auto& job : fresh) {
            job->started = std::chrono::steady_clock::now();
            CURL* easy = curl_easy_init();
            if (easy == nullptr) {
                Finish(*job, 0, "out of memory");
                continue;
            }
            job->headers = curl_slist_append(job->headers, "Content-Type: application/json; charset=utf-8");
            job->headers = curl_slist_append(job->headers, ("Stripe-Signature: " + job->delivery.signature).c_str());
            job->headers = curl_slist_append(job->headers, ("Tally-Event-Id: " + job->delivery.event_id).c_str());
            job->headers = curl_slist_append(job->headers, "Expect:");
            curl_easy_setopt(easy, CURLOPT_URL, job->delivery.url.c_str());
            curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
            curl_easy_setopt(easy, CURLOPT_POST, 1L);
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job->delivery.body.data());
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(job->delivery.body.size()));
            curl_easy_setopt(easy, CURLOPT_HTTPHEADER, job->headers);
            curl_easy_setopt(easy, CURLOPT_USERAGENT, "Tally-Webhooks/1.0");
            curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(job->timeout_ms));
            curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(kDeliveryConnectTimeoutMs));
            curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);  // as Stripe: a redirect is not a delivery
            curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, DiscardBody);
            curl_easy_setopt(easy, CURLOPT_WRITEDATA, &job->response_bytes);
            job->easy = easy;
            curl_multi_add_handle(multi_, easy);
            active.emplace(easy, std::move(job));
        }
        if (stopping) {
            for (auto& [easy, job] : active) {
                curl_multi_remove_handle(multi_, easy);
                curl_easy_cleanup(easy);
                curl_slist_free_all(job->headers);
                Finish(*job, 0, "sender stopped");
            }
            return;
        }
        int running = 0;
        curl_multi_perform(multi_, &running);
        int left = 0;
        while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL* easy = msg->easy_handle;
            const CURLcode result = msg->data.result;
            long status = 0;
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
            auto it = active.find(easy);
            curl_multi_remove_handle(multi_, easy);
            curl_easy_cleanup(easy);
            if (it == active.end()) continue;
            std::unique_ptr<Job> job = std::move(it->second);
            active.erase(it);
            curl_slist_free_all(job->headers);
            // A complete answer counts even if its body was cut at the limit.
            const bool answered = result == CURLE_OK || (result == CURLE_WRITE_ERROR && status != 0);
            Finish(*job, answered ? static_cast<int>(status) : 0, answered ? "" : curl_easy_strerror(result));
        }
        curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
    }
}

}  // namespace tally
