// Routes of prepaid credits: deductions and reservations on the app's hot path, grants and reversals by admins, a
// customer's balance, grants and transactions.
#include <boost/json.hpp>

#include <charconv>

#include "adapters/config/json_util.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"
#include "domain/csv.hpp"

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

Response Replayable(int status, const bj::value& v, bool replayed) {
    Response r = Json(status, v);
    if (replayed) r.headers.emplace_back("Idempotent-Replayed", "true");
    return r;
}

bj::value BreakdownJson(const std::vector<CreditDraw>& draws) {
    bj::array out;
    for (const auto& d : draws) out.push_back(bj::object{{"grant", d.grant}, {"amount", d.amount}});
    return out;
}

bj::value MetadataJson(const std::string& metadata) {
    return metadata.empty() ? bj::value(bj::object{}) : bj::parse(metadata);
}

bj::value OptTime(const std::optional<Timestamp>& t) {
    return t ? bj::value(t->unix_seconds()) : bj::value(nullptr);
}

bj::object ReservationJson(const CreditReservationRecord& r) {
    return bj::object{{"id", r.id},
                      {"object", "credit_reservation"},
                      {"customer", r.customer_id.str()},
                      {"amount", r.amount},
                      {"status", r.status},
                      {"captured", r.captured ? bj::value(*r.captured) : bj::value(nullptr)},
                      {"expires_at", r.expires_at.unix_seconds()},
                      {"settled_at", OptTime(r.settled_at)},
                      {"metadata", MetadataJson(r.metadata)},
                      {"created", r.created.unix_seconds()}};
}

/// A reservation call's answer: the reservation, the credits this call moved per grant, the balance after it.
Response ReservationResponse(int status, const CreditReservationOutcome& out) {
    bj::object o = ReservationJson(out.reservation);
    o["breakdown"] = BreakdownJson(out.breakdown);
    o["balance"] = BalanceJson(out.balance);
    return Replayable(status, o, out.replayed);
}

bj::value TransactionJson(const CreditTransferRecord& t) {
    return bj::object{{"id", t.id},
                      {"object", "credit_transaction"},
                      {"customer", t.customer_id.str()},
                      {"type", t.kind},
                      {"amount", t.amount},
                      {"action", t.action.empty() ? bj::value(nullptr) : bj::value(t.action)},
                      {"reference", t.reference.empty() ? bj::value(nullptr) : bj::value(t.reference)},
                      {"metadata", MetadataJson(t.metadata)},
                      {"balance", BalanceJson({t.balance_subscription, t.balance_bundle, t.balance_promotional})},
                      {"actor", t.actor},
                      {"created", t.created.unix_seconds()}};
}

std::string TransactionsCsv(const std::vector<CreditTransferRecord>& rows) {
    std::string out = CsvRecord({"id", "customer", "type", "amount", "action", "reference", "balance_subscription",
                                 "balance_bundle", "balance_promotional", "balance_total", "actor", "created"});
    for (const auto& t : rows) {
        out += CsvRecord({CsvText(t.id), CsvText(t.customer_id.str()), CsvText(t.kind), std::to_string(t.amount),
                          CsvText(t.action), CsvText(t.reference), std::to_string(t.balance_subscription),
                          std::to_string(t.balance_bundle), std::to_string(t.balance_promotional),
                          std::to_string(t.balance_subscription + t.balance_bundle + t.balance_promotional),
                          CsvText(t.actor), std::to_string(t.created.unix_seconds())});
    }
    return out;
}

/// metadata: an object, kept as its serialized JSON (at most kCreditMetadataBytesMax).
Result<std::string> MetadataText(const bj::object& body) {
    const bj::value* m = body.if_contains("metadata");
    if (m == nullptr || m->is_null()) return std::string();
    if (!m->is_object()) return InvalidArgument("metadata must be an object", "metadata");
    std::string text = bj::serialize(*m);
    if (text.size() > kCreditMetadataBytesMax) return InvalidArgument("metadata must be at most 8 KiB of JSON", "metadata");
    return text;
}

