#include "adapters/http/api.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>

#include "adapters/config/json_util.hpp"
#include "adapters/crypto.hpp"
#include "adapters/http/api_assets.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"
#include "domain/text.hpp"

#include <spdlog/spdlog.h>

namespace tally::http {

namespace bj = boost::json;

// ---- Helpers shared by the handlers (api_routes.hpp) ----

Response Json(int status, const bj::value& v) { return Response{status, bj::serialize(v), "application/json", {}}; }

Response List(const bj::array& data, const std::string& url, bool has_more) {
    return Json(200, bj::object{{"object", "list"}, {"data", data}, {"has_more", has_more}, {"url", url}});
}

Response Stored(const Result<IdempotentOutcome>& r) {
    if (!r.ok()) return ErrorResponse(r.error());
    Response resp{r->response.status, r->response.body, "application/json", {}};
    if (r->replayed) resp.headers.emplace_back("Idempotent-Replayed", "true");
    return resp;
}

StoredResponse Render(int status, const bj::value& v) { return StoredResponse{status, bj::serialize(v)}; }

Response RouteNotFound(const Request& req) {
    return ErrorResponse(Error{ErrorCode::kNotFound, "Unrecognized request URL (" + req.method + ": " + req.path + ")", "",
                               ErrorReason::kRouteNotFound});
}

Result<int> PageSize(const Request& req) {
    auto it = req.query.find("limit");
    if (it == req.query.end()) return kListPageSizeDefault;
    int limit = 0;
    const auto& s = it->second;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), limit);
    if (ec != std::errc() || p != s.data() + s.size() || limit < 1 || limit > kListPageSizeMax) {
        return InvalidArgument("limit must be an integer between 1 and " + std::to_string(kListPageSizeMax), "limit");
    }
    return limit;
}

Status OnlyQueryParams(const Request& req, std::initializer_list<const char*> allowed) {
    for (const auto& [k, v] : req.query) {
        bool known = false;
        for (const char* a : allowed) known = known || k == a;
        if (!known) return WithReason(InvalidArgument("Received unknown parameter: " + k, k), ErrorReason::kParameterUnknown);
    }
    return {};
}

Result<std::optional<int64_t>> IntQuery(const Request& req, const char* name) {
    auto it = req.query.find(name);
    if (it == req.query.end()) return std::optional<int64_t>();
    int64_t n = 0;
    const auto& v = it->second;
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || p != v.data() + v.size()) {
        return InvalidArgument(std::string(name) + " must be an integer", name);
    }
    return std::optional<int64_t>(n);
}

Result<std::optional<std::string>> MaybeString(const bj::object& body, const char* key) {
    const bj::value* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) return std::optional<std::string>();
    if (!v->is_string()) return InvalidArgument(std::string(key) + " must be a string", key);
    return std::optional<std::string>(std::string(v->get_string()));
}

Result<bj::object> OptionalJsonBody(const Request& req, std::initializer_list<const char*> allowed) {
    if (req.body.empty()) return bj::object();
    return BindJsonBody(req, allowed);
}

Result<std::string> IntervalParam(const bj::object& body) {
    TALLY_ASSIGN_OR_RETURN(std::string interval, json::OptionalString(body, "interval", ""));
    const bool has_interval = body.contains("interval") && !body.at("interval").is_null();
    if (has_interval && interval.empty()) return InvalidArgument("interval must be month or year", "interval");
    return has_interval ? interval : std::string("month");
}

Error NoSuchCustomer(const std::string& id, const std::string& param) {
    return NotFound("no such customer: '" + id + "'", param);
}

std::string Call::StripeIdempotencyKey() const {
    return idem.key.empty() ? "" : Sha256Hex(idem.api_key_id + ":" + idem.key);
}

Status Call::MayManageBilling() const {
    if (!session || tally::MayManageBilling(session->role)) return {};
    return Error{ErrorCode::kPermissionDenied,
                 std::string("a customer session of a ") + MemberRoleName(session->role) +
                     " may not change or pay for the subscription: owners and admins may",
                 "", ErrorReason::kNone};
}

