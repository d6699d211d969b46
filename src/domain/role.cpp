#include "domain/role.hpp"

#include <algorithm>

namespace tally {

bool Entitles(const SubscriptionAccessInput& sub, Timestamp now, int64_t grace_period_seconds) {
    switch (sub.status) {
        case SubscriptionStatus::kActive:
        case SubscriptionStatus::kTrialing: return true;
        case SubscriptionStatus::kPastDue:
            // Without a known failure instant the grace period is taken to have started now (fail open once).
            return !sub.past_due_since || now < sub.past_due_since->PlusSeconds(grace_period_seconds);
        default: return false;
    }
}

AccessDecision DecideAccess(const Catalog& catalog, std::span<const SubscriptionAccessInput> subscriptions,
                            const std::optional<RoleOverride>& role_override, Timestamp now,
                            int64_t grace_period_seconds) {
    AccessDecision decision;
    decision.role = catalog.default_role();
    decision.plan = &catalog.default_plan();
    decision.role_source = "default";
    int best_role = 0;
    auto note_change = [&decision](Timestamp at) {
        if (!decision.next_change_at || at < *decision.next_change_at) decision.next_change_at = at;
    };
    for (const auto& sub : subscriptions) {
        if (sub.plan == nullptr || !Entitles(sub, now, grace_period_seconds)) continue;
        std::optional<Timestamp> grace_end;
        if (sub.status == SubscriptionStatus::kPastDue && sub.past_due_since) {
            grace_end = sub.past_due_since->PlusSeconds(grace_period_seconds);
            note_change(*grace_end);
        }
        const int role_rank = catalog.RoleRank(sub.plan->role);
        const bool better_plan = decision.role_source == "default" || sub.plan->rank > decision.plan->rank;
        if (role_rank > best_role || (role_rank == best_role && better_plan)) {
            best_role = std::max(best_role, role_rank);
            decision.role = sub.plan->role;
            decision.plan = sub.plan;
            decision.role_source = "subscription";
            decision.subscription_id = sub.subscription_id;
            decision.grace_ends_at = grace_end;
        }
    }
    if (role_override && role_override->ActiveAt(now) && catalog.RoleRank(role_override->role) >= 0) {
        decision.role = role_override->role;
        decision.role_source = "override";
        if (role_override->expires_at) note_change(*role_override->expires_at);
    }
    return decision;
}

}  // namespace tally
