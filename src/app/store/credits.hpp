#pragma once
// The credit aggregate of the Store port: grants (each a balance, TigerBeetle's account), transfers with their
// client-supplied ids, and the append-only entries that move credits in and out of grants. Reached from a
// transaction as StoreTx::credits().
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "domain/credits.hpp"
#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

struct CreditGrantRecord {
    std::string id;  // "cgr_..."
    CustomerId customer_id;
    GrantType type = GrantType::kPromotional;
    int64_t amount = 0;     // granted
    int64_t remaining = 0;  // 0..amount; moved only together with an entry
    int priority = 10;
    std::optional<Timestamp> expires_at;
    std::string transfer_id;  // the transfer that issued it
    std::string reason;
    Timestamp created;
};

/// One movement: a grant issued, or a deduction. |request| is the transfer's fields in a canonical text: a replay
/// of its id with other fields is refused. The balances after it are kept so a replay answers as the first time.
struct CreditTransferRecord {
    std::string id;  // the client's, or derived (kDerivedTransferIdPrefixes)
    CustomerId customer_id;
    /// "grant" | "deduct" | "reserve" (credits out of grants into a hold) | "capture" (a hold settled: amount spent,
    /// the rest returned) | "release" (a hold returned whole, asked for or expired) | "reverse" (a deduction
    /// returned) | "expire" (what was left in a grant at its expiry)
    std::string kind;
    int64_t amount = 0;
    std::string action;  // the priced action of a deduction, or ""
    std::string metadata;
    std::string request;
    int64_t balance_subscription = 0;
    int64_t balance_bundle = 0;
    int64_t balance_promotional = 0;
    Timestamp created;
    std::string actor;
    std::string reference;  // capture/release: the reservation; reverse: the deduction; expire: the grant
};

/// A hold on credits (POST /v1/credits/reservations): its id is its "reserve" transfer's. Its status moves once,
/// from pending; the credits themselves move only through transfers.
struct CreditReservationRecord {
    std::string id;
    CustomerId customer_id;
    int64_t amount = 0;  // held
    Timestamp expires_at;
    std::string status;  // "pending" | "captured" | "released" | "expired"
    std::optional<int64_t> captured;
    std::optional<Timestamp> settled_at;
    std::string metadata;
    Timestamp created;
};

/// GET /v1/customers/{id}/credit_transactions: newest first, optionally of one kind and within [created_gte,
/// created_lte], after the transfer |starting_after| (its id) in that order.
struct CreditTransferFilter {
    CustomerId customer;
    std::optional<std::string> kind;  // none: all
    std::optional<Timestamp> created_gte;
    std::optional<Timestamp> created_lte;
    std::optional<std::string> starting_after;  // a transfer id: those after it in this order
    int limit = 10;
};

/// An entry of a customer's in-app notification feed (seed 003, ticket 5.1), written in the transaction of what it
/// tells of. |kind| is the event type it goes with (credits.threshold_reached, credits.granted, ...).
struct NotificationRecord {
    std::string id;  // "ntf_..."
    CustomerId customer_id;
    std::string kind;
    std::string message;
    std::string object;  // the event's object, as JSON
    Timestamp created;
    std::optional<Timestamp> dismissed_at;
};

/// Credits into (+) or out of (-) one grant, by one transfer. Never updated or deleted.
struct CreditEntryRecord {
    int64_t id = 0;  // assigned by the store, in commit order
    std::string transfer_id;
    std::string grant_id;
    int64_t amount = 0;
    Timestamp created;
};

