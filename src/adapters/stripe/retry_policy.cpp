#include "adapters/stripe/retry_policy.hpp"

#include <algorithm>

namespace tally::stripe {

bool ShouldRetry(const AttemptOutcome& outcome, int retries_so_far, int retries_max) {
    if (!outcome.http_status && outcome.connection_closed && retries_so_far == 0) return true;
    if (retries_so_far >= retries_max) return false;
    if (!outcome.http_status) return true;
    if (outcome.should_retry_header) {
        if (*outcome.should_retry_header == "false") return false;
        if (*outcome.should_retry_header == "true") return true;
    }
    if (*outcome.http_status == 409) return true;
    return *outcome.http_status >= 500;
}

int64_t RetryDelayMs(int retry, int jitter_permille) {
    const int shift = std::clamp(retry - 1, 0, 20);
    const int64_t base = std::min(kStripeRetryDelayInitialMs << shift, kStripeRetryDelayMaxMs);
    const int64_t jitter = std::clamp(jitter_permille, 0, 999);
    return std::max(kStripeRetryDelayInitialMs, base * (1000 + jitter) / 2000);
}

}  // namespace tally::stripe
