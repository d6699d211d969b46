#include "adapters/stripe/webhook_signature.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "adapters/crypto.hpp"

namespace tally {
namespace {

std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Vectors computed by the official stripe npm package (copied from ../shared/stripe/signature-vectors.json).
TEST(WebhookSignatureTest, AcceptsEveryOfficialVector) {
    const std::string text = ReadFile(std::string(TALLY_SOURCE_DIR) + "/tests/fixtures/signature-vectors.json");
    ASSERT_FALSE(text.empty());
    const auto root = boost::json::parse(text);
    const auto& vectors = root.at("vectors").as_array();
    ASSERT_GE(vectors.size(), 3u);
    for (const auto& v : vectors) {
        const std::string secret(v.at("secret").as_string());
        const std::string payload(v.at("payload").as_string());
        const std::string header(v.at("header").as_string());
        const int64_t t = v.at("timestamp").as_int64();
        StripeWebhookVerifier verifier({secret}, kWebhookToleranceSecondsDefault);
        EXPECT_TRUE(verifier.Verify(payload, header, Timestamp(t + 10)).ok()) << v.at("note");
        EXPECT_EQ(StripeWebhookVerifier::SignHeader(secret, payload, t), header) << v.at("note");
        // One flipped byte of the body must fail.
        std::string tampered = payload;
        tampered[tampered.size() / 2] ^= 1;
        EXPECT_FALSE(verifier.Verify(tampered, header, Timestamp(t)).ok());
    }
}

TEST(WebhookSignatureTest, RejectionsUseStripeNodeWording) {
    const std::string secret = "whsec_test";
    const std::string payload = R"({"id":"evt_1"})";
    const int64_t t = 1700000000;
    const std::string good = StripeWebhookVerifier::SignHeader(secret, payload, t);
    const std::string sig = good.substr(good.find("v1=") + 3);
    StripeWebhookVerifier verifier({secret}, 300);
    struct Case { std::string header; int64_t now; const char* message; };
    const Case cases[] = {
        {"", t, "No stripe-signature header value was provided."},
        {"garbage", t, "Unable to extract timestamp and signatures from header"},
        {"t=abc,v1=" + sig, t, "Unable to extract timestamp and signatures from header"},
        {"t=" + std::to_string(t) + ",v0=" + sig, t, "No signatures found with expected scheme"},
        {"t=" + std::to_string(t) + ",v1=" + std::string(64, '0'), t,
         "No signatures found matching the expected signature for payload"},
        {"t=" + std::to_string(t + 1) + ",v1=" + sig, t, "No signatures found matching the expected signature for payload"},
        {good, t + 301, "Timestamp outside the tolerance zone"},
    };
    for (const auto& c : cases) {
        const Status s = verifier.Verify(payload, c.header, Timestamp(c.now));
        ASSERT_FALSE(s.ok()) << c.header;
        EXPECT_EQ(s.error().message, c.message) << c.header;
        EXPECT_EQ(s.error().param, "Stripe-Signature");
    }
    EXPECT_TRUE(verifier.Verify(payload, good, Timestamp(t + 300)).ok());  // exactly at the tolerance
}

TEST(WebhookSignatureTest, AnyV1AndAnySecretMatches) {
    const std::string payload = R"({"id":"evt_rot"})";
    const int64_t t = 1700000000;
    const std::string old_header = StripeWebhookVerifier::SignHeader("whsec_old", payload, t);
    const std::string new_sig = StripeWebhookVerifier::SignHeader("whsec_new", payload, t).substr(13);
    // Stripe sends one v1 per active secret while rolling; v0 and unknown schemes are ignored.
    const std::string header = old_header + ",v1=" + new_sig.substr(new_sig.find("v1=") + 3) + ",v0=deadbeef,x9=1";
    EXPECT_TRUE(StripeWebhookVerifier({"whsec_new"}, 300).Verify(payload, header, Timestamp(t)).ok());
    EXPECT_TRUE(StripeWebhookVerifier({"whsec_old"}, 300).Verify(payload, header, Timestamp(t)).ok());
    EXPECT_TRUE(StripeWebhookVerifier({"whsec_other", "whsec_old"}, 300).Verify(payload, old_header, Timestamp(t)).ok());
    EXPECT_FALSE(StripeWebhookVerifier({"whsec_other"}, 300).Verify(payload, header, Timestamp(t)).ok());
    StripeWebhookVerifier later({"whsec_other"}, 300);
    later.AddSecret("whsec_old");  // e.g. the sandbox's endpoint secret, known only after start
    EXPECT_TRUE(later.Verify(payload, old_header, Timestamp(t)).ok());
}

}  // namespace
}  // namespace tally

// HmacSha256Hex keeps one OpenSSL context per thread and sets only the key per call: alternating keys (and the
// empty key, which OpenSSL would read as "keep the previous key" if passed as null) must each give their own MAC.
TEST(HmacSha256Hex, MatchesRfc4231AndResetsTheKeyOnEveryCall) {
    const std::string jefe = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";   // RFC 4231 case 2
    const std::string empty = "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad";  // key "", data ""
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(tally::HmacSha256Hex("Jefe", "what do ya want for nothing?"), jefe);
        EXPECT_EQ(tally::HmacSha256Hex(std::string_view(), ""), empty);  // right after a non-empty key
        EXPECT_EQ(tally::HmacSha256Hex("Jefe", "what do ya want for nothing?"), jefe);
        EXPECT_EQ(tally::HmacSha256Hex("", ""), empty);
    }
}

namespace tally {
namespace {

// fuzz/regressions/webhook_signature: a validly signed header with t far in the past overflowed now - t.
TEST(WebhookSignatureTest, ExtremeSignedTimestampsAreRefusedWithoutOverflow) {
    const std::string payload = R"({"id":"evt_t"})";
    StripeWebhookVerifier verifier({"whsec_x"}, 300);
    for (const int64_t t : {INT64_MIN, INT64_MIN + 1, int64_t{-1}}) {
        const Status s = verifier.Verify(payload, StripeWebhookVerifier::SignHeader("whsec_x", payload, t),
                                         Timestamp(1700000000));
        ASSERT_FALSE(s.ok()) << t;
        EXPECT_EQ(s.error().message, "Timestamp outside the tolerance zone");
    }
    // A future timestamp is accepted, as stripe-node accepts it (only the age is checked).
    EXPECT_TRUE(verifier.Verify(payload, StripeWebhookVerifier::SignHeader("whsec_x", payload, INT64_MAX),
                                Timestamp(1700000000)).ok());
}

}  // namespace
}  // namespace tally
