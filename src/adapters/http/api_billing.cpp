// Routes of plans, Stripe Checkout and Customer Portal sessions, and subscriptions through Tally.
#include <boost/json.hpp>

#include <functional>
#include <type_traits>

#include "adapters/config/catalog_json.hpp"
#include "adapters/config/json_util.hpp"
#include "adapters/crypto.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http::routes {
namespace {

namespace bj = boost::json;

Response Fail(const Error& e) { return ErrorResponse(e); }

/// For a customer session: |customer| must be its own (another reads as missing) and its user must be allowed to
/// manage billing. Nothing for an API key.
Status MaySessionPayFor(const Call& c, const std::string& customer) {
    if (!c.session) return {};
    if (customer != c.session->customer.str()) return NoSuchCustomer(customer, "customer");
    return c.MayManageBilling();
}

bj::value Render(const SubscriptionView& v) { return SubscriptionJson(v.subscription, v.customer_id); }

bj::value PreviewJson(const ChangePreview& p) {
    bj::array lines;
    for (const auto& l : p.lines) {
        lines.push_back(bj::object{{"description", l.description},
                                   {"amount", l.amount_minor},
                                   {"proration", l.proration},
                                   {"period_start", l.period_start.unix_seconds()},
                                   {"period_end", l.period_end.unix_seconds()}});
    }
    return bj::object{{"object", "subscription_change_preview"},
                      {"subscription", Render(p.subscription)},
                      {"plan", p.plan},
                      {"interval", p.interval},
                      {"proration_date", p.proration_date},
                      {"currency", p.currency},
                      {"lines", std::move(lines)},
                      {"amount_due", p.amount_due_minor},
                      {"next_invoice_total", p.next_invoice_total_minor},
                      {"next_invoice_at", p.next_invoice_at.unix_seconds()}};
}

/// A plan change's {plan, interval, proration_date?}; |at| ("now" | "period_end") also read when |with_at|.
struct ChangeBody {
    std::string plan;
    std::string interval;
    std::optional<int64_t> proration_date;
    bool at_period_end = false;
};
Result<ChangeBody> ParseChange(const Request& req, bool with_at) {
    TALLY_ASSIGN_OR_RETURN(bj::object body, with_at ? BindJsonBody(req, {"plan", "interval", "proration_date", "at"})
                                                    : BindJsonBody(req, {"plan", "interval", "proration_date"}));
    ChangeBody out;
    TALLY_ASSIGN_OR_RETURN(out.plan, json::RequiredString(body, "plan", ""));
    TALLY_ASSIGN_OR_RETURN(out.interval, IntervalParam(body));
    TALLY_ASSIGN_OR_RETURN(out.proration_date, json::OptionalInt(body, "proration_date", ""));
    if (with_at) {
        TALLY_ASSIGN_OR_RETURN(std::string at, json::OptionalString(body, "at", ""));
        if (!at.empty() && at != "now" && at != "period_end") return InvalidArgument("at must be now or period_end", "at");
        out.at_period_end = at == "period_end";
        if (out.at_period_end && out.proration_date) {
            return InvalidArgument("proration_date applies to a change now only (a change at period_end is not "
                                   "prorated)",
                                   "proration_date");
        }
    }
    return out;
}

/// The subscription of the path, checked for a customer session: another customer's reads as missing.
Result<StripeSubscriptionId> OwnSubscription(const ApiDeps& d, const Call& c) {
    const StripeSubscriptionId id(c.param(0));
    if (c.session) {
        TALLY_ASSIGN_OR_RETURN(auto view, d.subscriptions->Get(id));
        if (view.customer_id != c.session->customer.str()) return NotFound("no such subscription: '" + c.param(0) + "'", "id");
    }
    return id;
}

/// A subscription action on |id| (checked by OwnSubscription): the caller's role, then |fn| as an idempotent call
/// with Stripe effects, given the Stripe idempotency key.
Response Mutate(const ApiDeps& d, const Call& c, const StripeSubscriptionId& id,
                const std::function<Result<SubscriptionView>(const StripeSubscriptionId&, const std::string&)>& fn,
                const std::function<Status(const SubscriptionView&, bj::object&)>& decorate = {}) {
    if (Status allowed = c.MayManageBilling(); !allowed.ok()) return Fail(allowed.error());
    const std::string stripe_key = c.StripeIdempotencyKey();
    return Stored(d.idempotency.RunWithExternalEffects(c.idem, [&]() -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto view, fn(id, stripe_key));
        bj::value out = Render(view);
        if (decorate) TALLY_TRY(decorate(view, out.as_object()));
        return tally::http::Render(200, out);
    }));
}

}  // namespace

