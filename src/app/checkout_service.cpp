#include "app/checkout_service.hpp"

#include "domain/text.hpp"

namespace tally {
namespace {

Status CheckUrl(const std::string& url, const char* param) {
    if (url.size() > kRedirectUrlBytesMax) {
        return InvalidArgument(std::string(param) + " is longer than " + std::to_string(kRedirectUrlBytesMax) + " bytes",
                               param);
    }
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
        return InvalidArgument(std::string(param) + " must be an http:// or https:// URL", param);
    }
    return {};
}

}  // namespace

Result<const CatalogPrice*> PaidPrice(const Catalog& catalog, const PlanId& plan_id, const std::string& interval) {
    const Plan* plan = catalog.FindPlan(plan_id);
    if (plan == nullptr) return InvalidArgument("no such plan: " + plan_id.str(), "plan");
    if (plan->archived) {
        return WithReason(InvalidArgument("plan " + plan_id.str() + " is archived: it is no longer sold", "plan"),
                          ErrorReason::kPlanArchived);
    }
    if (interval != "month" && interval != "year") return InvalidArgument("interval must be month or year", "interval");
    auto unit = ParseIntervalUnit(interval);
    if (const CatalogPrice* p = plan->ActivePaidPrice(*unit)) return p;
    return InvalidArgument("plan " + plan_id.str() + " has no paid " + interval + "ly price", "plan");
}

Result<std::string> SalePriceId(const Catalog& catalog, const PlanId& plan_id, const CatalogPrice& price,
                                StripeApi& stripe) {
    if (price.stripe_price_id) return *price.stripe_price_id;
    // Not pushed yet. Stripe's price under this lookup key is this one, unless the key still sits on the price this
    // one replaces (a new amount whose push is pending): selling that would charge the old amount.
    if (const Plan* plan = catalog.FindPlan(plan_id)) {
        for (const auto& other : plan->prices) {
            if (!other.active && other.lookup_key == price.lookup_key) {
                return Error{ErrorCode::kUnavailable,
                             "plan " + plan_id.str() + "'s new price is not in Stripe yet (stripe_sync: pending); "
                             "retry shortly",
                             "plan", ErrorReason::kStripeSyncPending};
            }
        }
    }
    return stripe.FindPriceId(price.lookup_key);
}

Result<StripeCustomerId> CheckoutService::EnsureStripeCustomer(const CustomerId& id) {
    std::optional<CustomerRecord> customer;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(customer, tx.customers().Get(id));
        return {};
    }));
    if (!customer) return NotFound("no such customer: " + id.str(), "customer");
    if (customer->stripe_customer_id) return *customer->stripe_customer_id;
    // The idempotency key makes a retry (or a concurrent twin) get the same Stripe customer for 24 hours.
    TALLY_ASSIGN_OR_RETURN(StripeCustomerId created, stripe_.CreateCustomer(customer->email, customer->name,
                                                                            customer->external_id,
                                                                            "tally_customer_" + id.str()));
    StripeCustomerId linked = created;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto current, tx.customers().Get(id));
        if (!current) return NotFound("no such customer: " + id.str(), "customer");
        if (current->stripe_customer_id) {
            linked = *current->stripe_customer_id;
            return {};
        }
        return billing_.LinkStripeCustomer(tx, *current, created, clock_.Now(), "api:checkout");
    }));
    return linked;
}

