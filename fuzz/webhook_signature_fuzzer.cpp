// Fuzzes the Stripe-Signature header parser and verifier: tally::StripeWebhookVerifier::Verify.
//
// Input: byte 0 is a mode byte, the rest depends on it.
//   raw mode (bit 0 clear): the rest is "<header>\0<payload>" (no NUL: all header, empty payload), verified as sent
//     at kNow. The secrets are those of tests/fixtures/signature-vectors.json, so seeds made from the vectors pass.
//   signed mode (bit 0 set): 8 bytes little-endian t, 2 bytes little-endian int16 delta, then the payload. The
//     header is SignHeader(secret, payload, t) (optionally between an unknown scheme and a wrong v1, which Verify
//     must ignore), verified at now = t + delta (bit 5 clear) or at kNow (bit 5 set); it must pass exactly when
//     now - t <= the tolerance. t is the sender's and may be any int64; now is the receiver's clock, so it stays a
//     time a clock can show, [0, kTimestampSecondsMax] (kNow when t + delta is not).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/stripe/webhook_signature.hpp"
#include "domain/time.hpp"

namespace {

constexpr int64_t kNow = 1735689660;  // one minute after signature vector 2; vector 1 is too old, vector 3 is ahead

const char* const kSecrets[] = {"whsec_test_secret_1234567890", "whsec_billingEngineVector2", "whsec_unicode"};

const tally::StripeWebhookVerifier& Verifier() {
    static const tally::StripeWebhookVerifier* verifier = [] {
        auto* v = new tally::StripeWebhookVerifier({kSecrets[0], kSecrets[1]}, tally::kWebhookToleranceSecondsDefault);
        v->AddSecret(kSecrets[2]);  // rotation: a secret added later verifies too
        return v;
    }();
    return *verifier;
}

void Check(bool condition) {
    if (!condition) __builtin_trap();
}

void RawMode(std::string_view rest) {
    const size_t nul = rest.find('\0');
    const std::string_view header = rest.substr(0, nul);
    const std::string_view payload = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
    const tally::Status status = Verifier().Verify(payload, header, tally::Timestamp(kNow));
    if (status.ok()) {
        // Passing takes a t= and a v1= item in a header within the size limit.
        Check(!header.empty() && header.size() <= tally::kSignatureHeaderBytesMax);
        Check(header.find("t=") != std::string_view::npos && header.find("v1=") != std::string_view::npos);
    } else {
        Check(status.error().code == tally::ErrorCode::kInvalidArgument);
        Check(status.error().param == "Stripe-Signature");
    }
}

void SignedMode(uint8_t mode, std::string_view rest) {
    if (rest.size() < 10) return;
    int64_t t = 0;
    int16_t delta = 0;
    std::memcpy(&t, rest.data(), sizeof t);
    std::memcpy(&delta, rest.data() + 8, sizeof delta);
    const std::string_view payload = rest.substr(10);
    const char* secret = kSecrets[(mode >> 1) % 3];
    std::string header = tally::StripeWebhookVerifier::SignHeader(secret, payload, t);
    if (mode & 0x10) header = "v0=6ffbb59b2300aabbccdd," + header + ",v1=" + std::string(64, '0') + ",scheme=x";
    int64_t now = kNow;
    int64_t later = 0;
    if ((mode & 0x20) == 0 && !__builtin_add_overflow(t, int64_t{delta}, &later) && later >= 0 &&
        later <= tally::kTimestampSecondsMax) {
        now = later;
    }
    const tally::Status status = Verifier().Verify(payload, header, tally::Timestamp(now));
    const __int128 age = static_cast<__int128>(now) - t;
    Check(status.ok() == (age <= tally::kWebhookToleranceSecondsDefault));
    // The same header for another body never passes.
    const std::string other = std::string(payload) + " ";
    Check(!Verifier().Verify(other, header, tally::Timestamp(now)).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const uint8_t mode = data[0];
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (mode & 1) {
        SignedMode(mode, rest);
    } else {
        RawMode(rest);
    }
    return 0;
}
