#pragma once
// The plan catalog: plans, their prices, features, limits and the role each grants.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "domain/ids.hpp"
#include "domain/money.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"
#include "domain/usage.hpp"

namespace tally {

/// One price of a plan. Matched to Stripe by `lookup_key` first, then by `stripe_price_id`. Prices are immutable,
/// as Stripe's: a new amount is a new price that takes the lookup key over (`transfer_lookup_key`), and the old one
/// stays, inactive, so the subscriptions still on it keep matching their plan (grandfathering).
struct CatalogPrice {
    BillingInterval interval;
    Money unit_amount;
    std::string lookup_key;                     // e.g. "starter_monthly"; empty for free plans
    std::optional<std::string> stripe_price_id;  // price_..., when pinned in config or learned from Stripe
    std::string id;                              // Tally's id ("tprice_..."), stable; empty in a catalog file
    bool active = true;                          // false: replaced; never sold again, still matched
};

/// A plan. `rank` is its position in the catalog: later plans are higher.
struct Plan {
    PlanId id;
    std::string name;
    std::string role;  // role granted while a subscription to it entitles
    int rank = 0;
    std::vector<CatalogPrice> prices;
    std::map<std::string, bool> features;
    std::map<std::string, std::optional<int64_t>> limits;  // nullopt: unlimited
    int64_t credits_monthly = 0;  // credit allowance granted each month (later: the credit ledger)
    bool archived = false;        // no new sales; its subscribers keep it (their prices still match it)

    /// The active price for |interval| (count 1) that costs something, or nullptr.
    const CatalogPrice* ActivePaidPrice(BillingInterval::Unit interval) const;
};

/// A plan and one of its prices, as found by a Stripe price.
struct PriceMatch {
    const Plan* plan = nullptr;
    const CatalogPrice* price = nullptr;
};

/// The validated, immutable catalog. Thread-safe for concurrent reads once built.
class Catalog {
public:
    /// Validates and builds a catalog. |roles| are ordered lowest first. Errors are kInvalidArgument whose
    /// param is the JSON path at fault (e.g. "plans[2].prices[0].lookup_key"): duplicate plan ids or lookup
    /// keys (among active prices: an inactive price may have handed its key over), two active prices of one plan
    /// for the same interval and currency, unknown roles, a missing, archived or paid default plan, negative
    /// amounts or limits, or plans that disagree on which features and limits exist.
    /// |meters| say how each limit is metered (domain/usage.hpp); a limit without one is a hard gauge counted in
    /// its own name. kInvalidArgument ("meters.<name>") for a meter no limit has, or a name or unit with a space.
    static Result<Catalog> Create(std::vector<std::string> roles, std::vector<Plan> plans, const PlanId& default_plan,
                                  std::vector<Meter> meters = {});

    const std::vector<Plan>& plans() const { return plans_; }
    const std::vector<std::string>& roles() const { return roles_; }
    const Plan& default_plan() const { return plans_[default_index_]; }
    /// The lowest role: what a customer without an entitling subscription gets.
    const std::string& default_role() const { return roles_.front(); }

    const Plan* FindPlan(const PlanId& id) const;
    /// Every limit's meter, by name.
    const std::vector<Meter>& meters() const { return meters_; }
    /// The meters as declared (for storing the catalog): without the ones Create defaulted.
    const std::vector<Meter>& declared_meters() const { return declared_meters_; }
    const Meter* FindMeter(std::string_view name) const;
    /// Matches by lookup_key when non-empty (an active price first), else by Stripe price id (inactive prices too:
    /// grandfathered subscriptions); an empty match if neither is known. Archived plans match.
    PriceMatch MatchPrice(const std::string& lookup_key, const std::string& stripe_price_id) const;
    /// Rank of a role (0 = lowest), or -1 if the catalog does not define it.
    int RoleRank(const std::string& role) const;

private:
    std::vector<std::string> roles_;
    std::vector<Plan> plans_;
    std::vector<Meter> meters_;
    std::vector<Meter> declared_meters_;
    size_t default_index_ = 0;
};

}  // namespace tally
