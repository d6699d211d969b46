#pragma once
// The HTTP API v1 and the Stripe webhook endpoint.
#include <boost/json/object.hpp>

#include <functional>
#include <initializer_list>
#include <span>
#include <string>

#include "adapters/http/server.hpp"
#include "app/api_keys.hpp"
#include "app/billing_history.hpp"
#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/idempotency.hpp"
#include "app/subscription_service.hpp"
#include "app/member_service.hpp"
#include "app/plan_service.hpp"
#include "app/usage_service.hpp"
#include "app/credit_purchases.hpp"
#include "app/credit_service.hpp"
#include "app/flag_service.hpp"
#include "app/write_group.hpp"
#include "app/webhook_processor.hpp"
#include "app/webhook_endpoints.hpp"
#include "app/webhook_receiver.hpp"

namespace tally::http {

constexpr size_t kApiBodyBytesMax = size_t{64} * 1024;  // above this a /v1 body gets 413 (webhooks: 512 KiB)
constexpr size_t kUsageBatchBodyBytesMax = size_t{1024} * 1024;  // POST /v1/usage/batch
constexpr size_t kUsageBatchEventsMax = 1000;                    // events in one POST /v1/usage/batch
constexpr size_t kUsageBatchSerializedMetersMax = 64;  // a batch over more meters takes no per-meter lock
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
    const Clock& clock;
    StripeHealth stripe;
    std::string version;
    Metrics& metrics = NullMetrics::Instance();
    std::function<std::string()> render_metrics;  // GET /metrics body (Prometheus text); empty: 404
    MemberService* members = nullptr;  // organizations' members and customer sessions; null: those routes are 404
    BillingHistoryService* history = nullptr;  // invoices and payments lists; null: those routes are 404
    SubscriptionService* subscriptions = nullptr;  // subscriptions through Tally; null: those routes are 404
    PlanService* plans = nullptr;  // plans at runtime; null: the /v1/plans routes are 404
    UsageService* usage = nullptr;  // usage limits; null: /v1/usage, /v1/check and the usage summary are 404
    FlagService* flags = nullptr;   // rollout flags; null: /v1/flags and flag checks are 404
    WriteGroupCommitter* commits = nullptr;  // group commit of recorded usage; null: each write commits on its own
    CreditService* credits = nullptr;  // prepaid credits; null: the /v1/credits routes are 404
    CreditPurchaseService* credit_purchases = nullptr;  // credit bundles; null: bundles and purchases are 404
};

/// Who may call a route.
enum class Access : uint8_t {
    kPublic,           // no credentials: health, metrics, the Stripe webhook, the API reference, the plans
    kApiKey,           // an API key: read_only keys may GET, every other method needs an admin key
    kApiKeyOrSession,  // an API key, or a customer session token acting inside its own customer
};

struct Call;
using RouteHandler = Response (*)(const ApiDeps& deps, const Call& call);
/// A handler that answers later, from another thread (the Stripe webhook answers once its event is durable).
using AsyncRouteHandler = void (*)(const ApiDeps& deps, Request&& req, const Responder& respond);
/// An authenticated handler that may answer later, from another thread (a recorded usage check answers once its
/// group commit is durable). It must copy what it keeps of |call|: the request lives only until it returns.
using CallAsyncRouteHandler = void (*)(const ApiDeps& deps, const Call& call, const Responder& respond);
/// One route of the table: |path| is a template ("/v1/customers/{id}/members/{user}") whose {…} segments match
/// any one non-empty path segment (percent-decoded on its own) and reach the handler as Call::params, in order.
/// A GET route also answers HEAD.
struct Route {
    const char* method;  // "GET" | "POST" | "DELETE"
    const char* path;
    Access access;
    RouteHandler handler;
    AsyncRouteHandler async = nullptr;  // set instead of |handler| for a public route that answers asynchronously
    CallAsyncRouteHandler call_async = nullptr;  // set instead of |handler| for an authenticated one
};

/// Every route Tally serves, in matching order; api/openapi.yaml describes exactly these (a test holds them equal).
std::span<const Route> ApiRoutes();

/// The route template of |req| for metrics labels: "/v1/customers/{id}/entitlements", never a raw id, and "other"
/// for paths Tally does not serve (bounded label values).
std::string RouteTemplate(const Request& req);

/// Routes requests through ApiRoutes() to their handlers and renders results. Thread-safe. No exception escapes
/// Handle: a bug becomes a 500 `api_error` whose id is also in the log.
class Api {
public:
    explicit Api(ApiDeps deps) : d_(std::move(deps)) {}
    void Handle(Request req, const Responder& respond);

private:
    /// |route| (null: none has this method and path), its path parameters, and the methods the path has (|allowed|,
    /// when |route| is null): the route table is searched once per request, by Handle.
    void HandleUnguarded(Request req, const Responder& respond, const Route* route, std::vector<std::string> params,
                         const std::string& allowed);

    ApiDeps d_;
};

/// The JSON object body of |req|, rejecting parameters not in |allowed| as Stripe does. kPayloadTooLarge over
/// kApiBodyBytesMax; kInvalidArgument for a missing body (kParameterMissing), malformed JSON (kMalformedJson), a
/// non-object, or an unknown parameter (kParameterUnknown, param = its name).
Result<boost::json::object> BindJsonBody(const Request& req, std::initializer_list<const char*> allowed,
                                         size_t max_bytes = kApiBodyBytesMax);

/// Maps an Error to its HTTP status and Stripe-style error body; the code is the error's reason when it has one.
Response ErrorResponse(const Error& error);
/// ErrorResponse with another HTTP status (405 for a wrong method, say).
Response ErrorResponse(const Error& error, int status);
/// A 500 `api_error` carrying a fresh error id; logs the id with |what|.
Response InternalErrorResponse(const std::string& what);

}  // namespace tally::http
