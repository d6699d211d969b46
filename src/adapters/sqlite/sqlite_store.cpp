#include "adapters/sqlite/sqlite_store.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <span>

#include "adapters/sqlite/migrations.hpp"
#include "adapters/sqlite/wal_write_vfs.hpp"
#include "domain/text.hpp"

namespace tally::sqlite {
namespace {

// ---- binding helpers: Bind(stmt, a, b, c) binds ?1, ?2, ?3 in order.
void BindOne(sqlite3_stmt* s, int i, int64_t v) { sqlite3_bind_int64(s, i, v); }
void BindOne(sqlite3_stmt* s, int i, int v) { sqlite3_bind_int64(s, i, v); }
void BindOne(sqlite3_stmt* s, int i, bool v) { sqlite3_bind_int64(s, i, v ? 1 : 0); }
void BindOne(sqlite3_stmt* s, int i, Timestamp v) { sqlite3_bind_int64(s, i, v.unix_seconds()); }
// Text is bound without a copy (SQLITE_STATIC): every Bind runs inside a StmtReset scope, which clears the
// bindings when the statement is done, while the bound values (the caller's arguments) are still alive.
void BindOne(sqlite3_stmt* s, int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}
void BindOne(sqlite3_stmt* s, int i, const char* v) { sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC); }
template <typename Tag>
void BindOne(sqlite3_stmt* s, int i, const Id<Tag>& v) { BindOne(s, i, v.str()); }
template <typename T>
void BindOne(sqlite3_stmt* s, int i, const std::optional<T>& v) {
    if (v) {
        BindOne(s, i, *v);
    } else {
        sqlite3_bind_null(s, i);
    }
}

template <typename... Args>
void Bind([[maybe_unused]] sqlite3_stmt* s, const Args&... args) {
    int i = 0;
    (BindOne(s, ++i, args), ...);
}

std::string Text(sqlite3_stmt* s, int col) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, col))) : std::string();
}
int64_t Int(sqlite3_stmt* s, int col) { return sqlite3_column_int64(s, col); }
bool IsNull(sqlite3_stmt* s, int col) { return sqlite3_column_type(s, col) == SQLITE_NULL; }
std::optional<Timestamp> OptTs(sqlite3_stmt* s, int col) {
    return IsNull(s, col) ? std::nullopt : std::optional<Timestamp>(Timestamp(Int(s, col)));
}

constexpr const char* kInvoiceCols =
    "id, stripe_customer_id, subscription_id, status, amount_due, amount_paid, currency, stamp_created, stamp_rank, "
    "stamp_event_id, stamp_terminal, created, attempt_count, next_payment_attempt, hosted_invoice_url, number";
constexpr const char* kPaymentCols =
    "id, object, stripe_customer_id, amount, amount_refunded, currency, status, stamp_created, stamp_rank, "
    "stamp_event_id, stamp_terminal, created, failure_message";
EventStamp Stamp(sqlite3_stmt* s, int col) {
    return EventStamp{Int(s, col), static_cast<int>(Int(s, col + 1)), Text(s, col + 2), Int(s, col + 3) != 0};
}

InvoiceRecord ReadInvoice(sqlite3_stmt* s) {
    InvoiceRecord r{Text(s, 0), StripeCustomerId(Text(s, 1)), Text(s, 2), Text(s, 3), Int(s, 4), Int(s, 5), Text(s, 6),
                    Stamp(s, 7)};
    r.created = Timestamp(Int(s, 11));
    r.attempt_count = Int(s, 12);
    r.next_payment_attempt = OptTs(s, 13);
    r.hosted_invoice_url = Text(s, 14);
    r.number = Text(s, 15);
    return r;
}

PaymentRecord ReadPayment(sqlite3_stmt* s) {
    PaymentRecord r{Text(s, 0), Text(s, 1), StripeCustomerId(Text(s, 2)), Int(s, 3), Int(s, 4), Text(s, 5),
                    Text(s, 6), Stamp(s, 7)};
    r.created = Timestamp(Int(s, 11));
    r.failure_message = Text(s, 12);
    return r;
}

constexpr const char* kCustomerCols =
    "id, external_id, email, name, stripe_customer_id, role, plan_id, created_at, stripe_deleted, stamp_created, "
    "stamp_rank, stamp_event_id, stamp_terminal, override_role, override_reason, override_expires_at, "
    "override_created_at, role_check_at, grace_ends_at, type, auth_provider, company, email_verified, metadata, "
    "stripe_sync_pending";

CustomerRecord ReadCustomer(sqlite3_stmt* s) {
    CustomerRecord c;
    c.id = CustomerId(Text(s, 0));
    c.external_id = Text(s, 1);
    c.email = Text(s, 2);
    c.name = Text(s, 3);
    if (!IsNull(s, 4)) c.stripe_customer_id = StripeCustomerId(Text(s, 4));
    c.role = Text(s, 5);
    c.plan_id = Text(s, 6);
    c.created_at = Timestamp(Int(s, 7));
    c.stripe_deleted = Int(s, 8) != 0;
    if (!IsNull(s, 9)) c.stripe_stamp = Stamp(s, 9);
    if (!IsNull(s, 13)) c.role_override = RoleOverride{Text(s, 13), Text(s, 14), OptTs(s, 15), Timestamp(Int(s, 16))};
    c.role_check_at = OptTs(s, 17);
    c.grace_ends_at = OptTs(s, 18);
    // Row readers never fail: a type this build does not know reads as an individual.
    c.type = Text(s, 19) == "organization" ? CustomerType::kOrganization : CustomerType::kIndividual;
    c.auth_provider = Text(s, 20);
    c.company = Text(s, 21);
    c.email_verified = Int(s, 22) != 0;
    c.metadata = MetadataFromJson(Text(s, 23));
    c.stripe_sync_pending = Int(s, 24) != 0;
    return c;
}

constexpr const char* kMemberCols = "customer_id, user_id, email, role, created_at, updated_at";
MemberRecord ReadMember(sqlite3_stmt* s) {
    auto role = ParseMemberRole(Text(s, 3));
    // An unknown role reads as the one that may do least.
    return MemberRecord{CustomerId(Text(s, 0)), Text(s, 1), Text(s, 2), role.ok() ? *role : MemberRole::kMember,
                        Timestamp(Int(s, 4)), Timestamp(Int(s, 5))};
}

constexpr const char* kSessionCols = "id, hash, customer_id, user_id, created_at, expires_at, revoked_at";
CustomerSessionRecord ReadSession(sqlite3_stmt* s) {
    return CustomerSessionRecord{Text(s, 0), Text(s, 1), Text(s, 2), Text(s, 3), Timestamp(Int(s, 4)),
                                 Timestamp(Int(s, 5)), OptTs(s, 6)};
}

constexpr const char* kSubscriptionCols =
    "id, stripe_customer_id, status, price_id, price_lookup_key, plan_id, interval_unit, interval_count, unit_amount, "
    "currency, quantity, current_period_start, current_period_end, cancel_at_period_end, trial_end, canceled_at, "
    "created, stamp_created, stamp_rank, stamp_event_id, stamp_terminal, pause_collection, pending_schedule_id, "
    "pending_price_id, pending_plan_id, pending_quantity, pending_at";
constexpr const char* kScheduleCols =
    "id, subscription_id, status, phases, created, stamp_created, stamp_rank, stamp_event_id, stamp_terminal";

SubscriptionRecord ReadSubscription(sqlite3_stmt* s) {
    SubscriptionRecord r;
    r.id = StripeSubscriptionId(Text(s, 0));
    r.customer = StripeCustomerId(Text(s, 1));
    // Row readers never throw: a value this build does not know (a newer Tally wrote it) reads as the most
    // restrictive one, and the subscription's stamp still says where it came from.
    auto status = ParseSubscriptionStatus(Text(s, 2));
    r.status = status.ok() ? *status : SubscriptionStatus::kIncompleteExpired;
    r.price_id = Text(s, 3);
    r.price_lookup_key = Text(s, 4);
    r.plan_id = Text(s, 5);
    auto unit = ParseIntervalUnit(Text(s, 6));
    r.interval = BillingInterval{unit.ok() ? *unit : BillingInterval::Unit::kMonth, Int(s, 7)};
    r.unit_amount_minor = Int(s, 8);
    r.currency = Text(s, 9);
    r.quantity = Int(s, 10);
    r.current_period_start = Timestamp(Int(s, 11));
    r.current_period_end = Timestamp(Int(s, 12));
    r.cancel_at_period_end = Int(s, 13) != 0;
    r.trial_end = OptTs(s, 14);
    r.canceled_at = OptTs(s, 15);
    r.created = Timestamp(Int(s, 16));
    r.stamp = Stamp(s, 17);
    r.pause_collection = Text(s, 21);
    if (!Text(s, 22).empty()) {
        r.pending_change = PendingChange{Text(s, 22), Text(s, 23), Text(s, 24), Int(s, 25), OptTs(s, 26).value_or(Timestamp())};
    }
    return r;
}

SubscriptionScheduleRecord ReadSchedule(sqlite3_stmt* s) {
    SubscriptionScheduleRecord r;
    r.id = Text(s, 0);
    r.subscription = StripeSubscriptionId(Text(s, 1));
    r.status = Text(s, 2);
    r.phases = SchedulePhasesFromText(Text(s, 3));
    r.created = Timestamp(Int(s, 4));
    r.stamp = Stamp(s, 5);
    return r;
}

constexpr const char* kInboxCols =
    "id, type, created, '', status, attempts, last_error, outcome, received_at, next_attempt_at, processed_at";

InboxEvent ReadInbox(sqlite3_stmt* s) {
    InboxEvent e;
    e.id = StripeEventId(Text(s, 0));
    e.type = Text(s, 1);
    e.created = Timestamp(Int(s, 2));
    auto status = ParseInboxStatus(Text(s, 4));
    e.status = status.ok() ? *status : InboxStatus::kFailed;
    e.attempts = static_cast<int>(Int(s, 5));
    e.last_error = Text(s, 6);
    e.outcome = Text(s, 7);
    e.received_at = Timestamp(Int(s, 8));
    e.next_attempt_at = OptTs(s, 9);
    e.processed_at = OptTs(s, 10);
    return e;
}

constexpr const char* kApiKeyCols = "id, hash, scope, created_at, name, last_used_at, revoked_at";

ApiKeyRecord ReadApiKey(sqlite3_stmt* s) {
    return ApiKeyRecord{Text(s, 0), Text(s, 1), Text(s, 2), Timestamp(Int(s, 3)), Text(s, 4), OptTs(s, 5), OptTs(s, 6)};
}

/// Resets a statement when it goes out of scope: a statement left mid-result pins its connection's WAL
/// snapshot, so later reads would see stale data.
class StmtReset {
public:
    explicit StmtReset(sqlite3_stmt* s) : s_(s) {}
    ~StmtReset() {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);  // nothing bound may outlive the values it borrowed (BindOne)
    }
    StmtReset(const StmtReset&) = delete;
    StmtReset& operator=(const StmtReset&) = delete;

private:
    sqlite3_stmt* s_;
};

/// Statement helpers over one connection inside an open transaction, shared by the aggregates' implementations.
class SqliteStatements {
public:
    explicit SqliteStatements(Connection& c) : c_(c) {}

    // Runs |sql| with |args| expecting no rows.
    template <typename... Args>
    Status Do(const char* sql, const Args&... args) {
        TALLY_ASSIGN_OR_RETURN(sqlite3_stmt* s, c_.Prepare(sql));
        StmtReset reset(s);
        Bind(s, args...);
        const int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE) return c_.LastError();
        return {};
    }
    // Runs |sql| and reads at most one row with |read|.
    template <typename T, typename Reader, typename... Args>
    Result<std::optional<T>> One(const char* sql, Reader read, const Args&... args) {
        TALLY_ASSIGN_OR_RETURN(sqlite3_stmt* s, c_.Prepare(sql));
        StmtReset reset(s);
        Bind(s, args...);
        const int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) return std::optional<T>();
        if (rc != SQLITE_ROW) return c_.LastError();
        return std::optional<T>(read(s));
    }
    template <typename T, typename Reader, typename... Args>
    Result<std::vector<T>> Many(const char* sql, Reader read, const Args&... args) {
        TALLY_ASSIGN_OR_RETURN(sqlite3_stmt* s, c_.Prepare(sql));
        StmtReset reset(s);
        Bind(s, args...);
        std::vector<T> out;
        for (;;) {
            const int rc = sqlite3_step(s);
            if (rc == SQLITE_DONE) return out;
            if (rc != SQLITE_ROW) return c_.LastError();
            out.push_back(read(s));
        }
    }
    int Changes() { return sqlite3_changes(c_.raw()); }
    int64_t LastRowId() { return sqlite3_last_insert_rowid(c_.raw()); }

    /// Multi-row INSERT statements: "<head> VALUES (?,...),(...)" for kInsertRowsMax rows, then halves of it (32, ...,
    /// 1), each row of |columns| parameters.
    static constexpr size_t kInsertRowsMax = 64;  // rows of one INSERT (64 x 14 parameters, under SQLite's 32,766)
    static constexpr size_t kInsertChunks = 7;    // 64, 32, ..., 1 rows
    using MultiRowInsert = std::array<std::string, kInsertChunks>;
    static MultiRowInsert MultiRowInserts(const std::string& head, size_t columns) {
        MultiRowInsert out;
        for (size_t k = 0; k < kInsertChunks; ++k) {
            std::string& q = out[k];
            q = head + " VALUES ";
            for (size_t row = 0; row < (kInsertRowsMax >> k); ++row) {
                q += row == 0 ? "(" : ",(";
                for (size_t col = 0; col < columns; ++col) q += col == 0 ? "?" : ",?";
                q += ")";
            }
        }
        return out;
    }
    /// Inserts |count| rows through |sql| (MultiRowInserts) in chunks of kInsertRowsMax rows, then halves for the
    /// rest: a statement's fixed cost (preparing its run, its statement journal) is paid once per chunk instead of
    /// once per row. |bind|(stmt, parameter index before the row's first, row index) binds one row and returns the
    /// index of its last parameter.
    template <typename BindRow>
    Status InsertRows(const MultiRowInsert& sql, size_t count, BindRow bind) {
        size_t done = 0;
        while (done < count) {
            size_t k = 0;
            while ((kInsertRowsMax >> k) > count - done) ++k;
            const size_t rows = kInsertRowsMax >> k;
            TALLY_ASSIGN_OR_RETURN(sqlite3_stmt* s, c_.Prepare(sql[k].c_str()));
            StmtReset reset(s);
            int i = 0;
            for (size_t r = 0; r < rows; ++r) i = bind(s, i, done + r);
            if (sqlite3_step(s) != SQLITE_DONE) return c_.LastError();
            done += rows;
        }
        return {};
    }

