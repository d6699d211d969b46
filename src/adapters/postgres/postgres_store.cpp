#include "adapters/postgres/postgres_store.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <unordered_set>

#include "adapters/postgres/migrations.hpp"
#include "domain/text.hpp"
#include "adapters/postgres/pg_connection.hpp"

namespace tally::postgres {
namespace {

// ---- parameters: Params(a, b, c) makes $1, $2, $3 in order.
/// Raw bytes for a BYTEA parameter (sent in binary, so no escaping).
struct Bytes {
    const std::string& data;
};
Param P(int64_t v) { return {std::to_string(v)}; }
Param P(int v) { return {std::to_string(v)}; }
Param P(bool v) { return {std::string(v ? "t" : "f")}; }
Param P(Timestamp v) { return {std::to_string(v.unix_seconds())}; }
Param P(const std::string& v) { return {v}; }
Param P(const char* v) { return {std::string(v)}; }
Param P(const Bytes& v) { return {v.data, true}; }
template <typename Tag>
Param P(const Id<Tag>& v) { return {v.str()}; }
template <typename T>
Param P(const std::optional<T>& v) { return v ? P(*v) : Param{}; }

template <typename... Args>
std::vector<Param> Params(const Args&... args) {
    std::vector<Param> out;
    out.reserve(sizeof...(args));
    (out.push_back(P(args)), ...);
    return out;
}

/// True if |s| is text PostgreSQL can hold: valid UTF-8 (the database encoding) without NUL bytes. SQLite stores
/// any bytes; PostgreSQL refuses such a parameter, and libpq's text parameters end at the first NUL.
bool StorableText(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == 0) return false;
        if (c < 0x80) {
            ++i;
            continue;
        }
        int len = 0;
        uint32_t cp = 0;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + static_cast<size_t>(len) > s.size()) return false;
        for (int k = 1; k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
        if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += static_cast<size_t>(len);
    }
    return true;
}

bool AllStorable(const std::vector<Param>& params) {
    for (const auto& p : params) {
        if (p.value && !p.binary && !StorableText(*p.value)) return false;
    }
    return true;
}

/// One row of a result, read by column.
struct Row {
    const Rows& rows;
    int i;
    std::string Text(int c) const { return rows.Text(i, c); }
    int64_t Int(int c) const { return rows.Int(i, c); }
    bool Bool(int c) const { return rows.Bool(i, c); }
    bool IsNull(int c) const { return rows.IsNull(i, c); }
    std::optional<int64_t> OptInt(int c) const { return IsNull(c) ? std::nullopt : std::optional<int64_t>(Int(c)); }
    std::optional<Timestamp> OptTs(int c) const {
        return IsNull(c) ? std::nullopt : std::optional<Timestamp>(Timestamp(Int(c)));
    }
    EventStamp Stamp(int c) const { return EventStamp{Int(c), static_cast<int>(Int(c + 1)), Text(c + 2), Bool(c + 3)}; }
};

/// Statement helpers over one connection inside an open transaction, shared by the aggregates.
class PgStatements {
public:
    explicit PgStatements(PgConnection& c) : c_(c) {}

    // Writes refuse text PostgreSQL cannot hold (kInvalidArgument, nothing sent, the transaction still usable);
    // lookups by such text find nothing, since no stored value can equal it.
    template <typename... Args>
    Status Do(const char* sql, const Args&... args) {
        TALLY_ASSIGN_OR_RETURN(auto rows, Write(sql, Params(args...)));
        (void)rows;
        return {};
    }
    /// Rows the statement changed.
    template <typename... Args>
    Result<int64_t> Count(const char* sql, const Args&... args) {
        TALLY_ASSIGN_OR_RETURN(auto rows, Write(sql, Params(args...)));
        return rows.Affected();
    }
    template <typename T, typename Reader, typename... Args>
    Result<std::optional<T>> One(const char* sql, Reader read, const Args&... args) {
        auto params = Params(args...);
        if (!AllStorable(params)) return std::optional<T>();
        TALLY_ASSIGN_OR_RETURN(auto rows, c_.Run(sql, params));
        if (rows.size() == 0) return std::optional<T>();
        return std::optional<T>(read(Row{rows, 0}));
    }
    template <typename T, typename Reader, typename... Args>
    Result<std::vector<T>> Many(const char* sql, Reader read, const Args&... args) {
        auto params = Params(args...);
        if (!AllStorable(params)) return std::vector<T>();
        TALLY_ASSIGN_OR_RETURN(auto rows, c_.Run(sql, params));
        std::vector<T> out;
        out.reserve(static_cast<size_t>(rows.size()));
        for (int i = 0; i < rows.size(); ++i) out.push_back(read(Row{rows, i}));
        return out;
    }
    template <typename... Args>
    Result<int64_t> Value(const char* sql, const Args&... args) {
        TALLY_ASSIGN_OR_RETURN(auto rows, Write(sql, Params(args...)));
        if (rows.size() == 0 || rows.IsNull(0, 0)) return Internal(std::string("no value from: ") + sql);
        return rows.Int(0, 0);
    }

protected:
    Result<Rows> Write(const char* sql, const std::vector<Param>& params) {
        if (!AllStorable(params)) return InvalidArgument("text that is not UTF-8, or holds a NUL byte, cannot be stored");
        return c_.Run(sql, params);
    }

    PgConnection& c_;
};

// Type OIDs of the array elements Tally sends in binary (pg_type.h; fixed since PostgreSQL 7).
constexpr uint32_t kByteaOid = 17;
constexpr uint32_t kInt8Oid = 20;
constexpr uint32_t kTextOid = 25;

/// A one-dimensional array without NULLs in PostgreSQL's binary format (array_recv: ndim, has-nulls flag, element
/// type, then per dimension its size and lower bound, then each element as a length and its bytes; big-endian).
class BinaryArray {
public:
    BinaryArray(uint32_t element_oid, size_t count) {
        Put32(1);
        Put32(0);
        Put32(element_oid);
        Put32(static_cast<uint32_t>(count));
        Put32(1);
    }
    void Add(std::string_view bytes) {
        Put32(static_cast<uint32_t>(bytes.size()));
        data_.append(bytes);
    }
    void Add(int64_t v) {
        Put32(8);
        const auto u = static_cast<uint64_t>(v);
        for (int shift = 56; shift >= 0; shift -= 8) data_ += static_cast<char>((u >> shift) & 0xff);
    }
    const std::string& data() const { return data_; }

private:
    void Put32(uint32_t v) {
        for (int shift = 24; shift >= 0; shift -= 8) data_ += static_cast<char>((v >> shift) & 0xff);
    }
    std::string data_;
};

/// Appends |text| to an array literal as one quoted element.
void AppendArrayElement(std::string& out, std::string_view text) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (const char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    out += '"';
}

/// A PostgreSQL array literal of |items| ({"a","b"}), for a text[] parameter.
template <typename T>
std::string TextArray(const std::vector<T>& items) {
    std::string out = "{";
    for (const auto& item : items) AppendArrayElement(out, item.str());
    return out + "}";
}

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

// ---- customers
#define TALLY_CUSTOMER_COLS                                                                                            \
    "id, external_id, email, name, stripe_customer_id, role, plan_id, created_at, stripe_deleted, stamp_created, "    \
    "stamp_rank, stamp_event_id, stamp_terminal, override_role, override_reason, override_expires_at, "             \
    "override_created_at, role_check_at, grace_ends_at, type, auth_provider, company, email_verified, metadata, "     \
    "stripe_sync_pending"

CustomerRecord ReadCustomer(const Row& r) {
    CustomerRecord c;
    c.id = CustomerId(r.Text(0));
    c.external_id = r.Text(1);
    c.email = r.Text(2);
    c.name = r.Text(3);
    if (!r.IsNull(4)) c.stripe_customer_id = StripeCustomerId(r.Text(4));
    c.role = r.Text(5);
    c.plan_id = r.Text(6);
    c.created_at = Timestamp(r.Int(7));
    c.stripe_deleted = r.Bool(8);
    if (!r.IsNull(9)) c.stripe_stamp = r.Stamp(9);
    if (!r.IsNull(13)) c.role_override = RoleOverride{r.Text(13), r.Text(14), r.OptTs(15), Timestamp(r.Int(16))};
    c.role_check_at = r.OptTs(17);
    c.grace_ends_at = r.OptTs(18);
    // Row readers never fail: a type this build does not know reads as an individual.
    c.type = r.Text(19) == "organization" ? CustomerType::kOrganization : CustomerType::kIndividual;
    c.auth_provider = r.Text(20);
    c.company = r.Text(21);
    c.email_verified = r.Bool(22);
    c.metadata = MetadataFromJson(r.Text(23));
    c.stripe_sync_pending = r.Bool(24);
    return c;
}

#define TALLY_MEMBER_COLS "customer_id, user_id, email, role, created_at, updated_at"
MemberRecord ReadMember(const Row& r) {
    auto role = ParseMemberRole(r.Text(3));
    // An unknown role reads as the one that may do least.
    return MemberRecord{CustomerId(r.Text(0)), r.Text(1), r.Text(2), role.ok() ? *role : MemberRole::kMember,
                        Timestamp(r.Int(4)), Timestamp(r.Int(5))};
}

class PgCustomerTx final : public CustomerStoreTx, private PgStatements {
public:
    explicit PgCustomerTx(PgConnection& c) : PgStatements(c) {}

