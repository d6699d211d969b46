#include "app/event_outbox.hpp"

#include "domain/app_events.hpp"

namespace tally {

EventOutbox::EventOutbox(const ApiObjectRenderer& renderer, const Clock& clock) : renderer_(renderer), clock_(clock) {}

void EventOutbox::SetListener(std::function<void()> on_deliveries) { on_deliveries_ = std::move(on_deliveries); }

Status EventOutbox::Emit(StoreTx& tx, std::string_view type, const std::string& object_id,
                         const std::string& customer_id, const std::string& object_json,
                         const ApiObjectRenderer::Attributes& previous) {
    if (!IsAppEventType(type)) return Internal("emitting an unknown event type '" + std::string(type) + "'");
    EventStoreTx& events = tx.events();
    AppEventRecord event;
    event.id = NewId("evt_");
    event.type = std::string(type);
    event.created_ms = clock_.NowMs();
    event.object_id = object_id;
    event.customer_id = customer_id;
    TALLY_ASSIGN_OR_RETURN(event.object_sequence, events.NextObjectSequence(object_id));
    event.payload = renderer_.Envelope(event, object_json, previous);
    if (event.payload.size() > kAppEventPayloadBytesMax) {
        return Internal("event " + event.type + " is " + std::to_string(event.payload.size()) + " bytes, over " +
                        std::to_string(kAppEventPayloadBytesMax));
    }
    TALLY_ASSIGN_OR_RETURN(event.seq, events.InsertEvent(event));
    TALLY_ASSIGN_OR_RETURN(auto endpoints, events.ListEndpoints());
    bool any = false;
    for (const auto& endpoint : endpoints) {
        // Disabled endpoints still get their deliveries queued: re-enabled, they receive what they missed (within
        // the retry window).
        if (!EndpointWantsEvent(endpoint.enabled_events, type)) continue;
        DeliveryRecord d;
        d.event_seq = event.seq;
        d.event_id = event.id;
        d.endpoint_id = endpoint.id;
        d.object_id = object_id;
        d.next_attempt_ms = event.created_ms;
        d.event_created_ms = event.created_ms;
        TALLY_TRY(events.InsertDelivery(d));
        any = true;
    }
    if (any && on_deliveries_) on_deliveries_();
    return {};
}

}  // namespace tally
