#include "app/webhook_endpoints.hpp"

#include "app/billing_service.hpp"
#include "app/event_dispatcher.hpp"
#include "domain/app_events.hpp"

namespace tally {

WebhookEndpointService::WebhookEndpointService(Store& store, const SecretHasher& hasher, const Clock& clock,
                                               std::function<void()> on_new_deliveries)
    : store_(store), hasher_(hasher), clock_(clock), on_new_deliveries_(std::move(on_new_deliveries)) {}

void WebhookEndpointService::NotifyNewDeliveries() const {
    if (on_new_deliveries_) on_new_deliveries_();
}

Status WebhookEndpointService::CheckDescription(const std::string& description) const {
    if (description.size() > kEndpointDescriptionBytesMax) {
        return InvalidArgument("description must be at most " + std::to_string(kEndpointDescriptionBytesMax) + " bytes",
                               "description");
    }
    return {};
}

namespace {
Error EndpointMissing(const std::string& id, const char* param = "id") {
    return NotFound("no such webhook endpoint: '" + id + "'", param);
}
AuditEntry EndpointAudit(const std::string& kind, const WebhookEndpointRecord& e, const std::string& actor, int64_t now_ms,
                         const std::string& detail = {}) {
    return AuditEntry{0, CustomerId(""), Timestamp(now_ms / 1000), kind, "", e.id, "admin:" + actor,
                      e.url + (detail.empty() ? "" : " " + detail)};
}
}  // namespace

Result<WebhookEndpointRecord> WebhookEndpointService::Create(StoreTx& tx, const EndpointCreate& create,
                                                             const std::string& actor) {
    TALLY_TRY(ValidateEndpointUrl(create.url));
    TALLY_TRY(ValidateEnabledEvents(create.enabled_events));
    TALLY_TRY(CheckDescription(create.description));
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.events().ListEndpoints());
    if (static_cast<int>(existing.size()) >= kWebhookEndpointCountMax) {
        return WithReason(InvalidArgument("at most " + std::to_string(kWebhookEndpointCountMax) +
                                              " webhook endpoints; delete one first",
                                          "url"),
                          ErrorReason::kResourceLimitExceeded);
    }
    const int64_t now = clock_.NowMs();
    WebhookEndpointRecord e;
    e.id = NewId("we_");
    e.url = create.url;
    e.description = create.description;
    e.enabled_events = create.enabled_events;
    e.secret = "whsec_" + hasher_.RandomHex(kWebhookSecretRandomBytes);
    e.created_ms = now;
    TALLY_TRY(tx.events().InsertEndpoint(e));
    TALLY_TRY(tx.audit().Append(EndpointAudit("webhook_endpoint_created", e, actor, now)));
    return e;
}

Result<WebhookEndpointRecord> WebhookEndpointService::Update(StoreTx& tx, const std::string& id,
                                                             const EndpointUpdate& update, const std::string& actor) {
    if (update.url) TALLY_TRY(ValidateEndpointUrl(*update.url));
    if (update.enabled_events) TALLY_TRY(ValidateEnabledEvents(*update.enabled_events));
    if (update.description) TALLY_TRY(CheckDescription(*update.description));
    TALLY_ASSIGN_OR_RETURN(auto e, tx.events().GetEndpoint(id));
    if (!e) return EndpointMissing(id);
    if (update.url) e->url = *update.url;
    if (update.enabled_events) e->enabled_events = *update.enabled_events;
    if (update.description) e->description = *update.description;
    if (update.disabled) {
        if (e->disabled && !*update.disabled) {
            // Enabled again: healthy until proven otherwise.
            e->failing_since_ms.reset();
            e->disabled_reason.clear();
        }
        e->disabled = *update.disabled;
    }
    TALLY_TRY(tx.events().UpdateEndpoint(*e));
    TALLY_TRY(tx.audit().Append(EndpointAudit("webhook_endpoint_updated", *e, actor, clock_.NowMs(),
                                           e->disabled ? "(disabled)" : "(enabled)")));
    return std::move(*e);
}

Result<WebhookEndpointRecord> WebhookEndpointService::Delete(StoreTx& tx, const std::string& id,
                                                             const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto e, tx.events().GetEndpoint(id));
    if (!e) return EndpointMissing(id);
    TALLY_TRY(tx.events().DeleteEndpoint(id));
    TALLY_TRY(tx.audit().Append(EndpointAudit("webhook_endpoint_deleted", *e, actor, clock_.NowMs())));
    return std::move(*e);
}

