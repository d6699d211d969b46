#pragma once
// The plans aggregate of the Store port: the plan catalog as the database holds it (seeded from the catalog file,
// changed at runtime through the API or `tally catalog apply`), and each plan's push to Stripe. Reached from a
// transaction as StoreTx::plans().
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "domain/result.hpp"
#include "domain/time.hpp"
#include "domain/usage.hpp"

namespace tally {

/// One price of a plan. Immutable but for |active|, |stripe_price_id| and |lookup_key| (cleared when a newer price
/// of the plan took it over): a new amount is a new row.
struct PlanPriceRecord {
    std::string id;  // tprice_...
    std::string lookup_key;
    std::string interval;  // day | week | month | year
    int64_t interval_count = 1;
    int64_t unit_amount = 0;  // minor units
    std::string currency;
    std::string stripe_price_id;  // "" until pushed (or adopted from Stripe by lookup key)
    bool active = true;
    Timestamp created;
};

/// A plan as stored, with its prices (oldest first) and its Stripe push state.
struct PlanRecord {
    std::string id;
    int64_t position = 0;  // order in the catalog: later is a higher plan (its rank)
    std::string name;
    std::string role;
    int64_t credits_monthly = 0;
    std::map<std::string, bool> features;
    std::map<std::string, std::optional<int64_t>> limits;  // nullopt: unlimited
    std::vector<PlanPriceRecord> prices;
    std::optional<Timestamp> archived_at;
    Timestamp created;
    Timestamp updated;
    // Push to Stripe (product "tally_<id>" and the prices): pending until Stripe has this version.
    bool stripe_sync_pending = true;
    std::string stripe_sync_error;  // the last failed push's reason
    int64_t stripe_sync_attempts = 0;
    Timestamp next_sync_at;  // when a pending push is due (or a node's claim on it lapses)
};

/// The catalog's plan-independent settings. |version| grows with every change of a plan or of these, so nodes
/// notice each other's changes by reading one row.
struct CatalogSettings {
    std::vector<std::string> roles;  // lowest first
    std::string default_plan;
    int64_t version = 0;
    std::vector<Meter> meters;  // as declared; limits without one are hard gauges
};

class PlanStoreTx {
public:
    virtual ~PlanStoreTx() = default;
    /// The settings, or nullopt for a database whose catalog has not been seeded.
    virtual Result<std::optional<CatalogSettings>> Settings() = 0;
    /// Writes |settings| with version = the stored one + 1 (1 on the first write); returns the new version.
    virtual Result<int64_t> PutSettings(const CatalogSettings& settings) = 0;
    /// Every plan, archived ones too, by position.
    virtual Result<std::vector<PlanRecord>> ListPlans() = 0;
    virtual Result<std::optional<PlanRecord>> GetPlan(const std::string& id) = 0;
    /// Inserts or replaces |plan| with its features and limits; its prices are inserted or updated by id (a price
    /// row is never deleted).
    virtual Status PutPlan(const PlanRecord& plan) = 0;
    /// Plans whose push is pending and due at |now|, claimed until |claim_until| (their next_sync_at moves there,
    /// so another node skips them until then): at most |limit| ids.
    virtual Result<std::vector<std::string>> ClaimDuePlanSyncs(Timestamp now, Timestamp claim_until, int limit) = 0;
};

}  // namespace tally
