#pragma once
// A stateful, offline stand-in for Stripe's HTTP API. Speaks Stripe's wire format so the official SDKs and
// Tally's own client use it unchanged: customers, products, prices, payment methods (Stripe's test cards),
// subscriptions with trials, prorations, dunning and pauses, invoices, payment intents, charges, refunds,
// Checkout and Customer Portal sessions with hosted pages, events, webhook endpoints and test clocks, with
// Stripe's idempotency and error semantics and signed webhook delivery. The supported subset is listed in the
// README's "The Stripe sandbox" section.
#include <boost/json.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "adapters/http/server.hpp"
#include "domain/result.hpp"

namespace tally::sandbox {

constexpr int kListLimitDefault = 10;            // Stripe's default page size
constexpr int kListLimitMax = 100;               // Stripe's maximum
constexpr int kDeliveryAttemptsMax = 8;          // per event and endpoint, then the delivery is abandoned
constexpr int64_t kDeliveryTimeoutMs = 10000;    // one webhook POST
constexpr size_t kIdempotencyKeyBytesMax = 255;  // Stripe's limit
constexpr const char* kApiVersion = "2025-03-31.basil";
constexpr const char* kInactivePrice = "The price specified is inactive. This field only accepts active prices.";

/// What happens to a subscription when the last dunning retry fails (Stripe's "Manage failed payments" setting).
enum class DunningEndState { kCanceled, kUnpaid, kPastDue };

/// "canceled"|"unpaid"|"past_due" -> state; nullopt otherwise.
std::optional<DunningEndState> ParseDunningEndState(const std::string& text);

struct SandboxConfig {
    /// Wall clock, Unix seconds. Customers on a test clock see the clock's frozen time instead.
    std::function<int64_t()> now;
    /// Delay before delivery attempt n+1 is |delivery_retry_base_ms| * 2^(n-1).
    int64_t delivery_retry_base_ms = 1000;
    /// Days after an invoice's first failed payment at which it is retried. Stripe recommends 8 tries within
    /// 2 weeks (the first attempt plus these 7 retries).
    std::vector<int64_t> dunning_retry_days = {1, 3, 5, 7, 9, 11, 14};
    DunningEndState dunning_end_state = DunningEndState::kCanceled;
    /// Base URL of the hosted pages (Checkout, Customer Portal), e.g. "http://127.0.0.1:12111". Whoever serves
    /// the sandbox sets it once it listens (SetPublicUrl).
    std::string public_url;
    /// Keep every event for `GET /v1/events` (Stripe keeps 30 days). Off only for bulk simulations, where
    /// events are taken with TakeEvents instead.
    bool retain_events = true;
    /// Seeds the ids the sandbox makes (cus_, sub_, evt_, ...) so that a run can be repeated exactly (simulations);
    /// unset: random ids.
    std::optional<uint64_t> id_seed;
    /// How often subscriptions not on a test clock run their due transitions (renewals, trial ends, dunning
    /// retries) on the wall clock; 0 turns that off (simulations, where everything is on a test clock).
    int64_t wall_clock_tick_ms = 1000;
};

/// One attempt to deliver an event to an endpoint.
struct Delivery {
    std::string event_id;
    std::string endpoint_id;
    std::string url;
    int attempt = 0;
    int http_status = 0;   // 0: no HTTP answer
    std::string error;     // transport error, if any
    int64_t at = 0;
};

/// Thread-safe: API calls are serialised on one mutex; webhooks are delivered by a background thread.
class Sandbox {
public:
    explicit Sandbox(SandboxConfig config);
    ~Sandbox();
    Sandbox(const Sandbox&) = delete;
    Sandbox& operator=(const Sandbox&) = delete;

    /// Answers one API request, as Stripe would.
    http::Response Handle(const http::Request& req);
    /// Every delivery attempt so far, oldest first.
    std::vector<Delivery> deliveries() const;
    /// Sets the base URL of the hosted pages (see SandboxConfig::public_url).
    void SetPublicUrl(std::string url);
    /// Removes and returns the events recorded since the last call, oldest first, as serialized JSON
    /// (for in-process consumers such as `tally simulate`; webhook deliveries are unaffected).
    std::vector<std::string> TakeEvents();

private:
    struct Pending {
        std::string event_id;
        std::string endpoint_id;
        int attempt = 1;
        std::chrono::steady_clock::time_point due;
    };
    struct IdempotentResult {
        std::string request_hash;
        http::Response response;
    };

