#pragma once
// The rollout-flag aggregate of the Store port: each flag's settings and the admins' per-customer overrides.
// Reached from a transaction as StoreTx::flags().
#include <optional>
#include <string>
#include <vector>

#include "domain/flags.hpp"
#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

struct FlagRecord {
    FeatureFlag flag;
    Timestamp created;
    Timestamp updated;
    std::string updated_by;  // "config" for a flag seeded from the catalog file, else the admin's actor
};

/// An admin's per-customer exception to a flag's rollout.
struct FlagOverrideRecord {
    std::string flag;
    CustomerId customer_id;
    bool enabled = false;
    Timestamp created;
    std::string actor;
};

class FlagStoreTx {
public:
    virtual ~FlagStoreTx() = default;
    /// Every flag, by name.
    virtual Result<std::vector<FlagRecord>> ListFlags() = 0;
    virtual Result<std::optional<FlagRecord>> GetFlag(const std::string& name) = 0;
    /// Inserts or replaces the flag's settings (created is kept on replace).
    virtual Status PutFlag(const FlagRecord& flag) = 0;
    /// Inserts the flag unless one of its name exists; false if it did.
    virtual Result<bool> InsertFlagIfAbsent(const FlagRecord& flag) = 0;
    /// The flag's overrides, by customer id.
    virtual Result<std::vector<FlagOverrideRecord>> ListFlagOverrides(const std::string& flag) = 0;
    /// The customer's override of |flag|, if any.
    virtual Result<std::optional<FlagOverrideRecord>> GetFlagOverride(const std::string& flag,
                                                                      const CustomerId& customer) = 0;
    /// The customer's overrides of every flag.
    virtual Result<std::vector<FlagOverrideRecord>> CustomerFlagOverrides(const CustomerId& customer) = 0;
    virtual Status PutFlagOverride(const FlagOverrideRecord& override_record) = 0;
    /// False if there was none.
    virtual Result<bool> DeleteFlagOverride(const std::string& flag, const CustomerId& customer) = 0;
};

}  // namespace tally
