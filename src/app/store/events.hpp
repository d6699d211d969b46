#pragma once
// The events aggregate of the Store port: Tally's own events (the outbox), the app's webhook endpoints, and
// the deliveries of events to endpoints with each attempt. Reached from a transaction as StoreTx::events().
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

/// One event as committed with the change it describes. |payload| is the whole JSON envelope as delivered.
struct AppEventRecord {
    int64_t seq = 0;         // commit order across all events (assigned by the store)
    std::string id;          // evt_...
    std::string type;        // one of AppEventTypes()
    int64_t created_ms = 0;  // Unix milliseconds; the envelope's `created` is this in seconds
    std::string object_id;   // the object the event is about (cust_..., sub_..., in_...)
    int64_t object_sequence = 0;  // 1, 2, ... per object_id: the receiver's ordering key
    std::string customer_id;      // Tally's customer the object belongs to ("" if none)
    std::string payload;
};

/// An endpoint the app registered to receive events.
struct WebhookEndpointRecord {
    std::string id;  // we_...
    std::string url;
    std::string description;
    std::vector<std::string> enabled_events;  // types, or "*"
    bool disabled = false;
    std::string disabled_reason;               // why Tally disabled it ("" when the app did, or when enabled)
    std::string secret;                        // whsec_...: signs every delivery
    std::string previous_secret;               // after roll_secret: also signs until previous_secret_expires_ms
    std::optional<int64_t> previous_secret_expires_ms;
    std::optional<int64_t> failing_since_ms;   // first failure since the last success; null when healthy
    int64_t created_ms = 0;
};

enum class DeliveryState { kPending, kDelivered, kFailed };
const char* DeliveryStateName(DeliveryState state);

/// One event's delivery to one endpoint (the outbox row the dispatcher works from).
struct DeliveryRecord {
    int64_t id = 0;
    int64_t event_seq = 0;
    std::string event_id;
    std::string endpoint_id;
    std::string object_id;  // deliveries to one endpoint about one object go one at a time, in event order
    DeliveryState state = DeliveryState::kPending;
    int attempts = 0;
    int64_t next_attempt_ms = 0;
    std::optional<int64_t> lease_until_ms;  // claimed by a dispatcher until then (a crashed one's claim lapses)
    int64_t event_created_ms = 0;
    std::optional<int64_t> delivered_ms;
    int last_status = 0;  // HTTP status of the last attempt; 0 if none or no response
    std::string last_error;
};

/// One HTTP attempt of a delivery.
struct DeliveryAttemptRecord {
    int64_t id = 0;
    int64_t delivery_id = 0;
    std::string endpoint_id;
    std::string event_id;
    int64_t at_ms = 0;
    int status_code = 0;  // 0: no HTTP response (refused, timed out)
    int64_t latency_ms = 0;
    std::string error;    // "" when the receiver answered 2xx
};

/// A filter on the event log: every set field must match.
struct AppEventFilter {
    std::string type;
    std::string customer_id;
    std::optional<int64_t> created_gte_ms;
    std::optional<int64_t> created_lte_ms;
    std::optional<int64_t> before_seq;  // pagination: events committed before this one (newest first)
    int limit = 100;
};

/// Reads and writes of the events aggregate inside one transaction. Not thread-safe (one transaction's thread).
class EventStoreTx {
public:
    virtual ~EventStoreTx() = default;

    /// The next per-object sequence number for |object_id| (1 for the first), counted even after pruning.
    virtual Result<int64_t> NextObjectSequence(const std::string& object_id) = 0;
    /// Appends |event|; returns its seq.
    virtual Result<int64_t> InsertEvent(const AppEventRecord& event) = 0;
    virtual Result<std::optional<AppEventRecord>> GetEvent(const std::string& id) = 0;
    /// The event with |seq|, for the dispatcher (payload included).
    virtual Result<std::optional<AppEventRecord>> GetEventBySeq(int64_t seq) = 0;
    /// Newest first, matching |filter|.
    virtual Result<std::vector<AppEventRecord>> ListEvents(const AppEventFilter& filter) = 0;
    /// Deletes events created before |before_ms| with their deliveries and attempts, at most |limit| events;
    /// returns how many events.
    virtual Result<int> PruneEvents(int64_t before_ms, int limit) = 0;

    virtual Status InsertEndpoint(const WebhookEndpointRecord& endpoint) = 0;
    /// Replaces every field of endpoint |endpoint.id|.
    virtual Status UpdateEndpoint(const WebhookEndpointRecord& endpoint) = 0;
    /// Deletes the endpoint and its pending deliveries (its attempts stay until their event is pruned).
    virtual Status DeleteEndpoint(const std::string& id) = 0;
    virtual Result<std::optional<WebhookEndpointRecord>> GetEndpoint(const std::string& id) = 0;
    /// Oldest first.
    virtual Result<std::vector<WebhookEndpointRecord>> ListEndpoints() = 0;

    /// Appends |delivery| (state pending); returns its id.
    virtual Result<int64_t> InsertDelivery(const DeliveryRecord& delivery) = 0;
    /// Pending deliveries to |endpoint_id| due at |now_ms| whose lease (if any) lapsed, each the earliest pending one
    /// of its (endpoint, object); at most |limit|, earliest due first; leased until |lease_until_ms| by this call.
    virtual Result<std::vector<DeliveryRecord>> ClaimDueDeliveries(const std::string& endpoint_id, int64_t now_ms,
                                                                   int64_t lease_until_ms, int limit) = 0;
    virtual Result<std::optional<DeliveryRecord>> GetDelivery(int64_t id) = 0;
    /// Replaces state, attempts, next attempt, lease, delivered time and last status/error of |delivery.id|.
    virtual Status UpdateDelivery(const DeliveryRecord& delivery) = 0;
    /// The earliest time after |after_ms| at which a pending delivery to |endpoint_id| is due, if any (an index
    /// lookup: what is due already, or leased, is not looked at).
    virtual Result<std::optional<int64_t>> NextDeliveryDueMs(const std::string& endpoint_id, int64_t after_ms) = 0;
    /// How many deliveries are pending (queued, retrying or in flight), to every endpoint.
    virtual Result<int64_t> CountPendingDeliveries() = 0;
    virtual Status InsertDeliveryAttempt(const DeliveryAttemptRecord& attempt) = 0;
    /// Attempts to |endpoint_id|, newest first, before attempt id |before_id| when set, at most |limit|.
    virtual Result<std::vector<DeliveryAttemptRecord>> ListDeliveryAttempts(const std::string& endpoint_id,
                                                                            std::optional<int64_t> before_id,
                                                                            int limit) = 0;
};

}  // namespace tally