Response ListPlans(const ApiDeps& d, const Call& c) {
    if (Status s = OnlyQueryParams(c.req, {"include_archived"}); !s.ok()) return Fail(s.error());
    bool include_archived = false;
    if (auto it = c.req.query.find("include_archived"); it != c.req.query.end()) {
        if (it->second != "true" && it->second != "false") {
            return Fail(InvalidArgument("include_archived must be true or false", "include_archived"));
        }
        include_archived = it->second == "true";
    }
    // The list is public (a pricing page); what is no longer sold only to an API key.
    if (include_archived) {
        if (auto principal = AuthenticateApiKey(d, c.req); !principal.ok()) return Fail(principal.error());
    }
    if (!d.plans) return RouteNotFound(c.req);
    auto plans = d.plans->List(include_archived);
    if (!plans.ok()) return Fail(plans.error());
    bj::array data;
    for (auto& plan : *plans) {
        if (!include_archived) std::erase_if(plan.prices, [](const PlanPriceRecord& p) { return !p.active; });
        data.push_back(PlanJson(plan));
    }
    return List(data, "/v1/plans");
}

namespace {
/// A plans API error's param without the catalog file's leading "." (".prices[0].currency" -> "prices[0].currency").
Error PlanParam(Error e) {
    if (e.param.starts_with('.')) e.param.erase(0, 1);
    return e;
}

/// An object of booleans or integers at |key| (features, limits), merged into |out|.
template <typename V>
Status MapParam(const bj::object& body, const char* key, std::map<std::string, V>& out) {
    const bj::value* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) return {};
    if (!v->is_object()) return InvalidArgument(std::string(key) + " must be an object", key);
    for (const auto& kv : v->get_object()) {
        const std::string param = std::string(key) + "." + std::string(kv.key());
        if constexpr (std::is_same_v<V, bool>) {
            if (!kv.value().is_bool()) return InvalidArgument("must be a boolean", param);
            out[std::string(kv.key())] = kv.value().get_bool();
        } else if constexpr (std::is_same_v<V, std::optional<int64_t>>) {
            if (kv.value().is_null()) {  // unlimited
                out[std::string(kv.key())] = std::nullopt;
                continue;
            }
            if (!kv.value().is_int64()) return InvalidArgument("must be an integer or null (unlimited)", param);
            out[std::string(kv.key())] = kv.value().get_int64();
        } else {
            if (!kv.value().is_int64()) return InvalidArgument("must be an integer", param);
            out[std::string(kv.key())] = kv.value().get_int64();
        }
    }
    return {};
}
}  // namespace

Response CreatePlan(const ApiDeps& d, const Call& c) {
    if (!d.plans) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"id", "name", "role", "prices", "features", "limits", "credits_monthly"});
    if (!body.ok()) return Fail(body.error());
    auto plan = ParsePlanJson(*body);
    if (!plan.ok()) return Fail(PlanParam(plan.error()));
    Response r = Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto created, d.plans->Create(tx, *plan, c.actor));
        return tally::http::Render(201, PlanJson(created));
    }));
    if (r.status < 300) d.plans->Changed();
    return r;
}