/// The fields every transfer request starts with, in this order: customer and id (required), amount (an integer,
/// optional here; each caller says whether it is required).
struct TransferFields {
    CustomerId customer;
    std::string id;
    std::optional<int64_t> amount;
};
Result<TransferFields> ParseTransferFields(const bj::object& body) {
    TALLY_ASSIGN_OR_RETURN(std::string customer, json::RequiredString(body, "customer", ""));
    TALLY_ASSIGN_OR_RETURN(std::string id, json::RequiredString(body, "id", ""));
    TALLY_ASSIGN_OR_RETURN(std::optional<int64_t> amount, json::OptionalInt(body, "amount", ""));
    return TransferFields{CustomerId(std::move(customer)), std::move(id), amount};
}
/// ParseTransferFields with the amount required (parameter_missing "amount").
Result<TransferFields> ParseTransferFieldsWithAmount(const bj::object& body) {
    TALLY_ASSIGN_OR_RETURN(TransferFields f, ParseTransferFields(body));
    if (!f.amount) return MissingArgument("amount is required", "amount");
    return f;
}

/// Runs |fn| serialized on |customer|'s credits: every call that moves them queues for the others, on every node.
template <typename T, typename Fn>
Result<T> OnCredits(const ApiDeps& d, const CustomerId& customer, Fn fn) {
    std::optional<T> out;
    TALLY_TRY(d.store.WriteSerialized("credits:" + customer.str(), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, fn(tx));
        return {};
    }));
    return *out;
}

/// Runs |fn| serialized on |customer|'s credits and answers |render| of its result through |respond|: with a group
/// committer once the group holding it is durable (one commit for the writes that arrived together, each in its
/// own savepoint), else at once. |fn| and |render| are kept until then, so they own what they use.
template <typename T>
void OnCreditsThenRespond(const ApiDeps& d, const CustomerId& customer, std::function<Result<T>(StoreTx&)> fn,
                          std::function<Response(const T&)> render, const Responder& respond) {
    if (d.commits == nullptr) {
        auto out = OnCredits<T>(d, customer, fn);
        return respond(out.ok() ? render(*out) : Fail(out.error()));
    }
    auto out = std::make_shared<std::optional<T>>();
    d.commits->Submit(GroupedWrite{{"credits:" + customer.str()},
                                   [fn = std::move(fn), out](StoreTx& tx) -> Status {
                                       // A retried group runs this again: the last run's answer is the one kept.
                                       TALLY_ASSIGN_OR_RETURN(*out, fn(tx));
                                       return {};
                                   }},
                      [out, render = std::move(render), respond](Result<GroupedWriteOutcome> r) {
                          if (!r.ok()) return respond(Fail(r.error()));
                          if (!r->status.ok()) return respond(Fail(r->status.error()));
                          respond(render(**out));
                      });
}

Response DeductionResponse(const CreditDeduction& out) {
    const CreditTransferRecord& t = out.transfer;
    return Replayable(200,
                      bj::object{{"object", "credit_deduction"},
                                 {"transfer", t.id},
                                 {"customer", t.customer_id.str()},
                                 {"amount", t.amount},
                                 {"action", t.action.empty() ? bj::value(nullptr) : bj::value(t.action)},
                                 {"metadata", MetadataJson(t.metadata)},
                                 {"balance", BalanceJson(out.balance)},
                                 {"breakdown", BreakdownJson(out.breakdown)},
                                 {"created", t.created.unix_seconds()}},
                      out.replayed);
}

}  // namespace

void DeductCredits(const ApiDeps& d, const Call& c, const Responder& respond) {
    if (!d.credits) return respond(RouteNotFound(c.req));
    auto body = BindJsonBody(c.req, {"customer", "amount", "action", "id", "metadata"});
    if (!body.ok()) return respond(Fail(body.error()));
    auto fields = ParseTransferFields(*body);
    if (!fields.ok()) return respond(Fail(fields.error()));
    CreditDeductInput in;
    in.customer = fields->customer;
    in.id = fields->id;
    in.amount = fields->amount;
    auto action = MaybeString(*body, "action");
    if (!action.ok()) return respond(Fail(action.error()));
    in.action = action->value_or("");
    auto metadata = MetadataText(*body);
    if (!metadata.ok()) return respond(Fail(metadata.error()));
    in.metadata = *metadata;
    in.actor = c.actor;
    // A customer's deductions queue for each other on every node: no credit is spent twice.
    const CustomerId who = in.customer;
    if (d.commits == nullptr) {
        auto out = OnCredits<CreditDeduction>(d, who, [&](StoreTx& tx) { return d.credits->Deduct(tx, in); });
        return respond(out.ok() ? DeductionResponse(*out) : Fail(out.error()));
    }
    // With a group committer, the group's deductions run as one batch (CreditService::DeductBatch).
    auto item = std::make_shared<PendingDeduction>();
    item->in = std::move(in);
    GroupedWrite write{{"credits:" + who.str()}, nullptr};
    write.batch = &d.credits->deductions();
    write.item = item;
    d.commits->Submit(std::move(write), [item, respond](Result<GroupedWriteOutcome> r) {
        if (!r.ok()) return respond(Fail(r.error()));
        if (!r->status.ok()) return respond(Fail(r->status.error()));
        respond(DeductionResponse(**item->out));
    });
}

