#pragma once
// Errors as values (STYLE.md, after leveldb's Status and userver's expected).
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace tally {

/// Error categories; the HTTP adapter maps each to a status code at the edge.
enum class ErrorCode {
    kInvalidArgument,   // 400: the caller sent something wrong
    kUnauthenticated,   // 401
    kPermissionDenied,  // 403
    kNotFound,          // 404
    kConflict,          // 409: e.g. an idempotency key replayed with other parameters
    kPayloadTooLarge,   // 413
    kInsufficientCredits,
    kPaymentRequired,   // 402: a payment method is missing, or the card was declined
    kUnavailable,       // 503: a dependency (database, Stripe) failed; retryable
    kInternal,          // 500: a bug
};

const char* ErrorCodeName(ErrorCode code);

/// The machine-readable reason within a category: what an API client branches on (Stripe's `error.code`).
/// kNone takes the category's default code at the edge. Never derived from message text.
enum class ErrorReason {
    kNone,
    kParameterMissing,             // a required parameter is absent or null
    kParameterInvalid,             // present but wrong (type, range, format)
    kParameterUnknown,             // a parameter the endpoint does not take
    kPayloadTooLarge,              // a body over its limit
    kMalformedJson,                // a body that is not JSON
    kMalformedPayload,             // a webhook body without a usable event envelope
    kSignatureVerificationFailed,  // Stripe-Signature missing, malformed or matching no secret
    kIdempotencyKeyReused,         // an Idempotency-Key replayed with other parameters (Stripe's idempotency_error)
    kIdempotencyKeyInUse,          // an Idempotency-Key whose first request is still running
    kResourceMissing,              // an unknown id
    kRouteNotFound,                // no such endpoint
    kMethodNotAllowed,
    kStripeNotConfigured,          // the endpoint needs Stripe and no key (nor the sandbox) is configured
    kApiKeyRevoked,
    kInsufficientScope,            // the API key's scope does not allow the call
    kStoreUnavailable,
    kUrlInvalid,                   // a URL that is not http(s)://host[:port]/path (Stripe's url_invalid)
    kResourceLimitExceeded,        // creating one more would pass a named maximum (endpoints, say)
    kResourceAlreadyExists,        // creating what already exists (a member added twice)
    kLastOwner,                    // the change would leave an organization without an owner
    kCustomerNotOrganization,      // an organization-only call on an individual customer
    kUserNotMember,                // the app user does not belong to the customer
    kCustomerSessionExpired,
    kCustomerSessionRevoked,
    kPaymentMethodRequired,        // a charge is due and the customer has no payment method on file
    kCardDeclined,                 // Stripe's card_error: the card was declined or needs authentication
    kSubscriptionNotChangeable,    // the subscription's status does not allow the change (canceled, ...)
    kPlanArchived,                 // a sale of a plan that is no longer sold
    kStripeSyncPending,            // the plan's change is not in Stripe yet; it is being pushed
    kUsageLimitExceeded,           // one more (a member past the seats) would pass the plan's hard limit
    kReservationSettled,           // a credit reservation already captured, released or expired
    kTransferNotReversible,        // a reversal of anything but a deduction (a grant, a reversal, ...)
    kAutoPurchaseLimitReached,     // max_per_month auto-purchases this month already
};

/// The API code of |reason| ("parameter_missing", ...); "" for kNone.
const char* ErrorReasonName(ErrorReason reason);

/// An error: a category, a human message, optionally the parameter (or JSON path) at fault, and a reason.
struct Error {
    ErrorCode code;
    std::string message;
    std::string param;
    ErrorReason reason = ErrorReason::kNone;
};

inline Error InvalidArgument(std::string message, std::string param = {}) {
    return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param), ErrorReason::kParameterInvalid};
}
/// kInvalidArgument for a required parameter that is absent.
inline Error MissingArgument(std::string message, std::string param) {
    return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param), ErrorReason::kParameterMissing};
}
/// |error| with its reason replaced.
inline Error WithReason(Error error, ErrorReason reason) {
    error.reason = reason;
    return error;
}
inline Error NotFound(std::string message, std::string param = {}) {
    return Error{ErrorCode::kNotFound, std::move(message), std::move(param), ErrorReason::kResourceMissing};
}
inline Error Conflict(std::string message, std::string param = {}) {
    return Error{ErrorCode::kConflict, std::move(message), std::move(param)};
}
inline Error Unavailable(std::string message) { return Error{ErrorCode::kUnavailable, std::move(message), {}}; }
inline Error Internal(std::string message) { return Error{ErrorCode::kInternal, std::move(message), {}}; }

/// A value of T or an Error. Not thread-safe (a plain value type).
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor): ergonomic returns
    Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

/// Result of an operation that has no value.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { return error_; }

private:
    Error error_{ErrorCode::kInternal, {}, {}, ErrorReason::kNone};
    bool ok_ = true;
};

using Status = Result<void>;

[[noreturn]] inline void InvariantFailed(const char* expr, const char* file, int line) {
    std::fprintf(stderr, "tally: invariant failed: %s at %s:%d\n", expr, file, line);
    std::abort();
}

}  // namespace tally

/// Always-on invariant check for programmer errors (never for user input): aborts.
#define TALLY_INVARIANT(expr) ((expr) ? (void)0 : ::tally::InvariantFailed(#expr, __FILE__, __LINE__))
/// Debug-only assertion.
#define TALLY_ASSERT(expr) assert(expr)

/// Propagates an error from an expression returning Result/Status.
#define TALLY_TRY(expr)                                \
    do {                                               \
        auto tally_try_r_ = (expr);                    \
        if (!tally_try_r_.ok()) return tally_try_r_.error(); \
    } while (0)

#define TALLY_CONCAT_INNER(a, b) a##b
#define TALLY_CONCAT(a, b) TALLY_CONCAT_INNER(a, b)
/// Declares `lhs` from a Result expression or returns its error. `lhs` is a declaration, so it cannot be
/// parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define TALLY_ASSIGN_OR_RETURN(lhs, expr)                              \
    auto TALLY_CONCAT(tally_r_, __LINE__) = (expr);                    \
    if (!TALLY_CONCAT(tally_r_, __LINE__).ok()) return TALLY_CONCAT(tally_r_, __LINE__).error(); \
    lhs = std::move(TALLY_CONCAT(tally_r_, __LINE__)).value()
// NOLINTEND(bugprone-macro-parentheses)
