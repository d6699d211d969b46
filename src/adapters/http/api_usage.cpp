// Routes of usage limits: recording usage, checking a feature or an amount (and recording it atomically), and a
// customer's usage summary.
#include <boost/json.hpp>

#include "adapters/config/json_util.hpp"
#include "adapters/crypto.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http::routes {
namespace {

namespace bj = boost::json;

Response Fail(const Error& e) { return ErrorResponse(e); }

/// An integer field that must be present; kInvalidArgument naming it otherwise.
Result<int64_t> RequiredInteger(const bj::object& body, const char* key) {
    const bj::value* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) return MissingArgument(std::string(key) + " is required", key);
    if (!v->is_int64()) return InvalidArgument(std::string(key) + " must be an integer", key);
    return v->get_int64();
}

bj::object OutcomeJson(const char* object, const CustomerId& customer, const UsageOutcome& o) {
    bj::object out = MeterStateJson(o.state).as_object();
    out["object"] = object;
    out["customer"] = customer.str();
    out["allowed"] = o.allowed;
    out["reason"] = o.reason.empty() ? bj::value(nullptr) : bj::value(o.reason);
    out["recorded"] = o.recorded;
    return out;
}

}  // namespace

Response RecordUsage(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "meter", "value", "action", "idempotency_key", "timestamp"});
    if (!body.ok()) return Fail(body.error());
    UsageInput in;
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    in.customer = CustomerId(*customer);
    auto meter = json::RequiredString(*body, "meter", "");
    if (!meter.ok()) return Fail(meter.error());
    in.meter = *meter;
    auto value = RequiredInteger(*body, "value");
    if (!value.ok()) return Fail(value.error());
    in.value = *value;
    auto action = json::OptionalString(*body, "action", "");
    if (!action.ok()) return Fail(action.error());
    if (!action->empty() && *action != "increment" && *action != "set") {
        return Fail(InvalidArgument("action must be increment or set", "action"));
    }
    in.set = *action == "set";
    auto key = json::RequiredString(*body, "idempotency_key", "");
    if (!key.ok()) return Fail(key.error());
    if (key->empty() || key->size() > kIdempotencyKeyBytesMax) {
        return Fail(InvalidArgument("idempotency_key must be 1 to " + std::to_string(kIdempotencyKeyBytesMax) +
                                        " characters",
                                    "idempotency_key"));
    }
    auto at = json::OptionalInt(*body, "timestamp", "");
    if (!at.ok()) return Fail(at.error());
    if (*at) in.at = Timestamp(**at);
    // Deduplicated by the body's key, scoped to the caller, in the transaction that records: a replay gets the
    // first answer; the same key with another body is refused.
    const IdempotencyRequest idem{c.idem.api_key_id, "usage:" + *key, Sha256Hex("POST /v1/usage\n" + c.req.body)};
    return Stored(d.idempotency.RunInStore(idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto outcome, d.usage->Record(tx, in));
        bj::object out = OutcomeJson("usage_record", in.customer, outcome);
        out["action"] = in.set ? "set" : "increment";
        out["value"] = in.value;
        return tally::http::Render(200, out);
    }));
}

Response CheckUsage(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "feature", "meter", "amount", "record"});
    if (!body.ok()) return Fail(body.error());
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    const CustomerId id(*customer);
    const bool has_feature = body->contains("feature") && !body->at("feature").is_null();
    const bool has_meter = body->contains("meter") && !body->at("meter").is_null();
    if (has_feature == has_meter) {
        return Fail(InvalidArgument("give either feature or meter (with amount)", has_feature ? "meter" : "feature"));
    }
    if (has_feature) {
        if (body->contains("amount") || body->contains("record")) {
            return Fail(InvalidArgument("amount and record apply to a meter check", body->contains("amount") ? "amount"
                                                                                                               : "record"));
        }
        auto feature = json::RequiredString(*body, "feature", "");
        if (!feature.ok()) return Fail(feature.error());
        auto allowed = d.usage->CheckFeature(id, *feature);
        if (!allowed.ok()) return Fail(allowed.error());
        return Json(200, bj::object{{"object", "feature_check"}, {"customer", id.str()}, {"feature", *feature},
                                    {"allowed", *allowed}, {"reason", *allowed ? bj::value(nullptr) : bj::value("not_in_plan")}});
    }
    auto meter = json::RequiredString(*body, "meter", "");
    if (!meter.ok()) return Fail(meter.error());
    auto amount = json::OptionalInt(*body, "amount", "");
    if (!amount.ok()) return Fail(amount.error());
    auto record = json::OptionalBool(*body, "record", "", false);
    if (!record.ok()) return Fail(record.error());
    const int64_t n = amount->value_or(1);
    if (!*record) {
        std::optional<UsageOutcome> outcome;
        Status s = d.store.Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(outcome, d.usage->Check(tx, id, *meter, n, false));
            return {};
        });
        if (!s.ok()) return Fail(s.error());
        return Json(200, OutcomeJson("usage_check", id, *outcome));
    }
    // The check and the increment in one write transaction: concurrent callers cannot both take the last unit.
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto outcome, d.usage->Check(tx, id, *meter, n, true));
        return tally::http::Render(200, OutcomeJson("usage_check", id, outcome));
    }));
}

Response GetUsage(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    auto summary = d.usage->Summary(CustomerId(c.param(0)));
    if (!summary.ok()) return Fail(summary.error());
    bj::array meters;
    for (const auto& m : summary->meters) meters.push_back(MeterStateJson(m));
    const CustomerView& v = summary->customer;
    return Json(200, bj::object{{"object", "usage_summary"},
                                {"customer", v.customer.id.str()},
                                {"plan", v.decision.plan ? bj::value(v.decision.plan->id.str()) : bj::value(nullptr)},
                                {"subscription", v.primary ? bj::value(v.primary->id.str()) : bj::value(nullptr)},
                                {"meters", std::move(meters)}});
}

}  // namespace tally::http::routes
