#pragma once
// Rules of the events Tally sends to the app (its own webhooks): the event types, which endpoint wants which
// event, endpoint URLs, and the retry schedule. Pure functions, table-tested in app_events_test.cpp.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "domain/result.hpp"

namespace tally {

/// Every event type Tally emits, in the order the README lists them.
std::span<const std::string_view> AppEventTypes();
/// Whether |type| is one of AppEventTypes().
bool IsAppEventType(std::string_view type);
/// Whether an endpoint subscribed to |enabled_events| (event types, or "*" for all) wants an event of |type|.
bool EndpointWantsEvent(const std::vector<std::string>& enabled_events, std::string_view type);
/// Checks an endpoint's enabled_events: a non-empty list of known types or "*", without duplicates.
/// kInvalidArgument naming `enabled_events[i]` for the first bad entry.
Status ValidateEnabledEvents(const std::vector<std::string>& enabled_events);

constexpr size_t kWebhookEndpointUrlBytesMax = 2048;
/// Checks a receiver URL: `http://` or `https://`, a host (name, IPv4 or [IPv6]), an optional port 1-65535, an
/// optional path/query; no user info, no fragment, no spaces or control characters, at most
/// kWebhookEndpointUrlBytesMax bytes. kInvalidArgument (reason kUrlInvalid, param "url") otherwise.
Status ValidateEndpointUrl(std::string_view url);

/// The delivery schedule (after Stripe's: "Stripe attempts to deliver your webhooks for up to three days with an
/// exponential back off", docs.stripe.com/webhooks#retries): the delay before the next attempt doubles from
/// |base_ms| up to |max_ms|, with ±|jitter_permille|‰ jitter so retries of many deliveries spread out.
struct DeliveryRetryPolicy {
    int64_t base_ms = 60'000;
    int64_t max_ms = 3'600'000;
    int jitter_permille = 200;
    int64_t window_ms = int64_t{3} * 86'400'000;  // a delivery not delivered this long after its event is failed
};
/// The delay before attempt |failed_attempts|+1 (>= 1), given |random_permille| in [0, 1000) from a random source
/// (500 = no jitter). Integer arithmetic only.
int64_t DeliveryRetryDelayMs(const DeliveryRetryPolicy& policy, int failed_attempts, int random_permille);
/// When to try a delivery again after its |failed_attempts|-th failure at |now_ms|, or nullopt when its event
/// (created at |event_created_ms|) is past the policy's window: then the delivery is failed for good.
std::optional<int64_t> NextDeliveryAttemptMs(const DeliveryRetryPolicy& policy, int64_t event_created_ms,
                                             int failed_attempts, int64_t now_ms, int random_permille);
/// Whether an endpoint failing without a success since |failing_since_ms| is to be disabled at |now_ms| (Stripe
/// disables an endpoint that has failed for 3 days).
bool ShouldDisableEndpoint(const DeliveryRetryPolicy& policy, int64_t failing_since_ms, int64_t now_ms);

}  // namespace tally
