#pragma once
// The Store port: everything Tally persists. SQLite implements it today; PostgreSQL will implement the
// same interface, so nothing in app/ knows which database it runs on.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "app/ports.hpp"
#include "app/store/events.hpp"
#include "domain/event_order.hpp"
#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/role.hpp"
#include "domain/subscription.hpp"
#include "domain/time.hpp"

namespace tally {

struct CustomerRecord {
    CustomerId id;
    std::string external_id;
    std::string email;
    std::string name;
    std::optional<StripeCustomerId> stripe_customer_id;
    std::string role;     // last persisted role (what the audit trail says)
    std::string plan_id;  // last persisted plan
    Timestamp created_at;
    bool stripe_deleted = false;
    std::optional<EventStamp> stripe_stamp;  // newest customer.* event applied
    std::optional<RoleOverride> role_override;
    std::optional<Timestamp> role_check_at;  // when time alone may next change the role (grace, override expiry)
    std::optional<Timestamp> grace_ends_at;  // last persisted grace period end (customer.grace_period_* events)
};

/// A subscription as stored: Stripe's snapshot plus what Tally derives from it.
struct SubscriptionRecord : StripeSubscriptionData {
    std::string plan_id;  // empty when the price matches no catalog plan
    EventStamp stamp;     // the event whose snapshot this is
};

struct InvoiceRecord {
    std::string id;
    StripeCustomerId stripe_customer_id;
    std::string subscription_id;
    std::string status;
    int64_t amount_due_minor = 0;
    int64_t amount_paid_minor = 0;
    std::string currency;
    EventStamp stamp;
};

/// One invoice payment outcome (invoice.payment_failed / invoice.paid), kept to find the current dunning run.
struct PaymentAttempt {
    std::string event_id;
    std::string invoice_id;
    std::string subscription_id;
    Timestamp at;
    bool succeeded = false;
};

struct PaymentRecord {
    std::string id;
    std::string object;
    StripeCustomerId stripe_customer_id;
    int64_t amount_minor = 0;
    int64_t amount_refunded_minor = 0;
    std::string currency;
    std::string status;
    EventStamp stamp;
};

/// An append-only audit entry: every role change, warning and admin action, with its cause.
struct AuditEntry {
    int64_t id = 0;
    CustomerId customer_id;
    Timestamp at;
    std::string kind;    // role_changed, downgrade_warning, role_override_set, role_override_cleared, ...
    std::string before;
    std::string after;
    std::string cause;   // event:evt_..., admin:<key id>, time:grace_period_expired, ...
    std::string detail;
};

enum class InboxStatus { kPending, kProcessed, kFailed };
const char* InboxStatusName(InboxStatus status);
Result<InboxStatus> ParseInboxStatus(const std::string& text);

/// A received Stripe event: the raw payload as signed, plus processing state. Reads through
/// GetInboxEvent/ListInbox leave |payload| empty; GetInboxPayload returns it.
struct InboxEvent {
    StripeEventId id;
    std::string type;
    Timestamp created;
    std::string payload;
    InboxStatus status = InboxStatus::kPending;
    int attempts = 0;
    std::string last_error;
    std::string outcome;  // applied, stale, ignored
    Timestamp received_at;
    std::optional<Timestamp> next_attempt_at;  // null once processed or given up
    std::optional<Timestamp> processed_at;
};

struct ApiKeyRecord {
    std::string id;        // key_..., public
    std::string hash_hex;  // SHA-256 of the secret
    std::string scope;     // "admin" | "read_only" (ApiKeyScopeName)
    Timestamp created_at;
    std::string name;
    std::optional<Timestamp> last_used_at;  // coarse: refreshed at most every kApiKeyLastUsedResolutionSeconds
    std::optional<Timestamp> revoked_at;    // set once; a revoked key authenticates nothing
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

/// Reads and writes inside one transaction. Not thread-safe: used by one thread inside Store::Read/Write.
class StoreTx {
public:
    virtual ~StoreTx() = default;

    virtual Status InsertCustomer(const CustomerRecord& customer) = 0;
    virtual Status UpdateCustomer(const CustomerRecord& customer) = 0;
    virtual Result<std::optional<CustomerRecord>> GetCustomer(const CustomerId& id) = 0;
    virtual Result<std::optional<CustomerRecord>> FindCustomerByExternalId(const std::string& external_id) = 0;
    virtual Result<std::optional<CustomerRecord>> FindCustomerByStripeId(const StripeCustomerId& id) = 0;
    /// Customers whose role_check_at <= now, oldest first, at most |limit|.
    virtual Result<std::vector<CustomerId>> ListCustomersDueForRoleCheck(Timestamp now, int limit) = 0;

