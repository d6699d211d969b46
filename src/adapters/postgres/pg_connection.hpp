#pragma once
// One libpq connection: prepared statements cached by their SQL, text parameters (binary for BYTEA), and
// PostgreSQL's errors mapped to Tally's codes. The only place libpq types appear, with postgres_store.cpp.
#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "domain/result.hpp"

namespace tally::postgres {

constexpr int kConnectTimeoutSeconds = 5;       // libpq connect_timeout, per host of a multi-host URL
constexpr int kStatementTimeoutMs = 10'000;     // a statement running longer is cancelled (57014 -> kUnavailable)
constexpr int kLockTimeoutMs = 5'000;           // waiting longer for a row or table lock fails the statement
constexpr int kIdleInTransactionTimeoutMs = 60'000;  // the server ends a session left idle inside a transaction

/// True for a URL that selects PostgreSQL (postgresql:// or postgres://); anything else is a SQLite path.
bool IsPostgresUrl(std::string_view db);
/// |url| with its password (if any) replaced by "***", for logs and error messages.
std::string RedactUrl(std::string_view url);

/// One statement parameter: SQL NULL, text, or raw bytes (sent in binary, for BYTEA).
struct Param {
    std::optional<std::string> value;
    bool binary = false;
};

/// A result's rows; empty when the statement returns none.
class Rows {
public:
    explicit Rows(PGresult* result) : result_(result, &PQclear) {}
    int size() const { return result_ ? PQntuples(result_.get()) : 0; }
    bool IsNull(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }
    std::string Text(int row, int col) const {
        return std::string(PQgetvalue(result_.get(), row, col), static_cast<size_t>(PQgetlength(result_.get(), row, col)));
    }
    int64_t Int(int row, int col) const;
    bool Bool(int row, int col) const { return PQgetvalue(result_.get(), row, col)[0] == 't'; }
    /// Rows affected by an INSERT/UPDATE/DELETE.
    int64_t Affected() const;

private:
    std::unique_ptr<PGresult, decltype(&PQclear)> result_;
};

/// One connection. Not thread-safe: owned by one transaction at a time (the store's pool hands it out).
class PgConnection {
public:
    /// Connects to |url| and sets the session's timeouts and synchronous_commit=on. kInvalidArgument for a URL
    /// libpq cannot parse; kUnavailable when no server accepts the connection (the message names the host and
    /// libpq's reason, never the password).
    static Result<std::unique_ptr<PgConnection>> Open(const std::string& url);
    ~PgConnection();
    PgConnection(const PgConnection&) = delete;
    PgConnection& operator=(const PgConnection&) = delete;

    /// Runs |sql| (one or more statements, no parameters) and discards any rows.
    Status Exec(const std::string& sql);
    /// Runs |sql| and returns the first column of its first row as text; kInternal if there is none.
    Result<std::string> QueryValue(const std::string& sql);
    /// Runs |sql| (a prepared statement, cached by the pointer |sql|) with |params|; rows in text format, or in
    /// binary if |binary_result|.
    Result<Rows> Run(const char* sql, const std::vector<Param>& params, bool binary_result = false);

    /// True once the connection is lost; the pool drops it instead of reusing it.
    bool broken() const { return PQstatus(conn_) != CONNECTION_OK; }
    /// True if the last failed statement lost a serialization conflict or a deadlock (40001, 40P01): its
    /// transaction can be retried from the start.
    bool retryable() const { return retryable_; }
    void clear_retryable() { retryable_ = false; }
    /// True while a transaction is open and has failed (every statement is refused until it ends).
    bool in_failed_transaction() const { return PQtransactionStatus(conn_) == PQTRANS_INERROR; }

private:
    explicit PgConnection(PGconn* conn) : conn_(conn) {}
    /// Maps a failed result (or a lost connection, when |result| is null) to an error, and takes ownership of it.
    Error Fail(PGresult* result);

    PGconn* conn_;
    std::unordered_map<const char*, std::string> prepared_;
    bool retryable_ = false;
};

}  // namespace tally::postgres
