#include "adapters/postgres/pg_connection.hpp"

#include <charconv>
#include <cstring>

namespace tally::postgres {

bool IsPostgresUrl(std::string_view db) { return db.starts_with("postgresql://") || db.starts_with("postgres://"); }

std::string RedactUrl(std::string_view url) {
    // scheme://[user[:password]@]host...: the password is between the first ':' after the scheme and the '@'.
    const size_t scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) return std::string(url);
    const size_t authority = scheme_end + 3;
    const size_t at = url.find('@', authority);
    const size_t slash = url.find('/', authority);
    if (at == std::string_view::npos || (slash != std::string_view::npos && slash < at)) {
        // No user info; a password may still come as a query parameter.
        std::string out(url);
        if (const size_t p = out.find("password="); p != std::string::npos) {
            const size_t end = out.find('&', p);
            out.replace(p + 9, end == std::string::npos ? std::string::npos : end - p - 9, "***");
        }
        return out;
    }
    const size_t colon = url.find(':', authority);
    std::string out(url);
    if (colon != std::string_view::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    if (const size_t p = out.find("password="); p != std::string::npos) {
        const size_t end = out.find('&', p);
        out.replace(p + 9, end == std::string::npos ? std::string::npos : end - p - 9, "***");
    }
    return out;
}

int64_t Rows::Int(int row, int col) const {
    const char* p = PQgetvalue(result_.get(), row, col);
    int64_t v = 0;
    std::from_chars(p, p + PQgetlength(result_.get(), row, col), v);
    return v;
}

int64_t Rows::Affected() const {
    const char* n = result_ ? PQcmdTuples(result_.get()) : "";
    int64_t v = 0;
    std::from_chars(n, n + std::strlen(n), v);
    return v;
}

Result<std::unique_ptr<PgConnection>> PgConnection::Open(const std::string& url) {
    char* parse_error = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &parse_error);
    if (parsed == nullptr) {
        std::string msg = parse_error ? parse_error : "out of memory";
        PQfreemem(parse_error);
        while (!msg.empty() && msg.back() == '\n') msg.pop_back();
        return InvalidArgument("invalid PostgreSQL URL " + RedactUrl(url) + ": " + msg, "db");
    }
    PQconninfoFree(parsed);
    // Keywords after the URL override it: timeouts are Tally's, whatever the URL says.
    const std::string timeout = std::to_string(kConnectTimeoutSeconds);
    const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
    const char* values[] = {url.c_str(), timeout.c_str(), "tally", nullptr};
    PGconn* conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (conn == nullptr) return Unavailable("cannot connect to PostgreSQL: out of memory");
    if (PQstatus(conn) != CONNECTION_OK) {
        std::string msg = PQerrorMessage(conn);
        PQfinish(conn);
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
        return Unavailable("cannot connect to PostgreSQL at " + RedactUrl(url) + ": " + msg);
    }
    std::unique_ptr<PgConnection> c(new PgConnection(conn));
    // synchronous_commit=on: a COMMIT returns once its WAL is flushed (and, with synchronous_standby_names set on
    // the server, once a synchronous standby has it), so acknowledged means durable.
    TALLY_TRY(c->Exec("SET synchronous_commit = on; SET statement_timeout = " + std::to_string(kStatementTimeoutMs) +
                      "; SET lock_timeout = " + std::to_string(kLockTimeoutMs) +
                      "; SET idle_in_transaction_session_timeout = " + std::to_string(kIdleInTransactionTimeoutMs) +
                      "; SET client_min_messages = warning"));
    return c;
}

PgConnection::~PgConnection() { PQfinish(conn_); }

Error PgConnection::Fail(PGresult* result) {
    std::string msg = result ? PQresultErrorMessage(result) : PQerrorMessage(conn_);
    const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    const std::string sqlstate = state ? state : "";
    if (result) PQclear(result);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    msg = "database error: " + msg;
    retryable_ = sqlstate == "40001" || sqlstate == "40P01";
    if (sqlstate.empty() || broken()) return Unavailable(msg);  // the connection is gone: outcome unknown
    const std::string cls = sqlstate.substr(0, 2);
    if (cls == "23") return Conflict(msg);
    // Conflicts, timeouts, resources, shutdown, a read-only server (a standby after failover): all retryable.
    if (cls == "40" || cls == "08" || cls == "53" || cls == "57" || cls == "58" || sqlstate == "25006") {
        return Unavailable(msg);
    }
    return Internal(msg);
}

Status PgConnection::Exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Fail(r);
    PQclear(r);
    return {};
}

Result<std::string> PgConnection::QueryValue(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) return Fail(r);
    Rows rows(r);
    if (rows.size() == 0 || rows.IsNull(0, 0)) return Internal("no value from: " + sql);
    return rows.Text(0, 0);
}

Result<Rows> PgConnection::Run(const char* sql, const std::vector<Param>& params, bool binary_result) {
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
        // Appended, not "t" + to_string(): GCC 12 at -O3 warns of an overlapping memcpy in the latter (-Wrestrict).
        std::string name(1, 't');
        name += std::to_string(prepared_.size());
        PGresult* r = PQprepare(conn_, name.c_str(), sql, static_cast<int>(params.size()), nullptr);
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) return Fail(r);
        PQclear(r);
        it = prepared_.emplace(sql, std::move(name)).first;
    }
    std::vector<const char*> values(params.size());
    std::vector<int> lengths(params.size());
    std::vector<int> formats(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
        values[i] = params[i].value ? params[i].value->data() : nullptr;
        lengths[i] = params[i].value ? static_cast<int>(params[i].value->size()) : 0;
        formats[i] = params[i].binary ? 1 : 0;
    }
    PGresult* r = PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(params.size()), values.data(),
                                 lengths.data(), formats.data(), binary_result ? 1 : 0);
    const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Fail(r);
    return Rows(r);
}

}  // namespace tally::postgres
