#pragma once
// Receives a Stripe webhook delivery: verify, record durably (group commit), acknowledge.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "app/group_commit.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"

namespace tally {

constexpr size_t kWebhookBodyBytesMax = size_t{512} * 1024;  // Stripe events are far smaller; larger is refused
constexpr size_t kInboxBatchMax = 1024;              // events per group-commit transaction
constexpr size_t kInboxQueueLengthMax = 32768;       // deliveries waiting for a commit; more get 503

/// What the sender is told once its event is durable.
struct WebhookReceipt {
    StripeEventId id;
    std::string type;
    bool duplicate = false;  // the id was already recorded; nothing changed
};

/// Verifies and records deliveries. Thread-safe. |on_recorded| runs on the commit thread after a batch
/// with new events is durable (used to wake the processor).
class WebhookReceiver {
public:
    WebhookReceiver(Store& store, const WebhookVerifier& verifier, const EventDecoder& decoder, const Clock& clock,
                    std::function<void()> on_recorded, Metrics& metrics = NullMetrics::Instance());
    ~WebhookReceiver();

    /// Calls |done| exactly once: with a receipt when the event is durably recorded (or was already), with
    /// kInvalidArgument for a bad signature (reason kSignatureVerificationFailed), a malformed body
    /// (kMalformedPayload) or an oversized one (kPayloadTooLarge), kUnavailable when the store
    /// fails or the queue is full. Nothing is recorded on error. |done| may run on another thread.
    void Receive(std::string payload, const std::string& signature_header,
                 std::function<void(Result<WebhookReceipt>)> done);
    /// Drains pending commits. Idempotent.
    void Stop();
    /// Deliveries waiting for or in a commit.
    size_t backlog() const { return committer_.backlog(); }

private:
    Result<std::vector<bool>> Commit(const std::vector<InboxEvent>& events);

    Store& store_;
    const WebhookVerifier& verifier_;
    const EventDecoder& decoder_;
    const Clock& clock_;
    std::function<void()> on_recorded_;
    Metrics& metrics_;
    GroupCommitter<InboxEvent, bool> committer_;
};

}  // namespace tally
