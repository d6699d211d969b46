// tally: a self-hosted billing engine. See README.md.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/runtime.hpp"
#include "cli/simulate.hpp"

namespace {
int Run(int argc, char** argv);
}  // namespace

int main(int argc, char** argv) {
    // The process's last exception boundary: a bug in wiring or start-up exits with a message, not a terminate().
    try {
        return Run(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "tally: internal error: " << e.what() << "\n";
    } catch (...) {
        std::cerr << "tally: internal error\n";
    }
    return 70;  // EX_SOFTWARE
}

namespace {
int Run(int argc, char** argv) {
    using tally::cli::ServeOptions;
    CLI::App app{"tally - self-hosted billing engine for SaaS products (plans, customers, subscriptions, roles) "
                 "kept in sync with Stripe"};
    app.require_subcommand(1);

    ServeOptions serve;
    auto* serve_cmd = app.add_subcommand("serve", "Run the HTTP API and the Stripe webhook endpoint");
    serve_cmd->add_option("--host", serve.host, "Listen address")->envname("TALLY_HOST")->capture_default_str();
    serve_cmd->add_option("--port", serve.port, "Listen port")->envname("TALLY_PORT")->capture_default_str();
    serve_cmd->add_option("--db", serve.db, "SQLite database file, or a postgresql:// URL")->envname("TALLY_DB")->capture_default_str();
    serve_cmd->add_option("--db-pool", serve.db_pool_connections, "PostgreSQL: connections this process opens at most")
        ->envname("TALLY_DB_POOL")->check(CLI::Range(1, 64))->capture_default_str();
    serve_cmd->add_option("--catalog", serve.catalog, "Plan catalog JSON (default: the built-in copy of config/pricing.json)")->envname("TALLY_CATALOG");
    serve_cmd->add_option("--http-threads", serve.http_threads, "HTTP I/O threads")
        ->envname("TALLY_HTTP_THREADS")->check(CLI::Range(1, 64))->capture_default_str();
    serve_cmd->add_option("--grace-period-days", serve.grace_period_days,
                          "Days a past_due subscription keeps its role after the first failed payment")
        ->envname("TALLY_GRACE_PERIOD_DAYS")->check(CLI::Range(0, 365))->capture_default_str();
    serve_cmd->add_option("--usage-thresholds", serve.usage_thresholds,
                          "Percents of a limit at which usage.threshold_reached is emitted, ascending")
        ->envname("TALLY_USAGE_THRESHOLDS")->capture_default_str();
    serve_cmd->add_option("--trial-missing-payment-method", serve.trial_missing_payment_method,
                          "What Stripe does when a trial started through POST /v1/subscriptions ends without a payment "
                          "method (trial_settings.end_behavior.missing_payment_method)")
        ->envname("TALLY_TRIAL_MISSING_PAYMENT_METHOD")
        ->check(CLI::IsMember({"cancel", "pause", "create_invoice"}))
        ->capture_default_str();
    serve_cmd->add_option("--webhook-tolerance", serve.webhook_tolerance_seconds,
                          "Maximum age in seconds of a webhook signature timestamp")
        ->envname("STRIPE_WEBHOOK_TOLERANCE")->check(CLI::Range(1, 86400))->capture_default_str();
    serve_cmd->add_option("--webhook-secret", serve.webhook_secrets,
                          "Stripe webhook signing secret(s), comma-separated for rotation")
        ->envname("STRIPE_WEBHOOK_SECRET");
    serve_cmd->add_option("--webhook-secret-file", serve.webhook_secret_file,
                          "Where the generated secret is kept when STRIPE_WEBHOOK_SECRET is unset (default <db>.whsec)")
        ->envname("TALLY_WEBHOOK_SECRET_FILE");
    serve_cmd->add_option("--admin-key", serve.admin_key, "An admin API key accepted in addition to stored keys")
        ->envname("TALLY_ADMIN_KEY");
    serve_cmd->add_option("--stripe-secret-key", serve.stripe_secret_key,
                          "Stripe secret key (sk_live_/sk_test_/rk_...); without one (and without --stripe-sandbox) Tally only receives webhooks")
        ->envname("STRIPE_SECRET_KEY");
    serve_cmd->add_option("--stripe-api-base", serve.stripe_api_base, "Stripe API base URL (default https://api.stripe.com)")
        ->envname("STRIPE_API_BASE");
    serve_cmd->add_option("--stripe-test-clock", serve.stripe_test_clock,
                          "Test mode only: create Tally's Stripe customers on this test clock (clock_...), so their "
                          "time can be advanced")
        ->envname("STRIPE_TEST_CLOCK");
    serve_cmd->add_flag("--stripe-sandbox", serve.stripe_sandbox,
                        "Run the built-in Stripe sandbox and use it instead of Stripe (development only: anyone who "
                        "reaches its port can drive it)")
        ->envname("TALLY_STRIPE_SANDBOX");
    serve_cmd->add_option("--event-retry-base-ms", serve.event_retry_base_ms,
                          "Delay before the first retry of a failed event delivery to the app (doubles up to 1 h; "
                          "deliveries are retried for 3 days)")
        ->envname("TALLY_EVENT_RETRY_BASE_MS")->check(CLI::Range(int64_t{10}, int64_t{3600000}))
        ->capture_default_str();
    serve_cmd->add_option("--credit-sweep-interval-ms", serve.credit_sweep_interval_ms,
                          "How often each node settles lapsed credit reservations and grants (released, expired) "
                          "without waiting for the customer's next write")
        ->envname("TALLY_CREDIT_SWEEP_INTERVAL_MS")->check(CLI::Range(int64_t{100}, int64_t{3600000}))
        ->capture_default_str();
    serve_cmd->add_option("--event-retention-days", serve.event_retention_days,
                          "Events older than this are pruned with their delivery log")
        ->envname("TALLY_EVENT_RETENTION_DAYS")->check(CLI::Range(1, 3650))->capture_default_str();
    serve_cmd->add_flag("--event-delivery,!--no-event-delivery", serve.event_delivery,
                        "Deliver events to the app's endpoints from this process (off: events are still recorded, "
                        "and a node with delivery on, or this one restarted, sends them)")
        ->envname("TALLY_EVENT_DELIVERY")->capture_default_str();
    serve_cmd->add_option("--stripe-check-interval-ms", serve.stripe_check_interval_ms,
                          "How often /health's check that Tally's webhook endpoint is registered in Stripe runs")
        ->envname("TALLY_STRIPE_CHECK_INTERVAL_MS")->check(CLI::Range(int64_t{100}, int64_t{86400000}))
        ->capture_default_str();
    serve_cmd->add_flag("--sqlite-wal-coalescing", serve.sqlite_wal_coalescing,
                        "Experimental: coalesce SQLite's WAL writes in a VFS shim (about +6% peak webhook throughput; "
                        "relies on SQLite behaviour that is not a documented contract)")
        ->envname("TALLY_SQLITE_WAL_COALESCING");
    serve_cmd->add_option("--http-idle-timeout-ms", serve.http_idle_timeout_ms,
                          "A keep-alive connection with no request this long is closed")
        ->envname("TALLY_HTTP_IDLE_TIMEOUT_MS")->check(CLI::Range(int64_t{100}, int64_t{3600000}))
        ->capture_default_str();
    serve_cmd->add_option("--sandbox-host", serve.sandbox_host, "Built-in sandbox listen address")
        ->envname("TALLY_SANDBOX_HOST")->capture_default_str();
    serve_cmd->add_option("--sandbox-port", serve.sandbox_port, "Built-in sandbox listen port (0 picks a free one)")
        ->envname("TALLY_SANDBOX_PORT")->capture_default_str();
    // `serve` names these --sandbox-*; `tally sandbox` without the prefix.
    auto add_sandbox_options = [](CLI::App* cmd, tally::cli::SandboxOptions& options, const std::string& prefix) {
        cmd->add_option("--" + prefix + "dunning-retry-days", options.dunning_retry_days,
                        "Days after a failed invoice payment on which the sandbox retries it (default 1,3,5,7,9,11,14: "
                        "Stripe's recommended 8 tries in 2 weeks)")
            ->envname("TALLY_SANDBOX_DUNNING_RETRY_DAYS")->delimiter(',');
        cmd->add_option("--" + prefix + "dunning-end-state", options.dunning_end_state,
                        "What the last failed retry does to the subscription: canceled, unpaid or past_due")
            ->envname("TALLY_SANDBOX_DUNNING_END_STATE")->capture_default_str();
        cmd->add_option("--" + prefix + "public-url", options.public_url,
                        "Base URL of the sandbox's hosted Checkout and Portal pages as browsers reach them")
            ->envname("TALLY_SANDBOX_PUBLIC_URL");
    };
    add_sandbox_options(serve_cmd, serve.sandbox, "sandbox-");
    serve_cmd->add_option("--public-url", serve.public_url,
                          "Base URL browsers use to reach Tally (default pages Checkout returns to); default http://host:port")
        ->envname("TALLY_PUBLIC_URL");
    serve_cmd->add_option("--drain-ms", serve.drain_ms, "How long SIGTERM waits for requests in flight")
        ->envname("TALLY_DRAIN_MS")->capture_default_str();
    serve_cmd->add_option("--poll-interval-ms", serve.poll_interval_ms, "How often due webhook retries are checked")
        ->envname("TALLY_POLL_INTERVAL_MS")->check(CLI::Range(10, 60000))->capture_default_str();

    std::string db = "./tally.db";
    auto* migrate_cmd = app.add_subcommand("migrate", "Create or upgrade the database schema");
    migrate_cmd->add_option("--db", db, "SQLite database file, or a postgresql:// URL")->envname("TALLY_DB")->capture_default_str();

    std::string ledger_db = "./tally.db";
    auto* ledger_cmd = app.add_subcommand("ledger", "The credit ledger");
    ledger_cmd->require_subcommand(1);
    auto* ledger_verify = ledger_cmd->add_subcommand(
        "verify", "Check every invariant of the credit ledger; exit 1 naming each violation");
    ledger_verify->add_option("--db", ledger_db, "SQLite database file, or a postgresql:// URL")
        ->envname("TALLY_DB")->capture_default_str();

    tally::cli::KeysOptions keys;
    auto* keys_cmd = app.add_subcommand("keys", "Manage API keys");
    keys_cmd->require_subcommand(1);
    auto* keys_create = keys_cmd->add_subcommand("create", "Create an API key and print its secret once");
    keys_create->add_option("--db", keys.db, "SQLite database file, or a postgresql:// URL")->envname("TALLY_DB")->capture_default_str();
    keys_create->add_option("--scope", keys.scope, "admin (everything) or read_only (GET requests only)")
        ->check(CLI::IsMember({"admin", "read_only"}))->capture_default_str();
    keys_create->add_option("--name", keys.name, "What the key is for, e.g. \"billing dashboard\"")->required();
    auto* keys_list = keys_cmd->add_subcommand("list", "List API keys (ids, scopes, names, last use; never secrets)");
    keys_list->add_option("--db", keys.db, "SQLite database file, or a postgresql:// URL")->envname("TALLY_DB")->capture_default_str();
    auto* keys_revoke = keys_cmd->add_subcommand("revoke", "Revoke an API key for good");
    keys_revoke->add_option("id", keys.id, "The key's id (key_...)")->required();
    keys_revoke->add_option("--db", keys.db, "SQLite database file, or a postgresql:// URL")->envname("TALLY_DB")->capture_default_str();

    std::string copy_from;
    std::string copy_to;
    auto* db_cmd = app.add_subcommand("db", "Move a database between stores");
    db_cmd->require_subcommand(1);
    auto* copy_cmd = db_cmd->add_subcommand(
        "copy", "Copy a SQLite database into an empty PostgreSQL one, then verify every table (counts and contents)");
    copy_cmd->add_option("--from", copy_from, "The SQLite database file (stop the server writing to it first)")->required();
    copy_cmd->add_option("--to", copy_to, "postgresql:// URL of an empty database (migrated by the copy)")->required();

    std::string catalog_file;  // empty: the built-in default catalog
    std::string push_key;
    std::string push_base;
    auto* catalog_cmd = app.add_subcommand("catalog", "Work with the plan catalog");
    catalog_cmd->require_subcommand(1);
    auto* push_cmd = catalog_cmd->add_subcommand(
        "push", "Create the catalog's missing products and prices in Stripe, matched by lookup_key");
    push_cmd->add_option("--catalog", catalog_file, "Plan catalog JSON (default: the built-in copy of config/pricing.json)")->envname("TALLY_CATALOG");
    push_cmd->add_option("--stripe-secret-key", push_key, "Stripe secret key")->envname("STRIPE_SECRET_KEY");
    push_cmd->add_option("--stripe-api-base", push_base, "Stripe API base URL (default https://api.stripe.com)")
        ->envname("STRIPE_API_BASE");

    std::string catalog_db = "./tally.db";
    auto* diff_cmd = catalog_cmd->add_subcommand(
        "diff", "Show how the catalog file differs from the database's catalog (exit 1 when it does)");
    auto* apply_cmd = catalog_cmd->add_subcommand(
        "apply", "Make the database's catalog equal the file: new plans, changed ones (a new amount is a new price), "
                 "plans the file lacks archived");
    for (auto* cmd : {diff_cmd, apply_cmd}) {
        cmd->add_option("--catalog", catalog_file, "Plan catalog JSON (default: the built-in copy of config/pricing.json)")
            ->envname("TALLY_CATALOG");
        cmd->add_option("--db", catalog_db, "SQLite database file, or a postgresql:// URL")->envname("TALLY_DB")
            ->capture_default_str();
    }

    tally::cli::SimulateOptions sim;
    auto* sim_cmd = app.add_subcommand(
        "simulate", "Drive a reproducible customer population through the Stripe sandbox's clock into a new Tally "
                    "database (signups, trials, plan changes, cancellations, failed payments) and print a summary");
    sim_cmd->add_option("--customers", sim.customers, "How many customers sign up")->check(CLI::Range(1, 1000000))
        ->capture_default_str();
    sim_cmd->add_option("--months", sim.months, "Simulated months (of 30 days)")->check(CLI::Range(1, 120))
        ->capture_default_str();
    sim_cmd->add_option("--seed", sim.seed, "Random seed: the same seed gives the same run")->capture_default_str();
    sim_cmd->add_option("--db", sim.db, "New SQLite database to fill (must not exist)")->capture_default_str();
    sim_cmd->add_option("--catalog", sim.catalog, "Plan catalog JSON (default: the built-in copy of config/pricing.json)")->envname("TALLY_CATALOG");
    sim_cmd->add_option("--start", sim.start, "Simulated start, RFC 3339 UTC")->capture_default_str();

    std::string payload;
    std::string secret;
    std::string secret_file;
    auto* sign_cmd = app.add_subcommand("sign", "Print a Stripe-Signature header for a payload (for curl tests)");
    sign_cmd->add_option("payload", payload, "The exact request body")->required();
    sign_cmd->add_option("--secret", secret, "Signing secret (default: the one `tally serve` uses)")
        ->envname("STRIPE_WEBHOOK_SECRET");
    sign_cmd->add_option("--db", db, "SQLite database file (locates <db>.whsec)")->envname("TALLY_DB")->capture_default_str();
    sign_cmd->add_option("--webhook-secret-file", secret_file, "Secret file")->envname("TALLY_WEBHOOK_SECRET_FILE");

    std::string sandbox_host = "127.0.0.1";
    uint16_t sandbox_port = 12111;
    auto* sandbox_cmd = app.add_subcommand(
        "sandbox", "Run the offline Stripe sandbox (a subset of Stripe's API; any sk_test_ key is accepted)");
    sandbox_cmd->add_option("--host", sandbox_host, "Listen address")->envname("TALLY_SANDBOX_HOST")->capture_default_str();
    sandbox_cmd->add_option("--port", sandbox_port, "Listen port (0 picks a free one)")
        ->envname("TALLY_SANDBOX_PORT")->capture_default_str();

    tally::cli::SandboxOptions sandbox_options;
    add_sandbox_options(sandbox_cmd, sandbox_options, "");

    CLI11_PARSE(app, argc, argv);
    if (*sandbox_cmd) return tally::cli::RunSandbox(sandbox_host, sandbox_port, sandbox_options);
    if (*serve_cmd) return tally::cli::Serve(serve);
    if (*migrate_cmd) return tally::cli::Migrate(db);
    if (*ledger_verify) return tally::cli::LedgerVerify(ledger_db);
    if (*copy_cmd) return tally::cli::CopyDatabase(copy_from, copy_to);
    if (*sim_cmd) return tally::cli::Simulate(sim);
    if (*push_cmd) return tally::cli::PushCatalogCommand(catalog_file, push_key, push_base);
    if (*diff_cmd) return tally::cli::CatalogCommand("diff", catalog_file, catalog_db);
    if (*apply_cmd) return tally::cli::CatalogCommand("apply", catalog_file, catalog_db);
    if (*keys_create || *keys_list || *keys_revoke) {
        keys.command = *keys_create ? "create" : *keys_list ? "list" : "revoke";
        return tally::cli::Keys(keys);
    }
    if (*sign_cmd) {
        // CLI11 reads the first secret of a comma-separated STRIPE_WEBHOOK_SECRET.
        if (auto comma = secret.find(','); comma != std::string::npos) secret = secret.substr(0, comma);
        return tally::cli::Sign(payload, secret, db, secret_file);
    }
    return 1;
}
}  // namespace
