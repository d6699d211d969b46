#include "domain/catalog.hpp"

#include <set>

namespace tally {

Result<Catalog> Catalog::Create(std::vector<std::string> roles, std::vector<Plan> plans, const PlanId& default_plan,
                                std::vector<Meter> meters) {
    if (roles.empty()) return InvalidArgument("at least one role is required", "roles");
    std::set<std::string> role_set;
    for (size_t i = 0; i < roles.size(); ++i) {
        if (roles[i].empty()) return InvalidArgument("role names must not be empty", "roles[" + std::to_string(i) + "]");
        if (!role_set.insert(roles[i]).second) {
            return InvalidArgument("duplicate role '" + roles[i] + "'", "roles[" + std::to_string(i) + "]");
        }
    }
    if (plans.empty()) return InvalidArgument("at least one plan is required", "plans");
    std::set<std::string> plan_ids;
    std::set<std::string> lookup_keys;
    std::set<std::string> stripe_ids;
    Catalog catalog;
    bool found_default = false;
    for (size_t i = 0; i < plans.size(); ++i) {
        Plan& plan = plans[i];
        const std::string path = "plans[" + std::to_string(i) + "]";
        plan.rank = static_cast<int>(i);
        if (plan.id.empty()) return InvalidArgument("plan id must not be empty", path + ".id");
        if (!plan_ids.insert(plan.id.str()).second) {
            return InvalidArgument("duplicate plan id '" + plan.id.str() + "'", path + ".id");
        }
        if (!role_set.count(plan.role)) {
            return InvalidArgument("plan '" + plan.id.str() + "' names unknown role '" + plan.role + "'", path + ".role");
        }
        if (plan.credits_monthly < 0) return InvalidArgument("must not be negative", path + ".credits_monthly");
        for (const auto& [name, value] : plan.limits) {
            if (value && *value < 0) return InvalidArgument("limit must not be negative", path + ".limits." + name);
        }
        if (i > 0) {
            const Plan& first = plans[0];
            for (const auto& [name, _] : first.features) {
                if (!plan.features.count(name)) {
                    return InvalidArgument("plan '" + plan.id.str() + "' lacks feature '" + name + "' that plan '" +
                                               first.id.str() + "' defines", path + ".features");
                }
            }
            if (plan.features.size() != first.features.size()) {
                return InvalidArgument("plan '" + plan.id.str() + "' defines features that plan '" + first.id.str() +
                                           "' lacks", path + ".features");
            }
            for (const auto& [name, _] : first.limits) {
                if (!plan.limits.count(name)) {
                    return InvalidArgument("plan '" + plan.id.str() + "' lacks limit '" + name + "'", path + ".limits");
                }
            }
            if (plan.limits.size() != first.limits.size()) {
                return InvalidArgument("plan '" + plan.id.str() + "' defines limits that plan '" + first.id.str() +
                                           "' lacks", path + ".limits");
            }
        }
        for (size_t j = 0; j < plan.prices.size(); ++j) {
            const CatalogPrice& price = plan.prices[j];
            const std::string ppath = path + ".prices[" + std::to_string(j) + "]";
            if (price.unit_amount.amount_minor() < 0) return InvalidArgument("must not be negative", ppath + ".amount");
            if (price.interval.count < 1) return InvalidArgument("must be at least 1", ppath + ".interval_count");
            if (price.unit_amount.amount_minor() > 0 && price.lookup_key.empty()) {
                return InvalidArgument("a paid price needs a lookup_key", ppath + ".lookup_key");
            }
            if (price.active && !price.lookup_key.empty() && !lookup_keys.insert(price.lookup_key).second) {
                return InvalidArgument("duplicate lookup_key '" + price.lookup_key + "'", ppath + ".lookup_key");
            }
            for (size_t k = 0; k < j && price.active; ++k) {
                const CatalogPrice& other = plan.prices[k];
                if (other.active && other.interval == price.interval &&
                    other.unit_amount.currency() == price.unit_amount.currency()) {
                    return InvalidArgument("two active prices for the same interval and currency", ppath + ".interval");
                }
            }
            if (price.stripe_price_id && !stripe_ids.insert(*price.stripe_price_id).second) {
                return InvalidArgument("duplicate stripe_price_id", ppath + ".stripe_price_id");
            }
        }
        if (plan.id == default_plan) {
            if (plan.archived) return InvalidArgument("the default plan cannot be archived", path + ".archived");
            for (const auto& price : plan.prices) {
                if (price.unit_amount.amount_minor() != 0) {
                    return InvalidArgument("the default plan must be free", path + ".prices");
                }
            }
            catalog.default_index_ = i;
            found_default = true;
        }
    }
    if (!found_default) return InvalidArgument("default plan '" + default_plan.str() + "' is not defined", "default_plan");
    const auto& limit_names = plans[0].limits;
    std::set<std::string> metered;
    for (const auto& m : meters) {
        const std::string path = "meters." + m.name;
        if (!limit_names.count(m.name)) return InvalidArgument("no plan has a limit named '" + m.name + "'", path);
        if (m.name.find_first_of(" \n") != std::string::npos || m.unit.empty() ||
            m.unit.find_first_of(" \n") != std::string::npos) {
            return InvalidArgument("meter names and units are single words", path);
        }
        if (!metered.insert(m.name).second) return InvalidArgument("duplicate meter", path);
        if (m.counts_members && m.kind != MeterKind::kGauge) {
            return InvalidArgument("a meter that counts members is a gauge", path + ".source");
        }
    }
    catalog.declared_meters_ = meters;
    for (const auto& [name, _] : limit_names) {
        if (!metered.count(name)) meters.push_back(Meter{name, MeterKind::kGauge, LimitMode::kHard, name});
    }
    catalog.meters_ = std::move(meters);
    catalog.roles_ = std::move(roles);
    catalog.plans_ = std::move(plans);
    return catalog;
}

const Meter* Catalog::FindMeter(std::string_view name) const {
    for (const auto& m : meters_) {
        if (m.name == name) return &m;
    }
    return nullptr;
}

const Plan* Catalog::FindPlan(const PlanId& id) const {
    for (const auto& plan : plans_) {
        if (plan.id == id) return &plan;
    }
    return nullptr;
}

const CatalogPrice* Plan::ActivePaidPrice(BillingInterval::Unit interval) const {
    for (const auto& p : prices) {
        if (p.active && p.interval.unit == interval && p.interval.count == 1 && !p.lookup_key.empty() &&
            p.unit_amount.amount_minor() > 0) {
            return &p;
        }
    }
    return nullptr;
}

PriceMatch Catalog::MatchPrice(const std::string& lookup_key, const std::string& stripe_price_id) const {
    if (!lookup_key.empty()) {
        // An active price holds the key now; an inactive one held it before a new amount took it over.
        for (bool active : {true, false}) {
            for (const auto& plan : plans_) {
                for (const auto& price : plan.prices) {
                    if (price.active == active && price.lookup_key == lookup_key) return {&plan, &price};
                }
            }
        }
    }
    if (!stripe_price_id.empty()) {
        for (const auto& plan : plans_) {
            for (const auto& price : plan.prices) {
                if (price.stripe_price_id && *price.stripe_price_id == stripe_price_id) return {&plan, &price};
            }
        }
    }
    return {};
}

int Catalog::RoleRank(const std::string& role) const {
    for (size_t i = 0; i < roles_.size(); ++i) {
        if (roles_[i] == role) return static_cast<int>(i);
    }
    return -1;
}

}  // namespace tally