    /// Why a payment attempt ended as it did.
    struct PaymentOutcome {
        enum class Kind { kSucceeded, kDeclined, kRequiresAction, kNoPaymentMethod } kind = Kind::kSucceeded;
        std::string payment_intent;  // pi_..., empty when no attempt was made
        std::string code;            // Stripe's error code: card_declined, authentication_required, ...
        std::string decline_code;
        std::string message;
    };
    /// How a test card behaves (Stripe's test numbers and pm_card_* tokens).
    enum class CardBehavior { kSucceeds, kDeclines, kRequiresAuthentication, kChargesFail };

    http::Response Route(const http::Request& req, const boost::json::object& params);
    /// Serves the hosted pages: /checkout/{id}, /authenticate/{payment_intent}, /portal/{id}[/...].
    http::Response HostedPage(const http::Request& req);
    /// |object| without the sandbox's internal bookkeeping fields.
    boost::json::object Public(const boost::json::object& object) const;
    http::Response CreateCustomer(const boost::json::object& params);
    http::Response UpdateCustomer(const std::string& id, const boost::json::object& params);
    http::Response CreateProduct(const boost::json::object& params);
    http::Response CreatePrice(const boost::json::object& params);
    /// POST /v1/products/{id}: name, description, active, metadata.
    http::Response UpdateProduct(const std::string& id, const boost::json::object& params);
    /// POST /v1/prices/{id}: active, nickname, metadata, lookup_key (with transfer_lookup_key). Amounts are
    /// immutable, as Stripe's.
    http::Response UpdatePrice(const std::string& id, const boost::json::object& params);
    http::Response CreateWebhookEndpoint(const boost::json::object& params);
    http::Response CreateSubscription(const boost::json::object& params);
    http::Response UpdateSubscription(const std::string& id, const boost::json::object& params);
    http::Response CancelSubscription(const std::string& id, const boost::json::object& params);
    http::Response ResumeSubscription(const std::string& id, const boost::json::object& params);
    http::Response UpdateSubscriptionItem(const std::string& id, const boost::json::object& params);
    http::Response ListSubscriptionItems(const boost::json::object& params);
    http::Response RetrieveSubscriptionItem(const std::string& id);
    http::Response CreatePreviewInvoice(const boost::json::object& params);
    // Subscription schedules (sandbox_schedules.cpp).
    http::Response CreateSubscriptionSchedule(const boost::json::object& params);
    http::Response UpdateSubscriptionSchedule(const std::string& id, const boost::json::object& params);
    http::Response ReleaseSubscriptionSchedule(const std::string& id, const boost::json::object& params);
    http::Response CancelSubscriptionSchedule(const std::string& id, const boost::json::object& params);
    /// At |at|, the end of |subscription|'s period: if its schedule has a phase starting then, moves the item to
    /// that phase's price and quantity; if its last phase ended, completes the schedule and detaches it. Emits
    /// the schedule's events; the caller emits customer.subscription.updated.
    void StartSchedulePhase(boost::json::object& subscription, int64_t at);
    http::Response PayInvoiceRequest(const std::string& id, const boost::json::object& params);
    http::Response CreateTestClock(const boost::json::object& params);
    http::Response AdvanceTestClock(const std::string& id, const boost::json::object& params);
    /// Unix seconds for objects of |customer_id|: its test clock's frozen time, else the wall clock.
    int64_t NowFor(const std::string& customer_id);