    Status Insert(const CustomerRecord& c) override {
        // ON CONFLICT DO NOTHING: a taken id, external_id or Stripe id is reported without failing the transaction
        // (a failed statement would abort it in PostgreSQL, unlike SQLite).
        TALLY_ASSIGN_OR_RETURN(auto n, Write("INSERT INTO customers(" TALLY_CUSTOMER_COLS ") VALUES ($1,$2,$3,$4,$5,$6,"
                                             "$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,"
                                             "$25) ON CONFLICT DO NOTHING",
                                             c));
        if (n != 1) return Conflict("customer " + c.id.str() + " or its external_id or Stripe id already exists");
        return {};
    }
    Status Update(const CustomerRecord& c) override {
        TALLY_ASSIGN_OR_RETURN(auto n, Write("UPDATE customers SET external_id=$2, email=$3, name=$4, "
                                             "stripe_customer_id=$5, role=$6, plan_id=$7, created_at=$8, "
                                             "stripe_deleted=$9, stamp_created=$10, stamp_rank=$11, stamp_event_id=$12, "
                                             "stamp_terminal=$13, override_role=$14, override_reason=$15, "
                                             "override_expires_at=$16, override_created_at=$17, role_check_at=$18, "
                                             "grace_ends_at=$19, type=$20, auth_provider=$21, company=$22, "
                                             "email_verified=$23, metadata=$24, stripe_sync_pending=$25 WHERE id=$1",
                                             c));
        (void)n;
        return {};
    }
    Result<std::optional<CustomerRecord>> Get(const CustomerId& id) override {
        return One<CustomerRecord>("SELECT " TALLY_CUSTOMER_COLS " FROM customers WHERE id=$1", ReadCustomer, id);
    }
    Result<std::optional<CustomerRecord>> FindByExternalId(const std::string& external_id) override {
        if (external_id.empty()) return std::optional<CustomerRecord>();
        return One<CustomerRecord>("SELECT " TALLY_CUSTOMER_COLS " FROM customers WHERE external_id=$1", ReadCustomer,
                                   external_id);
    }
    Result<std::optional<CustomerRecord>> FindByStripeId(const StripeCustomerId& id) override {
        return One<CustomerRecord>("SELECT " TALLY_CUSTOMER_COLS " FROM customers WHERE stripe_customer_id=$1",
                                   ReadCustomer, id);
    }
    Result<std::vector<CustomerId>> ListDueForRoleCheck(Timestamp now, int limit) override {
        return Many<CustomerId>(
            "SELECT id FROM customers WHERE role_check_at IS NOT NULL AND role_check_at <= $1 "
            "ORDER BY role_check_at LIMIT $2",
            [](const Row& r) { return CustomerId(r.Text(0)); }, now, limit);
    }
    Result<std::vector<CustomerId>> ClaimDueForRoleCheck(Timestamp now, int limit) override {
        return Many<CustomerId>(
            "SELECT id FROM customers WHERE role_check_at IS NOT NULL AND role_check_at <= $1 "
            "ORDER BY role_check_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            [](const Row& r) { return CustomerId(r.Text(0)); }, now, limit);
    }
    Result<std::vector<CustomerRecord>> List(const CustomerFilter& f) override {
        // One statement for every combination of filters: an absent filter is a NULL parameter. The metadata filter
        // is a JSON object the customer's metadata must contain (jsonb @>: every key with its value).
        std::optional<std::string> metadata;
        if (!f.metadata.empty()) metadata = MetadataToJson(Metadata(f.metadata.begin(), f.metadata.end()));
        return Many<CustomerRecord>(
            "SELECT " TALLY_CUSTOMER_COLS " FROM customers WHERE ($1::text IS NULL OR type=$1) AND "
            "($2::text IS NULL OR auth_provider=$2) AND ($3::text IS NULL OR company=$3) AND "
            "($4::boolean IS NULL OR email_verified=$4) AND ($5::jsonb IS NULL OR metadata::jsonb @> $5::jsonb) AND "
            "($6::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM customers WHERE id=$6)) "
            "ORDER BY created_at DESC, id DESC LIMIT $7",
            ReadCustomer, f.type ? std::optional<std::string>(CustomerTypeName(*f.type)) : std::nullopt,
            f.auth_provider, f.company, f.email_verified, metadata, f.starting_after, f.limit);
    }
    Result<std::vector<CustomerId>> ListStripeSyncPending(int limit) override {
        return Many<CustomerId>("SELECT id FROM customers WHERE stripe_sync_pending ORDER BY id LIMIT $1",
                                [](const Row& r) { return CustomerId(r.Text(0)); }, limit);
    }

    Status InsertMember(const MemberRecord& m) override {
        TALLY_ASSIGN_OR_RETURN(auto n, Count("INSERT INTO customer_members(" TALLY_MEMBER_COLS ") VALUES "
                                             "($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
                                             m.customer_id, m.user_id, m.email, MemberRoleName(m.role), m.created_at,
                                             m.updated_at));
        if (n != 1) return Conflict("user " + m.user_id + " is already a member of " + m.customer_id.str());
        return {};
    }
    Status UpdateMember(const MemberRecord& m) override {
        return Do("UPDATE customer_members SET email=$3, role=$4, updated_at=$5 WHERE customer_id=$1 AND user_id=$2",
                  m.customer_id, m.user_id, m.email, MemberRoleName(m.role), m.updated_at);
    }
    Status DeleteMember(const CustomerId& customer_id, const std::string& user_id) override {
        return Do("DELETE FROM customer_members WHERE customer_id=$1 AND user_id=$2", customer_id, user_id);
    }
    Result<std::optional<MemberRecord>> GetMember(const CustomerId& customer_id, const std::string& user_id) override {
        return One<MemberRecord>("SELECT " TALLY_MEMBER_COLS " FROM customer_members WHERE customer_id=$1 AND user_id=$2",
                                 ReadMember, customer_id, user_id);
    }
    Result<std::vector<MemberRecord>> ListMembers(const CustomerId& customer_id) override {
        return Many<MemberRecord>("SELECT " TALLY_MEMBER_COLS " FROM customer_members WHERE customer_id=$1 "
                                  "ORDER BY created_at, user_id",
                                  ReadMember, customer_id);
    }
    Result<std::vector<MemberRecord>> ListMembershipsOfUser(const std::string& user_id) override {
        return Many<MemberRecord>("SELECT " TALLY_MEMBER_COLS " FROM customer_members WHERE user_id=$1 "
                                  "ORDER BY created_at, customer_id",
                                  ReadMember, user_id);
    }

private:
    Result<int64_t> Write(const char* sql, const CustomerRecord& c) {
        const auto& st = c.stripe_stamp;
        const auto& ov = c.role_override;
        return Count(sql, c.id, c.external_id, c.email, c.name, c.stripe_customer_id, c.role, c.plan_id, c.created_at,
                     c.stripe_deleted, st ? std::optional<int64_t>(st->created) : std::nullopt,
                     st ? std::optional<int64_t>(st->type_rank) : std::nullopt,
                     st ? std::optional<std::string>(st->event_id) : std::nullopt,
                     st ? std::optional<bool>(st->terminal) : std::nullopt,
                     ov ? std::optional<std::string>(ov->role) : std::nullopt,
                     ov ? std::optional<std::string>(ov->reason) : std::nullopt, ov ? ov->expires_at : std::nullopt,
                     ov ? std::optional<Timestamp>(ov->created_at) : std::nullopt, c.role_check_at, c.grace_ends_at,
                     CustomerTypeName(c.type), c.auth_provider, c.company, c.email_verified, MetadataToJson(c.metadata),
                     c.stripe_sync_pending);
    }
};

// ---- billing
#define TALLY_SUBSCRIPTION_COLS                                                                                        \
    "id, stripe_customer_id, status, price_id, price_lookup_key, plan_id, interval_unit, interval_count, "           \
    "unit_amount, currency, quantity, current_period_start, current_period_end, cancel_at_period_end, trial_end, "   \
    "canceled_at, created, stamp_created, stamp_rank, stamp_event_id, stamp_terminal, pause_collection, "         \
    "pending_schedule_id, pending_price_id, pending_plan_id, pending_quantity, pending_at"
#define TALLY_SCHEDULE_COLS                                                                                            \
    "id, subscription_id, status, phases, created, stamp_created, stamp_rank, stamp_event_id, stamp_terminal"

#define TALLY_INVOICE_COLS                                                                                             \
    "id, stripe_customer_id, subscription_id, status, amount_due, amount_paid, currency, stamp_created, stamp_rank, " \
    "stamp_event_id, stamp_terminal, created, attempt_count, next_payment_attempt, hosted_invoice_url, number"
#define TALLY_PAYMENT_COLS                                                                                             \
    "id, object, stripe_customer_id, amount, amount_refunded, currency, status, stamp_created, stamp_rank, "         \
    "stamp_event_id, stamp_terminal, created, failure_message"

InvoiceRecord ReadInvoice(const Row& s) {
    InvoiceRecord r{s.Text(0), StripeCustomerId(s.Text(1)), s.Text(2), s.Text(3), s.Int(4), s.Int(5), s.Text(6),
                    s.Stamp(7)};
    r.created = Timestamp(s.Int(11));
    r.attempt_count = s.Int(12);
    r.next_payment_attempt = s.OptTs(13);
    r.hosted_invoice_url = s.Text(14);
    r.number = s.Text(15);
    return r;
}

PaymentRecord ReadPayment(const Row& s) {
    PaymentRecord r{s.Text(0), s.Text(1), StripeCustomerId(s.Text(2)), s.Int(3), s.Int(4), s.Text(5), s.Text(6),
                    s.Stamp(7)};
    r.created = Timestamp(s.Int(11));
    r.failure_message = s.Text(12);
    return r;
}

SubscriptionRecord ReadSubscription(const Row& s) {
    SubscriptionRecord r;
    r.id = StripeSubscriptionId(s.Text(0));
    r.customer = StripeCustomerId(s.Text(1));
    // Row readers never throw: a value this build does not know reads as the most restrictive one.
    auto status = ParseSubscriptionStatus(s.Text(2));
    r.status = status.ok() ? *status : SubscriptionStatus::kIncompleteExpired;
    r.price_id = s.Text(3);
    r.price_lookup_key = s.Text(4);
    r.plan_id = s.Text(5);
    auto unit = ParseIntervalUnit(s.Text(6));
    r.interval = BillingInterval{unit.ok() ? *unit : BillingInterval::Unit::kMonth, s.Int(7)};
    r.unit_amount_minor = s.Int(8);
    r.currency = s.Text(9);
    r.quantity = s.Int(10);
    r.current_period_start = Timestamp(s.Int(11));
    r.current_period_end = Timestamp(s.Int(12));
    r.cancel_at_period_end = s.Bool(13);
    r.trial_end = s.OptTs(14);
    r.canceled_at = s.OptTs(15);
    r.created = Timestamp(s.Int(16));
    r.stamp = s.Stamp(17);
    r.pause_collection = s.Text(21);
    if (!s.Text(22).empty()) {
        r.pending_change = PendingChange{s.Text(22), s.Text(23), s.Text(24), s.Int(25), s.OptTs(26).value_or(Timestamp())};
    }
    return r;
}

SubscriptionScheduleRecord ReadSchedule(const Row& s) {
    SubscriptionScheduleRecord r;
    r.id = s.Text(0);
    r.subscription = StripeSubscriptionId(s.Text(1));
    r.status = s.Text(2);
    r.phases = SchedulePhasesFromText(s.Text(3));
    r.created = Timestamp(s.Int(4));
    r.stamp = s.Stamp(5);
    return r;
}

class PgBillingTx final : public BillingStoreTx, private PgStatements {
public:
    explicit PgBillingTx(PgConnection& c) : PgStatements(c) {}

    Result<std::optional<SubscriptionRecord>> GetSubscription(const StripeSubscriptionId& id) override {
        return One<SubscriptionRecord>("SELECT " TALLY_SUBSCRIPTION_COLS " FROM subscriptions WHERE id=$1",
                                       ReadSubscription, id);
    }
    Status UpsertSubscription(const SubscriptionRecord& r) override {
        const PendingChange none;
        const PendingChange& p = r.pending_change ? *r.pending_change : none;
        const std::optional<Timestamp> pending_at =
            r.pending_change ? std::optional<Timestamp>(p.effective_at) : std::nullopt;
        return Do("INSERT INTO subscriptions(" TALLY_SUBSCRIPTION_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,"
                  "$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26,$27) ON CONFLICT(id) DO UPDATE SET "
                  "stripe_customer_id=$2, "
                  "status=$3, price_id=$4, price_lookup_key=$5, plan_id=$6, interval_unit=$7, interval_count=$8, "
                  "unit_amount=$9, currency=$10, quantity=$11, current_period_start=$12, current_period_end=$13, "
                  "cancel_at_period_end=$14, trial_end=$15, canceled_at=$16, created=$17, stamp_created=$18, "
                  "stamp_rank=$19, stamp_event_id=$20, stamp_terminal=$21, pause_collection=$22, "
                  "pending_schedule_id=$23, pending_price_id=$24, pending_plan_id=$25, pending_quantity=$26, "
                  "pending_at=$27",
                  r.id, r.customer, SubscriptionStatusName(r.status), r.price_id, r.price_lookup_key, r.plan_id,
                  IntervalUnitName(r.interval.unit), r.interval.count, r.unit_amount_minor, r.currency, r.quantity,
                  r.current_period_start, r.current_period_end, r.cancel_at_period_end, r.trial_end, r.canceled_at,
                  r.created, r.stamp.created, r.stamp.type_rank, r.stamp.event_id, r.stamp.terminal,
                  r.pause_collection, p.schedule_id, p.price_id, p.plan_id, p.quantity, pending_at);
    }
    Result<std::optional<SubscriptionScheduleRecord>> GetSchedule(const std::string& id) override {
        return One<SubscriptionScheduleRecord>("SELECT " TALLY_SCHEDULE_COLS " FROM subscription_schedules WHERE id=$1",
                                               ReadSchedule, id);
    }
    Status UpsertSchedule(const SubscriptionScheduleRecord& r) override {
        return Do("INSERT INTO subscription_schedules(" TALLY_SCHEDULE_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
                  "ON CONFLICT(id) DO UPDATE SET subscription_id=$2, status=$3, phases=$4, created=$5, "
                  "stamp_created=$6, stamp_rank=$7, stamp_event_id=$8, stamp_terminal=$9",
                  r.id, r.subscription, r.status, SchedulePhasesToText(r.phases), r.created, r.stamp.created,
                  r.stamp.type_rank, r.stamp.event_id, r.stamp.terminal);
    }
    Status RememberPriceLookupKey(const std::string& price_id, const std::string& lookup_key) override {
        if (price_id.empty() || lookup_key.empty()) return {};
        return Do("INSERT INTO stripe_prices(id, lookup_key) VALUES ($1, $2) ON CONFLICT(id) DO NOTHING", price_id,
                  lookup_key);
    }
    Result<std::string> PriceLookupKey(const std::string& price_id) override {
        if (price_id.empty()) return std::string();
        // Else a subscription on that price tells (a read on the rare schedule path only).
        TALLY_ASSIGN_OR_RETURN(auto key, One<std::string>("SELECT k FROM ((SELECT lookup_key AS k, 0 AS p FROM "
                                                          "stripe_prices WHERE id=$1) UNION ALL (SELECT "
                                                          "price_lookup_key, 1 FROM subscriptions WHERE price_id=$1 AND "
                                                          "price_lookup_key<>'' LIMIT 1)) u ORDER BY p LIMIT 1",
                                                          [](const Row& r) { return r.Text(0); }, price_id));
        return key.value_or("");
    }
    Result<std::vector<SubscriptionScheduleRecord>> ListSchedulesForSubscription(const StripeSubscriptionId& id) override {
        return Many<SubscriptionScheduleRecord>("SELECT " TALLY_SCHEDULE_COLS " FROM subscription_schedules WHERE "
                                                "subscription_id=$1 ORDER BY created, id",
                                                ReadSchedule, id);
    }
    Result<std::vector<SubscriptionRecord>> ListSubscriptionsByStripeCustomer(const StripeCustomerId& id) override {
        return Many<SubscriptionRecord>(
            "SELECT " TALLY_SUBSCRIPTION_COLS " FROM subscriptions WHERE stripe_customer_id=$1 ORDER BY created, id",
            ReadSubscription, id);
    }
    Result<std::vector<SubscriptionRecord>> ListSubscriptions(const SubscriptionListFilter& f) override {
        return Many<SubscriptionRecord>(
            "SELECT " TALLY_SUBSCRIPTION_COLS " FROM subscriptions WHERE ($1::text IS NULL OR status=$1) AND "
            "($2::text IS NULL OR plan_id=$2) AND ($3::text IS NULL OR (created, id) < (SELECT created, id FROM "
            "subscriptions WHERE id=$3)) ORDER BY created DESC, id DESC LIMIT $4",
            ReadSubscription, f.status, f.plan_id, f.starting_after, f.limit);
    }

