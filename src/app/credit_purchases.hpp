#pragma once
// Buying credit bundles (issue 13, item 5): off-session with the customer's saved card, or through Stripe Checkout
// in payment mode. A purchase is recorded (pending) before Stripe is asked to charge, under the caller's id, so a
// retry or a crash never charges twice (the PaymentIntent's idempotency key derives from it) and the payment's
// webhook can always find what it pays for (metadata.tally_purchase). Credits are granted only when the payment
// succeeds — from the API's answer or from payment_intent.succeeded / checkout.session.completed (paid), whichever
// comes first — and once (the grant's transfer id is "purchase:<id>"). A refund (charge.refunded, full or partial)
// takes back the unused part of the bundle's credits, never more, and records the part already spent.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "app/checkout_service.hpp"
#include "app/credit_service.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"
#include "domain/credits.hpp"

namespace tally {

class EventOutbox;

/// POST /v1/credits/purchases and POST /v1/credits/checkout_sessions.
struct CreditPurchaseInput {
    CustomerId customer;
    std::string bundle;
    std::string id;  // the purchase's (its idempotency key); checkout: "" makes one ("cpur_...")
    std::string success_url;  // checkout only; "" takes the configured default
    std::string cancel_url;
    std::string actor;
};

/// POST /v1/customers/{id}/auto_purchase: unset fields keep their value (a first call needs threshold and bundle).
struct AutoPurchaseInput {
    std::optional<bool> enabled;
    std::optional<bool> paused;
    std::optional<int64_t> threshold;
    std::optional<std::string> bundle;
    std::optional<int64_t> max_per_month;
    std::string actor;
};

/// A customer's auto-purchase as the API shows it.
struct AutoPurchaseState {
    AutoPurchaseRecord settings;
    int64_t purchases_this_month = 0;  // auto-purchases pending or paid since the calendar month began (UTC)
};

struct CreditPurchaseOutcome {
    CreditPurchaseRecord purchase;
    std::optional<CreditGrantRecord> grant;  // once paid
    bool replayed = false;
};

/// Thread-safe.
class CreditPurchaseService {
public:
    CreditPurchaseService(Store& store, CreditService& credits, CheckoutService& checkout, StripeApi& stripe,
                          const Clock& clock, std::vector<CreditBundle> bundles, EventOutbox* outbox)
        : store_(store), credits_(credits), checkout_(checkout), stripe_(stripe), clock_(clock),
          bundles_(std::move(bundles)), outbox_(outbox) {}

    /// The catalog's bundles, in its order.
    const std::vector<CreditBundle>& bundles() const { return bundles_; }

    /// Buys |in.bundle| for |in.customer| with the saved card (Stripe's default payment method), off-session.
    /// Succeeded: the purchase with its grant. The same id again answers as the first time (a pending one is
    /// resumed: Stripe is asked again under the same idempotency key, or its PaymentIntent read once known, so it is
    /// charged at most once). Errors, with
    /// nothing written: kInvalidArgument ("id"), kNotFound ("bundle", "customer"), kPaymentRequired
    /// kPaymentMethodRequired ("customer") without a saved card, idempotency_error ("id") for the id with another
    /// customer or bundle. A declined card (or one that needs the customer to authenticate) records the purchase
    /// as failed and answers kPaymentRequired kCardDeclined with Stripe's message; kUnavailable when Stripe cannot
    /// be reached (the purchase stays pending; its webhook or a retry settles it).
    Result<CreditPurchaseOutcome> Purchase(const CreditPurchaseInput& in);
    /// A Checkout Session (mode payment) for |in.bundle|: the purchase, pending, with its checkout_session and
    /// checkout_url. Paid later, on the page. Errors as Purchase's (no saved card needed), and kInvalidArgument for
    /// the URLs as CheckoutService refuses them.
    Result<CreditPurchaseOutcome> StartCheckout(const CreditPurchaseInput& in);
    /// Refunds |amount| (minor units; nullopt: all that is left) of paid purchase |id| through Stripe and takes
    /// back its credits at once, as charge.refunded does (the webhook that follows changes nothing more). |key|
    /// names the Stripe idempotency key ("" for none: a retry may refund again). Errors: kNotFound ("id");
    /// kInvalidArgument ("id") for a purchase not paid or already refunded in full, ("amount") outside 1..what is
    /// left; Stripe's errors.
    Result<CreditPurchaseOutcome> Refund(const std::string& id, std::optional<int64_t> amount, const std::string& key,
                                         const std::string& actor);
    /// kNotFound ("id").
    Result<CreditPurchaseOutcome> Get(const std::string& id);
    /// The customer's purchases, newest first. kNotFound ("id") for an unknown customer, ("starting_after") for a
    /// purchase not of this customer.
    Result<std::vector<CreditPurchaseRecord>> List(const CustomerId& customer,
                                                   const std::optional<std::string>& starting_after, int limit);

