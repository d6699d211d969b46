#pragma once
// Rollout flags (seed 004's `billing_v2`): a flag is on for a customer when it is enabled and either an admin's
// per-customer override says so or the customer's stable bucket falls inside the rollout percentage. Pure rules.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "domain/result.hpp"

namespace tally {

constexpr int kFlagBuckets = 100;           // a customer's bucket is 0..99; a percentage p takes buckets 0..p-1
constexpr size_t kFlagNameLengthMax = 64;   // [a-z0-9_.-], starting with a letter or digit
constexpr size_t kFlagDescriptionLengthMax = 500;

/// A flag's settings (per-customer overrides are kept apart: there may be many).
struct FeatureFlag {
    std::string name;
    std::string description;
    bool enabled = false;        // the kill switch: off for everyone, overrides included, while false
    int rollout_percentage = 0;  // 0..100: the share of customers it is on for
    bool operator==(const FeatureFlag&) const = default;
};

/// FNV-1a, 64-bit (the published offset basis and prime; www.isthe.com/chongo/tech/comp/fnv): "a" ->
/// 0xaf63dc4c8601ec8c. Fixed forever: buckets are derived from it.
uint64_t Fnv1a64(std::string_view text);

/// The customer's bucket for |flag|, 0..kFlagBuckets-1: FNV-1a (64-bit) of "<flag>:<customer>" modulo 100. It
/// depends on nothing else, so it is the same on every node and across restarts, and a customer in a rollout at
/// p% stays in it at any higher percentage (raising the percentage only ever adds customers). Hashing the flag
/// name in keeps one flag's first 10% from being every flag's first 10% (as Unleash and LaunchDarkly do).
int FlagBucket(std::string_view flag, std::string_view customer_id);

/// Why a flag is on or off for a customer.
enum class FlagReason { kDisabled, kOverride, kRollout, kNotInRollout };
const char* FlagReasonName(FlagReason reason);  // "disabled", "override", "rollout", "not_in_rollout"

struct FlagDecision {
    bool enabled = false;
    FlagReason reason = FlagReason::kDisabled;
};

/// Off while the flag is disabled; else the customer's override when there is one; else whether its bucket is
/// below the rollout percentage.
FlagDecision EvaluateFlag(const FeatureFlag& flag, std::optional<bool> customer_override, std::string_view customer_id);

/// kInvalidArgument (param "name") unless 1..64 characters of [a-z0-9_.-] starting with a letter or digit.
Status ValidateFlagName(std::string_view name);
/// kInvalidArgument (param "rollout_percentage") outside 0..100.
Status ValidateRolloutPercentage(int64_t percentage);

}  // namespace tally
