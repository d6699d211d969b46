#include "adapters/http/api.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>

#include "adapters/config/json_util.hpp"
#include "adapters/crypto.hpp"
#include "adapters/http/json_views.hpp"
#include "domain/text.hpp"

#include <spdlog/spdlog.h>

namespace tally::http {
namespace {

namespace bj = boost::json;

Response Json(int status, const bj::value& v) { return Response{status, bj::serialize(v), "application/json", {}}; }

Response List(const bj::array& data, const std::string& url, bool has_more = false) {
    return Json(200, bj::object{{"object", "list"}, {"data", data}, {"has_more", has_more}, {"url", url}});
}

Response ApiError(int status, const std::string& type, const std::string& code, const std::string& message,
                  const std::string& param = {}) {
    return Response{status, ErrorBody(type, code, message, param), "application/json", {}};
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

}  // namespace

Result<bj::object> BindJsonBody(const Request& req, std::initializer_list<const char*> allowed) {
    if (req.body.size() > kApiBodyBytesMax) {
        return Error{ErrorCode::kPayloadTooLarge, "body exceeds " + std::to_string(kApiBodyBytesMax) + " bytes", "body",
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

}  // namespace

Response Api::Health() {
    const bool db_ok = d_.store.Ping().ok();
    const std::string endpoint = d_.stripe.webhook_endpoint ? d_.stripe.webhook_endpoint() : "unknown";
    // The database decides liveness (503 takes the node out of a load balancer); a Stripe endpoint that is gone
    // means events stop arriving, which an operator must see, but the node still answers the app.
    const char* status = !db_ok ? "unavailable" : endpoint == "missing" ? "degraded" : "ok";
    return Json(db_ok ? 200 : 503, bj::object{{"status", status},
                                              {"database", db_ok ? "ok" : "unavailable"},
                                              {"stripe", d_.stripe.mode},
                                              {"webhook_endpoint", endpoint},
                                              {"version", d_.version},
                                              {"time", d_.clock.Now().unix_seconds()}});
}

std::string RouteTemplate(const Request& req) {
    static const char* const kFixed[] = {"/health", "/metrics", "/webhooks/stripe", "/billing/return", "/v1/plans"};
    for (const char* fixed : kFixed) {
        if (req.path == fixed) return fixed;
    }
    static const char* const kResources[] = {"customers", "checkout_sessions", "billing_portal_sessions", "api_keys",
                                             "audit", "webhook_events", "webhook_endpoints", "events",
                                             "customer_sessions", "users", "invoices", "payments",
                                             "subscriptions"};
    const auto& seg = req.segments;
    if (seg.size() == 5 && seg[0] == "v1" && seg[1] == "customers" && seg[3] == "members") {
        return "/v1/customers/{id}/members/{user}";
    }
    if (seg.size() < 2 || seg.size() > 4 || seg[0] != "v1") return "other";
    bool known = false;
    for (const char* r : kResources) known = known || seg[1] == r;
    if (!known) return "other";
    std::string out = "/v1/" + seg[1];
    if (seg.size() >= 3) out += "/{id}";
    if (seg.size() == 4) {
        static const char* const kActions[] = {"entitlements", "role_override", "retry", "roll_secret", "deliveries",
                                               "redeliver", "members", "invoices", "payments", "subscriptions",
                                               "preview_change", "change", "cancel", "resume", "pause", "unpause"};
        bool action = false;
        for (const char* a : kActions) action = action || seg[3] == a;
        out += action ? "/" + seg[3] : "/{other}";
    }
    return out;
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
    Responder counted = [this, respond, start, once, route = RouteTemplate(req), method](Response r) {
        if (once->exchange(true)) return;
        d_.metrics.HttpRequest(route, method, r.status,
                               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        respond(std::move(r));
    };
    // The one exception boundary of request handling: whatever a handler throws (a bug, bad_alloc), the client
    // gets a 500 with an id that is also in the log, and the connection lives on.
    try {
        HandleUnguarded(std::move(req), counted);
    } catch (const std::exception& e) {
        counted(InternalErrorResponse(e.what()));
    } catch (...) {
        counted(InternalErrorResponse("unknown exception"));
    }
}

void Api::HandleUnguarded(Request req, const Responder& respond) {
    if (req.path == "/webhooks/stripe") {
        if (req.method != "POST") {
            return respond(ErrorResponse(
                Error{ErrorCode::kInvalidArgument, "use POST", "", ErrorReason::kMethodNotAllowed}, 405));
        }
        return HandleWebhook(std::move(req), respond);
    }
    if (req.path == "/health" && (req.method == "GET" || req.method == "HEAD")) return respond(Health());
    if (req.path == "/metrics" && (req.method == "GET" || req.method == "HEAD") && d_.render_metrics) {
        return respond(Response{200, d_.render_metrics(), "text/plain; version=0.0.4; charset=utf-8", {}});
    }
    if (req.path == "/v1/plans" && (req.method == "GET" || req.method == "HEAD")) {
        bj::array data;
        for (const auto& plan : d_.catalog.plans()) data.push_back(PlanJson(plan));
        return respond(List(data, "/v1/plans"));
    }
    if (req.path == "/billing/return" && (req.method == "GET" || req.method == "HEAD")) {
        // The default landing page after Checkout or the Portal; apps normally pass their own URLs.
        const auto it = req.query.find("checkout");
        const std::string outcome = it == req.query.end() ? "portal" : it->second;
        const std::string text = outcome == "success"   ? "Payment received. Your plan is being activated."
                                 : outcome == "cancel" ? "Checkout canceled. Nothing was charged."
                                                       : "You are back from the billing portal.";
        return respond(Response{200,
                                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Billing</title>"
                                "</head><body><h1 data-testid=\"billing-return\">" + text + "</h1></body></html>",
                                "text/html; charset=utf-8", {}});
    }
    if (req.segments.empty() || req.segments[0] != "v1") return respond(RouteNotFound(req));
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
            auto idem = idempotency(grant->session_id);
            if (!idem.ok()) return respond(ErrorResponse(idem.error()));
            return respond(DispatchSession(req, *grant, **role, *idem));
        }
    }
    auto principal = d_.keys.Authenticate(*token);
    if (!principal.ok()) return respond(ErrorResponse(principal.error()));
    if (!read && principal->scope != ApiKeyScope::kAdmin) {
        return respond(ErrorResponse(Error{ErrorCode::kPermissionDenied,
                                           "This API key is read_only: it may only make GET requests.", "",
                                           ErrorReason::kNone}));
    }
    auto idem = idempotency(principal->key_id);
    if (!idem.ok()) return respond(ErrorResponse(idem.error()));
    respond(Dispatch(req, *principal, *idem));
}

namespace {

/// A string field of |body| when present and not null; kInvalidArgument naming it when it is not a string.
Result<std::optional<std::string>> MaybeString(const bj::object& body, const char* key) {
    const bj::value* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) return std::optional<std::string>();
    if (!v->is_string()) return InvalidArgument(std::string(key) + " must be a string", key);
    return std::optional<std::string>(std::string(v->get_string()));
}

/// Stripe's metadata parameter: an object of strings (a value "" removes its key), or "" to remove every key.
Result<std::optional<MetadataUpdate>> MaybeMetadata(const bj::object& body) {
    const bj::value* v = body.if_contains("metadata");
    if (v == nullptr || v->is_null()) return std::optional<MetadataUpdate>();
    MetadataUpdate update;
    if (v->is_string() && v->get_string().empty()) {
        update.clear_all = true;
        return std::optional<MetadataUpdate>(std::move(update));
    }
    if (!v->is_object()) {
        return InvalidArgument("metadata must be an object of string values, or \"\" to remove every key", "metadata");
    }
    for (const auto& kv : v->get_object()) {
        const std::string key(kv.key());
        if (!kv.value().is_string()) {
            std::string param = "metadata[";
            param += key;
            param += "]";
            return InvalidArgument("metadata values must be strings", param);
        }
        update.set.emplace_back(key, std::string(kv.value().get_string()));
    }
    return std::optional<MetadataUpdate>(std::move(update));
}

/// The customer fields of a create (|create|: type allowed) or update body, each checked for its JSON type.
Result<CustomerInput> ParseCustomerInput(const bj::object& body, bool create) {
    CustomerInput in;
    TALLY_ASSIGN_OR_RETURN(in.email, MaybeString(body, "email"));
    TALLY_ASSIGN_OR_RETURN(in.name, MaybeString(body, "name"));
    TALLY_ASSIGN_OR_RETURN(in.auth_provider, MaybeString(body, "auth_provider"));
    TALLY_ASSIGN_OR_RETURN(in.company, MaybeString(body, "company"));
    if (create) {
        TALLY_ASSIGN_OR_RETURN(auto type, MaybeString(body, "type"));
        if (type) {
            TALLY_ASSIGN_OR_RETURN(in.type, ParseCustomerType(*type));
        }
    }
    if (const bj::value* v = body.if_contains("email_verified"); v != nullptr && !v->is_null()) {
        if (!v->is_bool()) return InvalidArgument("email_verified must be a boolean", "email_verified");
        in.email_verified = v->get_bool();
    }
    TALLY_ASSIGN_OR_RETURN(in.metadata, MaybeMetadata(body));
    return in;
}

Error NoSuchCustomer(const std::string& id, const std::string& param) {
    return NotFound("no such customer: '" + id + "'", param);
}

}  // namespace

Response Api::ListCustomers(const Request& req) {
    auto fail = [](const Error& e) { return ErrorResponse(e); };
    static const char* const kAllowed[] = {"external_id", "stripe_customer_id", "type", "auth_provider", "company",
                                           "email_verified", "limit", "starting_after"};
    CustomerFilter filter;
    for (const auto& [k, v] : req.query) {
        bool known = false;
        for (const char* a : kAllowed) known = known || k == a;
        if (k.size() > 10 && k.starts_with("metadata[") && k.ends_with("]")) {
            filter.metadata.emplace_back(k.substr(9, k.size() - 10), v);
            known = true;
        }
        if (!known) {
            return fail(WithReason(InvalidArgument("Received unknown parameter: " + k, k), ErrorReason::kParameterUnknown));
        }
    }
    const auto ext = req.query.find("external_id");
    const auto sid = req.query.find("stripe_customer_id");
    if (ext != req.query.end() || sid != req.query.end()) {
        // A lookup by a unique key: zero or one customer, not combinable with the list's filters.
        if (req.query.size() > 1) {
            return fail(InvalidArgument("external_id and stripe_customer_id look one customer up and take no other "
                                        "parameter",
                                        ext != req.query.end() ? "external_id" : "stripe_customer_id"));
        }
        Result<std::vector<CustomerView>> found =
            ext != req.query.end() ? d_.billing.FindByExternalId(ext->second)
                                   : d_.billing.FindByStripeCustomerId(StripeCustomerId(sid->second));
        if (!found.ok()) return fail(found.error());
        bj::array data;
        for (const auto& v : *found) data.push_back(CustomerJson(v));
        return List(data, "/v1/customers");
    }
    auto limit = PageSize(req);
    if (!limit.ok()) return fail(limit.error());
    filter.limit = *limit;
    if (auto it = req.query.find("type"); it != req.query.end()) {
        auto type = ParseCustomerType(it->second);
        if (!type.ok()) return fail(type.error());
        filter.type = *type;
    }
    if (auto it = req.query.find("auth_provider"); it != req.query.end()) filter.auth_provider = it->second;
    if (auto it = req.query.find("company"); it != req.query.end()) filter.company = it->second;
    if (auto it = req.query.find("email_verified"); it != req.query.end()) {
        if (it->second != "true" && it->second != "false") {
            return fail(InvalidArgument("email_verified must be true or false", "email_verified"));
        }
        filter.email_verified = it->second == "true";
    }
    if (auto it = req.query.find("starting_after"); it != req.query.end() && !it->second.empty()) {
        filter.starting_after = CustomerId(it->second);
    }
    auto page = d_.billing.ListCustomers(std::move(filter));
    if (!page.ok()) return fail(page.error());
    bj::array data;
    for (const auto& v : page->data) data.push_back(CustomerJson(v));
    return List(data, "/v1/customers", page->has_more);
}

Response Api::Members(const Request& req, const IdempotencyRequest& idem, const std::string& actor,
                      std::optional<MemberRole> actor_role) {
    const auto& seg = req.segments;  // v1 customers {id} members [{user}]
    const std::string& m = req.method;
    const bool get = m == "GET" || m == "HEAD";
    auto fail = [](const Error& e) { return ErrorResponse(e); };
    if (!d_.members || seg.size() > 5) return RouteNotFound(req);
    MemberService& svc = *d_.members;
    const CustomerId customer(seg[2]);
    if (seg.size() == 4 && get) {
        auto list = svc.List(customer);
        if (!list.ok()) return fail(list.error());
        bj::array data;
        for (const auto& member : *list) data.push_back(MemberJson(member));
        return List(data, "/v1/customers/" + seg[2] + "/members");
    }
    if (seg.size() == 4 && m == "POST") {
        auto body = BindJsonBody(req, {"user", "email", "role"});
        if (!body.ok()) return fail(body.error());
        auto user = json::RequiredString(*body, "user", "");
        if (!user.ok()) return fail(user.error());
        auto email = json::OptionalString(*body, "email", "");
        if (!email.ok()) return fail(email.error());
        auto role_text = json::RequiredString(*body, "role", "");
        if (!role_text.ok()) return fail(role_text.error());
        auto role = ParseMemberRole(*role_text);
        if (!role.ok()) return fail(role.error());
        return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
            TALLY_ASSIGN_OR_RETURN(auto added, svc.Add(tx, customer, *user, *email, *role, actor_role, actor));
            return Render(201, MemberJson(added));
        }));
    }
    if (seg.size() != 5) return RouteNotFound(req);
    const std::string& user = seg[4];
    if (get) {
        auto member = svc.Get(customer, user);
        if (!member.ok()) return fail(member.error());
        return Json(200, MemberJson(*member));
    }
    if (m == "POST") {
        auto body = BindJsonBody(req, {"email", "role"});
        if (!body.ok()) return fail(body.error());
        auto email = MaybeString(*body, "email");
        if (!email.ok()) return fail(email.error());
        auto role_text = MaybeString(*body, "role");
        if (!role_text.ok()) return fail(role_text.error());
        std::optional<MemberRole> role;
        if (*role_text) {
            auto parsed = ParseMemberRole(**role_text);
            if (!parsed.ok()) return fail(parsed.error());
            role = *parsed;
        }
        return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
            TALLY_ASSIGN_OR_RETURN(auto updated, svc.Update(tx, customer, user, role, *email, actor_role, actor));
            return Render(200, MemberJson(updated));
        }));
    }
    if (m == "DELETE") {
        return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
            TALLY_ASSIGN_OR_RETURN(auto removed, svc.Remove(tx, customer, user, actor_role, actor));
            bj::value v = MemberJson(removed);
            v.as_object()["deleted"] = true;
            return Render(200, v);
        }));
    }
    return RouteNotFound(req);
}