    virtual Result<std::optional<SubscriptionRecord>> GetSubscription(const StripeSubscriptionId& id) = 0;
    virtual Status UpsertSubscription(const SubscriptionRecord& subscription) = 0;
    virtual Result<std::vector<SubscriptionRecord>> ListSubscriptionsByStripeCustomer(const StripeCustomerId& id) = 0;

    virtual Result<std::optional<InvoiceRecord>> GetInvoice(const std::string& id) = 0;
    virtual Status UpsertInvoice(const InvoiceRecord& invoice) = 0;
    virtual Status InsertPaymentAttempt(const PaymentAttempt& attempt) = 0;
    virtual Result<std::vector<PaymentAttempt>> ListPaymentAttempts(const std::string& subscription_id) = 0;
    virtual Result<std::optional<PaymentRecord>> GetPayment(const std::string& id) = 0;
    virtual Status UpsertPayment(const PaymentRecord& payment) = 0;

    virtual Status AppendAudit(const AuditEntry& entry) = 0;
    /// Newest first; all customers when |customer_id| is empty; at most |limit|.
    virtual Result<std::vector<AuditEntry>> ListAudit(const CustomerId& customer_id, int limit) = 0;

    /// The event's state without its payload.
    virtual Result<std::optional<InboxEvent>> GetInboxEvent(const StripeEventId& id) = 0;
    /// The raw payload as received; nullopt for an unknown id.
    virtual Result<std::optional<std::string>> GetInboxPayload(const StripeEventId& id) = 0;
    /// The event's place in the inbox's arrival order (larger: received later); nullopt for an unknown id.
    virtual Result<std::optional<int64_t>> GetInboxSequence(const StripeEventId& id) = 0;
    /// Newest received first, optionally filtered by status, at most |limit|. Filtering by `failed` is
    /// indexed; other statuses scan from the newest event.
    virtual Result<std::vector<InboxEvent>> ListInbox(std::optional<InboxStatus> status, int limit) = 0;
    /// Ids of events due for (re)processing at |now|, earliest due first, at most |limit|.
    virtual Result<std::vector<StripeEventId>> ListDueInbox(Timestamp now, int limit) = 0;
    virtual Status UpdateInboxState(const InboxEvent& event) = 0;

    virtual Status InsertApiKey(const ApiKeyRecord& key) = 0;
    virtual Result<std::optional<ApiKeyRecord>> FindApiKeyByHash(const std::string& hash_hex) = 0;
    virtual Result<std::optional<ApiKeyRecord>> GetApiKey(const std::string& id) = 0;
    /// Oldest first, revoked keys included.
    virtual Result<std::vector<ApiKeyRecord>> ListApiKeys() = 0;
    /// Sets revoked_at (if unset) and last_used_at (if given) of key |id|.
    virtual Status UpdateApiKey(const ApiKeyRecord& key) = 0;

    /// Nested rollback points inside the transaction (SQL SAVEPOINT, on SQLite and PostgreSQL alike): lets one
    /// transaction apply many items and undo only the one that failed.
    virtual Status Savepoint() = 0;
    virtual Status RollbackToSavepoint() = 0;
    virtual Status ReleaseSavepoint() = 0;

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

    /// Tally's own events, the app's endpoints and deliveries (app/store/events.hpp), in this transaction.
    virtual EventStoreTx& events() = 0;
};

/// Transactional access to the store. Thread-safe: Write transactions are serialised, Read ones may run
/// beside them. A Write that returns an error is rolled back; one that returns ok is durable on return.
class Store {
public:
    virtual ~Store() = default;
    virtual Status Read(const std::function<Status(StoreTx&)>& fn) = 0;
    virtual Status Write(const std::function<Status(StoreTx&)>& fn) = 0;
    /// A Write whose commit does not wait for durability (PostgreSQL's and SQLite's "asynchronous commit"): only
    /// for work that is redone if a crash loses it, such as delivery claims and the outcomes of at-least-once
    /// deliveries. Never corrupts: after a crash the store holds a prefix of the committed transactions, and a
    /// later Write's durable commit makes every earlier one durable too.
    virtual Status WriteAsyncCommit(const std::function<Status(StoreTx&)>& fn) { return Write(fn); }
    /// Inserts a batch of received events in one durable transaction (group commit). For each event,
    /// true if it was new, false if its id was already recorded (a duplicate delivery).
    virtual Result<std::vector<bool>> AppendInbox(const std::vector<InboxEvent>& events) = 0;
    /// Cheap liveness probe of the database; kUnavailable when it cannot be read.
    virtual Status Ping() = 0;
};

}  // namespace tally