    // Billing internals (sandbox_billing.cpp).
    /// Changes |subscription|'s item to |price| × |quantity| at |at| with Stripe's proration rules; returns an
    /// error response or nullopt. Emits nothing: the caller emits customer.subscription.updated.
    std::optional<http::Response> ChangeItem(boost::json::object& subscription, const boost::json::object& price,
                                             int64_t quantity, const std::string& proration_behavior, int64_t at,
                                             const std::string& payment_behavior);
    /// Proration lines (as invoice line objects) for changing |subscription|'s item at |at|; empty when none.
    Result<boost::json::array> ProrationLines(const boost::json::object& subscription, const boost::json::object& price,
                                              int64_t quantity, int64_t at);
    /// A draft invoice of |subscription| for |lines| (each marked as on invoice |id|), with totals and what is
    /// due after |starting_balance| (negative: customer credit). Stores nothing.
    boost::json::object DraftInvoice(const boost::json::object& subscription, const std::string& id,
                                     boost::json::array lines, int64_t starting_balance);
    /// Creates and finalizes an invoice of |subscription| for |lines| plus the customer's pending invoice items;
    /// applies the customer's credit balance. Returns the invoice id.
    std::string CreateInvoice(boost::json::object& subscription, const std::string& billing_reason,
                              boost::json::array lines, int64_t at);
    /// The line billing |subscription|'s current period in advance (0 during a trial).
    boost::json::object PeriodLine(const boost::json::object& subscription, const std::string& invoice_id);
    /// Attempts to collect |invoice_id| at |at| (off-session unless |on_session|) and applies the outcome to the
    /// invoice and its subscription: paid, or a failed attempt scheduled for dunning.
    PaymentOutcome CollectInvoice(const std::string& invoice_id, int64_t at, bool on_session,
                                  const std::string& payment_method = {});
    /// Applies a payment attempt's |outcome| to |invoice_id| and its subscription at |at|: paid (and the
    /// subscription active again), or failed with the next dunning retry scheduled or the end state applied.
    void ApplyInvoiceOutcome(const std::string& invoice_id, const PaymentOutcome& outcome, int64_t at);
    /// Runs |subscription_id|'s transitions due at or before |until|, in order.
    void RunDueTransitions(const std::string& subscription_id, int64_t until);
    /// Sets |subscription|'s status to |status|, recording the previous one; emits nothing.
    void SetStatus(boost::json::object& subscription, const std::string& status, boost::json::object& previous);
    /// One scheduled change of a subscription on its clock. Kinds are in the order they run when due together.
    struct Transition {
        enum class Kind { kTrialNotice, kDunningRetry, kIncompleteExpiry, kCollectionResumes, kPeriodEnd } kind;
        int64_t at = 0;          // Unix seconds
        std::string invoice_id;  // kDunningRetry: the invoice to retry
    };
    /// |subscription|'s next scheduled transition: trial notice, dunning retry, 23-hour expiry, collection
    /// resuming or the end of the period (cancel, trial end or renewal); nullopt when none is scheduled.
    std::optional<Transition> NextTransition(const boost::json::object& subscription) const;
    /// Runs |transition| (from NextTransition) on |subscription|, stamping what it emits with transition.at.
    void RunTransition(boost::json::object& subscription, const Transition& transition);
    /// Ends |subscription| now (status canceled) and emits customer.subscription.deleted.
    void EndSubscription(boost::json::object& subscription, int64_t at, const std::string& reason);

    // Payments (sandbox_payments.cpp).
    http::Response CreatePaymentMethod(const boost::json::object& params);
    http::Response AttachPaymentMethod(const std::string& id, const boost::json::object& params);
    http::Response DetachPaymentMethod(const std::string& id);
    http::Response CreatePaymentIntent(const boost::json::object& params);
    http::Response ConfirmPaymentIntent(const std::string& id, const boost::json::object& params);
    http::Response CancelPaymentIntent(const std::string& id);
    http::Response CreateRefund(const boost::json::object& params);
    /// The stored payment method |id|, or for one of Stripe's test tokens (pm_card_visa, ...) a new unattached
    /// payment method cloned from it; nullptr if neither.
    boost::json::object* ResolvePaymentMethod(const std::string& id);
    /// A new card payment method for |number| (spaces allowed); kInvalidArgument if it is not a card number.
    Result<std::string> NewCardPaymentMethod(const std::string& number, int64_t exp_month, int64_t exp_year,
                                             const std::string& name, const std::string& email);
    /// Attaches |pm_id| to |customer_id|: the id of the attached payment method (a clone for test tokens), or
    /// Stripe's error response (card_declined for cards that decline).
    std::variant<std::string, http::Response> Attach(const std::string& pm_id, const std::string& customer_id);
    /// The payment method an invoice of |subscription| is charged to: the subscription's default, else the
    /// customer's invoice_settings.default_payment_method; "" if none.
    std::string DefaultPaymentMethod(const boost::json::object& subscription);
    /// The customer's invoice_settings.default_payment_method; "" if none or no such customer.
    std::string CustomerDefaultPaymentMethod(const std::string& customer_id);
    /// Runs |pi|'s payment with |pm_id| at |at|: creates the charge, updates the intent, emits Stripe's events.
    PaymentOutcome ConfirmIntent(boost::json::object& pi, const std::string& pm_id, bool off_session, int64_t at);
    /// A new payment intent (status requires_payment_method).
    boost::json::object& NewPaymentIntent(const std::string& customer, int64_t amount, const std::string& currency,
                                          const std::string& description, int64_t at);
    /// What charging |pm_id| would do, without charging: used to refuse before creating anything.
    PaymentOutcome PredictCharge(const std::string& pm_id, bool off_session) const;
    /// Marks a payment intent's pending 3-D Secure authentication as completed (|approve|) or failed.
    PaymentOutcome Authenticate(const std::string& pi_id, bool approve);

