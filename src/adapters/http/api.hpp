#pragma once
// The HTTP API v1 and the Stripe webhook endpoint.
#include <boost/json/object.hpp>

#include <functional>
#include <initializer_list>
#include <string>

#include "adapters/http/server.hpp"
#include "app/api_keys.hpp"
#include "app/billing_history.hpp"
#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/idempotency.hpp"
#include "app/subscription_service.hpp"
#include "app/member_service.hpp"
#include "app/webhook_processor.hpp"
#include "app/webhook_endpoints.hpp"
#include "app/webhook_receiver.hpp"

namespace tally::http {

constexpr size_t kApiBodyBytesMax = size_t{64} * 1024;  // above this a /v1 body gets 413 (webhooks: 512 KiB)
constexpr int kListPageSizeDefault = 100;
constexpr int kListPageSizeMax = 500;

/// What /health says about Stripe: how Tally reaches it, and whether Tally's webhook endpoint is still
/// registered there ("registered" | "missing" | "unknown" when it cannot be checked).
struct StripeHealth {
    std::string mode;  // "live" | "test" | "sandbox" | "not_configured"
    std::function<std::string()> webhook_endpoint;
};

struct ApiDeps {
    Store& store;
    BillingService& billing;
    WebhookProcessor& processor;
    WebhookReceiver& receiver;
    CheckoutService& checkout;
    ApiKeyService& keys;
    IdempotencyService& idempotency;
    WebhookEndpointService& endpoints;
    const Catalog& catalog;
    const Clock& clock;
    StripeHealth stripe;
    std::string version;
    Metrics& metrics = NullMetrics::Instance();
    std::function<std::string()> render_metrics;  // GET /metrics body (Prometheus text); empty: 404
    MemberService* members = nullptr;  // organizations' members and customer sessions; null: those routes are 404
    BillingHistoryService* history = nullptr;  // invoices and payments lists; null: those routes are 404
    SubscriptionService* subscriptions = nullptr;  // subscriptions through Tally; null: those routes are 404
};

/// The route template of |req| for metrics labels: "/v1/customers/{id}/entitlements", never a raw id, and "other"
/// for paths Tally does not serve (bounded label values).
std::string RouteTemplate(const Request& req);

/// Routes requests to use cases and renders results. Thread-safe. No exception escapes Handle: a bug becomes a
/// 500 `api_error` whose id is also in the log.
class Api {
public:
    explicit Api(ApiDeps deps) : d_(std::move(deps)) {}
    void Handle(Request req, const Responder& respond);

private:
    void HandleUnguarded(Request req, const Responder& respond);
    Response Dispatch(const Request& req, const Principal& principal, const IdempotencyRequest& idem);
    void HandleWebhook(Request req, const Responder& respond);
    Response Health();
    /// /v1/webhook_endpoints[...] and /v1/events[...].
    Response DispatchEvents(const Request& req, const Principal& principal, const IdempotencyRequest& idem);
    /// A request made with a customer session token: only its customer's routes, everything else as missing.
    Response DispatchSession(const Request& req, const SessionGrant& grant, MemberRole role,
                             const IdempotencyRequest& idem);
    /// GET /v1/customers: a lookup by external_id or stripe_customer_id, or a filtered page.
    Response ListCustomers(const Request& req);
    /// /v1/customers/{id}/members[/{user}]; |actor_role| is the session user's role (nullopt: an API key).
    Response Members(const Request& req, const IdempotencyRequest& idem, const std::string& actor,
                     std::optional<MemberRole> actor_role);
    /// GET /v1/invoices, /v1/payments and /v1/customers/{id}/invoices|payments (|customer| from the path, or "").
    Response History(const Request& req, bool invoices, const std::string& customer);
    /// /v1/subscriptions[...] and GET /v1/customers/{id}/subscriptions. |scope| set for a customer session: only
    /// that customer's subscriptions exist, and changes need a role that may manage billing (else 403).
    struct SessionScope {
        CustomerId customer;
        MemberRole role;
    };
    Response Subscriptions(const Request& req, const IdempotencyRequest& idem, const std::optional<SessionScope>& scope);
    /// POST /v1/checkout_sessions and /v1/billing_portal_sessions; |authorize| (may be empty) vets the customer.
    Response HostedSession(const Request& req, const IdempotencyRequest& idem,
                           const std::function<Status(const std::string& customer)>& authorize);

    ApiDeps d_;
};

/// The JSON object body of |req|, rejecting parameters not in |allowed| as Stripe does. kPayloadTooLarge over
/// kApiBodyBytesMax; kInvalidArgument for a missing body (kParameterMissing), malformed JSON (kMalformedJson), a
/// non-object, or an unknown parameter (kParameterUnknown, param = its name).
Result<boost::json::object> BindJsonBody(const Request& req, std::initializer_list<const char*> allowed);

/// Maps an Error to its HTTP status and Stripe-style error body; the code is the error's reason when it has one.
Response ErrorResponse(const Error& error);
/// ErrorResponse with another HTTP status (405 for a wrong method, say).
Response ErrorResponse(const Error& error, int status);
/// A 500 `api_error` carrying a fresh error id; logs the id with |what|.
Response InternalErrorResponse(const std::string& what);

}  // namespace tally::http