Response Api::History(const Request& req, bool invoices, const std::string& customer) {
    auto fail = [](const Error& e) { return ErrorResponse(e); };
    if (!d_.history) return RouteNotFound(req);
    static const char* const kAllowed[] = {"status", "customer", "created[gte]", "limit", "starting_after", "format"};
    for (const auto& [k, v] : req.query) {
        bool known = false;
        for (const char* a : kAllowed) known = known || (k == a && (k != "customer" || customer.empty()));
        if (!known) {
            return fail(WithReason(InvalidArgument("Received unknown parameter: " + k, k), ErrorReason::kParameterUnknown));
        }
    }
    BillingHistoryQuery q;
    auto limit = PageSize(req);
    if (!limit.ok()) return fail(limit.error());
    q.limit = *limit;
    if (!customer.empty()) q.customer = CustomerId(customer);
    if (auto it = req.query.find("customer"); it != req.query.end() && !it->second.empty()) {
        q.customer = CustomerId(it->second);
    }
    if (auto it = req.query.find("status"); it != req.query.end()) q.status = it->second;
    if (auto it = req.query.find("created[gte]"); it != req.query.end()) {
        int64_t n = 0;
        const auto& v = it->second;
        const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (v.empty() || ec != std::errc() || p != v.data() + v.size()) {
            return fail(InvalidArgument("created[gte] must be a Unix timestamp in seconds", "created[gte]"));
        }
        q.created_gte = Timestamp(n);
    }
    if (auto it = req.query.find("starting_after"); it != req.query.end()) q.starting_after = it->second;
    bool csv = false;
    if (auto it = req.query.find("format"); it != req.query.end()) {
        if (it->second != "json" && it->second != "csv") return fail(InvalidArgument("format must be json or csv", "format"));
        csv = it->second == "csv";
    }
    // A path's customer reads as missing, like every unknown customer; a query's is a parameter.
    const auto not_found_param = [&](Error e) {
        if (!customer.empty() && e.code == ErrorCode::kNotFound && e.param == "customer") e.param = "id";
        return fail(e);
    };
    const std::string url = customer.empty() ? std::string(invoices ? "/v1/invoices" : "/v1/payments")
                                             : "/v1/customers/" + customer + (invoices ? "/invoices" : "/payments");
    const auto csv_response = [&](std::string body, bool has_more, const std::string& last) {
        Response r{200, std::move(body), "text/csv; charset=utf-8", {}};
        r.headers.emplace_back("Content-Disposition",
                               std::string("attachment; filename=\"") + (invoices ? "invoices" : "payments") + ".csv\"");
        // One page per request, as the JSON list: the next page starts after the last row.
        r.headers.emplace_back("Tally-Has-More", has_more ? "true" : "false");
        if (has_more) r.headers.emplace_back("Tally-Next-Starting-After", last);
        return r;
    };
    if (invoices) {
        auto page = d_.history->ListInvoices(q);
        if (!page.ok()) return not_found_param(page.error());
        if (csv) {
            return csv_response(InvoicesCsv(page->data), page->has_more,
                                page->data.empty() ? "" : page->data.back().record.id);
        }
        bj::array data;
        for (const auto& row : page->data) data.push_back(InvoiceJson(row.record, row.customer_id));
        return List(data, url, page->has_more);
    }
    auto page = d_.history->ListPayments(q);
    if (!page.ok()) return not_found_param(page.error());
    if (csv) {
        return csv_response(PaymentsCsv(page->data), page->has_more,
                            page->data.empty() ? "" : page->data.back().record.id);
    }
    bj::array data;
    for (const auto& row : page->data) data.push_back(PaymentJson(row.record, row.customer_id));
    return List(data, url, page->has_more);
}