protected:
    Connection& c_;
};

std::string JoinComma(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
    return out;
}
std::vector<std::string> SplitComma(const std::string& text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= text.size() && !text.empty()) {
        const size_t comma = text.find(',', start);
        out.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}
std::optional<int64_t> OptInt(sqlite3_stmt* s, int col) {
    return IsNull(s, col) ? std::nullopt : std::optional<int64_t>(Int(s, col));
}

constexpr const char* kAppEventCols =
    "seq, id, type, created_ms, object_id, object_sequence, customer_id, payload";
AppEventRecord ReadAppEvent(sqlite3_stmt* s) {
    return AppEventRecord{Int(s, 0), Text(s, 1), Text(s, 2), Int(s, 3), Text(s, 4), Int(s, 5), Text(s, 6), Text(s, 7)};
}
constexpr const char* kEndpointCols =
    "id, url, description, enabled_events, disabled, disabled_reason, secret, previous_secret, "
    "previous_secret_expires_ms, failing_since_ms, created_ms";
WebhookEndpointRecord ReadEndpoint(sqlite3_stmt* s) {
    return WebhookEndpointRecord{Text(s, 0),   Text(s, 1),  Text(s, 2),  SplitComma(Text(s, 3)),
                                 Int(s, 4) != 0, Text(s, 5), Text(s, 6),  Text(s, 7),
                                 OptInt(s, 8), OptInt(s, 9), Int(s, 10)};
}
constexpr const char* kDeliveryCols =
    "id, event_seq, event_id, endpoint_id, object_id, state, attempts, next_attempt_ms, lease_until_ms, "
    "event_created_ms, delivered_ms, last_status, last_error";
DeliveryState ParseDeliveryState(const std::string& text) {
    if (text == "delivered") return DeliveryState::kDelivered;
    if (text == "failed") return DeliveryState::kFailed;
    return DeliveryState::kPending;
}
DeliveryRecord ReadDelivery(sqlite3_stmt* s) {
    return DeliveryRecord{Int(s, 0),    Int(s, 1),    Text(s, 2), Text(s, 3),   Text(s, 4),
                          ParseDeliveryState(Text(s, 5)), static_cast<int>(Int(s, 6)), Int(s, 7), OptInt(s, 8),
                          Int(s, 9),    OptInt(s, 10), static_cast<int>(Int(s, 11)), Text(s, 12)};
}

/// The events aggregate (app/store/events.hpp) over one connection inside an open transaction.
class SqliteEventTx final : public EventStoreTx, private SqliteStatements {
public:
    explicit SqliteEventTx(Connection& c) : SqliteStatements(c) {}

    Result<int64_t> NextObjectSequence(const std::string& object_id) override {
        TALLY_TRY(Do("INSERT INTO app_event_objects(object_id, last_sequence) VALUES (?1, 1) "
                     "ON CONFLICT(object_id) DO UPDATE SET last_sequence = last_sequence + 1",
                     object_id));
        TALLY_ASSIGN_OR_RETURN(auto seq, One<int64_t>("SELECT last_sequence FROM app_event_objects WHERE object_id=?1",
                                                      [](sqlite3_stmt* s) { return Int(s, 0); }, object_id));
        if (!seq) return Internal("no sequence for " + object_id);
        return *seq;
    }
    Result<int64_t> InsertEvent(const AppEventRecord& e) override {
        TALLY_TRY(Do("INSERT INTO app_events(id, type, created_ms, object_id, object_sequence, customer_id, payload) "
                     "VALUES (?1,?2,?3,?4,?5,?6,?7)",
                     e.id, e.type, e.created_ms, e.object_id, e.object_sequence, e.customer_id, e.payload));
        return LastRowId();
    }
    Result<std::optional<AppEventRecord>> GetEvent(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kAppEventCols + " FROM app_events WHERE id=?1";
        return One<AppEventRecord>(sql.c_str(), ReadAppEvent, id);
    }
    Result<std::optional<AppEventRecord>> GetEventBySeq(int64_t seq) override {
        static const std::string sql = std::string("SELECT ") + kAppEventCols + " FROM app_events WHERE seq=?1";
        return One<AppEventRecord>(sql.c_str(), ReadAppEvent, seq);
    }
    Result<std::vector<AppEventRecord>> ListEvents(const AppEventFilter& f) override {
        static const std::string sql = std::string("SELECT ") + kAppEventCols +
                                       " FROM app_events WHERE (?1 = '' OR type = ?1) AND (?2 = '' OR customer_id = ?2)"
                                       " AND (?3 IS NULL OR created_ms >= ?3) AND (?4 IS NULL OR created_ms <= ?4)"
                                       " AND (?5 IS NULL OR seq < ?5) ORDER BY seq DESC LIMIT ?6";
        return Many<AppEventRecord>(sql.c_str(), ReadAppEvent, f.type, f.customer_id, f.created_gte_ms,
                                    f.created_lte_ms, f.before_seq, f.limit);
    }
    Result<int> PruneEvents(int64_t before_ms, int limit) override {
        TALLY_TRY(Do("CREATE TEMP TABLE IF NOT EXISTS pruned_events(seq INTEGER PRIMARY KEY, id TEXT)"));
        TALLY_TRY(Do("DELETE FROM temp.pruned_events"));
        TALLY_TRY(Do("INSERT INTO temp.pruned_events SELECT seq, id FROM app_events WHERE created_ms < ?1 "
                     "ORDER BY created_ms LIMIT ?2",
                     before_ms, limit));
        TALLY_TRY(Do("DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT d.id FROM event_deliveries d "
                     "JOIN temp.pruned_events p ON d.event_seq = p.seq)"));
        TALLY_TRY(Do("DELETE FROM event_deliveries WHERE event_seq IN (SELECT seq FROM temp.pruned_events)"));
        TALLY_TRY(Do("DELETE FROM app_events WHERE seq IN (SELECT seq FROM temp.pruned_events)"));
        const int n = Changes();
        TALLY_TRY(Do("DELETE FROM temp.pruned_events"));
        return n;
    }

    Status InsertEndpoint(const WebhookEndpointRecord& e) override {
        return Do("INSERT INTO webhook_endpoints(id, url, description, enabled_events, disabled, disabled_reason, secret, "
                  "previous_secret, previous_secret_expires_ms, failing_since_ms, created_ms) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                  e.id, e.url, e.description, JoinComma(e.enabled_events), e.disabled, e.disabled_reason, e.secret,
                  e.previous_secret, e.previous_secret_expires_ms, e.failing_since_ms, e.created_ms);
    }
    Status UpdateEndpoint(const WebhookEndpointRecord& e) override {
        return Do("UPDATE webhook_endpoints SET url=?2, description=?3, enabled_events=?4, disabled=?5, "
                  "disabled_reason=?6, secret=?7, previous_secret=?8, previous_secret_expires_ms=?9, "
                  "failing_since_ms=?10 WHERE id=?1",
                  e.id, e.url, e.description, JoinComma(e.enabled_events), e.disabled, e.disabled_reason, e.secret,
                  e.previous_secret, e.previous_secret_expires_ms, e.failing_since_ms);
    }
    Status DeleteEndpoint(const std::string& id) override {
        TALLY_TRY(Do("DELETE FROM event_deliveries WHERE endpoint_id=?1 AND state='pending'", id));
        return Do("DELETE FROM webhook_endpoints WHERE id=?1", id);
    }
    Result<std::optional<WebhookEndpointRecord>> GetEndpoint(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kEndpointCols + " FROM webhook_endpoints WHERE id=?1";
        return One<WebhookEndpointRecord>(sql.c_str(), ReadEndpoint, id);
    }
    Result<std::vector<WebhookEndpointRecord>> ListEndpoints() override {
        static const std::string sql =
            std::string("SELECT ") + kEndpointCols + " FROM webhook_endpoints ORDER BY created_ms, id";
        return Many<WebhookEndpointRecord>(sql.c_str(), ReadEndpoint);
    }

    Result<int64_t> InsertDelivery(const DeliveryRecord& d) override {
        // The line's previous delivery (by id: the order deliveries were made in, which is event order but for
        // redeliveries, which go after what is already queued).
        TALLY_TRY(Do("INSERT INTO event_deliveries(event_seq, event_id, endpoint_id, object_id, state, attempts, "
                     "next_attempt_ms, event_created_ms, prev_delivery_id) VALUES (?1,?2,?3,?4,'pending',0,?5,?6,"
                     "(SELECT MAX(id) FROM event_deliveries WHERE endpoint_id=?3 AND object_id=?4))",
                     d.event_seq, d.event_id, d.endpoint_id, d.object_id, d.next_attempt_ms, d.event_created_ms));
        return LastRowId();
    }
    Result<std::vector<DeliveryRecord>> ClaimDueDeliveries(const std::string& endpoint_id, int64_t now_ms,
                                                           int64_t lease_until_ms, int limit) override {
        // The head of each (endpoint, object) line only: a delivery waits while the one before it is pending. (The
        // one before can only have left `pending` after its own predecessor did, so one look back is enough.)
        static const std::string sql =
            std::string("SELECT ") + kDeliveryCols +
            " FROM event_deliveries d WHERE d.endpoint_id = ?1 AND d.state = 'pending' AND d.next_attempt_ms <= ?2"
            " AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= ?2)"
            " AND (d.prev_delivery_id IS NULL OR NOT EXISTS (SELECT 1 FROM event_deliveries p"
            " WHERE p.id = d.prev_delivery_id AND p.state = 'pending'))"
            " ORDER BY d.next_attempt_ms, d.id LIMIT ?3";
        TALLY_ASSIGN_OR_RETURN(auto due, Many<DeliveryRecord>(sql.c_str(), ReadDelivery, endpoint_id, now_ms, limit));
        for (auto& d : due) {
            TALLY_TRY(Do("UPDATE event_deliveries SET lease_until_ms=?2 WHERE id=?1", d.id, lease_until_ms));
            d.lease_until_ms = lease_until_ms;
        }
        return due;
    }
    Result<std::optional<DeliveryRecord>> GetDelivery(int64_t id) override {
        static const std::string sql = std::string("SELECT ") + kDeliveryCols + " FROM event_deliveries WHERE id=?1";
        return One<DeliveryRecord>(sql.c_str(), ReadDelivery, id);
    }
    Status UpdateDelivery(const DeliveryRecord& d) override {
        return Do("UPDATE event_deliveries SET state=?2, attempts=?3, next_attempt_ms=?4, lease_until_ms=?5, "
                  "delivered_ms=?6, last_status=?7, last_error=?8 WHERE id=?1",
                  d.id, DeliveryStateName(d.state), d.attempts, d.next_attempt_ms, d.lease_until_ms, d.delivered_ms,
                  d.last_status, d.last_error);
    }
    Result<std::optional<int64_t>> NextDeliveryDueMs(const std::string& endpoint_id, int64_t after_ms) override {
        TALLY_ASSIGN_OR_RETURN(auto due, One<std::optional<int64_t>>(
                                             "SELECT MIN(next_attempt_ms) FROM event_deliveries WHERE endpoint_id=?1 "
                                             "AND state = 'pending' AND next_attempt_ms > ?2",
                                             [](sqlite3_stmt* s) { return OptInt(s, 0); }, endpoint_id, after_ms));
        return due ? *due : std::nullopt;
    }
    Result<int64_t> CountPendingDeliveries() override {
        TALLY_ASSIGN_OR_RETURN(auto n, One<int64_t>("SELECT COUNT(*) FROM event_deliveries WHERE state = 'pending'",
                                                    [](sqlite3_stmt* s) { return Int(s, 0); }));
        return n.value_or(0);
    }
    Status InsertDeliveryAttempt(const DeliveryAttemptRecord& a) override {
        return Do("INSERT INTO delivery_attempts(delivery_id, endpoint_id, event_id, at_ms, status_code, latency_ms, "
                  "error) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                  a.delivery_id, a.endpoint_id, a.event_id, a.at_ms, a.status_code, a.latency_ms, a.error);
    }
    Result<std::vector<DeliveryAttemptRecord>> ListDeliveryAttempts(const std::string& endpoint_id,
                                                                    std::optional<int64_t> before_id,
                                                                    int limit) override {
        return Many<DeliveryAttemptRecord>(
            "SELECT id, delivery_id, endpoint_id, event_id, at_ms, status_code, latency_ms, error FROM delivery_attempts "
            "WHERE endpoint_id=?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
            [](sqlite3_stmt* s) {
                return DeliveryAttemptRecord{Int(s, 0), Int(s, 1), Text(s, 2), Text(s, 3), Int(s, 4),
                                             static_cast<int>(Int(s, 5)), Int(s, 6), Text(s, 7)};
            },
            endpoint_id, before_id, limit);
    }
};

/// The aggregates over one connection inside an open transaction.
class SqliteCustomerTx final : public CustomerStoreTx, private SqliteStatements {
public:
    explicit SqliteCustomerTx(Connection& c) : SqliteStatements(c) {}

