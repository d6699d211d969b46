#include "adapters/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <vector>

#include "domain/result.hpp"

namespace tally {
namespace {
std::string ToHex(const unsigned char* data, size_t len) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out(len * 2, '0');
    for (size_t i = 0; i < len; ++i) {
        out[2 * i] = kHex[data[i] >> 4];
        out[2 * i + 1] = kHex[data[i] & 0xf];
    }
    return out;
}
}  // namespace

// HMAC() fetches the HMAC and SHA-256 implementations from OpenSSL's providers on every call, which cost as much
// as hashing a 4 KB webhook. Fetch once per process and keep one context per thread; only the key is set per call.
std::string HmacSha256Hex(std::string_view key, std::string_view message) {
    static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);  // shared, thread-safe, never freed
    TALLY_INVARIANT(mac != nullptr);
    struct ThreadContext {
        EVP_MAC_CTX* ctx = nullptr;
        ThreadContext() {
            ctx = EVP_MAC_CTX_new(mac);
            char digest[] = "SHA256";
            const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                                         OSSL_PARAM_construct_end()};
            TALLY_INVARIANT(ctx != nullptr && EVP_MAC_CTX_set_params(ctx, params) == 1);
        }
        ~ThreadContext() { EVP_MAC_CTX_free(ctx); }
        ThreadContext(const ThreadContext&) = delete;
        ThreadContext& operator=(const ThreadContext&) = delete;
    };
    thread_local ThreadContext t;
    // A null key would mean "keep the previous key": an empty key needs a non-null pointer.
    static const unsigned char kEmpty[1] = {0};
    const auto* key_bytes = key.empty() ? kEmpty : reinterpret_cast<const unsigned char*>(key.data());
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t md_len = 0;
    TALLY_INVARIANT(EVP_MAC_init(t.ctx, key_bytes, key.size(), nullptr) == 1);
    TALLY_INVARIANT(EVP_MAC_update(t.ctx, reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1);
    TALLY_INVARIANT(EVP_MAC_final(t.ctx, md, &md_len, sizeof md) == 1);
    return ToHex(md, md_len);
}

std::string Sha256Hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    TALLY_INVARIANT(EVP_Digest(data.data(), data.size(), md, &md_len, EVP_sha256(), nullptr) == 1);
    return ToHex(md, md_len);
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<std::string> Base64Decode(std::string_view text) {
    if (text.empty() || text.size() % 4 != 0) return std::nullopt;
    std::string out(text.size() / 4 * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
    if (n < 0) return std::nullopt;
    size_t len = static_cast<size_t>(n);
    // EVP_DecodeBlock counts padding as zero bytes: drop one per '='.
    for (size_t i = text.size(); i > 0 && text[i - 1] == '='; --i) --len;
    out.resize(len);
    return out;
}

std::string RandomHex(size_t bytes) {
    std::vector<unsigned char> buf(bytes);
    TALLY_INVARIANT(RAND_bytes(buf.data(), static_cast<int>(buf.size())) == 1);
    return ToHex(buf.data(), buf.size());
}

}  // namespace tally
