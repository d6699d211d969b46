#pragma once
// Applies recorded Stripe events to the store, off the request path, idempotently and in any order.
#include <atomic>
#include <functional>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "app/billing_service.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"

namespace tally {

constexpr int kWebhookAttemptCountMax = 10;         // then the event is left failed for an admin retry
constexpr int64_t kWebhookRetryDelaySecondsMax = 3600;
constexpr int kWebhookProcessBatchMax = 16;  // events applied per transaction (one fsync); bounds write-lock time (~2 ms)

/// Backoff before attempt |attempts|+1: 2^(attempts-1) s, capped at kWebhookRetryDelaySecondsMax.
int64_t WebhookRetryDelaySeconds(int attempts);

/// A subscription as Stripe's API answered it, after ApplySubscriptionResponse.
struct AppliedSubscription {
    SubscriptionRecord subscription;  // the answer, with its plan
    CustomerRecord customer;          // the Tally customer it belongs to
    bool stored = false;              // false: a webhook got there first and the events decide what is stored
};

/// Turns inbox events into state. Thread-compatible: ProcessOne/ProcessDue may be called from several
/// threads because every event is applied in its own store transaction, re-checked inside it.
class WebhookProcessor {
public:
    WebhookProcessor(Store& store, const EventDecoder& decoder, BillingService& billing, const Clock& clock,
                     Metrics& metrics = NullMetrics::Instance());

    /// Processes one event if it is not processed yet. Returns the outcome ("applied", "stale", "ignored",
    /// "already_processed", or "processing_elsewhere" when another node holds the event right now and records its
    /// outcome); on failure records the error and the next attempt, and returns the error.
    Result<std::string> ProcessOne(const StripeEventId& id);
    /// Processes |ids| in one transaction (one fsync), each inside its own savepoint so that a failing event
    /// is rolled back alone and marked failed with its backoff. Returns one outcome or error per id;
    /// kUnavailable if the transaction itself could not commit (then nothing changed).
    Result<std::vector<Result<std::string>>> ProcessBatch(const std::vector<StripeEventId>& ids);
    /// ProcessBatch for events whose payloads the caller holds (just appended to the inbox): decodes them
    /// without reading them back. Their state is still checked inside the transaction.
    Result<std::vector<Result<std::string>>> ProcessRecorded(const std::vector<InboxEvent>& events);
    /// Processes every due event (at most kWebhookProcessBatchMax); returns how many were attempted.
    Result<int> ProcessDue();
    /// Makes an event due now again, whatever its state; kNotFound for an unknown id.
    Result<InboxEvent> Retry(const StripeEventId& id);
    /// Applies a subscription Tally got back from a Stripe API call (not an event) inside |tx|, under the same
    /// ordering rules as events, so the app sees the change at once and the webhook that follows changes nothing.
    /// |read_before| is the stored stamp read before the call (nullopt: none was stored): when a webhook has been
    /// applied since, the answer is returned unstored. |request_id| makes the stamp's id ("api_<request_id>").
    Result<AppliedSubscription> ApplySubscriptionResponse(StoreTx& tx, const StripeSubscriptionData& data,
                                                          const std::optional<EventStamp>& read_before,
                                                          const std::string& request_id, const std::string& cause,
                                                          Timestamp now);

    /// Applies a subscription schedule Tally got back from a Stripe API call inside |tx|, as ApplySubscriptionResponse
    /// does for subscriptions (|read_before|: the schedule's stored stamp read before the call, nullopt when none
    /// was stored), then re-derives the pending change of its subscription. |known_prices|: (Stripe price id,
    /// lookup key) pairs the caller resolved, remembered first so the phases' prices name their plans. Returns the
    /// subscription as stored afterwards; nullopt when Tally does not have it yet.
    Result<std::optional<SubscriptionRecord>> ApplyScheduleResponse(StoreTx& tx, const StripeScheduleData& data,
                                                                    const std::optional<EventStamp>& read_before,
                                                                    const std::vector<std::pair<std::string, std::string>>& known_prices,
                                                                    const std::string& request_id,
                                                                    const std::string& cause, Timestamp now);

