#include "domain/result.hpp"

namespace tally {

const char* ErrorCodeName(ErrorCode code) {
    switch (code) {
        case ErrorCode::kInvalidArgument: return "invalid_argument";
        case ErrorCode::kUnauthenticated: return "unauthenticated";
        case ErrorCode::kPermissionDenied: return "permission_denied";
        case ErrorCode::kNotFound: return "not_found";
        case ErrorCode::kConflict: return "conflict";
        case ErrorCode::kPayloadTooLarge: return "payload_too_large";
        case ErrorCode::kInsufficientCredits: return "insufficient_credits";
        case ErrorCode::kPaymentRequired: return "payment_required";
        case ErrorCode::kUnavailable: return "unavailable";
        case ErrorCode::kInternal: return "internal";
    }
    return "internal";
}

const char* ErrorReasonName(ErrorReason reason) {
    switch (reason) {
        case ErrorReason::kNone: return "";
        case ErrorReason::kParameterMissing: return "parameter_missing";
        case ErrorReason::kParameterInvalid: return "parameter_invalid";
        case ErrorReason::kParameterUnknown: return "parameter_unknown";
        case ErrorReason::kPayloadTooLarge: return "payload_too_large";
        case ErrorReason::kMalformedJson: return "malformed_json";
        case ErrorReason::kMalformedPayload: return "malformed_payload";
        case ErrorReason::kSignatureVerificationFailed: return "signature_verification_failed";
        case ErrorReason::kIdempotencyKeyReused: return "idempotency_error";
        case ErrorReason::kIdempotencyKeyInUse: return "idempotency_key_in_use";
        case ErrorReason::kResourceMissing: return "resource_missing";
        case ErrorReason::kRouteNotFound: return "route_not_found";
        case ErrorReason::kMethodNotAllowed: return "method_not_allowed";
        case ErrorReason::kStripeNotConfigured: return "stripe_not_configured";
        case ErrorReason::kApiKeyRevoked: return "api_key_revoked";
        case ErrorReason::kInsufficientScope: return "insufficient_scope";
        case ErrorReason::kStoreUnavailable: return "service_unavailable";
        case ErrorReason::kUrlInvalid: return "url_invalid";
        case ErrorReason::kResourceLimitExceeded: return "resource_limit_exceeded";
        case ErrorReason::kResourceAlreadyExists: return "resource_already_exists";
        case ErrorReason::kLastOwner: return "last_owner";
        case ErrorReason::kCustomerNotOrganization: return "customer_not_organization";
        case ErrorReason::kUserNotMember: return "user_not_member";
        case ErrorReason::kCustomerSessionExpired: return "customer_session_expired";
        case ErrorReason::kCustomerSessionRevoked: return "customer_session_revoked";
        case ErrorReason::kPaymentMethodRequired: return "payment_method_required";
        case ErrorReason::kCardDeclined: return "card_declined";
        case ErrorReason::kSubscriptionNotChangeable: return "subscription_not_changeable";
        case ErrorReason::kPlanArchived: return "plan_archived";
        case ErrorReason::kStripeSyncPending: return "stripe_sync_pending";
        case ErrorReason::kUsageLimitExceeded: return "limit_exceeded";
        case ErrorReason::kReservationSettled: return "reservation_settled";
        case ErrorReason::kTransferNotReversible: return "transfer_not_reversible";
        case ErrorReason::kAutoPurchaseLimitReached: return "auto_purchase_limit_reached";
    }
    return "";
}

}  // namespace tally
