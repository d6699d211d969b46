#include "domain/flags.hpp"

namespace tally {

uint64_t Fnv1a64(std::string_view text) {
    uint64_t h = 14695981039346656037ull;  // offset basis
    for (unsigned char c : text) {
        h ^= c;
        h *= 1099511628211ull;  // FNV prime
    }
    return h;
}

int FlagBucket(std::string_view flag, std::string_view customer_id) {
    std::string key(flag);
    key += ':';
    key += customer_id;
    return static_cast<int>(Fnv1a64(key) % static_cast<uint64_t>(kFlagBuckets));
}

const char* FlagReasonName(FlagReason reason) {
    switch (reason) {
        case FlagReason::kDisabled: return "disabled";
        case FlagReason::kOverride: return "override";
        case FlagReason::kRollout: return "rollout";
        case FlagReason::kNotInRollout: return "not_in_rollout";
    }
    return "disabled";
}

FlagDecision EvaluateFlag(const FeatureFlag& flag, std::optional<bool> customer_override, std::string_view customer_id) {
    if (!flag.enabled) return {false, FlagReason::kDisabled};
    if (customer_override) return {*customer_override, FlagReason::kOverride};
    if (FlagBucket(flag.name, customer_id) < flag.rollout_percentage) return {true, FlagReason::kRollout};
    return {false, FlagReason::kNotInRollout};
}

Status ValidateFlagName(std::string_view name) {
    auto ok = [](char c, bool first) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (!first && (c == '_' || c == '.' || c == '-'));
    };
    bool valid = !name.empty() && name.size() <= kFlagNameLengthMax;
    for (size_t i = 0; valid && i < name.size(); ++i) valid = ok(name[i], i == 0);
    if (!valid) {
        return InvalidArgument("a flag name is 1 to 64 characters of a-z, 0-9, '_', '.' and '-', starting with a "
                               "letter or digit",
                               "name");
    }
    return {};
}

Status ValidateRolloutPercentage(int64_t percentage) {
    if (percentage < 0 || percentage > 100) {
        return InvalidArgument("rollout_percentage must be between 0 and 100", "rollout_percentage");
    }
    return {};
}

}  // namespace tally