    Result<std::optional<InvoiceRecord>> GetInvoice(const std::string& id) override {
        return One<InvoiceRecord>("SELECT " TALLY_INVOICE_COLS " FROM invoices WHERE id=$1", ReadInvoice, id);
    }
    Status UpsertInvoice(const InvoiceRecord& r) override {
        return Do("INSERT INTO invoices(" TALLY_INVOICE_COLS ") "
                  "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) ON CONFLICT(id) DO UPDATE SET "
                  "stripe_customer_id=$2, subscription_id=$3, status=$4, amount_due=$5, amount_paid=$6, currency=$7, "
                  "stamp_created=$8, stamp_rank=$9, stamp_event_id=$10, stamp_terminal=$11, created=$12, "
                  "attempt_count=$13, next_payment_attempt=$14, hosted_invoice_url=$15, number=$16",
                  r.id, r.stripe_customer_id, r.subscription_id, r.status, r.amount_due_minor, r.amount_paid_minor,
                  r.currency, r.stamp.created, r.stamp.type_rank, r.stamp.event_id, r.stamp.terminal, r.created,
                  r.attempt_count, r.next_payment_attempt, r.hosted_invoice_url, r.number);
    }
    Result<std::vector<InvoiceRecord>> ListInvoices(const BillingListFilter& f) override {
        return Many<InvoiceRecord>(
            "SELECT " TALLY_INVOICE_COLS " FROM invoices WHERE ($1::text IS NULL OR stripe_customer_id=$1) AND "
            "($2::text IS NULL OR status=$2) AND ($3::bigint IS NULL OR created>=$3) AND ($4::text IS NULL OR "
            "(created, id) < (SELECT created, id FROM invoices WHERE id=$4)) ORDER BY created DESC, id DESC LIMIT $5",
            ReadInvoice, f.stripe_customer_id, f.status, f.created_gte, f.starting_after, f.limit);
    }
    Status InsertPaymentAttempt(const PaymentAttempt& a) override {
        return Do("INSERT INTO payment_attempts(event_id, invoice_id, subscription_id, at, succeeded) "
                  "VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING",
                  a.event_id, a.invoice_id, a.subscription_id, a.at, a.succeeded);
    }
    Result<std::vector<PaymentAttempt>> ListPaymentAttempts(const std::string& subscription_id) override {
        return Many<PaymentAttempt>(
            "SELECT event_id, invoice_id, subscription_id, at, succeeded FROM payment_attempts "
            "WHERE subscription_id=$1 ORDER BY at, event_id",
            [](const Row& s) {
                return PaymentAttempt{s.Text(0), s.Text(1), s.Text(2), Timestamp(s.Int(3)), s.Bool(4)};
            },
            subscription_id);
    }
    Result<std::optional<PaymentRecord>> GetPayment(const std::string& id) override {
        return One<PaymentRecord>("SELECT " TALLY_PAYMENT_COLS " FROM payments WHERE id=$1", ReadPayment, id);
    }
    Status UpsertPayment(const PaymentRecord& r) override {
        return Do("INSERT INTO payments(" TALLY_PAYMENT_COLS ") "
                  "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT(id) DO UPDATE SET object=$2, "
                  "stripe_customer_id=$3, amount=$4, amount_refunded=$5, currency=$6, status=$7, stamp_created=$8, "
                  "stamp_rank=$9, stamp_event_id=$10, stamp_terminal=$11, created=$12, failure_message=$13",
                  r.id, r.object, r.stripe_customer_id, r.amount_minor, r.amount_refunded_minor, r.currency, r.status,
                  r.stamp.created, r.stamp.type_rank, r.stamp.event_id, r.stamp.terminal, r.created,
                  r.failure_message);
    }
    Result<std::vector<PaymentRecord>> ListPayments(const BillingListFilter& f) override {
        return Many<PaymentRecord>(
            "SELECT " TALLY_PAYMENT_COLS " FROM payments WHERE ($1::text IS NULL OR stripe_customer_id=$1) AND "
            "($2::text IS NULL OR status=$2) AND ($3::bigint IS NULL OR created>=$3) AND ($4::text IS NULL OR "
            "(created, id) < (SELECT created, id FROM payments WHERE id=$4)) ORDER BY created DESC, id DESC LIMIT $5",
            ReadPayment, f.stripe_customer_id, f.status, f.created_gte, f.starting_after, f.limit);
    }
};

// ---- audit
class PgAuditTx final : public AuditStoreTx, private PgStatements {
public:
    explicit PgAuditTx(PgConnection& c) : PgStatements(c) {}

    Status Append(const AuditEntry& e) override {
        return Do("INSERT INTO audit_log(customer_id, at, kind, before, after, cause, detail) "
                  "VALUES ($1,$2,$3,$4,$5,$6,$7)",
                  e.customer_id, e.at, e.kind, e.before, e.after, e.cause, e.detail);
    }
    Result<std::vector<AuditEntry>> List(const CustomerId& customer_id, int limit) override {
        auto read = [](const Row& s) {
            return AuditEntry{s.Int(0), CustomerId(s.Text(1)), Timestamp(s.Int(2)), s.Text(3), s.Text(4),
                              s.Text(5), s.Text(6), s.Text(7)};
        };
        if (customer_id.empty()) {
            return Many<AuditEntry>("SELECT id, customer_id, at, kind, before, after, cause, detail FROM audit_log "
                                    "ORDER BY id DESC LIMIT $1",
                                    read, limit);
        }
        return Many<AuditEntry>("SELECT id, customer_id, at, kind, before, after, cause, detail FROM audit_log "
                                "WHERE customer_id=$1 ORDER BY id DESC LIMIT $2",
                                read, customer_id, limit);
    }
};

// ---- inbox
#define TALLY_INBOX_COLS \
    "id, type, created, status, attempts, last_error, outcome, received_at, next_attempt_at, processed_at"

InboxEvent ReadInbox(const Row& s) {
    InboxEvent e;
    e.id = StripeEventId(s.Text(0));
    e.type = s.Text(1);
    e.created = Timestamp(s.Int(2));
    auto status = ParseInboxStatus(s.Text(3));
    e.status = status.ok() ? *status : InboxStatus::kFailed;
    e.attempts = static_cast<int>(s.Int(4));
    e.last_error = s.Text(5);
    e.outcome = s.Text(6);
    e.received_at = Timestamp(s.Int(7));
    e.next_attempt_at = s.OptTs(8);
    e.processed_at = s.OptTs(9);
    return e;
}

class PgInboxTx final : public InboxStoreTx, private PgStatements {
public:
    explicit PgInboxTx(PgConnection& c) : PgStatements(c) {}

    Result<std::optional<InboxEvent>> Get(const StripeEventId& id) override {
        return One<InboxEvent>("SELECT " TALLY_INBOX_COLS " FROM webhook_events WHERE id=$1", ReadInbox, id);
    }
    Result<std::optional<std::string>> GetPayload(const StripeEventId& id) override {
        // In binary: a BYTEA's raw bytes, as received.
        if (!StorableText(id.str())) return std::optional<std::string>();
        TALLY_ASSIGN_OR_RETURN(auto rows, c_.Run("SELECT payload FROM webhook_events WHERE id=$1", Params(id), true));
        if (rows.size() == 0) return std::optional<std::string>();
        return std::optional<std::string>(rows.Text(0, 0));
    }
    Result<std::optional<int64_t>> GetSequence(const StripeEventId& id) override {
        return One<int64_t>("SELECT seq FROM webhook_events WHERE id=$1", [](const Row& r) { return r.Int(0); }, id);
    }
    Result<std::vector<InboxEvent>> List(std::optional<InboxStatus> status, int limit) override {
        if (status) {
            return Many<InboxEvent>("SELECT " TALLY_INBOX_COLS " FROM webhook_events WHERE status=$1 "
                                    "ORDER BY received_at DESC, seq DESC LIMIT $2",
                                    ReadInbox, InboxStatusName(*status), limit);
        }
        return Many<InboxEvent>("SELECT " TALLY_INBOX_COLS " FROM webhook_events ORDER BY seq DESC LIMIT $1", ReadInbox,
                                limit);
    }
    Result<std::vector<StripeEventId>> ListDue(Timestamp now, int limit) override {
        return Many<StripeEventId>(
            "SELECT id FROM webhook_events WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 "
            "ORDER BY next_attempt_at LIMIT $2",
            [](const Row& r) { return StripeEventId(r.Text(0)); }, now, limit);
    }
    Result<std::vector<bool>> LockForProcessing(const std::vector<StripeEventId>& ids) override {
        std::vector<bool> mine(ids.size(), false);
        if (ids.empty()) return mine;
        TALLY_ASSIGN_OR_RETURN(auto locked,
                               Many<std::string>("SELECT id FROM webhook_events WHERE id = ANY($1::text[]) "
                                                 "FOR UPDATE SKIP LOCKED",
                                                 [](const Row& r) { return r.Text(0); }, TextArray(ids)));
        const std::unordered_set<std::string> got(locked.begin(), locked.end());
        for (size_t i = 0; i < ids.size(); ++i) mine[i] = got.count(ids[i].str()) > 0;
        return mine;
    }
    Status UpdateState(const InboxEvent& e) override {
        return Do("UPDATE webhook_events SET status=$2, attempts=$3, last_error=$4, outcome=$5, next_attempt_at=$6, "
                  "processed_at=$7 WHERE id=$1",
                  e.id, InboxStatusName(e.status), e.attempts, e.last_error, e.outcome, e.next_attempt_at,
                  e.processed_at);
    }
};

// ---- keys
#define TALLY_API_KEY_COLS "id, hash, scope, created_at, name, last_used_at, revoked_at"

ApiKeyRecord ReadApiKey(const Row& s) {
    return ApiKeyRecord{s.Text(0), s.Text(1), s.Text(2), Timestamp(s.Int(3)), s.Text(4), s.OptTs(5), s.OptTs(6)};
}
#define TALLY_SESSION_COLS "id, hash, customer_id, user_id, created_at, expires_at, revoked_at"
CustomerSessionRecord ReadSession(const Row& s) {
    return CustomerSessionRecord{s.Text(0), s.Text(1), s.Text(2), s.Text(3), Timestamp(s.Int(4)), Timestamp(s.Int(5)),
                                 s.OptTs(6)};
}
const char* IdempotencyStateName(IdempotencyState state) {
    return state == IdempotencyState::kDone ? "done" : "in_flight";
}

class PgKeyTx final : public KeyStoreTx, private PgStatements {
public:
    explicit PgKeyTx(PgConnection& c) : PgStatements(c) {}

    Status InsertApiKey(const ApiKeyRecord& k) override {
        TALLY_ASSIGN_OR_RETURN(auto n, Count("INSERT INTO api_keys(" TALLY_API_KEY_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7) "
                                             "ON CONFLICT DO NOTHING",
                                             k.id, k.hash_hex, k.scope, k.created_at, k.name, k.last_used_at,
                                             k.revoked_at));
        if (n != 1) return Conflict("API key " + k.id + " already exists");
        return {};
    }
    Result<std::optional<ApiKeyRecord>> FindApiKeyByHash(const std::string& hash_hex) override {
        return One<ApiKeyRecord>("SELECT " TALLY_API_KEY_COLS " FROM api_keys WHERE hash=$1", ReadApiKey, hash_hex);
    }
    Result<std::optional<ApiKeyRecord>> GetApiKey(const std::string& id) override {
        return One<ApiKeyRecord>("SELECT " TALLY_API_KEY_COLS " FROM api_keys WHERE id=$1", ReadApiKey, id);
    }
    Result<std::vector<ApiKeyRecord>> ListApiKeys() override {
        return Many<ApiKeyRecord>("SELECT " TALLY_API_KEY_COLS " FROM api_keys ORDER BY created_at, id", ReadApiKey);
    }
    Status UpdateApiKey(const ApiKeyRecord& k) override {
        return Do("UPDATE api_keys SET revoked_at=COALESCE(revoked_at, $2), last_used_at=COALESCE($3, last_used_at) "
                  "WHERE id=$1",
                  k.id, k.revoked_at, k.last_used_at);
    }

    Status InsertCustomerSession(const CustomerSessionRecord& r) override {
        TALLY_ASSIGN_OR_RETURN(auto n, Count("INSERT INTO customer_sessions(" TALLY_SESSION_COLS ") VALUES "
                                             "($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING",
                                             r.id, r.hash_hex, r.customer_id, r.user_id, r.created_at, r.expires_at,
                                             r.revoked_at));
        if (n != 1) return Conflict("customer session " + r.id + " already exists");
        return {};
    }
    Result<std::optional<CustomerSessionRecord>> FindCustomerSessionByHash(const std::string& hash_hex) override {
        return One<CustomerSessionRecord>("SELECT " TALLY_SESSION_COLS " FROM customer_sessions WHERE hash=$1",
                                          ReadSession, hash_hex);
    }
    Result<std::optional<CustomerSessionRecord>> GetCustomerSession(const std::string& id) override {
        return One<CustomerSessionRecord>("SELECT " TALLY_SESSION_COLS " FROM customer_sessions WHERE id=$1",
                                          ReadSession, id);
    }
    Status RevokeCustomerSession(const std::string& id, Timestamp at) override {
        return Do("UPDATE customer_sessions SET revoked_at=COALESCE(revoked_at, $2) WHERE id=$1", id, at);
    }
    Result<int> PruneCustomerSessions(Timestamp before) override {
        TALLY_ASSIGN_OR_RETURN(auto n, Count("DELETE FROM customer_sessions WHERE expires_at < $1", before));
        return static_cast<int>(n);
    }

