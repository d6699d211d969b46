#pragma once
// Sending customers to Stripe: Checkout for a plan, the Customer Portal, and pushing the catalog's prices.
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "app/billing_service.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"

namespace tally {

constexpr size_t kRedirectUrlBytesMax = 2048;  // success_url, cancel_url, return_url
constexpr int64_t kTrialPeriodDaysMax = 730;   // Stripe's limit on trial_period_days

/// Where Stripe sends the customer back when the caller names no URL.
struct CheckoutConfig {
    std::string success_url;  // may contain {CHECKOUT_SESSION_ID}
    std::string cancel_url;
    std::string portal_return_url;
};

/// One catalog price after `PushCatalog`.
struct PushedPrice {
    std::string lookup_key;
    std::string price_id;
    bool created = false;
};

/// Makes sure Stripe has every paid price of |catalog| under its lookup key, creating missing products (id
/// "tally_<plan>") and prices; returns one entry per paid price. Stripe's errors as StripeApi returns them.
Result<std::vector<PushedPrice>> PushCatalog(const Catalog& catalog, StripeApi& stripe);

/// |plan|'s paid price for |interval| ("month" | "year"): kInvalidArgument naming "plan" for an unknown or free
/// plan or one without such an active price (kPlanArchived for an archived plan), "interval" for another interval.
Result<const CatalogPrice*> PaidPrice(const Catalog& catalog, const PlanId& plan, const std::string& interval);
/// The Stripe price id to sell |price| (of |plan|) at: the one pushed, else Stripe's under its lookup key.
/// kUnavailable (kStripeSyncPending) while a new amount's push is pending (the key still names the old price).
Result<std::string> SalePriceId(const Catalog& catalog, const PlanId& plan, const CatalogPrice& price, StripeApi& stripe);

/// Use cases that start a Stripe-hosted flow. The outcome (a subscription, a changed plan) arrives later as
/// webhooks; nothing here changes a role. Thread-safe.
class CheckoutService {
public:
    CheckoutService(Store& store, BillingService& billing, StripeApi& stripe, const Clock& clock, CheckoutConfig config)
        : store_(store), billing_(billing), stripe_(stripe), clock_(clock), config_(std::move(config)) {}

    /// Replaces the default return URLs (set once the server knows its address).
    void SetDefaults(CheckoutConfig config) {
        std::lock_guard lock(mu_);
        config_ = std::move(config);
    }
    /// A Checkout Session subscribing |customer| to |plan|'s |interval| ("month" | "year") price. Creates and
    /// links the Stripe customer on first use. Empty URLs take the configured defaults. kNotFound for an unknown
    /// customer; kInvalidArgument naming the field for an unknown or free plan, an interval the plan has no
    /// price for, a URL that is not http(s) or is longer than kRedirectUrlBytesMax, or trial days outside
    /// 1..kTrialPeriodDaysMax (nullopt: no trial); Stripe's errors otherwise (kUnavailable when it cannot be
    /// reached).
    Result<HostedSession> StartCheckout(const CustomerId& customer, const PlanId& plan, const std::string& interval,
                                        const std::string& success_url, const std::string& cancel_url,
                                        std::optional<int64_t> trial_period_days, const std::string& idempotency_key);
    /// The success and cancel URLs a session would use (the defaults for empty ones). kInvalidArgument naming
    /// "success_url" / "cancel_url" for one that is not http(s) or is longer than kRedirectUrlBytesMax.
    Result<std::pair<std::string, std::string>> ResolveRedirectUrls(const std::string& success_url,
                                                                   const std::string& cancel_url);
    /// A Checkout Session in payment mode for |line| (a credit bundle), |metadata| on the session and on its
    /// PaymentIntent. Creates and links the Stripe customer on first use; empty URLs take the configured defaults.
    /// kInvalidArgument ("success_url", "cancel_url") for a URL as StartCheckout refuses; kNotFound ("customer");
    /// Stripe's errors.
    Result<HostedSession> StartPaymentCheckout(const CustomerId& customer, const CheckoutLineItem& line,
                                               const Metadata& metadata, const std::string& success_url,
                                               const std::string& cancel_url, const std::string& idempotency_key);
    /// A Customer Portal session for |customer|. kNotFound for an unknown customer; kInvalidArgument
    /// (param "customer") when it has no Stripe customer yet, or for a bad return_url.
    Result<HostedSession> StartPortal(const CustomerId& customer, const std::string& return_url);
    /// PushCatalog for this service's catalog.
    Result<std::vector<PushedPrice>> PushCatalog() { return tally::PushCatalog(billing_.catalog(), stripe_); }
    /// The customer's Stripe customer, created and linked on first use. Concurrent first calls create one Stripe
    /// customer (the idempotency key "tally_customer_<id>"), and the first link wins. kNotFound (param
    /// "customer") for an unknown customer; Stripe's errors.
    Result<StripeCustomerId> EnsureStripeCustomer(const CustomerId& id);

private:

    Store& store_;
    BillingService& billing_;
    StripeApi& stripe_;
    const Clock& clock_;
    std::mutex mu_;
    CheckoutConfig config_;
};

}  // namespace tally
