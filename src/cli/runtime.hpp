#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tally::cli {

constexpr int64_t kIdempotencyPruneIntervalSeconds = 600;

/// Settings of the Stripe sandbox (standalone or built into `serve`).
struct SandboxOptions {
    std::vector<int64_t> dunning_retry_days;  // empty -> Stripe's recommended 8 tries in 2 weeks
    std::string dunning_end_state = "canceled";
    std::string public_url;  // base URL of the hosted pages as the browser sees it; empty -> the listen address
};

struct ServeOptions {
    std::string host = "127.0.0.1";
    uint16_t port = 8080;
    std::string db = "./tally.db";  // a SQLite file, or a postgresql:// URL
    int db_pool_connections = 8;    // PostgreSQL: connections this process opens at most
    std::string catalog;  // empty: the built-in default catalog (config/pricing.json at build time)
    int http_threads = 2;
    int64_t grace_period_days = 7;
    // Stripe's trial_settings.end_behavior.missing_payment_method for trials Tally starts: cancel|pause|create_invoice
    std::string trial_missing_payment_method = "cancel";
    std::string usage_thresholds = "80,95,100";  // percent of a limit at which usage.threshold_reached is emitted
    int64_t webhook_tolerance_seconds = 300;
    std::string webhook_secrets;      // comma-separated; empty -> the secret file
    std::string webhook_secret_file;  // empty -> <db>.whsec
    std::string admin_key;
    int drain_ms = 10000;
    std::string stripe_secret_key;  // empty -> no Stripe (webhook-only), unless stripe_sandbox
    bool stripe_sandbox = false;    // run the built-in Stripe sandbox and talk to it (never in production)
    int64_t stripe_check_interval_ms = 30000;  // how often the webhook endpoint's registration is checked
    int64_t http_idle_timeout_ms = 60000;
    bool sqlite_wal_coalescing = false;  // experimental: the WAL write-coalescing VFS shim
    std::string stripe_api_base;    // empty -> https://api.stripe.com (or the sandbox)
    std::string stripe_test_clock;  // test mode: customers Tally creates in Stripe live on this test clock
    std::string sandbox_host = "127.0.0.1";
    uint16_t sandbox_port = 12111;
    SandboxOptions sandbox;
    int poll_interval_ms = 1000;
    int64_t event_retry_base_ms = 60000;  // first retry of a failed event delivery; doubles up to 1 h, for 3 days
    int64_t credit_sweep_interval_ms = 30000;  // how often the worker settles lapsed reservations and grants
    bool event_delivery = true;           // run the dispatcher (and event pruning) in this process
    int event_retention_days = 30;        // events (and their delivery log) older than this are pruned
    std::string public_url;  // how browsers reach this server (Checkout's default return pages); empty -> host:port
};

int Serve(const ServeOptions& options);
/// Runs the offline Stripe sandbox on |host|:|port| until SIGTERM/SIGINT.
int RunSandbox(const std::string& host, uint16_t port, const SandboxOptions& options);
int Migrate(const std::string& db);
/// `tally ledger verify`: checks every invariant of the credit ledger; exit 1 naming each violation, 0 when exact.
int LedgerVerify(const std::string& db);
/// `tally db copy --from <sqlite> --to <postgresql://>`: prints each table's rows; 0 once verified and committed.
int CopyDatabase(const std::string& from, const std::string& to);
/// Creates the catalog's missing products and prices in Stripe (by lookup key) and prints each price.
int PushCatalogCommand(const std::string& catalog_file, const std::string& secret_key, const std::string& api_base);
/// `tally catalog diff|apply`: compares the catalog file with the database's catalog (exit 1 when they differ), or
/// makes the database's equal to it (running servers install and push the change).
int CatalogCommand(const std::string& command, const std::string& catalog_file, const std::string& db);
/// `tally keys create|list|revoke`.
struct KeysOptions {
    std::string command;  // create | list | revoke
    std::string db = "./tally.db";
    std::string scope = "admin";
    std::string name;
    std::string id;  // revoke
};
int Keys(const KeysOptions& options);
/// Prints a Stripe-Signature header for |payload| signed with the serve secret (or |secret|) at now.
int Sign(const std::string& payload, const std::string& secret, const std::string& db, const std::string& secret_file);
/// Logs one JSON line.
void Log(const char* level, const std::string& message);

}  // namespace tally::cli