Result<WebhookEndpointRecord> WebhookEndpointService::RollSecret(StoreTx& tx, const std::string& id,
                                                                 const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto e, tx.events().GetEndpoint(id));
    if (!e) return EndpointMissing(id);
    const int64_t now = clock_.NowMs();
    e->previous_secret = e->secret;
    e->previous_secret_expires_ms = now + kSecretRollOverlapMs;
    e->secret = "whsec_" + hasher_.RandomHex(kWebhookSecretRandomBytes);
    TALLY_TRY(tx.events().UpdateEndpoint(*e));
    TALLY_TRY(tx.audit().Append(EndpointAudit("webhook_endpoint_secret_rolled", *e, actor, now)));
    return std::move(*e);
}

Result<WebhookEndpointRecord> WebhookEndpointService::Get(const std::string& id) {
    std::optional<WebhookEndpointRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, tx.events().GetEndpoint(id));
        return {};
    }));
    if (!out) return EndpointMissing(id);
    return std::move(*out);
}

Result<std::vector<WebhookEndpointRecord>> WebhookEndpointService::List() {
    std::vector<WebhookEndpointRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, tx.events().ListEndpoints());
        return {};
    }));
    return out;
}

Result<AppEventRecord> WebhookEndpointService::GetEvent(const std::string& id) {
    std::optional<AppEventRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, tx.events().GetEvent(id));
        return {};
    }));
    if (!out) return NotFound("no such event: '" + id + "'", "id");
    return std::move(*out);
}

Result<EventPage> WebhookEndpointService::ListEvents(AppEventFilter filter, const std::string& starting_after) {
    if (filter.limit < 1 || filter.limit > kEventPageSizeMax) {
        return InvalidArgument("limit must be between 1 and " + std::to_string(kEventPageSizeMax), "limit");
    }
    if (!filter.type.empty() && !IsAppEventType(filter.type)) {
        return InvalidArgument("unknown event type '" + filter.type + "'", "type");
    }
    EventPage page;
    const int limit = filter.limit;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        if (!starting_after.empty()) {
            TALLY_ASSIGN_OR_RETURN(auto cursor, tx.events().GetEvent(starting_after));
            if (!cursor) return InvalidArgument("starting_after: no such event '" + starting_after + "'", "starting_after");
            filter.before_seq = cursor->seq;
        }
        filter.limit = limit + 1;
        TALLY_ASSIGN_OR_RETURN(page.events, tx.events().ListEvents(filter));
        return {};
    }));
    if (static_cast<int>(page.events.size()) > limit) {
        page.events.resize(static_cast<size_t>(limit));
        page.has_more = true;
    }
    return page;
}

Result<std::vector<DeliveryAttemptRecord>> WebhookEndpointService::ListAttempts(const std::string& id,
                                                                                std::optional<int64_t> starting_after,
                                                                                int limit) {
    if (limit < 1 || limit > kEventPageSizeMax) {
        return InvalidArgument("limit must be between 1 and " + std::to_string(kEventPageSizeMax), "limit");
    }
    std::vector<DeliveryAttemptRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto e, tx.events().GetEndpoint(id));
        if (!e) return EndpointMissing(id);
        TALLY_ASSIGN_OR_RETURN(out, tx.events().ListDeliveryAttempts(id, starting_after, limit));
        return {};
    }));
    return out;
}

Result<DeliveryRecord> WebhookEndpointService::Redeliver(StoreTx& tx, const std::string& event_id,
                                                         const std::string& endpoint_id, const std::string& actor) {
    if (endpoint_id.empty()) return MissingArgument("endpoint is required", "endpoint");
    TALLY_ASSIGN_OR_RETURN(auto event, tx.events().GetEvent(event_id));
    if (!event) return NotFound("no such event: '" + event_id + "'", "id");
    TALLY_ASSIGN_OR_RETURN(auto endpoint, tx.events().GetEndpoint(endpoint_id));
    if (!endpoint) return EndpointMissing(endpoint_id, "endpoint");
    const int64_t now = clock_.NowMs();
    DeliveryRecord d;
    d.event_seq = event->seq;
    d.event_id = event->id;
    d.endpoint_id = endpoint->id;
    d.object_id = event->object_id;
    d.next_attempt_ms = now;
    // A redelivery gets a fresh retry window: the app asked for it now.
    d.event_created_ms = now;
    TALLY_ASSIGN_OR_RETURN(d.id, tx.events().InsertDelivery(d));
    TALLY_TRY(tx.audit().Append(EndpointAudit("event_redelivery_requested", *endpoint, actor, now, "event=" + event->id)));
    return d;
}

}  // namespace tally
