#include "domain/event_order.hpp"

namespace tally {

int EventTypeRank(std::string_view event_type) {
    if (event_type.ends_with(".created")) return 0;
    if (event_type.ends_with(".deleted")) return 2;
    return 1;
}

bool FollowsFrom(const FieldMap& later_previous_attributes, const FieldMap& earlier_object) {
    if (later_previous_attributes.empty()) return false;
    for (const auto& [key, value] : later_previous_attributes) {
        const auto it = earlier_object.find(key);
        if (it == earlier_object.end() || it->second != value) return false;
    }
    return true;
}

bool Supersedes(const EventStamp& incoming, const EventStamp& stored, bool incoming_follows_stored,
                bool stored_follows_incoming, bool incoming_received_later) {
    if (incoming.event_id == stored.event_id) return false;
    if (incoming.created != stored.created) return incoming.created > stored.created;
    if (incoming.terminal != stored.terminal) return incoming.terminal;
    if (incoming_follows_stored != stored_follows_incoming) return incoming_follows_stored;
    // Mirror images carry no order of their own; Stripe sends events in the order they happened unless a
    // delivery is retried, so arrival order is the best evidence left.
    if (incoming_follows_stored) return incoming_received_later;
    if (incoming.type_rank != stored.type_rank) return incoming.type_rank > stored.type_rank;
    return incoming.event_id > stored.event_id;
}

}  // namespace tally
