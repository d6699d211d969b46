#pragma once
// The keys aggregate of the Store port: API keys and customer sessions (both hashed) and the Idempotency-Keys each
// one has used.
// Reached from a transaction as StoreTx::keys().
#include <optional>
#include <string>
#include <vector>

#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

struct ApiKeyRecord {
    std::string id;        // key_..., public
    std::string hash_hex;  // SHA-256 of the secret
    std::string scope;     // "admin" | "read_only" (ApiKeyScopeName)
    Timestamp created_at;
    std::string name;
    std::optional<Timestamp> last_used_at;  // coarse: refreshed at most every kApiKeyLastUsedResolutionSeconds
    std::optional<Timestamp> revoked_at;    // set once; a revoked key authenticates nothing
};

/// A customer session: a short-lived token for a browser page, acting for one app user inside one customer.
struct CustomerSessionRecord {
    std::string id;        // csn_..., public
    std::string hash_hex;  // SHA-256 of the token
    std::string customer_id;
    std::string user_id;
    Timestamp created_at;
    Timestamp expires_at;
    std::optional<Timestamp> revoked_at;
};

enum class IdempotencyState { kInFlight, kDone };

/// An Idempotency-Key as used by one API key: held while its first request runs, then its stored response.
struct IdempotencyRecord {
    std::string api_key_id;
    std::string key;
    std::string request_hash;
    IdempotencyState state = IdempotencyState::kInFlight;
    int status = 0;              // kDone: the HTTP status of the stored response
    std::string response_body;   // kDone: the response replayed to later requests
    Timestamp created_at;
    std::optional<Timestamp> locked_until;  // kInFlight: after this a crashed holder's claim may be taken over
};

/// Reads and writes of API keys and idempotency records inside one transaction. Not thread-safe.
class KeyStoreTx {
public:
    virtual ~KeyStoreTx() = default;
    /// kConflict if the id or the hash is already recorded.
    virtual Status InsertApiKey(const ApiKeyRecord& key) = 0;
    virtual Result<std::optional<ApiKeyRecord>> FindApiKeyByHash(const std::string& hash_hex) = 0;
    virtual Result<std::optional<ApiKeyRecord>> GetApiKey(const std::string& id) = 0;
    /// Oldest first, revoked keys included.
    virtual Result<std::vector<ApiKeyRecord>> ListApiKeys() = 0;
    /// Sets revoked_at (if unset) and last_used_at (if given) of key |id|.
    virtual Status UpdateApiKey(const ApiKeyRecord& key) = 0;

    /// kConflict if the id or the hash is already recorded.
    virtual Status InsertCustomerSession(const CustomerSessionRecord& session) = 0;
    virtual Result<std::optional<CustomerSessionRecord>> FindCustomerSessionByHash(const std::string& hash_hex) = 0;
    virtual Result<std::optional<CustomerSessionRecord>> GetCustomerSession(const std::string& id) = 0;
    /// Sets revoked_at of session |id| if unset.
    virtual Status RevokeCustomerSession(const std::string& id, Timestamp at) = 0;
    /// Deletes sessions that expired before |before|; returns how many.
    virtual Result<int> PruneCustomerSessions(Timestamp before) = 0;

    virtual Result<std::optional<IdempotencyRecord>> GetIdempotency(const std::string& api_key_id,
                                                                    const std::string& key) = 0;
    /// kConflict if (api_key_id, key) is already recorded.
    virtual Status InsertIdempotency(const IdempotencyRecord& record) = 0;
    /// Replaces the record of (record.api_key_id, record.key).
    virtual Status UpdateIdempotency(const IdempotencyRecord& record) = 0;
    /// Completes the in-flight claim of (done.api_key_id, done.key) that expires at |claimed_until| with |done|;
    /// false (and nothing written) if that claim is no longer there (it lapsed and another request took it over).
    virtual Result<bool> FinishIdempotencyClaim(const IdempotencyRecord& done, Timestamp claimed_until) = 0;
    /// Deletes that in-flight claim if it is still the one that expires at |claimed_until|.
    virtual Status ReleaseIdempotencyClaim(const std::string& api_key_id, const std::string& key,
                                           Timestamp claimed_until) = 0;
    /// Deletes records created before |before|; returns how many.
    virtual Result<int> PruneIdempotency(Timestamp before) = 0;
};

}  // namespace tally
