#pragma once
// The transactional outbox of Tally's own events: an event and its pending deliveries are written in the same
// store transaction as the change they describe, so a change that rolls back emits nothing and a committed one
// is never lost (the dispatcher, event_dispatcher.hpp, delivers them later, also after a crash).
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "app/billing_service.hpp"
#include "app/store.hpp"
#include "app/user_view.hpp"
#include "app/usage_service.hpp"

namespace tally {

constexpr size_t kAppEventPayloadBytesMax = size_t{256} * 1024;  // an event's envelope; larger is a bug (kInternal)

/// Renders Tally's API objects and event envelopes as JSON text. A port: the HTTP adapter's views implement it,
/// so the object in an event is byte for byte what the API returns for it. Thread-safe.
class ApiObjectRenderer {
public:
    /// A previous_attributes value.
    using Value = std::variant<std::nullptr_t, bool, int64_t, std::string, Metadata>;  // Metadata: an object
    using Attributes = std::vector<std::pair<std::string, Value>>;

    virtual ~ApiObjectRenderer() = default;
    /// GET /v1/customers/{id}.
    virtual std::string Customer(const CustomerView& view) const = 0;
    /// GET /v1/customers/{id}/entitlements.
    virtual std::string Entitlements(const CustomerView& view) const = 0;
    /// {"id","object":"subscription","customer",...}: |customer_id| is Tally's customer.
    virtual std::string Subscription(const SubscriptionRecord& subscription, const std::string& customer_id) const = 0;
    /// {"id","object":"invoice","customer",...}.
    virtual std::string Invoice(const InvoiceRecord& invoice, const std::string& customer_id) const = 0;
    /// GET /v1/customers/{id}/members/{user}: {"object":"member","customer","user","email","role","created","updated"}.
    virtual std::string Member(const MemberRecord& member) const = 0;
    /// GET /v1/users/{user}: {"object":"user","id","effective_role","memberships":[...]}.
    virtual std::string User(const UserView& user) const = 0;
    /// GET /v1/plans/{id}: {"id","object":"plan","name","prices":[...],"stripe_sync",...}.
    virtual std::string Plan(const PlanRecord& plan) const = 0;
    /// {"object":"usage_threshold","customer","meter","threshold","current","limit","period_start","period_end"}.
    virtual std::string UsageThreshold(const CustomerId& customer, const MeterState& state, int threshold) const = 0;
    /// GET /v1/customers/{id}/credit_grants's item: {"id","object":"credit_grant","customer","type","amount",
    /// "remaining","priority","expires_at","transfer","reason","created"}.
    /// A customer's auto-purchase settings and state (credits.auto_purchase_*), with the purchase the event is about.
    virtual std::string AutoPurchase(const AutoPurchaseRecord& settings, int64_t purchases_this_month,
                                     const CreditPurchaseRecord* purchase) const = 0;
    /// A credit purchase (credits.purchase_*).
    virtual std::string CreditPurchase(const CreditPurchaseRecord& purchase) const = 0;
    virtual std::string CreditGrant(const CreditGrantRecord& grant) const = 0;
    /// {"object":"credit_threshold","customer","grant","threshold","used","allowance","period_start","period_end"}.
    virtual std::string CreditThreshold(const CreditThresholdCrossing& crossing) const = 0;
    /// Stripe's event envelope around |object_json|: {"id","object":"event","api_version","created","type",
    /// "livemode":false,"customer","sequence","data":{"object":...,"previous_attributes":{...}}}; previous_attributes
    /// is left out when |previous| is empty.
    virtual std::string Envelope(const AppEventRecord& event, std::string_view object_json,
                                 const Attributes& previous) const = 0;
};

/// Writes events into the caller's transaction. Thread-safe (no state but the listener, set before use).
class EventOutbox {
public:
    EventOutbox(const ApiObjectRenderer& renderer, const Clock& clock);

    /// Records an event of |type| (one of AppEventTypes()) about |object_id| inside |tx|, with the next per-object
    /// sequence number, and a pending delivery to every enabled endpoint whose enabled_events want it.
    /// kInternal for an unknown type or an envelope over kAppEventPayloadBytesMax (both bugs).
    Status Emit(StoreTx& tx, std::string_view type, const std::string& object_id, const std::string& customer_id,
                const std::string& object_json, const ApiObjectRenderer::Attributes& previous = {});
    /// Called after Emit wrote deliveries (from inside the transaction: the dispatcher's own transaction runs after
    /// this one ends, since the store serialises writes).
    void SetListener(std::function<void()> on_deliveries);

    const ApiObjectRenderer& renderer() const { return renderer_; }

private:
    const ApiObjectRenderer& renderer_;
    const Clock& clock_;
    std::function<void()> on_deliveries_;
};

}  // namespace tally