Response Api::DispatchSession(const Request& req, const SessionGrant& grant, MemberRole role,
                              const IdempotencyRequest& idem) {
    const auto& seg = req.segments;
    const std::string& m = req.method;
    const bool get = m == "GET" || m == "HEAD";
    auto fail = [](const Error& e) { return ErrorResponse(e); };
    const std::string actor = "customer_session:" + grant.session_id + " user=" + grant.user;
    // Another customer reads exactly as one that does not exist; routes a session may not use, as routes that do
    // not exist: a token never learns what it cannot touch.
    if (seg.size() >= 3 && seg[1] == "customers") {
        if (seg[2] != grant.customer.str()) return fail(NoSuchCustomer(seg[2], "id"));
        if (seg.size() == 3 && get) {
            auto view = d_.billing.GetCustomer(grant.customer);
            if (!view.ok()) return fail(view.error());
            return Json(200, CustomerJson(*view));
        }
        if (seg.size() == 4 && seg[3] == "entitlements" && get) {
            auto view = d_.billing.GetCustomer(grant.customer);
            if (!view.ok()) return fail(view.error());
            return Json(200, EntitlementsJson(*view));
        }
        if (seg.size() >= 4 && seg[3] == "members") return Members(req, idem, actor, role);
        if (seg.size() == 4 && (seg[3] == "invoices" || seg[3] == "payments") && get) {
            return History(req, seg[3] == "invoices", seg[2]);
        }
        if (seg.size() == 4 && seg[3] == "subscriptions") return Subscriptions(req, idem, SessionScope{grant.customer, role});
        return RouteNotFound(req);
    }
    if (seg.size() >= 2 && seg[1] == "subscriptions") return Subscriptions(req, idem, SessionScope{grant.customer, role});
    if (seg.size() == 2 && (seg[1] == "checkout_sessions" || seg[1] == "billing_portal_sessions") && m == "POST") {
        return HostedSession(req, idem, [&](const std::string& customer) -> Status {
            if (customer != grant.customer.str()) return NoSuchCustomer(customer, "customer");
            if (!MayManageBilling(role)) {
                return Error{ErrorCode::kPermissionDenied,
                             std::string("a customer session of a ") + MemberRoleName(role) +
                                 " may not change or pay for the subscription: owners and admins may",
                             "", ErrorReason::kNone};
            }
            return {};
        });
    }
    return RouteNotFound(req);
}

