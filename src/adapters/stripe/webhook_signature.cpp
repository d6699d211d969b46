#include "adapters/stripe/webhook_signature.hpp"

#include <charconv>
#include <mutex>

#include "adapters/crypto.hpp"

namespace tally {

StripeWebhookVerifier::StripeWebhookVerifier(std::vector<std::string> secrets, int64_t tolerance_seconds)
    : secrets_(std::move(secrets)), tolerance_seconds_(tolerance_seconds) {
    TALLY_INVARIANT(!secrets_.empty());
}

void StripeWebhookVerifier::AddSecret(std::string secret) {
    std::unique_lock lock(mu_);
    secrets_.push_back(std::move(secret));
}

std::string StripeWebhookVerifier::SignHeader(std::string_view secret, std::string_view payload, int64_t timestamp) {
    const std::string t = std::to_string(timestamp);
    std::string signed_payload = t + ".";
    signed_payload.append(payload);
    return "t=" + t + ",v1=" + HmacSha256Hex(secret, signed_payload);
}

Status StripeWebhookVerifier::Verify(std::string_view payload, std::string_view header, Timestamp now) const {
    // Messages follow stripe-node's, so they read the same as what Stripe's own libraries say.
    if (header.empty()) return InvalidArgument("No stripe-signature header value was provided.", "Stripe-Signature");
    if (header.size() > kSignatureHeaderBytesMax) {
        return InvalidArgument("Stripe-Signature header is too long", "Stripe-Signature");
    }
    std::optional<int64_t> timestamp;
    std::vector<std::string_view> signatures;
    size_t pos = 0;
    while (pos <= header.size()) {
        size_t end = header.find(',', pos);
        if (end == std::string_view::npos) end = header.size();
        const std::string_view item = header.substr(pos, end - pos);
        const size_t eq = item.find('=');
        if (eq != std::string_view::npos) {
            const std::string_view key = item.substr(0, eq);
            const std::string_view value = item.substr(eq + 1);
            if (key == "t") {
                int64_t t = 0;
                const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), t);
                if (ec == std::errc() && p == value.data() + value.size()) timestamp = t;
            } else if (key == "v1") {
                signatures.push_back(value);
            }
        }
        pos = end + 1;
    }
    if (!timestamp) {
        return InvalidArgument("Unable to extract timestamp and signatures from header", "Stripe-Signature");
    }
    if (signatures.empty()) return InvalidArgument("No signatures found with expected scheme", "Stripe-Signature");
    std::string signed_payload = std::to_string(*timestamp) + ".";
    signed_payload.append(payload);
    bool matched = false;
    std::shared_lock lock(mu_);
    for (const auto& secret : secrets_) {
        const std::string expected = HmacSha256Hex(secret, signed_payload);
        for (const auto& sig : signatures) {
            // Evaluate every comparison: no early exit that would reveal which one matched.
            matched = ConstantTimeEquals(expected, sig) || matched;
        }
    }
    if (!matched) {
        return InvalidArgument("No signatures found matching the expected signature for payload", "Stripe-Signature");
    }
    // Written so that no subtraction involves the sender's timestamp: t = INT64_MIN must not overflow (found by
    // fuzz/webhook_signature_fuzzer).
    if (tolerance_seconds_ > 0 && *timestamp < now.unix_seconds() - tolerance_seconds_) {
        return InvalidArgument("Timestamp outside the tolerance zone", "Stripe-Signature");
    }
    return {};
}

}  // namespace tally
