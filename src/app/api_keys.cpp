#include "app/api_keys.hpp"

#include <mutex>

#include "domain/text.hpp"

namespace tally {

Result<ApiKeyScope> ParseApiKeyScope(std::string_view text) {
    if (text == "admin") return ApiKeyScope::kAdmin;
    if (text == "read_only") return ApiKeyScope::kReadOnly;
    return InvalidArgument("scope must be admin or read_only", "scope");
}

const char* ApiKeyScopeName(ApiKeyScope scope) { return scope == ApiKeyScope::kAdmin ? "admin" : "read_only"; }

ApiKeyService::ApiKeyService(Store& store, const Clock& clock, const SecretHasher& hasher,
                             const std::string& env_admin_key)
    : store_(store), clock_(clock), hasher_(hasher),
      env_admin_hash_(env_admin_key.empty() ? std::string() : hasher.Sha256Hex(env_admin_key)) {}

Result<CreatedApiKey> ApiKeyService::Create(ApiKeyScope scope, const std::string& name, const std::string& actor) {
    std::optional<CreatedApiKey> out;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, Create(tx, scope, name, actor));
        return {};
    }));
    return std::move(*out);
}

Result<CreatedApiKey> ApiKeyService::Create(StoreTx& tx, ApiKeyScope scope, const std::string& name,
                                            const std::string& actor) {
    if (IsBlank(name)) return MissingArgument("name is required", "name");
    if (name.size() > kApiKeyNameBytesMax || !IsValidUtf8(name)) {
        return InvalidArgument("name must be UTF-8 of at most " + std::to_string(kApiKeyNameBytesMax) + " bytes", "name");
    }
    CreatedApiKey out;
    out.secret = "tk_" + hasher_.RandomHex(kApiKeySecretBytes);
    const Timestamp now = clock_.Now();
    out.record = ApiKeyRecord{"key_" + hasher_.RandomHex(8), hasher_.Sha256Hex(out.secret), ApiKeyScopeName(scope), now,
                              name, std::nullopt, std::nullopt};
    TALLY_ASSIGN_OR_RETURN(auto keys, tx.keys().ListApiKeys());
    if (keys.size() >= static_cast<size_t>(kApiKeyCountMax)) {
        return Conflict("at most " + std::to_string(kApiKeyCountMax) + " API keys can exist", "name");
    }
    TALLY_TRY(tx.keys().InsertApiKey(out.record));
    TALLY_TRY(tx.audit().Append({0, CustomerId(""), now, "api_key_created", "", out.record.id, actor,
                              "scope=" + out.record.scope + " name=" + name}));
    return out;
}

Result<std::vector<ApiKeyRecord>> ApiKeyService::List() {
    std::vector<ApiKeyRecord> keys;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(keys, tx.keys().ListApiKeys());
        return {};
    }));
    return keys;
}

Result<ApiKeyRecord> ApiKeyService::Revoke(const std::string& id, const std::string& actor) {
    std::optional<ApiKeyRecord> key;
    const Timestamp now = clock_.Now();
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(key, tx.keys().GetApiKey(id));
        if (!key) return NotFound("no such API key: '" + id + "'", "id");
        if (key->revoked_at) return {};
        key->revoked_at = now;
        TALLY_TRY(tx.keys().UpdateApiKey(*key));
        return tx.audit().Append({0, CustomerId(""), now, "api_key_revoked", key->id, "", actor,
                               "scope=" + key->scope + " name=" + key->name});
    }));
    // Committed: from here no thread of this process accepts the key (Authenticate misses the cache and reads
    // revoked_at).
    std::unique_lock lock(mu_);
    cache_.erase(key->hash_hex);
    revoked_.insert(key->hash_hex);
    return *key;
}

Result<Principal> ApiKeyService::Authenticate(std::string_view secret) {
    const std::string hash = hasher_.Sha256Hex(secret);
    if (!env_admin_hash_.empty() && hasher_.Equal(hash, env_admin_hash_)) {
        return Principal{kEnvAdminKeyId, ApiKeyScope::kAdmin};
    }
    const Timestamp now = clock_.Now();
    {
        std::shared_lock lock(mu_);
        auto it = cache_.find(hash);
        if (it != cache_.end() && now.unix_seconds() - it->second.checked_at.unix_seconds() < kApiKeyRecheckSeconds) {
            return it->second.principal;
        }
    }
    std::optional<ApiKeyRecord> key;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(key, tx.keys().FindApiKeyByHash(hash));
        return {};
    }));
    if (!key || key->revoked_at) {
        std::unique_lock lock(mu_);
        cache_.erase(hash);
        if (!key) return Error{ErrorCode::kUnauthenticated, "Invalid API key provided.", "", ErrorReason::kNone};
        return Error{ErrorCode::kUnauthenticated, "This API key was revoked.", "", ErrorReason::kApiKeyRevoked};
    }
    auto scope = ParseApiKeyScope(key->scope);
    if (!scope.ok()) return Internal("API key " + key->id + " has an unknown scope '" + key->scope + "'");
    Principal principal{key->id, *scope};
    if (!key->last_used_at || now.unix_seconds() - key->last_used_at->unix_seconds() >= kApiKeyLastUsedResolutionSeconds) {
        // Best effort: a failed write costs a less precise last_used_at, never the request.
        key->last_used_at = now;
        (void)store_.Write([&](StoreTx& tx) { return tx.keys().UpdateApiKey(ApiKeyRecord{key->id, "", "", now, "", now, {}}); });
    }
    std::unique_lock lock(mu_);
    // A revocation that committed while this thread read the key wins.
    if (revoked_.contains(hash)) {
        return Error{ErrorCode::kUnauthenticated, "This API key was revoked.", "", ErrorReason::kApiKeyRevoked};
    }
    cache_[hash] = Cached{principal, now};
    return principal;
}

}  // namespace tally