    Result<std::optional<IdempotencyRecord>> GetIdempotency(const std::string& api_key_id,
                                                            const std::string& key) override {
        return One<IdempotencyRecord>(
            "SELECT api_key_id, key, request_hash, state, status, response_body, created_at, locked_until "
            "FROM idempotency_keys WHERE api_key_id=$1 AND key=$2",
            [](const Row& s) {
                return IdempotencyRecord{s.Text(0), s.Text(1), s.Text(2),
                                         s.Text(3) == "done" ? IdempotencyState::kDone : IdempotencyState::kInFlight,
                                         static_cast<int>(s.Int(4)), s.Text(5), Timestamp(s.Int(6)), s.OptTs(7)};
            },
            api_key_id, key);
    }
    Status InsertIdempotency(const IdempotencyRecord& r) override {
        TALLY_ASSIGN_OR_RETURN(auto n, Count("INSERT INTO idempotency_keys(api_key_id, key, request_hash, state, status, "
                                             "response_body, created_at, locked_until) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) "
                                             "ON CONFLICT DO NOTHING",
                                             r.api_key_id, r.key, r.request_hash, IdempotencyStateName(r.state),
                                             r.status, r.response_body, r.created_at, r.locked_until));
        if (n != 1) return Conflict("idempotency key already recorded", "Idempotency-Key");
        return {};
    }
    Status UpdateIdempotency(const IdempotencyRecord& r) override {
        return Do("UPDATE idempotency_keys SET request_hash=$3, state=$4, status=$5, response_body=$6, created_at=$7, "
                  "locked_until=$8 WHERE api_key_id=$1 AND key=$2",
                  r.api_key_id, r.key, r.request_hash, IdempotencyStateName(r.state), r.status, r.response_body,
                  r.created_at, r.locked_until);
    }
    Result<bool> FinishIdempotencyClaim(const IdempotencyRecord& r, Timestamp claimed_until) override {
        TALLY_ASSIGN_OR_RETURN(auto n, Count("UPDATE idempotency_keys SET request_hash=$3, state=$4, status=$5, "
                                             "response_body=$6, created_at=$7, locked_until=NULL WHERE api_key_id=$1 "
                                             "AND key=$2 AND state='in_flight' AND locked_until=$8",
                                             r.api_key_id, r.key, r.request_hash, IdempotencyStateName(r.state),
                                             r.status, r.response_body, r.created_at, claimed_until));
        return n == 1;
    }
    Status ReleaseIdempotencyClaim(const std::string& api_key_id, const std::string& key,
                                   Timestamp claimed_until) override {
        return Do("DELETE FROM idempotency_keys WHERE api_key_id=$1 AND key=$2 AND state='in_flight' AND locked_until=$3",
                  api_key_id, key, claimed_until);
    }
    Result<int> PruneIdempotency(Timestamp before) override {
        TALLY_ASSIGN_OR_RETURN(auto legacy, Count("DELETE FROM usage_legacy_keys WHERE created_at < $1", before));
        TALLY_ASSIGN_OR_RETURN(auto n, Count("DELETE FROM idempotency_keys WHERE created_at < $1", before));
        return static_cast<int>(legacy + n);
    }
};

// ---- events
#define TALLY_APP_EVENT_COLS "seq, id, type, created_ms, object_id, object_sequence, customer_id, payload"
AppEventRecord ReadAppEvent(const Row& s) {
    return AppEventRecord{s.Int(0), s.Text(1), s.Text(2), s.Int(3), s.Text(4), s.Int(5), s.Text(6), s.Text(7)};
}
#define TALLY_ENDPOINT_COLS                                                                                            \
    "id, url, description, enabled_events, disabled, disabled_reason, secret, previous_secret, "                     \
    "previous_secret_expires_ms, failing_since_ms, created_ms"
WebhookEndpointRecord ReadEndpoint(const Row& s) {
    return WebhookEndpointRecord{s.Text(0), s.Text(1),   s.Text(2),   SplitComma(s.Text(3)), s.Bool(4),  s.Text(5),
                                 s.Text(6), s.Text(7),   s.OptInt(8), s.OptInt(9),           s.Int(10)};
}
#define TALLY_DELIVERY_COLS                                                                                            \
    "id, event_seq, event_id, endpoint_id, object_id, state, attempts, next_attempt_ms, lease_until_ms, "            \
    "event_created_ms, delivered_ms, last_status, last_error"
DeliveryState ParseDeliveryState(const std::string& text) {
    if (text == "delivered") return DeliveryState::kDelivered;
    if (text == "failed") return DeliveryState::kFailed;
    return DeliveryState::kPending;
}
DeliveryRecord ReadDelivery(const Row& s) {
    return DeliveryRecord{s.Int(0),    s.Int(1),     s.Text(2), s.Text(3),
                          s.Text(4),   ParseDeliveryState(s.Text(5)), static_cast<int>(s.Int(6)), s.Int(7),
                          s.OptInt(8), s.Int(9),     s.OptInt(10), static_cast<int>(s.Int(11)), s.Text(12)};
}

class PgEventTx final : public EventStoreTx, private PgStatements {
public:
    explicit PgEventTx(PgConnection& c) : PgStatements(c) {}

    Result<int64_t> NextObjectSequence(const std::string& object_id) override {
        return Value("INSERT INTO app_event_objects(object_id, last_sequence) VALUES ($1, 1) ON CONFLICT(object_id) "
                     "DO UPDATE SET last_sequence = app_event_objects.last_sequence + 1 RETURNING last_sequence",
                     object_id);
    }
    Result<int64_t> InsertEvent(const AppEventRecord& e) override {
        return Value("INSERT INTO app_events(id, type, created_ms, object_id, object_sequence, customer_id, payload) "
                     "VALUES ($1,$2,$3,$4,$5,$6,$7) RETURNING seq",
                     e.id, e.type, e.created_ms, e.object_id, e.object_sequence, e.customer_id, e.payload);
    }
    Result<std::optional<AppEventRecord>> GetEvent(const std::string& id) override {
        return One<AppEventRecord>("SELECT " TALLY_APP_EVENT_COLS " FROM app_events WHERE id=$1", ReadAppEvent, id);
    }
    Result<std::optional<AppEventRecord>> GetEventBySeq(int64_t seq) override {
        return One<AppEventRecord>("SELECT " TALLY_APP_EVENT_COLS " FROM app_events WHERE seq=$1", ReadAppEvent, seq);
    }
    Result<std::vector<AppEventRecord>> ListEvents(const AppEventFilter& f) override {
        return Many<AppEventRecord>("SELECT " TALLY_APP_EVENT_COLS " FROM app_events WHERE ($1 = '' OR type = $1) "
                                    "AND ($2 = '' OR customer_id = $2) AND ($3::bigint IS NULL OR created_ms >= $3) "
                                    "AND ($4::bigint IS NULL OR created_ms <= $4) AND ($5::bigint IS NULL OR seq < $5) "
                                    "ORDER BY seq DESC LIMIT $6",
                                    ReadAppEvent, f.type, f.customer_id, f.created_gte_ms, f.created_lte_ms,
                                    f.before_seq, f.limit);
    }
    Result<int> PruneEvents(int64_t before_ms, int limit) override {
        // One statement: every sub-statement sees the same snapshot, so the three deletes agree on the events.
        TALLY_ASSIGN_OR_RETURN(
            auto n, Value("WITH p AS (SELECT seq FROM app_events WHERE created_ms < $1 ORDER BY created_ms LIMIT $2), "
                          "d AS (DELETE FROM event_deliveries WHERE event_seq IN (SELECT seq FROM p) RETURNING id), "
                          "a AS (DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM d)), "
                          "e AS (DELETE FROM app_events WHERE seq IN (SELECT seq FROM p) RETURNING 1) "
                          "SELECT COUNT(*) FROM e",
                          before_ms, limit));
        return static_cast<int>(n);
    }

    Status InsertEndpoint(const WebhookEndpointRecord& e) override {
        return Do("INSERT INTO webhook_endpoints(" TALLY_ENDPOINT_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                  e.id, e.url, e.description, JoinComma(e.enabled_events), e.disabled, e.disabled_reason, e.secret,
                  e.previous_secret, e.previous_secret_expires_ms, e.failing_since_ms, e.created_ms);
    }
    Status UpdateEndpoint(const WebhookEndpointRecord& e) override {
        return Do("UPDATE webhook_endpoints SET url=$2, description=$3, enabled_events=$4, disabled=$5, "
                  "disabled_reason=$6, secret=$7, previous_secret=$8, previous_secret_expires_ms=$9, "
                  "failing_since_ms=$10 WHERE id=$1",
                  e.id, e.url, e.description, JoinComma(e.enabled_events), e.disabled, e.disabled_reason, e.secret,
                  e.previous_secret, e.previous_secret_expires_ms, e.failing_since_ms);
    }
    Status DeleteEndpoint(const std::string& id) override {
        TALLY_TRY(Do("DELETE FROM event_deliveries WHERE endpoint_id=$1 AND state='pending'", id));
        return Do("DELETE FROM webhook_endpoints WHERE id=$1", id);
    }
    Result<std::optional<WebhookEndpointRecord>> GetEndpoint(const std::string& id) override {
        return One<WebhookEndpointRecord>("SELECT " TALLY_ENDPOINT_COLS " FROM webhook_endpoints WHERE id=$1",
                                          ReadEndpoint, id);
    }
    Result<std::vector<WebhookEndpointRecord>> ListEndpoints() override {
        return Many<WebhookEndpointRecord>(
            "SELECT " TALLY_ENDPOINT_COLS " FROM webhook_endpoints ORDER BY created_ms, id", ReadEndpoint);
    }

    Result<int64_t> InsertDelivery(const DeliveryRecord& d) override {
        return Value("INSERT INTO event_deliveries(event_seq, event_id, endpoint_id, object_id, state, attempts, "
                     "next_attempt_ms, event_created_ms, prev_delivery_id) VALUES ($1,$2,$3,$4,'pending',0,$5,$6,"
                     "(SELECT MAX(id) FROM event_deliveries WHERE endpoint_id=$3 AND object_id=$4)) RETURNING id",
                     d.event_seq, d.event_id, d.endpoint_id, d.object_id, d.next_attempt_ms, d.event_created_ms);
    }
    Result<std::vector<DeliveryRecord>> ClaimDueDeliveries(const std::string& endpoint_id, int64_t now_ms,
                                                           int64_t lease_until_ms, int limit) override {
        // The head of each (endpoint, object) line, as on SQLite; rows another node is claiming right now are
        // skipped rather than waited for.
        return Many<DeliveryRecord>(
            "WITH due AS (SELECT d.id FROM event_deliveries d WHERE d.endpoint_id = $1 AND d.state = 'pending' "
            "AND d.next_attempt_ms <= $2 AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $2) "
            "AND (d.prev_delivery_id IS NULL OR NOT EXISTS (SELECT 1 FROM event_deliveries p "
            "WHERE p.id = d.prev_delivery_id AND p.state = 'pending')) "
            "ORDER BY d.next_attempt_ms, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED) "
            "UPDATE event_deliveries e SET lease_until_ms = $3 FROM due WHERE e.id = due.id RETURNING "
            "e.id, e.event_seq, e.event_id, e.endpoint_id, e.object_id, e.state, e.attempts, e.next_attempt_ms, "
            "e.lease_until_ms, e.event_created_ms, e.delivered_ms, e.last_status, e.last_error",
            ReadDelivery, endpoint_id, now_ms, lease_until_ms, limit);
    }
    Result<std::optional<DeliveryRecord>> GetDelivery(int64_t id) override {
        return One<DeliveryRecord>("SELECT " TALLY_DELIVERY_COLS " FROM event_deliveries WHERE id=$1", ReadDelivery, id);
    }
    Status UpdateDelivery(const DeliveryRecord& d) override {
        return Do("UPDATE event_deliveries SET state=$2, attempts=$3, next_attempt_ms=$4, lease_until_ms=$5, "
                  "delivered_ms=$6, last_status=$7, last_error=$8 WHERE id=$1",
                  d.id, DeliveryStateName(d.state), d.attempts, d.next_attempt_ms, d.lease_until_ms, d.delivered_ms,
                  d.last_status, d.last_error);
    }
    Result<std::optional<int64_t>> NextDeliveryDueMs(const std::string& endpoint_id, int64_t after_ms) override {
        TALLY_ASSIGN_OR_RETURN(auto due, One<std::optional<int64_t>>(
                                             "SELECT MIN(next_attempt_ms) FROM event_deliveries WHERE endpoint_id=$1 "
                                             "AND state = 'pending' AND next_attempt_ms > $2",
                                             [](const Row& r) { return r.OptInt(0); }, endpoint_id, after_ms));
        return due ? *due : std::nullopt;
    }
    Result<int64_t> CountPendingDeliveries() override {
        return Value("SELECT COUNT(*) FROM event_deliveries WHERE state = 'pending'");
    }
    Status InsertDeliveryAttempt(const DeliveryAttemptRecord& a) override {
        return Do("INSERT INTO delivery_attempts(delivery_id, endpoint_id, event_id, at_ms, status_code, latency_ms, "
                  "error) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                  a.delivery_id, a.endpoint_id, a.event_id, a.at_ms, a.status_code, a.latency_ms, a.error);
    }
    Result<std::vector<DeliveryAttemptRecord>> ListDeliveryAttempts(const std::string& endpoint_id,
                                                                    std::optional<int64_t> before_id,
                                                                    int limit) override {
        return Many<DeliveryAttemptRecord>(
            "SELECT id, delivery_id, endpoint_id, event_id, at_ms, status_code, latency_ms, error FROM delivery_attempts "
            "WHERE endpoint_id=$1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            [](const Row& s) {
                return DeliveryAttemptRecord{s.Int(0), s.Int(1), s.Text(2), s.Text(3), s.Int(4),
                                             static_cast<int>(s.Int(5)), s.Int(6), s.Text(7)};
            },
            endpoint_id, before_id, limit);
    }
};

