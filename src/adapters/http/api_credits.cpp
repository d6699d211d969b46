// Routes of prepaid credits: deductions on the app's hot path, grants by admins, a customer's balance and grants.
#include <boost/json.hpp>

#include "adapters/config/json_util.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http::routes {
namespace {

namespace bj = boost::json;

constexpr size_t kCreditMetadataBytesMax = 8192;  // a deduction's metadata, as serialized JSON

Response Fail(const Error& e) { return ErrorResponse(e); }

bj::value BalanceJson(const CreditBalance& b) {
    return bj::object{{"subscription", b.subscription},
                      {"bundle", b.bundle},
                      {"promotional", b.promotional},
                      {"total", b.total()}};
}

bj::value GrantJson(const CreditGrantRecord& g) {
    return bj::object{{"id", g.id},
                      {"object", "credit_grant"},
                      {"customer", g.customer_id.str()},
                      {"type", GrantTypeName(g.type)},
                      {"amount", g.amount},
                      {"remaining", g.remaining},
                      {"priority", g.priority},
                      {"expires_at", g.expires_at ? bj::value(g.expires_at->unix_seconds()) : bj::value(nullptr)},
                      {"transfer", g.transfer_id},
                      {"reason", g.reason.empty() ? bj::value(nullptr) : bj::value(g.reason)},
                      {"created", g.created.unix_seconds()}};
}

Response Replayable(int status, const bj::value& v, bool replayed) {
    Response r = Json(status, v);
    if (replayed) r.headers.emplace_back("Idempotent-Replayed", "true");
    return r;
}

}  // namespace

Response DeductCredits(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "amount", "action", "id", "metadata"});
    if (!body.ok()) return Fail(body.error());
    CreditDeductInput in;
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    in.customer = CustomerId(*customer);
    auto id = json::RequiredString(*body, "id", "");
    if (!id.ok()) return Fail(id.error());
    in.id = *id;
    auto amount = json::OptionalInt(*body, "amount", "");
    if (!amount.ok()) return Fail(amount.error());
    in.amount = *amount;
    auto action = MaybeString(*body, "action");
    if (!action.ok()) return Fail(action.error());
    in.action = action->value_or("");
    if (const bj::value* m = body->if_contains("metadata"); m != nullptr && !m->is_null()) {
        if (!m->is_object()) return Fail(InvalidArgument("metadata must be an object", "metadata"));
        in.metadata = bj::serialize(*m);
        if (in.metadata.size() > kCreditMetadataBytesMax) {
            return Fail(InvalidArgument("metadata must be at most 8 KiB of JSON", "metadata"));
        }
    }
    in.actor = c.actor;
    std::optional<CreditDeduction> out;
    // A customer's deductions queue for each other on every node: no credit is spent twice.
    Status s = d.store.WriteSerialized("credits:" + in.customer.str(), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, d.credits->Deduct(tx, in));
        return {};
    });
    if (!s.ok()) return Fail(s.error());
    bj::array breakdown;
    for (const auto& draw : out->breakdown) breakdown.push_back(bj::object{{"grant", draw.grant}, {"amount", draw.amount}});
    const CreditTransferRecord& t = out->transfer;
    return Replayable(200,
                      bj::object{{"object", "credit_deduction"},
                                 {"transfer", t.id},
                                 {"customer", t.customer_id.str()},
                                 {"amount", t.amount},
                                 {"action", t.action.empty() ? bj::value(nullptr) : bj::value(t.action)},
                                 {"metadata", t.metadata.empty() ? bj::value(bj::object{}) : bj::parse(t.metadata)},
                                 {"balance", BalanceJson(out->balance)},
                                 {"breakdown", std::move(breakdown)},
                                 {"created", t.created.unix_seconds()}},
                      out->replayed);
}

Response GrantCredits(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "amount", "id", "type", "expires_at", "priority", "reason"});
    if (!body.ok()) return Fail(body.error());
    CreditGrantInput in;
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    in.customer = CustomerId(*customer);
    auto id = json::RequiredString(*body, "id", "");
    if (!id.ok()) return Fail(id.error());
    in.id = *id;
    auto amount = json::OptionalInt(*body, "amount", "");
    if (!amount.ok()) return Fail(amount.error());
    if (!*amount) return Fail(MissingArgument("amount is required", "amount"));
    in.amount = **amount;
    auto type = MaybeString(*body, "type");
    if (!type.ok()) return Fail(type.error());
    if (*type) {
        auto parsed = ParseGrantType(**type);
        if (!parsed.ok()) return Fail(parsed.error());
        in.type = *parsed;
    }
    auto expires = json::OptionalInt(*body, "expires_at", "");
    if (!expires.ok()) return Fail(expires.error());
    if (*expires) in.expires_at = Timestamp(**expires);
    auto priority = json::OptionalInt(*body, "priority", "");
    if (!priority.ok()) return Fail(priority.error());
    if (*priority) {
        if (**priority < -1000 || **priority > 1000) {
            return Fail(InvalidArgument("priority must be between -1000 and 1000", "priority"));
        }
        in.priority = static_cast<int>(**priority);
    }
    auto reason = MaybeString(*body, "reason");
    if (!reason.ok()) return Fail(reason.error());
    in.reason = reason->value_or("");
    in.actor = c.actor;
    std::optional<CreditGrantOutcome> out;
    Status s = d.store.WriteSerialized("credits:" + in.customer.str(), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, d.credits->Grant(tx, in));
        return {};
    });
    if (!s.ok()) return Fail(s.error());
    return Replayable(201, GrantJson(out->grant), out->replayed);
}

Response GetCredits(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto balance = d.credits->Balance(CustomerId(c.param(0)));
    if (!balance.ok()) return Fail(balance.error());
    return Json(200, bj::object{{"object", "credit_balance"},
                                {"customer", c.param(0)},
                                {"subscription_credits", balance->subscription},
                                {"bundle_credits", balance->bundle},
                                {"promotional_credits", balance->promotional},
                                {"total", balance->total()}});
}

Response ListCreditGrants(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto grants = d.credits->Grants(CustomerId(c.param(0)));
    if (!grants.ok()) return Fail(grants.error());
    bj::array data;
    for (const auto& g : *grants) data.push_back(GrantJson(g));
    return List(data, "/v1/customers/" + c.param(0) + "/credit_grants");
}

}  // namespace tally::http::routes