    Status Insert(const CustomerRecord& c) override {
        static const std::string sql = std::string("INSERT INTO customers(") + kCustomerCols +
                                       ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,"
                                       "?20,?21,?22,?23,?24,?25)";
        return WriteCustomer(sql.c_str(), c);
    }
    Status Update(const CustomerRecord& c) override {
        static const std::string sql =
            "UPDATE customers SET external_id=?2, email=?3, name=?4, stripe_customer_id=?5, role=?6, plan_id=?7, "
            "created_at=?8, stripe_deleted=?9, stamp_created=?10, stamp_rank=?11, stamp_event_id=?12, "
            "stamp_terminal=?13, override_role=?14, override_reason=?15, override_expires_at=?16, "
            "override_created_at=?17, role_check_at=?18, grace_ends_at=?19, type=?20, auth_provider=?21, company=?22, "
            "email_verified=?23, metadata=?24, stripe_sync_pending=?25 WHERE id=?1";
        return WriteCustomer(sql.c_str(), c);
    }
    Status WriteCustomer(const char* sql, const CustomerRecord& c) {
        const auto& st = c.stripe_stamp;
        const auto& ov = c.role_override;
        return Do(sql, c.id, c.external_id, c.email, c.name, c.stripe_customer_id, c.role, c.plan_id, c.created_at,
                  c.stripe_deleted, st ? std::optional<int64_t>(st->created) : std::nullopt,
                  st ? std::optional<int64_t>(st->type_rank) : std::nullopt,
                  st ? std::optional<std::string>(st->event_id) : std::nullopt,
                  st ? std::optional<int64_t>(st->terminal) : std::nullopt,
                  ov ? std::optional<std::string>(ov->role) : std::nullopt,
                  ov ? std::optional<std::string>(ov->reason) : std::nullopt,
                  ov ? ov->expires_at : std::nullopt, ov ? std::optional<Timestamp>(ov->created_at) : std::nullopt,
                  c.role_check_at, c.grace_ends_at, CustomerTypeName(c.type), c.auth_provider, c.company,
                  c.email_verified, MetadataToJson(c.metadata), c.stripe_sync_pending);
    }
    Result<std::optional<CustomerRecord>> Get(const CustomerId& id) override {
        static const std::string sql = std::string("SELECT ") + kCustomerCols + " FROM customers WHERE id=?1";
        return One<CustomerRecord>(sql.c_str(), ReadCustomer, id);
    }
    Result<std::optional<CustomerRecord>> FindByExternalId(const std::string& external_id) override {
        if (external_id.empty()) return std::optional<CustomerRecord>();
        static const std::string sql = std::string("SELECT ") + kCustomerCols + " FROM customers WHERE external_id=?1";
        return One<CustomerRecord>(sql.c_str(), ReadCustomer, external_id);
    }
    Result<std::optional<CustomerRecord>> FindByStripeId(const StripeCustomerId& id) override {
        static const std::string sql =
            std::string("SELECT ") + kCustomerCols + " FROM customers WHERE stripe_customer_id=?1";
        return One<CustomerRecord>(sql.c_str(), ReadCustomer, id);
    }
    Result<std::vector<CustomerId>> ListDueForRoleCheck(Timestamp now, int limit) override {
        return Many<CustomerId>(
            "SELECT id FROM customers WHERE role_check_at IS NOT NULL AND role_check_at <= ?1 "
            "ORDER BY role_check_at LIMIT ?2",
            [](sqlite3_stmt* s) { return CustomerId(Text(s, 0)); }, now, limit);
    }
    Result<std::vector<CustomerId>> ClaimDueForRoleCheck(Timestamp now, int limit) override {
        return ListDueForRoleCheck(now, limit);  // one writer at a time
    }
    Result<std::vector<CustomerRecord>> List(const CustomerFilter& f) override {
        // One statement for every combination of filters: an absent filter is a NULL parameter. The metadata filter
        // is a JSON object whose every key must hold its value.
        static const std::string sql =
            std::string("SELECT ") + kCustomerCols +
            " FROM customers WHERE (?1 IS NULL OR type=?1) AND (?2 IS NULL OR auth_provider=?2) AND "
            "(?3 IS NULL OR company=?3) AND (?4 IS NULL OR email_verified=?4) AND NOT EXISTS (SELECT 1 FROM "
            "json_each(?5) f WHERE NOT EXISTS (SELECT 1 FROM json_each(customers.metadata) m WHERE m.key=f.key AND "
            "m.type='text' AND m.value=f.value)) AND (?6 IS NULL OR (created_at, id) < (SELECT created_at, id FROM "
            "customers WHERE id=?6)) ORDER BY created_at DESC, id DESC LIMIT ?7";
        std::optional<std::string> metadata;
        if (!f.metadata.empty()) metadata = MetadataToJson(Metadata(f.metadata.begin(), f.metadata.end()));
        return Many<CustomerRecord>(sql.c_str(), ReadCustomer,
                                    f.type ? std::optional<std::string>(CustomerTypeName(*f.type)) : std::nullopt,
                                    f.auth_provider, f.company, f.email_verified, metadata, f.starting_after, f.limit);
    }
    Result<std::vector<CustomerId>> ListStripeSyncPending(int limit) override {
        return Many<CustomerId>("SELECT id FROM customers WHERE stripe_sync_pending <> 0 ORDER BY id LIMIT ?1",
                                [](sqlite3_stmt* s) { return CustomerId(Text(s, 0)); }, limit);
    }

    Status InsertMember(const MemberRecord& m) override {
        TALLY_TRY(Do("INSERT INTO customer_members(customer_id, user_id, email, role, created_at, updated_at) "
                     "VALUES (?1,?2,?3,?4,?5,?6) ON CONFLICT DO NOTHING",
                     m.customer_id, m.user_id, m.email, MemberRoleName(m.role), m.created_at, m.updated_at));
        if (Changes() != 1) return Conflict("user " + m.user_id + " is already a member of " + m.customer_id.str());
        return {};
    }
    Status UpdateMember(const MemberRecord& m) override {
        return Do("UPDATE customer_members SET email=?3, role=?4, updated_at=?5 WHERE customer_id=?1 AND user_id=?2",
                  m.customer_id, m.user_id, m.email, MemberRoleName(m.role), m.updated_at);
    }
    Status DeleteMember(const CustomerId& customer_id, const std::string& user_id) override {
        return Do("DELETE FROM customer_members WHERE customer_id=?1 AND user_id=?2", customer_id, user_id);
    }
    Result<std::optional<MemberRecord>> GetMember(const CustomerId& customer_id, const std::string& user_id) override {
        static const std::string sql =
            std::string("SELECT ") + kMemberCols + " FROM customer_members WHERE customer_id=?1 AND user_id=?2";
        return One<MemberRecord>(sql.c_str(), ReadMember, customer_id, user_id);
    }
    Result<std::vector<MemberRecord>> ListMembers(const CustomerId& customer_id) override {
        static const std::string sql = std::string("SELECT ") + kMemberCols +
                                       " FROM customer_members WHERE customer_id=?1 ORDER BY created_at, user_id";
        return Many<MemberRecord>(sql.c_str(), ReadMember, customer_id);
    }
    Result<std::vector<MemberRecord>> ListMembershipsOfUser(const std::string& user_id) override {
        static const std::string sql = std::string("SELECT ") + kMemberCols +
                                       " FROM customer_members WHERE user_id=?1 ORDER BY created_at, customer_id";
        return Many<MemberRecord>(sql.c_str(), ReadMember, user_id);
    }
};

class SqliteBillingTx final : public BillingStoreTx, private SqliteStatements {
public:
    explicit SqliteBillingTx(Connection& c) : SqliteStatements(c) {}

    Result<std::optional<SubscriptionRecord>> GetSubscription(const StripeSubscriptionId& id) override {
        static const std::string sql = std::string("SELECT ") + kSubscriptionCols + " FROM subscriptions WHERE id=?1";
        return One<SubscriptionRecord>(sql.c_str(), ReadSubscription, id);
    }
    Status UpsertSubscription(const SubscriptionRecord& r) override {
        // An upsert updates the row in place (INSERT OR REPLACE would delete and re-insert it).
        static const std::string sql =
            std::string("INSERT INTO subscriptions(") + kSubscriptionCols +
            ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,"
            "?26,?27) "
            "ON CONFLICT(id) DO UPDATE SET stripe_customer_id=?2, status=?3, price_id=?4, price_lookup_key=?5, "
            "plan_id=?6, interval_unit=?7, interval_count=?8, unit_amount=?9, currency=?10, quantity=?11, "
            "current_period_start=?12, current_period_end=?13, cancel_at_period_end=?14, trial_end=?15, "
            "canceled_at=?16, created=?17, stamp_created=?18, stamp_rank=?19, stamp_event_id=?20, stamp_terminal=?21, "
            "pause_collection=?22, pending_schedule_id=?23, pending_price_id=?24, pending_plan_id=?25, "
            "pending_quantity=?26, pending_at=?27";
        const PendingChange none;
        const PendingChange& p = r.pending_change ? *r.pending_change : none;
        const std::optional<Timestamp> pending_at =
            r.pending_change ? std::optional<Timestamp>(p.effective_at) : std::nullopt;
        return Do(sql.c_str(), r.id, r.customer, SubscriptionStatusName(r.status), r.price_id,
                  r.price_lookup_key, r.plan_id, IntervalUnitName(r.interval.unit), r.interval.count,
                  r.unit_amount_minor, r.currency, r.quantity, r.current_period_start, r.current_period_end,
                  r.cancel_at_period_end, r.trial_end, r.canceled_at, r.created, r.stamp.created, r.stamp.type_rank,
                  r.stamp.event_id, r.stamp.terminal, r.pause_collection, p.schedule_id, p.price_id, p.plan_id,
                  p.quantity, pending_at);
    }
    Result<std::optional<SubscriptionScheduleRecord>> GetSchedule(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kScheduleCols + " FROM subscription_schedules WHERE id=?1";
        return One<SubscriptionScheduleRecord>(sql.c_str(), ReadSchedule, id);
    }
    Status UpsertSchedule(const SubscriptionScheduleRecord& r) override {
        static const std::string sql = std::string("INSERT INTO subscription_schedules(") + kScheduleCols +
                                       ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9) ON CONFLICT(id) DO UPDATE SET "
                                       "subscription_id=?2, status=?3, phases=?4, created=?5, stamp_created=?6, "
                                       "stamp_rank=?7, stamp_event_id=?8, stamp_terminal=?9";
        return Do(sql.c_str(), r.id, r.subscription, r.status, SchedulePhasesToText(r.phases), r.created,
                  r.stamp.created, r.stamp.type_rank, r.stamp.event_id, r.stamp.terminal);
    }
    Status RememberPriceLookupKey(const std::string& price_id, const std::string& lookup_key) override {
        if (price_id.empty() || lookup_key.empty()) return {};
        return Do("INSERT INTO stripe_prices(id, lookup_key) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING", price_id,
                  lookup_key);
    }
    Result<std::string> PriceLookupKey(const std::string& price_id) override {
        if (price_id.empty()) return std::string();
        // Else a subscription on that price tells (a read on the rare schedule path only).
        TALLY_ASSIGN_OR_RETURN(auto key, One<std::string>("SELECT k FROM (SELECT lookup_key AS k, 0 AS p FROM "
                                                          "stripe_prices WHERE id=?1 UNION ALL SELECT * FROM (SELECT "
                                                          "price_lookup_key, 1 FROM subscriptions WHERE price_id=?1 AND "
                                                          "price_lookup_key<>'' LIMIT 1)) ORDER BY p LIMIT 1",
                                                          [](sqlite3_stmt* s) { return Text(s, 0); }, price_id));
        return key.value_or("");
    }
    Result<std::vector<SubscriptionScheduleRecord>> ListSchedulesForSubscription(const StripeSubscriptionId& id) override {
        static const std::string sql = std::string("SELECT ") + kScheduleCols +
                                       " FROM subscription_schedules WHERE subscription_id=?1 ORDER BY created, id";
        return Many<SubscriptionScheduleRecord>(sql.c_str(), ReadSchedule, id);
    }
    Result<std::vector<SubscriptionRecord>> ListSubscriptionsByStripeCustomer(const StripeCustomerId& id) override {
        static const std::string sql = std::string("SELECT ") + kSubscriptionCols +
                                       " FROM subscriptions WHERE stripe_customer_id=?1 ORDER BY created, id";
        return Many<SubscriptionRecord>(sql.c_str(), ReadSubscription, id);
    }
    Result<std::vector<SubscriptionRecord>> ListSubscriptions(const SubscriptionListFilter& f) override {
        static const std::string sql =
            std::string("SELECT ") + kSubscriptionCols +
            " FROM subscriptions WHERE (?1 IS NULL OR status=?1) AND (?2 IS NULL OR plan_id=?2) AND (?3 IS NULL OR "
            "(created, id) < (SELECT created, id FROM subscriptions WHERE id=?3)) ORDER BY created DESC, id DESC "
            "LIMIT ?4";
        return Many<SubscriptionRecord>(sql.c_str(), ReadSubscription, f.status, f.plan_id, f.starting_after, f.limit);
    }

    Result<std::optional<InvoiceRecord>> GetInvoice(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kInvoiceCols + " FROM invoices WHERE id=?1";
        return One<InvoiceRecord>(sql.c_str(), ReadInvoice, id);
    }
    Status UpsertInvoice(const InvoiceRecord& r) override {
        static const std::string sql = std::string("INSERT OR REPLACE INTO invoices(") + kInvoiceCols +
                                       ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)";
        return Do(sql.c_str(), r.id, r.stripe_customer_id, r.subscription_id, r.status, r.amount_due_minor,
                  r.amount_paid_minor, r.currency, r.stamp.created, r.stamp.type_rank, r.stamp.event_id,
                  r.stamp.terminal, r.created, r.attempt_count, r.next_payment_attempt, r.hosted_invoice_url, r.number);
    }
    Result<std::vector<InvoiceRecord>> ListInvoices(const BillingListFilter& f) override {
        // One statement for every combination of filters: an absent filter is a NULL parameter.
        static const std::string sql =
            std::string("SELECT ") + kInvoiceCols +
            " FROM invoices WHERE (?1 IS NULL OR stripe_customer_id=?1) AND (?2 IS NULL OR status=?2) AND "
            "(?3 IS NULL OR created>=?3) AND (?4 IS NULL OR (created, id) < (SELECT created, id FROM invoices WHERE "
            "id=?4)) ORDER BY created DESC, id DESC LIMIT ?5";
        return Many<InvoiceRecord>(sql.c_str(), ReadInvoice, f.stripe_customer_id, f.status, f.created_gte,
                                   f.starting_after, f.limit);
    }
    Status InsertPaymentAttempt(const PaymentAttempt& a) override {
        return Do("INSERT OR IGNORE INTO payment_attempts(event_id, invoice_id, subscription_id, at, succeeded) "
                  "VALUES (?1,?2,?3,?4,?5)",
                  a.event_id, a.invoice_id, a.subscription_id, a.at, a.succeeded);
    }
    Result<std::vector<PaymentAttempt>> ListPaymentAttempts(const std::string& subscription_id) override {
        return Many<PaymentAttempt>(
            "SELECT event_id, invoice_id, subscription_id, at, succeeded FROM payment_attempts "
            "WHERE subscription_id=?1 ORDER BY at, event_id",
            [](sqlite3_stmt* s) {
                return PaymentAttempt{Text(s, 0), Text(s, 1), Text(s, 2), Timestamp(Int(s, 3)), Int(s, 4) != 0};
            },
            subscription_id);
    }
    Result<std::optional<PaymentRecord>> GetPayment(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kPaymentCols + " FROM payments WHERE id=?1";
        return One<PaymentRecord>(sql.c_str(), ReadPayment, id);
    }
    Status UpsertPayment(const PaymentRecord& r) override {
        static const std::string sql = std::string("INSERT OR REPLACE INTO payments(") + kPaymentCols +
                                       ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)";
        return Do(sql.c_str(), r.id, r.object, r.stripe_customer_id, r.amount_minor, r.amount_refunded_minor,
                  r.currency, r.status, r.stamp.created, r.stamp.type_rank, r.stamp.event_id, r.stamp.terminal,
                  r.created, r.failure_message);
    }
    Result<std::vector<PaymentRecord>> ListPayments(const BillingListFilter& f) override {
        static const std::string sql =
            std::string("SELECT ") + kPaymentCols +
            " FROM payments WHERE (?1 IS NULL OR stripe_customer_id=?1) AND (?2 IS NULL OR status=?2) AND "
            "(?3 IS NULL OR created>=?3) AND (?4 IS NULL OR (created, id) < (SELECT created, id FROM payments WHERE "
            "id=?4)) ORDER BY created DESC, id DESC LIMIT ?5";
        return Many<PaymentRecord>(sql.c_str(), ReadPayment, f.stripe_customer_id, f.status, f.created_gte,
                                   f.starting_after, f.limit);
    }
};