// ---- plans
constexpr const char* kPlanCols =
    "id, position, name, role, credits_monthly, archived_at, created, updated, stripe_sync_pending, stripe_sync_error, "
    "stripe_sync_attempts, next_sync_at";
constexpr const char* kPlanPriceCols =
    "id, plan_id, lookup_key, interval_unit, interval_count, unit_amount, currency, stripe_price_id, active, created";

PlanRecord ReadPlanRow(const Row& s) {
    PlanRecord p;
    p.id = s.Text(0);
    p.position = s.Int(1);
    p.name = s.Text(2);
    p.role = s.Text(3);
    p.credits_monthly = s.Int(4);
    p.archived_at = s.OptTs(5);
    p.created = Timestamp(s.Int(6));
    p.updated = Timestamp(s.Int(7));
    p.stripe_sync_pending = s.Bool(8);
    p.stripe_sync_error = s.Text(9);
    p.stripe_sync_attempts = s.Int(10);
    p.next_sync_at = Timestamp(s.Int(11));
    return p;
}

using PlanPriceRow = std::pair<std::string, PlanPriceRecord>;  // plan id, price
using EntitlementRow = std::tuple<std::string, std::string, std::string, std::optional<int64_t>>;  // plan, kind, name, value
using PlanEntitlementRow = std::tuple<std::string, std::string, std::optional<int64_t>>;  // kind, name, value

PlanPriceRow ReadPlanPrice(const Row& s) {
    PlanPriceRecord r{s.Text(0), s.Text(2), s.Text(3), s.Int(4), s.Int(5), s.Text(6), s.Text(7),
                      s.Bool(8), Timestamp(s.Int(9))};
    return {s.Text(1), std::move(r)};
}

class PgPlanTx final : public PlanStoreTx, private PgStatements {
public:
    explicit PgPlanTx(PgConnection& c) : PgStatements(c) {}