Response Api::Dispatch(const Request& req, const Principal& principal, const IdempotencyRequest& idem) {
    const auto& seg = req.segments;  // seg[0] == "v1"; each segment percent-decoded on its own
    const std::string& m = req.method;
    const bool get = m == "GET" || m == "HEAD";
    const std::string& actor = principal.key_id;
    auto fail = [](const Error& e) { return ErrorResponse(e); };

    if (seg.size() >= 2 && seg[1] == "customers") {
        if (seg.size() == 2 && m == "POST") {
            auto body = BindJsonBody(req, {"external_id", "email", "name", "type", "auth_provider", "company",
                                           "email_verified", "metadata"});
            if (!body.ok()) return fail(body.error());
            auto external_id = json::RequiredString(*body, "external_id", "");
            if (!external_id.ok()) return fail(external_id.error());
            auto input = ParseCustomerInput(*body, true);
            if (!input.ok()) return fail(input.error());
            return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto created, d_.billing.CreateCustomer(tx, *external_id, *input));
                return Render(created.second ? 201 : 200, CustomerJson(created.first));
            }));
        }
        if (seg.size() == 2 && get) return ListCustomers(req);
        if (seg.size() == 3 && m == "POST") {
            auto body = BindJsonBody(req, {"email", "name", "auth_provider", "company", "email_verified", "metadata"});
            if (!body.ok()) return fail(body.error());
            auto input = ParseCustomerInput(*body, false);
            if (!input.ok()) return fail(input.error());
            return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto view, d_.billing.UpdateCustomer(tx, CustomerId(seg[2]), *input, actor));
                return Render(200, CustomerJson(view));
            }));
        }
        if (seg.size() >= 4 && seg[3] == "members") return Members(req, idem, actor, std::nullopt);
        if (seg.size() == 4 && (seg[3] == "invoices" || seg[3] == "payments") && get) {
            return History(req, seg[3] == "invoices", seg[2]);
        }
        if (seg.size() == 4 && seg[3] == "subscriptions") return Subscriptions(req, idem, std::nullopt);
        if (seg.size() == 3 && get) {
            auto view = d_.billing.GetCustomer(CustomerId(seg[2]));
            if (!view.ok()) return fail(view.error());
            return Json(200, CustomerJson(*view));
        }
        if (seg.size() == 4 && seg[3] == "entitlements" && get) {
            auto view = d_.billing.GetCustomer(CustomerId(seg[2]));
            if (!view.ok()) return fail(view.error());
            return Json(200, EntitlementsJson(*view));
        }
        if (seg.size() == 4 && seg[3] == "role_override" && m == "POST") {
            auto body = BindJsonBody(req, {"role", "reason", "expires_at"});
            if (!body.ok()) return fail(body.error());
            auto role = json::RequiredString(*body, "role", "");
            if (!role.ok()) return fail(role.error());
            auto reason = json::RequiredString(*body, "reason", "");
            if (!reason.ok()) return fail(reason.error());
            auto expires = json::OptionalInt(*body, "expires_at", "");
            if (!expires.ok()) return fail(expires.error());
            std::optional<Timestamp> expires_at;
            if (*expires) expires_at = Timestamp(**expires);
            return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto view,
                                       d_.billing.SetRoleOverride(tx, CustomerId(seg[2]), *role, *reason, expires_at, actor));
                return Render(200, CustomerJson(view));
            }));
        }
        if (seg.size() == 4 && seg[3] == "role_override" && m == "DELETE") {
            return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto view, d_.billing.ClearRoleOverride(tx, CustomerId(seg[2]), actor));
                return Render(200, CustomerJson(view));
            }));
        }
    }
    if (seg.size() == 2 && (seg[1] == "checkout_sessions" || seg[1] == "billing_portal_sessions") && m == "POST") {
        return HostedSession(req, idem, {});
    }
    if (seg.size() >= 2 && seg[1] == "customer_sessions" && d_.members) {
        if (seg.size() == 2 && m == "POST") {
            auto body = BindJsonBody(req, {"customer", "user", "expires_in"});
            if (!body.ok()) return fail(body.error());
            auto customer = json::RequiredString(*body, "customer", "");
            if (!customer.ok()) return fail(customer.error());
            if (customer->empty()) return fail(MissingArgument("customer is required", "customer"));
            auto user = json::RequiredString(*body, "user", "");
            if (!user.ok()) return fail(user.error());
            auto expires_in = json::OptionalInt(*body, "expires_in", "");
            if (!expires_in.ok()) return fail(expires_in.error());
            // The token is shown once and never stored: a replay gets the session without it.
            return Stored(d_.idempotency.RunInStoreRedacted(
                idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
                    TALLY_ASSIGN_OR_RETURN(auto created, d_.members->CreateSession(tx, CustomerId(*customer), *user,
                                                                                   *expires_in, actor));
                    return std::make_pair(Render(201, CustomerSessionJson(created.record, created.token)),
                                          Render(201, CustomerSessionJson(created.record)));
                }));
        }
        if (seg.size() == 3 && m == "DELETE") {
            return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto session, d_.members->RevokeSession(tx, seg[2], actor));
                return Render(200, CustomerSessionJson(session));
            }));
        }
    }
    if (seg.size() == 2 && (seg[1] == "invoices" || seg[1] == "payments") && get) {
        return History(req, seg[1] == "invoices", "");
    }
    if (seg.size() >= 2 && seg[1] == "subscriptions") return Subscriptions(req, idem, std::nullopt);
    if (seg.size() == 3 && seg[1] == "users" && get && d_.members) {
        auto user = d_.members->GetUser(seg[2]);
        if (!user.ok()) return fail(user.error());
        return Json(200, UserJson(*user));
    }
    if (seg.size() >= 2 && seg[1] == "api_keys") {
        if (seg.size() == 2 && get) {
            auto keys = d_.keys.List();
            if (!keys.ok()) return fail(keys.error());
            bj::array data;
            for (const auto& k : *keys) data.push_back(ApiKeyJson(k));
            return List(data, "/v1/api_keys");
        }
        if (seg.size() == 2 && m == "POST") {
            auto body = BindJsonBody(req, {"scope", "name"});
            if (!body.ok()) return fail(body.error());
            auto scope_text = json::RequiredString(*body, "scope", "");
            if (!scope_text.ok()) return fail(scope_text.error());
            auto scope = ParseApiKeyScope(*scope_text);
            if (!scope.ok()) return fail(scope.error());
            auto name = json::RequiredString(*body, "name", "");
            if (!name.ok()) return fail(name.error());
            // The secret is shown once and never stored: a replay gets the key without it.
            return Stored(d_.idempotency.RunInStoreRedacted(
                idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
                    TALLY_ASSIGN_OR_RETURN(auto created, d_.keys.Create(tx, *scope, *name, "admin:" + actor));
                    return std::make_pair(Render(201, ApiKeyJson(created.record, created.secret)),
                                          Render(201, ApiKeyJson(created.record)));
                }));
        }
        if (seg.size() == 3 && m == "DELETE") {
            // Revoking twice is harmless, so a replay may simply run again.
            return Stored(d_.idempotency.RunWithExternalEffects(idem, [&]() -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto key, d_.keys.Revoke(seg[2], "admin:" + actor));
                return Render(200, ApiKeyJson(key));
            }));
        }
    }
    if (seg.size() == 2 && seg[1] == "audit" && get) {
        auto limit = PageSize(req);
        if (!limit.ok()) return fail(limit.error());
        const auto it = req.query.find("customer");
        auto entries = d_.billing.ListAudit(CustomerId(it == req.query.end() ? "" : it->second), *limit);
        if (!entries.ok()) return fail(entries.error());
        bj::array data;
        for (const auto& e : *entries) data.push_back(AuditJson(e));
        return List(data, "/v1/audit");
    }
    if (seg.size() >= 2 && seg[1] == "webhook_events") {
        if (seg.size() == 2 && get) {
            auto limit = PageSize(req);
            if (!limit.ok()) return fail(limit.error());
            std::optional<InboxStatus> status;
            if (auto it = req.query.find("status"); it != req.query.end()) {
                auto parsed = ParseInboxStatus(it->second);
                if (!parsed.ok()) return fail(parsed.error());
                status = *parsed;
            }
            std::vector<InboxEvent> events;
            Status s = d_.store.Read([&](StoreTx& tx) -> Status {
                TALLY_ASSIGN_OR_RETURN(events, tx.inbox().List(status, *limit));
                return {};
            });
            if (!s.ok()) return fail(s.error());
            bj::array data;
            for (const auto& e : events) data.push_back(InboxJson(e));
            return List(data, "/v1/webhook_events");
        }
        if (seg.size() == 3 && get) {
            std::optional<InboxEvent> event;
            Status s = d_.store.Read([&](StoreTx& tx) -> Status {
                TALLY_ASSIGN_OR_RETURN(event, tx.inbox().Get(StripeEventId(seg[2])));
                return {};
            });
            if (!s.ok()) return fail(s.error());
            if (!event) return fail(NotFound("no such webhook event: '" + seg[2] + "'", "id"));
            return Json(200, InboxJson(*event));
        }
        if (seg.size() == 4 && seg[3] == "retry" && m == "POST") {
            // Processing an event again is idempotent by the ordering rules, so a replay may run again.
            return Stored(d_.idempotency.RunWithExternalEffects(idem, [&]() -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto event, d_.processor.Retry(StripeEventId(seg[2])));
                (void)d_.processor.ProcessOne(event.id);  // the outcome is recorded on the event
                std::optional<InboxEvent> after;
                TALLY_TRY(d_.store.Read([&](StoreTx& tx) -> Status {
                    TALLY_ASSIGN_OR_RETURN(after, tx.inbox().Get(event.id));
                    return {};
                }));
                if (!after) return Internal("event " + event.id.str() + " vanished");
                return Render(200, InboxJson(*after));
            }));
        }
    }
    if (seg.size() >= 2 && (seg[1] == "webhook_endpoints" || seg[1] == "events")) {
        return DispatchEvents(req, principal, idem);
    }
    return RouteNotFound(req);
}

