#include "domain/subscription.hpp"

#include <sstream>

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

std::string SchedulePhasesToText(const std::vector<SchedulePhase>& phases) {
    std::string out;
    for (const auto& p : phases) {
        out += std::to_string(p.start.unix_seconds());
        out += ' ';
        out += std::to_string(p.end.unix_seconds());
        out += ' ';
        out += std::to_string(p.quantity);
        out += ' ';
        out += p.price_id;
        out += '\n';
    }
    return out;
}

std::vector<SchedulePhase> SchedulePhasesFromText(std::string_view text) {
    std::vector<SchedulePhase> out;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        int64_t start = 0;
        int64_t end = 0;
        int64_t quantity = 0;
        std::string price;
        if (!(fields >> start >> end >> quantity)) continue;
        fields >> price;  // "" for a phase Tally could not name
        out.push_back(SchedulePhase{Timestamp(start), Timestamp(end), price, quantity});
    }
    return out;
}

bool IsOpenScheduleStatus(std::string_view status) { return status == "not_started" || status == "active"; }

bool IsTerminalScheduleStatus(std::string_view status) {
    return status == "completed" || status == "released" || status == "canceled";
}

std::optional<SchedulePhase> PhaseChangeAt(const std::vector<SchedulePhase>& phases, Timestamp period_end,
                                           std::string_view price_id, int64_t quantity) {
    for (const auto& p : phases) {
        if (p.start != period_end) continue;
        if (p.price_id == price_id && p.quantity == quantity) return std::nullopt;
        return p;
    }
    return std::nullopt;
}

}  // namespace tally
