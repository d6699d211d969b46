#pragma once
// The SecretHasher port over OpenSSL (adapters/crypto.hpp).
#include "adapters/crypto.hpp"
#include "app/ports.hpp"

namespace tally {

/// SHA-256, CSPRNG and constant-time comparison for API keys. Thread-safe, stateless.
class OpenSslSecretHasher final : public SecretHasher {
public:
    std::string Sha256Hex(std::string_view data) const override { return tally::Sha256Hex(data); }
    std::string RandomHex(size_t bytes) const override { return tally::RandomHex(bytes); }
    bool Equal(std::string_view a, std::string_view b) const override { return ConstantTimeEquals(a, b); }
    std::string HmacSha256Hex(std::string_view key, std::string_view message) const override {
        return tally::HmacSha256Hex(key, message);
    }
};

}  // namespace tally