    // Hosted pages (sandbox_pages.cpp).
    http::Response CreateCheckoutSession(const boost::json::object& params);
    http::Response ExpireCheckoutSession(const std::string& id);
    http::Response CreatePortalSession(const boost::json::object& params);
    http::Response CheckoutPage(const std::string& id, const std::string& error);
    http::Response CompleteCheckout(const std::string& id, const boost::json::object& form);
    /// Finishes a checkout session once its payment succeeded: status complete, checkout.session.completed.
    http::Response FinishCheckout(boost::json::object& session, int64_t at);
    http::Response PortalPage(const std::string& id, const std::string& notice);
    http::Response PortalAction(const std::string& id, const std::vector<std::string>& path,
                                const boost::json::object& form);
    http::Response AuthenticatePage(const std::string& pi_id);
    http::Response Retrieve(const std::string& prefix, const std::string& id);
    http::Response List(const std::string& type, const boost::json::object& params, const std::string& url);
    http::Response DeleteObject(const std::string& type, const std::string& id);

    /// Stores |object| as the newest of its type.
    void Put(const std::string& type, boost::json::object object);
    boost::json::object* Find(const std::string& type, const std::string& id);
    /// Records an event about |object| and queues its deliveries.
    void Emit(const std::string& type, const boost::json::object& object,
              const boost::json::object* previous_attributes = nullptr, std::optional<int64_t> created = std::nullopt);
    std::string NewId(const std::string& prefix);
    /// |bytes| random bytes as hex: from the seeded generator when SandboxConfig::id_seed is set.
    std::string Hex(size_t bytes);
    boost::json::object Template(const char* resource) const;
    /// Stripe's example invoice line (from the invoice fixture), the base of every line the sandbox makes.
    const boost::json::object& LineTemplate() const;

    void DeliveryLoop();
    /// Runs wall-clock subscriptions' due transitions every SandboxConfig::wall_clock_tick_ms.
    void WallClockLoop();
    void Deliver(const Pending& p);

    SandboxConfig config_;
    boost::json::object fixtures_;
    mutable std::mutex mu_;
    std::map<std::string, std::vector<std::string>> order_;  // type -> ids, oldest first
    std::map<std::string, boost::json::object> objects_;     // id -> object
    std::map<std::string, IdempotentResult> idempotency_;
    std::set<std::string> trial_notice_sent_;  // subscriptions whose trial_will_end was sent
    std::map<std::string, CardBehavior> cards_;                  // payment method id -> how it behaves
    std::set<std::string> authenticated_;                        // payment intents whose 3-D Secure passed
    std::map<std::string, std::set<std::string>> open_invoices_;  // subscription id -> invoices in dunning
    std::map<std::string, std::vector<std::string>> pending_items_;  // subscription id -> unbilled invoice items
    std::map<std::string, std::string> item_subscription_;     // subscription item id -> subscription id
    std::map<std::string, boost::json::array> checkout_lines_;   // checkout session id -> line items
    std::map<std::string, std::string> checkout_of_intent_;
    std::map<std::string, std::string> intent_invoice_;          // payment intent id -> invoice it collects     // payment intent id -> checkout session awaiting it
    std::vector<std::string> taken_events_;
    std::mt19937_64 id_rng_;                      // TakeEvents' queue when events are not retained
    std::string current_request_id_;
    std::string current_idempotency_key_;
    std::vector<Delivery> deliveries_;
    std::deque<Pending> pending_;
    std::condition_variable delivery_cv_;
    bool stopping_ = false;
    std::thread delivery_thread_;
    std::thread clock_thread_;
};

}  // namespace tally::sandbox
