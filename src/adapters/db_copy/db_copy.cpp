#include "adapters/db_copy/db_copy.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <memory>

#include "adapters/postgres/migrations.hpp"
#include "adapters/postgres/pg_connection.hpp"
#include "adapters/sqlite/migrations.hpp"

namespace tally::db_copy {
namespace {

using postgres::Param;
using postgres::PgConnection;

enum class Kind { kText, kInt, kBool, kBytes };
struct Column {
    const char* name;
    Kind kind;
};
/// One table, its columns as PostgreSQL names them, and the key both sides are read back in.
struct Table {
    const char* name;
    const char* key;
    std::vector<Column> columns;
    const char* sqlite_from = nullptr;  // the source when it is not the table of the same name (column expressions)
    std::vector<std::string> sqlite_columns = {};
};

constexpr Kind T = Kind::kText;
constexpr Kind I = Kind::kInt;
constexpr Kind B = Kind::kBool;

// Every table of the latest SQLite schema but schema_migrations (each store keeps its own).
const std::vector<Table>& Tables() {
    static const std::vector<Table> tables = {
        {"customers", "id",
         {{"id", T}, {"external_id", T}, {"email", T}, {"name", T}, {"stripe_customer_id", T}, {"role", T},
          {"plan_id", T}, {"created_at", I}, {"stripe_deleted", B}, {"stamp_created", I}, {"stamp_rank", I},
          {"stamp_event_id", T}, {"stamp_terminal", B}, {"override_role", T}, {"override_reason", T},
          {"override_expires_at", I}, {"override_created_at", I}, {"role_check_at", I}, {"grace_ends_at", I},
          {"type", T}, {"auth_provider", T}, {"company", T}, {"email_verified", B}, {"metadata", T},
          {"stripe_sync_pending", B}}},
        {"customer_members", "customer_id, user_id",
         {{"customer_id", T}, {"user_id", T}, {"email", T}, {"role", T}, {"created_at", I}, {"updated_at", I}}},
        {"customer_sessions", "id",
         {{"id", T}, {"hash", T}, {"customer_id", T}, {"user_id", T}, {"created_at", I}, {"expires_at", I},
          {"revoked_at", I}}},
        {"subscriptions", "id",
         {{"id", T}, {"stripe_customer_id", T}, {"status", T}, {"price_id", T}, {"price_lookup_key", T},
          {"plan_id", T}, {"interval_unit", T}, {"interval_count", I}, {"unit_amount", I}, {"currency", T},
          {"quantity", I}, {"current_period_start", I}, {"current_period_end", I}, {"cancel_at_period_end", B},
          {"trial_end", I}, {"canceled_at", I}, {"created", I}, {"stamp_created", I}, {"stamp_rank", I},
          {"stamp_event_id", T}, {"stamp_terminal", B}, {"pause_collection", T}, {"pending_schedule_id", T},
          {"pending_price_id", T}, {"pending_plan_id", T}, {"pending_quantity", I}, {"pending_at", I}}},
        {"subscription_schedules", "id",
         {{"id", T}, {"subscription_id", T}, {"status", T}, {"phases", T}, {"created", I}, {"stamp_created", I},
          {"stamp_rank", I}, {"stamp_event_id", T}, {"stamp_terminal", B}}},
        {"stripe_prices", "id", {{"id", T}, {"lookup_key", T}}},
        {"catalog_settings", "id", {{"id", I}, {"roles", T}, {"default_plan", T}, {"version", I}, {"meters", T}}},
        {"usage_counters", "customer_id, meter, period_start",
         {{"customer_id", T}, {"meter", T}, {"period_start", I}, {"value", I}, {"updated", I}}},
        {"usage_events", "id",
         {{"id", I}, {"customer_id", T}, {"meter", T}, {"period_start", I}, {"action", T}, {"value", I}, {"delta", I},
          {"at", I}, {"recorded_at", I}, {"api_key_id", T}, {"idempotency_key", T}, {"timestamp_given", B},
          {"current", I}, {"limit_value", I}, {"period_end", I}}},
        {"usage_legacy_keys", "api_key_id, key",
         {{"api_key_id", T}, {"key", T}, {"request_hash", T}, {"response_body", T}, {"created_at", I}}},
        {"limit_overrides", "customer_id, meter",
         {{"customer_id", T}, {"meter", T}, {"limit_value", I}, {"extra", I}, {"expires_at", I}, {"reason", T},
          {"created", I}, {"actor", T}}},
        {"usage_thresholds", "customer_id, meter, period_start, threshold",
         {{"customer_id", T}, {"meter", T}, {"period_start", I}, {"threshold", I}, {"at", I}}},
        {"credit_grants", "id",
         {{"id", T}, {"customer_id", T}, {"type", T}, {"amount", I}, {"remaining", I}, {"priority", I},
          {"expires_at", I}, {"transfer_id", T}, {"reason", T}, {"created", I}}},
        {"credit_transfers", "id",
         {{"id", T}, {"customer_id", T}, {"kind", T}, {"amount", I}, {"action", T}, {"metadata", T}, {"request", T},
          {"balance_subscription", I}, {"balance_bundle", I}, {"balance_promotional", I}, {"created", I},
          {"actor", T}, {"reference", T}, {"seq", I}}},
        {"notifications", "id",
         {{"id", T}, {"customer_id", T}, {"kind", T}, {"message", T}, {"object", T}, {"created", I},
          {"dismissed_at", I}, {"seq", I}}},
        {"notification_preferences", "customer_id, kind", {{"customer_id", T}, {"kind", T}}},
        {"credit_reservations", "id",
         {{"id", T}, {"customer_id", T}, {"amount", I}, {"expires_at", I}, {"status", T}, {"captured", I},
          {"settled_at", I}, {"metadata", T}, {"created", I}}},
        {"credit_entries", "id",
         {{"id", I}, {"transfer_id", T}, {"grant_id", T}, {"amount", I}, {"created", I}}},
        {"credit_auto_purchase", "customer_id",
         {{"customer_id", T}, {"enabled", B}, {"paused", B}, {"threshold", I}, {"bundle", T}, {"max_per_month", I},
          {"failures", I}, {"disabled_reason", T}, {"pending_purchase", T}, {"attempts", I}, {"next_attempt_at", I},
          {"updated", I}, {"actor", T}}},
        {"credit_purchases", "id",
         {{"id", T}, {"customer_id", T}, {"bundle", T}, {"credits", I}, {"amount", I}, {"currency", T},
          {"expires_in_days", I}, {"source", T}, {"status", T}, {"payment_intent", T}, {"checkout_session", T},
          {"checkout_url", T}, {"grant_id", T}, {"failure_code", T}, {"failure_message", T}, {"amount_refunded", I},
          {"credits_refunded", I}, {"credits_refund_spent", I}, {"request", T}, {"actor", T}, {"created", I},
          {"updated", I}}},
        {"flags", "name",
         {{"name", T}, {"description", T}, {"enabled", B}, {"rollout_percentage", I}, {"created", I}, {"updated", I},
          {"updated_by", T}}},
        {"flag_overrides", "flag, customer_id",
         {{"flag", T}, {"customer_id", T}, {"enabled", B}, {"created", I}, {"actor", T}}},
        {"plans", "id",
         {{"id", T}, {"position", I}, {"name", T}, {"role", T}, {"credits_monthly", I}, {"archived_at", I},
          {"created", I}, {"updated", I}, {"stripe_sync_pending", B}, {"stripe_sync_error", T},
          {"stripe_sync_attempts", I}, {"next_sync_at", I}}},
        {"plan_entitlements", "plan_id, kind, name", {{"plan_id", T}, {"kind", T}, {"name", T}, {"value", I}}},
        {"plan_prices", "id",
         {{"id", T}, {"plan_id", T}, {"lookup_key", T}, {"interval_unit", T}, {"interval_count", I},
          {"unit_amount", I}, {"currency", T}, {"stripe_price_id", T}, {"active", B}, {"created", I}, {"seq", I}}},
        {"invoices", "id",
         {{"id", T}, {"stripe_customer_id", T}, {"subscription_id", T}, {"status", T}, {"amount_due", I},
          {"amount_paid", I}, {"currency", T}, {"stamp_created", I}, {"stamp_rank", I}, {"stamp_event_id", T},
          {"stamp_terminal", B}, {"created", I}, {"attempt_count", I}, {"next_payment_attempt", I},
          {"hosted_invoice_url", T}, {"number", T}}},
        {"payment_attempts", "event_id",
         {{"event_id", T}, {"invoice_id", T}, {"subscription_id", T}, {"at", I}, {"succeeded", B}}},
        {"payments", "id",
         {{"id", T}, {"object", T}, {"stripe_customer_id", T}, {"amount", I}, {"amount_refunded", I}, {"currency", T},
          {"status", T}, {"stamp_created", I}, {"stamp_rank", I}, {"stamp_event_id", T}, {"stamp_terminal", B},
          {"created", I}, {"failure_message", T}}},
        {"audit_log", "id",
         {{"id", I}, {"customer_id", T}, {"at", I}, {"kind", T}, {"before", T}, {"after", T}, {"cause", T},
          {"detail", T}}},
        // SQLite keeps payloads in a table of their own, keyed by the event's rowid (PostgreSQL's seq).
        {"webhook_events", "seq",
         {{"seq", I}, {"id", T}, {"type", T}, {"created", I}, {"status", T}, {"attempts", I}, {"last_error", T},
          {"outcome", T}, {"received_at", I}, {"next_attempt_at", I}, {"processed_at", I}, {"payload", Kind::kBytes}},
         "webhook_events e LEFT JOIN webhook_payloads p ON p.event_rowid = e.rowid",
         {"e.rowid", "e.id", "e.type", "e.created", "e.status", "e.attempts", "e.last_error", "e.outcome",
          "e.received_at", "e.next_attempt_at", "e.processed_at", "COALESCE(p.payload, X'')"}},
        {"api_keys", "id",
         {{"id", T}, {"hash", T}, {"scope", T}, {"created_at", I}, {"name", T}, {"last_used_at", I}, {"revoked_at", I}}},
        {"idempotency_keys", "api_key_id, key",
         {{"api_key_id", T}, {"key", T}, {"request_hash", T}, {"state", T}, {"status", I}, {"response_body", T},
          {"created_at", I}, {"locked_until", I}}},
        {"app_events", "seq",
         {{"seq", I}, {"id", T}, {"type", T}, {"created_ms", I}, {"object_id", T}, {"object_sequence", I},
          {"customer_id", T}, {"payload", T}}},
        {"app_event_objects", "object_id", {{"object_id", T}, {"last_sequence", I}}},
        {"webhook_endpoints", "id",
         {{"id", T}, {"url", T}, {"description", T}, {"enabled_events", T}, {"disabled", B}, {"disabled_reason", T},
          {"secret", T}, {"previous_secret", T}, {"previous_secret_expires_ms", I}, {"failing_since_ms", I},
          {"created_ms", I}}},
        {"event_deliveries", "id",
         {{"id", I}, {"event_seq", I}, {"event_id", T}, {"endpoint_id", T}, {"object_id", T}, {"state", T},
          {"attempts", I}, {"next_attempt_ms", I}, {"lease_until_ms", I}, {"event_created_ms", I},
          {"delivered_ms", I}, {"last_status", I}, {"last_error", T}, {"prev_delivery_id", I}}},
        {"delivery_attempts", "id",
         {{"id", I}, {"delivery_id", I}, {"endpoint_id", T}, {"event_id", T}, {"at_ms", I}, {"status_code", I},
          {"latency_ms", I}, {"error", T}}},
    };
    return tables;
}

// Identity columns: after the copy their sequences continue after the largest copied value.
constexpr const char* kIdentities[][2] = {
    {"audit_log", "id"}, {"webhook_events", "seq"}, {"app_events", "seq"}, {"event_deliveries", "id"},
    {"delivery_attempts", "id"}, {"usage_events", "id"}, {"credit_entries", "id"}, {"credit_transfers", "seq"}, {"notifications", "seq"}};

/// FNV-1a (64-bit) over rows given value by value, each kind normalised to the same bytes on both sides.
class Digest {
public:
    void Null() { Mix("\x01N", 2); }
    void Value(const char* data, size_t size) {
        Mix("\x00", 1);
        Mix(data, size);
    }
    void EndRow() { Mix("\x02", 1); }
    uint64_t value() const { return h_; }

private:
    void Mix(const char* data, size_t size) {
        for (size_t i = 0; i < size; ++i) {
            h_ ^= static_cast<unsigned char>(data[i]);
            h_ *= 1099511628211ULL;
        }
    }
    uint64_t h_ = 14695981039346656037ULL;
};

struct SqliteCloser {
    void operator()(sqlite3* db) const { sqlite3_close(db); }
};
struct StmtFinalizer {
    void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

std::string SqliteSelect(const Table& t) {
    std::string sql = "SELECT ";
    for (size_t i = 0; i < t.columns.size(); ++i) {
        if (i > 0) sql += ", ";
        sql += t.sqlite_from ? t.sqlite_columns[i] : std::string(t.columns[i].name);
    }
    sql += " FROM ";
    sql += t.sqlite_from ? t.sqlite_from : t.name;
    sql += " ORDER BY ";
    sql += t.sqlite_from ? "e.rowid" : t.key;
    return sql;
}

/// The PostgreSQL read-back, every column as raw bytes (binary results, values cast to text but BYTEA), in the
/// byte order SQLite sorts text in.
std::string PostgresSelect(const Table& t) {
    std::string sql = "SELECT ";
    for (size_t i = 0; i < t.columns.size(); ++i) {
        if (i > 0) sql += ", ";
        const Column& c = t.columns[i];
        if (c.kind == Kind::kBytes) {
            sql += c.name;
        } else if (c.kind == Kind::kBool) {
            sql += std::string("(") + c.name + "::int)::text";
        } else {
            sql += std::string(c.name) + "::text";
        }
    }
    sql += std::string(" FROM ") + t.name + " ORDER BY ";
    // Text keys in byte order (SQLite's BINARY collation); integer keys as they are.
    const std::string key = t.key;
    size_t start = 0;
    for (;;) {
        const size_t comma = key.find(',', start);
        std::string part = key.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        while (!part.empty() && part.front() == ' ') part.erase(part.begin());
        bool integer = false;
        for (const auto& c : t.columns) integer = integer || (c.kind == Kind::kInt && part == c.name);
        sql += (start > 0 ? ", " : "") + part + (integer ? "" : " COLLATE \"C\"");
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return sql;
}

std::string InsertSql(const Table& t) {
    std::string cols;
    std::string values;
    for (size_t i = 0; i < t.columns.size(); ++i) {
        cols += (i ? ", " : "") + std::string(t.columns[i].name);
        values += (i ? ",$" : "$") + std::to_string(i + 1);
    }
    return "INSERT INTO " + std::string(t.name) + "(" + cols + ") OVERRIDING SYSTEM VALUE VALUES (" + values + ")";
}

Result<TableCopy> CopyTable(sqlite3* src, PgConnection& dst, const Table& t) {
    TableCopy out{t.name, 0, 0};
    sqlite3_stmt* raw = nullptr;
    const std::string select = SqliteSelect(t);
    if (sqlite3_prepare_v2(src, select.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
        return InvalidArgument(std::string("the source has no readable table ") + t.name + ": " + sqlite3_errmsg(src),
                               "from");
    }
    std::unique_ptr<sqlite3_stmt, StmtFinalizer> stmt(raw);
    const std::string insert = InsertSql(t);
    Digest digest;
    std::vector<Param> params(t.columns.size());
    int rc = 0;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
        for (size_t i = 0; i < t.columns.size(); ++i) {
            const int col = static_cast<int>(i);
            Param& p = params[i];
            p.binary = false;
            if (sqlite3_column_type(stmt.get(), col) == SQLITE_NULL) {
                p.value.reset();
                digest.Null();
                continue;
            }
            switch (t.columns[i].kind) {
                case Kind::kInt: p.value = std::to_string(sqlite3_column_int64(stmt.get(), col)); break;
                case Kind::kBool: p.value = std::string(1, sqlite3_column_int64(stmt.get(), col) != 0 ? '1' : '0'); break;
                case Kind::kText: {
                    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), col));
                    p.value = std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt.get(), col)));
                    break;
                }
                case Kind::kBytes: {
                    const auto* blob = static_cast<const char*>(sqlite3_column_blob(stmt.get(), col));
                    p.value = std::string(blob ? blob : "", static_cast<size_t>(sqlite3_column_bytes(stmt.get(), col)));
                    p.binary = true;
                    break;
                }
            }
            digest.Value(p.value->data(), p.value->size());
        }
        digest.EndRow();
        auto inserted = dst.Run(insert.c_str(), params);
        if (!inserted.ok()) {
            return Error{inserted.error().code, std::string("copying ") + t.name + ": " + inserted.error().message, "to"};
        }
        ++out.rows;
    }
    if (rc != SQLITE_DONE) return Unavailable(std::string("reading ") + t.name + ": " + sqlite3_errmsg(src));
    out.digest = digest.value();
    return out;
}