class SqliteAuditTx final : public AuditStoreTx, private SqliteStatements {
public:
    explicit SqliteAuditTx(Connection& c) : SqliteStatements(c) {}

    Status Append(const AuditEntry& e) override {
        return Do("INSERT INTO audit_log(customer_id, at, kind, before, after, cause, detail) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7)",
                  e.customer_id, e.at, e.kind, e.before, e.after, e.cause, e.detail);
    }
    Result<std::vector<AuditEntry>> List(const CustomerId& customer_id, int limit) override {
        auto read = [](sqlite3_stmt* s) {
            return AuditEntry{Int(s, 0), CustomerId(Text(s, 1)), Timestamp(Int(s, 2)), Text(s, 3), Text(s, 4),
                              Text(s, 5), Text(s, 6), Text(s, 7)};
        };
        if (customer_id.empty()) {
            return Many<AuditEntry>(
                "SELECT id, customer_id, at, kind, before, after, cause, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
                read, limit);
        }
        return Many<AuditEntry>(
            "SELECT id, customer_id, at, kind, before, after, cause, detail FROM audit_log WHERE customer_id=?1 "
            "ORDER BY id DESC LIMIT ?2",
            read, customer_id, limit);
    }
};

class SqliteInboxTx final : public InboxStoreTx, private SqliteStatements {
public:
    explicit SqliteInboxTx(Connection& c) : SqliteStatements(c) {}

    Result<std::optional<InboxEvent>> Get(const StripeEventId& id) override {
        static const std::string sql = std::string("SELECT ") + kInboxCols + " FROM webhook_events WHERE id=?1";
        return One<InboxEvent>(sql.c_str(), ReadInbox, id);
    }
    Result<std::optional<int64_t>> GetSequence(const StripeEventId& id) override {
        return One<int64_t>("SELECT rowid FROM webhook_events WHERE id=?1",
                            [](sqlite3_stmt* s) { return static_cast<int64_t>(sqlite3_column_int64(s, 0)); }, id);
    }
    Result<std::optional<std::string>> GetPayload(const StripeEventId& id) override {
        return One<std::string>(
            "SELECT p.payload FROM webhook_events e JOIN webhook_payloads p ON p.event_rowid = e.rowid WHERE e.id=?1",
            [](sqlite3_stmt* s) {
                const auto* p = static_cast<const char*>(sqlite3_column_blob(s, 0));
                return std::string(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(s, 0)));
            },
            id);
    }
    Result<std::vector<InboxEvent>> List(std::optional<InboxStatus> status, int limit) override {
        if (status) {
            static const std::string sql = std::string("SELECT ") + kInboxCols +
                                           " FROM webhook_events WHERE status=?1 ORDER BY received_at DESC, rowid DESC LIMIT ?2";
            return Many<InboxEvent>(sql.c_str(), ReadInbox, InboxStatusName(*status), limit);
        }
        static const std::string sql =
            std::string("SELECT ") + kInboxCols + " FROM webhook_events ORDER BY rowid DESC LIMIT ?1";
        return Many<InboxEvent>(sql.c_str(), ReadInbox, limit);
    }
    Result<std::vector<StripeEventId>> ListDue(Timestamp now, int limit) override {
        return Many<StripeEventId>(
            // Walks the due index and stops at the limit; the ordering rule makes apply order irrelevant.
            "SELECT id FROM webhook_events WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1 "
            "ORDER BY next_attempt_at LIMIT ?2",
            [](sqlite3_stmt* s) { return StripeEventId(Text(s, 0)); }, now, limit);
    }
    Result<std::vector<bool>> LockForProcessing(const std::vector<StripeEventId>& ids) override {
        return std::vector<bool>(ids.size(), true);  // one writer at a time: the whole database is this transaction's
    }
    Status UpdateState(const InboxEvent& e) override {
        return Do("UPDATE webhook_events SET status=?2, attempts=?3, last_error=?4, outcome=?5, next_attempt_at=?6, "
                  "processed_at=?7 WHERE id=?1",
                  e.id, InboxStatusName(e.status), e.attempts, e.last_error, e.outcome, e.next_attempt_at,
                  e.processed_at);
    }
};

class SqliteKeyTx final : public KeyStoreTx, private SqliteStatements {
public:
    explicit SqliteKeyTx(Connection& c) : SqliteStatements(c) {}

    Status InsertApiKey(const ApiKeyRecord& k) override {
        return Do("INSERT INTO api_keys(id, hash, scope, created_at, name, last_used_at, revoked_at) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7)",
                  k.id, k.hash_hex, k.scope, k.created_at, k.name, k.last_used_at, k.revoked_at);
    }
    Result<std::optional<ApiKeyRecord>> FindApiKeyByHash(const std::string& hash_hex) override {
        static const std::string sql = std::string("SELECT ") + kApiKeyCols + " FROM api_keys WHERE hash=?1";
        return One<ApiKeyRecord>(sql.c_str(), ReadApiKey, hash_hex);
    }
    Result<std::optional<ApiKeyRecord>> GetApiKey(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kApiKeyCols + " FROM api_keys WHERE id=?1";
        return One<ApiKeyRecord>(sql.c_str(), ReadApiKey, id);
    }
    Result<std::vector<ApiKeyRecord>> ListApiKeys() override {
        static const std::string sql = std::string("SELECT ") + kApiKeyCols + " FROM api_keys ORDER BY created_at, id";
        return Many<ApiKeyRecord>(sql.c_str(), ReadApiKey);
    }
    Status UpdateApiKey(const ApiKeyRecord& k) override {
        return Do("UPDATE api_keys SET revoked_at=COALESCE(revoked_at, ?2), last_used_at=COALESCE(?3, last_used_at) "
                  "WHERE id=?1",
                  k.id, k.revoked_at, k.last_used_at);
    }

    Status InsertCustomerSession(const CustomerSessionRecord& r) override {
        return Do("INSERT INTO customer_sessions(id, hash, customer_id, user_id, created_at, expires_at, revoked_at) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7)",
                  r.id, r.hash_hex, r.customer_id, r.user_id, r.created_at, r.expires_at, r.revoked_at);
    }
    Result<std::optional<CustomerSessionRecord>> FindCustomerSessionByHash(const std::string& hash_hex) override {
        static const std::string sql = std::string("SELECT ") + kSessionCols + " FROM customer_sessions WHERE hash=?1";
        return One<CustomerSessionRecord>(sql.c_str(), ReadSession, hash_hex);
    }
    Result<std::optional<CustomerSessionRecord>> GetCustomerSession(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kSessionCols + " FROM customer_sessions WHERE id=?1";
        return One<CustomerSessionRecord>(sql.c_str(), ReadSession, id);
    }
    Status RevokeCustomerSession(const std::string& id, Timestamp at) override {
        return Do("UPDATE customer_sessions SET revoked_at=COALESCE(revoked_at, ?2) WHERE id=?1", id, at);
    }
    Result<int> PruneCustomerSessions(Timestamp before) override {
        TALLY_TRY(Do("DELETE FROM customer_sessions WHERE expires_at < ?1", before));
        return Changes();
    }

    Result<std::optional<IdempotencyRecord>> GetIdempotency(const std::string& api_key_id,
                                                            const std::string& key) override {
        return One<IdempotencyRecord>(
            "SELECT api_key_id, key, request_hash, state, status, response_body, created_at, locked_until "
            "FROM idempotency_keys WHERE api_key_id=?1 AND key=?2",
            [](sqlite3_stmt* s) {
                return IdempotencyRecord{Text(s, 0), Text(s, 1), Text(s, 2),
                                         Text(s, 3) == "done" ? IdempotencyState::kDone : IdempotencyState::kInFlight,
                                         static_cast<int>(Int(s, 4)), Text(s, 5), Timestamp(Int(s, 6)), OptTs(s, 7)};
            },
            api_key_id, key);
    }
    Status InsertIdempotency(const IdempotencyRecord& r) override {
        return Do("INSERT INTO idempotency_keys(api_key_id, key, request_hash, state, status, response_body, created_at, "
                  "locked_until) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                  r.api_key_id, r.key, r.request_hash, r.state == IdempotencyState::kDone ? "done" : "in_flight",
                  r.status, r.response_body, r.created_at, r.locked_until);
    }
    Status UpdateIdempotency(const IdempotencyRecord& r) override {
        return Do("UPDATE idempotency_keys SET request_hash=?3, state=?4, status=?5, response_body=?6, created_at=?7, "
                  "locked_until=?8 WHERE api_key_id=?1 AND key=?2",
                  r.api_key_id, r.key, r.request_hash, r.state == IdempotencyState::kDone ? "done" : "in_flight",
                  r.status, r.response_body, r.created_at, r.locked_until);
    }
    Result<bool> FinishIdempotencyClaim(const IdempotencyRecord& r, Timestamp claimed_until) override {
        TALLY_TRY(Do("UPDATE idempotency_keys SET request_hash=?3, state=?4, status=?5, response_body=?6, created_at=?7, "
                     "locked_until=NULL WHERE api_key_id=?1 AND key=?2 AND state='in_flight' AND locked_until=?8",
                     r.api_key_id, r.key, r.request_hash, r.state == IdempotencyState::kDone ? "done" : "in_flight",
                     r.status, r.response_body, r.created_at, claimed_until));
        return sqlite3_changes(c_.raw()) == 1;
    }
    Status ReleaseIdempotencyClaim(const std::string& api_key_id, const std::string& key,
                                   Timestamp claimed_until) override {
        return Do("DELETE FROM idempotency_keys WHERE api_key_id=?1 AND key=?2 AND state='in_flight' AND locked_until=?3",
                  api_key_id, key, claimed_until);
    }
    Result<int> PruneIdempotency(Timestamp before) override {
        TALLY_TRY(Do("DELETE FROM usage_legacy_keys WHERE created_at < ?1", before));
        int n = sqlite3_changes(c_.raw());
        TALLY_TRY(Do("DELETE FROM idempotency_keys WHERE created_at < ?1", before));
        return n + sqlite3_changes(c_.raw());
    }
};

// ---- plans
constexpr const char* kPlanCols =
    "id, position, name, role, credits_monthly, archived_at, created, updated, stripe_sync_pending, stripe_sync_error, "
    "stripe_sync_attempts, next_sync_at";
constexpr const char* kPlanPriceCols =
    "id, plan_id, lookup_key, interval_unit, interval_count, unit_amount, currency, stripe_price_id, active, created";

PlanRecord ReadPlan(sqlite3_stmt* s) {
    PlanRecord p;
    p.id = Text(s, 0);
    p.position = Int(s, 1);
    p.name = Text(s, 2);
    p.role = Text(s, 3);
    p.credits_monthly = Int(s, 4);
    p.archived_at = OptTs(s, 5);
    p.created = Timestamp(Int(s, 6));
    p.updated = Timestamp(Int(s, 7));
    p.stripe_sync_pending = Int(s, 8) != 0;
    p.stripe_sync_error = Text(s, 9);
    p.stripe_sync_attempts = Int(s, 10);
    p.next_sync_at = Timestamp(Int(s, 11));
    return p;
}

using PlanPriceRow = std::pair<std::string, PlanPriceRecord>;  // plan id, price
using EntitlementRow = std::tuple<std::string, std::string, std::string, std::optional<int64_t>>;  // plan, kind, name, value
using PlanEntitlementRow = std::tuple<std::string, std::string, std::optional<int64_t>>;  // kind, name, value

PlanPriceRow ReadPlanPrice(sqlite3_stmt* s) {
    PlanPriceRecord r{Text(s, 0), Text(s, 2), Text(s, 3), Int(s, 4), Int(s, 5), Text(s, 6), Text(s, 7),
                      Int(s, 8) != 0, Timestamp(Int(s, 9))};
    return {Text(s, 1), std::move(r)};
}

class SqlitePlanTx final : public PlanStoreTx, private SqliteStatements {
public:
    explicit SqlitePlanTx(Connection& c) : SqliteStatements(c) {}