/// A credit bundle bought (POST /v1/credits/purchases off-session, POST /v1/credits/checkout_sessions through
/// Checkout). Its id is the client's (the idempotency key) or Tally's ("cpur_..."); the bundle's terms are copied
/// in, so a later catalog change does not alter what was sold. Credits are granted ("purchase:<id>") once, when
/// the payment succeeds; a refund takes back what is left of them.
struct CreditPurchaseRecord {
    std::string id;
    CustomerId customer_id;
    std::string bundle;
    int64_t credits = 0;
    int64_t amount = 0;  // minor units of |currency|
    std::string currency;
    std::optional<int64_t> expires_in_days;
    std::string source;  // "api" (off-session, the saved card) | "checkout" | "auto" (auto-purchase)
    std::string status;  // "pending" | "succeeded" | "failed"
    std::string payment_intent;    // pi_..., once known
    std::string checkout_session;  // cs_... (source checkout)
    std::string checkout_url;
    std::string grant_id;  // the bundle grant, once paid
    std::string failure_code;
    std::string failure_message;
    int64_t amount_refunded = 0;       // cumulative, as Stripe's charge.amount_refunded
    int64_t credits_refunded = 0;      // taken back from the grant
    int64_t credits_refund_spent = 0;  // due back by a refund but already spent
    std::string request;  // canonical fields: the same id with others is refused
    std::string actor;
    Timestamp created;
    Timestamp updated;
};

/// A customer's auto-purchase (issue 13, item 6): when a spend leaves the balance under |threshold|, one purchase of
/// |bundle| starts (|pending_purchase|) unless one is in flight or |max_per_month| of them (pending or paid, this
/// calendar month in UTC) exist; a failed payment is retried at |next_attempt_at| with backoff, and after
/// kAutoPurchaseFailuresMax consecutive failures |enabled| turns off with |disabled_reason|.
struct AutoPurchaseRecord {
    CustomerId customer_id;
    bool enabled = false;
    bool paused = false;  // an admin's pause: nothing starts while set
    int64_t threshold = 0;
    std::string bundle;
    int64_t max_per_month = 1;
    int64_t failures = 0;  // consecutive failed payments
    std::string disabled_reason;
    std::string pending_purchase;  // the purchase in flight, "" none
    int64_t attempts = 0;          // failed attempts of the pending purchase (names its Stripe idempotency key)
    std::optional<Timestamp> next_attempt_at;  // when the pending purchase is charged (again)
    Timestamp updated;
    std::string actor;
};