Response GrantCredits(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "amount", "id", "type", "expires_at", "priority", "reason"});
    if (!body.ok()) return Fail(body.error());
    auto fields = ParseTransferFieldsWithAmount(*body);
    if (!fields.ok()) return Fail(fields.error());
    CreditGrantInput in;
    in.customer = fields->customer;
    in.id = fields->id;
    in.amount = *fields->amount;
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
    return Replayable(201, CreditGrantJson(out->grant), out->replayed);
}

Response GetCredits(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto s = d.credits->Summary(CustomerId(c.param(0)));
    if (!s.ok()) return Fail(s.error());
    return Json(200, bj::object{{"object", "credit_balance"},
                                {"customer", c.param(0)},
                                {"subscription_credits", s->balance.subscription},
                                {"bundle_credits", s->balance.bundle},
                                {"promotional_credits", s->balance.promotional},
                                {"total", s->balance.total()},
                                {"reserved", s->reserved},
                                {"used_this_period", s->used_this_period},
                                {"period_start", s->period.start.unix_seconds()},
                                {"next_reset_at", OptTime(s->next_reset_at)},
                                {"plan", s->plan ? bj::value(*s->plan) : bj::value(nullptr)}});
}

Response ListCreditGrants(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto grants = d.credits->Grants(CustomerId(c.param(0)));
    if (!grants.ok()) return Fail(grants.error());
    bj::array data;
    for (const auto& g : *grants) data.push_back(CreditGrantJson(g));
    return List(data, "/v1/customers/" + c.param(0) + "/credit_grants");
}

Response ListCreditTransactions(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {"type", "created[gte]", "created[lte]", "limit", "starting_after", "format"});
        !s.ok()) {
        return Fail(s.error());
    }
    CreditTransferFilter f;
    f.customer = CustomerId(c.param(0));
    auto limit = PageSize(c.req);
    if (!limit.ok()) return Fail(limit.error());
    f.limit = *limit + 1;  // one more tells whether there is a next page
    if (auto it = c.req.query.find("type"); it != c.req.query.end()) {
        static constexpr std::string_view kTypes[] = {"grant",   "deduct", "reserve", "capture",
                                                      "release", "reverse", "expire", "refund"};
        if (std::find(std::begin(kTypes), std::end(kTypes), it->second) == std::end(kTypes)) {
            return Fail(InvalidArgument(
                "type must be one of grant, deduct, reserve, capture, release, reverse, expire, refund", "type"));
        }
        f.kind = it->second;
    }
    for (const char* name : {"created[gte]", "created[lte]"}) {
        auto t = IntQuery(c.req, name);
        if (!t.ok()) return Fail(InvalidArgument(std::string(name) + " must be a Unix timestamp in seconds", name));
        if (*t) (std::string_view(name) == "created[gte]" ? f.created_gte : f.created_lte) = Timestamp(**t);
    }
    if (auto it = c.req.query.find("starting_after"); it != c.req.query.end()) f.starting_after = it->second;
    bool csv = false;
    if (auto it = c.req.query.find("format"); it != c.req.query.end()) {
        if (it->second != "json" && it->second != "csv") return Fail(InvalidArgument("format must be json or csv", "format"));
        csv = it->second == "csv";
    }
    auto rows = d.credits->Transactions(f);
    if (!rows.ok()) return Fail(rows.error());
    const bool has_more = rows->size() > static_cast<size_t>(*limit);
    if (has_more) rows->resize(static_cast<size_t>(*limit));
    if (csv) {
        Response r{200, TransactionsCsv(*rows), "text/csv; charset=utf-8", {}};
        r.headers.emplace_back("Content-Disposition", "attachment; filename=\"credit_transactions.csv\"");
        r.headers.emplace_back("Tally-Has-More", has_more ? "true" : "false");
        if (has_more) r.headers.emplace_back("Tally-Next-Starting-After", rows->back().id);
        return r;
    }
    bj::array data;
    for (const auto& t : *rows) data.push_back(TransactionJson(t));
    return List(data, "/v1/customers/" + c.param(0) + "/credit_transactions", has_more);
}

