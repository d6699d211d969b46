#pragma once
// Subscriptions created, changed, paused and canceled through Tally's API (seed 002): each call goes to Stripe
// through the StripeApi port, and Stripe's answer is applied at once under the events' ordering rules, so the
// webhook that follows is a no-op.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"
#include "app/webhook_processor.hpp"

namespace tally {

constexpr int kSubscriptionPageSizeMax = 100;
/// Apply's re-reads from Stripe when a webhook got in between a change and its answer (see Apply).
constexpr int kReadYourWritesRoundsMax = 3;

/// What Stripe does when a trial ends and the customer has no payment method
/// (trial_settings.end_behavior.missing_payment_method): "cancel" (default), "pause" or "create_invoice".
struct SubscriptionConfig {
    std::string trial_missing_payment_method = "cancel";
};

/// Whether |behavior| is one of Stripe's missing_payment_method values.
bool IsTrialEndBehavior(const std::string& behavior);

/// A subscription as the API shows it: the record and the Tally customer it belongs to.
struct SubscriptionView {
    SubscriptionRecord subscription;
    std::string customer_id;  // Tally's customer id, "" when Stripe's customer is unknown to Tally
};

struct SubscriptionPage {
    std::vector<SubscriptionView> data;
    bool has_more = false;
};

/// POST /v1/subscriptions.
struct SubscriptionCreateInput {
    CustomerId customer;
    PlanId plan;
    std::string interval = "month";            // "month" | "year"
    std::optional<int64_t> trial_period_days;  // 1..kTrialPeriodDaysMax; nullopt: no trial
    std::string payment_method;                // pm_... attached to the customer; "" uses its default
};

/// What moving to another price would cost, as Stripe's invoices/create_preview computed it.
struct ChangePreview {
    SubscriptionView subscription;
    std::string plan;
    std::string interval;
    int64_t proration_date = 0;  // pass it to Change to be invoiced exactly this
    std::string currency;
    std::vector<StripeInvoiceLine> lines;  // the proration lines (unused time credited, remaining time charged)
    int64_t amount_due_minor = 0;          // invoiced and charged at once by the change
    int64_t next_invoice_total_minor = 0;  // the renewal at the new price (catalog amount x quantity, before tax)
    Timestamp next_invoice_at;             // when that renewal is invoiced
};

/// Thread-safe. Errors: kNotFound (param "id" or "customer") for an unknown subscription or customer;
/// kInvalidArgument naming the field; kConflict reason kSubscriptionNotChangeable when the subscription's status
/// does not allow the change; kPaymentRequired (reason kPaymentMethodRequired, or kCardDeclined from Stripe);
/// Stripe's errors otherwise (kUnavailable when it cannot be reached: then nothing changed in Tally).
class SubscriptionService {
public:
    SubscriptionService(Store& store, BillingService& billing, CheckoutService& checkout, WebhookProcessor& processor,
                        StripeApi& stripe, const Clock& clock, SubscriptionConfig config)
        : store_(store), billing_(billing), checkout_(checkout), processor_(processor), stripe_(stripe),
          clock_(clock), config_(std::move(config)) {}

    /// Starts a subscription. With a trial and no card it starts `trialing`; without a trial the customer needs a
    /// payment method (|input.payment_method| or the Stripe customer's default), else kPaymentRequired reason
    /// kPaymentMethodRequired (use Checkout). A declined first payment creates nothing. |stripe_key| (derived
    /// from the caller's Idempotency-Key, "" without one) makes a retry return the same Stripe subscription.
    Result<SubscriptionView> Create(const SubscriptionCreateInput& input, const std::string& stripe_key);
    Result<SubscriptionView> Get(const StripeSubscriptionId& id);
    /// The customer's subscriptions, oldest first; kNotFound for an unknown customer.
    Result<std::vector<SubscriptionView>> ListForCustomer(const CustomerId& customer);
    /// Newest first. kInvalidArgument for a bad status or an unknown starting_after.
    Result<SubscriptionPage> List(SubscriptionListFilter filter);

