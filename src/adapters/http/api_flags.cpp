// Routes of rollout flags: the admins' list and changes, a customer's flags, and the flag check of POST /v1/check.
#include <boost/json.hpp>

#include "adapters/config/json_util.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http::routes {
namespace {

namespace bj = boost::json;

Response Fail(const Error& e) { return ErrorResponse(e); }

bj::value FlagJson(const FlagView& v) {
    bj::object overrides;
    for (const auto& o : v.overrides) overrides[o.customer_id.str()] = o.enabled;
    const FeatureFlag& f = v.record.flag;
    return bj::object{{"object", "flag"},
                      {"name", f.name},
                      {"description", f.description},
                      {"enabled", f.enabled},
                      {"rollout_percentage", f.rollout_percentage},
                      {"overrides", std::move(overrides)},
                      {"created", v.record.created.unix_seconds()},
                      {"updated", v.record.updated.unix_seconds()},
                      {"updated_by", v.record.updated_by}};
}

bj::value EvaluationJson(const CustomerId& customer, const FlagEvaluation& e) {
    return bj::object{{"object", "flag_evaluation"},
                      {"flag", e.flag},
                      {"customer", customer.str()},
                      {"enabled", e.decision.enabled},
                      {"reason", FlagReasonName(e.decision.reason)}};
}

/// A present, non-null boolean field, or none; kInvalidArgument naming it when it is not a boolean.
Result<std::optional<bool>> MaybeBool(const bj::object& body, const char* key) {
    const bj::value* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) return std::optional<bool>();
    if (!v->is_bool()) return InvalidArgument(std::string(key) + " must be a boolean", key);
    return std::optional<bool>(v->get_bool());
}

}  // namespace

Response ListFlags(const ApiDeps& d, const Call& c) {
    if (!d.flags) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {}); !s.ok()) return Fail(s.error());
    auto flags = d.flags->List();
    if (!flags.ok()) return Fail(flags.error());
    bj::array data;
    for (const auto& f : *flags) data.push_back(FlagJson(f));
    return List(data, "/v1/flags");
}

Response GetFlag(const ApiDeps& d, const Call& c) {
    if (!d.flags) return RouteNotFound(c.req);
    auto flag = d.flags->Get(c.param(0));
    if (!flag.ok()) return Fail(flag.error());
    return Json(200, FlagJson(*flag));
}

Response UpdateFlag(const ApiDeps& d, const Call& c) {
    if (!d.flags) return RouteNotFound(c.req);
    auto body = OptionalJsonBody(c.req, {"enabled", "rollout_percentage", "description", "overrides"});
    if (!body.ok()) return Fail(body.error());
    FlagChange change;
    auto enabled = MaybeBool(*body, "enabled");
    if (!enabled.ok()) return Fail(enabled.error());
    change.enabled = *enabled;
    auto percentage = json::OptionalInt(*body, "rollout_percentage", "");
    if (!percentage.ok()) return Fail(percentage.error());
    change.rollout_percentage = *percentage;
    auto description = MaybeString(*body, "description");
    if (!description.ok()) return Fail(description.error());
    change.description = *description;
    if (const bj::value* o = body->if_contains("overrides"); o != nullptr && !o->is_null()) {
        if (!o->is_object()) {
            return Fail(InvalidArgument("overrides must be an object of customer id to true, false or null",
                                        "overrides"));
        }
        for (const auto& kv : o->get_object()) {
            const std::string customer(kv.key());
            if (kv.value().is_bool()) {
                change.overrides[customer] = kv.value().get_bool();
            } else if (kv.value().is_null()) {
                change.overrides[customer] = std::nullopt;
            } else {
                return Fail(InvalidArgument("an override is true, false or null (remove it)", "overrides." + customer));
            }
        }
    }
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto flag, d.flags->Update(tx, c.param(0), change, c.actor));
        return tally::http::Render(200, FlagJson(flag));
    }));
}

Response GetCustomerFlags(const ApiDeps& d, const Call& c) {
    if (!d.flags) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {}); !s.ok()) return Fail(s.error());
    const CustomerId id(c.param(0));
    auto flags = d.flags->ForCustomer(id);
    if (!flags.ok()) return Fail(flags.error());
    bj::array data;
    for (const auto& e : *flags) data.push_back(EvaluationJson(id, e));
    return List(data, "/v1/customers/" + id.str() + "/flags");
}

Response CheckFlag(const ApiDeps& d, const CustomerId& customer, const std::string& flag) {
    if (!d.flags) return Fail(NotFound("no such flag: '" + flag + "'", "flag"));
    auto e = d.flags->Evaluate(customer, flag);
    if (!e.ok()) return Fail(e.error());
    return Json(200, bj::object{{"object", "flag_check"},
                                {"customer", customer.str()},
                                {"flag", flag},
                                {"allowed", e->decision.enabled},
                                {"reason", FlagReasonName(e->decision.reason)}});
}

}  // namespace tally::http::routes