namespace {
bj::value PreviewJson(const ChangePreview& p) {
    bj::array lines;
    for (const auto& l : p.lines) {
        lines.push_back(bj::object{{"description", l.description},
                                   {"amount", l.amount_minor},
                                   {"proration", l.proration},
                                   {"period_start", l.period_start.unix_seconds()},
                                   {"period_end", l.period_end.unix_seconds()}});
    }
    return bj::object{{"object", "subscription_change_preview"},
                      {"subscription", SubscriptionJson(p.subscription.subscription, p.subscription.customer_id)},
                      {"plan", p.plan},
                      {"interval", p.interval},
                      {"proration_date", p.proration_date},
                      {"currency", p.currency},
                      {"lines", std::move(lines)},
                      {"amount_due", p.amount_due_minor},
                      {"next_invoice_total", p.next_invoice_total_minor},
                      {"next_invoice_at", p.next_invoice_at.unix_seconds()}};
}

/// BindJsonBody where the whole body may be left out (an action with only optional parameters).
Result<bj::object> OptionalJsonBody(const Request& req, std::initializer_list<const char*> allowed) {
    if (req.body.empty()) return bj::object();
    return BindJsonBody(req, allowed);
}

/// A plan change's {plan, interval, proration_date?}; |at| ("now" | "period_end") also read when |with_at|.
struct ChangeBody {
    std::string plan;
    std::string interval;
    std::optional<int64_t> proration_date;
    bool at_period_end = false;
};
Result<ChangeBody> ParseChange(const Request& req, bool with_at) {
    TALLY_ASSIGN_OR_RETURN(bj::object body, with_at ? BindJsonBody(req, {"plan", "interval", "proration_date", "at"})
                                                    : BindJsonBody(req, {"plan", "interval", "proration_date"}));
    ChangeBody out;
    TALLY_ASSIGN_OR_RETURN(out.plan, json::RequiredString(body, "plan", ""));
    TALLY_ASSIGN_OR_RETURN(std::string interval, json::OptionalString(body, "interval", ""));
    const bool has_interval = body.contains("interval") && !body.at("interval").is_null();
    if (has_interval && interval.empty()) return InvalidArgument("interval must be month or year", "interval");
    out.interval = has_interval ? interval : "month";
    TALLY_ASSIGN_OR_RETURN(out.proration_date, json::OptionalInt(body, "proration_date", ""));
    if (with_at) {
        TALLY_ASSIGN_OR_RETURN(std::string at, json::OptionalString(body, "at", ""));
        if (!at.empty() && at != "now" && at != "period_end") return InvalidArgument("at must be now or period_end", "at");
        out.at_period_end = at == "period_end";
        if (out.at_period_end && out.proration_date) {
            return InvalidArgument("proration_date applies to a change now only (a change at period_end is not "
                                   "prorated)",
                                   "proration_date");
        }
    }
    return out;
}
}  // namespace