Result<bj::object> BindJsonBody(const Request& req, std::initializer_list<const char*> allowed, size_t max_bytes) {
    if (req.body.size() > max_bytes) {
        return Error{ErrorCode::kPayloadTooLarge, "body exceeds " + std::to_string(max_bytes) + " bytes", "body",
                     ErrorReason::kPayloadTooLarge};
    }
    if (req.body.empty()) return MissingArgument("a JSON object body is required", "body");
    auto parsed = json::Parse(req.body);
    if (!parsed.ok()) return WithReason(parsed.error(), ErrorReason::kMalformedJson);
    bj::value v = std::move(parsed).value();
    if (!v.is_object()) return InvalidArgument("body must be a JSON object", "body");
    for (const auto& kv : v.get_object()) {
        bool known = false;
        for (const char* k : allowed) known = known || kv.key() == k;
        if (!known) {
            return WithReason(InvalidArgument("Received unknown parameter: " + std::string(kv.key()), std::string(kv.key())),
                              ErrorReason::kParameterUnknown);
        }
    }
    return std::move(v.get_object());
}

namespace {
Response ApiError(int status, const std::string& type, const std::string& code, const std::string& message,
                  const std::string& param = {}) {
    return Response{status, ErrorBody(type, code, message, param), "application/json", {}};
}
}  // namespace

Response ErrorResponse(const Error& e, int status) {
    Response r = ErrorResponse(e);
    r.status = status;
    return r;
}

Response InternalErrorResponse(const std::string& what) {
    // The id ties the client's report to the log line; the exception's text stays in the log.
    const std::string id = "err_" + RandomHex(8);
    if (auto logger = spdlog::get("tally")) {
        logger->error("\"msg\":\"unhandled exception in a request handler\",\"error_id\":\"{}\",\"what\":{}", id,
                      bj::serialize(bj::string(SanitizeUtf8(what))));
    }
    return ApiError(500, "api_error", "internal_error",
                    "An internal error occurred (" + id + "). It has been logged; please retry or report the id.");
}

Response ErrorResponse(const Error& e) {
    // The code is the error's reason when it has one, else the category's default; never read from the message.
    const std::string reason = ErrorReasonName(e.reason);
    const auto code = [&](const char* fallback) { return reason.empty() ? std::string(fallback) : reason; };
    const bool idempotency =
        e.reason == ErrorReason::kIdempotencyKeyReused || e.reason == ErrorReason::kIdempotencyKeyInUse;
    const char* request_type = idempotency ? "idempotency_error" : "invalid_request_error";
    switch (e.code) {
        case ErrorCode::kInvalidArgument:
            return ApiError(400, request_type, code("parameter_invalid"), e.message, e.param);
        case ErrorCode::kUnauthenticated:
            return ApiError(401, "authentication_error", code("unauthorized"), e.message);
        case ErrorCode::kPermissionDenied:
            return ApiError(403, "invalid_request_error", code("permission_denied"), e.message, e.param);
        case ErrorCode::kNotFound: return ApiError(404, "invalid_request_error", code("resource_missing"), e.message, e.param);
        case ErrorCode::kConflict: return ApiError(409, request_type, code("conflict"), e.message, e.param);
        case ErrorCode::kPayloadTooLarge:
            return ApiError(413, "invalid_request_error", code("payload_too_large"), e.message, e.param);
        case ErrorCode::kInsufficientCredits:
            return ApiError(402, "invalid_request_error", code("insufficient_credits"), e.message, e.param);
        case ErrorCode::kPaymentRequired:
            return ApiError(402, e.reason == ErrorReason::kCardDeclined ? "card_error" : "invalid_request_error",
                            code("payment_required"), e.message, e.param);
        case ErrorCode::kUnavailable: return ApiError(503, "api_error", code("service_unavailable"), e.message);
        case ErrorCode::kInternal: return ApiError(500, "api_error", code("internal_error"), e.message);
    }
    return ApiError(500, "api_error", "internal_error", e.message);
}


