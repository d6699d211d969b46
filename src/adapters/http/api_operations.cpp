// Routes of API keys, the audit log, Stripe's webhook events (the inbox), and the app's webhook endpoints and events.
#include <boost/json.hpp>

#include <algorithm>
#include <charconv>

#include "adapters/config/json_util.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http::routes {
namespace {

namespace bj = boost::json;

Response Fail(const Error& e) { return ErrorResponse(e); }

/// |key| as a list of strings; kInvalidArgument naming `key[i]` for a non-string.
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
    for (size_t i = 0; i < page.events.size(); ++i) {
        if (i) body += ",";
        body += page.events[i].payload;
    }
    body += R"(],"has_more":)";
    body += page.has_more ? "true" : "false";
    body += R"(,"url":")";
    body += url;
    body += R"("})";
    return Response{200, std::move(body), "application/json", {}};
}

}  // namespace


Response ListApiKeys(const ApiDeps& d, const Call&) {
    auto keys = d.keys.List();
    if (!keys.ok()) return Fail(keys.error());
    bj::array data;
    for (const auto& k : *keys) data.push_back(ApiKeyJson(k));
    return List(data, "/v1/api_keys");
}

Response CreateApiKey(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"scope", "name"});
    if (!body.ok()) return Fail(body.error());
    auto scope_text = json::RequiredString(*body, "scope", "");
    if (!scope_text.ok()) return Fail(scope_text.error());
    auto scope = ParseApiKeyScope(*scope_text);
    if (!scope.ok()) return Fail(scope.error());
    auto name = json::RequiredString(*body, "name", "");
    if (!name.ok()) return Fail(name.error());
    // The secret is shown once and never stored: a replay gets the key without it.
    return Stored(d.idempotency.RunInStoreRedacted(
        c.idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
            TALLY_ASSIGN_OR_RETURN(auto created, d.keys.Create(tx, *scope, *name, "admin:" + c.actor));
            return std::make_pair(Render(201, ApiKeyJson(created.record, created.secret)),
                                  Render(201, ApiKeyJson(created.record)));
        }));
}

Response RevokeApiKey(const ApiDeps& d, const Call& c) {
    // Revoking twice is harmless, so a replay may simply run again.
    return Stored(d.idempotency.RunWithExternalEffects(c.idem, [&]() -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto key, d.keys.Revoke(c.param(0), "admin:" + c.actor));
        return Render(200, ApiKeyJson(key));
    }));
}

Response ListAudit(const ApiDeps& d, const Call& c) {
    auto limit = PageSize(c.req);
    if (!limit.ok()) return Fail(limit.error());
    const auto it = c.req.query.find("customer");
    auto entries = d.billing.ListAudit(CustomerId(it == c.req.query.end() ? "" : it->second), *limit);
    if (!entries.ok()) return Fail(entries.error());
    bj::array data;
    for (const auto& e : *entries) data.push_back(AuditJson(e));
    return List(data, "/v1/audit");
}

Response ListWebhookEvents(const ApiDeps& d, const Call& c) {
    auto limit = PageSize(c.req);
    if (!limit.ok()) return Fail(limit.error());
    std::optional<InboxStatus> status;
    if (auto it = c.req.query.find("status"); it != c.req.query.end()) {
        auto parsed = ParseInboxStatus(it->second);
        if (!parsed.ok()) return Fail(parsed.error());
        status = *parsed;
    }
    std::vector<InboxEvent> events;
    Status s = d.store.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(events, tx.inbox().List(status, *limit));
        return {};
    });
    if (!s.ok()) return Fail(s.error());
    bj::array data;
    for (const auto& e : events) data.push_back(InboxJson(e));
    return List(data, "/v1/webhook_events");
}

Response GetWebhookEvent(const ApiDeps& d, const Call& c) {
    std::optional<InboxEvent> event;
    Status s = d.store.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(event, tx.inbox().Get(StripeEventId(c.param(0))));
        return {};
    });
    if (!s.ok()) return Fail(s.error());
    if (!event) return Fail(NotFound("no such webhook event: '" + c.param(0) + "'", "id"));
    return Json(200, InboxJson(*event));
}

