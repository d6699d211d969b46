#pragma once
// Thin wrappers over OpenSSL 3 used for webhook signatures and API key hashing. Thread-safe.
#include <optional>
#include <string>
#include <string_view>

namespace tally {

/// Lowercase hex HMAC-SHA256 of |message| keyed with the bytes of |key|.
std::string HmacSha256Hex(std::string_view key, std::string_view message);
/// Lowercase hex SHA-256 of |data|.
std::string Sha256Hex(std::string_view data);
/// Compares in time independent of where the inputs differ (lengths may leak).
bool ConstantTimeEquals(std::string_view a, std::string_view b);
/// Decodes standard Base64 (with padding); nullopt if |text| is not valid Base64.
std::optional<std::string> Base64Decode(std::string_view text);
/// |bytes| random bytes from OpenSSL's CSPRNG, hex-encoded (2*bytes characters). Aborts if the RNG fails.
std::string RandomHex(size_t bytes);

}  // namespace tally
