#pragma once
// When and how long to retry a Stripe API request: stripe-node 23's policy (RequestSender._shouldRetry and
// _getSleepTimeInMS), so Tally behaves towards Stripe exactly as Stripe's own SDK does.
#include <cstdint>
#include <optional>
#include <string_view>

namespace tally::stripe {

constexpr int kStripeRetryCountDefault = 2;          // stripe-node's default maxNetworkRetries
constexpr int kStripeRetryCountMax = 10;
constexpr int64_t kStripeRetryDelayInitialMs = 500;  // INITIAL_NETWORK_RETRY_DELAY_SEC
constexpr int64_t kStripeRetryDelayMaxMs = 5000;     // MAX_NETWORK_RETRY_DELAY_SEC
constexpr int64_t kStripeTimeoutMsDefault = 80000;   // DEFAULT_TIMEOUT

/// The outcome of one attempt, as far as retrying is concerned.
struct AttemptOutcome {
    std::optional<int> http_status;          // absent: the request failed at the connection level
    bool connection_closed = false;          // the connection was closed under us (stale keep-alive)
    std::optional<std::string_view> should_retry_header;  // Stripe-Should-Retry, if present
};

/// Whether to retry after |retries_so_far| retries, given at most |retries_max|. Rules, in order:
/// a closed connection is retried once even with retries disabled; nothing past the maximum;
/// connection errors yes; Stripe-Should-Retry: false/true decides; 409 yes; >= 500 yes; else no (so 429
/// only when Stripe says so).
bool ShouldRetry(const AttemptOutcome& outcome, int retries_so_far, int retries_max);

/// Milliseconds to sleep before retry number |retry| (1-based): min(500 * 2^(retry-1), 5000), scaled by
/// (1000 + |jitter_permille|) / 2000 with jitter in [0, 1000) -- stripe-node's 0.5 * (1 + random) -- and never
/// below 500. The jitter comes from the caller so the policy stays a pure function.
int64_t RetryDelayMs(int retry, int jitter_permille);

}  // namespace tally::stripe