    Result<std::optional<CatalogSettings>> Settings() override {
        return One<CatalogSettings>("SELECT roles, default_plan, version, meters FROM catalog_settings WHERE id=1",
                                    [](sqlite3_stmt* s) {
                                        return CatalogSettings{SplitLines(Text(s, 0)), Text(s, 1), Int(s, 2),
                                                               MetersFromText(Text(s, 3))};
                                    });
    }
    Result<int64_t> PutSettings(const CatalogSettings& settings) override {
        TALLY_TRY(Do("INSERT INTO catalog_settings(id, roles, default_plan, version, meters) VALUES (1, ?1, ?2, 1, ?3) "
                     "ON CONFLICT(id) DO UPDATE SET roles=excluded.roles, default_plan=excluded.default_plan, "
                     "version=catalog_settings.version+1, meters=excluded.meters",
                     JoinLines(settings.roles), settings.default_plan, MetersToText(settings.meters)));
        TALLY_ASSIGN_OR_RETURN(auto v, One<int64_t>("SELECT version FROM catalog_settings WHERE id=1",
                                                    [](sqlite3_stmt* s) { return Int(s, 0); }));
        return v.value_or(0);
    }
    Result<std::vector<PlanRecord>> ListPlans() override {
        static const std::string sql = std::string("SELECT ") + kPlanCols + " FROM plans ORDER BY position, id";
        TALLY_ASSIGN_OR_RETURN(auto plans, Many<PlanRecord>(sql.c_str(), ReadPlan));
        TALLY_ASSIGN_OR_RETURN(auto entitlements,
                               Many<EntitlementRow>(
                                   "SELECT plan_id, kind, name, value FROM plan_entitlements ORDER BY plan_id, kind, name",
                                   [](sqlite3_stmt* s) {
                                       return std::make_tuple(Text(s, 0), Text(s, 1), Text(s, 2), OptInt(s, 3));
                                   }));
        static const std::string prices_sql =
            std::string("SELECT ") + kPlanPriceCols + " FROM plan_prices ORDER BY plan_id, seq";
        TALLY_ASSIGN_OR_RETURN(auto prices, Many<PlanPriceRow>(prices_sql.c_str(), ReadPlanPrice));
        std::map<std::string, PlanRecord*> by_id;
        for (auto& p : plans) by_id[p.id] = &p;
        for (auto& [plan_id, kind, name, value] : entitlements) {
            auto it = by_id.find(plan_id);
            if (it == by_id.end()) continue;
            if (kind == "feature") {
                it->second->features[name] = value.value_or(0) != 0;
            } else {
                it->second->limits[name] = value;
            }
        }
        for (auto& [plan_id, price] : prices) {
            if (auto it = by_id.find(plan_id); it != by_id.end()) it->second->prices.push_back(std::move(price));
        }
        return plans;
    }
    Result<std::optional<PlanRecord>> GetPlan(const std::string& id) override {
        static const std::string sql = std::string("SELECT ") + kPlanCols + " FROM plans WHERE id=?1";
        TALLY_ASSIGN_OR_RETURN(auto plan, One<PlanRecord>(sql.c_str(), ReadPlan, id));
        if (!plan) return plan;
        TALLY_ASSIGN_OR_RETURN(auto entitlements,
                               Many<PlanEntitlementRow>(
                                   "SELECT kind, name, value FROM plan_entitlements WHERE plan_id=?1 ORDER BY kind, name",
                                   [](sqlite3_stmt* s) { return std::make_tuple(Text(s, 0), Text(s, 1), OptInt(s, 2)); },
                                   id));
        for (auto& [kind, name, value] : entitlements) {
            if (kind == "feature") {
                plan->features[name] = value.value_or(0) != 0;
            } else {
                plan->limits[name] = value;
            }
        }
        static const std::string prices_sql =
            std::string("SELECT ") + kPlanPriceCols + " FROM plan_prices WHERE plan_id=?1 ORDER BY seq";
        TALLY_ASSIGN_OR_RETURN(auto prices,
                               Many<PlanPriceRow>(prices_sql.c_str(), ReadPlanPrice, id));
        for (auto& [_, price] : prices) plan->prices.push_back(std::move(price));
        return plan;
    }
    Status PutPlan(const PlanRecord& p) override {
        TALLY_TRY(Do("INSERT INTO plans(id, position, name, role, credits_monthly, archived_at, created, updated, "
                     "stripe_sync_pending, stripe_sync_error, stripe_sync_attempts, next_sync_at) "
                     "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12) ON CONFLICT(id) DO UPDATE SET "
                     "position=excluded.position, name=excluded.name, role=excluded.role, "
                     "credits_monthly=excluded.credits_monthly, archived_at=excluded.archived_at, "
                     "updated=excluded.updated, stripe_sync_pending=excluded.stripe_sync_pending, "
                     "stripe_sync_error=excluded.stripe_sync_error, stripe_sync_attempts=excluded.stripe_sync_attempts, "
                     "next_sync_at=excluded.next_sync_at",
                     p.id, p.position, p.name, p.role, p.credits_monthly, p.archived_at, p.created, p.updated,
                     p.stripe_sync_pending, p.stripe_sync_error, p.stripe_sync_attempts, p.next_sync_at));
        TALLY_TRY(Do("DELETE FROM plan_entitlements WHERE plan_id=?1", p.id));
        for (const auto& [name, on] : p.features) {
            TALLY_TRY(Do("INSERT INTO plan_entitlements(plan_id, kind, name, value) VALUES (?1, 'feature', ?2, ?3)", p.id,
                         name, int64_t{on ? 1 : 0}));
        }
        for (const auto& [name, value] : p.limits) {
            TALLY_TRY(Do("INSERT INTO plan_entitlements(plan_id, kind, name, value) VALUES (?1, 'limit', ?2, ?3)", p.id,
                         name, value));
        }
        for (size_t i = 0; i < p.prices.size(); ++i) {
            const PlanPriceRecord& r = p.prices[i];
            TALLY_TRY(Do("INSERT INTO plan_prices(id, plan_id, lookup_key, interval_unit, interval_count, unit_amount, "
                         "currency, stripe_price_id, active, created, seq) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11) "
                         "ON CONFLICT(id) DO UPDATE SET lookup_key=excluded.lookup_key, "
                         "stripe_price_id=excluded.stripe_price_id, active=excluded.active",
                         r.id, p.id, r.lookup_key, r.interval, r.interval_count, r.unit_amount, r.currency,
                         r.stripe_price_id, r.active, r.created, static_cast<int64_t>(i)));
        }
        return {};
    }
    Result<std::vector<std::string>> ClaimDuePlanSyncs(Timestamp now, Timestamp claim_until, int limit) override {
        TALLY_ASSIGN_OR_RETURN(auto ids, Many<std::string>("SELECT id FROM plans WHERE stripe_sync_pending=1 AND "
                                                           "next_sync_at<=?1 ORDER BY next_sync_at, id LIMIT ?2",
                                                           [](sqlite3_stmt* s) { return Text(s, 0); }, now, limit));
        for (const auto& id : ids) TALLY_TRY(Do("UPDATE plans SET next_sync_at=?1 WHERE id=?2", claim_until, id));
        return ids;
    }
};

// ---- usage
constexpr size_t kUsageEventColumns = 14;
class SqliteUsageTx final : public UsageStoreTx, private SqliteStatements {
public:
    explicit SqliteUsageTx(Connection& c) : SqliteStatements(c) {}

    Result<int64_t> Value(const CustomerId& customer, const std::string& meter, Timestamp period_start) override {
        TALLY_ASSIGN_OR_RETURN(auto v, One<int64_t>("SELECT value FROM usage_counters WHERE customer_id=?1 AND meter=?2 "
                                                    "AND period_start=?3",
                                                    [](sqlite3_stmt* s) { return Int(s, 0); }, customer, meter,
                                                    period_start));
        return v.value_or(0);
    }
    Status PutValue(const CustomerId& customer, const std::string& meter, Timestamp period_start, int64_t value,
                    Timestamp updated) override {
        return Do("INSERT INTO usage_counters(customer_id, meter, period_start, value, updated) VALUES (?1,?2,?3,?4,?5) "
                  "ON CONFLICT(customer_id, meter, period_start) DO UPDATE SET value=excluded.value, "
                  "updated=excluded.updated",
                  customer, meter, period_start, value, updated);
    }
    Status AppendEvent(const UsageEventRecord& e) override {
        const UsageEventRecord* one = &e;
        return AppendEvents(std::span(&one, 1));
    }
    Status AppendEvents(const std::vector<const UsageEventRecord*>& events) override {
        return AppendEvents(std::span(events));
    }
    /// Multi-row INSERTs (InsertRows).
    Status AppendEvents(std::span<const UsageEventRecord* const> events) {
        // OR FAIL: a conflict fails the statement and keeps what it wrote (the caller rolls back), so SQLite needs no
        // statement journal for it (sqlite.org/tempfiles.html, "Statement Journals").
        static const MultiRowInsert sql = MultiRowInserts(
            "INSERT OR FAIL INTO usage_events(customer_id, meter, period_start, action, value, delta, at, recorded_at, "
            "api_key_id, idempotency_key, timestamp_given, current, limit_value, period_end)",
            kUsageEventColumns);
        return InsertRows(sql, events.size(), [&](sqlite3_stmt* s, int i, size_t row) {
            const UsageEventRecord& e = *events[row];
            const bool keyed = !e.idempotency_key.empty();
            BindOne(s, ++i, e.customer_id);
            BindOne(s, ++i, e.meter);
            BindOne(s, ++i, e.period_start);
            BindOne(s, ++i, e.action);
            BindOne(s, ++i, e.value);
            BindOne(s, ++i, e.delta);
            BindOne(s, ++i, e.at);
            BindOne(s, ++i, e.recorded_at);
            if (keyed) {
                BindOne(s, ++i, e.api_key_id);
                BindOne(s, ++i, e.idempotency_key);
            } else {
                sqlite3_bind_null(s, ++i);
                sqlite3_bind_null(s, ++i);
            }
            BindOne(s, ++i, e.timestamp_given);
            BindOne(s, ++i, e.current);
            BindOne(s, ++i, e.limit);
            BindOne(s, ++i, e.period_end);
            return i;
        });
    }
    Result<std::optional<UsageEventRecord>> FindKeyedEvent(const std::string& api_key_id,
                                                           const std::string& idempotency_key) override {
        return One<UsageEventRecord>(
            "SELECT id, customer_id, meter, period_start, action, value, delta, at, recorded_at, api_key_id, "
            "idempotency_key, timestamp_given, current, limit_value, period_end FROM usage_events "
            "WHERE api_key_id=?1 AND idempotency_key=?2",
            [](sqlite3_stmt* s) {
                return UsageEventRecord{Int(s, 0),  CustomerId(Text(s, 1)), Text(s, 2),    Timestamp(Int(s, 3)),
                                        Text(s, 4), Int(s, 5),              Int(s, 6),     Timestamp(Int(s, 7)),
                                        Timestamp(Int(s, 8)), Text(s, 9),   Text(s, 10),   Int(s, 11) != 0,
                                        Int(s, 12), OptInt(s, 13),          OptTs(s, 14)};
            },
            api_key_id, idempotency_key);
    }
    Result<bool> HasLegacyKeys() override {
        TALLY_ASSIGN_OR_RETURN(auto any, One<int64_t>("SELECT 1 FROM usage_legacy_keys LIMIT 1",
                                                      [](sqlite3_stmt* s) { return Int(s, 0); }));
        return any.has_value();
    }
    Result<std::optional<UsageLegacyKey>> FindLegacyKey(const std::string& api_key_id,
                                                        const std::string& idempotency_key) override {
        return One<UsageLegacyKey>("SELECT request_hash, response_body FROM usage_legacy_keys WHERE api_key_id=?1 AND "
                                   "key=?2",
                                   [](sqlite3_stmt* s) { return UsageLegacyKey{Text(s, 0), Text(s, 1)}; }, api_key_id,
                                   idempotency_key);
    }
    Result<std::optional<Timestamp>> LatestPeriodBefore(const CustomerId& customer, const std::string& meter,
                                                        Timestamp before) override {
        return One<Timestamp>("SELECT period_start FROM usage_counters WHERE customer_id=?1 AND meter=?2 AND "
                              "period_start<?3 ORDER BY period_start DESC LIMIT 1",
                              [](sqlite3_stmt* s) { return Timestamp(Int(s, 0)); }, customer, meter, before);
    }
    Result<std::vector<UsageDayRecord>> DailyUsage(const CustomerId& customer, const std::string& meter,
                                                   Timestamp from, Timestamp to) override {
        return Many<UsageDayRecord>("SELECT at - at % 86400 AS day, SUM(delta), COUNT(*) FROM usage_events "
                                    "WHERE customer_id=?1 AND meter=?2 AND at>=?3 AND at<?4 GROUP BY day "
                                    "ORDER BY day",
                                    [](sqlite3_stmt* s) { return UsageDayRecord{Timestamp(Int(s, 0)), Int(s, 1), Int(s, 2)}; },
                                    customer, meter, from, to);
    }
    Result<int64_t> DeltaBefore(const CustomerId& customer, const std::string& meter, Timestamp at) override {
        TALLY_ASSIGN_OR_RETURN(auto v, One<int64_t>("SELECT COALESCE(SUM(delta), 0) FROM usage_events WHERE "
                                                    "customer_id=?1 AND meter=?2 AND at<?3",
                                                    [](sqlite3_stmt* s) { return Int(s, 0); }, customer, meter, at));
        return v.value_or(0);
    }
    Result<bool> MarkThreshold(const CustomerId& customer, const std::string& meter, Timestamp period_start,
                               int threshold, Timestamp at) override {
        TALLY_ASSIGN_OR_RETURN(auto added, One<int64_t>("INSERT INTO usage_thresholds(customer_id, meter, period_start, "
                                                        "threshold, at) VALUES (?1,?2,?3,?4,?5) ON CONFLICT DO NOTHING "
                                                        "RETURNING threshold",
                                                        [](sqlite3_stmt* s) { return Int(s, 0); }, customer, meter,
                                                        period_start, threshold, at));
        return added.has_value();
    }
    Status ClearThresholds(const CustomerId& customer, const std::string& meter, Timestamp period_start,
                           int threshold) override {
        return Do("DELETE FROM usage_thresholds WHERE customer_id=?1 AND meter=?2 AND period_start=?3 AND "
                  "threshold>=?4",
                  customer, meter, period_start, threshold);
    }
    Result<std::vector<LimitOverrideRecord>> ListOverrides(const CustomerId& customer) override {
        return Many<LimitOverrideRecord>(
            "SELECT customer_id, meter, limit_value, extra, expires_at, reason, created, actor FROM limit_overrides "
            "WHERE customer_id=?1 ORDER BY meter",
            [](sqlite3_stmt* s) {
                return LimitOverrideRecord{CustomerId(Text(s, 0)), Text(s, 1),
                                           IsNull(s, 2) ? std::nullopt : std::optional<int64_t>(Int(s, 2)), Int(s, 3),
                                           OptTs(s, 4), Text(s, 5), Timestamp(Int(s, 6)), Text(s, 7)};
            },
            customer);
    }
    Status PutOverride(const LimitOverrideRecord& o) override {
        return Do("INSERT INTO limit_overrides(customer_id, meter, limit_value, extra, expires_at, reason, created, actor) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7,?8) ON CONFLICT(customer_id, meter) DO UPDATE SET "
                  "limit_value=excluded.limit_value, extra=excluded.extra, expires_at=excluded.expires_at, "
                  "reason=excluded.reason, created=excluded.created, actor=excluded.actor",
                  o.customer_id, o.meter, o.limit, o.extra, o.expires_at, o.reason, o.created, o.actor);
    }
    Result<bool> DeleteOverride(const CustomerId& customer, const std::string& meter) override {
        TALLY_TRY(Do("DELETE FROM limit_overrides WHERE customer_id=?1 AND meter=?2", customer, meter));
        return Changes() == 1;
    }
};

// ---- credits
CreditGrantRecord ReadSqliteGrant(sqlite3_stmt* s) {
    CreditGrantRecord g;
    g.id = Text(s, 0);
    g.customer_id = CustomerId(Text(s, 1));
    if (auto t = ParseGrantType(Text(s, 2)); t.ok()) g.type = *t;
    g.amount = Int(s, 3);
    g.remaining = Int(s, 4);
    g.priority = static_cast<int>(Int(s, 5));
    g.expires_at = OptTs(s, 6);
    g.transfer_id = Text(s, 7);
    g.reason = Text(s, 8);
    g.created = Timestamp(Int(s, 9));
    return g;
}
CreditTransferRecord ReadSqliteTransfer(sqlite3_stmt* s) {
    return CreditTransferRecord{Text(s, 0), CustomerId(Text(s, 1)), Text(s, 2), Int(s, 3), Text(s, 4), Text(s, 5), Text(s, 6), Int(s, 7), Int(s, 8),
                                Int(s, 9), Timestamp(Int(s, 10)), Text(s, 11), Text(s, 12)};
}
#define TALLY_CREDIT_TRANSFER_COLS                                                                                   \
    "id, customer_id, kind, amount, action, metadata, request, balance_subscription, balance_bundle, "                \
    "balance_promotional, created, actor, reference"
