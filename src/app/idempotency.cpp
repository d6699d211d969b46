#include "app/idempotency.hpp"

namespace tally {
namespace {

Error KeyInUse() {
    return Error{ErrorCode::kConflict,
                 "There is currently another in-progress request using this Idempotent Key (that probably means you "
                 "submitted twice, and the other request is still going through). Please try again later.",
                 "Idempotency-Key", ErrorReason::kIdempotencyKeyInUse};
}

}  // namespace

Error IdempotencyKeyReused(std::string param) {
    return Error{ErrorCode::kInvalidArgument,
                 "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                 std::move(param), ErrorReason::kIdempotencyKeyReused};
}

Result<std::optional<IdempotentOutcome>> IdempotencyService::Existing(const IdempotencyRequest& request,
                                                                      const IdempotencyRecord& record,
                                                                      Timestamp now) const {
    if (record.request_hash != request.request_hash) return IdempotencyKeyReused("Idempotency-Key");
    if (record.state == IdempotencyState::kDone) {
        return std::optional<IdempotentOutcome>(IdempotentOutcome{{record.status, record.response_body}, true});
    }
    if (record.locked_until && *record.locked_until > now) return KeyInUse();
    return std::optional<IdempotentOutcome>();  // a crashed holder's claim: run again
}

Result<IdempotentOutcome> IdempotencyService::RunInStore(const IdempotencyRequest& request,
                                                         const std::function<Result<StoredResponse>(StoreTx&)>& fn) {
    return RunInStoreRedacted(request, [&](StoreTx& tx) -> Result<std::pair<StoredResponse, StoredResponse>> {
        TALLY_ASSIGN_OR_RETURN(StoredResponse response, fn(tx));
        return std::make_pair(response, response);
    });
}

Result<IdempotentOutcome> IdempotencyService::RunInStoreRedacted(
    const IdempotencyRequest& request,
    const std::function<Result<std::pair<StoredResponse, StoredResponse>>(StoreTx&)>& fn) {
    IdempotentOutcome out;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, RunInTransaction(tx, request, fn));
        return {};
    }));
    return out;
}

Result<IdempotentOutcome> IdempotencyService::RunInTransaction(
    StoreTx& tx, const IdempotencyRequest& request,
    const std::function<Result<std::pair<StoredResponse, StoredResponse>>(StoreTx&)>& fn) {
    const Timestamp now = clock_.Now();
    std::optional<IdempotencyRecord> existing;
    if (!request.key.empty()) {
        TALLY_ASSIGN_OR_RETURN(existing, tx.keys().GetIdempotency(request.api_key_id, request.key));
        if (existing) {
            TALLY_ASSIGN_OR_RETURN(auto decided, Existing(request, *existing, now));
            if (decided) return std::move(*decided);
        }
    }
    IdempotentOutcome out;
    TALLY_ASSIGN_OR_RETURN(auto responses, fn(tx));
    out.response = std::move(responses.first);
    if (request.key.empty()) return out;
    const IdempotencyRecord record{request.api_key_id, request.key, request.request_hash, IdempotencyState::kDone,
                                   responses.second.status, responses.second.body, now, std::nullopt};
    TALLY_TRY(existing ? tx.keys().UpdateIdempotency(record) : tx.keys().InsertIdempotency(record));
    return out;
}

Result<IdempotentOutcome> IdempotencyService::RunWithExternalEffects(const IdempotencyRequest& request,
                                                                     const std::function<Result<StoredResponse>()>& fn) {
    if (request.key.empty()) {
        TALLY_ASSIGN_OR_RETURN(StoredResponse response, fn());
        return IdempotentOutcome{std::move(response), false};
    }
    const Timestamp now = clock_.Now();
    const Timestamp claimed_until = now.PlusSeconds(kIdempotencyLockSeconds);
    std::optional<IdempotentOutcome> decided;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto existing, tx.keys().GetIdempotency(request.api_key_id, request.key));
        if (existing) {
            TALLY_ASSIGN_OR_RETURN(decided, Existing(request, *existing, now));
        }
        if (decided) return {};
        const IdempotencyRecord claim{request.api_key_id, request.key, request.request_hash,
                                      IdempotencyState::kInFlight, 0, "", now, claimed_until};
        return existing ? tx.keys().UpdateIdempotency(claim) : tx.keys().InsertIdempotency(claim);
    }));
    if (decided) return std::move(*decided);
    auto response = fn();
    if (!response.ok()) {
        // Nothing to replay: free the key so the client's retry runs (the store may be down; then the claim
        // lapses by itself).
        (void)store_.Write([&](StoreTx& tx) {
            return tx.keys().ReleaseIdempotencyClaim(request.api_key_id, request.key, claimed_until);
        });
        return response.error();
    }
    // Fenced on this request's own claim: if it lapsed and a retry took the key over, that retry's record stands.
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(bool finished,
                               tx.keys().FinishIdempotencyClaim({request.api_key_id, request.key, request.request_hash,
                                                          IdempotencyState::kDone, response->status, response->body,
                                                          now, std::nullopt},
                                                         claimed_until));
        (void)finished;
        return {};
    }));
    return IdempotentOutcome{std::move(*response), false};
}

Result<int> IdempotencyService::Prune() {
    int pruned = 0;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(pruned, tx.keys().PruneIdempotency(clock_.Now().PlusSeconds(-kIdempotencyRetentionSeconds)));
        return {};
    }));
    return pruned;
}

}  // namespace tally
