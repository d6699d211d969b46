#pragma once
// The billing aggregate of the Store port: Stripe's subscriptions, invoices, payment attempts and payments as Tally
// last applied them. Reached from a transaction as StoreTx::billing().
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "app/ports.hpp"
#include "domain/event_order.hpp"
#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/subscription.hpp"
#include "domain/time.hpp"

namespace tally {

/// What a subscription schedule changes when the subscription's current period ends (from PhaseChangeAt).
struct PendingChange {
    std::string schedule_id;  // sub_sched_...
    std::string price_id;     // "" for a phase Tally cannot name (several items)
    std::string plan_id;      // "" when the price matches no catalog plan
    int64_t quantity = 1;
    Timestamp effective_at;   // the current period's end
    bool operator==(const PendingChange&) const = default;
};

/// A subscription as stored: Stripe's snapshot plus what Tally derives from it.
struct SubscriptionRecord : StripeSubscriptionData {
    std::string plan_id;  // empty when the price matches no catalog plan
    EventStamp stamp;     // the event whose snapshot this is
    /// Derived, not Stripe's: the change an open schedule of this subscription makes at the period's end.
    std::optional<PendingChange> pending_change;
};

/// A subscription schedule as the last applied snapshot (event or API answer) left it.
struct SubscriptionScheduleRecord : StripeScheduleData {
    EventStamp stamp;
};

struct InvoiceRecord {
    std::string id;
    StripeCustomerId stripe_customer_id;
    std::string subscription_id;
    std::string status;
    int64_t amount_due_minor = 0;
    int64_t amount_paid_minor = 0;
    std::string currency;
    EventStamp stamp;
    Timestamp created;                                 // Stripe's invoice.created
    int64_t attempt_count = 0;                         // payment attempts so far (Stripe's attempt_count)
    std::optional<Timestamp> next_payment_attempt;     // when Stripe retries next (Smart Retries); none when done
    std::string hosted_invoice_url;                    // Stripe's hosted page for the invoice, "" when none
    std::string number;                                // Stripe's invoice number, "" while a draft
};

/// Which invoices or payments a list returns: every given field must match; newest first (created, then id).
struct BillingListFilter {
    std::optional<StripeCustomerId> stripe_customer_id;
    std::optional<std::string> status;
    std::optional<Timestamp> created_gte;
    std::optional<std::string> starting_after;  // the last id of the previous page (it must exist)
    int limit = 100;
};

/// Which subscriptions a list returns: every given field must match; newest first (created, then id).
struct SubscriptionListFilter {
    std::optional<std::string> status;            // Stripe's spelling ("active", "trialing", ...)
    std::optional<std::string> plan_id;
    std::optional<std::string> starting_after;    // the last id of the previous page (it must exist)
    int limit = 100;
};

/// One invoice payment outcome (invoice.payment_failed / invoice.paid), kept to find the current dunning run.
struct PaymentAttempt {
    std::string event_id;
    std::string invoice_id;
    std::string subscription_id;
    Timestamp at;
    bool succeeded = false;
};

struct PaymentRecord {
    std::string id;
    std::string object;
    StripeCustomerId stripe_customer_id;
    int64_t amount_minor = 0;
    int64_t amount_refunded_minor = 0;
    std::string currency;
    std::string status;
    EventStamp stamp;
    Timestamp created;            // Stripe's created
    std::string failure_message;  // why the last attempt failed (last_payment_error.message / failure_message)
};

/// Reads and writes of subscriptions, invoices and payments inside one transaction. Not thread-safe.
class BillingStoreTx {
public:
    virtual ~BillingStoreTx() = default;
    virtual Result<std::optional<SubscriptionRecord>> GetSubscription(const StripeSubscriptionId& id) = 0;
    /// Inserts, or replaces every field of the subscription with that id.
    virtual Status UpsertSubscription(const SubscriptionRecord& subscription) = 0;
    /// Oldest created first.
    virtual Result<std::vector<SubscriptionRecord>> ListSubscriptionsByStripeCustomer(const StripeCustomerId& id) = 0;
    /// At most |filter.limit| subscriptions matching |filter|, newest first.
    virtual Result<std::vector<SubscriptionRecord>> ListSubscriptions(const SubscriptionListFilter& filter) = 0;

    /// The schedule with Stripe id |id| (sub_sched_...), nullopt when none is stored.
    virtual Result<std::optional<SubscriptionScheduleRecord>> GetSchedule(const std::string& id) = 0;
    /// Inserts, or replaces every field of the schedule with that id.
    virtual Status UpsertSchedule(const SubscriptionScheduleRecord& schedule) = 0;
    /// Remembers that Stripe price |price_id| carries |lookup_key| (Stripe's phases and some events name prices by
    /// id only). Keeps the first lookup key recorded for an id.
    virtual Status RememberPriceLookupKey(const std::string& price_id, const std::string& lookup_key) = 0;
    /// The lookup key remembered for |price_id|, else the one a stored subscription on that price carries; ""
    /// when neither knows it.
    virtual Result<std::string> PriceLookupKey(const std::string& price_id) = 0;
    /// The schedules of subscription |id|, oldest created first.
    virtual Result<std::vector<SubscriptionScheduleRecord>> ListSchedulesForSubscription(const StripeSubscriptionId& id) = 0;

    virtual Result<std::optional<InvoiceRecord>> GetInvoice(const std::string& id) = 0;
    virtual Status UpsertInvoice(const InvoiceRecord& invoice) = 0;
    /// Records |attempt| once: a second one with the same event_id is ignored.
    virtual Status InsertPaymentAttempt(const PaymentAttempt& attempt) = 0;
    /// Oldest first.
    virtual Result<std::vector<PaymentAttempt>> ListPaymentAttempts(const std::string& subscription_id) = 0;
    virtual Result<std::optional<PaymentRecord>> GetPayment(const std::string& id) = 0;
    virtual Status UpsertPayment(const PaymentRecord& payment) = 0;
    /// At most |filter.limit| invoices matching |filter|, newest first.
    virtual Result<std::vector<InvoiceRecord>> ListInvoices(const BillingListFilter& filter) = 0;
    /// At most |filter.limit| payments matching |filter|, newest first.
    virtual Result<std::vector<PaymentRecord>> ListPayments(const BillingListFilter& filter) = 0;
};

}  // namespace tally