void CreateCreditReservation(const ApiDeps& d, const Call& c, const Responder& respond) {
    if (!d.credits) return respond(RouteNotFound(c.req));
    auto body = BindJsonBody(c.req, {"customer", "amount", "id", "expires_in", "metadata"});
    if (!body.ok()) return respond(Fail(body.error()));
    auto fields = ParseTransferFieldsWithAmount(*body);
    if (!fields.ok()) return respond(Fail(fields.error()));
    CreditReserveInput in;
    in.customer = fields->customer;
    in.id = fields->id;
    in.amount = *fields->amount;
    auto expires_in = json::OptionalInt(*body, "expires_in", "");
    if (!expires_in.ok()) return respond(Fail(expires_in.error()));
    if (*expires_in) in.expires_in = **expires_in;
    auto metadata = MetadataText(*body);
    if (!metadata.ok()) return respond(Fail(metadata.error()));
    in.metadata = *metadata;
    in.actor = c.actor;
    const CustomerId who = in.customer;
    OnCreditsThenRespond<CreditReservationOutcome>(
        d, who, [&d, in = std::move(in)](StoreTx& tx) { return d.credits->Reserve(tx, in); },
        [](const CreditReservationOutcome& out) { return ReservationResponse(201, out); }, respond);
}

Response GetCreditReservation(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto r = d.credits->GetReservation(c.param(0));
    if (!r.ok()) return Fail(r.error());
    return Json(200, ReservationJson(*r));
}

Response CaptureCreditReservation(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"amount"});
    if (!body.ok()) return Fail(body.error());
    auto amount = json::OptionalInt(*body, "amount", "");
    if (!amount.ok()) return Fail(amount.error());
    if (!*amount) return Fail(MissingArgument("amount is required", "amount"));
    auto customer = d.credits->ReservationCustomer(c.param(0));
    if (!customer.ok()) return Fail(customer.error());
    auto out = OnCredits<CreditReservationOutcome>(
        d, *customer, [&](StoreTx& tx) { return d.credits->Capture(tx, c.param(0), **amount, c.actor); });
    if (!out.ok()) return Fail(out.error());
    return ReservationResponse(200, *out);
}

Response ReleaseCreditReservation(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = OptionalJsonBody(c.req, {});
    if (!body.ok()) return Fail(body.error());
    auto customer = d.credits->ReservationCustomer(c.param(0));
    if (!customer.ok()) return Fail(customer.error());
    auto out = OnCredits<CreditReservationOutcome>(
        d, *customer, [&](StoreTx& tx) { return d.credits->Release(tx, c.param(0), c.actor); });
    if (!out.ok()) return Fail(out.error());
    return ReservationResponse(200, *out);
}

Response ReverseCreditTransfer(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = OptionalJsonBody(c.req, {});
    if (!body.ok()) return Fail(body.error());
    auto customer = d.credits->TransferCustomer(c.param(0));
    if (!customer.ok()) return Fail(customer.error());
    auto out = OnCredits<CreditReversal>(d, *customer,
                                         [&](StoreTx& tx) { return d.credits->Reverse(tx, c.param(0), c.actor); });
    if (!out.ok()) return Fail(out.error());
    bj::object o = TransactionJson(out->transfer).as_object();
    o["breakdown"] = BreakdownJson(out->breakdown);
    return Replayable(200, o, out->replayed);
}

namespace {
bj::object NotificationJson(const NotificationRecord& n) {
    boost::system::error_code ec;
    bj::value data = bj::parse(n.object, ec);
    if (ec) data = bj::object{};
    return bj::object{{"id", n.id},
                      {"object", "notification"},
                      {"customer", n.customer_id.str()},
                      {"kind", n.kind},
                      {"message", n.message},
                      {"data", std::move(data)},
                      {"created", n.created.unix_seconds()},
                      {"dismissed_at", OptTime(n.dismissed_at)}};
}

Response PreferencesResponse(const std::string& customer, const std::vector<std::pair<std::string, bool>>& kinds) {
    bj::object out;
    for (const auto& [kind, keep] : kinds) out[kind] = keep;
    return Json(200, bj::object{{"object", "notification_preferences"}, {"customer", customer}, {"kinds", std::move(out)}});
}
}  // namespace

