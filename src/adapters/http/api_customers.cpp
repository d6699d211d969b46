// Routes of customers, organizations' members, customer sessions, app users, and invoices and payments.
#include <boost/json.hpp>

#include <charconv>

#include "adapters/config/json_util.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http::routes {
namespace {

namespace bj = boost::json;

Response Fail(const Error& e) { return ErrorResponse(e); }

/// Stripe's metadata parameter: an object of strings (a value "" removes its key), or "" to remove every key.
Result<std::optional<MetadataUpdate>> MaybeMetadata(const bj::object& body) {
    const bj::value* v = body.if_contains("metadata");
    if (v == nullptr || v->is_null()) return std::optional<MetadataUpdate>();
    MetadataUpdate update;
    if (v->is_string() && v->get_string().empty()) {
        update.clear_all = true;
        return std::optional<MetadataUpdate>(std::move(update));
    }
    if (!v->is_object()) {
        return InvalidArgument("metadata must be an object of string values, or \"\" to remove every key", "metadata");
    }
    for (const auto& kv : v->get_object()) {
        const std::string key(kv.key());
        if (!kv.value().is_string()) {
            std::string param = "metadata[";
            param += key;
            param += "]";
            return InvalidArgument("metadata values must be strings", param);
        }
        update.set.emplace_back(key, std::string(kv.value().get_string()));
    }
    return std::optional<MetadataUpdate>(std::move(update));
}

/// The customer fields of a create (|create|: type allowed) or update body, each checked for its JSON type.
Result<CustomerInput> ParseCustomerInput(const bj::object& body, bool create) {
    CustomerInput in;
    TALLY_ASSIGN_OR_RETURN(in.email, MaybeString(body, "email"));
    TALLY_ASSIGN_OR_RETURN(in.name, MaybeString(body, "name"));
    TALLY_ASSIGN_OR_RETURN(in.auth_provider, MaybeString(body, "auth_provider"));
    TALLY_ASSIGN_OR_RETURN(in.company, MaybeString(body, "company"));
    if (create) {
        TALLY_ASSIGN_OR_RETURN(auto type, MaybeString(body, "type"));
        if (type) {
            TALLY_ASSIGN_OR_RETURN(in.type, ParseCustomerType(*type));
        }
    }
    if (const bj::value* v = body.if_contains("email_verified"); v != nullptr && !v->is_null()) {
        if (!v->is_bool()) return InvalidArgument("email_verified must be a boolean", "email_verified");
        in.email_verified = v->get_bool();
    }
    TALLY_ASSIGN_OR_RETURN(in.metadata, MaybeMetadata(body));
    return in;
}

/// The members routes' actor role: the session user's (enforced by MemberService), nullopt for an API key.
std::optional<MemberRole> ActorRole(const Call& c) {
    return c.session ? std::optional<MemberRole>(c.session->role) : std::nullopt;
}

/// GET invoices or payments: /v1/invoices|payments, or a customer's when |customer| (from the path) is set.
Response History(const ApiDeps& d, const Call& c, bool invoices, const std::string& customer) {
    const Request& req = c.req;
    if (!d.history) return RouteNotFound(req);
    const Status params = customer.empty()
                              ? OnlyQueryParams(req, {"status", "customer", "created[gte]", "limit", "starting_after",
                                                      "format"})
                              : OnlyQueryParams(req, {"status", "created[gte]", "limit", "starting_after", "format"});
    if (!params.ok()) return Fail(params.error());
    BillingHistoryQuery q;
    auto limit = PageSize(req);
    if (!limit.ok()) return Fail(limit.error());
    q.limit = *limit;
    if (!customer.empty()) q.customer = CustomerId(customer);
    if (auto it = req.query.find("customer"); it != req.query.end() && !it->second.empty()) {
        q.customer = CustomerId(it->second);
    }
    if (auto it = req.query.find("status"); it != req.query.end()) q.status = it->second;
    if (auto it = req.query.find("created[gte]"); it != req.query.end()) {
        int64_t n = 0;
        const auto& v = it->second;
        const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (v.empty() || ec != std::errc() || p != v.data() + v.size()) {
            return Fail(InvalidArgument("created[gte] must be a Unix timestamp in seconds", "created[gte]"));
        }
        q.created_gte = Timestamp(n);
    }
    if (auto it = req.query.find("starting_after"); it != req.query.end()) q.starting_after = it->second;
    bool csv = false;
    if (auto it = req.query.find("format"); it != req.query.end()) {
        if (it->second != "json" && it->second != "csv") return Fail(InvalidArgument("format must be json or csv", "format"));
        csv = it->second == "csv";
    }
    // A path's customer reads as missing, like every unknown customer; a query's is a parameter.
    const auto not_found_param = [&](Error e) {
        if (!customer.empty() && e.code == ErrorCode::kNotFound && e.param == "customer") e.param = "id";
        return Fail(e);
    };
    const std::string url = customer.empty() ? std::string(invoices ? "/v1/invoices" : "/v1/payments")
                                             : "/v1/customers/" + customer + (invoices ? "/invoices" : "/payments");
    const auto csv_response = [&](std::string body, bool has_more, const std::string& last) {
        Response r{200, std::move(body), "text/csv; charset=utf-8", {}};
        r.headers.emplace_back("Content-Disposition",
                               std::string("attachment; filename=\"") + (invoices ? "invoices" : "payments") + ".csv\"");
        // One page per request, as the JSON list: the next page starts after the last row.
        r.headers.emplace_back("Tally-Has-More", has_more ? "true" : "false");
        if (has_more) r.headers.emplace_back("Tally-Next-Starting-After", last);
        return r;
    };
    if (invoices) {
        auto page = d.history->ListInvoices(q);
        if (!page.ok()) return not_found_param(page.error());
        if (csv) {
            return csv_response(InvoicesCsv(page->data), page->has_more,
                                page->data.empty() ? "" : page->data.back().record.id);
        }
        bj::array data;
        for (const auto& row : page->data) data.push_back(InvoiceJson(row.record, row.customer_id));
        return List(data, url, page->has_more);
    }
    auto page = d.history->ListPayments(q);
    if (!page.ok()) return not_found_param(page.error());
    if (csv) {
        return csv_response(PaymentsCsv(page->data), page->has_more,
                            page->data.empty() ? "" : page->data.back().record.id);
    }
    bj::array data;
    for (const auto& row : page->data) data.push_back(PaymentJson(row.record, row.customer_id));
    return List(data, url, page->has_more);
}

}  // namespace

