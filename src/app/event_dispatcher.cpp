#include "app/event_dispatcher.hpp"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <random>

#include "app/thread_hooks.hpp"

namespace tally {

const char* DeliveryStateName(DeliveryState state) {
    switch (state) {
        case DeliveryState::kPending: return "pending";
        case DeliveryState::kDelivered: return "delivered";
        case DeliveryState::kFailed: return "failed";
    }
    return "pending";
}

std::string SignatureHeader(const SecretHasher& hasher, int64_t unix_seconds, const std::string& body,
                            const std::vector<std::string>& secrets) {
    const std::string t = std::to_string(unix_seconds);
    std::string header = "t=" + t;
    const std::string signed_payload = t + "." + body;
    for (const auto& secret : secrets) header += ",v1=" + hasher.HmacSha256Hex(secret, signed_payload);
    return header;
}

std::vector<std::string> SigningSecrets(const WebhookEndpointRecord& endpoint, int64_t now_ms) {
    std::vector<std::string> out{endpoint.secret};
    if (!endpoint.previous_secret.empty() && endpoint.previous_secret_expires_ms &&
        now_ms < *endpoint.previous_secret_expires_ms) {
        out.push_back(endpoint.previous_secret);
    }
    return out;
}

EventDispatcher::EventDispatcher(Store& store, WebhookSender& sender, const SecretHasher& hasher, const Clock& clock,
                                 DispatcherConfig config, std::function<size_t()> ingest_backlog, Metrics& metrics)
    : store_(store), sender_(sender), hasher_(hasher), clock_(clock), config_(config),
      ingest_backlog_(std::move(ingest_backlog)), metrics_(metrics) {}

EventDispatcher::~EventDispatcher() { Stop(); }

void EventDispatcher::Start() {
    thread_ = std::thread([this] {
        NameCurrentThread("tally-events");
        LowerCurrentThreadPriority(kDispatcherNiceIncrement);
        Run();
    });
}

void EventDispatcher::Notify() {
    std::lock_guard lock(mu_);
    pending_ = true;
    cv_.notify_one();
}

void EventDispatcher::Stop() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
}

size_t EventDispatcher::in_flight() {
    std::lock_guard lock(mu_);
    return in_flight_.size();
}

int EventDispatcher::RandomPermille() {
    static thread_local std::mt19937 rng{std::random_device{}()};
    return static_cast<int>(std::uniform_int_distribution<int>(0, 999)(rng));
}

void EventDispatcher::Run() {
    int64_t wait_ms = 0;
    for (;;) {
        {
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [this] {
                return stopping_ || pending_ || !finished_.empty();
            });
            if (stopping_ && in_flight_.empty() && finished_.empty()) return;
            pending_ = false;
        }
        wait_ms = kDispatcherPollMs;
        if (ingest_backlog_) {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kDeliveryDeferMsMax);
            while (ingest_backlog_() >= kDeliveryDeferBacklogMin && std::chrono::steady_clock::now() < deadline) {
                std::unique_lock lock(mu_);
                if (cv_.wait_for(lock, std::chrono::milliseconds(1), [this] { return stopping_; })) break;
            }
        }
        // No exception may end the dispatcher: a throwing round rolled back, and its deliveries are tried again.
        // A retry due sooner than the poll wakes the loop then; what is due now but waits behind an earlier
        // delivery of its object (or a full endpoint) is picked up when that one finishes (which notifies), and a
        // lapsed lease of a crashed node's claim within kDispatcherPollMs.
        try {
            auto next_due = Round();
            const int64_t now = clock_.NowMs();
            if (next_due.ok() && *next_due && **next_due > now) wait_ms = std::min<int64_t>(wait_ms, **next_due - now);
        } catch (...) {  // NOLINT(bugprone-empty-catch): leases lapse and the next round claims the work again
        }
    }
}