Response ListNotifications(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {"include_dismissed", "limit", "starting_after"}); !s.ok()) return Fail(s.error());
    bool include_dismissed = false;
    if (auto it = c.req.query.find("include_dismissed"); it != c.req.query.end()) {
        if (it->second != "true" && it->second != "false") {
            return Fail(InvalidArgument("include_dismissed must be true or false", "include_dismissed"));
        }
        include_dismissed = it->second == "true";
    }
    auto limit = PageSize(c.req);
    if (!limit.ok()) return Fail(limit.error());
    std::optional<std::string> after;
    if (auto it = c.req.query.find("starting_after"); it != c.req.query.end()) after = it->second;
    auto rows = d.credits->Notifications(CustomerId(c.param(0)), include_dismissed, after, *limit + 1);
    if (!rows.ok()) return Fail(rows.error());
    const bool has_more = rows->size() > static_cast<size_t>(*limit);
    if (has_more) rows->resize(static_cast<size_t>(*limit));
    bj::array data;
    for (const auto& n : *rows) data.push_back(NotificationJson(n));
    return List(data, "/v1/customers/" + c.param(0) + "/notifications", has_more);
}

Response DismissNotification(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = OptionalJsonBody(c.req, {});
    if (!body.ok()) return Fail(body.error());
    auto n = d.credits->DismissNotification(CustomerId(c.param(0)), c.param(1));
    if (!n.ok()) return Fail(n.error());
    return Json(200, NotificationJson(*n));
}

Response GetNotificationPreferences(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto kinds = d.credits->NotificationPreferences(CustomerId(c.param(0)));
    if (!kinds.ok()) return Fail(kinds.error());
    return PreferencesResponse(c.param(0), *kinds);
}

Response SetNotificationPreferences(const ApiDeps& d, const Call& c) {
    if (!d.credits) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"kinds"});
    if (!body.ok()) return Fail(body.error());
    const bj::value* kinds = body->if_contains("kinds");
    if (kinds == nullptr || kinds->is_null()) return Fail(MissingArgument("kinds is required", "kinds"));
    if (!kinds->is_object()) return Fail(InvalidArgument("kinds must be an object of kind: true|false", "kinds"));
    std::vector<std::pair<std::string, bool>> changes;
    for (const auto& [kind, keep] : kinds->as_object()) {
        if (!keep.is_bool()) return Fail(InvalidArgument("each kind is true or false", "kinds." + std::string(kind)));
        changes.emplace_back(std::string(kind), keep.as_bool());
    }
    auto out = d.credits->SetNotificationPreferences(CustomerId(c.param(0)), changes, c.actor);
    if (!out.ok()) return Fail(out.error());
    return PreferencesResponse(c.param(0), *out);
}

namespace {

bj::value PurchaseJson(const CreditPurchaseOutcome& out) {
    bj::object o = CreditPurchaseJson(out.purchase).as_object();
    o["credit_grant"] = out.grant ? CreditGrantJson(*out.grant) : bj::value(nullptr);
    return o;
}

/// {customer, bundle, id} of a purchase request; |id_required| for off-session ones.
Result<CreditPurchaseInput> ParsePurchase(const bj::object& body, bool id_required) {
    CreditPurchaseInput in;
    TALLY_ASSIGN_OR_RETURN(std::string customer, json::RequiredString(body, "customer", ""));
    in.customer = CustomerId(std::move(customer));
    TALLY_ASSIGN_OR_RETURN(in.bundle, json::RequiredString(body, "bundle", ""));
    if (id_required) {
        TALLY_ASSIGN_OR_RETURN(in.id, json::RequiredString(body, "id", ""));
    } else {
        TALLY_ASSIGN_OR_RETURN(in.id, json::OptionalString(body, "id", ""));
    }
    return in;
}

}  // namespace

Response ListCreditBundles(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    bj::array data;
    for (const auto& b : d.credit_purchases->bundles()) {
        data.push_back(bj::object{
            {"id", b.id},
            {"object", "credit_bundle"},
            {"name", b.name},
            {"credits", b.credits},
            {"unit_amount", b.price.amount_minor()},
            {"currency", b.price.currency().code()},
            {"expires_in_days", b.expires_in_days ? bj::value(*b.expires_in_days) : bj::value(nullptr)}});
    }
    return List(data, "/v1/credits/bundles");
}

Response CreateCreditPurchase(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "bundle", "id"});
    if (!body.ok()) return Fail(body.error());
    auto in = ParsePurchase(*body, true);
    if (!in.ok()) return Fail(in.error());
    in->actor = c.actor;
    auto out = d.credit_purchases->Purchase(*in);
    if (!out.ok()) return Fail(out.error());
    return Replayable(out->replayed ? 200 : 201, PurchaseJson(*out), out->replayed);
}