Response CreateCustomer(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"external_id", "email", "name", "type", "auth_provider", "company",
                                     "email_verified", "metadata"});
    if (!body.ok()) return Fail(body.error());
    auto external_id = json::RequiredString(*body, "external_id", "");
    if (!external_id.ok()) return Fail(external_id.error());
    auto input = ParseCustomerInput(*body, true);
    if (!input.ok()) return Fail(input.error());
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto created, d.billing.CreateCustomer(tx, *external_id, *input));
        return Render(created.second ? 201 : 200, CustomerJson(created.first));
    }));
}

Response ListCustomers(const ApiDeps& d, const Call& c) {
    const Request& req = c.req;
    static const char* const kAllowed[] = {"external_id", "stripe_customer_id", "type", "auth_provider", "company",
                                           "email_verified", "limit", "starting_after"};
    CustomerFilter filter;
    for (const auto& [k, v] : req.query) {
        bool known = false;
        for (const char* a : kAllowed) known = known || k == a;
        if (k.size() > 10 && k.starts_with("metadata[") && k.ends_with("]")) {
            filter.metadata.emplace_back(k.substr(9, k.size() - 10), v);
            known = true;
        }
        if (!known) {
            return Fail(WithReason(InvalidArgument("Received unknown parameter: " + k, k), ErrorReason::kParameterUnknown));
        }
    }
    const auto ext = req.query.find("external_id");
    const auto sid = req.query.find("stripe_customer_id");
    if (ext != req.query.end() || sid != req.query.end()) {
        // A lookup by a unique key: zero or one customer, not combinable with the list's filters.
        if (req.query.size() > 1) {
            return Fail(InvalidArgument("external_id and stripe_customer_id look one customer up and take no other "
                                        "parameter",
                                        ext != req.query.end() ? "external_id" : "stripe_customer_id"));
        }
        Result<std::vector<CustomerView>> found =
            ext != req.query.end() ? d.billing.FindByExternalId(ext->second)
                                   : d.billing.FindByStripeCustomerId(StripeCustomerId(sid->second));
        if (!found.ok()) return Fail(found.error());
        bj::array data;
        for (const auto& v : *found) data.push_back(CustomerJson(v));
        return List(data, "/v1/customers");
    }
    auto limit = PageSize(req);
    if (!limit.ok()) return Fail(limit.error());
    filter.limit = *limit;
    if (auto it = req.query.find("type"); it != req.query.end()) {
        auto type = ParseCustomerType(it->second);
        if (!type.ok()) return Fail(type.error());
        filter.type = *type;
    }
    if (auto it = req.query.find("auth_provider"); it != req.query.end()) filter.auth_provider = it->second;
    if (auto it = req.query.find("company"); it != req.query.end()) filter.company = it->second;
    if (auto it = req.query.find("email_verified"); it != req.query.end()) {
        if (it->second != "true" && it->second != "false") {
            return Fail(InvalidArgument("email_verified must be true or false", "email_verified"));
        }
        filter.email_verified = it->second == "true";
    }
    if (auto it = req.query.find("starting_after"); it != req.query.end() && !it->second.empty()) {
        filter.starting_after = CustomerId(it->second);
    }
    auto page = d.billing.ListCustomers(std::move(filter));
    if (!page.ok()) return Fail(page.error());
    bj::array data;
    for (const auto& v : page->data) data.push_back(CustomerJson(v));
    return List(data, "/v1/customers", page->has_more);
}

