#pragma once
// API keys: issued with a scope and a name, stored as SHA-256 digests, revocable, with a coarse last-use time.
#include <chrono>
#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "app/ports.hpp"
#include "app/store.hpp"

namespace tally {

/// What a key may do. kAdmin: everything; kReadOnly: only reads (GET), e.g. for a dashboard or a support tool.
enum class ApiKeyScope { kAdmin, kReadOnly };
/// "admin" | "read_only"; kInvalidArgument (param "scope") otherwise.
Result<ApiKeyScope> ParseApiKeyScope(std::string_view text);
const char* ApiKeyScopeName(ApiKeyScope scope);

/// Who is calling: the key's public id ("key_…", or "env_admin" for TALLY_ADMIN_KEY) and its scope.
struct Principal {
    std::string key_id;
    ApiKeyScope scope = ApiKeyScope::kReadOnly;
};

constexpr size_t kAdminKeyBytesMin = 32;            // TALLY_ADMIN_KEY shorter than this is refused at start
constexpr size_t kApiKeyNameBytesMax = 100;
constexpr size_t kApiKeySecretBytes = 24;           // random bytes in a key (48 hex characters after "tk_")
constexpr int kApiKeyCountMax = 1000;               // stored keys, revoked ones included
// A key checked within this many seconds is trusted from memory. A revocation through this process applies at
// once (the cache entry goes with it); one made by another process (`tally keys revoke`, another node) within
// this bound plus the clock's one-second resolution.
constexpr int64_t kApiKeyRecheckSeconds = 1;
constexpr int64_t kApiKeyLastUsedResolutionSeconds = 60;  // last_used_at is written at most this often per key
constexpr const char* kEnvAdminKeyId = "env_admin";

/// A key as created: the secret is shown this once and never stored.
struct CreatedApiKey {
    ApiKeyRecord record;
    std::string secret;  // "tk_" + 48 hex characters
};

/// Issues, lists, revokes and checks API keys. Thread-safe.
class ApiKeyService {
public:
    /// |env_admin_key|: TALLY_ADMIN_KEY, accepted as an admin key besides stored ones; empty when unset.
    ApiKeyService(Store& store, const Clock& clock, const SecretHasher& hasher, const std::string& env_admin_key);

    /// kInvalidArgument (param "name") for a blank or overlong name; kConflict past kApiKeyCountMax keys.
    /// Audited as api_key_created with cause |actor|.
    Result<CreatedApiKey> Create(ApiKeyScope scope, const std::string& name, const std::string& actor);
    /// Create inside the caller's write transaction |tx|.
    Result<CreatedApiKey> Create(StoreTx& tx, ApiKeyScope scope, const std::string& name, const std::string& actor);
    /// Every stored key, oldest first (digests included; callers render without them).
    Result<std::vector<ApiKeyRecord>> List();
    /// Revokes key |id| for good; kNotFound for an unknown id (TALLY_ADMIN_KEY cannot be revoked here: unset it).
    /// Revoking a revoked key returns it unchanged.
    Result<ApiKeyRecord> Revoke(const std::string& id, const std::string& actor);
    /// The caller of a Bearer |secret|; kUnauthenticated for an unknown key, reason kApiKeyRevoked for a revoked one.
    Result<Principal> Authenticate(std::string_view secret);

private:
    struct Cached {
        Principal principal;
        Timestamp checked_at;
    };

    Store& store_;
    const Clock& clock_;
    const SecretHasher& hasher_;
    std::string env_admin_hash_;  // empty when TALLY_ADMIN_KEY is unset
    std::shared_mutex mu_;
    std::unordered_map<std::string, Cached> cache_;  // digest -> last check
    std::unordered_set<std::string> revoked_;        // digests revoked by this process: never cached again
};

}  // namespace tally
