#pragma once
// Ports the use cases need that are not the store: time, Stripe event decoding, signature checks.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "domain/event_order.hpp"
#include "domain/ids.hpp"
#include "domain/profile.hpp"
#include "domain/result.hpp"
#include "domain/subscription.hpp"
#include "domain/time.hpp"

namespace tally {

/// The source of "now". Implementations are thread-safe.
class Clock {
public:
    virtual ~Clock() = default;
    virtual Timestamp Now() const = 0;
    /// Unix milliseconds, for schedules finer than a second (event deliveries); defaults to Now() in ms.
    virtual int64_t NowMs() const { return Now().unix_seconds() * 1000; }
};

/// Hashing and randomness for secrets Tally issues (API keys). Implemented over OpenSSL. Thread-safe.
class SecretHasher {
public:
    virtual ~SecretHasher() = default;
    /// Lowercase hex SHA-256 of |data|.
    virtual std::string Sha256Hex(std::string_view data) const = 0;
    /// |bytes| bytes from a CSPRNG, hex-encoded.
    virtual std::string RandomHex(size_t bytes) const = 0;
    /// Compares two secrets' digests in time independent of where they differ.
    virtual bool Equal(std::string_view a, std::string_view b) const = 0;
    /// Lowercase hex HMAC-SHA256 of |message| keyed with the bytes of |key| (how Stripe signs webhooks).
    virtual std::string HmacSha256Hex(std::string_view key, std::string_view message) const = 0;
};

/// What Tally counts about itself for /metrics. Implementations are thread-safe and cheap enough for every
/// request; NullMetrics discards everything. Label values are from small fixed sets (never ids).
class Metrics {
public:
    virtual ~Metrics() = default;
    /// A webhook delivery answered: |outcome| recorded | duplicate | rejected; |reason| for rejected ones
    /// (signature, malformed, too_large, unavailable), else "".
    virtual void WebhookReceived(std::string_view outcome, std::string_view reason) = 0;
    /// An event processed in a committed transaction: applied | stale | ignored | failed, |lag_seconds| after it was
    /// received.
    virtual void WebhookProcessed(std::string_view outcome, int64_t lag_seconds) = 0;
    /// A write transaction committed (or failed to) after |seconds|.
    virtual void StoreCommit(double seconds, bool ok) = 0;
    /// An HTTP request answered: |route| is a template ("/v1/customers/{id}"), never the raw path.
    virtual void HttpRequest(std::string_view route, std::string_view method, int status, double seconds) = 0;
    /// A call to Stripe's API finished: |outcome| ok | client_error | server_error | network_error.
    virtual void StripeCall(std::string_view method, std::string_view outcome) = 0;
    /// An attempt to deliver one of Tally's events to an app endpoint was recorded: |outcome| delivered | retrying
    /// | failed (no retry left); |attempt_seconds| the HTTP round trip; |age_seconds| from the event's commit to
    /// now (what a receiver waited for it).
    virtual void EventDeliveryAttempt(std::string_view outcome, double attempt_seconds, double age_seconds) = 0;
};

/// Metrics that go nowhere (tests, tools).
class NullMetrics final : public Metrics {
public:
    void WebhookReceived(std::string_view, std::string_view) override {}
    void WebhookProcessed(std::string_view, int64_t) override {}
    void StoreCommit(double, bool) override {}
    void HttpRequest(std::string_view, std::string_view, int, double) override {}
    void StripeCall(std::string_view, std::string_view) override {}
    void EventDeliveryAttempt(std::string_view, double, double) override {}
    static NullMetrics& Instance() {
        static NullMetrics metrics;
        return metrics;
    }
};

/// A Stripe customer as carried by customer.* events.
struct StripeCustomerData {
    StripeCustomerId id;
    std::string email;
    std::string name;
    std::string external_id;  // metadata.external_id: the app's user id
    bool deleted = false;
    /// customer.updated: whether data.previous_attributes names email / name, i.e. whether this change in Stripe
    /// touched them. Other events (created, deleted, or an update without previous_attributes) carry the whole
    /// profile: both true.
    bool email_changed = true;
    bool name_changed = true;
};

/// A Stripe subscription (first item's price decides the plan), as carried by customer.subscription.* events.
struct StripeSubscriptionData {
    StripeSubscriptionId id;
    StripeCustomerId customer;
    SubscriptionStatus status = SubscriptionStatus::kIncomplete;
    std::string price_id;
    std::string price_lookup_key;
    BillingInterval interval;
    int64_t unit_amount_minor = 0;
    std::string currency;
    int64_t quantity = 1;
    Timestamp current_period_start;
    Timestamp current_period_end;
    bool cancel_at_period_end = false;
    std::optional<Timestamp> trial_end;
    std::optional<Timestamp> canceled_at;
    Timestamp created;
    std::string pause_collection;  // pause_collection.behavior ("keep_as_draft", ...); "" while Stripe collects
};

/// A Stripe invoice, as carried by invoice.* events.
struct StripeInvoiceData {
    std::string id;
    StripeCustomerId customer;
    std::string subscription_id;  // top-level `subscription` or parent.subscription_details.subscription
    std::string status;
    int64_t amount_due_minor = 0;
    int64_t amount_paid_minor = 0;
    std::string currency;
    std::string billing_reason;
    int64_t attempt_count = 0;
    std::optional<Timestamp> next_payment_attempt;
    Timestamp created;
    std::string hosted_invoice_url;
    std::string number;
};

/// A completed Checkout Session.
struct StripeCheckoutData {
    std::string id;
    StripeCustomerId customer;
    std::string subscription_id;
    std::string client_reference_id;
    std::string external_id;  // metadata.external_id
    std::string mode;
    std::string payment_status;
    std::string payment_intent;  // mode=payment: the PaymentIntent that paid it
    std::string purchase;        // metadata.tally_purchase: the credit purchase it pays for, "" for others
};

/// A payment_intent or charge.
struct StripePaymentData {
    std::string id;
    std::string object;  // "payment_intent" or "charge"
    StripeCustomerId customer;
    int64_t amount_minor = 0;
    int64_t amount_refunded_minor = 0;
    std::string currency;
    std::string status;
    Timestamp created;
    std::string failure_message;  // payment_intent: last_payment_error.message; charge: failure_message
    std::string failure_code;     // payment_intent: last_payment_error.code; charge: failure_code
    std::string payment_intent;   // charge: the PaymentIntent it belongs to; payment_intent: its own id
    std::string purchase;         // metadata.tally_purchase: the credit purchase it pays for, "" for others
};

/// A Stripe subscription schedule (subscription_schedule.* events and the schedule API's answers): the phases
/// that change a subscription at period boundaries.
struct StripeScheduleData {
    std::string id;                     // sub_sched_...
    StripeSubscriptionId subscription;  // the subscription it manages (released_subscription once let go)
    std::string status;                 // not_started | active | completed | released | canceled
    std::vector<SchedulePhase> phases;  // one item per phase (others are not Tally's and read as none)
    Timestamp created;
};

/// A verified Stripe event, decoded into the fields Tally acts on.
struct DecodedEvent {
    StripeEventId id;
    std::string type;
    Timestamp created;
    bool livemode = false;
    std::string object_type;  // data.object.object
    std::string object_id;    // data.object.id
    std::string_view payload;  // the raw event JSON; valid only while the decoded text lives
    std::variant<std::monostate, StripeCustomerData, StripeSubscriptionData, StripeInvoiceData, StripeCheckoutData,
                 StripePaymentData, StripeScheduleData>
        object;
};

/// The envelope fields needed to record an event before it is processed.
struct EventEnvelope {
    StripeEventId id;
    std::string type;
    Timestamp created;
};

/// Decodes Stripe event JSON. Thread-safe.
class EventDecoder {
public:
    virtual ~EventDecoder() = default;
    /// id, type and created only; kInvalidArgument naming the missing or mistyped field.
    virtual Result<EventEnvelope> DecodeEnvelope(std::string_view payload) const = 0;
    /// Full decode; kInvalidArgument naming the field when a handled type's object is malformed.
    virtual Result<DecodedEvent> Decode(std::string_view payload) const = 0;
    /// The ordering rule's chain evidence between two events about one object (only needed when they share a
    /// second, so kept apart from Decode): {a follows b, b follows a}, each per FollowsFrom over the fields
    /// its previous_attributes name. kInvalidArgument if either payload is not JSON.
    virtual Result<std::pair<bool, bool>> ChainEvidence(std::string_view a, std::string_view b) const = 0;
};

/// Verifies a Stripe-Signature header over the raw body. Thread-safe.
class WebhookVerifier {
public:
    virtual ~WebhookVerifier() = default;
    /// kInvalidArgument with stripe-node's wording when the header is missing, malformed, matches no
    /// configured secret, or its timestamp is outside the tolerance relative to |now|.
    virtual Status Verify(std::string_view payload, std::string_view signature_header, Timestamp now) const = 0;
};

/// A Stripe-hosted page Tally sends a customer to (Checkout or the Customer Portal).
struct HostedSession {
    std::string id;   // cs_... or bps_...
    std::string url;  // where to send the customer's browser
};

/// A one-time line item priced inline (Stripe's line_items[].price_data), quantity 1.
struct CheckoutLineItem {
    std::string product_name;
    int64_t unit_amount_minor = 0;
    std::string currency;
};

/// What a Checkout Session is made of: a subscription to |price_id| (mode "subscription"), or a one-time payment
/// for |payment_line| (mode "payment"; |payment_intent_metadata| lands on the PaymentIntent, and so on its charge).
struct CheckoutSessionRequest {
    StripeCustomerId customer;
    std::string mode = "subscription";
    std::string price_id;             // price_... (subscription mode)
    std::optional<CheckoutLineItem> payment_line;  // payment mode
    Metadata metadata;                // the session's
    Metadata payment_intent_metadata;
    std::string client_reference_id;  // Tally's customer id: checkout.session.completed links back by it
    std::string success_url;          // may contain Stripe's {CHECKOUT_SESSION_ID} placeholder
    std::string cancel_url;
    int64_t trial_period_days = 0;    // 0: no trial
    std::string idempotency_key;
};

/// A catalog price as Stripe should have it (`tally catalog push`).
struct StripePriceSpec {
    std::string lookup_key;
    std::string product_id;    // stable id for the plan's product, e.g. "tally_pro"
    std::string product_name;
    int64_t unit_amount_minor = 0;
    std::string currency;      // "usd"
    std::string interval;      // "month" | "year"
    int64_t interval_count = 1;
};

/// One price of a plan as Stripe should have it (PlanService's push).
struct StripePlanPriceSpec {
    std::string tally_id;         // tprice_...: names the creation's idempotency key
    std::string stripe_price_id;  // "" until created or adopted
    std::string lookup_key;
    int64_t unit_amount_minor = 0;
    std::string currency;
    std::string interval;
    int64_t interval_count = 1;
    bool active = true;
};

/// A plan as Stripe should have it: product |product_id| ("tally_<plan>") named |name|, active unless archived, and
/// its prices.
struct StripePlanSpec {
    std::string product_id;
    std::string name;
    bool active = true;
    std::vector<StripePlanPriceSpec> prices;
};

/// What Tally keeps on a Stripe customer: its email, name and metadata (StripeCustomerMetadata).
struct StripeCustomerProfile {
    std::string email;  // "" clears it
    std::string name;
    Metadata metadata;
};

/// A payment Tally starts itself (POST /v1/payment_intents with confirm=true): an off-session charge of the
/// customer's saved card, e.g. a credit bundle.
struct StripePaymentIntentCreate {
    StripeCustomerId customer;
    int64_t amount_minor = 0;
    std::string currency;
    std::string payment_method;  // pm_...
    bool off_session = true;     // the customer is not there to authenticate
    std::string description;
    Metadata metadata;            // tally_purchase, tally_customer_id
    std::string idempotency_key;  // derived from the purchase: a retry never charges twice
};

/// A subscription Tally asks Stripe to create (POST /v1/subscriptions, one item).
struct StripeSubscriptionCreate {
    StripeCustomerId customer;
    std::string price_id;
    std::optional<int64_t> trial_period_days;  // nullopt: no trial
    std::string default_payment_method;        // pm_...; "" uses the customer's default
    /// Stripe's trial_settings.end_behavior.missing_payment_method: "cancel" | "pause" | "create_invoice".
    std::string trial_missing_payment_method = "cancel";
    Metadata metadata;            // e.g. tally_customer_id
    std::string idempotency_key;  // derived from the caller's: a retry never creates a second subscription
};

/// A change Tally asks Stripe to make to a subscription (POST /v1/subscriptions/{id}); unset fields stay.
struct StripeSubscriptionUpdate {
    std::optional<bool> cancel_at_period_end;
    std::string price_id;                     // "" keeps the price; else the single item moves to it
    std::optional<int64_t> proration_date;    // Unix seconds inside the current period: prorate as of then
    std::string proration_behavior;           // "create_prorations" | "always_invoice" | "none"; "" Stripe's default
    /// Stripe's pause_collection: nullopt leaves it, "" clears it (collection resumes), else its behavior
    /// ("keep_as_draft" | "mark_uncollectible" | "void").
    std::optional<std::string> pause_collection;
    std::string idempotency_key;
};

/// One line of a previewed invoice.
struct StripeInvoiceLine {
    std::string description;
    int64_t amount_minor = 0;  // negative for a credit (unused time)
    bool proration = false;
    Timestamp period_start;
    Timestamp period_end;
};

/// Stripe's preview of the invoice a change would produce (POST /v1/invoices/create_preview).
struct StripeInvoicePreview {
    std::string currency;
    int64_t total_minor = 0;
    int64_t amount_due_minor = 0;  // after the customer's credit balance
    std::vector<StripeInvoiceLine> lines;
};

/// The Stripe operations Tally starts itself (the rest arrives as webhooks). Implemented over HTTP by
/// adapters/stripe, against api.stripe.com or the sandbox alike. Thread-safe. Errors: kUnavailable when Stripe
/// cannot be reached, otherwise the category of Stripe's error (kInvalidArgument, kNotFound, ...).
class StripeApi {
public:
    virtual ~StripeApi() = default;
    /// Creates a Stripe customer carrying metadata.external_id; the same |idempotency_key| returns the same one.
    virtual Result<StripeCustomerId> CreateCustomer(const std::string& email, const std::string& name,
                                                    const std::string& external_id,
                                                    const std::string& idempotency_key) = 0;
    /// The id of the active price with |lookup_key|; kNotFound if Stripe has none.
    virtual Result<std::string> FindPriceId(const std::string& lookup_key) = 0;
    /// A Checkout Session in subscription mode.
    virtual Result<HostedSession> CreateCheckoutSession(const CheckoutSessionRequest& request) = 0;
    /// A Customer Portal session that returns to |return_url|.
    virtual Result<HostedSession> CreatePortalSession(const StripeCustomerId& customer, const std::string& return_url) = 0;
    /// Creates the product and price of |spec| unless a price with its lookup key exists; returns the price id
    /// and whether it was created.
    virtual Result<std::pair<std::string, bool>> EnsurePrice(const StripePriceSpec& spec) = 0;
    /// Makes Stripe's product and prices match |spec|, safely repeated: creates the product when missing, else
    /// updates its name and active flag; for each active price without a Stripe id, adopts Stripe's active price
    /// under its lookup key when that has the same amount, currency and interval, else creates the price with
    /// `transfer_lookup_key=true` (the key moves to it: Stripe's prices are immutable); deactivates each inactive
    /// price that has an id. Returns the Stripe price id of each spec price, in order ("" for an inactive price
    /// never created). Stripe's errors as returned; kUnavailable when Stripe cannot be reached.
    virtual Result<std::vector<std::string>> SyncPlan(const StripePlanSpec& spec) = 0;
    /// Makes Stripe customer |id|'s email, name and metadata equal |profile|: metadata keys Stripe holds beyond it
    /// are removed (MetadataPatch). Safe to repeat. kNotFound for a customer Stripe does not know.
    virtual Status UpdateCustomerProfile(const StripeCustomerId& id, const StripeCustomerProfile& profile) = 0;
    /// What time it is for subscription |id|: its test clock's frozen time when it is on one (test mode), else
    /// |wall_now|.
    virtual Result<Timestamp> SubscriptionNow(const StripeSubscriptionId& id, Timestamp wall_now) = 0;
    /// The customer's default payment method (invoice_settings.default_payment_method), "" when it has none.
    virtual Result<std::string> DefaultPaymentMethod(const StripeCustomerId& id) = 0;
    /// The card to charge when the customer is not there (a bundle bought off-session): its default payment method,
    /// else the newest card attached to it (a card saved by Checkout is the subscription's default, not the
    /// customer's); "" when it has none. Defaults to DefaultPaymentMethod.
    virtual Result<std::string> OffSessionPaymentMethod(const StripeCustomerId& id) { return DefaultPaymentMethod(id); }
    /// Creates a subscription and returns it as Stripe answered. A card that fails the first payment is a
    /// kPaymentRequired (reason kCardDeclined) and creates nothing (payment_behavior=error_if_incomplete).
    virtual Result<StripeSubscriptionData> CreateSubscription(const StripeSubscriptionCreate& request) = 0;
    /// Creates and confirms a PaymentIntent; returns it as Stripe answered (status succeeded, processing, ...). A
    /// declined card, or one that needs authentication off-session, is a kPaymentRequired (reason kCardDeclined)
    /// whose message is Stripe's; the PaymentIntent then exists and is not charged.
    virtual Result<StripePaymentData> CreatePaymentIntent(const StripePaymentIntentCreate& request) = 0;
    /// PaymentIntent |id| as Stripe has it now (GET /v1/payment_intents/{id}): how a charge left processing ended.
    virtual Result<StripePaymentData> RetrievePaymentIntent(const std::string& id) = 0;
    /// Refunds |amount_minor| (0: all that is left) of PaymentIntent |payment_intent| (POST /v1/refunds) and returns
    /// its charge as it is afterwards (amount_refunded cumulative), as charge.refunded would carry it. Stripe's
    /// errors as returned (kInvalidArgument amount_too_large, charge_already_refunded, ...).
    virtual Result<StripePaymentData> RefundPayment(const std::string& payment_intent, int64_t amount_minor,
                                                    const std::string& idempotency_key) = 0;
    /// The subscription as Stripe has it now (GET /v1/subscriptions/{id}).
    virtual Result<StripeSubscriptionData> RetrieveSubscription(const StripeSubscriptionId& id) = 0;
    /// Applies |update| and returns the subscription as Stripe answered.
    virtual Result<StripeSubscriptionData> UpdateSubscription(const StripeSubscriptionId& id,
                                                              const StripeSubscriptionUpdate& update) = 0;
    /// Cancels at once (DELETE /v1/subscriptions/{id}); |prorate| credits the unused time.
    virtual Result<StripeSubscriptionData> CancelSubscription(const StripeSubscriptionId& id, bool prorate,
                                                              const std::string& idempotency_key) = 0;
    /// The invoice moving subscription |id| to |price_id| as of |proration_date| would produce, with
    /// |proration_behavior| (as in StripeSubscriptionUpdate). Changes nothing.
    virtual Result<StripeInvoicePreview> PreviewSubscriptionChange(const StripeSubscriptionId& id,
                                                                   const std::string& price_id, int64_t proration_date,
                                                                   const std::string& proration_behavior) = 0;
    /// Moves subscription |id| to |next|'s price and quantity when |current| (its period as it is now) ends,
    /// through a Stripe subscription schedule: creates one from the subscription unless |schedule_id| names the
    /// open one it has, then sets its phases to [|current|, |next|] with end_behavior release (the subscription
    /// goes on in the new price after |next|). Returns the schedule as Stripe answered. Stripe keys derive from
    /// |idempotency_key|.
    virtual Result<StripeScheduleData> ScheduleSubscriptionChange(const StripeSubscriptionId& id,
                                                                  const std::string& schedule_id,
                                                                  const SchedulePhase& current,
                                                                  const SchedulePhase& next,
                                                                  const std::string& idempotency_key) = 0;
    /// Releases schedule |id| (POST /v1/subscription_schedules/{id}/release): its subscription stays as it is and
    /// no phase changes it again. Returns the schedule as Stripe answered; one already released is returned as is.
    virtual Result<StripeScheduleData> ReleaseSchedule(const std::string& id, const std::string& idempotency_key) = 0;
};

}  // namespace tally