Response GetPlan(const ApiDeps& d, const Call& c) {
    if (!d.plans) return RouteNotFound(c.req);
    auto plan = d.plans->Get(PlanId(c.param(0)));
    if (!plan.ok()) return Fail(plan.error());
    return Json(200, PlanJson(*plan));
}

Response UpdatePlan(const ApiDeps& d, const Call& c) {
    if (!d.plans) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"name", "features", "limits", "credits_monthly", "prices"});
    if (!body.ok()) return Fail(body.error());
    PlanChange change;
    auto name = MaybeString(*body, "name");
    if (!name.ok()) return Fail(name.error());
    change.name = *name;
    if (Status s = MapParam(*body, "features", change.features); !s.ok()) return Fail(s.error());
    if (Status s = MapParam(*body, "limits", change.limits); !s.ok()) return Fail(s.error());
    auto credits = json::OptionalInt(*body, "credits_monthly", "");
    if (!credits.ok()) return Fail(credits.error());
    change.credits_monthly = *credits;
    if (const bj::value* prices = body->if_contains("prices"); prices != nullptr && !prices->is_null()) {
        if (!prices->is_array()) return Fail(InvalidArgument("prices must be an array of prices", "prices"));
        change.prices.emplace();
        for (size_t i = 0; i < prices->get_array().size(); ++i) {
            auto price = ParsePriceJson(prices->get_array()[i], "prices[" + std::to_string(i) + "]");
            if (!price.ok()) return Fail(price.error());
            change.prices->push_back(std::move(*price));
        }
    }
    Response r = Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto updated, d.plans->Update(tx, PlanId(c.param(0)), change, c.actor));
        return tally::http::Render(200, PlanJson(updated));
    }));
    if (r.status < 300) d.plans->Changed();
    return r;
}

Response ArchivePlan(const ApiDeps& d, const Call& c) {
    if (!d.plans) return RouteNotFound(c.req);
    Response r = Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto archived, d.plans->Archive(tx, PlanId(c.param(0)), c.actor));
        return tally::http::Render(200, PlanJson(archived));
    }));
    if (r.status < 300) d.plans->Changed();
    return r;
}

Response CreateCheckoutSession(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"customer", "plan", "interval", "success_url", "cancel_url", "trial_period_days"});
    if (!body.ok()) return Fail(body.error());
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    if (customer->empty()) return Fail(MissingArgument("customer is required", "customer"));
    if (Status allowed = MaySessionPayFor(c, *customer); !allowed.ok()) return Fail(allowed.error());
    auto plan = json::RequiredString(*body, "plan", "");
    if (!plan.ok()) return Fail(plan.error());
    auto interval = IntervalParam(*body);
    if (!interval.ok()) return Fail(interval.error());
    auto success_url = json::OptionalString(*body, "success_url", "");
    if (!success_url.ok()) return Fail(success_url.error());
    auto cancel_url = json::OptionalString(*body, "cancel_url", "");
    if (!cancel_url.ok()) return Fail(cancel_url.error());
    auto trial = json::OptionalInt(*body, "trial_period_days", "");
    if (!trial.ok()) return Fail(trial.error());
    return Stored(d.idempotency.RunWithExternalEffects(c.idem, [&]() -> Result<StoredResponse> {
        // Stripe deduplicates the session by a key derived from the caller's (scoped to its API key), so a retry
        // after a crash mid-call gets the same session.
        TALLY_ASSIGN_OR_RETURN(auto session,
                               d.checkout.StartCheckout(CustomerId(*customer), PlanId(*plan), *interval, *success_url,
                                                        *cancel_url, *trial, c.StripeIdempotencyKey()));
        return tally::http::Render(200, bj::object{{"object", "checkout_session"}, {"id", session.id},
                                                   {"url", session.url}, {"customer", *customer}, {"plan", *plan},
                                                   {"interval", *interval}});
    }));
}

