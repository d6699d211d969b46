#pragma once
// Stripe subscription statuses and what each means for access.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

/// Stripe's subscription statuses (../shared/stripe/README.md, "Subscriptions").
enum class SubscriptionStatus { kIncomplete, kIncompleteExpired, kTrialing, kActive, kPastDue, kCanceled, kUnpaid, kPaused };

/// Parses Stripe's spelling ("past_due", ...); kInvalidArgument for anything else.
Result<SubscriptionStatus> ParseSubscriptionStatus(std::string_view text);
const char* SubscriptionStatusName(SubscriptionStatus status);
/// canceled and incomplete_expired are terminal: Stripe never moves a subscription out of them.
bool IsTerminal(SubscriptionStatus status);

/// One phase of a Stripe subscription schedule: from |start| to |end| (Unix seconds), the subscription's single
/// item is |price_id| × |quantity|.
struct SchedulePhase {
    Timestamp start;
    Timestamp end;
    std::string price_id;
    int64_t quantity = 1;
    bool operator==(const SchedulePhase&) const = default;
};

/// Stripe's subscription schedule statuses: not_started and active schedules still change their subscription;
/// completed, released and canceled ones never again (terminal).
bool IsOpenScheduleStatus(std::string_view status);
bool IsTerminalScheduleStatus(std::string_view status);

/// |phases| as text, one "start end quantity price" line each (the stores' column format); the inverse reads
/// what it wrote and skips lines it cannot read (a row never fails to load).
std::string SchedulePhasesToText(const std::vector<SchedulePhase>& phases);
std::vector<SchedulePhase> SchedulePhasesFromText(std::string_view text);

/// The change an open schedule makes when the subscription's current period ends at |period_end|: the phase
/// starting exactly then, if its price or quantity differ from the subscription's (|price_id|, |quantity|);
/// nullopt when no phase starts then or it changes nothing. Source: Stripe moves a subscription to the next
/// phase's items at the phase boundary (docs.stripe.com/billing/subscriptions/subscription-schedules,
/// "Transitioning to the next phase").
std::optional<SchedulePhase> PhaseChangeAt(const std::vector<SchedulePhase>& phases, Timestamp period_end,
                                           std::string_view price_id, int64_t quantity);

}  // namespace tally