class CreditStoreTx {
public:
    virtual ~CreditStoreTx() = default;
    /// The customer's grants, oldest first (spent and expired ones too).
    virtual Result<std::vector<CreditGrantRecord>> ListGrants(const CustomerId& customer) = 0;
    virtual Status InsertGrant(const CreditGrantRecord& grant) = 0;
    /// Moves a grant's remaining balance (the store refuses one below 0 or above the amount).
    virtual Status SetGrantRemaining(const std::string& grant_id, int64_t remaining) = 0;
    virtual Result<std::optional<CreditTransferRecord>> GetTransfer(const std::string& id) = 0;
    virtual Status InsertTransfer(const CreditTransferRecord& transfer) = 0;
    virtual Status AppendEntry(const CreditEntryRecord& entry) = 0;
    /// InsertTransfer for each of |transfers| in order (their listing order is theirs), in fewer statements. On an
    /// error some may have been written: the caller rolls back (its transaction, or its savepoint).
    virtual Status InsertTransfers(const std::vector<CreditTransferRecord>& transfers) {
        for (const auto& t : transfers) TALLY_TRY(InsertTransfer(t));
        return {};
    }
    /// AppendEntry for each of |entries| in order, in fewer statements; on an error, as InsertTransfers.
    virtual Status AppendEntries(const std::vector<CreditEntryRecord>& entries) {
        for (const auto& e : entries) TALLY_TRY(AppendEntry(e));
        return {};
    }
    /// The transfer's entries, in order.
    virtual Result<std::vector<CreditEntryRecord>> ListEntries(const std::string& transfer_id) = 0;
    /// Per kind, the sum of amounts of the customer's transfers created at or after |since|.
    virtual Result<std::vector<std::pair<std::string, int64_t>>> SumTransfersSince(const CustomerId& customer,
                                                                                    Timestamp since) = 0;
    virtual Result<std::vector<CreditTransferRecord>> ListTransfers(const CreditTransferFilter& filter) = 0;
    virtual Status InsertReservation(const CreditReservationRecord& reservation) = 0;
    virtual Result<std::optional<CreditReservationRecord>> GetReservation(const std::string& id) = 0;
    /// Settles a pending reservation: status, captured and settled_at (the store refuses one not pending).
    virtual Status SettleReservation(const CreditReservationRecord& reservation) = 0;
    /// The customer's pending reservations (expired ones too, until settled), oldest first.
    virtual Result<std::vector<CreditReservationRecord>> ListPendingReservations(const CustomerId& customer) = 0;
    /// Customers (at most |limit|, each once) with a pending reservation or a grant with credits left whose expiry
    /// is at or before |now|: what the expiry sweep settles.
    virtual Result<std::vector<CustomerId>> ListCustomersWithLapsedCredits(Timestamp now, int limit) = 0;
    virtual Status InsertNotification(const NotificationRecord& n) = 0;
    /// Newest first, after |starting_after| (an id of this customer's); dismissed ones only when asked.
    virtual Result<std::vector<NotificationRecord>> ListNotifications(const CustomerId& customer, bool include_dismissed,
                                                                      const std::optional<std::string>& starting_after,
                                                                      int limit) = 0;
    virtual Result<std::optional<NotificationRecord>> GetNotification(const std::string& id) = 0;
    /// Sets dismissed_at once (a dismissed one keeps its first time).
    virtual Status DismissNotification(const std::string& id, Timestamp at) = 0;
    /// The kinds the customer turned off (every kind is kept unless listed here).
    virtual Result<std::vector<std::string>> MutedNotificationKinds(const CustomerId& customer) = 0;
    virtual Status SetNotificationKindMuted(const CustomerId& customer, const std::string& kind, bool muted) = 0;
    /// Everything, for `tally ledger verify` (by id).
    virtual Status InsertPurchase(const CreditPurchaseRecord& purchase) = 0;
    /// Replaces the purchase's mutable fields (status, payment, grant, failure, refund amounts, updated).
    virtual Status UpdatePurchase(const CreditPurchaseRecord& purchase) = 0;
    virtual Result<std::optional<CreditPurchaseRecord>> GetPurchase(const std::string& id) = 0;
    virtual Result<std::optional<CreditPurchaseRecord>> FindPurchaseByPaymentIntent(const std::string& payment_intent) = 0;
    /// The customer's purchases, newest first, after |starting_after| (a purchase id) in that order.
    virtual Result<std::vector<CreditPurchaseRecord>> ListPurchases(const CustomerId& customer,
                                                                    const std::optional<std::string>& starting_after,
                                                                    int limit) = 0;
    virtual Result<std::vector<CreditPurchaseRecord>> AllPurchases() = 0;
    /// The customer's purchases of |source| created at or after |since| whose status is pending or succeeded.
    virtual Result<int64_t> CountLivePurchasesSince(const CustomerId& customer, const std::string& source,
                                                    Timestamp since) = 0;
    virtual Result<std::optional<AutoPurchaseRecord>> GetAutoPurchase(const CustomerId& customer) = 0;
    virtual Status UpsertAutoPurchase(const AutoPurchaseRecord& settings) = 0;
    /// Settings with a pending purchase due at |now| (next_attempt_at <= now), soonest first.
    virtual Result<std::vector<AutoPurchaseRecord>> ListDueAutoPurchases(Timestamp now, int limit) = 0;
    /// Moves next_attempt_at of |customer|'s pending |purchase| from |due| to |lease_until| if it is still |due|:
    /// true when this caller claimed the attempt (one node charges it; another finds it moved).
    virtual Result<bool> ClaimAutoPurchase(const CustomerId& customer, const std::string& purchase, Timestamp due,
                                           Timestamp lease_until) = 0;
    virtual Result<std::vector<CreditGrantRecord>> AllGrants() = 0;
    virtual Result<std::vector<CreditTransferRecord>> AllTransfers() = 0;
    virtual Result<std::vector<CreditEntryRecord>> AllEntries() = 0;
    virtual Result<std::vector<CreditReservationRecord>> AllReservations() = 0;
};

}  // namespace tally