#define TALLY_CREDIT_RESERVATION_COLS "id, customer_id, amount, expires_at, status, captured, settled_at, metadata, created"
#define TALLY_NOTIFICATION_COLS "id, customer_id, kind, message, object, created, dismissed_at"
NotificationRecord ReadSqliteNotification(sqlite3_stmt* s) {
    return NotificationRecord{Text(s, 0), CustomerId(Text(s, 1)), Text(s, 2), Text(s, 3), Text(s, 4),
                              Timestamp(Int(s, 5)), OptTs(s, 6)};
}
CreditReservationRecord ReadSqliteReservation(sqlite3_stmt* s) {
    return CreditReservationRecord{Text(s, 0),   CustomerId(Text(s, 1)), Int(s, 2),   Timestamp(Int(s, 3)), Text(s, 4),
                                   OptInt(s, 5), OptTs(s, 6),            Text(s, 7), Timestamp(Int(s, 8))};
}

#define TALLY_CREDIT_PURCHASE_COLS \
    "id, customer_id, bundle, credits, amount, currency, expires_in_days, source, status, payment_intent, checkout_session, checkout_url, grant_id, failure_code, failure_message, amount_refunded, credits_refunded, credits_refund_spent, request, actor, created, updated"

CreditPurchaseRecord ReadSqlitePurchase(sqlite3_stmt* s) {
    CreditPurchaseRecord p;
    p.id = Text(s, 0);
    p.customer_id = CustomerId(Text(s, 1));
    p.bundle = Text(s, 2);
    p.credits = Int(s, 3);
    p.amount = Int(s, 4);
    p.currency = Text(s, 5);
    p.expires_in_days = OptInt(s, 6);
    p.source = Text(s, 7);
    p.status = Text(s, 8);
    p.payment_intent = Text(s, 9);
    p.checkout_session = Text(s, 10);
    p.checkout_url = Text(s, 11);
    p.grant_id = Text(s, 12);
    p.failure_code = Text(s, 13);
    p.failure_message = Text(s, 14);
    p.amount_refunded = Int(s, 15);
    p.credits_refunded = Int(s, 16);
    p.credits_refund_spent = Int(s, 17);
    p.request = Text(s, 18);
    p.actor = Text(s, 19);
    p.created = Timestamp(Int(s, 20));
    p.updated = Timestamp(Int(s, 21));
    return p;
}

#define TALLY_AUTO_PURCHASE_COLS \
    "customer_id, enabled, paused, threshold, bundle, max_per_month, failures, disabled_reason, pending_purchase, attempts, next_attempt_at, updated, actor"

AutoPurchaseRecord ReadSqliteAutoPurchase(sqlite3_stmt* s) {
    AutoPurchaseRecord a;
    a.customer_id = CustomerId(Text(s, 0));
    a.enabled = Int(s, 1) != 0;
    a.paused = Int(s, 2) != 0;
    a.threshold = Int(s, 3);
    a.bundle = Text(s, 4);
    a.max_per_month = Int(s, 5);
    a.failures = Int(s, 6);
    a.disabled_reason = Text(s, 7);
    a.pending_purchase = Text(s, 8);
    a.attempts = Int(s, 9);
    a.next_attempt_at = OptTs(s, 10);
    a.updated = Timestamp(Int(s, 11));
    a.actor = Text(s, 12);
    return a;
}

class SqliteCreditTx final : public CreditStoreTx, private SqliteStatements {
public:
    explicit SqliteCreditTx(Connection& c) : SqliteStatements(c) {}

    Result<std::vector<CreditGrantRecord>> ListGrants(const CustomerId& customer) override {
        return Many<CreditGrantRecord>("SELECT id, customer_id, type, amount, remaining, priority, expires_at, "
                                       "transfer_id, reason, created FROM credit_grants WHERE customer_id=?1 "
                                       "ORDER BY created, id",
                                       ReadSqliteGrant, customer);
    }
    Status InsertGrant(const CreditGrantRecord& g) override {
        return Do("INSERT INTO credit_grants(id, customer_id, type, amount, remaining, priority, expires_at, "
                  "transfer_id, reason, created) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                  g.id, g.customer_id, std::string(GrantTypeName(g.type)), g.amount, g.remaining, g.priority,
                  g.expires_at, g.transfer_id, g.reason, g.created);
    }
    Status SetGrantRemaining(const std::string& grant_id, int64_t remaining) override {
        return Do("UPDATE credit_grants SET remaining=?1 WHERE id=?2", remaining, grant_id);
    }
    Result<std::optional<CreditTransferRecord>> GetTransfer(const std::string& id) override {
        return One<CreditTransferRecord>("SELECT " TALLY_CREDIT_TRANSFER_COLS " FROM credit_transfers WHERE id=?1",
                                         ReadSqliteTransfer, id);
    }
    Status InsertTransfer(const CreditTransferRecord& t) override {
        // seq: one more than the last; SQLite's writers are serialized, so no two transfers share one.
        return Do("INSERT INTO credit_transfers(" TALLY_CREDIT_TRANSFER_COLS
                  ", seq) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,"
                  "(SELECT COALESCE(MAX(seq), 0) + 1 FROM credit_transfers))",
                  t.id, t.customer_id, t.kind, t.amount, t.action, t.metadata, t.request, t.balance_subscription,
                  t.balance_bundle, t.balance_promotional, t.created, t.actor, t.reference);
    }
    Status InsertTransfers(const std::vector<CreditTransferRecord>& transfers) override {
        if (transfers.empty()) return {};
        // seq: one more than the last, in the order given (writers are serialized).
        TALLY_ASSIGN_OR_RETURN(auto last, One<int64_t>("SELECT COALESCE(MAX(seq), 0) FROM credit_transfers",
                                                       [](sqlite3_stmt* s) { return Int(s, 0); }));
        const int64_t first = last.value_or(0) + 1;
        // OR FAIL, as AppendEvents: no statement journal; a failure (a transfer id taken) fails the caller's whole
        // transaction.
        static const MultiRowInsert sql =
            MultiRowInserts("INSERT OR FAIL INTO credit_transfers(" TALLY_CREDIT_TRANSFER_COLS ", seq)", 14);
        return InsertRows(sql, transfers.size(), [&](sqlite3_stmt* s, int i, size_t row) {
            const CreditTransferRecord& t = transfers[row];
            BindOne(s, ++i, t.id);
            BindOne(s, ++i, t.customer_id);
            BindOne(s, ++i, t.kind);
            BindOne(s, ++i, t.amount);
            BindOne(s, ++i, t.action);
            BindOne(s, ++i, t.metadata);
            BindOne(s, ++i, t.request);
            BindOne(s, ++i, t.balance_subscription);
            BindOne(s, ++i, t.balance_bundle);
            BindOne(s, ++i, t.balance_promotional);
            BindOne(s, ++i, t.created);
            BindOne(s, ++i, t.actor);
            BindOne(s, ++i, t.reference);
            BindOne(s, ++i, first + static_cast<int64_t>(row));
            return i;
        });
    }
    Result<std::vector<std::pair<std::string, int64_t>>> SumTransfersSince(const CustomerId& customer,
                                                                            Timestamp since) override {
        return Many<std::pair<std::string, int64_t>>(
            "SELECT kind, SUM(amount) FROM credit_transfers WHERE customer_id=?1 AND created>=?2 GROUP BY kind "
            "ORDER BY kind",
            [](sqlite3_stmt* s) { return std::make_pair(Text(s, 0), Int(s, 1)); }, customer, since);
    }
    Result<std::vector<CreditTransferRecord>> ListTransfers(const CreditTransferFilter& f) override {
        return Many<CreditTransferRecord>(
            "SELECT " TALLY_CREDIT_TRANSFER_COLS " FROM credit_transfers WHERE customer_id=?1 AND "
            "(?2 IS NULL OR kind=?2) AND (?3 IS NULL OR created>=?3) AND (?4 IS NULL OR created<=?4) AND "
            "(?5 IS NULL OR (created, seq) < (SELECT created, seq FROM credit_transfers WHERE id=?5)) "
            "ORDER BY created DESC, seq DESC LIMIT ?6",
            ReadSqliteTransfer, f.customer, f.kind, f.created_gte, f.created_lte, f.starting_after,
            int64_t{f.limit});
    }
    Status InsertReservation(const CreditReservationRecord& r) override {
        return Do("INSERT INTO credit_reservations(" TALLY_CREDIT_RESERVATION_COLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                  r.id, r.customer_id, r.amount, r.expires_at, r.status, r.captured, r.settled_at, r.metadata,
                  r.created);
    }
    Result<std::optional<CreditReservationRecord>> GetReservation(const std::string& id) override {
        return One<CreditReservationRecord>("SELECT " TALLY_CREDIT_RESERVATION_COLS " FROM credit_reservations WHERE id=?1",
                                            ReadSqliteReservation, id);
    }
    Status SettleReservation(const CreditReservationRecord& r) override {
        TALLY_TRY(Do("UPDATE credit_reservations SET status=?2, captured=?3, settled_at=?4 WHERE id=?1 AND "
                     "status='pending'",
                     r.id, r.status, r.captured, r.settled_at));
        if (Changes() != 1) return Conflict("reservation " + r.id + " is not pending");
        return {};
    }
    Result<std::vector<CreditReservationRecord>> ListPendingReservations(const CustomerId& customer) override {
        return Many<CreditReservationRecord>("SELECT " TALLY_CREDIT_RESERVATION_COLS " FROM credit_reservations "
                                             "WHERE customer_id=?1 AND status='pending' ORDER BY created, id",
                                             ReadSqliteReservation, customer);
    }
    Result<std::vector<CustomerId>> ListCustomersWithLapsedCredits(Timestamp now, int limit) override {
        // Both halves read a partial index of what is still live (credit_reservations_lapsing, credit_grants_lapsing).
        return Many<CustomerId>(
            "SELECT customer_id FROM credit_reservations WHERE status='pending' AND expires_at<=?1 "
            "UNION SELECT customer_id FROM credit_grants WHERE remaining>0 AND expires_at IS NOT NULL AND "
            "expires_at<=?1 LIMIT ?2",
            [](sqlite3_stmt* s) { return CustomerId(Text(s, 0)); }, now, limit);
    }
    Result<std::vector<CreditReservationRecord>> AllReservations() override {
        return Many<CreditReservationRecord>("SELECT " TALLY_CREDIT_RESERVATION_COLS " FROM credit_reservations ORDER BY id",
                                             ReadSqliteReservation);
    }
    Status InsertPurchase(const CreditPurchaseRecord& p) override {
        return Do("INSERT INTO credit_purchases(" TALLY_CREDIT_PURCHASE_COLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22)",
                  p.id, p.customer_id, p.bundle, p.credits, p.amount, p.currency, p.expires_in_days, p.source, p.status,
                  p.payment_intent, p.checkout_session, p.checkout_url, p.grant_id, p.failure_code, p.failure_message,
                  p.amount_refunded, p.credits_refunded, p.credits_refund_spent, p.request, p.actor, p.created,
                  p.updated);
    }
    Status UpdatePurchase(const CreditPurchaseRecord& p) override {
        return Do("UPDATE credit_purchases SET status=?2, payment_intent=?3, checkout_session=?4, checkout_url=?5, "
                  "grant_id=?6, failure_code=?7, failure_message=?8, amount_refunded=?9, credits_refunded=?10, "
                  "credits_refund_spent=?11, updated=?12 WHERE id=?1",
                  p.id, p.status, p.payment_intent, p.checkout_session, p.checkout_url, p.grant_id, p.failure_code,
                  p.failure_message, p.amount_refunded, p.credits_refunded, p.credits_refund_spent, p.updated);
    }
    Result<std::optional<CreditPurchaseRecord>> GetPurchase(const std::string& id) override {
        return One<CreditPurchaseRecord>("SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases WHERE id=?1",
                                         ReadSqlitePurchase, id);
    }
    Result<std::optional<CreditPurchaseRecord>> FindPurchaseByPaymentIntent(const std::string& payment_intent) override {
        return One<CreditPurchaseRecord>("SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases "
                                         "WHERE payment_intent=?1 AND payment_intent <> '' ORDER BY id LIMIT 1",
                                         ReadSqlitePurchase, payment_intent);
    }
    Result<std::vector<CreditPurchaseRecord>> ListPurchases(const CustomerId& customer,
                                                            const std::optional<std::string>& starting_after,
                                                            int limit) override {
        return Many<CreditPurchaseRecord>(
            "SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases WHERE customer_id=?1 AND "
            "(?2 IS NULL OR (created, id) < (SELECT created, id FROM credit_purchases WHERE id=?2)) "
            "ORDER BY created DESC, id DESC LIMIT ?3",
            ReadSqlitePurchase, customer, starting_after, int64_t{limit});
    }
    Result<int64_t> CountLivePurchasesSince(const CustomerId& customer, const std::string& source,
                                            Timestamp since) override {
        TALLY_ASSIGN_OR_RETURN(auto n, One<int64_t>("SELECT COUNT(*) FROM credit_purchases WHERE customer_id=?1 AND "
                                                    "source=?2 AND created>=?3 AND status IN ('pending', 'succeeded')",
                                                    [](sqlite3_stmt* s) { return Int(s, 0); },
                                                    customer, source, since));
        return n.value_or(0);
    }
    Result<std::optional<AutoPurchaseRecord>> GetAutoPurchase(const CustomerId& customer) override {
        return One<AutoPurchaseRecord>("SELECT " TALLY_AUTO_PURCHASE_COLS " FROM credit_auto_purchase WHERE customer_id=?1",
                                       ReadSqliteAutoPurchase, customer);
    }
    Status UpsertAutoPurchase(const AutoPurchaseRecord& a) override {
        return Do("INSERT INTO credit_auto_purchase(" TALLY_AUTO_PURCHASE_COLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13) "
                  "ON CONFLICT(customer_id) DO UPDATE SET enabled=excluded.enabled, paused=excluded.paused, threshold=excluded.threshold, bundle=excluded.bundle, max_per_month=excluded.max_per_month, failures=excluded.failures, disabled_reason=excluded.disabled_reason, pending_purchase=excluded.pending_purchase, attempts=excluded.attempts, next_attempt_at=excluded.next_attempt_at, updated=excluded.updated, actor=excluded.actor",
                  a.customer_id, a.enabled, a.paused, a.threshold, a.bundle, a.max_per_month, a.failures,
                  a.disabled_reason, a.pending_purchase, a.attempts, a.next_attempt_at, a.updated, a.actor);
    }
    Result<std::vector<AutoPurchaseRecord>> ListDueAutoPurchases(Timestamp now, int limit) override {
        return Many<AutoPurchaseRecord>("SELECT " TALLY_AUTO_PURCHASE_COLS " FROM credit_auto_purchase WHERE "
                                        "pending_purchase <> '' AND next_attempt_at <= ?1 "
                                        "ORDER BY next_attempt_at, customer_id LIMIT ?2",
                                        ReadSqliteAutoPurchase, now, int64_t{limit});
    }
    Result<bool> ClaimAutoPurchase(const CustomerId& customer, const std::string& purchase, Timestamp due,
                                   Timestamp lease_until) override {
        TALLY_ASSIGN_OR_RETURN(auto claimed, One<std::string>("UPDATE credit_auto_purchase SET next_attempt_at=?4 "
                                                              "WHERE customer_id=?1 AND pending_purchase=?2 AND "
                                                              "next_attempt_at=?3 RETURNING customer_id",
                                                              [](sqlite3_stmt* s) { return Text(s, 0); },
                                                              customer, purchase, due, lease_until));
        return claimed.has_value();
    }
    Result<std::vector<CreditPurchaseRecord>> AllPurchases() override {
        return Many<CreditPurchaseRecord>("SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases ORDER BY id",
                                          ReadSqlitePurchase);
    }
    Status InsertNotification(const NotificationRecord& n) override {
        return Do("INSERT INTO notifications(id, customer_id, kind, message, object, created, dismissed_at, seq) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7,(SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications))",
                  n.id, n.customer_id, n.kind, n.message, n.object, n.created, n.dismissed_at);
    }
    Result<std::vector<NotificationRecord>> ListNotifications(const CustomerId& customer, bool include_dismissed,
                                                              const std::optional<std::string>& starting_after,
                                                              int limit) override {
        return Many<NotificationRecord>(
            "SELECT " TALLY_NOTIFICATION_COLS " FROM notifications WHERE customer_id=?1 AND "
            "(?2 OR dismissed_at IS NULL) AND (?3 IS NULL OR seq < (SELECT seq FROM notifications WHERE id=?3)) "
            "ORDER BY seq DESC LIMIT ?4",
            ReadSqliteNotification, customer, include_dismissed, starting_after, int64_t{limit});
    }
    Result<std::optional<NotificationRecord>> GetNotification(const std::string& id) override {
        return One<NotificationRecord>("SELECT " TALLY_NOTIFICATION_COLS " FROM notifications WHERE id=?1",
                                       ReadSqliteNotification, id);
    }
    Status DismissNotification(const std::string& id, Timestamp at) override {
        return Do("UPDATE notifications SET dismissed_at=COALESCE(dismissed_at, ?2) WHERE id=?1", id, at);
    }
    Result<std::vector<std::string>> MutedNotificationKinds(const CustomerId& customer) override {
        return Many<std::string>("SELECT kind FROM notification_preferences WHERE customer_id=?1 ORDER BY kind",
                                 [](sqlite3_stmt* s) { return Text(s, 0); }, customer);
    }
    Status SetNotificationKindMuted(const CustomerId& customer, const std::string& kind, bool muted) override {
        if (muted) {
            return Do("INSERT INTO notification_preferences(customer_id, kind) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                      customer, kind);
        }
        return Do("DELETE FROM notification_preferences WHERE customer_id=?1 AND kind=?2", customer, kind);
    }
    Status AppendEntry(const CreditEntryRecord& e) override {
        return Do("INSERT INTO credit_entries(transfer_id, grant_id, amount, created) VALUES (?1,?2,?3,?4)",
                  e.transfer_id, e.grant_id, e.amount, e.created);
    }
    Status AppendEntries(const std::vector<CreditEntryRecord>& entries) override {
        // OR FAIL, as AppendEvents: no statement journal; a failure fails the caller's whole transaction.
        static const MultiRowInsert sql =
            MultiRowInserts("INSERT OR FAIL INTO credit_entries(transfer_id, grant_id, amount, created)", 4);
        return InsertRows(sql, entries.size(), [&](sqlite3_stmt* s, int i, size_t row) {
            const CreditEntryRecord& e = entries[row];
            BindOne(s, ++i, e.transfer_id);
            BindOne(s, ++i, e.grant_id);
            BindOne(s, ++i, e.amount);
            BindOne(s, ++i, e.created);
            return i;
        });
    }
    Result<std::vector<CreditEntryRecord>> ListEntries(const std::string& transfer_id) override {
        return Many<CreditEntryRecord>("SELECT id, transfer_id, grant_id, amount, created FROM credit_entries "
                                       "WHERE transfer_id=?1 ORDER BY id",
                                       [](sqlite3_stmt* s) {
                                           return CreditEntryRecord{Int(s, 0), Text(s, 1), Text(s, 2), Int(s, 3), Timestamp(Int(s, 4))};
                                       },
                                       transfer_id);
    }
    Result<std::vector<CreditGrantRecord>> AllGrants() override {
        return Many<CreditGrantRecord>("SELECT id, customer_id, type, amount, remaining, priority, expires_at, "
                                       "transfer_id, reason, created FROM credit_grants ORDER BY id",
                                       ReadSqliteGrant);
    }
    Result<std::vector<CreditTransferRecord>> AllTransfers() override {
        return Many<CreditTransferRecord>("SELECT " TALLY_CREDIT_TRANSFER_COLS " FROM credit_transfers ORDER BY id",
                                          ReadSqliteTransfer);
    }
    Result<std::vector<CreditEntryRecord>> AllEntries() override {
        return Many<CreditEntryRecord>("SELECT id, transfer_id, grant_id, amount, created FROM credit_entries ORDER BY id",
                                       [](sqlite3_stmt* s) {
                                           return CreditEntryRecord{Int(s, 0), Text(s, 1), Text(s, 2), Int(s, 3), Timestamp(Int(s, 4))};
                                       });
    }
};