    Result<std::optional<CatalogSettings>> Settings() override {
        return One<CatalogSettings>("SELECT roles, default_plan, version, meters FROM catalog_settings WHERE id=1",
                                    [](const Row& s) {
                                        return CatalogSettings{SplitLines(s.Text(0)), s.Text(1), s.Int(2),
                                                               MetersFromText(s.Text(3))};
                                    });
    }
    Result<int64_t> PutSettings(const CatalogSettings& settings) override {
        TALLY_TRY(Do("INSERT INTO catalog_settings(id, roles, default_plan, version, meters) VALUES (1, $1, $2, 1, $3) "
                     "ON CONFLICT(id) DO UPDATE SET roles=excluded.roles, default_plan=excluded.default_plan, "
                     "version=catalog_settings.version+1, meters=excluded.meters",
                     JoinLines(settings.roles), settings.default_plan, MetersToText(settings.meters)));
        TALLY_ASSIGN_OR_RETURN(auto v, One<int64_t>("SELECT version FROM catalog_settings WHERE id=1",
                                                    [](const Row& s) { return s.Int(0); }));
        return v.value_or(0);
    }
    Result<std::vector<PlanRecord>> ListPlans() override {
        static const std::string sql = std::string("SELECT ") + kPlanCols + " FROM plans ORDER BY position, id";
        TALLY_ASSIGN_OR_RETURN(auto plans, Many<PlanRecord>(sql.c_str(), ReadPlanRow));
        TALLY_ASSIGN_OR_RETURN(auto entitlements,
                               Many<EntitlementRow>(
                                   "SELECT plan_id, kind, name, value FROM plan_entitlements ORDER BY plan_id, kind, name",
                                   [](const Row& s) {
                                       return std::make_tuple(s.Text(0), s.Text(1), s.Text(2), s.OptInt(3));
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
        static const std::string sql = std::string("SELECT ") + kPlanCols + " FROM plans WHERE id=$1";
        TALLY_ASSIGN_OR_RETURN(auto plan, One<PlanRecord>(sql.c_str(), ReadPlanRow, id));
        if (!plan) return plan;
        TALLY_ASSIGN_OR_RETURN(auto entitlements,
                               Many<PlanEntitlementRow>(
                                   "SELECT kind, name, value FROM plan_entitlements WHERE plan_id=$1 ORDER BY kind, name",
                                   [](const Row& s) { return std::make_tuple(s.Text(0), s.Text(1), s.OptInt(2)); },
                                   id));
        for (auto& [kind, name, value] : entitlements) {
            if (kind == "feature") {
                plan->features[name] = value.value_or(0) != 0;
            } else {
                plan->limits[name] = value;
            }
        }
        static const std::string prices_sql =
            std::string("SELECT ") + kPlanPriceCols + " FROM plan_prices WHERE plan_id=$1 ORDER BY seq";
        TALLY_ASSIGN_OR_RETURN(auto prices,
                               Many<PlanPriceRow>(prices_sql.c_str(), ReadPlanPrice, id));
        for (auto& [_, price] : prices) plan->prices.push_back(std::move(price));
        return plan;
    }
    Status PutPlan(const PlanRecord& p) override {
        TALLY_TRY(Do("INSERT INTO plans(id, position, name, role, credits_monthly, archived_at, created, updated, "
                     "stripe_sync_pending, stripe_sync_error, stripe_sync_attempts, next_sync_at) "
                     "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT(id) DO UPDATE SET "
                     "position=excluded.position, name=excluded.name, role=excluded.role, "
                     "credits_monthly=excluded.credits_monthly, archived_at=excluded.archived_at, "
                     "updated=excluded.updated, stripe_sync_pending=excluded.stripe_sync_pending, "
                     "stripe_sync_error=excluded.stripe_sync_error, stripe_sync_attempts=excluded.stripe_sync_attempts, "
                     "next_sync_at=excluded.next_sync_at",
                     p.id, p.position, p.name, p.role, p.credits_monthly, p.archived_at, p.created, p.updated,
                     p.stripe_sync_pending, p.stripe_sync_error, p.stripe_sync_attempts, p.next_sync_at));
        TALLY_TRY(Do("DELETE FROM plan_entitlements WHERE plan_id=$1", p.id));
        for (const auto& [name, on] : p.features) {
            TALLY_TRY(Do("INSERT INTO plan_entitlements(plan_id, kind, name, value) VALUES ($1, 'feature', $2, $3)", p.id,
                         name, int64_t{on ? 1 : 0}));
        }
        for (const auto& [name, value] : p.limits) {
            TALLY_TRY(Do("INSERT INTO plan_entitlements(plan_id, kind, name, value) VALUES ($1, 'limit', $2, $3)", p.id,
                         name, value));
        }
        for (size_t i = 0; i < p.prices.size(); ++i) {
            const PlanPriceRecord& r = p.prices[i];
            TALLY_TRY(Do("INSERT INTO plan_prices(id, plan_id, lookup_key, interval_unit, interval_count, unit_amount, "
                         "currency, stripe_price_id, active, created, seq) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
                         "ON CONFLICT(id) DO UPDATE SET lookup_key=excluded.lookup_key, "
                         "stripe_price_id=excluded.stripe_price_id, active=excluded.active",
                         r.id, p.id, r.lookup_key, r.interval, r.interval_count, r.unit_amount, r.currency,
                         r.stripe_price_id, r.active, r.created, static_cast<int64_t>(i)));
        }
        return {};
    }
    Result<std::vector<std::string>> ClaimDuePlanSyncs(Timestamp now, Timestamp claim_until, int limit) override {
        TALLY_ASSIGN_OR_RETURN(auto ids, Many<std::string>("SELECT id FROM plans WHERE stripe_sync_pending AND "
                                                           "next_sync_at<=$1 ORDER BY next_sync_at, id LIMIT $2",
                                                           [](const Row& s) { return s.Text(0); }, now, limit));
        for (const auto& id : ids) TALLY_TRY(Do("UPDATE plans SET next_sync_at=$1 WHERE id=$2", claim_until, id));
        return ids;
    }
};

// ---- usage
class PgUsageTx final : public UsageStoreTx, private PgStatements {
public:
    explicit PgUsageTx(PgConnection& c) : PgStatements(c) {}

    Result<int64_t> Value(const CustomerId& customer, const std::string& meter, Timestamp period_start) override {
        TALLY_ASSIGN_OR_RETURN(auto v, One<int64_t>("SELECT value FROM usage_counters WHERE customer_id=$1 AND meter=$2 "
                                                    "AND period_start=$3",
                                                    [](const Row& s) { return s.Int(0); }, customer, meter,
                                                    period_start));
        return v.value_or(0);
    }
    Status PutValue(const CustomerId& customer, const std::string& meter, Timestamp period_start, int64_t value,
                    Timestamp updated) override {
        return Do("INSERT INTO usage_counters(customer_id, meter, period_start, value, updated) VALUES ($1,$2,$3,$4,$5) "
                  "ON CONFLICT(customer_id, meter, period_start) DO UPDATE SET value=excluded.value, "
                  "updated=excluded.updated",
                  customer, meter, period_start, value, updated);
    }
    Status AppendEvent(const UsageEventRecord& e) override {
        const bool keyed = !e.idempotency_key.empty();
        return Do("INSERT INTO usage_events(customer_id, meter, period_start, action, value, delta, at, recorded_at, "
                  "api_key_id, idempotency_key, timestamp_given, current, limit_value, period_end) "
                  "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
                  e.customer_id, e.meter, e.period_start, e.action, e.value, e.delta, e.at, e.recorded_at,
                  keyed ? std::optional<std::string>(e.api_key_id) : std::nullopt,
                  keyed ? std::optional<std::string>(e.idempotency_key) : std::nullopt, e.timestamp_given, e.current,
                  e.limit, e.period_end);
    }
    Result<std::optional<UsageEventRecord>> FindKeyedEvent(const std::string& api_key_id,
                                                           const std::string& idempotency_key) override {
        return One<UsageEventRecord>(
            "SELECT id, customer_id, meter, period_start, action, value, delta, at, recorded_at, api_key_id, "
            "idempotency_key, timestamp_given, current, limit_value, period_end FROM usage_events "
            "WHERE api_key_id=$1 AND idempotency_key=$2",
            [](const Row& s) {
                return UsageEventRecord{s.Int(0),  CustomerId(s.Text(1)), s.Text(2),    Timestamp(s.Int(3)),
                                        s.Text(4), s.Int(5),              s.Int(6),     Timestamp(s.Int(7)),
                                        Timestamp(s.Int(8)), s.Text(9),   s.Text(10),   s.Bool(11),
                                        s.Int(12), s.OptInt(13),          s.OptTs(14)};
            },
            api_key_id, idempotency_key);
    }
    Result<bool> HasLegacyKeys() override {
        TALLY_ASSIGN_OR_RETURN(auto any, One<int64_t>("SELECT 1 FROM usage_legacy_keys LIMIT 1",
                                                      [](const Row& s) { return s.Int(0); }));
        return any.has_value();
    }
    Result<std::optional<UsageLegacyKey>> FindLegacyKey(const std::string& api_key_id,
                                                        const std::string& idempotency_key) override {
        return One<UsageLegacyKey>("SELECT request_hash, response_body FROM usage_legacy_keys WHERE api_key_id=$1 AND "
                                   "key=$2",
                                   [](const Row& s) { return UsageLegacyKey{s.Text(0), s.Text(1)}; }, api_key_id,
                                   idempotency_key);
    }
    Result<std::optional<Timestamp>> LatestPeriodBefore(const CustomerId& customer, const std::string& meter,
                                                        Timestamp before) override {
        return One<Timestamp>("SELECT period_start FROM usage_counters WHERE customer_id=$1 AND meter=$2 AND "
                              "period_start<$3 ORDER BY period_start DESC LIMIT 1",
                              [](const Row& s) { return Timestamp(s.Int(0)); }, customer, meter, before);
    }
    Result<std::vector<UsageDayRecord>> DailyUsage(const CustomerId& customer, const std::string& meter,
                                                   Timestamp from, Timestamp to) override {
        return Many<UsageDayRecord>("SELECT at - at % 86400 AS day, SUM(delta), COUNT(*) FROM usage_events "
                                    "WHERE customer_id=$1 AND meter=$2 AND at>=$3 AND at<$4 GROUP BY day "
                                    "ORDER BY day",
                                    [](const Row& s) { return UsageDayRecord{Timestamp(s.Int(0)), s.Int(1), s.Int(2)}; },
                                    customer, meter, from, to);
    }
    Result<int64_t> DeltaBefore(const CustomerId& customer, const std::string& meter, Timestamp at) override {
        TALLY_ASSIGN_OR_RETURN(auto v, One<int64_t>("SELECT COALESCE(SUM(delta), 0) FROM usage_events WHERE "
                                                    "customer_id=$1 AND meter=$2 AND at<$3",
                                                    [](const Row& s) { return s.Int(0); }, customer, meter, at));
        return v.value_or(0);
    }
    Result<bool> MarkThreshold(const CustomerId& customer, const std::string& meter, Timestamp period_start,
                               int threshold, Timestamp at) override {
        TALLY_ASSIGN_OR_RETURN(auto added, One<int64_t>("INSERT INTO usage_thresholds(customer_id, meter, period_start, "
                                                        "threshold, at) VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING "
                                                        "RETURNING threshold",
                                                        [](const Row& s) { return s.Int(0); }, customer, meter,
                                                        period_start, threshold, at));
        return added.has_value();
    }
    Status ClearThresholds(const CustomerId& customer, const std::string& meter, Timestamp period_start,
                           int threshold) override {
        return Do("DELETE FROM usage_thresholds WHERE customer_id=$1 AND meter=$2 AND period_start=$3 AND "
                  "threshold>=$4",
                  customer, meter, period_start, threshold);
    }
    Result<std::vector<LimitOverrideRecord>> ListOverrides(const CustomerId& customer) override {
        return Many<LimitOverrideRecord>(
            "SELECT customer_id, meter, limit_value, extra, expires_at, reason, created, actor FROM limit_overrides "
            "WHERE customer_id=$1 ORDER BY meter",
            [](const Row& s) {
                return LimitOverrideRecord{CustomerId(s.Text(0)), s.Text(1),
                                           s.IsNull(2) ? std::nullopt : std::optional<int64_t>(s.Int(2)), s.Int(3),
                                           s.OptTs(4), s.Text(5), Timestamp(s.Int(6)), s.Text(7)};
            },
            customer);
    }
    Status PutOverride(const LimitOverrideRecord& o) override {
        return Do("INSERT INTO limit_overrides(customer_id, meter, limit_value, extra, expires_at, reason, created, actor) "
                  "VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT(customer_id, meter) DO UPDATE SET "
                  "limit_value=excluded.limit_value, extra=excluded.extra, expires_at=excluded.expires_at, "
                  "reason=excluded.reason, created=excluded.created, actor=excluded.actor",
                  o.customer_id, o.meter, o.limit, o.extra, o.expires_at, o.reason, o.created, o.actor);
    }
    Result<bool> DeleteOverride(const CustomerId& customer, const std::string& meter) override {
        TALLY_ASSIGN_OR_RETURN(auto gone, One<int64_t>("DELETE FROM limit_overrides WHERE customer_id=$1 AND meter=$2 "
                                                       "RETURNING 1",
                                                       [](const Row& s) { return s.Int(0); }, customer, meter));
        return gone.has_value();
    }
};

// ---- credits
CreditGrantRecord ReadPgGrant(const Row& s) {
    CreditGrantRecord g;
    g.id = s.Text(0);
    g.customer_id = CustomerId(s.Text(1));
    if (auto t = ParseGrantType(s.Text(2)); t.ok()) g.type = *t;
    g.amount = s.Int(3);
    g.remaining = s.Int(4);
    g.priority = static_cast<int>(s.Int(5));
    g.expires_at = s.OptTs(6);
    g.transfer_id = s.Text(7);
    g.reason = s.Text(8);
    g.created = Timestamp(s.Int(9));
    return g;
}
CreditTransferRecord ReadPgTransfer(const Row& s) {
    return CreditTransferRecord{s.Text(0), CustomerId(s.Text(1)), s.Text(2), s.Int(3), s.Text(4), s.Text(5), s.Text(6), s.Int(7), s.Int(8),
                                s.Int(9), Timestamp(s.Int(10)), s.Text(11), s.Text(12)};
}
#define TALLY_CREDIT_TRANSFER_COLS                                                                                   \
    "id, customer_id, kind, amount, action, metadata, request, balance_subscription, balance_bundle, "                \
    "balance_promotional, created, actor, reference"
#define TALLY_CREDIT_RESERVATION_COLS "id, customer_id, amount, expires_at, status, captured, settled_at, metadata, created"
#define TALLY_NOTIFICATION_COLS "id, customer_id, kind, message, object, created, dismissed_at"
NotificationRecord ReadPgNotification(const Row& s) {
    return NotificationRecord{s.Text(0), CustomerId(s.Text(1)), s.Text(2), s.Text(3), s.Text(4), Timestamp(s.Int(5)),
                              s.OptTs(6)};
}
CreditReservationRecord ReadPgReservation(const Row& s) {
    return CreditReservationRecord{s.Text(0),      CustomerId(s.Text(1)), s.Int(2),   Timestamp(s.Int(3)), s.Text(4),
                                   s.OptInt(5),    s.OptTs(6),            s.Text(7), Timestamp(s.Int(8))};
}

#define TALLY_CREDIT_PURCHASE_COLS \
    "id, customer_id, bundle, credits, amount, currency, expires_in_days, source, status, payment_intent, checkout_session, checkout_url, grant_id, failure_code, failure_message, amount_refunded, credits_refunded, credits_refund_spent, request, actor, created, updated"

CreditPurchaseRecord ReadPgPurchase(const Row& s) {
    CreditPurchaseRecord p;
    p.id = s.Text(0);
    p.customer_id = CustomerId(s.Text(1));
    p.bundle = s.Text(2);
    p.credits = s.Int(3);
    p.amount = s.Int(4);
    p.currency = s.Text(5);
    p.expires_in_days = s.OptInt(6);
    p.source = s.Text(7);
    p.status = s.Text(8);
    p.payment_intent = s.Text(9);
    p.checkout_session = s.Text(10);
    p.checkout_url = s.Text(11);
    p.grant_id = s.Text(12);
    p.failure_code = s.Text(13);
    p.failure_message = s.Text(14);
    p.amount_refunded = s.Int(15);
    p.credits_refunded = s.Int(16);
    p.credits_refund_spent = s.Int(17);
    p.request = s.Text(18);
    p.actor = s.Text(19);
    p.created = Timestamp(s.Int(20));
    p.updated = Timestamp(s.Int(21));
    return p;
}

#define TALLY_AUTO_PURCHASE_COLS \
    "customer_id, enabled, paused, threshold, bundle, max_per_month, failures, disabled_reason, pending_purchase, attempts, next_attempt_at, updated, actor"

AutoPurchaseRecord ReadPgAutoPurchase(const Row& s) {
    AutoPurchaseRecord a;
    a.customer_id = CustomerId(s.Text(0));
    a.enabled = s.Bool(1);
    a.paused = s.Bool(2);
    a.threshold = s.Int(3);
    a.bundle = s.Text(4);
    a.max_per_month = s.Int(5);
    a.failures = s.Int(6);
    a.disabled_reason = s.Text(7);
    a.pending_purchase = s.Text(8);
    a.attempts = s.Int(9);
    a.next_attempt_at = s.OptTs(10);
    a.updated = Timestamp(s.Int(11));
    a.actor = s.Text(12);
    return a;
}

class PgCreditTx final : public CreditStoreTx, private PgStatements {
public:
    explicit PgCreditTx(PgConnection& c) : PgStatements(c) {}

    Result<std::vector<CreditGrantRecord>> ListGrants(const CustomerId& customer) override {
        return Many<CreditGrantRecord>("SELECT id, customer_id, type, amount, remaining, priority, expires_at, "
                                       "transfer_id, reason, created FROM credit_grants WHERE customer_id=$1 "
                                       "ORDER BY created, id",
                                       ReadPgGrant, customer);
    }
    Status InsertGrant(const CreditGrantRecord& g) override {
        return Do("INSERT INTO credit_grants(id, customer_id, type, amount, remaining, priority, expires_at, "
                  "transfer_id, reason, created) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                  g.id, g.customer_id, std::string(GrantTypeName(g.type)), g.amount, g.remaining, g.priority,
                  g.expires_at, g.transfer_id, g.reason, g.created);
    }
    Status SetGrantRemaining(const std::string& grant_id, int64_t remaining) override {
        return Do("UPDATE credit_grants SET remaining=$1 WHERE id=$2", remaining, grant_id);
    }
    Result<std::optional<CreditTransferRecord>> GetTransfer(const std::string& id) override {
        return One<CreditTransferRecord>("SELECT " TALLY_CREDIT_TRANSFER_COLS " FROM credit_transfers WHERE id=$1",
                                         ReadPgTransfer, id);
    }
    Status InsertTransfer(const CreditTransferRecord& t) override {
        return Do("INSERT INTO credit_transfers(" TALLY_CREDIT_TRANSFER_COLS
                  ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                  t.id, t.customer_id, t.kind, t.amount, t.action, t.metadata, t.request, t.balance_subscription,
                  t.balance_bundle, t.balance_promotional, t.created, t.actor, t.reference);
    }
    Result<std::vector<std::pair<std::string, int64_t>>> SumTransfersSince(const CustomerId& customer,
                                                                            Timestamp since) override {
        return Many<std::pair<std::string, int64_t>>(
            "SELECT kind, SUM(amount)::bigint FROM credit_transfers WHERE customer_id=$1 AND created>=$2 GROUP BY kind "
            "ORDER BY kind",
            [](const Row& s) { return std::make_pair(s.Text(0), s.Int(1)); }, customer, since);
    }
    Result<std::vector<CreditTransferRecord>> ListTransfers(const CreditTransferFilter& f) override {
        return Many<CreditTransferRecord>(
            "SELECT " TALLY_CREDIT_TRANSFER_COLS " FROM credit_transfers WHERE customer_id=$1 AND "
            "($2::text IS NULL OR kind=$2) AND ($3::bigint IS NULL OR created>=$3) AND "
            "($4::bigint IS NULL OR created<=$4) AND "
            "($5::text IS NULL OR (created, seq) < (SELECT created, seq FROM credit_transfers WHERE id=$5)) "
            "ORDER BY created DESC, seq DESC LIMIT $6",
            ReadPgTransfer, f.customer, f.kind, f.created_gte, f.created_lte, f.starting_after, int64_t{f.limit});
    }
    Status InsertReservation(const CreditReservationRecord& r) override {
        return Do("INSERT INTO credit_reservations(" TALLY_CREDIT_RESERVATION_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                  r.id, r.customer_id, r.amount, r.expires_at, r.status, r.captured, r.settled_at, r.metadata,
                  r.created);
    }
    Result<std::optional<CreditReservationRecord>> GetReservation(const std::string& id) override {
        return One<CreditReservationRecord>("SELECT " TALLY_CREDIT_RESERVATION_COLS " FROM credit_reservations WHERE id=$1",
                                            ReadPgReservation, id);
    }
    Status SettleReservation(const CreditReservationRecord& r) override {
        TALLY_ASSIGN_OR_RETURN(auto settled, One<std::string>("UPDATE credit_reservations SET status=$2, captured=$3, "
                                                              "settled_at=$4 WHERE id=$1 AND status='pending' "
                                                              "RETURNING id",
                                                              [](const Row& s) { return s.Text(0); }, r.id, r.status,
                                                              r.captured, r.settled_at));
        if (!settled) return Conflict("reservation " + r.id + " is not pending");
        return {};
    }
    Result<std::vector<CreditReservationRecord>> ListPendingReservations(const CustomerId& customer) override {
        return Many<CreditReservationRecord>("SELECT " TALLY_CREDIT_RESERVATION_COLS " FROM credit_reservations "
                                             "WHERE customer_id=$1 AND status='pending' ORDER BY created, id",
                                             ReadPgReservation, customer);
    }
    Result<std::vector<CustomerId>> ListCustomersWithLapsedCredits(Timestamp now, int limit) override {
        // Both halves read a partial index of what is still live (credit_reservations_lapsing, credit_grants_lapsing).
        return Many<CustomerId>(
            "SELECT customer_id FROM credit_reservations WHERE status='pending' AND expires_at<=$1 "
            "UNION SELECT customer_id FROM credit_grants WHERE remaining>0 AND expires_at IS NOT NULL AND "
            "expires_at<=$1 LIMIT $2",
            [](const Row& s) { return CustomerId(s.Text(0)); }, now, limit);
    }
    Result<std::vector<CreditReservationRecord>> AllReservations() override {
        return Many<CreditReservationRecord>("SELECT " TALLY_CREDIT_RESERVATION_COLS " FROM credit_reservations ORDER BY id",
                                             ReadPgReservation);
    }
    Status InsertPurchase(const CreditPurchaseRecord& p) override {
        return Do("INSERT INTO credit_purchases(" TALLY_CREDIT_PURCHASE_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)",
                  p.id, p.customer_id, p.bundle, p.credits, p.amount, p.currency, p.expires_in_days, p.source, p.status,
                  p.payment_intent, p.checkout_session, p.checkout_url, p.grant_id, p.failure_code, p.failure_message,
                  p.amount_refunded, p.credits_refunded, p.credits_refund_spent, p.request, p.actor, p.created,
                  p.updated);
    }
    Status UpdatePurchase(const CreditPurchaseRecord& p) override {
        return Do("UPDATE credit_purchases SET status=$2, payment_intent=$3, checkout_session=$4, checkout_url=$5, "
                  "grant_id=$6, failure_code=$7, failure_message=$8, amount_refunded=$9, credits_refunded=$10, "
                  "credits_refund_spent=$11, updated=$12 WHERE id=$1",
                  p.id, p.status, p.payment_intent, p.checkout_session, p.checkout_url, p.grant_id, p.failure_code,
                  p.failure_message, p.amount_refunded, p.credits_refunded, p.credits_refund_spent, p.updated);
    }
    Result<std::optional<CreditPurchaseRecord>> GetPurchase(const std::string& id) override {
        return One<CreditPurchaseRecord>("SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases WHERE id=$1",
                                         ReadPgPurchase, id);
    }
    Result<std::optional<CreditPurchaseRecord>> FindPurchaseByPaymentIntent(const std::string& payment_intent) override {
        return One<CreditPurchaseRecord>("SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases "
                                         "WHERE payment_intent=$1 AND payment_intent <> '' ORDER BY id LIMIT 1",
                                         ReadPgPurchase, payment_intent);
    }
    Result<std::vector<CreditPurchaseRecord>> ListPurchases(const CustomerId& customer,
                                                            const std::optional<std::string>& starting_after,
                                                            int limit) override {
        return Many<CreditPurchaseRecord>(
            "SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases WHERE customer_id=$1 AND "
            "($2::text IS NULL OR (created, id) < (SELECT created, id FROM credit_purchases WHERE id=$2)) "
            "ORDER BY created DESC, id DESC LIMIT $3",
            ReadPgPurchase, customer, starting_after, int64_t{limit});
    }
    Result<int64_t> CountLivePurchasesSince(const CustomerId& customer, const std::string& source,
                                            Timestamp since) override {
        TALLY_ASSIGN_OR_RETURN(auto n, One<int64_t>("SELECT COUNT(*) FROM credit_purchases WHERE customer_id=$1 AND "
                                                    "source=$2 AND created>=$3 AND status IN ('pending', 'succeeded')",
                                                    [](const Row& s) { return s.Int(0); },
                                                    customer, source, since));
        return n.value_or(0);
    }
    Result<std::optional<AutoPurchaseRecord>> GetAutoPurchase(const CustomerId& customer) override {
        return One<AutoPurchaseRecord>("SELECT " TALLY_AUTO_PURCHASE_COLS " FROM credit_auto_purchase WHERE customer_id=$1",
                                       ReadPgAutoPurchase, customer);
    }
    Status UpsertAutoPurchase(const AutoPurchaseRecord& a) override {
        return Do("INSERT INTO credit_auto_purchase(" TALLY_AUTO_PURCHASE_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) "
                  "ON CONFLICT(customer_id) DO UPDATE SET enabled=excluded.enabled, paused=excluded.paused, threshold=excluded.threshold, bundle=excluded.bundle, max_per_month=excluded.max_per_month, failures=excluded.failures, disabled_reason=excluded.disabled_reason, pending_purchase=excluded.pending_purchase, attempts=excluded.attempts, next_attempt_at=excluded.next_attempt_at, updated=excluded.updated, actor=excluded.actor",
                  a.customer_id, a.enabled, a.paused, a.threshold, a.bundle, a.max_per_month, a.failures,
                  a.disabled_reason, a.pending_purchase, a.attempts, a.next_attempt_at, a.updated, a.actor);
    }
    Result<std::vector<AutoPurchaseRecord>> ListDueAutoPurchases(Timestamp now, int limit) override {
        return Many<AutoPurchaseRecord>("SELECT " TALLY_AUTO_PURCHASE_COLS " FROM credit_auto_purchase WHERE "
                                        "pending_purchase <> '' AND next_attempt_at <= $1 "
                                        "ORDER BY next_attempt_at, customer_id LIMIT $2",
                                        ReadPgAutoPurchase, now, int64_t{limit});
    }
    Result<bool> ClaimAutoPurchase(const CustomerId& customer, const std::string& purchase, Timestamp due,
                                   Timestamp lease_until) override {
        TALLY_ASSIGN_OR_RETURN(auto claimed, One<std::string>("UPDATE credit_auto_purchase SET next_attempt_at=$4 "
                                                              "WHERE customer_id=$1 AND pending_purchase=$2 AND "
                                                              "next_attempt_at=$3 RETURNING customer_id",
                                                              [](const Row& s) { return s.Text(0); },
                                                              customer, purchase, due, lease_until));
        return claimed.has_value();
    }
    Result<std::vector<CreditPurchaseRecord>> AllPurchases() override {
        return Many<CreditPurchaseRecord>("SELECT " TALLY_CREDIT_PURCHASE_COLS " FROM credit_purchases ORDER BY id",
                                          ReadPgPurchase);
    }
    Status InsertNotification(const NotificationRecord& n) override {
        return Do("INSERT INTO notifications(id, customer_id, kind, message, object, created, dismissed_at) "
                  "VALUES ($1,$2,$3,$4,$5,$6,$7)",
                  n.id, n.customer_id, n.kind, n.message, n.object, n.created, n.dismissed_at);
    }
    Result<std::vector<NotificationRecord>> ListNotifications(const CustomerId& customer, bool include_dismissed,
                                                              const std::optional<std::string>& starting_after,
                                                              int limit) override {
        return Many<NotificationRecord>(
            "SELECT " TALLY_NOTIFICATION_COLS " FROM notifications WHERE customer_id=$1 AND "
            "($2::boolean OR dismissed_at IS NULL) AND "
            "($3::text IS NULL OR seq < (SELECT seq FROM notifications WHERE id=$3)) ORDER BY seq DESC LIMIT $4",
            ReadPgNotification, customer, include_dismissed, starting_after, int64_t{limit});
    }
    Result<std::optional<NotificationRecord>> GetNotification(const std::string& id) override {
        return One<NotificationRecord>("SELECT " TALLY_NOTIFICATION_COLS " FROM notifications WHERE id=$1",
                                       ReadPgNotification, id);
    }
    Status DismissNotification(const std::string& id, Timestamp at) override {
        return Do("UPDATE notifications SET dismissed_at=COALESCE(dismissed_at, $2) WHERE id=$1", id, at);
    }
    Result<std::vector<std::string>> MutedNotificationKinds(const CustomerId& customer) override {
        return Many<std::string>("SELECT kind FROM notification_preferences WHERE customer_id=$1 ORDER BY kind",
                                 [](const Row& s) { return s.Text(0); }, customer);
    }
    Status SetNotificationKindMuted(const CustomerId& customer, const std::string& kind, bool muted) override {
        if (muted) {
            return Do("INSERT INTO notification_preferences(customer_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                      customer, kind);
        }
        return Do("DELETE FROM notification_preferences WHERE customer_id=$1 AND kind=$2", customer, kind);
    }
    Status AppendEntry(const CreditEntryRecord& e) override {
        return Do("INSERT INTO credit_entries(transfer_id, grant_id, amount, created) VALUES ($1,$2,$3,$4)",
                  e.transfer_id, e.grant_id, e.amount, e.created);
    }
    Result<std::vector<CreditEntryRecord>> ListEntries(const std::string& transfer_id) override {
        return Many<CreditEntryRecord>("SELECT id, transfer_id, grant_id, amount, created FROM credit_entries "
                                       "WHERE transfer_id=$1 ORDER BY id",
                                       [](const Row& s) {
                                           return CreditEntryRecord{s.Int(0), s.Text(1), s.Text(2), s.Int(3), Timestamp(s.Int(4))};
                                       },
                                       transfer_id);
    }
    Result<std::vector<CreditGrantRecord>> AllGrants() override {
        return Many<CreditGrantRecord>("SELECT id, customer_id, type, amount, remaining, priority, expires_at, "
                                       "transfer_id, reason, created FROM credit_grants ORDER BY id",
                                       ReadPgGrant);
    }
    Result<std::vector<CreditTransferRecord>> AllTransfers() override {
        return Many<CreditTransferRecord>("SELECT " TALLY_CREDIT_TRANSFER_COLS " FROM credit_transfers ORDER BY id",
                                          ReadPgTransfer);
    }
    Result<std::vector<CreditEntryRecord>> AllEntries() override {
        return Many<CreditEntryRecord>("SELECT id, transfer_id, grant_id, amount, created FROM credit_entries ORDER BY id",
                                       [](const Row& s) {
                                           return CreditEntryRecord{s.Int(0), s.Text(1), s.Text(2), s.Int(3), Timestamp(s.Int(4))};
                                       });
    }
};

// ---- flags
FlagRecord ReadPgFlag(const Row& s) {
    return FlagRecord{FeatureFlag{s.Text(0), s.Text(1), s.Bool(2), static_cast<int>(s.Int(3))}, Timestamp(s.Int(4)),
                      Timestamp(s.Int(5)), s.Text(6)};
}
FlagOverrideRecord ReadPgFlagOverride(const Row& s) {
    return FlagOverrideRecord{s.Text(0), CustomerId(s.Text(1)), s.Bool(2), Timestamp(s.Int(3)), s.Text(4)};
}

class PgFlagTx final : public FlagStoreTx, private PgStatements {
public:
    explicit PgFlagTx(PgConnection& c) : PgStatements(c) {}

    Result<std::vector<FlagRecord>> ListFlags() override {
        return Many<FlagRecord>("SELECT name, description, enabled, rollout_percentage, created, updated, updated_by "
                                "FROM flags ORDER BY name",
                                ReadPgFlag);
    }
    Result<std::optional<FlagRecord>> GetFlag(const std::string& name) override {
        return One<FlagRecord>("SELECT name, description, enabled, rollout_percentage, created, updated, updated_by "
                               "FROM flags WHERE name=$1",
                               ReadPgFlag, name);
    }
    Status PutFlag(const FlagRecord& f) override {
        return Do("INSERT INTO flags(name, description, enabled, rollout_percentage, created, updated, updated_by) "
                  "VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT(name) DO UPDATE SET "
                  "description=excluded.description, enabled=excluded.enabled, "
                  "rollout_percentage=excluded.rollout_percentage, updated=excluded.updated, "
                  "updated_by=excluded.updated_by",
                  f.flag.name, f.flag.description, f.flag.enabled, f.flag.rollout_percentage, f.created, f.updated,
                  f.updated_by);
    }
    Result<bool> InsertFlagIfAbsent(const FlagRecord& f) override {
        TALLY_ASSIGN_OR_RETURN(auto added, One<std::string>(
                                               "INSERT INTO flags(name, description, enabled, rollout_percentage, "
                                               "created, updated, updated_by) VALUES ($1,$2,$3,$4,$5,$6,$7) "
                                               "ON CONFLICT(name) DO NOTHING RETURNING name",
                                               [](const Row& s) { return s.Text(0); }, f.flag.name, f.flag.description,
                                               f.flag.enabled, f.flag.rollout_percentage, f.created, f.updated,
                                               f.updated_by));
        return added.has_value();
    }
    Result<std::vector<FlagOverrideRecord>> ListFlagOverrides(const std::string& flag) override {
        return Many<FlagOverrideRecord>("SELECT flag, customer_id, enabled, created, actor FROM flag_overrides "
                                        "WHERE flag=$1 ORDER BY customer_id",
                                        ReadPgFlagOverride, flag);
    }
    Result<std::optional<FlagOverrideRecord>> GetFlagOverride(const std::string& flag,
                                                              const CustomerId& customer) override {
        return One<FlagOverrideRecord>("SELECT flag, customer_id, enabled, created, actor FROM flag_overrides "
                                       "WHERE flag=$1 AND customer_id=$2",
                                       ReadPgFlagOverride, flag, customer);
    }
    Result<std::vector<FlagOverrideRecord>> CustomerFlagOverrides(const CustomerId& customer) override {
        return Many<FlagOverrideRecord>("SELECT flag, customer_id, enabled, created, actor FROM flag_overrides "
                                        "WHERE customer_id=$1 ORDER BY flag",
                                        ReadPgFlagOverride, customer);
    }
    Status PutFlagOverride(const FlagOverrideRecord& o) override {
        return Do("INSERT INTO flag_overrides(flag, customer_id, enabled, created, actor) VALUES ($1,$2,$3,$4,$5) "
                  "ON CONFLICT(flag, customer_id) DO UPDATE SET enabled=excluded.enabled, created=excluded.created, "
                  "actor=excluded.actor",
                  o.flag, o.customer_id, o.enabled, o.created, o.actor);
    }
    Result<bool> DeleteFlagOverride(const std::string& flag, const CustomerId& customer) override {
        TALLY_ASSIGN_OR_RETURN(auto gone, One<int64_t>("DELETE FROM flag_overrides WHERE flag=$1 AND customer_id=$2 "
                                                       "RETURNING 1",
                                                       [](const Row& s) { return s.Int(0); }, flag, customer));
        return gone.has_value();
    }
};

/// StoreTx over one connection inside an open transaction.
class PgTx final : public StoreTx, private PgStatements {
public:
    explicit PgTx(PgConnection& c)
        : PgStatements(c), customers_(c), billing_(c), audit_(c), inbox_(c), keys_(c), events_(c), plans_(c), usage_(c), flags_(c), credits_(c) {}

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

    Status Savepoint() override { return c_.Exec("SAVEPOINT item"); }
    Status RollbackToSavepoint() override { return c_.Exec("ROLLBACK TO SAVEPOINT item"); }
    Status ReleaseSavepoint() override { return c_.Exec("RELEASE SAVEPOINT item"); }

    /// Records a batch of received events in one statement (one round trip), each unless its id is already there
    /// or earlier in the batch; for each, true if it was new. Ids and types must be storable text.
    Result<std::vector<bool>> InsertInboxEvents(const std::vector<InboxEvent>& events) {
        // Arrays in PostgreSQL's binary format: no escaping on this side, no parsing on the server's, and the
        // payloads go in as the bytes received.
        BinaryArray ids(kTextOid, events.size()), types(kTextOid, events.size()), created(kInt8Oid, events.size()),
            received(kInt8Oid, events.size()), payloads(kByteaOid, events.size());
        for (const auto& e : events) {
            ids.Add(e.id.str());
            types.Add(e.type);
            created.Add(e.created.unix_seconds());
            received.Add(e.received_at.unix_seconds());
            payloads.Add(e.payload);
        }
        TALLY_ASSIGN_OR_RETURN(
            auto added, Many<std::string>(
                            "INSERT INTO webhook_events(id, type, created, status, attempts, received_at, "
                            "next_attempt_at, payload) SELECT u.id, u.type, u.created, 'pending', 0, u.received_at, "
                            "u.received_at, u.payload FROM unnest($1::text[], $2::text[], $3::bigint[], "
                            "$4::bigint[], $5::bytea[]) WITH ORDINALITY AS u(id, type, created, received_at, payload, "
                            "n) ORDER BY u.n ON CONFLICT (id) DO NOTHING RETURNING id",
                            [](const Row& r) { return r.Text(0); }, Bytes{ids.data()}, Bytes{types.data()},
                            Bytes{created.data()}, Bytes{received.data()}, Bytes{payloads.data()}));
        std::unordered_set<std::string> fresh(added.begin(), added.end());
        std::vector<bool> out(events.size(), false);
        for (size_t i = 0; i < events.size(); ++i) out[i] = fresh.erase(events[i].id.str()) > 0;  // first one only
        return out;
    }

    /// Records a received event unless its id is already there; true if it was new.
    Result<bool> InsertInboxEvent(const InboxEvent& e) {
        TALLY_ASSIGN_OR_RETURN(auto n, Count("INSERT INTO webhook_events(id, type, created, status, attempts, "
                                             "received_at, next_attempt_at, payload) VALUES ($1,$2,$3,'pending',0,$4,$4,"
                                             "$5) ON CONFLICT (id) DO NOTHING",
                                             e.id, e.type, e.created, e.received_at, Bytes{e.payload}));
        return n == 1;
    }

private:
    PgCustomerTx customers_;
    PgBillingTx billing_;
    PgAuditTx audit_;
    PgInboxTx inbox_;
    PgKeyTx keys_;
    PgEventTx events_;
    PgPlanTx plans_;
    PgUsageTx usage_;
    PgFlagTx flags_;
    PgCreditTx credits_;
};

/// |text| as the inside of a JSON string (libpq's messages hold quotes, newlines and tabs).
std::string JsonEscaped(const std::string& text) {
    std::string out;
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20) {
            static const char* kHex = "0123456789abcdef";
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 15];
        } else {
            out += ch;
        }
    }
    return out;
}

