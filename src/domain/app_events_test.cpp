#include "domain/app_events.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

TEST(AppEvents, TypesAndSubscriptions) {
    EXPECT_EQ(AppEventTypes().size(), 27u);
    EXPECT_TRUE(IsAppEventType("customer.role_changed"));
    EXPECT_FALSE(IsAppEventType("customer.subscription.updated"));  // Stripe's name, not Tally's
    EXPECT_TRUE(EndpointWantsEvent({"*"}, "invoice.paid"));
    EXPECT_TRUE(EndpointWantsEvent({"invoice.paid", "customer.created"}, "customer.created"));
    EXPECT_FALSE(EndpointWantsEvent({"invoice.paid"}, "customer.created"));
    EXPECT_FALSE(EndpointWantsEvent({}, "customer.created"));
}

TEST(AppEvents, EnabledEventsValidation) {
    struct Case {
        std::vector<std::string> events;
        bool ok;
        std::string param;
    };
    const Case cases[] = {
        {{"*"}, true, ""},
        {{"customer.created", "invoice.paid"}, true, ""},
        {{}, false, "enabled_events"},
        {{"customer.created", "customer.nope"}, false, "enabled_events[1]"},
        {{"invoice.paid", "invoice.paid"}, false, "enabled_events[1]"},
        {{""}, false, "enabled_events[0]"},
    };
    for (const auto& c : cases) {
        const Status s = ValidateEnabledEvents(c.events);
        EXPECT_EQ(s.ok(), c.ok) << c.param;
        if (!c.ok) {
            EXPECT_EQ(s.error().param, c.param);
        }
    }
}

TEST(AppEvents, EndpointUrls) {
    const std::pair<const char*, bool> cases[] = {
        {"https://example.com/hooks/tally", true},
        {"http://127.0.0.1:8081/", true},
        {"http://localhost:3000", true},
        {"https://[::1]:8443/x?y=1", true},
        {"https://api.example.co.uk/a/b?c=d&e=f", true},
        {"", false},
        {"ftp://example.com/", false},
        {"example.com/hooks", false},
        {"https://", false},
        {"https:///path", false},
        {"https://user:pw@example.com/", false},
        {"https://example.com:0/", false},
        {"https://example.com:65536/", false},
        {"https://example.com:/", false},
        {"https://example.com:80a/", false},
        {"https://exa mple.com/", false},
        {"https://example.com/a b", false},
        {"https://example.com/#frag", false},
        {"https://[::1/", false},
        {"https://ex..ample.com/", false},
        {"https://-example.com/", false},
        {"https://exämple.com/", false},
    };
    for (const auto& [url, ok] : cases) {
        const Status s = ValidateEndpointUrl(url);
        EXPECT_EQ(s.ok(), ok) << url;
        if (!s.ok()) {
            EXPECT_EQ(s.error().param, "url") << url;
            if (std::string(url).empty()) {
                EXPECT_EQ(s.error().reason, ErrorReason::kParameterMissing);
            } else {
                EXPECT_EQ(s.error().reason, ErrorReason::kUrlInvalid) << url;
            }
        }
    }
    EXPECT_FALSE(ValidateEndpointUrl("https://e.com/" + std::string(kWebhookEndpointUrlBytesMax, 'a')).ok());
}

TEST(AppEvents, RetryScheduleDoublesToTheCapWithBoundedJitter) {
    const DeliveryRetryPolicy p;  // 60 s doubling to 1 h, ±20 %, 3 days
    struct Case {
        int failed;
        int random_permille;
        int64_t delay_ms;
    };
    const Case cases[] = {
        {1, 500, 60'000},    {2, 500, 120'000},   {3, 500, 240'000},   {6, 500, 1'920'000},
        {7, 500, 3'600'000}, {50, 500, 3'600'000}, {1, 0, 48'000},     {1, 999, 71'940},
        {7, 0, 2'880'000},   {7, 999, 4'316'400},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(DeliveryRetryDelayMs(p, c.failed, c.random_permille), c.delay_ms) << c.failed << " " << c.random_permille;
    }
    const DeliveryRetryPolicy fast{100, 1000, 0, 10'000};
    EXPECT_EQ(DeliveryRetryDelayMs(fast, 1, 123), 100);
    EXPECT_EQ(DeliveryRetryDelayMs(fast, 5, 999), 1000);
}

TEST(AppEvents, DeliveriesGiveUpAfterTheWindowAndEndpointsAreDisabledAfterIt) {
    const DeliveryRetryPolicy p;
    const int64_t day = 86'400'000;
    EXPECT_EQ(NextDeliveryAttemptMs(p, 0, 1, 1000, 500), 61'000);
    EXPECT_EQ(NextDeliveryAttemptMs(p, 0, 60, 3 * day - 3'600'000, 500), 3 * day);  // exactly at the window: kept
    EXPECT_EQ(NextDeliveryAttemptMs(p, 0, 60, 3 * day - 3'599'999, 500), std::nullopt);
    EXPECT_FALSE(ShouldDisableEndpoint(p, 0, 3 * day - 1));
    EXPECT_TRUE(ShouldDisableEndpoint(p, 0, 3 * day));
}

}  // namespace
}  // namespace tally
