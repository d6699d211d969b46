#include "app/webhook_receiver.hpp"

namespace tally {

WebhookReceiver::WebhookReceiver(Store& store, const WebhookVerifier& verifier, const EventDecoder& decoder,
                                 const Clock& clock, std::function<void()> on_recorded, Metrics& metrics)
    : store_(store), verifier_(verifier), decoder_(decoder), clock_(clock), on_recorded_(std::move(on_recorded)),
      metrics_(metrics),
      committer_([this](const std::vector<InboxEvent>& events) { return Commit(events); }, kInboxBatchMax,
                 kInboxQueueLengthMax) {}

WebhookReceiver::~WebhookReceiver() { Stop(); }

void WebhookReceiver::Stop() { committer_.Stop(); }

Result<std::vector<bool>> WebhookReceiver::Commit(const std::vector<InboxEvent>& events) {
    auto inserted = store_.AppendInbox(events);
    if (inserted.ok() && on_recorded_) {
        for (bool fresh : *inserted) {
            if (fresh) {
                on_recorded_();
                break;
            }
        }
    }
    return inserted;
}

void WebhookReceiver::Receive(std::string payload, const std::string& signature_header,
                              std::function<void(Result<WebhookReceipt>)> done) {
    if (payload.size() > kWebhookBodyBytesMax) {
        // 400 like every refused delivery: to Stripe, anything but a 2xx is a failure to retry.
        metrics_.WebhookReceived("rejected", "too_large");
        done(Error{ErrorCode::kInvalidArgument,
                   "body is " + std::to_string(payload.size()) + " bytes; the limit is " +
                       std::to_string(kWebhookBodyBytesMax),
                   "body", ErrorReason::kPayloadTooLarge});
        return;
    }
    const Timestamp now = clock_.Now();
    // Verify over the raw bytes before looking inside them.
    if (Status s = verifier_.Verify(payload, signature_header, now); !s.ok()) {
        metrics_.WebhookReceived("rejected", "signature");
        done(s.error().code == ErrorCode::kInvalidArgument
                 ? WithReason(s.error(), ErrorReason::kSignatureVerificationFailed)
                 : s.error());
        return;
    }
    auto envelope = decoder_.DecodeEnvelope(payload);
    if (!envelope.ok()) {
        metrics_.WebhookReceived("rejected", "malformed");
        done(envelope.error().code == ErrorCode::kInvalidArgument
                 ? WithReason(envelope.error(), ErrorReason::kMalformedPayload)
                 : envelope.error());
        return;
    }
    InboxEvent event;
    event.id = envelope->id;
    event.type = envelope->type;
    event.created = envelope->created;
    event.payload = std::move(payload);
    event.received_at = now;
    WebhookReceipt receipt{envelope->id, envelope->type, false};
    committer_.Submit(std::move(event), [this, receipt, done = std::move(done)](Result<bool> inserted) mutable {
        if (!inserted.ok()) {
            metrics_.WebhookReceived("rejected", "unavailable");
            done(inserted.error());
            return;
        }
        receipt.duplicate = !*inserted;
        metrics_.WebhookReceived(receipt.duplicate ? "duplicate" : "recorded", "");
        done(std::move(receipt));
    });
}

}  // namespace tally