Response CreatePortalSession(const ApiDeps& d, const Call& c) {
    auto body = BindJsonBody(c.req, {"customer", "return_url"});
    if (!body.ok()) return Fail(body.error());
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    if (customer->empty()) return Fail(MissingArgument("customer is required", "customer"));
    if (Status allowed = MaySessionPayFor(c, *customer); !allowed.ok()) return Fail(allowed.error());
    auto return_url = json::OptionalString(*body, "return_url", "");
    if (!return_url.ok()) return Fail(return_url.error());
    return Stored(d.idempotency.RunWithExternalEffects(c.idem, [&]() -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto session, d.checkout.StartPortal(CustomerId(*customer), *return_url));
        return tally::http::Render(200, bj::object{{"object", "billing_portal_session"}, {"id", session.id},
                                                   {"url", session.url}, {"customer", *customer}});
    }));
}

Response CreateSubscription(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "plan", "interval", "trial_period_days", "payment_method"});
    if (!body.ok()) return Fail(body.error());
    SubscriptionCreateInput input;
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    if (customer->empty()) return Fail(MissingArgument("customer is required", "customer"));
    if (Status allowed = MaySessionPayFor(c, *customer); !allowed.ok()) return Fail(allowed.error());
    input.customer = CustomerId(*customer);
    auto plan = json::RequiredString(*body, "plan", "");
    if (!plan.ok()) return Fail(plan.error());
    input.plan = PlanId(*plan);
    auto interval = IntervalParam(*body);
    if (!interval.ok()) return Fail(interval.error());
    input.interval = *interval;
    auto trial = json::OptionalInt(*body, "trial_period_days", "");
    if (!trial.ok()) return Fail(trial.error());
    input.trial_period_days = *trial;
    auto pm = json::OptionalString(*body, "payment_method", "");
    if (!pm.ok()) return Fail(pm.error());
    input.payment_method = *pm;
    return Stored(d.idempotency.RunWithExternalEffects(c.idem, [&]() -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto created, d.subscriptions->Create(input, c.StripeIdempotencyKey()));
        return tally::http::Render(201, Render(created));
    }));
}

Response ListSubscriptions(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {"status", "plan", "limit", "starting_after"}); !s.ok()) return Fail(s.error());
    SubscriptionListFilter filter;
    auto limit = PageSize(c.req);
    if (!limit.ok()) return Fail(limit.error());
    filter.limit = std::min(*limit, kSubscriptionPageSizeMax);
    const auto& q = c.req.query;
    if (auto it = q.find("status"); it != q.end()) filter.status = it->second;
    if (auto it = q.find("plan"); it != q.end()) filter.plan_id = it->second;
    if (auto it = q.find("starting_after"); it != q.end()) filter.starting_after = it->second;
    auto page = d.subscriptions->List(std::move(filter));
    if (!page.ok()) return Fail(page.error());
    bj::array data;
    for (const auto& v : page->data) data.push_back(Render(v));
    return List(data, "/v1/subscriptions", page->has_more);
}

Response ListCustomerSubscriptions(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {}); !s.ok()) return Fail(s.error());
    auto list = d.subscriptions->ListForCustomer(CustomerId(c.param(0)));
    if (!list.ok()) return Fail(list.error());
    bj::array data;
    for (const auto& v : *list) data.push_back(Render(v));
    return List(data, "/v1/customers/" + c.param(0) + "/subscriptions");
}

Response GetSubscription(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto view = d.subscriptions->Get(StripeSubscriptionId(c.param(0)));
    if (!view.ok()) return Fail(view.error());
    if (c.session && view->customer_id != c.session->customer.str()) {
        return Fail(NotFound("no such subscription: '" + c.param(0) + "'", "id"));
    }
    return Json(200, Render(*view));
}

