#include "domain/flags.hpp"

#include <gtest/gtest.h>

#include <string>

namespace tally {
namespace {

// The published FNV-1a 64 test vectors (www.isthe.com/chongo/tech/comp/fnv, "FNV-1a 64 bit"): the buckets every
// customer has today rest on these, so they must never change.
TEST(FlagsTest, Fnv1a64PublishedVectors) {
    EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
    EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
    EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(FlagsTest, BucketIsTheHashOfFlagAndCustomer) {
    EXPECT_EQ(FlagBucket("billing_v2", "cus_123"), static_cast<int>(Fnv1a64("billing_v2:cus_123") % 100));
    // Another flag puts the same customer elsewhere (for most customers): not every flag's first 10% is the same.
    int same = 0;
    for (int i = 0; i < 1000; ++i) {
        const std::string c = "cus_" + std::to_string(i);
        same += FlagBucket("billing_v2", c) == FlagBucket("new_dashboard", c);
    }
    EXPECT_LT(same, 50);
}

TEST(FlagsTest, BucketsSpreadEvenly) {
    int in = 0;
    for (int i = 0; i < 10000; ++i) in += FlagBucket("billing_v2", "cus_" + std::to_string(i)) < 30;
    EXPECT_GT(in, 2800);
    EXPECT_LT(in, 3200);
}

TEST(FlagsTest, RaisingThePercentageOnlyAddsCustomers) {
    FeatureFlag flag{"billing_v2", "", true, 0};
    for (int i = 0; i < 2000; ++i) {
        const std::string c = "cus_" + std::to_string(i);
        bool was_on = false;
        for (int p = 0; p <= 100; ++p) {
            flag.rollout_percentage = p;
            const bool on = EvaluateFlag(flag, std::nullopt, c).enabled;
            EXPECT_TRUE(on || !was_on) << c << " left the rollout at " << p << "%";
            was_on = on;
        }
        EXPECT_TRUE(was_on) << c << " is not on at 100%";
    }
}

TEST(FlagsTest, EvaluateTable) {
    const std::string c = "cus_123";
    const int bucket = FlagBucket("billing_v2", c);
    struct Case {
        const char* name;
        bool enabled;
        int percentage;
        std::optional<bool> override_value;
        bool on;
        FlagReason reason;
    };
    const Case cases[] = {
        {"disabled: off for everyone", false, 100, std::nullopt, false, FlagReason::kDisabled},
        {"disabled wins over an override", false, 100, true, false, FlagReason::kDisabled},
        {"an override turns it on outside the rollout", true, 0, true, true, FlagReason::kOverride},
        {"an override turns it off inside the rollout", true, 100, false, false, FlagReason::kOverride},
        {"inside the rollout", true, bucket + 1, std::nullopt, true, FlagReason::kRollout},
        {"just outside the rollout", true, bucket, std::nullopt, false, FlagReason::kNotInRollout},
        {"0%", true, 0, std::nullopt, false, FlagReason::kNotInRollout},
        {"100%", true, 100, std::nullopt, true, FlagReason::kRollout},
    };
    for (const auto& k : cases) {
        const FlagDecision d = EvaluateFlag(FeatureFlag{"billing_v2", "", k.enabled, k.percentage}, k.override_value, c);
        EXPECT_EQ(d.enabled, k.on) << k.name;
        EXPECT_EQ(d.reason, k.reason) << k.name;
    }
    EXPECT_STREQ(FlagReasonName(FlagReason::kNotInRollout), "not_in_rollout");
}

TEST(FlagsTest, Validation) {
    for (const char* good : {"billing_v2", "a", "new-dashboard.beta", "0day"}) EXPECT_TRUE(ValidateFlagName(good).ok()) << good;
    for (std::string bad : {std::string(""), std::string("_x"), std::string("Billing"), std::string("a b"),
                            std::string(65, 'a')}) {
        auto s = ValidateFlagName(bad);
        ASSERT_FALSE(s.ok()) << bad;
        EXPECT_EQ(s.error().param, "name");
    }
    EXPECT_TRUE(ValidateRolloutPercentage(0).ok());
    EXPECT_TRUE(ValidateRolloutPercentage(100).ok());
    EXPECT_EQ(ValidateRolloutPercentage(101).error().param, "rollout_percentage");
    EXPECT_FALSE(ValidateRolloutPercentage(-1).ok());
}

}  // namespace
}  // namespace tally
