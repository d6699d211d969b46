#pragma once
// Stripe webhook signature verification (../shared/stripe/README.md, "Webhook signatures").
#include <cstdint>
#include <shared_mutex>
#include <string>
#include <vector>

#include "app/ports.hpp"

namespace tally {

constexpr int64_t kWebhookToleranceSecondsDefault = 300;
constexpr size_t kSignatureHeaderBytesMax = 8192;

/// Checks `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]` against every configured secret: HMAC-SHA256 over
/// "<t>.<raw body>" keyed with the whole `whsec_...` string. Accepts if any v1 matches any secret (rotation);
/// ignores v0 and unknown schemes; rejects t older than the tolerance. Thread-safe (secrets may be added while
/// verifying, e.g. once the sandbox has issued its endpoint secret).
class StripeWebhookVerifier final : public WebhookVerifier {
public:
    /// |secrets| must be non-empty; |tolerance_seconds| <= 0 disables the age check (tests only).
    StripeWebhookVerifier(std::vector<std::string> secrets, int64_t tolerance_seconds);
    Status Verify(std::string_view payload, std::string_view signature_header, Timestamp now) const override;
    /// Accepts signatures made with |secret| too.
    void AddSecret(std::string secret);

    /// A header as Stripe would send it for |payload| at |timestamp| (for the sandbox and tests).
    static std::string SignHeader(std::string_view secret, std::string_view payload, int64_t timestamp);

private:
    mutable std::shared_mutex mu_;
    std::vector<std::string> secrets_;
    int64_t tolerance_seconds_;
};

}  // namespace tally