Result<std::optional<int64_t>> EventDispatcher::Round() {
    const int64_t now = clock_.NowMs();
    std::vector<DeliveryOutcome> finished;
    std::map<std::string, int> busy;
    int total_busy = 0;
    bool stopping = false;
    {
        std::lock_guard lock(mu_);
        if (finished_.size() <= static_cast<size_t>(kDeliveryRoundMax)) {
            finished.swap(finished_);
        } else {  // the rest wait for the next round, which starts at once (finished_ is not empty)
            const auto cut = finished_.begin() + kDeliveryRoundMax;
            finished.assign(std::make_move_iterator(finished_.begin()), std::make_move_iterator(cut));
            finished_.erase(finished_.begin(), cut);
        }
        busy = in_flight_per_endpoint_;
        total_busy = static_cast<int>(in_flight_.size());
        stopping = stopping_;
    }
    std::vector<std::pair<std::string, OutgoingDelivery>> claimed;  // endpoint id, request
    std::optional<int64_t> next_due;
    std::vector<Attempt> attempts;
    // Nothing here needs to survive a crash: a lost claim lapses, a lost outcome means one more delivery (at least
    // once), so the round does not wait for a sync before it sends: one fsync less between a commit and its event.
    Status s = store_.WriteAsyncCommit([&](StoreTx& tx) -> Status {
        claimed.clear();
        next_due.reset();
        attempts.clear();
        EventStoreTx& events = tx.events();
        std::map<std::string, WebhookEndpointRecord> by_id;
        {
            TALLY_ASSIGN_OR_RETURN(auto all, events.ListEndpoints());
            for (auto& endpoint : all) by_id.emplace(endpoint.id, std::move(endpoint));
        }
        for (const auto& outcome : finished) TALLY_TRY(Record(tx, by_id, outcome, now, attempts));
        if (stopping) return {};
        std::map<std::string, int> finishing;  // outcomes just recorded free their endpoint's slots
        for (const auto& outcome : finished) {
            std::lock_guard lock(mu_);
            if (auto it = in_flight_.find(outcome.delivery_id); it != in_flight_.end()) ++finishing[it->second];
        }
        for (const auto& [id, endpoint] : by_id) {
            if (endpoint.disabled) continue;
            TALLY_ASSIGN_OR_RETURN(auto due_later, events.NextDeliveryDueMs(endpoint.id, now));
            if (due_later && (!next_due || *due_later < *next_due)) next_due = due_later;
            const int used = busy[endpoint.id] - finishing[endpoint.id];
            const int room = std::min({kEndpointDeliveriesInFlightMax - used,
                                       kDeliveriesInFlightMax - (total_busy - static_cast<int>(finished.size())) -
                                           static_cast<int>(claimed.size()),
                                       kDeliveryRoundMax - static_cast<int>(claimed.size())});
            if (room <= 0) continue;
            TALLY_ASSIGN_OR_RETURN(auto due, events.ClaimDueDeliveries(endpoint.id, now, now + kDeliveryLeaseMs, room));
            const auto secrets = SigningSecrets(endpoint, now);
            for (auto& d : due) {
                TALLY_ASSIGN_OR_RETURN(auto event, events.GetEventBySeq(d.event_seq));
                if (!event || now - d.event_created_ms > config_.retry.window_ms) {
                    d.state = DeliveryState::kFailed;
                    d.lease_until_ms.reset();
                    d.last_error = event ? "not delivered within the retry window" : "the event was pruned";
                    TALLY_TRY(events.UpdateDelivery(d));
                    continue;
                }
                OutgoingDelivery out;
                out.delivery_id = d.id;
                out.url = endpoint.url;
                out.signature = SignatureHeader(hasher_, now / 1000, event->payload, secrets);
                out.body = std::move(event->payload);
                out.event_id = event->id;
                out.event_type = event->type;
                claimed.emplace_back(endpoint.id, std::move(out));
            }
        }
        if (now >= next_prune_ms_) {
            TALLY_TRY(events.PruneEvents(now - config_.event_retention_ms, kEventPruneBatchMax));
        }
        return {};
    });
    if (!s.ok()) {
        // Nothing was recorded: keep the outcomes for the next round (their leases still hold the deliveries).
        std::lock_guard lock(mu_);
        finished_.insert(finished_.end(), finished.begin(), finished.end());
        return s.error();
    }
    if (now >= next_prune_ms_) next_prune_ms_ = now + 60'000;
    for (const auto& a : attempts) metrics_.EventDeliveryAttempt(a.outcome, a.attempt_seconds, a.age_seconds);
    {
        std::lock_guard lock(mu_);
        for (const auto& outcome : finished) {
            if (auto it = in_flight_.find(outcome.delivery_id); it != in_flight_.end()) {
                if (--in_flight_per_endpoint_[it->second] <= 0) in_flight_per_endpoint_.erase(it->second);
                in_flight_.erase(it);
            }
        }
        for (const auto& [endpoint_id, out] : claimed) {
            in_flight_[out.delivery_id] = endpoint_id;
            ++in_flight_per_endpoint_[endpoint_id];
        }
    }
    for (auto& [endpoint_id, out] : claimed) {
        sender_.Send(std::move(out), kDeliveryTimeoutMs, [this](DeliveryOutcome outcome) {
            std::lock_guard lock(mu_);
            finished_.push_back(std::move(outcome));
            cv_.notify_one();
        });
    }
    return next_due;
}

