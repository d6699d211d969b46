#include "adapters/http/api.hpp"

#include <boost/json.hpp>

#include <charconv>

#include "adapters/config/json_util.hpp"
#include "adapters/crypto.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http {
namespace {

namespace bj = boost::json;

Response Json(int status, const bj::value& v) { return Response{status, bj::serialize(v), "application/json", {}}; }

Response List(const bj::array& data, const std::string& url) {
    return Json(200, bj::object{{"object", "list"}, {"data", data}, {"has_more", false}, {"url", url}});
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

/// Parses a JSON object body, rejecting unknown parameters as Stripe does.
Result<bj::object> BodyObject(const Request& req, std::initializer_list<const char*> allowed) {
    if (req.body.size() > kApiBodyBytesMax) {
        return InvalidArgument("body exceeds " + std::to_string(kApiBodyBytesMax) + " bytes", "body");
    }
    if (req.body.empty()) return InvalidArgument("a JSON object body is required", "body");
    TALLY_ASSIGN_OR_RETURN(bj::value v, json::Parse(req.body));
    if (!v.is_object()) return InvalidArgument("body must be a JSON object", "body");
    for (const auto& kv : v.get_object()) {
        bool known = false;
        for (const char* k : allowed) known = known || kv.key() == k;
        if (!known) return InvalidArgument("Received unknown parameter: " + std::string(kv.key()), std::string(kv.key()));
    }
    return std::move(v.get_object());
}

}  // namespace

Response ErrorResponse(const Error& e) {
    switch (e.code) {
        case ErrorCode::kInvalidArgument: {
            const bool missing = e.message.ends_with("is required");
            return ApiError(400, "invalid_request_error", missing ? "parameter_missing" : "parameter_invalid", e.message,
                            e.param);
        }
        case ErrorCode::kUnauthenticated: return ApiError(401, "authentication_error", "unauthorized", e.message);
        case ErrorCode::kPermissionDenied: return ApiError(403, "invalid_request_error", "forbidden", e.message);
        case ErrorCode::kNotFound: return ApiError(404, "invalid_request_error", "resource_missing", e.message, e.param);
        case ErrorCode::kConflict: return ApiError(409, "invalid_request_error", "conflict", e.message, e.param);
        case ErrorCode::kPayloadTooLarge:
            return ApiError(413, "invalid_request_error", "payload_too_large", e.message, e.param);
        case ErrorCode::kInsufficientCredits:
            return ApiError(402, "invalid_request_error", "insufficient_credits", e.message, e.param);
        case ErrorCode::kUnavailable: return ApiError(503, "api_error", "service_unavailable", e.message);
        case ErrorCode::kInternal: return ApiError(500, "api_error", "internal_error", e.message);
    }
    return ApiError(500, "api_error", "internal_error", e.message);
}

Result<std::string> Api::Authenticate(const Request& req) {
    const std::string auth = req.Header("authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (auth.size() <= kBearer.size() || auth.compare(0, kBearer.size(), kBearer) != 0) {
        return Error{ErrorCode::kUnauthenticated,
                     "You did not provide an API key. Send it as 'Authorization: Bearer <key>'.", ""};
    }
    const std::string hash = Sha256Hex(std::string_view(auth).substr(kBearer.size()));
    if (!d_.admin_key_sha256.empty() && ConstantTimeEquals(hash, d_.admin_key_sha256)) return std::string("env_admin");
    {
        std::lock_guard lock(key_cache_mu_);
        if (auto it = key_cache_.find(hash); it != key_cache_.end()) return it->second;
    }
    std::optional<ApiKeyRecord> key;
    TALLY_TRY(d_.store.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(key, tx.FindApiKeyByHash(hash));
        return {};
    }));
    if (!key) return Error{ErrorCode::kUnauthenticated, "Invalid API key provided.", ""};
    std::lock_guard lock(key_cache_mu_);
    key_cache_[hash] = key->id;
    return key->id;
}