Response Api::Subscriptions(const Request& req, const IdempotencyRequest& idem, const std::optional<SessionScope>& scope) {
    const auto& seg = req.segments;  // v1 subscriptions [{id} [action]] | v1 customers {id} subscriptions
    const std::string& m = req.method;
    const bool get = m == "GET" || m == "HEAD";
    auto fail = [](const Error& e) { return ErrorResponse(e); };
    if (!d_.subscriptions) return RouteNotFound(req);
    SubscriptionService& svc = *d_.subscriptions;
    const auto render = [](const SubscriptionView& v) { return SubscriptionJson(v.subscription, v.customer_id); };
    // A session's writes need a role that may manage billing; reads are open to every member.
    const auto may_write = [&]() -> Status {
        if (!scope || MayManageBilling(scope->role)) return {};
        return Error{ErrorCode::kPermissionDenied,
                     std::string("a customer session of a ") + MemberRoleName(scope->role) +
                         " may not change or pay for the subscription: owners and admins may",
                     "", ErrorReason::kNone};
    };
    // The Stripe idempotency key is derived from the caller's (scoped to its API key or session).
    const std::string stripe_key = idem.key.empty() ? "" : Sha256Hex(idem.api_key_id + ":" + idem.key);

    if (seg[1] == "customers") {
        if (!get) return RouteNotFound(req);
        if (!req.query.empty()) {
            const std::string& k = req.query.begin()->first;
            return fail(WithReason(InvalidArgument("Received unknown parameter: " + k, k), ErrorReason::kParameterUnknown));
        }
        auto list = svc.ListForCustomer(CustomerId(seg[2]));
        if (!list.ok()) return fail(list.error());
        bj::array data;
        for (const auto& v : *list) data.push_back(render(v));
        return List(data, "/v1/customers/" + seg[2] + "/subscriptions");
    }
    if (seg.size() == 2 && get) {
        if (scope) return RouteNotFound(req);  // the admin list: a session lists its customer's instead
        static const char* const kAllowed[] = {"status", "plan", "limit", "starting_after"};
        for (const auto& [k, v] : req.query) {
            bool known = false;
            for (const char* a : kAllowed) known = known || k == a;
            if (!known) {
                return fail(WithReason(InvalidArgument("Received unknown parameter: " + k, k), ErrorReason::kParameterUnknown));
            }
        }
        SubscriptionListFilter filter;
        auto limit = PageSize(req);
        if (!limit.ok()) return fail(limit.error());
        filter.limit = std::min(*limit, kSubscriptionPageSizeMax);
        if (auto it = req.query.find("status"); it != req.query.end()) filter.status = it->second;
        if (auto it = req.query.find("plan"); it != req.query.end()) filter.plan_id = it->second;
        if (auto it = req.query.find("starting_after"); it != req.query.end()) filter.starting_after = it->second;
        auto page = svc.List(std::move(filter));
        if (!page.ok()) return fail(page.error());
        bj::array data;
        for (const auto& v : page->data) data.push_back(render(v));
        return List(data, "/v1/subscriptions", page->has_more);
    }
    if (seg.size() == 2 && m == "POST") {
        auto body = BindJsonBody(req, {"customer", "plan", "interval", "trial_period_days", "payment_method"});
        if (!body.ok()) return fail(body.error());
        SubscriptionCreateInput input;
        auto customer = json::RequiredString(*body, "customer", "");
        if (!customer.ok()) return fail(customer.error());
        if (customer->empty()) return fail(MissingArgument("customer is required", "customer"));
        if (scope && *customer != scope->customer.str()) return fail(NoSuchCustomer(*customer, "customer"));
        if (Status allowed = may_write(); !allowed.ok()) return fail(allowed.error());
        input.customer = CustomerId(*customer);
        auto plan = json::RequiredString(*body, "plan", "");
        if (!plan.ok()) return fail(plan.error());
        input.plan = PlanId(*plan);
        auto interval = json::OptionalString(*body, "interval", "");
        if (!interval.ok()) return fail(interval.error());
        const bool has_interval = body->contains("interval") && !body->at("interval").is_null();
        if (has_interval && interval->empty()) return fail(InvalidArgument("interval must be month or year", "interval"));
        input.interval = has_interval ? *interval : "month";
        auto trial = json::OptionalInt(*body, "trial_period_days", "");
        if (!trial.ok()) return fail(trial.error());
        input.trial_period_days = *trial;
        auto pm = json::OptionalString(*body, "payment_method", "");
        if (!pm.ok()) return fail(pm.error());
        input.payment_method = *pm;
        return Stored(d_.idempotency.RunWithExternalEffects(idem, [&]() -> Result<StoredResponse> {
            TALLY_ASSIGN_OR_RETURN(auto created, svc.Create(input, stripe_key));
            return Render(201, render(created));
        }));
    }
    if (seg.size() < 3 || seg.size() > 4) return RouteNotFound(req);
    const StripeSubscriptionId id(seg[2]);
    // A session sees only its customer's subscriptions: another's reads as missing.
    if (scope) {
        auto view = svc.Get(id);
        if (!view.ok()) return fail(view.error());
        if (view->customer_id != scope->customer.str()) return fail(NotFound("no such subscription: '" + seg[2] + "'", "id"));
    }
    if (seg.size() == 3) {
        if (!get) return RouteNotFound(req);
        auto view = svc.Get(id);
        if (!view.ok()) return fail(view.error());
        return Json(200, render(*view));
    }
    const std::string& action = seg[3];
    if (m != "POST") return RouteNotFound(req);
    if (action == "preview_change") {
        auto change = ParseChange(req, false);
        if (!change.ok()) return fail(change.error());
        auto preview = svc.PreviewChange(id, PlanId(change->plan), change->interval, change->proration_date);
        if (!preview.ok()) return fail(preview.error());
        return Json(200, PreviewJson(*preview));
    }
    const auto mutate = [&](const std::function<Result<SubscriptionView>()>& fn) {
        if (Status allowed = may_write(); !allowed.ok()) return fail(allowed.error());
        return Stored(d_.idempotency.RunWithExternalEffects(idem, [&]() -> Result<StoredResponse> {
            TALLY_ASSIGN_OR_RETURN(auto view, fn());
            return Render(200, render(view));
        }));
    };
    if (action == "change") {
        auto change = ParseChange(req, true);
        if (!change.ok()) return fail(change.error());
        if (change->at_period_end) {
            return mutate([&] { return svc.ChangeAtPeriodEnd(id, PlanId(change->plan), change->interval, stripe_key); });
        }
        return mutate([&] { return svc.Change(id, PlanId(change->plan), change->interval, change->proration_date, stripe_key); });
    }
    if (action == "cancel") {
        auto body = OptionalJsonBody(req, {"at_period_end", "prorate"});
        if (!body.ok()) return fail(body.error());
        auto at_period_end = json::OptionalBool(*body, "at_period_end", "", true);
        if (!at_period_end.ok()) return fail(at_period_end.error());
        auto prorate = json::OptionalBool(*body, "prorate", "", false);
        if (!prorate.ok()) return fail(prorate.error());
        return mutate([&] { return svc.Cancel(id, *at_period_end, *prorate, stripe_key); });
    }
    if (action == "resume" || action == "unpause") {
        auto body = OptionalJsonBody(req, {});
        if (!body.ok()) return fail(body.error());
        if (action == "resume") return mutate([&] { return svc.Resume(id, stripe_key); });
        return mutate([&] { return svc.SetPauseCollection(id, "", stripe_key); });
    }
    if (action == "pause") {
        auto body = OptionalJsonBody(req, {"behavior"});
        if (!body.ok()) return fail(body.error());
        auto behavior = json::OptionalString(*body, "behavior", "");
        if (!behavior.ok()) return fail(behavior.error());
        const std::string chosen = behavior->empty() ? "void" : *behavior;
        return mutate([&] { return svc.SetPauseCollection(id, chosen, stripe_key); });
    }
    return RouteNotFound(req);
}

