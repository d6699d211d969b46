#pragma once
// The app's webhook endpoints and the event log behind them: registering, updating, deleting, rolling secrets,
// listing events and delivery attempts, and redelivering an event.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "app/ports.hpp"
#include "app/store.hpp"

namespace tally {

constexpr int kWebhookEndpointCountMax = 16;
constexpr size_t kEndpointDescriptionBytesMax = 1000;
constexpr int kEventPageSizeMax = 100;
constexpr int kWebhookSecretRandomBytes = 24;

struct EndpointCreate {
    std::string url;
    std::vector<std::string> enabled_events;
    std::string description;
};

/// Fields left unset are unchanged.
struct EndpointUpdate {
    std::optional<std::string> url;
    std::optional<std::vector<std::string>> enabled_events;
    std::optional<std::string> description;
    std::optional<bool> disabled;
};

/// A page of events, newest first.
struct EventPage {
    std::vector<AppEventRecord> events;
    bool has_more = false;
};

/// Use cases of the endpoints and events API. Thread-safe (state lives in the Store). Every change is audited
/// (customer "" and cause "admin:<key id>").
class WebhookEndpointService {
public:
    /// |on_new_deliveries| runs after a change that queued deliveries (a redelivery, an endpoint enabled again).
    WebhookEndpointService(Store& store, const SecretHasher& hasher, const Clock& clock,
                           std::function<void()> on_new_deliveries = {});

    /// A new endpoint with a fresh `whsec_` secret (in the result; the caller shows it once). kInvalidArgument for
    /// a bad url (reason kUrlInvalid), enabled_events (param `enabled_events[i]`) or description; kInvalidArgument
    /// with reason kResourceLimitExceeded past kWebhookEndpointCountMax endpoints.
    Result<WebhookEndpointRecord> Create(StoreTx& tx, const EndpointCreate& create, const std::string& actor);
    /// kNotFound for an unknown id; the same validation as Create for the fields given.
    Result<WebhookEndpointRecord> Update(StoreTx& tx, const std::string& id, const EndpointUpdate& update,
                                         const std::string& actor);
    /// Deletes the endpoint and its pending deliveries; returns it as it was. kNotFound for an unknown id.
    Result<WebhookEndpointRecord> Delete(StoreTx& tx, const std::string& id, const std::string& actor);
    /// A new secret; the old one keeps signing (a second v1) for kSecretRollOverlapMs. kNotFound for an unknown id.
    Result<WebhookEndpointRecord> RollSecret(StoreTx& tx, const std::string& id, const std::string& actor);
    Result<WebhookEndpointRecord> Get(const std::string& id);
    Result<std::vector<WebhookEndpointRecord>> List();

    /// kNotFound for an unknown (or pruned) id.
    Result<AppEventRecord> GetEvent(const std::string& id);
    /// |filter|.limit in 1..kEventPageSizeMax; |starting_after| an event id (kInvalidArgument if unknown).
    Result<EventPage> ListEvents(AppEventFilter filter, const std::string& starting_after);
    /// Attempts to endpoint |id|, newest first; |starting_after| an attempt id. kNotFound for an unknown endpoint.
    Result<std::vector<DeliveryAttemptRecord>> ListAttempts(const std::string& id, std::optional<int64_t> starting_after,
                                                            int limit);
    /// Queues event |event_id| again for endpoint |endpoint_id|, due now. kNotFound for an unknown event or
    /// endpoint (param `endpoint`).
    Result<DeliveryRecord> Redeliver(StoreTx& tx, const std::string& event_id, const std::string& endpoint_id,
                                     const std::string& actor);
    /// Runs the listener (after the caller's transaction committed).
    void NotifyNewDeliveries() const;

private:
    Status CheckDescription(const std::string& description) const;

    Store& store_;
    const SecretHasher& hasher_;
    const Clock& clock_;
    std::function<void()> on_new_deliveries_;
};

}  // namespace tally