Response PreviewSubscriptionChange(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto id = OwnSubscription(d, c);
    if (!id.ok()) return Fail(id.error());
    auto change = ParseChange(c.req, false);
    if (!change.ok()) return Fail(change.error());
    auto preview = d.subscriptions->PreviewChange(*id, PlanId(change->plan), change->interval, change->proration_date);
    if (!preview.ok()) return Fail(preview.error());
    return Json(200, PreviewJson(*preview));
}

Response ChangeSubscription(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto id = OwnSubscription(d, c);
    if (!id.ok()) return Fail(id.error());
    auto change = ParseChange(c.req, true);
    if (!change.ok()) return Fail(change.error());
    SubscriptionService& svc = *d.subscriptions;
    return Mutate(
        d, c, *id,
        [&](const StripeSubscriptionId& id, const std::string& key) {
            return change->at_period_end ? svc.ChangeAtPeriodEnd(id, PlanId(change->plan), change->interval, key)
                                         : svc.Change(id, PlanId(change->plan), change->interval, change->proration_date,
                                                      key);
        },
        [&](const SubscriptionView& view, bj::object& out) -> Status {
            // A downgrade below current usage deletes nothing; new usage of these meters is refused until it is
            // back under the new plan's limit. Say so in the answer.
            bj::array over;
            if (d.usage && !view.customer_id.empty()) {
                TALLY_ASSIGN_OR_RETURN(auto meters, d.usage->OverLimits(CustomerId(view.customer_id), PlanId(change->plan)));
                for (const auto& m : meters) {
                    over.push_back(bj::object{{"meter", m.meter.name}, {"current", m.current}, {"limit", *m.limit},
                                              {"mode", LimitModeName(m.meter.mode)}});
                }
            }
            out["usage_over_limit"] = std::move(over);
            return {};
        });
}

Response CancelSubscription(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto id = OwnSubscription(d, c);
    if (!id.ok()) return Fail(id.error());
    auto body = OptionalJsonBody(c.req, {"at_period_end", "prorate"});
    if (!body.ok()) return Fail(body.error());
    auto at_period_end = json::OptionalBool(*body, "at_period_end", "", true);
    if (!at_period_end.ok()) return Fail(at_period_end.error());
    auto prorate = json::OptionalBool(*body, "prorate", "", false);
    if (!prorate.ok()) return Fail(prorate.error());
    return Mutate(d, c, *id, [&](const StripeSubscriptionId& id, const std::string& key) {
        return d.subscriptions->Cancel(id, *at_period_end, *prorate, key);
    });
}

Response ResumeSubscription(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto id = OwnSubscription(d, c);
    if (!id.ok()) return Fail(id.error());
    auto body = OptionalJsonBody(c.req, {});
    if (!body.ok()) return Fail(body.error());
    return Mutate(d, c, *id, [&](const StripeSubscriptionId& id, const std::string& key) {
        return d.subscriptions->Resume(id, key);
    });
}

Response PauseSubscription(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto id = OwnSubscription(d, c);
    if (!id.ok()) return Fail(id.error());
    auto body = OptionalJsonBody(c.req, {"behavior"});
    if (!body.ok()) return Fail(body.error());
    auto behavior = json::OptionalString(*body, "behavior", "");
    if (!behavior.ok()) return Fail(behavior.error());
    const std::string chosen = behavior->empty() ? "void" : *behavior;
    return Mutate(d, c, *id, [&](const StripeSubscriptionId& id, const std::string& key) {
        return d.subscriptions->SetPauseCollection(id, chosen, key);
    });
}

Response UnpauseSubscription(const ApiDeps& d, const Call& c) {
    if (!d.subscriptions) return RouteNotFound(c.req);
    auto id = OwnSubscription(d, c);
    if (!id.ok()) return Fail(id.error());
    auto body = OptionalJsonBody(c.req, {});
    if (!body.ok()) return Fail(body.error());
    return Mutate(d, c, *id, [&](const StripeSubscriptionId& id, const std::string& key) {
        return d.subscriptions->SetPauseCollection(id, "", key);
    });
}

}  // namespace tally::http::routes
