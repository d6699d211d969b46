#include "adapters/config/catalog_json.hpp"

#include <fstream>
#include <initializer_list>
#include <sstream>

#include "adapters/config/json_util.hpp"

namespace tally {
namespace {

namespace bj = boost::json;

Status OnlyKeys(const bj::object& o, std::initializer_list<const char*> allowed, const std::string& path) {
    for (const auto& kv : o) {
        bool known = false;
        for (const char* k : allowed) known = known || kv.key() == k;
        if (!known) {
            const std::string full = json::Join(path, std::string(kv.key()).c_str());
            return InvalidArgument("unknown key '" + std::string(kv.key()) + "'", full);
        }
    }
    return {};
}

Result<CatalogPrice> ParsePrice(const bj::value& v, const std::string& path) {
    TALLY_ASSIGN_OR_RETURN(const bj::object* o, json::AsObject(v, path));
    TALLY_TRY(OnlyKeys(*o, {"lookup_key", "interval", "interval_count", "unit_amount", "currency", "stripe_price_id"}, path));
    TALLY_ASSIGN_OR_RETURN(std::string lookup_key, json::OptionalString(*o, "lookup_key", path));
    TALLY_ASSIGN_OR_RETURN(std::string interval, json::RequiredString(*o, "interval", path));
    auto unit = ParseIntervalUnit(interval);
    if (!unit.ok()) return InvalidArgument(unit.error().message, path + ".interval");
    TALLY_ASSIGN_OR_RETURN(auto count, json::OptionalInt(*o, "interval_count", path));
    TALLY_ASSIGN_OR_RETURN(int64_t amount, json::RequiredInt(*o, "unit_amount", path));
    TALLY_ASSIGN_OR_RETURN(std::string currency_code, json::RequiredString(*o, "currency", path));
    auto currency = Currency::Parse(currency_code);
    if (!currency.ok()) return InvalidArgument(currency.error().message, path + ".currency");
    TALLY_ASSIGN_OR_RETURN(std::string stripe_price_id, json::OptionalString(*o, "stripe_price_id", path));
    if (amount < 0) return InvalidArgument("must not be negative", path + ".amount");
    return CatalogPrice{BillingInterval{*unit, count.value_or(1)}, Money(amount, *currency), lookup_key,
                        stripe_price_id.empty() ? std::nullopt : std::optional<std::string>(stripe_price_id)};
}

Result<Plan> ParsePlan(const bj::value& v, const std::string& path) {
    TALLY_ASSIGN_OR_RETURN(const bj::object* o, json::AsObject(v, path));
    TALLY_TRY(OnlyKeys(*o, {"id", "name", "role", "prices", "features", "limits", "credits_monthly"}, path));
    Plan plan;
    TALLY_ASSIGN_OR_RETURN(std::string id, json::RequiredString(*o, "id", path));
    plan.id = PlanId(id);
    TALLY_ASSIGN_OR_RETURN(plan.name, json::OptionalString(*o, "name", path));
    if (plan.name.empty()) plan.name = id;
    TALLY_ASSIGN_OR_RETURN(plan.role, json::RequiredString(*o, "role", path));
    TALLY_ASSIGN_OR_RETURN(auto credits, json::OptionalInt(*o, "credits_monthly", path));
    plan.credits_monthly = credits.value_or(0);
    if (const auto* prices = o->if_contains("prices")) {
        if (!prices->is_array()) return InvalidArgument("must be an array", path + ".prices");
        for (size_t i = 0; i < prices->get_array().size(); ++i) {
            TALLY_ASSIGN_OR_RETURN(CatalogPrice price,
                                   ParsePrice(prices->get_array()[i], path + ".prices[" + std::to_string(i) + "]"));
            plan.prices.push_back(std::move(price));
        }
    }
    if (const auto* features = o->if_contains("features")) {
        TALLY_ASSIGN_OR_RETURN(const bj::object* f, json::AsObject(*features, path + ".features"));
        for (const auto& kv : *f) {
            if (!kv.value().is_bool()) {
                return InvalidArgument("must be a boolean", path + ".features." + std::string(kv.key()));
            }
            plan.features[std::string(kv.key())] = kv.value().get_bool();
        }
    }
    if (const auto* limits = o->if_contains("limits")) {
        TALLY_ASSIGN_OR_RETURN(const bj::object* l, json::AsObject(*limits, path + ".limits"));
        for (const auto& kv : *l) {
            if (kv.value().is_null()) {  // unlimited
                plan.limits[std::string(kv.key())] = std::nullopt;
                continue;
            }
            TALLY_ASSIGN_OR_RETURN(auto value, json::OptionalInt(*l, std::string(kv.key()).c_str(), path + ".limits"));
            if (!value) return InvalidArgument("must be an integer or null", path + ".limits." + std::string(kv.key()));
            plan.limits[std::string(kv.key())] = *value;
        }
    }
    return plan;
}

}  // namespace

Result<Plan> ParsePlanJson(const bj::value& v) { return ParsePlan(v, ""); }
Result<CatalogPrice> ParsePriceJson(const bj::value& v, const std::string& path) { return ParsePrice(v, path); }

Result<Catalog> ParseCatalogJson(std::string_view text) {
    TALLY_ASSIGN_OR_RETURN(bj::value root, json::Parse(text));
    TALLY_ASSIGN_OR_RETURN(const bj::object* o, json::AsObject(root, ""));
    TALLY_TRY(OnlyKeys(*o, {"roles", "default_plan", "plans", "meters", "flags", "credit_actions", "credit_bundles"}, ""));
    std::vector<std::string> roles;
    const auto* roles_v = o->if_contains("roles");
    if (roles_v == nullptr || !roles_v->is_array()) return InvalidArgument("roles must be an array of names", "roles");
    for (size_t i = 0; i < roles_v->get_array().size(); ++i) {
        const auto& r = roles_v->get_array()[i];
        if (!r.is_string()) return InvalidArgument("must be a string", "roles[" + std::to_string(i) + "]");
        roles.emplace_back(r.get_string());
    }
    TALLY_ASSIGN_OR_RETURN(std::string default_plan, json::RequiredString(*o, "default_plan", ""));
    const auto* plans_v = o->if_contains("plans");
    if (plans_v == nullptr || !plans_v->is_array()) return InvalidArgument("plans must be an array", "plans");
    std::vector<Plan> plans;
    for (size_t i = 0; i < plans_v->get_array().size(); ++i) {
        TALLY_ASSIGN_OR_RETURN(Plan plan, ParsePlan(plans_v->get_array()[i], "plans[" + std::to_string(i) + "]"));
        plans.push_back(std::move(plan));
    }
    std::vector<Meter> meters;
    if (const auto* meters_v = o->if_contains("meters")) {
        TALLY_ASSIGN_OR_RETURN(const bj::object* mo, json::AsObject(*meters_v, "meters"));
        for (const auto& kv : *mo) {
            const std::string path = "meters." + std::string(kv.key());
            TALLY_ASSIGN_OR_RETURN(const bj::object* m, json::AsObject(kv.value(), path));
            TALLY_TRY(OnlyKeys(*m, {"kind", "mode", "unit", "source"}, path));
            TALLY_ASSIGN_OR_RETURN(std::string kind_text, json::RequiredString(*m, "kind", path));
            auto kind = ParseMeterKind(kind_text);
            if (!kind.ok()) return InvalidArgument(kind.error().message, path + ".kind");
            TALLY_ASSIGN_OR_RETURN(std::string mode_text, json::OptionalString(*m, "mode", path));
            auto mode = ParseLimitMode(mode_text.empty() ? "hard" : mode_text);
            if (!mode.ok()) return InvalidArgument(mode.error().message, path + ".mode");
            TALLY_ASSIGN_OR_RETURN(std::string unit, json::OptionalString(*m, "unit", path));
            TALLY_ASSIGN_OR_RETURN(std::string source, json::OptionalString(*m, "source", path));
            if (!source.empty() && source != "members") {
                return InvalidArgument("source is \"members\" (seats counted from an organization's members) or absent",
                                       path + ".source");
            }
            meters.push_back(Meter{std::string(kv.key()), *kind, *mode, unit.empty() ? std::string(kv.key()) : unit,
                                   source == "members"});
        }
    }
    return Catalog::Create(std::move(roles), std::move(plans), PlanId(default_plan), std::move(meters));
}

Result<std::vector<FeatureFlag>> ParseFlagsJson(std::string_view text) {
    TALLY_ASSIGN_OR_RETURN(bj::value root, json::Parse(text));
    TALLY_ASSIGN_OR_RETURN(const bj::object* o, json::AsObject(root, ""));
    std::vector<FeatureFlag> flags;
    const auto* flags_v = o->if_contains("flags");
    if (flags_v == nullptr) return flags;
    TALLY_ASSIGN_OR_RETURN(const bj::object* fo, json::AsObject(*flags_v, "flags"));
    for (const auto& kv : *fo) {
        const std::string path = "flags." + std::string(kv.key());
        if (Status s = ValidateFlagName(kv.key()); !s.ok()) return InvalidArgument(s.error().message, path);
        TALLY_ASSIGN_OR_RETURN(const bj::object* f, json::AsObject(kv.value(), path));
        TALLY_TRY(OnlyKeys(*f, {"description", "enabled", "rollout_percentage"}, path));
        FeatureFlag flag{std::string(kv.key()), "", false, 0};
        TALLY_ASSIGN_OR_RETURN(flag.description, json::OptionalString(*f, "description", path));
        if (flag.description.size() > kFlagDescriptionLengthMax) {
            return InvalidArgument("must be at most 500 characters", path + ".description");
        }
        TALLY_ASSIGN_OR_RETURN(flag.enabled, json::OptionalBool(*f, "enabled", path, false));
        TALLY_ASSIGN_OR_RETURN(auto percentage, json::OptionalInt(*f, "rollout_percentage", path));
        if (Status s = ValidateRolloutPercentage(percentage.value_or(0)); !s.ok()) {
            return InvalidArgument(s.error().message, path + ".rollout_percentage");
        }
        flag.rollout_percentage = static_cast<int>(percentage.value_or(0));
        flags.push_back(std::move(flag));
    }
    return flags;
}

Result<std::map<std::string, int64_t>> ParseCreditActionsJson(std::string_view text) {
    TALLY_ASSIGN_OR_RETURN(bj::value root, json::Parse(text));
    TALLY_ASSIGN_OR_RETURN(const bj::object* o, json::AsObject(root, ""));
    std::map<std::string, int64_t> actions;
    const auto* actions_v = o->if_contains("credit_actions");
    if (actions_v == nullptr) return actions;
    TALLY_ASSIGN_OR_RETURN(const bj::object* ao, json::AsObject(*actions_v, "credit_actions"));
    for (const auto& kv : *ao) {
        const std::string path = "credit_actions." + std::string(kv.key());
        if (kv.key().empty() || kv.key().size() > 64) return InvalidArgument("an action name is 1 to 64 characters", path);
        if (!kv.value().is_int64() || kv.value().get_int64() < 1 || kv.value().get_int64() > kCreditAmountMax) {
            return InvalidArgument("an action costs an integer number of credits, 1 to 2^53", path);
        }
        actions[std::string(kv.key())] = kv.value().get_int64();
    }
    return actions;
}

Result<std::vector<CreditBundle>> ParseCreditBundlesJson(std::string_view text) {
    TALLY_ASSIGN_OR_RETURN(bj::value root, json::Parse(text));
    TALLY_ASSIGN_OR_RETURN(const bj::object* o, json::AsObject(root, ""));
    std::vector<CreditBundle> bundles;
    const auto* list = o->if_contains("credit_bundles");
    if (list == nullptr) return bundles;
    if (!list->is_array()) return InvalidArgument("credit_bundles must be an array of bundles", "credit_bundles");
    for (size_t i = 0; i < list->get_array().size(); ++i) {
        const std::string path = "credit_bundles[" + std::to_string(i) + "]";
        TALLY_ASSIGN_OR_RETURN(const bj::object* b, json::AsObject(list->get_array()[i], path));
        TALLY_TRY(OnlyKeys(*b, {"id", "name", "credits", "unit_amount", "currency", "expires_in_days"}, path));
        TALLY_ASSIGN_OR_RETURN(std::string id, json::RequiredString(*b, "id", path));
        TALLY_ASSIGN_OR_RETURN(std::string name, json::RequiredString(*b, "name", path));
        TALLY_ASSIGN_OR_RETURN(int64_t credits, json::RequiredInt(*b, "credits", path));
        TALLY_ASSIGN_OR_RETURN(int64_t amount, json::RequiredInt(*b, "unit_amount", path));
        TALLY_ASSIGN_OR_RETURN(std::string code, json::RequiredString(*b, "currency", path));
        auto currency = Currency::Parse(code);
        if (!currency.ok()) return InvalidArgument(currency.error().message, path + ".currency");
        TALLY_ASSIGN_OR_RETURN(auto expires, json::OptionalInt(*b, "expires_in_days", path));
        CreditBundle bundle{std::move(id), std::move(name), credits, Money(amount, *currency), expires};
        if (Status valid = ValidateCreditBundle(bundle); !valid.ok()) {
            return InvalidArgument(valid.error().message, path + valid.error().param);
        }
        for (const auto& other : bundles) {
            if (other.id == bundle.id) return InvalidArgument("bundle '" + bundle.id + "' is declared twice", path + ".id");
        }
        bundles.push_back(std::move(bundle));
    }
    return bundles;
}

Result<std::string> ReadCatalogText(const std::string& path) {
    if (path.empty()) return std::string(DefaultCatalogJson());
    std::ifstream in(path, std::ios::binary);
    if (!in) return NotFound("cannot read catalog file '" + path + "'", "catalog");
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

Result<Catalog> LoadCatalogFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return NotFound("cannot read catalog file '" + path + "'", "catalog");
    std::ostringstream ss;
    ss << in.rdbuf();
    auto catalog = ParseCatalogJson(ss.str());
    if (!catalog.ok()) {
        Error e = catalog.error();
        e.message = path + ": " + (e.param.empty() ? "" : e.param + ": ") + e.message;
        return e;
    }
    return catalog;
}

Result<Catalog> LoadCatalog(const std::string& path) {
    if (path.empty()) return ParseCatalogJson(DefaultCatalogJson());
    return LoadCatalogFile(path);
}

}  // namespace tally