void PauseBeforeRetry(int attempt) {
    thread_local std::mt19937 rng{std::random_device{}()};
    const int ceiling = kRetryPauseUsMax << std::min(attempt, 8);
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, ceiling)(rng)));
}

}  // namespace

Result<std::unique_ptr<PostgresStore>> PostgresStore::Open(const std::string& url, const PostgresOptions& options) {
    if (!IsPostgresUrl(url)) return InvalidArgument("not a PostgreSQL URL (postgresql://...): " + RedactUrl(url), "db");
    if (options.pool_connections < 1 || options.pool_connections > kPoolConnectionsMax) {
        return InvalidArgument("pool size must be between 1 and " + std::to_string(kPoolConnectionsMax), "db");
    }
    TALLY_ASSIGN_OR_RETURN(auto first, PgConnection::Open(url));
    TALLY_TRY(Migrate(*first));
    return std::unique_ptr<PostgresStore>(new PostgresStore(url, options, std::move(first)));
}

PostgresStore::PostgresStore(std::string url, const PostgresOptions& options, std::unique_ptr<PgConnection> first)
    : url_(std::move(url)), options_(options) {
    idle_.push_back(std::move(first));
    open_ = 1;
}

PostgresStore::~PostgresStore() = default;

int64_t PostgresStore::conflict_retries() const {
    std::lock_guard lock(const_cast<std::mutex&>(mu_));
    return conflict_retries_;
}

