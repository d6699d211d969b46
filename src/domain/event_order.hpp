#pragma once
// Which of two Stripe events about the same object carries the newer state.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace tally {

/// Top-level fields of a Stripe object, each as its compact JSON text.
using FieldMap = std::map<std::string, std::string, std::less<>>;

/// The ordering key of the event whose snapshot an object's stored state came from.
struct EventStamp {
    int64_t created = 0;        // event.created, Unix seconds
    int type_rank = 1;          // EventTypeRank(event.type)
    std::string event_id;       // evt_...
    bool terminal = false;      // the snapshot is in a state Stripe never leaves (canceled, deleted, ...)
};

/// *.created -> 0, *.deleted -> 2, anything else -> 1.
int EventTypeRank(std::string_view event_type);

/// True if |later.previous_attributes| describes a change away from |earlier|'s object: every key in it
/// is present in |earlier_object| with the same value. An empty previous_attributes proves nothing.
bool FollowsFrom(const FieldMap& later_previous_attributes, const FieldMap& earlier_object);

/// The ordering rule (README "Event ordering"): true if the incoming snapshot should replace the stored one.
/// 1. a later `created` second wins;
/// 2. in the same second, a terminal snapshot beats a non-terminal one;
/// 3. then chain evidence: an event whose previous_attributes match the other's object came after it;
///    when each matches the other's (a change and its reversal, mirror images), the one received later wins;
/// 4. then the type: created < updated < deleted;
/// 5. then the larger event id (bytewise), an arbitrary but deterministic last resort.
/// The same event id never supersedes itself. |incoming_received_later|: the incoming event reached the inbox
/// after the stored snapshot's event (only consulted for mirror images).
bool Supersedes(const EventStamp& incoming, const EventStamp& stored, bool incoming_follows_stored,
                bool stored_follows_incoming, bool incoming_received_later);

}  // namespace tally