Response RetryWebhookEvent(const ApiDeps& d, const Call& c) {
    // Processing an event again is idempotent by the ordering rules, so a replay may run again.
    return Stored(d.idempotency.RunWithExternalEffects(c.idem, [&]() -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto event, d.processor.Retry(StripeEventId(c.param(0))));
        (void)d.processor.ProcessOne(event.id);  // the outcome is recorded on the event
        std::optional<InboxEvent> after;
        TALLY_TRY(d.store.Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(after, tx.inbox().Get(event.id));
            return {};
        }));
        if (!after) return Internal("event " + event.id.str() + " vanished");
        return Render(200, InboxJson(*after));
    }));
}

Response ListWebhookEndpoints(const ApiDeps& d, const Call&) {
    auto list = d.endpoints.List();
    if (!list.ok()) return Fail(list.error());
    bj::array data;
    for (const auto& e : *list) data.push_back(WebhookEndpointJson(e, false));
    return List(data, "/v1/webhook_endpoints");
}

Response CreateWebhookEndpoint(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"url", "enabled_events", "description"});
    if (!body.ok()) return Fail(body.error());
    auto url = json::RequiredString(*body, "url", "");
    if (!url.ok()) return Fail(url.error());
    auto events = StringList(*body, "enabled_events");
    if (!events.ok()) return Fail(events.error());
    auto description = json::OptionalString(*body, "description", "");
    if (!description.ok()) return Fail(description.error());
    // The secret is shown once: a replay of the creation gets the endpoint without it.
    return Stored(d.idempotency.RunInStoreRedacted(
        c.idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
            TALLY_ASSIGN_OR_RETURN(auto e, d.endpoints.Create(tx, {*url, *events, *description}, c.actor));
            return std::make_pair(Render(201, WebhookEndpointJson(e, true)), Render(201, WebhookEndpointJson(e, false)));
        }));
}

Response GetWebhookEndpoint(const ApiDeps& d, const Call& c) {
    auto e = d.endpoints.Get(c.param(0));
    if (!e.ok()) return Fail(e.error());
    return Json(200, WebhookEndpointJson(*e, false));
}

Response UpdateWebhookEndpoint(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"url", "enabled_events", "description", "disabled"});
    if (!body.ok()) return Fail(body.error());
    EndpointUpdate update;
    if (body->contains("url")) {
        auto url = json::RequiredString(*body, "url", "");
        if (!url.ok()) return Fail(url.error());
        update.url = *url;
    }
    if (body->contains("enabled_events")) {
        auto events = StringList(*body, "enabled_events");
        if (!events.ok()) return Fail(events.error());
        update.enabled_events = *events;
    }
    if (body->contains("description")) {
        auto description = json::OptionalString(*body, "description", "");
        if (!description.ok()) return Fail(description.error());
        update.description = *description;
    }
    if (body->contains("disabled")) {
        if (!body->at("disabled").is_bool()) return Fail(InvalidArgument("disabled must be a boolean", "disabled"));
        update.disabled = body->at("disabled").get_bool();
    }
    Response r = Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto e, d.endpoints.Update(tx, c.param(0), update, c.actor));
        return Render(200, WebhookEndpointJson(e, false));
    }));
    if (r.status == 200) d.endpoints.NotifyNewDeliveries();  // enabled again: what waited may go now
    return r;
}

Response DeleteWebhookEndpoint(const ApiDeps& d, const Call& c) {
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto e, d.endpoints.Delete(tx, c.param(0), c.actor));
        bj::value v = WebhookEndpointJson(e, false);
        v.as_object()["deleted"] = true;
        return Render(200, v);
    }));
}