Result<TableCopy> ReadBack(PgConnection& dst, const Table& t) {
    const std::string select = PostgresSelect(t);
    TALLY_ASSIGN_OR_RETURN(auto rows, dst.Run(select.c_str(), {}, /*binary_result=*/true));
    Digest digest;
    for (int r = 0; r < rows.size(); ++r) {
        for (size_t i = 0; i < t.columns.size(); ++i) {
            const int col = static_cast<int>(i);
            if (rows.IsNull(r, col)) {
                digest.Null();
                continue;
            }
            const std::string v = rows.Text(r, col);
            digest.Value(v.data(), v.size());
        }
        digest.EndRow();
    }
    return TableCopy{t.name, rows.size(), digest.value()};
}

}  // namespace

Result<std::vector<TableCopy>> CopySqliteToPostgres(const std::string& sqlite_path, const std::string& postgres_url) {
    struct stat st {};
    if (::stat(sqlite_path.c_str(), &st) != 0) return InvalidArgument("no such SQLite database: " + sqlite_path, "from");
    sqlite3* raw = nullptr;
    if (sqlite3_open_v2(sqlite_path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        std::string msg = raw ? sqlite3_errmsg(raw) : "out of memory";
        sqlite3_close(raw);
        return Unavailable("cannot open " + sqlite_path + ": " + msg);
    }
    std::unique_ptr<sqlite3, SqliteCloser> src(raw);
    // One read transaction: the copy is of one moment of the source, even if a server still writes to it.
    if (sqlite3_exec(src.get(), "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
        return Unavailable(std::string("cannot read ") + sqlite_path + ": " + sqlite3_errmsg(src.get()));
    }
    {
        sqlite3_stmt* v = nullptr;
        int version = -1;
        if (sqlite3_prepare_v2(src.get(), "SELECT MAX(version) FROM schema_migrations", -1, &v, nullptr) == SQLITE_OK &&
            sqlite3_step(v) == SQLITE_ROW) {
            version = sqlite3_column_int(v, 0);
        }
        sqlite3_finalize(v);
        if (version != sqlite::LatestSchemaVersion()) {
            return InvalidArgument(sqlite_path + " is not a Tally database at schema version " +
                                       std::to_string(sqlite::LatestSchemaVersion()) + " (found " +
                                       std::to_string(version) + "): run `tally migrate --db " + sqlite_path +
                                       "` with this build first",
                                   "from");
        }
    }
    TALLY_ASSIGN_OR_RETURN(auto dst, PgConnection::Open(postgres_url));
    TALLY_TRY(postgres::Migrate(*dst));
    TALLY_TRY(dst->Exec("BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL statement_timeout = 0"));
    struct Rollback {
        PgConnection& conn;
        bool active = true;
        ~Rollback() {
            if (active) (void)conn.Exec("ROLLBACK");
        }
    } rollback{*dst};
    for (const auto& t : Tables()) {
        TALLY_ASSIGN_OR_RETURN(auto any, dst->QueryValue(std::string("SELECT COUNT(*) FROM (SELECT 1 FROM ") + t.name +
                                                         " LIMIT 1) x"));
        if (any != "0") {
            return Conflict("the target database is not empty (table " + std::string(t.name) +
                                " has rows): copy into a new database",
                            "to");
        }
    }
    std::vector<TableCopy> copied;
    for (const auto& t : Tables()) {
        TALLY_ASSIGN_OR_RETURN(auto c, CopyTable(src.get(), *dst, t));
        copied.push_back(std::move(c));
    }
    for (const auto& [table, column] : kIdentities) {
        TALLY_TRY(dst->Exec(std::string("SELECT setval(pg_get_serial_sequence('") + table + "', '" + column +
                            "'), COALESCE((SELECT MAX(" + column + ") FROM " + table + "), 0) + 1, false)"));
    }
    for (size_t i = 0; i < Tables().size(); ++i) {
        TALLY_ASSIGN_OR_RETURN(auto back, ReadBack(*dst, Tables()[i]));
        if (back.rows != copied[i].rows || back.digest != copied[i].digest) {
            return Internal("verification failed for table " + copied[i].table + ": " + std::to_string(copied[i].rows) +
                            " rows copied, " + std::to_string(back.rows) +
                            " read back, digests differ; nothing was committed");
        }
    }
    TALLY_TRY(dst->Exec("COMMIT"));
    rollback.active = false;
    return copied;
}

}  // namespace tally::db_copy