// ---- flags
FlagRecord ReadSqliteFlag(sqlite3_stmt* s) {
    return FlagRecord{FeatureFlag{Text(s, 0), Text(s, 1), Int(s, 2) != 0, static_cast<int>(Int(s, 3))}, Timestamp(Int(s, 4)),
                      Timestamp(Int(s, 5)), Text(s, 6)};
}
FlagOverrideRecord ReadSqliteFlagOverride(sqlite3_stmt* s) {
    return FlagOverrideRecord{Text(s, 0), CustomerId(Text(s, 1)), Int(s, 2) != 0, Timestamp(Int(s, 3)), Text(s, 4)};
}

class SqliteFlagTx final : public FlagStoreTx, private SqliteStatements {
public:
    explicit SqliteFlagTx(Connection& c) : SqliteStatements(c) {}

    Result<std::vector<FlagRecord>> ListFlags() override {
        return Many<FlagRecord>("SELECT name, description, enabled, rollout_percentage, created, updated, updated_by "
                                "FROM flags ORDER BY name",
                                ReadSqliteFlag);
    }
    Result<std::optional<FlagRecord>> GetFlag(const std::string& name) override {
        return One<FlagRecord>("SELECT name, description, enabled, rollout_percentage, created, updated, updated_by "
                               "FROM flags WHERE name=?1",
                               ReadSqliteFlag, name);
    }
    Status PutFlag(const FlagRecord& f) override {
        return Do("INSERT INTO flags(name, description, enabled, rollout_percentage, created, updated, updated_by) "
                  "VALUES (?1,?2,?3,?4,?5,?6,?7) ON CONFLICT(name) DO UPDATE SET "
                  "description=excluded.description, enabled=excluded.enabled, "
                  "rollout_percentage=excluded.rollout_percentage, updated=excluded.updated, "
                  "updated_by=excluded.updated_by",
                  f.flag.name, f.flag.description, f.flag.enabled, f.flag.rollout_percentage, f.created, f.updated,
                  f.updated_by);
    }
    Result<bool> InsertFlagIfAbsent(const FlagRecord& f) override {
        TALLY_ASSIGN_OR_RETURN(auto added, One<std::string>(
                                               "INSERT INTO flags(name, description, enabled, rollout_percentage, "
                                               "created, updated, updated_by) VALUES (?1,?2,?3,?4,?5,?6,?7) "
                                               "ON CONFLICT(name) DO NOTHING RETURNING name",
                                               [](sqlite3_stmt* s) { return Text(s, 0); }, f.flag.name, f.flag.description,
                                               f.flag.enabled, f.flag.rollout_percentage, f.created, f.updated,
                                               f.updated_by));
        return added.has_value();
    }
    Result<std::vector<FlagOverrideRecord>> ListFlagOverrides(const std::string& flag) override {
        return Many<FlagOverrideRecord>("SELECT flag, customer_id, enabled, created, actor FROM flag_overrides "
                                        "WHERE flag=?1 ORDER BY customer_id",
                                        ReadSqliteFlagOverride, flag);
    }
    Result<std::optional<FlagOverrideRecord>> GetFlagOverride(const std::string& flag,
                                                              const CustomerId& customer) override {
        return One<FlagOverrideRecord>("SELECT flag, customer_id, enabled, created, actor FROM flag_overrides "
                                       "WHERE flag=?1 AND customer_id=?2",
                                       ReadSqliteFlagOverride, flag, customer);
    }
    Result<std::vector<FlagOverrideRecord>> CustomerFlagOverrides(const CustomerId& customer) override {
        return Many<FlagOverrideRecord>("SELECT flag, customer_id, enabled, created, actor FROM flag_overrides "
                                        "WHERE customer_id=?1 ORDER BY flag",
                                        ReadSqliteFlagOverride, customer);
    }
    Status PutFlagOverride(const FlagOverrideRecord& o) override {
        return Do("INSERT INTO flag_overrides(flag, customer_id, enabled, created, actor) VALUES (?1,?2,?3,?4,?5) "
                  "ON CONFLICT(flag, customer_id) DO UPDATE SET enabled=excluded.enabled, created=excluded.created, "
                  "actor=excluded.actor",
                  o.flag, o.customer_id, o.enabled, o.created, o.actor);
    }
    Result<bool> DeleteFlagOverride(const std::string& flag, const CustomerId& customer) override {
        TALLY_TRY(Do("DELETE FROM flag_overrides WHERE flag=?1 AND customer_id=?2", flag, customer));
        return Changes() == 1;
    }
};

/// StoreTx over one connection inside an open transaction.
class SqliteTx final : public StoreTx, private SqliteStatements {
public:
    explicit SqliteTx(Connection& c)
        : SqliteStatements(c), customers_(c), billing_(c), audit_(c), inbox_(c), keys_(c), events_(c), plans_(c), usage_(c), flags_(c), credits_(c) {}

    CustomerStoreTx& customers() override { return customers_; }
    BillingStoreTx& billing() override { return billing_; }
    InboxStoreTx& inbox() override { return inbox_; }
    AuditStoreTx& audit() override { return audit_; }
    KeyStoreTx& keys() override { return keys_; }
    EventStoreTx& events() override { return events_; }
    PlanStoreTx& plans() override { return plans_; }
    UsageStoreTx& usage() override { return usage_; }
    FlagStoreTx& flags() override { return flags_; }
    CreditStoreTx& credits() override { return credits_; }

    Status Savepoint() override { return Do("SAVEPOINT item"); }
    Status RollbackToSavepoint() override { return Do("ROLLBACK TO item"); }
    Status ReleaseSavepoint() override { return Do("RELEASE item"); }

private:
    SqliteCustomerTx customers_;
    SqliteBillingTx billing_;
    SqliteAuditTx audit_;
    SqliteInboxTx inbox_;
    SqliteKeyTx keys_;
    SqliteEventTx events_;
    SqlitePlanTx plans_;
    SqliteUsageTx usage_;
    SqliteFlagTx flags_;
    SqliteCreditTx credits_;
};

}  // namespace

namespace {
int64_t SteadyMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

int64_t ElapsedMs(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
}

void LogSlow(const std::string& what, int64_t ms) {
    auto logger = spdlog::get("tally");
    const std::string msg = "\"msg\":\"slow " + what + ": " + std::to_string(ms) + " ms\"";
    if (logger) {
        logger->warn(msg);
    } else {
        spdlog::warn(msg);
    }
}

// SQLite's built-in busy timeout sleeps in steps growing to 100 ms, so a writer that meets a lock held for
// 1 ms can sleep 100. Retry in short steps instead (50 us doubling to 1 ms), within the same total budget.
int BusyHandler(void*, int count) {
    const int64_t sleep_us = count < 5 ? (int64_t{50} << count) : 1000;
    if (static_cast<int64_t>(count) * 1000 > int64_t{kBusyTimeoutMs} * 1000) return 0;  // give up: SQLITE_BUSY
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    return 1;
}

// The checkpointer's RESTART runs with every commit waiting on it, so it gives up on a lock (a reader in another
// process, say) after kCheckpointReadLockWaitMs instead of kBusyTimeoutMs; the next quiet moment tries again.
int CheckpointBusyHandler(void*, int count) {
    if (count >= kCheckpointReadLockWaitMs * 5) return 0;  // 200 us steps
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    return 1;
}
}  // namespace

Result<std::unique_ptr<Connection>> Connection::Open(const std::string& path, const StoreOptions& options) {
    // Before the library initializes: no memory statistics (SQLITE_CONFIG_MEMSTATUS, off), which Tally never reads
    // and which otherwise put every allocation of every connection behind one process-wide mutex: the HTTP threads'
    // reads and the committer's writes would queue on it. Too late (another part of the process initialized the
    // library first: SQLITE_MISUSE) changes nothing but speed.
    static const int memstatus_off = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    (void)memstatus_off;
    sqlite3* db = nullptr;
    const bool durable = options.durable;
    // The opt-in shim writes a commit's WAL frames in a few large writes instead of two per page
    // (wal_write_vfs.hpp); it wraps whatever the default VFS is when it first registers.
    const char* vfs = options.wal_write_coalescing ? RegisterWalWriteVfs() : options.vfs;
    const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   vfs);
    if (rc != SQLITE_OK) {
        std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
        sqlite3_close(db);
        return Unavailable("cannot open database '" + path + "': " + msg);
    }
    std::unique_ptr<Connection> conn(new Connection(db));
    sqlite3_busy_handler(db, BusyHandler, nullptr);
    // WAL + synchronous=FULL: every COMMIT is fsync'd before it returns (acknowledged means durable).
    TALLY_TRY(conn->Exec("PRAGMA journal_mode=WAL"));
    TALLY_TRY(conn->Exec(durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF"));
    TALLY_TRY(conn->Exec("PRAGMA foreign_keys=ON"));
    TALLY_TRY(conn->Exec(("PRAGMA journal_size_limit=" + std::to_string(kWalSizeLimitBytes)).c_str()));
    // A 64 MiB page cache keeps hot pages in memory. No mmap: with a database that grows under load, SQLite
    // remaps it over and over (munmap was 5% of the worker's time; draining ran 7.8k/s with mmap, 10-12k without).
    TALLY_TRY(conn->Exec("PRAGMA cache_size=-65536"));
    TALLY_TRY(conn->Exec("PRAGMA mmap_size=0"));
    // Temporary files in memory: a group commit runs each write in a savepoint, and SQLite keeps the pages a
    // savepoint may have to restore in a sub-journal, a temporary file once past 64 KiB ("Temporary Files Used By
    // SQLite", 2.6). On disk it was ~14 pwrite(2)s per grouped deduction and 40% of the CPU. Recovery never reads
    // it (only a live transaction rolling back to a savepoint does), so durability rests on the WAL as before.
    TALLY_TRY(conn->Exec("PRAGMA temp_store=MEMORY"));
    return conn;
}

Connection::~Connection() {
    for (auto& [_, stmt] : cache_) sqlite3_finalize(stmt);
    sqlite3_close(db_);
}

Result<sqlite3_stmt*> Connection::Prepare(const char* sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) {
        sqlite3_reset(it->second);
        sqlite3_clear_bindings(it->second);
        return it->second;
    }
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
        return Internal(std::string("cannot prepare statement: ") + sqlite3_errmsg(db_));
    }
    cache_.emplace(sql, stmt);
    return stmt;
}

