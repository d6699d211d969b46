#pragma once
// Delivers the outbox's events to the app's endpoints: signed as Stripe signs, retried on Stripe's schedule, one
// at a time per (endpoint, object) in event order, never letting a slow endpoint hold up the others.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "app/ports.hpp"
#include "app/store.hpp"
#include "domain/app_events.hpp"

namespace tally {

constexpr int kDeliveriesInFlightMax = 512;        // HTTP requests to all endpoints at once
constexpr int kEndpointDeliveriesInFlightMax = 64;  // ... to one endpoint: a slow one keeps the rest of the slots free
constexpr int64_t kDeliveryTimeoutMs = 10'000;      // a 2xx within this counts as delivered (Stripe: 10 s... 30 s)
constexpr int64_t kDeliveryLeaseMs = kDeliveryTimeoutMs + 20'000;  // a crashed dispatcher's claims lapse after this
constexpr size_t kDeliveryResponseBytesMax = size_t{64} * 1024;  // read (and ignored) of a receiver's answer
constexpr int kDeliveryErrorBytesMax = 500;
constexpr int64_t kSecretRollOverlapMs = int64_t{24} * 3600 * 1000;  // the old secret also signs this long
constexpr int kEventPruneBatchMax = 1000;
constexpr int kDispatcherPollMs = 1000;  // also looks for due retries this often without being told
// Webhook ingestion comes first (it is what Stripe waits on): while at least kDeliveryDeferBacklogMin webhook
// deliveries wait for their commit (ingestion is saturated; a few always wait at any rate, and deferring to those
// doubled the events' p99 in bench/events), a round waits, at most kDeliveryDeferMsMax. A round records plus
// claims at most kDeliveryRoundMax deliveries, so it holds the write lock briefly.
constexpr size_t kDeliveryDeferBacklogMin = 12;
constexpr int kDeliveryDeferMsMax = 100;
constexpr int kDeliveryRoundMax = 128;
constexpr int kDispatcherNiceIncrement = 10;  // its CPU priority below the HTTP threads (nice levels)

/// One signed POST to an endpoint.
struct OutgoingDelivery {
    int64_t delivery_id = 0;
    std::string url;
    std::string body;
    std::string signature;  // the Stripe-Signature header value
    std::string event_id;
    std::string event_type;
};

/// What came of an OutgoingDelivery: an HTTP status (0 if none: refused, timed out, ...) and an error text.
struct DeliveryOutcome {
    int64_t delivery_id = 0;
    int status = 0;
    std::string error;
    int64_t latency_ms = 0;
};

/// Sends HTTP requests asynchronously (a port: libcurl's multi interface implements it). Thread-safe; |done| runs
/// on the sender's own thread, exactly once per Send, also when the sender is stopped.
class WebhookSender {
public:
    virtual ~WebhookSender() = default;
    virtual void Send(OutgoingDelivery delivery, int64_t timeout_ms, std::function<void(DeliveryOutcome)> done) = 0;
};

struct DispatcherConfig {
    DeliveryRetryPolicy retry;
    int64_t event_retention_ms = int64_t{30} * 86'400'000;  // events (and their deliveries) older than this are pruned
};

/// The `Stripe-Signature` value for |body| at |unix_seconds|: `t=<s>,v1=<hex>` with one v1 per secret (during a
/// roll, the new secret's first). Stripe's scheme: HMAC-SHA256 over "<t>.<body>" keyed with the whole secret.
std::string SignatureHeader(const SecretHasher& hasher, int64_t unix_seconds, const std::string& body,
                            const std::vector<std::string>& secrets);

/// The secrets that sign deliveries to |endpoint| at |now_ms|: its secret, plus the previous one during a roll.
std::vector<std::string> SigningSecrets(const WebhookEndpointRecord& endpoint, int64_t now_ms);

/// Runs deliveries on its own thread: claims due deliveries per endpoint (leased in the store, so several nodes can
/// share the work), sends them through the WebhookSender, and records each outcome (attempt log, retry schedule,
/// endpoint health: disabled, with an audit entry, after failing for the retry window). Notify() wakes it when
/// the outbox wrote deliveries. Thread-safe.
class EventDispatcher {
public:
    /// |ingest_backlog| (optional) reports webhook deliveries waiting for their commit; rounds defer to them.
    EventDispatcher(Store& store, WebhookSender& sender, const SecretHasher& hasher, const Clock& clock,
                    DispatcherConfig config, std::function<size_t()> ingest_backlog = {},
                    Metrics& metrics = NullMetrics::Instance());
    ~EventDispatcher();
    void Start();
    void Notify();
    /// Stops claiming, waits for the deliveries in flight (each bounded by kDeliveryTimeoutMs) and records them.
    void Stop();
    /// Deliveries sent and not yet recorded.
    size_t in_flight();

private:
    struct Attempt {  // a recorded outcome, reported to Metrics once its transaction commits
        const char* outcome;
        double attempt_seconds;
        double age_seconds;
    };
    void Run();
    /// Records finished deliveries, claims and sends due ones; returns when the next retry is due (if any).
    Result<std::optional<int64_t>> Round();
    Status Record(StoreTx& tx, std::map<std::string, WebhookEndpointRecord>& endpoints, const DeliveryOutcome& outcome,
                  int64_t now_ms, std::vector<Attempt>& attempts);
    int RandomPermille();

    Store& store_;
    WebhookSender& sender_;
    const SecretHasher& hasher_;
    const Clock& clock_;
    const DispatcherConfig config_;
    const std::function<size_t()> ingest_backlog_;
    Metrics& metrics_;

    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    bool pending_ = false;
    std::vector<DeliveryOutcome> finished_;                 // guarded by mu_
    std::map<int64_t, std::string> in_flight_;              // delivery id -> endpoint id; guarded by mu_
    std::map<std::string, int> in_flight_per_endpoint_;     // guarded by mu_
    int64_t next_prune_ms_ = 0;                             // dispatcher thread only
    std::thread thread_;
};

}  // namespace tally
