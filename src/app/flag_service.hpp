#pragma once
// Rollout flags (seed 004's `billing_v2` behind a percentage): flags declared in the catalog file are seeded into
// the store once; admins change them at runtime, audited; every node reads the store, so a change holds everywhere
// at the next check. Whether a flag is on for a customer is domain/flags.hpp's rule.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "app/ports.hpp"
#include "app/store.hpp"
#include "domain/flags.hpp"
#include "domain/time.hpp"

namespace tally {

constexpr size_t kFlagOverridesPerRequestMax = 1000;  // customer overrides one POST /v1/flags/{name} may change

/// A change to one flag (POST /v1/flags/{name}): the fields given, and per-customer overrides to set (true/false)
/// or remove (nullopt).
struct FlagChange {
    std::optional<bool> enabled;
    std::optional<int64_t> rollout_percentage;
    std::optional<std::string> description;
    std::map<std::string, std::optional<bool>> overrides;  // customer id -> on / off / remove
};

/// A flag with its overrides.
struct FlagView {
    FlagRecord record;
    std::vector<FlagOverrideRecord> overrides;
};

/// A flag's value for one customer.
struct FlagEvaluation {
    std::string flag;
    FlagDecision decision;
};

class FlagService {
public:
    FlagService(Store& store, const Clock& clock);

    /// Inserts each of |flags| the store does not have yet (a flag_seeded audit entry each); flags already there
    /// keep their runtime settings. Safe when several nodes start at once.
    Status Seed(const std::vector<FeatureFlag>& flags);
    Result<std::vector<FlagView>> List();
    /// kNotFound (param "name").
    Result<FlagView> Get(const std::string& name);
    /// Creates the flag if it does not exist (disabled at 0% unless |change| says otherwise) and applies |change|
    /// inside |tx|: a flag_updated audit entry with the settings before and after, and one flag_override_set or
    /// flag_override_cleared entry per customer. kInvalidArgument: a bad name ("name"), percentage
    /// ("rollout_percentage"), description over 500 characters ("description"), more than
    /// kFlagOverridesPerRequestMax overrides ("overrides"); kNotFound for an unknown customer ("overrides.<id>").
    Result<FlagView> Update(StoreTx& tx, const std::string& name, const FlagChange& change, const std::string& actor);
    /// Whether |flag| is on for |customer|. kNotFound for an unknown flag ("flag") or customer ("customer").
    Result<FlagEvaluation> Evaluate(const CustomerId& customer, const std::string& flag);
    /// Every flag's value for |customer|. kNotFound for an unknown customer ("id").
    Result<std::vector<FlagEvaluation>> ForCustomer(const CustomerId& customer);

private:
    Store& store_;
    const Clock& clock_;
};

}  // namespace tally