Status Connection::Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errmsg(db_);
        sqlite3_free(err);
        return Unavailable(std::string("database error: ") + msg);
    }
    return {};
}

Status Connection::Step(const char* sql) {
    TALLY_ASSIGN_OR_RETURN(sqlite3_stmt* s, Prepare(sql));
    StmtReset reset(s);
    const int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return LastError();
    return {};
}

tally::Error Connection::LastError() {
    const int code = sqlite3_extended_errcode(db_);
    std::string msg = std::string("database error: ") + sqlite3_errmsg(db_);
    if ((code & 0xff) == SQLITE_CONSTRAINT) return Conflict(msg);
    return Unavailable(msg);
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, const StoreOptions& options) {
    TALLY_ASSIGN_OR_RETURN(auto writer, Connection::Open(path, options));
    TALLY_TRY(Migrate(writer->raw()));
    // Checkpoints run on their own connection and thread (CheckpointLoop), never inside a commit.
    TALLY_TRY(writer->Exec("PRAGMA wal_autocheckpoint=0"));
    std::vector<std::unique_ptr<Connection>> readers;
    for (size_t i = 0; i < kReaderConnections; ++i) {
        TALLY_ASSIGN_OR_RETURN(auto reader, Connection::Open(path, options));
        readers.push_back(std::move(reader));
    }
    // The checkpointer's synchronous setting decides whether checkpoints fsync the database file.
    TALLY_ASSIGN_OR_RETURN(auto checkpointer, Connection::Open(path, options));
    sqlite3_busy_handler(checkpointer->raw(), CheckpointBusyHandler, nullptr);
    // Without it the checkpointer only skips its own writeback; the RESTART's fsync still covers the pages.
    const char* file_name = sqlite3_db_filename(writer->raw(), "main");
    auto file = std::make_unique<DatabaseFile>(file_name ? ::open(file_name, O_RDONLY | O_CLOEXEC) : -1);
    return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(file), std::move(writer), std::move(readers),
                                                        std::move(checkpointer), options.durable));
}

SqliteStore::DatabaseFile::~DatabaseFile() {
    if (fd_ >= 0) ::close(fd_);
}

SqliteStore::SqliteStore(std::unique_ptr<DatabaseFile> file, std::unique_ptr<Connection> writer,
                         std::vector<std::unique_ptr<Connection>> readers, std::unique_ptr<Connection> checkpointer,
                         bool durable)
    : file_(std::move(file)), writer_(std::move(writer)), readers_(std::move(readers)),
      checkpointer_(std::move(checkpointer)), durable_(durable) {
    for (auto& r : readers_) idle_readers_.push_back(r.get());
    // Told the WAL's size after every commit; replaces SQLite's own auto-checkpoint hook (disabled anyway).
    sqlite3_wal_hook(
        writer_->raw(),
        [](void* self, sqlite3*, const char*, int frames) {
            auto* store = static_cast<SqliteStore*>(self);
            store->wal_frames_.store(frames, std::memory_order_relaxed);
            store->last_commit_ms_.store(SteadyMs(), std::memory_order_relaxed);
            return SQLITE_OK;
        },
        this);
    checkpoint_thread_ = std::thread([this] { CheckpointLoop(); });
}

SqliteStore::~SqliteStore() {
    {
        std::lock_guard lock(checkpoint_mu_);
        stopping_ = true;
        checkpoint_cv_.notify_one();
    }
    checkpoint_thread_.join();
    // A final full checkpoint leaves a compact database file behind.
    std::lock_guard lock(write_mu_);
    sqlite3_wal_checkpoint_v2(writer_->raw(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

void SqliteStore::CheckpointLoop() {
    pthread_setname_np(pthread_self(), "tally-ckpt");
    std::unique_lock lock(checkpoint_mu_);
    while (!checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(kCheckpointIntervalMs), [this] { return stopping_; })) {
        lock.unlock();
        const int frames = wal_frames_.load(std::memory_order_relaxed);
        const bool quiet = SteadyMs() - last_commit_ms_.load(std::memory_order_relaxed) >= kCheckpointIdleMs;
        if ((quiet && frames >= kWalRestartFramesMin) || frames >= kWalBusyFramesMax) {
            const auto start = std::chrono::steady_clock::now();
            int log_frames = 0;
            int checkpointed_frames = 0;
            int rounds = 0;
            // Copy beside the writers until little is left: each round copies what was committed meanwhile. (A
            // round reports the WAL as it was when the round began; the wal hook knows what came since.)
            int residual = 0;
            do {
                sqlite3_wal_checkpoint_v2(checkpointer_->raw(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                          &checkpointed_frames);
                residual = std::max(log_frames, wal_frames_.load(std::memory_order_relaxed)) - checkpointed_frames;
            } while (++rounds < kCheckpointCopyRoundsMax && residual > kWalRestartResidualFramesMax);
            // A PASSIVE round fsyncs the database only if it caught up with the last commit. Otherwise the pages it
            // wrote are still dirty, and the RESTART would fsync them all with commits blocked (~500 ms for 1 GiB).
            // Write them back here, a slice at a time, so commit fsyncs never queue behind all of them at once.
            // (A round that caught up fsync'd the database itself, and with it every earlier round's pages.)
            // Not for a store without durability: nothing there is ever fsync'd.
            if (durable_ && (checkpointed_frames < log_frames || residual > 0)) SyncDatabaseFile();
            const int64_t copy_ms = ElapsedMs(start);
            int64_t blocked_ms = 0;
            if (log_frames >= 0 && residual <= kWalRestartResidualFramesMax) {
                blocked_ms = RestartWal();
            }
            if (const int64_t ms = ElapsedMs(start); ms > kSlowOperationMs || blocked_ms > kSlowOperationMs / 10) {
                LogSlow(std::string(quiet ? "quiet" : "busy") + " checkpoint of " + std::to_string(log_frames) +
                            " WAL frames (copy " + std::to_string(copy_ms) + " ms in " + std::to_string(rounds) +
                            " rounds; restart blocking commits " + std::to_string(blocked_ms) + " ms)",
                        ms);
            }
        }
        lock.lock();
    }
}

void SqliteStore::SyncDatabaseFile() {
    // Writeback and fdatasync act on the file, whichever descriptor asks. Never a descriptor opened and closed
    // here: its close would drop the process's SQLite locks (DatabaseFile).
    const int fd = file_->fd();
    if (fd < 0) return;  // the RESTART's own fsync still covers the pages
    struct stat st {};
    if (::fstat(fd, &st) == 0) {
        for (off_t offset = 0; offset < st.st_size; offset += kCheckpointWritebackSliceBytes) {
            (void)::sync_file_range(fd, offset, kCheckpointWritebackSliceBytes,
                                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
        }
    }
    (void)::fdatasync(fd);
    database_syncs_.fetch_add(1);
}

int64_t SqliteStore::RestartWal() {
    const auto start = std::chrono::steady_clock::now();
    std::lock_guard write_lock(write_mu_);
    // Readers hold snapshots in the WAL, and RESTART waits for them with SQLite's write lock held. Take the reader
    // connections' lock too, so there is nothing to wait for; try only briefly (a reader might want the write lock
    // next), and skip this round if the reads do not finish.
    std::unique_lock read_lock(read_mu_, std::defer_lock);
    const auto give_up = start + std::chrono::milliseconds(kCheckpointReadLockWaitMs);
    while (!read_lock.try_lock()) {
        if (std::chrono::steady_clock::now() >= give_up) return ElapsedMs(start);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (sqlite3_wal_checkpoint_v2(checkpointer_->raw(), nullptr, SQLITE_CHECKPOINT_RESTART, nullptr, nullptr) ==
        SQLITE_OK) {
        wal_frames_.store(0, std::memory_order_relaxed);
        wal_restarts_.fetch_add(1);
    }
    return ElapsedMs(start);
}

namespace {
/// Rolls back the open transaction when it goes out of scope uncommitted: an error return and an exception (a bug
/// in |fn|, bad_alloc) leave the connection as they found it.
class RollbackGuard {
public:
    explicit RollbackGuard(Connection& conn) : conn_(conn) {}
    ~RollbackGuard() {
        if (!active_) return;
        try {
            (void)conn_.Step("ROLLBACK");
        } catch (...) {  // NOLINT(bugprone-empty-catch): SQLite rolls back itself when the connection is next used
        }
    }
    RollbackGuard(const RollbackGuard&) = delete;
    RollbackGuard& operator=(const RollbackGuard&) = delete;
    void Dismiss() { active_ = false; }

private:
    Connection& conn_;
    bool active_ = true;
};
}  // namespace

Status SqliteStore::Run(Connection& conn, const char* begin, const std::function<Status(StoreTx&)>& fn) {
    TALLY_TRY(conn.Step(begin));
    RollbackGuard guard(conn);
    SqliteTx tx(conn);
    TALLY_TRY(fn(tx));
    TALLY_TRY(conn.Step("COMMIT"));
    guard.Dismiss();
    return {};
}

Status SqliteStore::WithReader(const std::function<Status(Connection&)>& fn) {
    std::shared_lock lock(read_mu_);
    Connection* conn = nullptr;
    {
        std::unique_lock pool(readers_mu_);
        reader_idle_.wait(pool, [this] { return !idle_readers_.empty(); });
        conn = idle_readers_.back();
        idle_readers_.pop_back();
    }
    struct Release {
        SqliteStore* store;
        Connection* conn;
        ~Release() {
            {
                std::lock_guard pool(store->readers_mu_);
                store->idle_readers_.push_back(conn);
            }
            store->reader_idle_.notify_one();
        }
    } release{this, conn};
    return fn(*conn);
}

Status SqliteStore::Read(const std::function<Status(StoreTx&)>& fn) {
    return WithReader([&](Connection& conn) { return Run(conn, "BEGIN", fn); });
}

Status SqliteStore::Write(const std::function<Status(StoreTx&)>& fn) {
    std::lock_guard lock(write_mu_);
    const auto start = std::chrono::steady_clock::now();
    Status s = Run(*writer_, "BEGIN IMMEDIATE", fn);
    if (commit_observer_) {
        commit_observer_(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), s.ok());
    }
    return s;
}

Status SqliteStore::WriteAsyncCommit(const std::function<Status(StoreTx&)>& fn) {
    if (!durable_) return Write(fn);
    std::lock_guard lock(write_mu_);
    const auto start = std::chrono::steady_clock::now();
    TALLY_TRY(writer_->Exec("PRAGMA synchronous=NORMAL"));
    Status s = Run(*writer_, "BEGIN IMMEDIATE", fn);
    // Every other write must stay durable: a process that cannot restore FULL stops rather than acknowledge
    // writes it has not synced (setting a pragma fails only when SQLite is out of memory).
    if (Status restored = writer_->Exec("PRAGMA synchronous=FULL"); !restored.ok()) {
        spdlog::critical("could not restore synchronous=FULL after an asynchronous commit: {}", restored.error().message);
        std::abort();
    }
    if (commit_observer_) {
        commit_observer_(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), s.ok());
    }
    return s;
}

Result<std::vector<bool>> SqliteStore::AppendInbox(const std::vector<InboxEvent>& events) {
    std::vector<bool> inserted(events.size(), false);
    const auto start = std::chrono::steady_clock::now();
    std::lock_guard lock(write_mu_);
    const int64_t lock_wait_ms = ElapsedMs(start);
    TALLY_TRY(Run(*writer_, "BEGIN IMMEDIATE", [&](StoreTx&) -> Status {
        static const char* kSql =
            "INSERT OR IGNORE INTO webhook_events(id, type, created, status, attempts, received_at, next_attempt_at) "
            "VALUES (?1,?2,?3,'pending',0,?4,?4)";
        static const char* kPayloadSql = "INSERT INTO webhook_payloads(event_rowid, payload) VALUES (?1,?2)";
        for (size_t i = 0; i < events.size(); ++i) {
            const InboxEvent& e = events[i];
            {
                TALLY_ASSIGN_OR_RETURN(sqlite3_stmt* s, writer_->Prepare(kSql));
                StmtReset reset(s);
                Bind(s, e.id, e.type, e.created, e.received_at);
                if (sqlite3_step(s) != SQLITE_DONE) return writer_->LastError();
                inserted[i] = sqlite3_changes(writer_->raw()) == 1;
            }
            if (!inserted[i]) continue;  // a duplicate delivery: the first payload stays
            TALLY_ASSIGN_OR_RETURN(sqlite3_stmt* s, writer_->Prepare(kPayloadSql));
            StmtReset reset(s);
            sqlite3_bind_int64(s, 1, sqlite3_last_insert_rowid(writer_->raw()));
            sqlite3_bind_blob(s, 2, e.payload.data(), static_cast<int>(e.payload.size()), SQLITE_STATIC);
            if (sqlite3_step(s) != SQLITE_DONE) return writer_->LastError();
        }
        return {};
    }));
    if (commit_observer_) {
        commit_observer_(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), true);
    }
    if (const int64_t ms = ElapsedMs(start); ms > kSlowOperationMs) {
        LogSlow("inbox commit of " + std::to_string(events.size()) + " events (" + std::to_string(lock_wait_ms) +
                    " ms waiting for the write lock)",
                ms);
    }
    return inserted;
}

Status SqliteStore::Ping() {
    return WithReader([](Connection& conn) { return conn.Exec("SELECT 1 FROM schema_migrations LIMIT 1"); });
}

}  // namespace tally::sqlite