Status EventDispatcher::Record(StoreTx& tx, std::map<std::string, WebhookEndpointRecord>& endpoints,
                               const DeliveryOutcome& outcome, int64_t now_ms, std::vector<Attempt>& attempts) {
    EventStoreTx& events = tx.events();
    TALLY_ASSIGN_OR_RETURN(auto delivery, events.GetDelivery(outcome.delivery_id));
    if (!delivery || delivery->state != DeliveryState::kPending) return {};  // its endpoint was deleted meanwhile
    const auto found = endpoints.find(delivery->endpoint_id);
    WebhookEndpointRecord* endpoint = found == endpoints.end() ? nullptr : &found->second;
    const bool ok = outcome.status >= 200 && outcome.status < 300;
    std::string error = outcome.error;
    if (!ok && error.empty()) error = "the endpoint answered HTTP " + std::to_string(outcome.status);
    if (error.size() > kDeliveryErrorBytesMax) error.resize(kDeliveryErrorBytesMax);
    TALLY_TRY(events.InsertDeliveryAttempt({0, delivery->id, delivery->endpoint_id, delivery->event_id,
                                            now_ms - outcome.latency_ms, outcome.status, outcome.latency_ms,
                                            ok ? "" : error}));
    delivery->attempts += 1;
    delivery->lease_until_ms.reset();
    delivery->last_status = outcome.status;
    delivery->last_error = ok ? "" : error;
    const double attempt_seconds = static_cast<double>(outcome.latency_ms) / 1000.0;
    const double age_seconds = static_cast<double>(now_ms - delivery->event_created_ms) / 1000.0;
    if (ok) {
        attempts.push_back({"delivered", attempt_seconds, age_seconds});
        delivery->state = DeliveryState::kDelivered;
        delivery->delivered_ms = now_ms;
        if (endpoint && endpoint->failing_since_ms) {
            endpoint->failing_since_ms.reset();
            TALLY_TRY(events.UpdateEndpoint(*endpoint));
        }
        return events.UpdateDelivery(*delivery);
    }
    const auto next = NextDeliveryAttemptMs(config_.retry, delivery->event_created_ms, delivery->attempts, now_ms,
                                            RandomPermille());
    if (next) {
        delivery->next_attempt_ms = *next;
    } else {
        delivery->state = DeliveryState::kFailed;
    }
    attempts.push_back({next ? "retrying" : "failed", attempt_seconds, age_seconds});
    TALLY_TRY(events.UpdateDelivery(*delivery));
    if (!endpoint) return {};
    if (!endpoint->failing_since_ms) {
        endpoint->failing_since_ms = now_ms;
        return events.UpdateEndpoint(*endpoint);
    }
    if (!endpoint->disabled && ShouldDisableEndpoint(config_.retry, *endpoint->failing_since_ms, now_ms)) {
        endpoint->disabled = true;
        endpoint->disabled_reason = "every delivery failed for " + std::to_string(config_.retry.window_ms / 3'600'000) +
                                    " hours; last error: " + error;
        TALLY_TRY(events.UpdateEndpoint(*endpoint));
        TALLY_TRY(tx.audit().Append({0, CustomerId(""), Timestamp(now_ms / 1000), "webhook_endpoint_disabled", "enabled",
                                  "disabled", "time:delivery_failures", endpoint->id + " " + endpoint->url + ": " +
                                                                            endpoint->disabled_reason}));
    }
    return {};
}

}  // namespace tally
