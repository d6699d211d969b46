#include "domain/app_events.hpp"

#include <algorithm>
#include <array>

namespace tally {

namespace {
constexpr std::array<std::string_view, 27> kTypes = {
    "customer.created",
    "customer.updated",
    "customer.role_changed",
    "customer.entitlements_updated",
    "customer.grace_period_started",
    "customer.grace_period_ended",
    "customer.member_added",
    "customer.member_updated",
    "customer.member_removed",
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_failed",
    "plan.created",
    "plan.updated",
    "plan.archived",
    "usage.threshold_reached",
    "credits.granted",
    "credits.expired",
    "credits.threshold_reached",
    "credits.purchase_succeeded",
    "credits.purchase_failed",
    "credits.purchase_refunded",
    "credits.auto_purchase_succeeded",
    "credits.auto_purchase_failed",
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHostChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) || c == '-' || c == '.' || c == '_';
}
Status BadUrl(const std::string& why) {
    return WithReason(InvalidArgument("url is invalid: " + why + " (expected http(s)://host[:port]/path)", "url"),
                      ErrorReason::kUrlInvalid);
}
}  // namespace

std::span<const std::string_view> AppEventTypes() { return kTypes; }

bool IsAppEventType(std::string_view type) { return std::find(kTypes.begin(), kTypes.end(), type) != kTypes.end(); }

bool EndpointWantsEvent(const std::vector<std::string>& enabled_events, std::string_view type) {
    return std::any_of(enabled_events.begin(), enabled_events.end(),
                       [&](const std::string& e) { return e == "*" || e == type; });
}

Status ValidateEnabledEvents(const std::vector<std::string>& enabled_events) {
    if (enabled_events.empty()) {
        return MissingArgument("enabled_events must list at least one event type, or \"*\"", "enabled_events");
    }
    for (size_t i = 0; i < enabled_events.size(); ++i) {
        const std::string param = "enabled_events[" + std::to_string(i) + "]";
        const std::string& e = enabled_events[i];
        if (e != "*" && !IsAppEventType(e)) {
            return InvalidArgument("unknown event type '" + e + "'; see the README for the list, or use \"*\"", param);
        }
        if (std::find(enabled_events.begin(), enabled_events.begin() + static_cast<std::ptrdiff_t>(i), e) !=
            enabled_events.begin() + static_cast<std::ptrdiff_t>(i)) {
            return InvalidArgument("event type '" + e + "' is listed twice", param);
        }
    }
    return {};
}

Status ValidateEndpointUrl(std::string_view url) {
    if (url.empty()) return MissingArgument("url is required", "url");
    if (url.size() > kWebhookEndpointUrlBytesMax) {
        return BadUrl("longer than " + std::to_string(kWebhookEndpointUrlBytesMax) + " bytes");
    }
    for (char c : url) {
        if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
            return BadUrl("spaces, control and non-ASCII characters must be percent-encoded");
        }
    }
    std::string_view rest;
    if (url.starts_with("https://")) {
        rest = url.substr(8);
    } else if (url.starts_with("http://")) {
        rest = url.substr(7);
    } else {
        return BadUrl("the scheme must be http or https");
    }
    if (url.find('#') != std::string_view::npos) return BadUrl("no fragment (#...)");
    const size_t end = std::min(rest.find('/'), rest.find('?'));
    const std::string_view authority = rest.substr(0, end);
    if (authority.find('@') != std::string_view::npos) return BadUrl("no user name or password in the URL");
    std::string_view host = authority;
    std::string_view port;
    if (authority.starts_with("[")) {
        const size_t close = authority.find(']');
        if (close == std::string_view::npos || close == 1) return BadUrl("an IPv6 host must be [address]");
        for (char c : authority.substr(1, close - 1)) {
            if (!(IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.')) {
                return BadUrl("an IPv6 host must be [address]");
            }
        }
        host = authority.substr(0, close + 1);
        const std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after[0] != ':') return BadUrl("unexpected text after the host");
            port = after.substr(1);
            if (port.empty()) return BadUrl("an empty port");
        }
    } else {
        const size_t colon = authority.find(':');
        if (colon != std::string_view::npos) {
            host = authority.substr(0, colon);
            port = authority.substr(colon + 1);
            if (port.empty()) return BadUrl("an empty port");
        }
        if (host.empty()) return BadUrl("no host");
        if (!std::all_of(host.begin(), host.end(), IsHostChar) || host.front() == '.' || host.front() == '-' ||
            host.find("..") != std::string_view::npos) {
            return BadUrl("the host '" + std::string(host) + "' is not a host name or address");
        }
    }
    if (!port.empty()) {
        if (port.size() > 5 || !std::all_of(port.begin(), port.end(), IsDigit)) return BadUrl("the port must be 1-65535");
        const int n = std::stoi(std::string(port));
        if (n < 1 || n > 65535) return BadUrl("the port must be 1-65535");
    }
    return {};
}

int64_t DeliveryRetryDelayMs(const DeliveryRetryPolicy& policy, int failed_attempts, int random_permille) {
    const int doublings = std::clamp(failed_attempts - 1, 0, 40);
    int64_t delay = std::max<int64_t>(1, policy.base_ms);
    for (int i = 0; i < doublings && delay < policy.max_ms; ++i) delay *= 2;
    delay = std::min(delay, policy.max_ms);
    // 500 is the midpoint: jitter spreads the delay over [1 - j, 1 + j) of itself, j = jitter_permille / 1000.
    const int64_t r = std::clamp(random_permille, 0, 999);
    const int64_t offset_permille = policy.jitter_permille * (2 * r - 1000) / 1000;  // in (-j, +j) permille
    return std::max<int64_t>(1, delay + delay * offset_permille / 1000);
}

std::optional<int64_t> NextDeliveryAttemptMs(const DeliveryRetryPolicy& policy, int64_t event_created_ms,
                                             int failed_attempts, int64_t now_ms, int random_permille) {
    const int64_t at = now_ms + DeliveryRetryDelayMs(policy, failed_attempts, random_permille);
    if (at - event_created_ms > policy.window_ms) return std::nullopt;
    return at;
}

bool ShouldDisableEndpoint(const DeliveryRetryPolicy& policy, int64_t failing_since_ms, int64_t now_ms) {
    return now_ms - failing_since_ms >= policy.window_ms;
}

}  // namespace tally