    /// The customer's auto-purchase (disabled, with no bundle, when never set). kNotFound ("id").
    Result<AutoPurchaseState> GetAutoPurchase(const CustomerId& customer);
    /// Changes it, audited (auto_purchase_updated). Enabling one that disabled itself clears its failures. Errors:
    /// kNotFound ("id"; "bundle" for a bundle not on sale), kInvalidArgument ("threshold" outside 0..2^53,
    /// "max_per_month" outside 1..kAutoPurchaseMaxPerMonthMax), parameter_missing ("threshold", "bundle") on a first
    /// call without them.
    Result<AutoPurchaseState> SetAutoPurchase(const CustomerId& customer, const AutoPurchaseInput& in);
    /// An admin's forced auto-purchase: starts one now whatever the balance (paused or disabled too) and charges it
    /// at once; the one in flight instead, if any. kInvalidArgument ("customer") when auto-purchase was never set;
    /// kConflict auto_purchase_limit_reached when max_per_month are pending or paid this month.
    Result<CreditPurchaseOutcome> ForceAutoPurchase(const CustomerId& customer, const std::string& actor);
    /// Called inside the transaction of each deduction and hold (CreditService's spend listener), with the
    /// balance it left: when that is under the customer's threshold, auto-purchase is enabled and not paused, no
    /// purchase is in flight and fewer than max_per_month were made this month, one purchase starts (pending, due
    /// now). Deductions of a customer are serialized on every node, so however many race past the threshold exactly
    /// one starts. The charge itself happens after the commit, in RunDueAutoPurchases.
    Status OnSpent(StoreTx& tx, const CustomerId& customer, const CreditBalance& after);
    /// Charges the auto-purchases due (on any node: each attempt is claimed by one, kAutoPurchaseLeaseSeconds),
    /// with the customer's saved card off-session and a Stripe idempotency key per attempt. Paid: granted, and
    /// credits.auto_purchase_succeeded. Declined: retried after AutoPurchaseRetryDelay; the
    /// kAutoPurchaseFailuresMax-th failure fails the purchase and disables auto-purchase with the reason. Each
    /// outcome is an event and a notification. Stripe unreachable: tried again later, not counted. Returns how
    /// many attempts were made.
    Result<int> RunDueAutoPurchases();
    /// Called after a spend started a purchase, so the caller's worker runs RunDueAutoPurchases soon.
    void SetWakeup(std::function<void()> wakeup) { wakeup_ = std::move(wakeup); }

    /// Called inside the transaction that applied a Stripe event (WebhookProcessor's payment listener):
    /// payment_intent.succeeded and checkout.session.completed (payment_status paid) complete their purchase,
    /// payment_intent.payment_failed fails a pending one, charge.refunded completes one not yet completed (a
    /// refunded charge was paid) and takes back its credits. Events of no purchase (no metadata.tally_purchase and
    /// no known PaymentIntent) change nothing; a payment whose amount or currency is not the purchase's is audited
    /// and changes nothing.
    Status OnStripeEvent(StoreTx& tx, const DecodedEvent& event);

private:
    const CreditBundle* FindBundle(const std::string& id) const;
    /// Validates |in| and reads what exists: the purchase under |in.id| (replay or resume) and the customer.
    Result<std::optional<CreditPurchaseRecord>> Prepare(const CreditPurchaseInput& in, const std::string& request);
    /// Inserts |p| unless a twin did first (then returns that one).
    Result<CreditPurchaseRecord> Record(const CreditPurchaseRecord& p);
    /// Paid: grants the bundle (once), status succeeded, credits.purchase_succeeded. A purchase already paid is left.
    Status Complete(StoreTx& tx, CreditPurchaseRecord& p, const std::string& payment_intent, const std::string& cause);
    /// Failed: status failed with Stripe's code and message, credits.purchase_failed. Only from pending.
    Status Fail(StoreTx& tx, CreditPurchaseRecord& p, const std::string& code, const std::string& message,
                const std::string& cause);
    Result<CreditPurchaseOutcome> OutcomeOf(StoreTx& tx, const CreditPurchaseRecord& p, bool replayed);
    /// OutcomeOf |p| read in its own transaction, as a replay.
    Result<CreditPurchaseOutcome> Replay(const CreditPurchaseRecord& p);
    /// Records a pending auto-purchase of |a|'s bundle, due now, in |a| and the store.
    Result<CreditPurchaseRecord> StartAuto(StoreTx& tx, AutoPurchaseRecord& a, const std::string& cause);
    /// One claimed attempt of |a|'s pending purchase: the charge and its outcome.
    Status Attempt(const AutoPurchaseRecord& a);
    /// A failed attempt: backoff, or after kAutoPurchaseFailuresMax the purchase failed and auto-purchase disabled.
    Status RecordAutoFailure(StoreTx& tx, AutoPurchaseRecord& a, CreditPurchaseRecord& p, const std::string& code,
                             const std::string& message);
    /// credits.auto_purchase_* with the settings and |p|, and the matching notification.
    Status EmitAuto(StoreTx& tx, const std::string& type, const AutoPurchaseRecord& a, const CreditPurchaseRecord& p,
                    const std::string& message);
    Result<int64_t> PurchasesThisMonth(StoreTx& tx, const CustomerId& customer);
    Status Emit(StoreTx& tx, const std::string& type, const CreditPurchaseRecord& p);
    /// |charge| (of |p|'s payment) refunded up to its amount_refunded: completes |p| if its payment had not been
    /// heard of, takes back credits, stores |p| and emits credits.purchase_refunded when something moved.
    Status ApplyRefund(StoreTx& tx, CreditPurchaseRecord& p, const StripePaymentData& charge, const std::string& cause);

    Store& store_;
    CreditService& credits_;
    CheckoutService& checkout_;
    StripeApi& stripe_;
    const Clock& clock_;
    std::vector<CreditBundle> bundles_;
    EventOutbox* outbox_;
    std::function<void()> wakeup_;
};

}  // namespace tally