    /// The invoice moving to |plan|'s |interval| price now would produce, prorated as of |proration_date|
    /// (default: the subscription's now, its test clock's time in test mode, inside the current period).
    Result<ChangePreview> PreviewChange(const StripeSubscriptionId& id, const PlanId& plan, const std::string& interval,
                                        std::optional<int64_t> proration_date);
    /// Moves the subscription to |plan|'s |interval| price now, invoicing the proration at once
    /// (proration_behavior=always_invoice): with the preview's |proration_date| the invoice equals the preview.
    /// A pending change at period end is dropped first.
    Result<SubscriptionView> Change(const StripeSubscriptionId& id, const PlanId& plan, const std::string& interval,
                                    std::optional<int64_t> proration_date, const std::string& stripe_key);
    /// Moves the subscription to |plan|'s |interval| price when its current period ends, without proration,
    /// through a Stripe subscription schedule (the returned subscription's pending_change shows it; the period's
    /// end turns it into the new price). Asking for the price it is on drops a pending change (releases the
    /// schedule). kConflict while a cancel at period end is pending.
    Result<SubscriptionView> ChangeAtPeriodEnd(const StripeSubscriptionId& id, const PlanId& plan,
                                               const std::string& interval, const std::string& stripe_key);
    /// |at_period_end|: cancel_at_period_end (access stays until the period ends); else at once, |prorate|
    /// crediting the unused time. A pending change at period end is dropped first.
    Result<SubscriptionView> Cancel(const StripeSubscriptionId& id, bool at_period_end, bool prorate,
                                    const std::string& stripe_key);
    /// Undoes a pending cancel_at_period_end. kConflict when none is pending.
    Result<SubscriptionView> Resume(const StripeSubscriptionId& id, const std::string& stripe_key);
    /// Stripe's pause_collection: |behavior| "keep_as_draft" | "mark_uncollectible" | "void"; "" unpauses.
    Result<SubscriptionView> SetPauseCollection(const StripeSubscriptionId& id, const std::string& behavior,
                                                const std::string& stripe_key);

private:
    /// The stored subscription and its customer; kNotFound when Tally has none with |id|.
    Result<SubscriptionView> Load(const StripeSubscriptionId& id);
    /// Applies Stripe's answer |data| (stored stamp read before the call: |read_before|).
    Result<SubscriptionView> Apply(const StripeSubscriptionData& data, const std::optional<EventStamp>& read_before,
                                   const std::string& cause);
    /// The open schedule of subscription |id| Tally knows of, with its stored stamp; nullopt when none.
    Result<std::optional<SubscriptionScheduleRecord>> OpenSchedule(const StripeSubscriptionId& id);
    /// Releases |s|'s open schedule, if it has one, so no phase changes it any more; returns the subscription as
    /// stored afterwards (|s| itself when there was none).
    Result<SubscriptionView> DropPendingChange(const SubscriptionView& s, const std::string& stripe_key,
                                               const std::string& cause);
    /// Applies a schedule Stripe answered (stored stamp read before the call: |read_before|).
    /// |known_prices| as in WebhookProcessor::ApplyScheduleResponse.
    Result<SubscriptionView> ApplySchedule(const StripeScheduleData& data, const std::optional<EventStamp>& read_before,
                                           const std::vector<std::pair<std::string, std::string>>& known_prices,
                                           const SubscriptionView& fallback, const std::string& cause);
    /// A plan change now, checked: the subscription (live, not already on the price), the target price and the
    /// proration date (as ProrationDate).
    struct PlanMove {
        SubscriptionView view;
        std::pair<std::string, const CatalogPrice*> price;
        int64_t proration_date = 0;
    };
    Result<PlanMove> PrepareMove(const StripeSubscriptionId& id, const PlanId& plan, const std::string& interval,
                                 std::optional<int64_t> proration_date);
    /// The Stripe price id of |plan|'s paid |interval| price, and the catalog price.
    Result<std::pair<std::string, const CatalogPrice*>> StripePrice(const PlanId& plan, const std::string& interval);
    /// |requested|, or the subscription's now clamped into its current period; kInvalidArgument outside it.
    Result<int64_t> ProrationDate(const SubscriptionRecord& s, std::optional<int64_t> requested);

    Store& store_;
    BillingService& billing_;
    CheckoutService& checkout_;
    WebhookProcessor& processor_;
    StripeApi& stripe_;
    const Clock& clock_;
    const SubscriptionConfig config_;
};

}  // namespace tally