namespace {

/// The Bearer token of |req|, or kUnauthenticated.
Result<std::string_view> BearerToken(const Request& req) {
    const auto it = req.headers.find("authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (it == req.headers.end() || it->second.size() <= kBearer.size() || !it->second.starts_with(kBearer)) {
        return Error{ErrorCode::kUnauthenticated,
                     "You did not provide an API key. Send it as 'Authorization: Bearer <key>'.", "", ErrorReason::kNone};
    }
    return std::string_view(it->second).substr(kBearer.size());
}

using enum Access;
using namespace routes;

// The route table: every route Tally serves, who may call it, and its handler. api/openapi.yaml describes exactly
// these (tests/integration/api_contract_test.cpp). Literal segments never collide with a {…} at the same depth
// under the same prefix, so the order only matters for reading.
const Route kRoutes[] = {
    {"GET", "/health", kPublic, &Health},
    {"GET", "/metrics", kPublic, &Metrics},
    {"POST", "/webhooks/stripe", kPublic, nullptr, &ReceiveStripeWebhook},
    {"GET", "/billing/return", kPublic, &BillingReturn},
    {"GET", "/openapi.json", kPublic, &OpenApi},
    {"GET", "/docs", kPublic, &Docs},
    {"GET", "/docs/swagger-ui-bundle.js", kPublic, &DocsScript},
    {"GET", "/docs/swagger-ui.css", kPublic, &DocsStyle},
    {"GET", "/v1/plans", kPublic, &ListPlans},
    {"POST", "/v1/plans", kApiKey, &CreatePlan},
    {"GET", "/v1/plans/{id}", kApiKey, &GetPlan},
    {"POST", "/v1/plans/{id}", kApiKey, &UpdatePlan},
    {"DELETE", "/v1/plans/{id}", kApiKey, &ArchivePlan},

    {"POST", "/v1/customers", kApiKey, &CreateCustomer},
    {"GET", "/v1/customers", kApiKey, &ListCustomers},
    {"GET", "/v1/customers/{id}", kApiKeyOrSession, &GetCustomer},
    {"POST", "/v1/customers/{id}", kApiKey, &UpdateCustomer},
    {"GET", "/v1/customers/{id}/entitlements", kApiKeyOrSession, &GetEntitlements},
    {"POST", "/v1/customers/{id}/role_override", kApiKey, &SetRoleOverride},
    {"DELETE", "/v1/customers/{id}/role_override", kApiKey, &ClearRoleOverride},
    {"GET", "/v1/customers/{id}/members", kApiKeyOrSession, &ListMembers},
    {"POST", "/v1/customers/{id}/members", kApiKeyOrSession, &AddMember},
    {"GET", "/v1/customers/{id}/members/{user}", kApiKeyOrSession, &GetMember},
    {"POST", "/v1/customers/{id}/members/{user}", kApiKeyOrSession, &UpdateMember},
    {"DELETE", "/v1/customers/{id}/members/{user}", kApiKeyOrSession, &RemoveMember},
    {"GET", "/v1/customers/{id}/subscriptions", kApiKeyOrSession, &ListCustomerSubscriptions},
    {"GET", "/v1/customers/{id}/invoices", kApiKeyOrSession, &ListCustomerInvoices},
    {"GET", "/v1/customers/{id}/payments", kApiKeyOrSession, &ListCustomerPayments},
    {"GET", "/v1/customers/{id}/usage", kApiKeyOrSession, &GetUsage},
    {"GET", "/v1/customers/{id}/usage/history", kApiKeyOrSession, &GetUsageHistory},
    {"GET", "/v1/customers/{id}/flags", kApiKeyOrSession, &GetCustomerFlags},
    {"GET", "/v1/customers/{id}/credits", kApiKeyOrSession, &GetCredits},
    {"GET", "/v1/customers/{id}/credit_grants", kApiKeyOrSession, &ListCreditGrants},
    {"GET", "/v1/customers/{id}/credit_transactions", kApiKeyOrSession, &ListCreditTransactions},
    {"GET", "/v1/customers/{id}/credit_purchases", kApiKeyOrSession, &ListCreditPurchases},
    {"GET", "/v1/customers/{id}/auto_purchase", kApiKeyOrSession, &GetAutoPurchase},
    {"POST", "/v1/customers/{id}/auto_purchase", kApiKeyOrSession, &SetAutoPurchase},
    {"POST", "/v1/customers/{id}/auto_purchase/trigger", kApiKey, &TriggerAutoPurchase},
    {"GET", "/v1/customers/{id}/notifications", kApiKeyOrSession, &ListNotifications},
    {"POST", "/v1/customers/{id}/notifications/{notification}/dismiss", kApiKeyOrSession, &DismissNotification},
    {"GET", "/v1/customers/{id}/notification_preferences", kApiKeyOrSession, &GetNotificationPreferences},
    {"POST", "/v1/customers/{id}/notification_preferences", kApiKeyOrSession, &SetNotificationPreferences},
    {"GET", "/v1/customers/{id}/limit_overrides", kApiKey, &ListLimitOverrides},
    {"POST", "/v1/customers/{id}/limit_overrides", kApiKey, &SetLimitOverride},
    {"DELETE", "/v1/customers/{id}/limit_overrides/{meter}", kApiKey, &ClearLimitOverride},
    {"POST", "/v1/usage", kApiKey, nullptr, nullptr, &RecordUsage},
    {"POST", "/v1/usage/batch", kApiKey, nullptr, nullptr, &RecordUsageBatch},
    {"POST", "/v1/check", kApiKey, nullptr, nullptr, &CheckUsage},
    {"POST", "/v1/credits/deduct", kApiKey, nullptr, nullptr, &DeductCredits},
    {"POST", "/v1/credits/grants", kApiKey, &GrantCredits},
    {"POST", "/v1/credits/reservations", kApiKey, nullptr, nullptr, &CreateCreditReservation},
    {"GET", "/v1/credits/reservations/{id}", kApiKey, &GetCreditReservation},
    {"POST", "/v1/credits/reservations/{id}/capture", kApiKey, &CaptureCreditReservation},
    {"POST", "/v1/credits/reservations/{id}/release", kApiKey, &ReleaseCreditReservation},
    {"POST", "/v1/credits/transfers/{id}/reverse", kApiKey, &ReverseCreditTransfer},
    {"GET", "/v1/credits/bundles", kPublic, &ListCreditBundles},
    {"POST", "/v1/credits/purchases", kApiKey, &CreateCreditPurchase},
    {"GET", "/v1/credits/purchases/{id}", kApiKey, &GetCreditPurchase},
    {"POST", "/v1/credits/purchases/{id}/refund", kApiKey, &RefundCreditPurchase},
    {"POST", "/v1/credits/checkout_sessions", kApiKey, &CreateCreditCheckoutSession},
    {"GET", "/v1/flags", kApiKey, &ListFlags},
    {"GET", "/v1/flags/{name}", kApiKey, &GetFlag},
    {"POST", "/v1/flags/{name}", kApiKey, &UpdateFlag},
    {"POST", "/v1/customer_sessions", kApiKey, &CreateCustomerSession},
    {"DELETE", "/v1/customer_sessions/{id}", kApiKey, &RevokeCustomerSession},
    {"GET", "/v1/users/{user}", kApiKey, &GetUser},

    {"POST", "/v1/checkout_sessions", kApiKeyOrSession, &CreateCheckoutSession},
    {"POST", "/v1/billing_portal_sessions", kApiKeyOrSession, &CreatePortalSession},
    {"POST", "/v1/subscriptions", kApiKeyOrSession, &CreateSubscription},
    {"GET", "/v1/subscriptions", kApiKey, &ListSubscriptions},
    {"GET", "/v1/subscriptions/{id}", kApiKeyOrSession, &GetSubscription},
    {"POST", "/v1/subscriptions/{id}/preview_change", kApiKeyOrSession, &PreviewSubscriptionChange},
    {"POST", "/v1/subscriptions/{id}/change", kApiKeyOrSession, &ChangeSubscription},
    {"POST", "/v1/subscriptions/{id}/cancel", kApiKeyOrSession, &CancelSubscription},
    {"POST", "/v1/subscriptions/{id}/resume", kApiKeyOrSession, &ResumeSubscription},
    {"POST", "/v1/subscriptions/{id}/pause", kApiKeyOrSession, &PauseSubscription},
    {"POST", "/v1/subscriptions/{id}/unpause", kApiKeyOrSession, &UnpauseSubscription},
    {"GET", "/v1/invoices", kApiKey, &ListInvoices},
    {"GET", "/v1/payments", kApiKey, &ListPayments},

    {"GET", "/v1/api_keys", kApiKey, &ListApiKeys},
    {"POST", "/v1/api_keys", kApiKey, &CreateApiKey},
    {"DELETE", "/v1/api_keys/{id}", kApiKey, &RevokeApiKey},
    {"GET", "/v1/audit", kApiKey, &ListAudit},
    {"GET", "/v1/webhook_events", kApiKey, &ListWebhookEvents},
    {"GET", "/v1/webhook_events/{id}", kApiKey, &GetWebhookEvent},
    {"POST", "/v1/webhook_events/{id}/retry", kApiKey, &RetryWebhookEvent},
    {"GET", "/v1/webhook_endpoints", kApiKey, &ListWebhookEndpoints},
    {"POST", "/v1/webhook_endpoints", kApiKey, &CreateWebhookEndpoint},
    {"GET", "/v1/webhook_endpoints/{id}", kApiKey, &GetWebhookEndpoint},
    {"POST", "/v1/webhook_endpoints/{id}", kApiKey, &UpdateWebhookEndpoint},
    {"DELETE", "/v1/webhook_endpoints/{id}", kApiKey, &DeleteWebhookEndpoint},
    {"POST", "/v1/webhook_endpoints/{id}/roll_secret", kApiKey, &RollWebhookEndpointSecret},
    {"GET", "/v1/webhook_endpoints/{id}/deliveries", kApiKey, &ListWebhookEndpointDeliveries},
    {"GET", "/v1/events", kApiKey, &ListEvents},
    {"GET", "/v1/events/{id}", kApiKey, &GetEvent},
    {"POST", "/v1/events/{id}/redeliver", kApiKey, &RedeliverEvent},
};

/// Whether |path|'s template matches |segments|; fills |params| with the {…} segments when it does.
bool PathMatches(std::string_view path, const std::vector<std::string>& segments, std::vector<std::string>* params) {
    size_t i = 0;
    size_t pos = 1;  // after the leading '/'
    while (pos <= path.size()) {
        size_t end = path.find('/', pos);
        if (end == std::string_view::npos) end = path.size();
        const std::string_view part = path.substr(pos, end - pos);
        if (i >= segments.size()) return false;
        if (part.starts_with('{')) {
            if (segments[i].empty()) return false;
            if (params) params->push_back(segments[i]);
        } else if (part != segments[i]) {
            return false;
        }
        ++i;
        pos = end + 1;
    }
    return i == segments.size();
}

struct Match {
    const Route* route = nullptr;  // null: no route has this method and path
    std::string allowed;           // the methods of the routes with this path, when none has this method
    std::vector<std::string> params;
};

Match FindRoute(const Request& req) {
    Match m;
    const std::string_view method = req.method == "HEAD" ? std::string_view("GET") : std::string_view(req.method);
    for (const Route& r : kRoutes) {
        if (!PathMatches(r.path, req.segments, nullptr)) continue;
        if (method != r.method) {
            if (!m.allowed.empty()) m.allowed += ", ";
            m.allowed += r.method;
            continue;
        }
        m.route = &r;
        PathMatches(r.path, req.segments, &m.params);
        return m;
    }
    return m;
}

}  // namespace