Response CreateCreditCheckoutSession(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "bundle", "id", "success_url", "cancel_url"});
    if (!body.ok()) return Fail(body.error());
    auto in = ParsePurchase(*body, false);
    if (!in.ok()) return Fail(in.error());
    auto success = json::OptionalString(*body, "success_url", "");
    if (!success.ok()) return Fail(success.error());
    auto cancel = json::OptionalString(*body, "cancel_url", "");
    if (!cancel.ok()) return Fail(cancel.error());
    in->success_url = *success;
    in->cancel_url = *cancel;
    in->actor = c.actor;
    auto out = d.credit_purchases->StartCheckout(*in);
    if (!out.ok()) return Fail(out.error());
    return Replayable(out->replayed ? 200 : 201, PurchaseJson(*out), out->replayed);
}

Response GetCreditPurchase(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    auto out = d.credit_purchases->Get(c.param(0));
    if (!out.ok()) return Fail(out.error());
    return Json(200, PurchaseJson(*out));
}

Response ListCreditPurchases(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {"limit", "starting_after"}); !s.ok()) return Fail(s.error());
    auto limit = PageSize(c.req);
    if (!limit.ok()) return Fail(limit.error());
    std::optional<std::string> after;
    if (auto it = c.req.query.find("starting_after"); it != c.req.query.end()) after = it->second;
    auto rows = d.credit_purchases->List(CustomerId(c.param(0)), after, *limit + 1);
    if (!rows.ok()) return Fail(rows.error());
    const bool has_more = rows->size() > static_cast<size_t>(*limit);
    if (has_more) rows->resize(static_cast<size_t>(*limit));
    bj::array data;
    for (const auto& p : *rows) data.push_back(CreditPurchaseJson(p));
    return List(data, "/v1/customers/" + c.param(0) + "/credit_purchases", has_more);
}

Response GetAutoPurchase(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    auto out = d.credit_purchases->GetAutoPurchase(CustomerId(c.param(0)));
    if (!out.ok()) return Fail(out.error());
    return Json(200, AutoPurchaseJson(out->settings, out->purchases_this_month));
}

Response SetAutoPurchase(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"enabled", "paused", "threshold", "bundle", "max_per_month"});
    if (!body.ok()) return Fail(body.error());
    AutoPurchaseInput in;
    for (const char* name : {"enabled", "paused"}) {
        const bj::value* v = body->if_contains(name);
        if (v == nullptr || v->is_null()) continue;
        if (!v->is_bool()) return Fail(InvalidArgument(std::string(name) + " must be true or false", name));
        (std::string_view(name) == "enabled" ? in.enabled : in.paused) = v->as_bool();
    }
    auto threshold = json::OptionalInt(*body, "threshold", "");
    if (!threshold.ok()) return Fail(threshold.error());
    in.threshold = *threshold;
    auto max = json::OptionalInt(*body, "max_per_month", "");
    if (!max.ok()) return Fail(max.error());
    in.max_per_month = *max;
    auto bundle = MaybeString(*body, "bundle");
    if (!bundle.ok()) return Fail(bundle.error());
    in.bundle = *bundle;
    in.actor = c.actor;
    auto out = d.credit_purchases->SetAutoPurchase(CustomerId(c.param(0)), in);
    if (!out.ok()) return Fail(out.error());
    return Json(200, AutoPurchaseJson(out->settings, out->purchases_this_month));
}

Response TriggerAutoPurchase(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    auto body = OptionalJsonBody(c.req, {});
    if (!body.ok()) return Fail(body.error());
    auto out = d.credit_purchases->ForceAutoPurchase(CustomerId(c.param(0)), c.actor);
    if (!out.ok()) return Fail(out.error());
    return Json(200, PurchaseJson(*out));
}

Response RefundCreditPurchase(const ApiDeps& d, const Call& c) {
    if (!d.credit_purchases) return RouteNotFound(c.req);
    auto body = OptionalJsonBody(c.req, {"amount", "id"});
    if (!body.ok()) return Fail(body.error());
    auto amount = json::OptionalInt(*body, "amount", "");
    if (!amount.ok()) return Fail(amount.error());
    auto key = json::OptionalString(*body, "id", "");
    if (!key.ok()) return Fail(key.error());
    auto out = d.credit_purchases->Refund(c.param(0), *amount, *key, c.actor);
    if (!out.ok()) return Fail(out.error());
    return Json(200, PurchaseJson(*out));
}

}  // namespace tally::http::routes