Result<std::unique_ptr<PgConnection>> PostgresStore::Acquire() {
    {
        std::unique_lock lock(mu_);
        const bool got = cv_.wait_for(lock, std::chrono::milliseconds(kPoolWaitMs),
                                      [this] { return !idle_.empty() || open_ < options_.pool_connections; });
        if (!got) return Unavailable("no database connection free within " + std::to_string(kPoolWaitMs) + " ms");
        if (!idle_.empty()) {
            auto conn = std::move(idle_.back());
            idle_.pop_back();
            if (!conn->broken()) return conn;
            --open_;  // lost while idle (a server restart, a failover): replace it below
        }
        ++open_;
    }
    auto conn = PgConnection::Open(url_);
    if (!conn.ok()) {
        {
            std::lock_guard lock(mu_);
            --open_;
            cv_.notify_one();
        }
        // The reason (host, port, libpq's words) goes to the log, at most once a second; callers, and through them
        // HTTP clients such as Stripe, only learn that the database is unavailable.
        static std::atomic<int64_t> last_logged_ms{0};
        const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count();
        if (int64_t last = last_logged_ms.load(); now_ms - last >= 1000 &&
                                                   last_logged_ms.compare_exchange_strong(last, now_ms)) {
            auto logger = spdlog::get("tally");
            const std::string msg = "\"msg\":\"" + JsonEscaped(conn.error().message) + "\"";
            if (logger) {
                logger->error(msg);
            } else {
                spdlog::error(msg);
            }
        }
        return Unavailable("the database is unavailable (cannot connect)");
    }
    return std::move(*conn);
}

void PostgresStore::Release(std::unique_ptr<PgConnection> conn) {
    std::lock_guard lock(mu_);
    if (conn->broken()) {
        --open_;
    } else {
        idle_.push_back(std::move(conn));
    }
    cv_.notify_one();
}

Status PostgresStore::Run(Mode mode, const std::function<Status(StoreTx&)>& fn, const std::vector<int64_t>& lock_keys) {
    const char* begin = mode == Mode::kRead    ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                        : mode == Mode::kInbox ? "BEGIN ISOLATION LEVEL READ COMMITTED"
                                               : "BEGIN ISOLATION LEVEL SERIALIZABLE";
    const auto start = std::chrono::steady_clock::now();
    Status result;
    for (int attempt = 0;; ++attempt) {
        auto acquired = Acquire();
        if (!acquired.ok()) {
            result = acquired.error();
            break;
        }
        std::unique_ptr<PgConnection> conn = std::move(*acquired);
        struct Return {
            PostgresStore& store;
            std::unique_ptr<PgConnection>& conn;
            ~Return() { store.Release(std::move(conn)); }
        } give_back{*this, conn};
        conn->clear_retryable();
        Status s;
        // Released however this attempt ends; a broken connection took its session locks with it.
        struct Unlock {
            std::unique_ptr<PgConnection>& conn;
            std::vector<int64_t> held;
            ~Unlock() {
                if (held.empty() || !conn || conn->broken()) return;
                std::string sql = "SELECT ";
                for (size_t i = 0; i < held.size(); ++i) {
                    if (i) sql += ", ";
                    sql += "pg_advisory_unlock(" + std::to_string(held[i]) + ")";
                }
                (void)conn->Exec(sql);
            }
        } unlock{conn, {}};
        if (!lock_keys.empty()) {
            // One round trip: a simple query's statements run one after another, in this (sorted) order. If one
            // fails, the unlock below also covers the keys not yet taken (PostgreSQL answers false and a warning).
            std::string sql;
            for (int64_t key : lock_keys) sql += "SELECT pg_advisory_lock(" + std::to_string(key) + ");";
            s = conn->Exec(sql);
            unlock.held = lock_keys;
        }
        if (s.ok()) s = conn->Exec(begin);
        if (s.ok() && mode == Mode::kWriteAsync) s = conn->Exec("SET LOCAL synchronous_commit = off");
        if (s.ok()) {
            PgTx tx(*conn);
            try {
                s = fn(tx);
            } catch (...) {
                (void)conn->Exec("ROLLBACK");
                throw;
            }
            // A statement that failed inside |fn| but whose error |fn| handled still aborted the transaction;
            // PostgreSQL would turn the COMMIT into a ROLLBACK without an error.
            if (s.ok() && conn->in_failed_transaction()) {
                s = Internal("the transaction failed on an earlier statement whose error was not returned");
            }
            if (s.ok()) s = conn->Exec("COMMIT");
        }
        if (s.ok()) {
            result = s;
            break;
        }
        const bool retry = conn->retryable() && attempt < kSerializationRetriesMax;
        if (!conn->broken()) (void)conn->Exec("ROLLBACK");
        if (!retry) {
            result = s;
            break;
        }
        {
            std::lock_guard lock(mu_);
            ++conflict_retries_;
        }
        PauseBeforeRetry(attempt);
    }
    if (mode != Mode::kRead && commit_observer_) {
        commit_observer_(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), result.ok());
    }
    return result;
}

Status PostgresStore::Read(const std::function<Status(StoreTx&)>& fn) { return Run(Mode::kRead, fn); }
Status PostgresStore::Write(const std::function<Status(StoreTx&)>& fn) { return Run(Mode::kWrite, fn); }
Status PostgresStore::WriteSerialized(const std::vector<std::string>& keys,
                                      const std::function<Status(StoreTx&)>& fn) {
    std::vector<int64_t> lock_keys;
    for (const auto& key : keys) {
        uint64_t h = 1469598103934665603ULL;  // FNV-1a: a stable 64-bit key on every node
        for (unsigned char c : key) h = (h ^ c) * 1099511628211ULL;
        int64_t lock_key = static_cast<int64_t>(h);
        if (lock_key == 0 || lock_key == kMigrationLockKey) lock_key = 1;
        lock_keys.push_back(lock_key);
    }
    // Taken in one order on every node, so two groups of keys never wait for each other in a circle.
    std::sort(lock_keys.begin(), lock_keys.end());
    lock_keys.erase(std::unique(lock_keys.begin(), lock_keys.end()), lock_keys.end());
    return Run(Mode::kWrite, fn, lock_keys);
}

Status PostgresStore::WriteAsyncCommit(const std::function<Status(StoreTx&)>& fn) {
    return Run(Mode::kWriteAsync, fn);
}

Result<std::vector<bool>> PostgresStore::AppendInbox(const std::vector<InboxEvent>& events) {
    std::vector<bool> inserted(events.size(), false);
    TALLY_TRY(Run(Mode::kInbox, [&](StoreTx& tx) -> Status {
        auto& pg = static_cast<PgTx&>(tx);
        bool all_text = true;
        for (const auto& e : events) all_text = all_text && StorableText(e.id.str()) && StorableText(e.type);
        if (all_text) {
            TALLY_ASSIGN_OR_RETURN(inserted, pg.InsertInboxEvents(events));
            return {};
        }
        // An id or type PostgreSQL cannot hold as text (the receiver parses JSON first, so not expected): one by
        // one, so that only that event is refused.
        for (size_t i = 0; i < events.size(); ++i) {
            TALLY_ASSIGN_OR_RETURN(bool added, pg.InsertInboxEvent(events[i]));
            inserted[i] = added;
        }
        return {};
    }));
    return inserted;
}

Status PostgresStore::Ping() {
    return Read([](StoreTx&) { return Status(); });
}

}  // namespace tally::postgres
