#include "adapters/stripe/retry_policy.hpp"

#include <gtest/gtest.h>

namespace tally::stripe {
namespace {

TEST(RetryPolicyTest, WhenToRetryFollowsStripeNode) {
    struct Case {
        const char* name;
        AttemptOutcome outcome;
        int retries_so_far;
        int retries_max;
        bool want;
    };
    const Case cases[] = {
        {"connection error", {std::nullopt, false, std::nullopt}, 0, 2, true},
        {"connection error, out of retries", {std::nullopt, false, std::nullopt}, 2, 2, false},
        {"closed connection retried once even with retries off", {std::nullopt, true, std::nullopt}, 0, 0, true},
        {"closed connection only once", {std::nullopt, true, std::nullopt}, 1, 0, false},
        {"409 conflict", {409, false, std::nullopt}, 0, 2, true},
        {"500", {500, false, std::nullopt}, 1, 2, true},
        {"503", {503, false, std::nullopt}, 0, 2, true},
        {"500 but Stripe says no", {500, false, "false"}, 0, 2, false},
        {"429 alone is not retried", {429, false, std::nullopt}, 0, 2, false},
        {"429 when Stripe says yes", {429, false, "true"}, 0, 2, true},
        {"400", {400, false, std::nullopt}, 0, 2, false},
        {"402 card declined", {402, false, std::nullopt}, 0, 2, false},
        {"404", {404, false, std::nullopt}, 0, 2, false},
        {"out of retries beats the header", {500, false, "true"}, 2, 2, false},
    };
    for (const auto& c : cases) EXPECT_EQ(ShouldRetry(c.outcome, c.retries_so_far, c.retries_max), c.want) << c.name;
}

TEST(RetryPolicyTest, DelayIsExponentialCappedJitteredAndFloored) {
    struct Case { int retry; int jitter; int64_t want_ms; };
    const Case cases[] = {
        {1, 0, 500},   // 500 * 0.5 = 250, floored to the 500 ms base
        {1, 999, 500}, // 500 * 0.9995
        {2, 0, 500},   // 1000 * 0.5
        {2, 999, 999},
        {3, 500, 1500},  // 2000 * 0.75
        {4, 999, 3998},
        {5, 0, 2500},    // capped at 5000, * 0.5
        {5, 999, 4997},
        {30, 999, 4997},
    };
    for (const auto& c : cases) EXPECT_EQ(RetryDelayMs(c.retry, c.jitter), c.want_ms) << c.retry << "/" << c.jitter;
}

}  // namespace
}  // namespace tally::stripe
