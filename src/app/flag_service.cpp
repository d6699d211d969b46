#include "app/flag_service.hpp"

namespace tally {
namespace {

std::string Describe(const FeatureFlag& f) {
    return std::string(f.enabled ? "enabled" : "disabled") + " " + std::to_string(f.rollout_percentage) + "%";
}

}  // namespace

FlagService::FlagService(Store& store, const Clock& clock) : store_(store), clock_(clock) {}

Status FlagService::Seed(const std::vector<FeatureFlag>& flags) {
    if (flags.empty()) return {};
    return store_.Write([&](StoreTx& tx) -> Status {
        const Timestamp now = clock_.Now();
        for (const auto& f : flags) {
            TALLY_ASSIGN_OR_RETURN(bool added, tx.flags().InsertFlagIfAbsent(FlagRecord{f, now, now, "config"}));
            if (added) {
                TALLY_TRY(tx.audit().Append({0, CustomerId(""), now, "flag_seeded", "", Describe(f), "catalog_file",
                                             "flag=" + f.name}));
            }
        }
        return {};
    });
}

Result<std::vector<FlagView>> FlagService::List() {
    std::vector<FlagView> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto flags, tx.flags().ListFlags());
        for (auto& f : flags) {
            TALLY_ASSIGN_OR_RETURN(auto overrides, tx.flags().ListFlagOverrides(f.flag.name));
            out.push_back(FlagView{std::move(f), std::move(overrides)});
        }
        return {};
    }));
    return out;
}

Result<FlagView> FlagService::Get(const std::string& name) {
    std::optional<FlagView> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto flag, tx.flags().GetFlag(name));
        if (!flag) return NotFound("no such flag: '" + name + "'", "name");
        TALLY_ASSIGN_OR_RETURN(auto overrides, tx.flags().ListFlagOverrides(name));
        out = FlagView{std::move(*flag), std::move(overrides)};
        return {};
    }));
    return std::move(*out);
}

Result<FlagView> FlagService::Update(StoreTx& tx, const std::string& name, const FlagChange& change,
                                     const std::string& actor) {
    TALLY_TRY(ValidateFlagName(name));
    if (change.rollout_percentage) TALLY_TRY(ValidateRolloutPercentage(*change.rollout_percentage));
    if (change.description && change.description->size() > kFlagDescriptionLengthMax) {
        return InvalidArgument("description must be at most 500 characters", "description");
    }
    if (change.overrides.size() > kFlagOverridesPerRequestMax) {
        return InvalidArgument("at most " + std::to_string(kFlagOverridesPerRequestMax) +
                                   " customer overrides per request",
                               "overrides");
    }
    const Timestamp now = clock_.Now();
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.flags().GetFlag(name));
    FlagRecord record = existing ? *existing : FlagRecord{FeatureFlag{name, "", false, 0}, now, now, actor};
    const FeatureFlag before = record.flag;
    if (change.enabled) record.flag.enabled = *change.enabled;
    if (change.rollout_percentage) record.flag.rollout_percentage = static_cast<int>(*change.rollout_percentage);
    if (change.description) record.flag.description = *change.description;
    if (!existing || record.flag != before) {
        record.updated = now;
        record.updated_by = actor;
        TALLY_TRY(tx.flags().PutFlag(record));
        TALLY_TRY(tx.audit().Append({0, CustomerId(""), now, existing ? "flag_updated" : "flag_created",
                                     existing ? Describe(before) : "", Describe(record.flag), actor,
                                     "flag=" + name}));
    }
    for (const auto& [customer_id, value] : change.overrides) {
        const CustomerId customer(customer_id);
        TALLY_ASSIGN_OR_RETURN(auto customer_record, tx.customers().Get(customer));
        if (!customer_record) return NotFound("no such customer: '" + customer_id + "'", "overrides." + customer_id);
        TALLY_ASSIGN_OR_RETURN(auto prior, tx.flags().GetFlagOverride(name, customer));
        const std::string was = prior ? (prior->enabled ? "on" : "off") : "";
        if (value) {
            if (prior && prior->enabled == *value) continue;
            TALLY_TRY(tx.flags().PutFlagOverride(FlagOverrideRecord{name, customer, *value, now, actor}));
            TALLY_TRY(tx.audit().Append({0, customer, now, "flag_override_set", was, *value ? "on" : "off", actor,
                                         "flag=" + name}));
        } else if (prior) {
            TALLY_TRY(tx.flags().DeleteFlagOverride(name, customer));
            TALLY_TRY(tx.audit().Append({0, customer, now, "flag_override_cleared", was, "", actor, "flag=" + name}));
        }
    }
    TALLY_ASSIGN_OR_RETURN(auto overrides, tx.flags().ListFlagOverrides(name));
    return FlagView{std::move(record), std::move(overrides)};
}

Result<FlagEvaluation> FlagService::Evaluate(const CustomerId& customer, const std::string& flag) {
    std::optional<FlagEvaluation> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto record, tx.flags().GetFlag(flag));
        if (!record) return NotFound("no such flag: '" + flag + "'", "flag");
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "customer");
        TALLY_ASSIGN_OR_RETURN(auto o, tx.flags().GetFlagOverride(flag, customer));
        out = FlagEvaluation{flag, EvaluateFlag(record->flag, o ? std::optional<bool>(o->enabled) : std::nullopt,
                                                customer.str())};
        return {};
    }));
    return std::move(*out);
}

Result<std::vector<FlagEvaluation>> FlagService::ForCustomer(const CustomerId& customer) {
    std::vector<FlagEvaluation> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(auto flags, tx.flags().ListFlags());
        TALLY_ASSIGN_OR_RETURN(auto overrides, tx.flags().CustomerFlagOverrides(customer));
        for (const auto& f : flags) {
            std::optional<bool> o;
            for (const auto& r : overrides) {
                if (r.flag == f.flag.name) o = r.enabled;
            }
            out.push_back(FlagEvaluation{f.flag.name, EvaluateFlag(f.flag, o, customer.str())});
        }
        return {};
    }));
    return out;
}

}  // namespace tally