void Api::Handle(Request req, Responder respond) {
    if (req.path == "/webhooks/stripe") {
        if (req.method != "POST") return respond(ApiError(405, "invalid_request_error", "method_not_allowed", "use POST"));
        return HandleWebhook(std::move(req), std::move(respond));
    }
    if (req.path == "/health" && req.method == "GET") {
        const bool db_ok = d_.store.Ping().ok();
        return respond(Json(db_ok ? 200 : 503, bj::object{{"status", db_ok ? "ok" : "degraded"},
                                                          {"database", db_ok ? "ok" : "unavailable"},
                                                          {"version", d_.version},
                                                          {"time", d_.clock.Now().unix_seconds()}}));
    }
    if (req.path == "/v1/plans" && req.method == "GET") {
        bj::array data;
        for (const auto& plan : d_.catalog.plans()) data.push_back(PlanJson(plan));
        return respond(List(data, "/v1/plans"));
    }
    if (req.path == "/billing/return" && req.method == "GET") {
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
    if (!req.path.starts_with("/v1/")) {
        return respond(ApiError(404, "invalid_request_error", "route_not_found", "Unrecognized request URL (" +
                                                                                   req.method + ": " + req.path + ")"));
    }
    auto actor = Authenticate(req);
    if (!actor.ok()) return respond(ErrorResponse(actor.error()));

    // Idempotency-Key on mutations: the same key and request replay the stored response; the same key with a
    // different request is an idempotency_error (Stripe's contract).
    const std::string idem_key = req.Header("idempotency-key");
    if (!idem_key.empty() && (req.method == "POST" || req.method == "DELETE")) {
        if (idem_key.size() > kIdempotencyKeyBytesMax) {
            return respond(ApiError(400, "invalid_request_error", "parameter_invalid",
                                    "Idempotency-Key must be at most 255 characters", "Idempotency-Key"));
        }
        const std::string request_hash = Sha256Hex(*actor + "\n" + req.method + " " + req.path + "\n" + req.body);
        std::optional<IdempotencyRecord> stored;
        Status s = d_.store.Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(stored, tx.GetIdempotency(idem_key));
            return {};
        });
        if (!s.ok()) return respond(ErrorResponse(s.error()));
        if (stored) {
            if (stored->request_hash != request_hash) {
                return respond(ApiError(400, "idempotency_error", "idempotency_key_in_use",
                                        "Keys for idempotent requests can only be used with the same parameters they "
                                        "were first used with.",
                                        "Idempotency-Key"));
            }
            Response r{stored->status, stored->response_body, "application/json", {{"Idempotent-Replayed", "true"}}};
            return respond(std::move(r));
        }
        Response r = Dispatch(req, *actor);
        if (r.status < 500) {
            // A concurrent twin may have stored first; its response wins next time, this one is still correct.
            (void)d_.store.Write([&](StoreTx& tx) -> Status {
                return tx.PutIdempotency({idem_key, request_hash, r.status, r.body, d_.clock.Now()});
            });
        }
        return respond(std::move(r));
    }
    respond(Dispatch(req, *actor));
}

