#pragma once
// Access decisions: which role and plan a customer has, derived from its subscriptions (seeds 000/001).
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "domain/catalog.hpp"
#include "domain/subscription.hpp"
#include "domain/time.hpp"

namespace tally {

/// What the role rule needs to know about one subscription.
struct SubscriptionAccessInput {
    std::string subscription_id;
    SubscriptionStatus status = SubscriptionStatus::kIncomplete;
    const Plan* plan = nullptr;             // null when the price matches no catalog plan
    std::optional<Timestamp> past_due_since;  // first failed payment of the current dunning run
};

/// An administrator's override of the automation, in force until |expires_at| (exclusive) if set.
struct RoleOverride {
    std::string role;
    std::string reason;
    std::optional<Timestamp> expires_at;
    Timestamp created_at;
    bool ActiveAt(Timestamp now) const { return !expires_at || now < *expires_at; }
};

/// The outcome of the role rule at one instant.
struct AccessDecision {
    std::string role;
    const Plan* plan = nullptr;        // never null: the default plan when nothing entitles
    std::string role_source;           // "override", "subscription" or "default"
    std::string subscription_id;       // the subscription that grants |plan|, if any
    std::optional<Timestamp> grace_ends_at;   // set while a past_due subscription is inside its grace period
    std::optional<Timestamp> next_change_at;  // earliest instant at which time alone changes the decision
};

/// Whether a subscription in |status| grants its plan at |now|: active and trialing do; past_due does until
/// past_due_since + grace; everything else (incomplete, paused, canceled, unpaid, incomplete_expired) does not.
bool Entitles(const SubscriptionAccessInput& sub, Timestamp now, int64_t grace_period_seconds);

/// The role rule: the highest role among entitling subscriptions (the plan of highest rank among them),
/// else the catalog's default role and plan; an active override beats the automation for the role.
AccessDecision DecideAccess(const Catalog& catalog, std::span<const SubscriptionAccessInput> subscriptions,
                            const std::optional<RoleOverride>& role_override, Timestamp now,
                            int64_t grace_period_seconds);

}  // namespace tally