std::span<const Route> ApiRoutes() { return kRoutes; }

Result<Principal> AuthenticateApiKey(const ApiDeps& d, const Request& req) {
    TALLY_ASSIGN_OR_RETURN(std::string_view token, BearerToken(req));
    return d.keys.Authenticate(token);
}

std::string RouteTemplate(const Request& req) {
    const Match m = FindRoute(req);
    return m.route ? m.route->path : "other";
}

void Api::Handle(Request req, const Responder& respond) {
    // Every answer is counted once, whichever thread gives it (webhooks answer from the commit thread).
    const auto start = std::chrono::steady_clock::now();
    auto once = std::make_shared<std::atomic<bool>>(false);
    // Label values come from fixed sets: any other method is "other" (a client may send any token as a method).
    static const char* const kMethods[] = {"GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"};
    std::string method = "other";
    for (const char* known : kMethods) {
        if (req.method == known) method = known;
    }
    Match match = FindRoute(req);
    Responder counted = [this, respond, start, once, route = match.route ? match.route->path : "other",
                         method](Response r) {
        if (once->exchange(true)) return;
        d_.metrics.HttpRequest(route, method, r.status,
                               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        respond(std::move(r));
    };
    // The one exception boundary of request handling: whatever a handler throws (a bug, bad_alloc), the client
    // gets a 500 with an id that is also in the log, and the connection lives on.
    try {
        HandleUnguarded(std::move(req), counted, match.route, std::move(match.params), match.allowed);
    } catch (const std::exception& e) {
        counted(InternalErrorResponse(e.what()));
    } catch (...) {
        counted(InternalErrorResponse("unknown exception"));
    }
}

void Api::HandleUnguarded(Request req, const Responder& respond, const Route* route, std::vector<std::string> params,
                          const std::string& allowed) {
    Match match{route, allowed, std::move(params)};
    const bool api_path = !req.segments.empty() && req.segments[0] == "v1";
    if (match.route && match.route->access == kPublic) {
        if (match.route->async) return match.route->async(d_, std::move(req), respond);
        const Call call{req, std::move(match.params), {}, "", std::nullopt};
        return respond(match.route->handler(d_, call));
    }
    if (!api_path) {
        // Outside /v1 every route is public: a known path with another method is a 405, anything else a 404.
        if (match.allowed.empty()) return respond(RouteNotFound(req));
        Response r = ErrorResponse(
            Error{ErrorCode::kInvalidArgument, "use " + match.allowed, "", ErrorReason::kMethodNotAllowed}, 405);
        r.headers.emplace_back("Allow", match.allowed);
        return respond(std::move(r));
    }
    auto token = BearerToken(req);
    if (!token.ok()) return respond(ErrorResponse(token.error()));
    const bool read = req.method == "GET" || req.method == "HEAD";
    // Idempotency-Key on mutations (Stripe's contract): decided in app/, inside the transaction of the change.
    // Keys are scoped to the caller: an API key, or a customer session.
    const auto idempotency = [&](const std::string& caller) -> Result<IdempotencyRequest> {
        IdempotencyRequest idem{caller, "", ""};
        if (read) return idem;
        idem.key = req.Header("idempotency-key");
        if (idem.key.size() > kIdempotencyKeyBytesMax) {
            return InvalidArgument("Idempotency-Key must be at most " + std::to_string(kIdempotencyKeyBytesMax) +
                                       " characters",
                                   "Idempotency-Key");
        }
        if (!idem.key.empty()) idem.request_hash = Sha256Hex(req.method + " " + req.path + "\n" + req.body);
        return idem;
    };
    if (d_.members && token->starts_with(kCustomerSessionTokenPrefix)) {
        auto grant = d_.members->Authenticate(*token);
        // An unknown tcs_ token may still be an operator's TALLY_ADMIN_KEY: only known sessions stop here.
        if (grant.ok() || grant.error().reason != ErrorReason::kNone) {
            if (!grant.ok()) return respond(ErrorResponse(grant.error()));
            // The user's role is read on every request: removing them from the customer ends their sessions' rights.
            auto role = d_.members->RoleOf(grant->customer, grant->user);
            if (!role.ok()) return respond(ErrorResponse(role.error()));
            if (!*role) {
                return respond(ErrorResponse(Error{ErrorCode::kUnauthenticated,
                                                   "The user of this customer session no longer belongs to its "
                                                   "customer.",
                                                   "", ErrorReason::kCustomerSessionRevoked}));
            }
            // Routes a session may not use read as routes that do not exist, and another customer exactly as one
            // that does not exist: a token never learns what it cannot touch.
            if (!match.route || match.route->access != kApiKeyOrSession) return respond(RouteNotFound(req));
            const bool customer_path = std::string_view(match.route->path).starts_with("/v1/customers/{id}");
            if (customer_path && match.params.at(0) != grant->customer.str()) {
                return respond(ErrorResponse(NoSuchCustomer(match.params.at(0), "id")));
            }
            auto idem = idempotency(grant->session_id);
            if (!idem.ok()) return respond(ErrorResponse(idem.error()));
            const Call call{req, std::move(match.params), *idem,
                            "customer_session:" + grant->session_id + " user=" + grant->user,
                            SessionScope{grant->session_id, grant->customer, grant->user, **role}};
            if (match.route->call_async) return match.route->call_async(d_, call, respond);
            return respond(match.route->handler(d_, call));
        }
    }
    auto principal = d_.keys.Authenticate(*token);
    if (!principal.ok()) return respond(ErrorResponse(principal.error()));
    if (!match.route) return respond(RouteNotFound(req));
    if (!read && principal->scope != ApiKeyScope::kAdmin) {
        return respond(ErrorResponse(Error{ErrorCode::kPermissionDenied,
                                           "This API key is read_only: it may only make GET requests.", "",
                                           ErrorReason::kNone}));
    }
    auto idem = idempotency(principal->key_id);
    if (!idem.ok()) return respond(ErrorResponse(idem.error()));
    const Call call{req, std::move(match.params), *idem, principal->key_id, std::nullopt};
    if (match.route->call_async) return match.route->call_async(d_, call, respond);
    respond(match.route->handler(d_, call));
}

// ---- Public routes ----

namespace routes {

Response Health(const ApiDeps& d, const Call&) {
    const bool db_ok = d.store.Ping().ok();
    const std::string endpoint = d.stripe.webhook_endpoint ? d.stripe.webhook_endpoint() : "unknown";
    // The database decides liveness (503 takes the node out of a load balancer); a Stripe endpoint that is gone
    // means events stop arriving, which an operator must see, but the node still answers the app.
    const char* status = !db_ok ? "unavailable" : endpoint == "missing" ? "degraded" : "ok";
    return Json(db_ok ? 200 : 503, bj::object{{"status", status},
                                              {"database", db_ok ? "ok" : "unavailable"},
                                              {"stripe", d.stripe.mode},
                                              {"webhook_endpoint", endpoint},
                                              {"version", d.version},
                                              {"time", d.clock.Now().unix_seconds()}});
}

Response Metrics(const ApiDeps& d, const Call& c) {
    if (!d.render_metrics) return RouteNotFound(c.req);
    return Response{200, d.render_metrics(), "text/plain; version=0.0.4; charset=utf-8", {}};
}

void ReceiveStripeWebhook(const ApiDeps& d, Request&& req, const Responder& respond) {
    const std::string signature = req.Header("stripe-signature");
    d.receiver.Receive(std::move(req.body), signature, [respond](Result<WebhookReceipt> r) {
        if (!r.ok()) return respond(ErrorResponse(r.error()));
        respond(Json(200, bj::object{{"received", true},
                                     {"id", r->id.str()},
                                     {"type", r->type},
                                     {"duplicate", r->duplicate}}));
    });
}

Response BillingReturn(const ApiDeps&, const Call& c) {
    // The default landing page after Checkout or the Portal; apps normally pass their own URLs.
    const auto it = c.req.query.find("checkout");
    const std::string outcome = it == c.req.query.end() ? "portal" : it->second;
    const std::string text = outcome == "success"   ? "Payment received. Your plan is being activated."
                             : outcome == "cancel" ? "Checkout canceled. Nothing was charged."
                                                   : "You are back from the billing portal.";
    return Response{200,
                    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Billing</title>"
                    "</head><body><h1 data-testid=\"billing-return\">" + text + "</h1></body></html>",
                    "text/html; charset=utf-8", {}};
}

Response OpenApi(const ApiDeps&, const Call&) {
    return Response{200, std::string(OpenApiJson()), "application/json", {}};
}

Response Docs(const ApiDeps&, const Call&) {
    // Swagger UI (compiled in from npm's swagger-ui-dist) rendering /openapi.json; no request leaves this server.
    static const char* const kPage =
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tally API reference</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<link rel=\"stylesheet\" href=\"/docs/swagger-ui.css\"></head><body><div id=\"swagger-ui\"></div>"
        "<script src=\"/docs/swagger-ui-bundle.js\"></script>"
        "<script>window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true});"
        "</script></body></html>";
    return Response{200, kPage, "text/html; charset=utf-8", {}};
}

Response DocsScript(const ApiDeps&, const Call&) {
    Response r{200, std::string(SwaggerUiBundleJs()), "text/javascript; charset=utf-8", {}};
    r.headers.emplace_back("Cache-Control", "public, max-age=86400");
    return r;
}

Response DocsStyle(const ApiDeps&, const Call&) {
    Response r{200, std::string(SwaggerUiCss()), "text/css; charset=utf-8", {}};
    r.headers.emplace_back("Cache-Control", "public, max-age=86400");
    return r;
}

}  // namespace routes

}  // namespace tally::http