Result<HostedSession> CheckoutService::StartCheckout(const CustomerId& customer, const PlanId& plan_id,
                                                     const std::string& interval, const std::string& success_url,
                                                     const std::string& cancel_url, std::optional<int64_t> trial_period_days,
                                                     const std::string& idempotency_key) {
    if (IsBlank(customer.str())) return InvalidArgument("customer must not be blank", "customer");
    const Catalog& catalog = billing_.catalog();
    TALLY_ASSIGN_OR_RETURN(const CatalogPrice* price, PaidPrice(catalog, plan_id, interval));
    CheckoutConfig defaults;
    {
        std::lock_guard lock(mu_);
        defaults = config_;
    }
    const std::string success = success_url.empty() ? defaults.success_url : success_url;
    const std::string cancel = cancel_url.empty() ? defaults.cancel_url : cancel_url;
    TALLY_TRY(CheckUrl(success, "success_url"));
    TALLY_TRY(CheckUrl(cancel, "cancel_url"));
    // Stripe refuses trial_period_days below 1; "no trial" is the parameter left out, never a 0 read as a default.
    if (trial_period_days && (*trial_period_days < 1 || *trial_period_days > kTrialPeriodDaysMax)) {
        return InvalidArgument("trial_period_days must be between 1 and " + std::to_string(kTrialPeriodDaysMax) +
                                   " (leave it out for no trial)",
                               "trial_period_days");
    }
    TALLY_ASSIGN_OR_RETURN(StripeCustomerId stripe_customer, EnsureStripeCustomer(customer));
    TALLY_ASSIGN_OR_RETURN(std::string price_id, SalePriceId(catalog, plan_id, *price, stripe_));
    CheckoutSessionRequest request;
    request.customer = stripe_customer;
    request.price_id = price_id;
    request.client_reference_id = customer.str();
    request.success_url = success;
    request.cancel_url = cancel;
    request.trial_period_days = trial_period_days.value_or(0);
    request.idempotency_key = idempotency_key.empty() ? "" : "tally_checkout_" + idempotency_key;
    return stripe_.CreateCheckoutSession(request);
}

Result<std::pair<std::string, std::string>> CheckoutService::ResolveRedirectUrls(const std::string& success_url,
                                                                             const std::string& cancel_url) {
    std::pair<std::string, std::string> urls;
    {
        std::lock_guard lock(mu_);
        urls = {success_url.empty() ? config_.success_url : success_url,
                cancel_url.empty() ? config_.cancel_url : cancel_url};
    }
    TALLY_TRY(CheckUrl(urls.first, "success_url"));
    TALLY_TRY(CheckUrl(urls.second, "cancel_url"));
    return urls;
}

Result<HostedSession> CheckoutService::StartPaymentCheckout(const CustomerId& customer, const CheckoutLineItem& line,
                                                            const Metadata& metadata, const std::string& success_url,
                                                            const std::string& cancel_url,
                                                            const std::string& idempotency_key) {
    CheckoutSessionRequest request;
    request.mode = "payment";
    TALLY_ASSIGN_OR_RETURN(auto urls, ResolveRedirectUrls(success_url, cancel_url));
    request.success_url = std::move(urls.first);
    request.cancel_url = std::move(urls.second);
    TALLY_ASSIGN_OR_RETURN(request.customer, EnsureStripeCustomer(customer));
    request.payment_line = line;
    request.client_reference_id = customer.str();
    request.metadata = metadata;
    request.payment_intent_metadata = metadata;
    request.idempotency_key = idempotency_key;
    return stripe_.CreateCheckoutSession(request);
}

Result<HostedSession> CheckoutService::StartPortal(const CustomerId& id, const std::string& return_url) {
    if (IsBlank(id.str())) return InvalidArgument("customer must not be blank", "customer");
    std::string url = return_url;
    if (url.empty()) {
        std::lock_guard lock(mu_);
        url = config_.portal_return_url;
    }
    TALLY_TRY(CheckUrl(url, "return_url"));
    std::optional<CustomerRecord> customer;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(customer, tx.customers().Get(id));
        return {};
    }));
    if (!customer) return NotFound("no such customer: " + id.str(), "customer");
    if (!customer->stripe_customer_id) {
        return InvalidArgument("customer " + id.str() + " has no Stripe customer yet: start a checkout first", "customer");
    }
    return stripe_.CreatePortalSession(*customer->stripe_customer_id, url);
}

Result<std::vector<PushedPrice>> PushCatalog(const Catalog& catalog, StripeApi& stripe) {
    std::vector<PushedPrice> out;
    for (const Plan& plan : catalog.plans()) {
        for (const CatalogPrice& price : plan.prices) {
            if (price.lookup_key.empty() || price.unit_amount.amount_minor() == 0) continue;
            StripePriceSpec spec{price.lookup_key,
                                 "tally_" + plan.id.str(),
                                 plan.name,
                                 price.unit_amount.amount_minor(),
                                 price.unit_amount.currency().code(),
                                 IntervalUnitName(price.interval.unit),
                                 price.interval.count};
            TALLY_ASSIGN_OR_RETURN(auto ensured, stripe.EnsurePrice(spec));
            out.push_back(PushedPrice{price.lookup_key, ensured.first, ensured.second});
        }
    }
    return out;
}

}  // namespace tally