Response GetCustomer(const ApiDeps& d, const Call& c) {
    auto view = d.billing.GetCustomer(CustomerId(c.param(0)));
    if (!view.ok()) return Fail(view.error());
    return Json(200, CustomerJson(*view));
}

Response UpdateCustomer(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"email", "name", "auth_provider", "company", "email_verified", "metadata"});
    if (!body.ok()) return Fail(body.error());
    auto input = ParseCustomerInput(*body, false);
    if (!input.ok()) return Fail(input.error());
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto view, d.billing.UpdateCustomer(tx, CustomerId(c.param(0)), *input, c.actor));
        return Render(200, CustomerJson(view));
    }));
}

Response GetEntitlements(const ApiDeps& d, const Call& c) {
    auto view = d.billing.GetCustomer(CustomerId(c.param(0)));
    if (!view.ok()) return Fail(view.error());
    return Json(200, EntitlementsJson(*view));
}

Response SetRoleOverride(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"role", "reason", "expires_at"});
    if (!body.ok()) return Fail(body.error());
    auto role = json::RequiredString(*body, "role", "");
    if (!role.ok()) return Fail(role.error());
    auto reason = json::RequiredString(*body, "reason", "");
    if (!reason.ok()) return Fail(reason.error());
    auto expires = json::OptionalInt(*body, "expires_at", "");
    if (!expires.ok()) return Fail(expires.error());
    std::optional<Timestamp> expires_at;
    if (*expires) expires_at = Timestamp(**expires);
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto view,
                               d.billing.SetRoleOverride(tx, CustomerId(c.param(0)), *role, *reason, expires_at, c.actor));
        return Render(200, CustomerJson(view));
    }));
}

Response ClearRoleOverride(const ApiDeps& d, const Call& c) {
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto view, d.billing.ClearRoleOverride(tx, CustomerId(c.param(0)), c.actor));
        return Render(200, CustomerJson(view));
    }));
}