Response Api::HostedSession(const Request& req, const IdempotencyRequest& idem,
                           const std::function<Status(const std::string& customer)>& authorize) {
    const auto& seg = req.segments;
    auto fail = [](const Error& e) { return ErrorResponse(e); };
    if (seg[1] == "checkout_sessions") {
        auto body = BindJsonBody(req, {"customer", "plan", "interval", "success_url", "cancel_url", "trial_period_days"});
        if (!body.ok()) return fail(body.error());
        auto customer = json::RequiredString(*body, "customer", "");
        if (!customer.ok()) return fail(customer.error());
        if (customer->empty()) return fail(MissingArgument("customer is required", "customer"));
        if (authorize) {
            if (Status allowed = authorize(*customer); !allowed.ok()) return fail(allowed.error());
        }
        auto plan = json::RequiredString(*body, "plan", "");
        if (!plan.ok()) return fail(plan.error());
        auto interval = json::OptionalString(*body, "interval", "");
        if (!interval.ok()) return fail(interval.error());
        auto success_url = json::OptionalString(*body, "success_url", "");
        if (!success_url.ok()) return fail(success_url.error());
        auto cancel_url = json::OptionalString(*body, "cancel_url", "");
        if (!cancel_url.ok()) return fail(cancel_url.error());
        auto trial = json::OptionalInt(*body, "trial_period_days", "");
        if (!trial.ok()) return fail(trial.error());
        // An interval left out means monthly; an empty string is a mistake and is refused, not defaulted.
        const bool has_interval = body->contains("interval") && !body->at("interval").is_null();
        if (has_interval && interval->empty()) return fail(InvalidArgument("interval must be month or year", "interval"));
        const std::string chosen = has_interval ? *interval : "month";
        return Stored(d_.idempotency.RunWithExternalEffects(idem, [&]() -> Result<StoredResponse> {
            // Stripe deduplicates the session by a key derived from the caller's (scoped to its API key), so a
            // retry after a crash mid-call gets the same session.
            const std::string stripe_key = idem.key.empty() ? "" : Sha256Hex(idem.api_key_id + ":" + idem.key);
            TALLY_ASSIGN_OR_RETURN(auto session, d_.checkout.StartCheckout(CustomerId(*customer), PlanId(*plan), chosen,
                                                                           *success_url, *cancel_url, *trial, stripe_key));
            return Render(200, bj::object{{"object", "checkout_session"}, {"id", session.id}, {"url", session.url},
                                          {"customer", *customer}, {"plan", *plan}, {"interval", chosen}});
        }));
    }
    {
        auto body = BindJsonBody(req, {"customer", "return_url"});
        if (!body.ok()) return fail(body.error());
        auto customer = json::RequiredString(*body, "customer", "");
        if (!customer.ok()) return fail(customer.error());
        if (customer->empty()) return fail(MissingArgument("customer is required", "customer"));
        if (authorize) {
            if (Status allowed = authorize(*customer); !allowed.ok()) return fail(allowed.error());
        }
        auto return_url = json::OptionalString(*body, "return_url", "");
        if (!return_url.ok()) return fail(return_url.error());
        return Stored(d_.idempotency.RunWithExternalEffects(idem, [&]() -> Result<StoredResponse> {
            TALLY_ASSIGN_OR_RETURN(auto session, d_.checkout.StartPortal(CustomerId(*customer), *return_url));
            return Render(200, bj::object{{"object", "billing_portal_session"}, {"id", session.id},
                                          {"url", session.url}, {"customer", *customer}});
        }));
    }
}

namespace {
/// enabled_events as a list of strings; kInvalidArgument naming `enabled_events[i]` for a non-string.
Result<std::vector<std::string>> StringList(const bj::object& body, const char* key) {
    const bj::value* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) return MissingArgument(std::string(key) + " is required", key);
    if (!v->is_array()) return InvalidArgument(std::string(key) + " must be an array of strings", key);
    std::vector<std::string> out;
    for (size_t i = 0; i < v->get_array().size(); ++i) {
        const bj::value& item = v->get_array()[i];
        if (!item.is_string()) {
            return InvalidArgument(std::string(key) + " must be an array of strings",
                                   std::string(key) + "[" + std::to_string(i) + "]");
        }
        out.emplace_back(item.get_string());
    }
    return out;
}

Response EventsList(const EventPage& page, const std::string& url) {
    std::string body = R"({"object":"list","data":[)";
    for (size_t i = 0; i < page.events.size(); ++i) body += (i ? "," : "") + page.events[i].payload;
    body += std::string(R"(],"has_more":)") + (page.has_more ? "true" : "false") + R"(,"url":")" + url + R"("})";
    return Response{200, std::move(body), "application/json", {}};
}
}  // namespace