Response Api::Dispatch(const Request& req, const std::string& actor) {
    const auto seg = PathSegments(req.path);  // seg[0] == "v1"
    const std::string& m = req.method;
    auto fail = [](const Error& e) { return ErrorResponse(e); };

    if (seg.size() >= 2 && seg[1] == "customers") {
        if (seg.size() == 2 && m == "POST") {
            auto body = BodyObject(req, {"external_id", "email", "name"});
            if (!body.ok()) return fail(body.error());
            auto external_id = json::RequiredString(*body, "external_id", "");
            if (!external_id.ok()) return fail(external_id.error());
            auto email = json::OptionalString(*body, "email", "");
            if (!email.ok()) return fail(email.error());
            auto name = json::OptionalString(*body, "name", "");
            if (!name.ok()) return fail(name.error());
            auto created = d_.billing.CreateCustomer(*external_id, *email, *name);
            if (!created.ok()) return fail(created.error());
            return Json(created->second ? 201 : 200, CustomerJson(created->first));
        }
        if (seg.size() == 2 && m == "GET") {
            const auto ext = req.query.find("external_id");
            const auto sid = req.query.find("stripe_customer_id");
            Result<std::vector<CustomerView>> found = std::vector<CustomerView>{};
            if (ext != req.query.end() && !ext->second.empty()) {
                found = d_.billing.FindByExternalId(ext->second);
            } else if (sid != req.query.end() && !sid->second.empty()) {
                found = d_.billing.FindByStripeCustomerId(StripeCustomerId(sid->second));
            } else {
                return fail(InvalidArgument("external_id or stripe_customer_id is required", "external_id"));
            }
            if (!found.ok()) return fail(found.error());
            bj::array data;
            for (const auto& v : *found) data.push_back(CustomerJson(v));
            return List(data, "/v1/customers");
        }
        if (seg.size() == 3 && m == "GET") {
            auto view = d_.billing.GetCustomer(CustomerId(seg[2]));
            if (!view.ok()) return fail(view.error());
            return Json(200, CustomerJson(*view));
        }
        if (seg.size() == 4 && seg[3] == "entitlements" && m == "GET") {
            auto view = d_.billing.GetCustomer(CustomerId(seg[2]));
            if (!view.ok()) return fail(view.error());
            return Json(200, EntitlementsJson(*view));
        }
        if (seg.size() == 4 && seg[3] == "role_override" && m == "POST") {
            auto body = BodyObject(req, {"role", "reason", "expires_at"});
            if (!body.ok()) return fail(body.error());
            auto role = json::RequiredString(*body, "role", "");
            if (!role.ok()) return fail(role.error());
            auto reason = json::RequiredString(*body, "reason", "");
            if (!reason.ok()) return fail(reason.error());
            auto expires = json::OptionalInt(*body, "expires_at", "");
            if (!expires.ok()) return fail(expires.error());
            std::optional<Timestamp> expires_at;
            if (*expires) expires_at = Timestamp(**expires);
            auto view = d_.billing.SetRoleOverride(CustomerId(seg[2]), *role, *reason, expires_at, actor);
            if (!view.ok()) return fail(view.error());
            return Json(200, CustomerJson(*view));
        }
        if (seg.size() == 4 && seg[3] == "role_override" && m == "DELETE") {
            auto view = d_.billing.ClearRoleOverride(CustomerId(seg[2]), actor);
            if (!view.ok()) return fail(view.error());
            return Json(200, CustomerJson(*view));
        }
    }
    if (seg.size() == 2 && seg[1] == "checkout_sessions" && m == "POST") {
        auto body = BodyObject(req, {"customer", "plan", "interval", "success_url", "cancel_url", "trial_period_days"});
        if (!body.ok()) return fail(body.error());
        auto customer = json::RequiredString(*body, "customer", "");
        if (!customer.ok()) return fail(customer.error());
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
        auto session = d_.checkout.StartCheckout(CustomerId(*customer), PlanId(*plan), interval->empty() ? "month" : *interval,
                                                 *success_url, *cancel_url, trial->value_or(0),
                                                 req.Header("idempotency-key"));
        if (!session.ok()) return fail(session.error());
        return Json(200, bj::object{{"object", "checkout_session"}, {"id", session->id}, {"url", session->url},
                                    {"customer", *customer}, {"plan", *plan},
                                    {"interval", interval->empty() ? "month" : *interval}});
    }
    if (seg.size() == 2 && seg[1] == "billing_portal_sessions" && m == "POST") {
        auto body = BodyObject(req, {"customer", "return_url"});
        if (!body.ok()) return fail(body.error());
        auto customer = json::RequiredString(*body, "customer", "");
        if (!customer.ok()) return fail(customer.error());
        auto return_url = json::OptionalString(*body, "return_url", "");
        if (!return_url.ok()) return fail(return_url.error());
        auto session = d_.checkout.StartPortal(CustomerId(*customer), *return_url);
        if (!session.ok()) return fail(session.error());
        return Json(200, bj::object{{"object", "billing_portal_session"}, {"id", session->id}, {"url", session->url},
                                    {"customer", *customer}});
    }
    if (seg.size() == 2 && seg[1] == "audit" && m == "GET") {
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
        if (seg.size() == 2 && m == "GET") {
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
                TALLY_ASSIGN_OR_RETURN(events, tx.ListInbox(status, *limit));
                return {};
            });
            if (!s.ok()) return fail(s.error());
            bj::array data;
            for (const auto& e : events) data.push_back(InboxJson(e));
            return List(data, "/v1/webhook_events");
        }
        if (seg.size() == 3 && m == "GET") {
            std::optional<InboxEvent> event;
            Status s = d_.store.Read([&](StoreTx& tx) -> Status {
                TALLY_ASSIGN_OR_RETURN(event, tx.GetInboxEvent(StripeEventId(seg[2])));
                return {};
            });
            if (!s.ok()) return fail(s.error());
            if (!event) return fail(NotFound("no such webhook event: '" + seg[2] + "'", "id"));
            return Json(200, InboxJson(*event));
        }
        if (seg.size() == 4 && seg[3] == "retry" && m == "POST") {
            auto event = d_.processor.Retry(StripeEventId(seg[2]));
            if (!event.ok()) return fail(event.error());
            (void)d_.processor.ProcessOne(event->id);  // the outcome is recorded on the event
            std::optional<InboxEvent> after;
            Status s = d_.store.Read([&](StoreTx& tx) -> Status {
                TALLY_ASSIGN_OR_RETURN(after, tx.GetInboxEvent(event->id));
                return {};
            });
            if (!s.ok() || !after) return fail(s.ok() ? Internal("event vanished") : s.error());
            return Json(200, InboxJson(*after));
        }
    }
    return ApiError(404, "invalid_request_error", "route_not_found",
                    "Unrecognized request URL (" + m + ": " + req.path + ")");
}

void Api::HandleWebhook(Request req, Responder respond) {
    const std::string signature = req.Header("stripe-signature");
    d_.receiver.Receive(std::move(req.body), signature, [respond = std::move(respond)](Result<WebhookReceipt> r) {
        if (!r.ok()) {
            const Error& e = r.error();
            if (e.param == "Stripe-Signature") {
                return respond(ApiError(400, "invalid_request_error", "signature_verification_failed", e.message,
                                        e.param));
            }
            if (e.param == "body" && e.message.find("limit") != std::string::npos) {
                return respond(ApiError(400, "invalid_request_error", "payload_too_large", e.message, e.param));
            }
            if (e.code == ErrorCode::kInvalidArgument) {
                return respond(ApiError(400, "invalid_request_error", "malformed_payload", e.message, e.param));
            }
            return respond(ErrorResponse(e));
        }
        respond(Json(200, bj::object{{"received", true},
                                     {"id", r->id.str()},
                                     {"type", r->type},
                                     {"duplicate", r->duplicate}}));
    });
}

}  // namespace tally::http
