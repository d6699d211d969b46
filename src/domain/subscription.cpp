#include "domain/subscription.hpp"

#include <array>
#include <utility>

namespace tally {
namespace {
constexpr std::array<std::pair<SubscriptionStatus, const char*>, 8> kNames = {{
    {SubscriptionStatus::kIncomplete, "incomplete"},
    {SubscriptionStatus::kIncompleteExpired, "incomplete_expired"},
    {SubscriptionStatus::kTrialing, "trialing"},
    {SubscriptionStatus::kActive, "active"},
    {SubscriptionStatus::kPastDue, "past_due"},
    {SubscriptionStatus::kCanceled, "canceled"},
    {SubscriptionStatus::kUnpaid, "unpaid"},
    {SubscriptionStatus::kPaused, "paused"},
}};
}  // namespace

Result<SubscriptionStatus> ParseSubscriptionStatus(std::string_view text) {
    for (const auto& [status, name] : kNames) {
        if (text == name) return status;
    }
    return InvalidArgument("unknown subscription status '" + std::string(text) + "'", "status");
}

const char* SubscriptionStatusName(SubscriptionStatus status) {
    for (const auto& [s, name] : kNames) {
        if (s == status) return name;
    }
    return "incomplete";
}

bool IsTerminal(SubscriptionStatus status) {
    return status == SubscriptionStatus::kCanceled || status == SubscriptionStatus::kIncompleteExpired;
}

}  // namespace tally
