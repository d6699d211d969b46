#pragma once
// Idempotency-Key handling (Stripe's contract), decided inside the store transaction that makes the change.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "app/ports.hpp"
#include "app/store.hpp"

namespace tally {

constexpr size_t kIdempotencyKeyBytesMax = 255;           // Stripe's limit
constexpr int64_t kIdempotencyRetentionSeconds = 86400;   // Stripe prunes keys after 24 hours; so does Tally
// A request holding a key for work outside the store (Stripe calls) keeps it at most this long; after that a retry
// may take it over (the holder crashed). It must outlast the slowest live holder: a checkout makes up to three
// Stripe calls, each up to 3 attempts of the client's 80 s timeout plus backoff (~12 min). A holder whose claim was
// taken over anyway finds out when it finishes (its write is fenced on its own claim) and does not overwrite the
// newer one; the effect itself is deduplicated by Stripe through the derived idempotency key.
constexpr int64_t kIdempotencyLockSeconds = 900;

/// Stripe's 400 idempotency_error (reason kIdempotencyKeyReused) for a key used again with other parameters; |param|
/// names where the key came from ("Idempotency-Key", or a body field such as "idempotency_key").
Error IdempotencyKeyReused(std::string param);

/// A response as the API rendered it; replayed byte for byte to a request that repeats the key.
struct StoredResponse {
    int status = 200;
    std::string body;
};

/// One request's claim on an Idempotency-Key. |key| empty: the request carries none (runs unguarded).
struct IdempotencyRequest {
    std::string api_key_id;    // keys are scoped to the API key that used them
    std::string key;
    std::string request_hash;  // digest of method, path and body: a replay must match it
};

/// What a request with a key gets: a stored response to replay, or nothing (it ran, or may run).
struct IdempotentOutcome {
    StoredResponse response;
    bool replayed = false;
};

/// Runs mutations at most once per (API key, Idempotency-Key). Thread-safe.
///
/// Errors: kInvalidArgument reason kIdempotencyKeyReused (Stripe's 400 idempotency_error) when the key was used
/// with other parameters; kConflict reason kIdempotencyKeyInUse (Stripe's 409) while the key's first request is
/// still running outside the store. Only successful responses are stored: a request that failed changed nothing
/// (its transaction rolled back), so its retry runs again.
class IdempotencyService {
public:
    IdempotencyService(Store& store, const Clock& clock) : store_(store), clock_(clock) {}

    /// For mutations that only touch the store: checks the key, runs |fn| and stores its response in one write
    /// transaction, so the change and its record commit together. Concurrent twins serialise on the store's
    /// write lock and the later one replays.
    Result<IdempotentOutcome> RunInStore(const IdempotencyRequest& request,
                                         const std::function<Result<StoredResponse>(StoreTx&)>& fn);
    /// RunInStore whose |fn| returns the response to send and the (redacted) one to store for replays.
    Result<IdempotentOutcome> RunInStoreRedacted(
        const IdempotencyRequest& request,
        const std::function<Result<std::pair<StoredResponse, StoredResponse>>(StoreTx&)>& fn);
    /// RunInStoreRedacted inside the caller's write transaction |tx| (a batch whose items each carry a key). On an
    /// error nothing of |fn| may be kept: the caller rolls |tx| (or its savepoint) back.
    Result<IdempotentOutcome> RunInTransaction(
        StoreTx& tx, const IdempotencyRequest& request,
        const std::function<Result<std::pair<StoredResponse, StoredResponse>>(StoreTx&)>& fn);
    /// For mutations with effects outside the store (Stripe calls): claims the key in its own transaction, runs
    /// |fn| outside any transaction, then stores its response (|stored_body|, when given, is stored instead of the
    /// response body: a replay then gets that, e.g. without a secret shown once). A twin arriving meanwhile gets
    /// kIdempotencyKeyInUse.
    /// |fn| must itself be safe to repeat after a crash (Stripe calls carry idempotency keys derived from
    /// |request|), because a lapsed claim (kIdempotencyLockSeconds) lets a retry run it again.
    Result<IdempotentOutcome> RunWithExternalEffects(const IdempotencyRequest& request,
                                                     const std::function<Result<StoredResponse>()>& fn);
    /// Deletes keys older than kIdempotencyRetentionSeconds; returns how many.
    Result<int> Prune();

private:
    /// The decision for an existing record: replay, refuse, or (a lapsed claim) nullopt to run again.
    Result<std::optional<IdempotentOutcome>> Existing(const IdempotencyRequest& request,
                                                      const IdempotencyRecord& record, Timestamp now) const;

    Store& store_;
    const Clock& clock_;
};

}  // namespace tally