Response RollWebhookEndpointSecret(const ApiDeps& d, const Call& c) {
    auto body = OptionalJsonBody(c.req, {});
    if (!body.ok()) return Fail(body.error());
    return Stored(d.idempotency.RunInStoreRedacted(
        c.idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
            TALLY_ASSIGN_OR_RETURN(auto e, d.endpoints.RollSecret(tx, c.param(0), c.actor));
            return std::make_pair(Render(200, WebhookEndpointJson(e, true)), Render(200, WebhookEndpointJson(e, false)));
        }));
}

Response ListWebhookEndpointDeliveries(const ApiDeps& d, const Call& c) {
    auto limit = PageSize(c.req);
    if (!limit.ok()) return Fail(limit.error());
    std::optional<int64_t> after;
    if (auto it = c.req.query.find("starting_after"); it != c.req.query.end() && !it->second.empty()) {
        const std::string& v = it->second;
        int64_t n = 0;
        const char* begin = v.data() + (v.starts_with("wda_") ? 4 : 0);
        const auto [p, ec] = std::from_chars(begin, v.data() + v.size(), n);
        if (ec != std::errc() || p != v.data() + v.size()) {
            return Fail(InvalidArgument("starting_after must be a delivery attempt id (wda_...)", "starting_after"));
        }
        after = n;
    }
    auto attempts = d.endpoints.ListAttempts(c.param(0), after, std::min(*limit, kEventPageSizeMax));
    if (!attempts.ok()) return Fail(attempts.error());
    bj::array data;
    for (const auto& a : *attempts) data.push_back(DeliveryAttemptJson(a));
    return List(data, "/v1/webhook_endpoints/" + c.param(0) + "/deliveries");
}

Response ListEvents(const ApiDeps& d, const Call& c) {
    const Request& req = c.req;
    AppEventFilter filter;
    filter.limit = 10;  // Stripe's default page size for events
    if (Status s = OnlyQueryParams(req, {"type", "customer", "created[gte]", "created[lte]", "limit", "starting_after"});
        !s.ok()) {
        return Fail(s.error());
    }
    auto limit = IntQuery(req, "limit");
    if (!limit.ok()) return Fail(limit.error());
    if (*limit) filter.limit = static_cast<int>(std::clamp<int64_t>(**limit, -1, kEventPageSizeMax + 1));
    auto gte = IntQuery(req, "created[gte]");
    if (!gte.ok()) return Fail(gte.error());
    if (*gte) filter.created_gte_ms = **gte * 1000;
    auto lte = IntQuery(req, "created[lte]");
    if (!lte.ok()) return Fail(lte.error());
    if (*lte) filter.created_lte_ms = **lte * 1000 + 999;
    if (auto it = req.query.find("type"); it != req.query.end()) filter.type = it->second;
    if (auto it = req.query.find("customer"); it != req.query.end()) filter.customer_id = it->second;
    const auto after = req.query.find("starting_after");
    auto page = d.endpoints.ListEvents(filter, after == req.query.end() ? "" : after->second);
    if (!page.ok()) return Fail(page.error());
    return EventsList(*page, "/v1/events");
}

Response GetEvent(const ApiDeps& d, const Call& c) {
    auto event = d.endpoints.GetEvent(c.param(0));
    if (!event.ok()) return Fail(event.error());
    return Response{200, event->payload, "application/json", {}};
}

Response RedeliverEvent(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"endpoint"});
    if (!body.ok()) return Fail(body.error());
    auto endpoint = json::RequiredString(*body, "endpoint", "");
    if (!endpoint.ok()) return Fail(endpoint.error());
    Response r = Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto delivery, d.endpoints.Redeliver(tx, c.param(0), *endpoint, c.actor));
        return Render(200, bj::object{{"object", "event_delivery"}, {"id", delivery.id}, {"event", delivery.event_id},
                                      {"endpoint", delivery.endpoint_id}, {"status", "pending"}});
    }));
    if (r.status == 200) d.endpoints.NotifyNewDeliveries();
    return r;
}

}  // namespace tally::http::routes
