#pragma once
// Stripe subscription statuses and what each means for access.
#include <optional>
#include <string>
#include <string_view>

#include "domain/result.hpp"

namespace tally {

/// Stripe's subscription statuses (../shared/stripe/README.md, "Subscriptions").
enum class SubscriptionStatus { kIncomplete, kIncompleteExpired, kTrialing, kActive, kPastDue, kCanceled, kUnpaid, kPaused };

/// Parses Stripe's spelling ("past_due", ...); kInvalidArgument for anything else.
Result<SubscriptionStatus> ParseSubscriptionStatus(std::string_view text);
const char* SubscriptionStatusName(SubscriptionStatus status);
/// canceled and incomplete_expired are terminal: Stripe never moves a subscription out of them.
bool IsTerminal(SubscriptionStatus status);

}  // namespace tally