Response Api::DispatchEvents(const Request& req, const Principal& principal, const IdempotencyRequest& idem) {
    const auto& seg = req.segments;
    const std::string& m = req.method;
    const bool get = m == "GET" || m == "HEAD";
    const std::string& actor = principal.key_id;
    auto fail = [](const Error& e) { return ErrorResponse(e); };
    auto& svc = d_.endpoints;

    if (seg[1] == "webhook_endpoints") {
        if (seg.size() == 2 && get) {
            auto list = svc.List();
            if (!list.ok()) return fail(list.error());
            bj::array data;
            for (const auto& e : *list) data.push_back(WebhookEndpointJson(e, false));
            return List(data, "/v1/webhook_endpoints");
        }
        if (seg.size() == 2 && m == "POST") {
            auto body = BindJsonBody(req, {"url", "enabled_events", "description"});
            if (!body.ok()) return fail(body.error());
            auto url = json::RequiredString(*body, "url", "");
            if (!url.ok()) return fail(url.error());
            auto events = StringList(*body, "enabled_events");
            if (!events.ok()) return fail(events.error());
            auto description = json::OptionalString(*body, "description", "");
            if (!description.ok()) return fail(description.error());
            // The secret is shown once: a replay of the creation gets the endpoint without it.
            return Stored(d_.idempotency.RunInStoreRedacted(
                idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
                    TALLY_ASSIGN_OR_RETURN(auto e, svc.Create(tx, {*url, *events, *description}, actor));
                    return std::make_pair(Render(201, WebhookEndpointJson(e, true)), Render(201, WebhookEndpointJson(e, false)));
                }));
        }
        if (seg.size() == 3 && get) {
            auto e = svc.Get(seg[2]);
            if (!e.ok()) return fail(e.error());
            return Json(200, WebhookEndpointJson(*e, false));
        }
        if (seg.size() == 3 && m == "POST") {
            auto body = BindJsonBody(req, {"url", "enabled_events", "description", "disabled"});
            if (!body.ok()) return fail(body.error());
            EndpointUpdate update;
            if (body->contains("url")) {
                auto url = json::RequiredString(*body, "url", "");
                if (!url.ok()) return fail(url.error());
                update.url = *url;
            }
            if (body->contains("enabled_events")) {
                auto events = StringList(*body, "enabled_events");
                if (!events.ok()) return fail(events.error());
                update.enabled_events = *events;
            }
            if (body->contains("description")) {
                auto description = json::OptionalString(*body, "description", "");
                if (!description.ok()) return fail(description.error());
                update.description = *description;
            }
            if (body->contains("disabled")) {
                if (!body->at("disabled").is_bool()) return fail(InvalidArgument("disabled must be a boolean", "disabled"));
                update.disabled = body->at("disabled").get_bool();
            }
            Response r = Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto e, svc.Update(tx, seg[2], update, actor));
                return Render(200, WebhookEndpointJson(e, false));
            }));
            if (r.status == 200) svc.NotifyNewDeliveries();  // enabled again: what waited may go now
            return r;
        }
        if (seg.size() == 3 && m == "DELETE") {
            return Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto e, svc.Delete(tx, seg[2], actor));
                bj::value v = WebhookEndpointJson(e, false);
                v.as_object()["deleted"] = true;
                return Render(200, v);
            }));
        }
        if (seg.size() == 4 && seg[3] == "roll_secret" && m == "POST") {
            if (!req.body.empty()) {
                auto body = BindJsonBody(req, {});
                if (!body.ok()) return fail(body.error());
            }
            return Stored(d_.idempotency.RunInStoreRedacted(
                idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
                    TALLY_ASSIGN_OR_RETURN(auto e, svc.RollSecret(tx, seg[2], actor));
                    return std::make_pair(Render(200, WebhookEndpointJson(e, true)), Render(200, WebhookEndpointJson(e, false)));
                }));
        }
        if (seg.size() == 4 && seg[3] == "deliveries" && get) {
            auto limit = PageSize(req);
            if (!limit.ok()) return fail(limit.error());
            std::optional<int64_t> after;
            if (auto it = req.query.find("starting_after"); it != req.query.end() && !it->second.empty()) {
                const std::string& v = it->second;
                int64_t n = 0;
                const char* begin = v.data() + (v.starts_with("wda_") ? 4 : 0);
                const auto [p, ec] = std::from_chars(begin, v.data() + v.size(), n);
                if (ec != std::errc() || p != v.data() + v.size()) {
                    return fail(InvalidArgument("starting_after must be a delivery attempt id (wda_...)", "starting_after"));
                }
                after = n;
            }
            auto attempts = svc.ListAttempts(seg[2], after, std::min(*limit, kEventPageSizeMax));
            if (!attempts.ok()) return fail(attempts.error());
            bj::array data;
            for (const auto& a : *attempts) data.push_back(DeliveryAttemptJson(a));
            return List(data, "/v1/webhook_endpoints/" + seg[2] + "/deliveries");
        }
    }
    if (seg[1] == "events") {
        if (seg.size() == 2 && get) {
            AppEventFilter filter;
            filter.limit = 10;  // Stripe's default page size for events
            static const char* const kAllowed[] = {"type", "customer", "created[gte]", "created[lte]", "limit",
                                                   "starting_after"};
            for (const auto& [k, v] : req.query) {
                bool known = false;
                for (const char* a : kAllowed) known = known || k == a;
                if (!known) {
                    return fail(WithReason(InvalidArgument("Received unknown parameter: " + k, k), ErrorReason::kParameterUnknown));
                }
            }
            const auto int_param = [&](const char* name) -> Result<std::optional<int64_t>> {
                auto it = req.query.find(name);
                if (it == req.query.end()) return std::optional<int64_t>();
                int64_t n = 0;
                const auto& v = it->second;
                const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
                if (v.empty() || ec != std::errc() || p != v.data() + v.size()) {
                    return InvalidArgument(std::string(name) + " must be an integer", name);
                }
                return std::optional<int64_t>(n);
            };
            auto limit = int_param("limit");
            if (!limit.ok()) return fail(limit.error());
            if (*limit) filter.limit = static_cast<int>(std::clamp<int64_t>(**limit, -1, kEventPageSizeMax + 1));
            auto gte = int_param("created[gte]");
            if (!gte.ok()) return fail(gte.error());
            if (*gte) filter.created_gte_ms = **gte * 1000;
            auto lte = int_param("created[lte]");
            if (!lte.ok()) return fail(lte.error());
            if (*lte) filter.created_lte_ms = **lte * 1000 + 999;
            if (auto it = req.query.find("type"); it != req.query.end()) filter.type = it->second;
            if (auto it = req.query.find("customer"); it != req.query.end()) filter.customer_id = it->second;
            const auto after = req.query.find("starting_after");
            auto page = svc.ListEvents(filter, after == req.query.end() ? "" : after->second);
            if (!page.ok()) return fail(page.error());
            return EventsList(*page, "/v1/events");
        }
        if (seg.size() == 3 && get) {
            auto event = svc.GetEvent(seg[2]);
            if (!event.ok()) return fail(event.error());
            return Response{200, event->payload, "application/json", {}};
        }
        if (seg.size() == 4 && seg[3] == "redeliver" && m == "POST") {
            auto body = BindJsonBody(req, {"endpoint"});
            if (!body.ok()) return fail(body.error());
            auto endpoint = json::RequiredString(*body, "endpoint", "");
            if (!endpoint.ok()) return fail(endpoint.error());
            Response r = Stored(d_.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
                TALLY_ASSIGN_OR_RETURN(auto d, svc.Redeliver(tx, seg[2], *endpoint, actor));
                return Render(200, bj::object{{"object", "event_delivery"}, {"id", d.id}, {"event", d.event_id},
                                              {"endpoint", d.endpoint_id}, {"status", "pending"}});
            }));
            if (r.status == 200) svc.NotifyNewDeliveries();
            return r;
        }
    }
    return RouteNotFound(req);
}

void Api::HandleWebhook(Request req, const Responder& respond) {
    const std::string signature = req.Header("stripe-signature");
    d_.receiver.Receive(std::move(req.body), signature, [respond](Result<WebhookReceipt> r) {
        if (!r.ok()) return respond(ErrorResponse(r.error()));
        respond(Json(200, bj::object{{"received", true},
                                     {"id", r->id.str()},
                                     {"type", r->type},
                                     {"duplicate", r->duplicate}}));
    });
}

}  // namespace tally::http