    /// Called inside the transaction that stored a subscription (from an event or an API answer), after the
    /// customer is reconciled; |before| is what was stored until then. An error rolls the change back. Set before
    /// use (the credit ledger's period grants: CreditService::OnSubscriptionStored).
    using SubscriptionListener = std::function<Status(StoreTx& tx, const CustomerId& customer,
                                                      const std::optional<SubscriptionRecord>& before,
                                                      const SubscriptionRecord& after)>;
    void SetSubscriptionListener(SubscriptionListener listener) { subscription_listener_ = std::move(listener); }
    /// Called inside the transaction that applied a checkout.session.*, payment_intent.* or charge.* event, after
    /// Tally's own records of it, however the event compared with what was stored (the listener is idempotent and
    /// order-independent itself). An error rolls the event back. Set before use (credit bundle purchases:
    /// CreditPurchaseService::OnStripeEvent).
    using PaymentListener = std::function<Status(StoreTx& tx, const DecodedEvent& event)>;
    void SetPaymentListener(PaymentListener listener) { payment_listener_ = std::move(listener); }

private:
    /// Applies |decoded| (one per id; empty when the event was missing or already processed) in one write
    /// transaction, each event in its own savepoint.
    Result<std::vector<Result<std::string>>> ApplyDecoded(const std::vector<StripeEventId>& ids,
                                                          std::vector<std::optional<Result<DecodedEvent>>>& decoded,
                                                          Timestamp now);
    /// Applies one inbox event inside |tx| and marks it processed, or marks it failed; returns the outcome.
    /// |seen| collects (outcome, lag) for the metrics, reported once the transaction commits.
    Result<std::string> ProcessInTx(StoreTx& tx, const StripeEventId& id, const Result<DecodedEvent>* decoded,
                                    Timestamp now, std::vector<std::pair<std::string, int64_t>>& seen);
    Result<std::string> Apply(StoreTx& tx, const DecodedEvent& event, Timestamp now);
    Result<std::string> ApplyCustomer(StoreTx& tx, const DecodedEvent& event, const StripeCustomerData& data, Timestamp now);
    Result<std::string> ApplySubscription(StoreTx& tx, const DecodedEvent& event, const StripeSubscriptionData& data,
                                          Timestamp now);
    Result<std::string> ApplyInvoice(StoreTx& tx, const DecodedEvent& event, const StripeInvoiceData& data, Timestamp now);
    Result<std::string> ApplyCheckout(StoreTx& tx, const DecodedEvent& event, const StripeCheckoutData& data, Timestamp now);
    Result<std::string> ApplyPayment(StoreTx& tx, const DecodedEvent& event, const StripePaymentData& data);
    /// subscription.created/updated/canceled/trial_will_end for a subscription snapshot moving |before| -> |after|.
    /// |event_type|: the Stripe event's type, "" for an API answer.
    Status EmitSubscriptionEvents(StoreTx& tx, std::string_view event_type, const std::optional<SubscriptionRecord>& before,
                                  const SubscriptionRecord& after, const CustomerRecord& customer);
    /// Stores |sub| (replacing |stored|) with its pending change derived from its schedules, emits the app's
    /// events and audit entries, and reconciles the role.
    Status StoreSubscription(StoreTx& tx, std::string_view event_type, const std::optional<SubscriptionRecord>& stored,
                             SubscriptionRecord& sub, CustomerRecord& customer, const std::string& cause,
                             Timestamp now);
    /// A subscription_schedule.* event: stores the schedule if the event is newer than its stored snapshot (a
    /// terminal schedule never reopens), then re-derives its subscription's pending change.
    Result<std::string> ApplySchedule(StoreTx& tx, const DecodedEvent& event, const StripeScheduleData& data,
                                      Timestamp now);
    /// The change |sub|'s open schedules make when its current period ends (PhaseChangeAt); none once it ended.
    Result<std::optional<PendingChange>> DerivePendingChange(StoreTx& tx, const SubscriptionRecord& sub);
    /// Re-derives subscription |id|'s pending change after one of its schedules changed; stores it and emits
    /// subscription.updated and audits it ("pending_change", with |cause|) when it moved. Returns the
    /// subscription, nullopt when Tally does not have it.
    Result<std::optional<SubscriptionRecord>> RefreshPendingChange(StoreTx& tx, const StripeSubscriptionId& id,
                                                                   const std::string& cause, Timestamp now);
    /// Whether |event| (about an object whose stored snapshot came from |stored|) carries newer state.
    Result<bool> IsNewer(StoreTx& tx, const DecodedEvent& event, bool terminal, const EventStamp& stored);

    /// The customer record for a Stripe customer id, created as a placeholder when first seen.
    Result<CustomerRecord> EnsureCustomer(StoreTx& tx, const StripeCustomerId& id, Timestamp now, const std::string& cause);

    Store& store_;
    const EventDecoder& decoder_;
    BillingService& billing_;
    SubscriptionListener subscription_listener_;
    PaymentListener payment_listener_;
    const Clock& clock_;
    Metrics& metrics_;
};

constexpr int kWorkerNiceIncrement = 10;   // the worker's CPU priority below the HTTP threads (nice levels)
constexpr int kProcessingDeferMsMax = 100;  // while deliveries queue, processing waits at most this long per batch

/// Runs the processor and the role sweep on a background thread. Notify() wakes it after new events are
/// recorded; it also polls every |poll_interval_ms| for retries that became due. Acknowledging deliveries
/// comes first: while |ingest_backlog| reports deliveries waiting for their commit, a batch is deferred,
/// but never by more than kProcessingDeferMsMax, so processing cannot starve. |on_idle| runs after each sweep
/// (other periodic upkeep, e.g. pruning idempotency keys). No exception ends the thread. Thread-safe.
class WebhookWorker {
public:
    WebhookWorker(WebhookProcessor& processor, BillingService& billing, int poll_interval_ms,
                  std::function<size_t()> ingest_backlog = {}, std::function<void()> on_idle = {});
    ~WebhookWorker();
    void Start();
    void Notify();
    /// Finishes the event in progress and joins the thread. Idempotent.
    void Stop();

private:
    void Run();
    WebhookProcessor& processor_;
    BillingService& billing_;
    const int poll_interval_ms_;
    std::function<size_t()> ingest_backlog_;
    std::function<void()> on_idle_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    bool pending_ = false;
    std::thread thread_;
};

}  // namespace tally