Response ListMembers(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    auto list = d.members->List(CustomerId(c.param(0)));
    if (!list.ok()) return Fail(list.error());
    bj::array data;
    for (const auto& member : *list) data.push_back(MemberJson(member));
    return List(data, "/v1/customers/" + c.param(0) + "/members");
}

Response AddMember(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"user", "email", "role"});
    if (!body.ok()) return Fail(body.error());
    auto user = json::RequiredString(*body, "user", "");
    if (!user.ok()) return Fail(user.error());
    auto email = json::OptionalString(*body, "email", "");
    if (!email.ok()) return Fail(email.error());
    auto role_text = json::RequiredString(*body, "role", "");
    if (!role_text.ok()) return Fail(role_text.error());
    auto role = ParseMemberRole(*role_text);
    if (!role.ok()) return Fail(role.error());
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto added,
                               d.members->Add(tx, CustomerId(c.param(0)), *user, *email, *role, ActorRole(c), c.actor));
        return Render(201, MemberJson(added));
    }));
}

Response GetMember(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    auto member = d.members->Get(CustomerId(c.param(0)), c.param(1));
    if (!member.ok()) return Fail(member.error());
    return Json(200, MemberJson(*member));
}

Response UpdateMember(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"email", "role"});
    if (!body.ok()) return Fail(body.error());
    auto email = MaybeString(*body, "email");
    if (!email.ok()) return Fail(email.error());
    auto role_text = MaybeString(*body, "role");
    if (!role_text.ok()) return Fail(role_text.error());
    std::optional<MemberRole> role;
    if (*role_text) {
        auto parsed = ParseMemberRole(**role_text);
        if (!parsed.ok()) return Fail(parsed.error());
        role = *parsed;
    }
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto updated, d.members->Update(tx, CustomerId(c.param(0)), c.param(1), role, *email,
                                                               ActorRole(c), c.actor));
        return Render(200, MemberJson(updated));
    }));
}

Response RemoveMember(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto removed,
                               d.members->Remove(tx, CustomerId(c.param(0)), c.param(1), ActorRole(c), c.actor));
        bj::value v = MemberJson(removed);
        v.as_object()["deleted"] = true;
        return Render(200, v);
    }));
}

Response CreateCustomerSession(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "user", "expires_in"});
    if (!body.ok()) return Fail(body.error());
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    if (customer->empty()) return Fail(MissingArgument("customer is required", "customer"));
    auto user = json::RequiredString(*body, "user", "");
    if (!user.ok()) return Fail(user.error());
    auto expires_in = json::OptionalInt(*body, "expires_in", "");
    if (!expires_in.ok()) return Fail(expires_in.error());
    // The token is shown once and never stored: a replay gets the session without it.
    return Stored(d.idempotency.RunInStoreRedacted(
        c.idem, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
            TALLY_ASSIGN_OR_RETURN(auto created,
                                   d.members->CreateSession(tx, CustomerId(*customer), *user, *expires_in, c.actor));
            return std::make_pair(Render(201, CustomerSessionJson(created.record, created.token)),
                                  Render(201, CustomerSessionJson(created.record)));
        }));
}

Response RevokeCustomerSession(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto session, d.members->RevokeSession(tx, c.param(0), c.actor));
        return Render(200, CustomerSessionJson(session));
    }));
}

Response GetUser(const ApiDeps& d, const Call& c) {
    if (!d.members) return RouteNotFound(c.req);
    auto user = d.members->GetUser(c.param(0));
    if (!user.ok()) return Fail(user.error());
    return Json(200, UserJson(*user));
}

Response ListInvoices(const ApiDeps& d, const Call& c) { return History(d, c, true, ""); }
Response ListPayments(const ApiDeps& d, const Call& c) { return History(d, c, false, ""); }
Response ListCustomerInvoices(const ApiDeps& d, const Call& c) { return History(d, c, true, c.param(0)); }
Response ListCustomerPayments(const ApiDeps& d, const Call& c) { return History(d, c, false, c.param(0)); }

}  // namespace tally::http::routes
