#include "cli/runtime.hpp"

#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <atomic>
#include <functional>
#include <fstream>
#include <iostream>
#include <sstream>

#include "adapters/config/catalog_json.hpp"
#include "adapters/crypto.hpp"
#include "adapters/metrics/prometheus_metrics.hpp"
#include "adapters/openssl_secret_hasher.hpp"
#include "app/billing_history.hpp"
#include "app/member_service.hpp"
#include "app/plan_service.hpp"
#include "app/usage_service.hpp"
#include "app/credit_purchases.hpp"
#include "app/credit_service.hpp"
#include "app/flag_service.hpp"
#include "app/write_group.hpp"
#include "app/stripe_customer_sync.hpp"
#include "adapters/http/api.hpp"
#include "adapters/http/json_views.hpp"
#include "adapters/outbound/curl_webhook_sender.hpp"
#include "app/event_dispatcher.hpp"
#include "app/event_outbox.hpp"
#include "app/webhook_endpoints.hpp"
#include "adapters/http/server.hpp"
#include "adapters/system_thread.hpp"
#include "app/api_keys.hpp"
#include "app/idempotency.hpp"
#include "sandbox/sandbox.hpp"
#include "adapters/db_copy/db_copy.hpp"
#include "adapters/postgres/migrations.hpp"
#include "adapters/postgres/pg_connection.hpp"
#include "adapters/postgres/postgres_store.hpp"
#include "adapters/sqlite/migrations.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "adapters/stripe/event_decoder.hpp"
#include "adapters/stripe/stripe_api.hpp"
#include "adapters/stripe/stripe_client.hpp"
#include "adapters/stripe/webhook_signature.hpp"
#include "adapters/system_clock.hpp"
#include "app/checkout_service.hpp"
#include "app/subscription_service.hpp"
#include "app/webhook_processor.hpp"
#include "app/webhook_receiver.hpp"

namespace tally::cli {
namespace {

constexpr const char* kVersion = "0.1.0";

std::shared_ptr<spdlog::logger> Logger() {
    static auto logger = [] {
        auto l = spdlog::stderr_logger_mt("tally");
        l->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
        return l;
    }();
    return logger;
}

std::vector<std::string> SplitSecrets(const std::string& csv) {
    std::vector<std::string> out;
    std::stringstream ss(csv);
    std::string item;
    while (std::getline(ss, item, ',')) {
        while (!item.empty() && item.front() == ' ') item.erase(item.begin());
        while (!item.empty() && item.back() == ' ') item.pop_back();
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

/// Exit status when the database cannot be reached or opened (sysexits' EX_UNAVAILABLE); 2 is a bad argument.
constexpr int kExitDatabaseUnavailable = 69;

int ExitCodeFor(const Error& e) {
    if (e.code == ErrorCode::kInvalidArgument) return 2;
    if (e.code == ErrorCode::kUnavailable) return kExitDatabaseUnavailable;
    return 1;
}

/// The store |db| names: PostgreSQL for a postgresql:// (or postgres://) URL, else a SQLite file at that path.
Result<std::unique_ptr<Store>> OpenStore(const std::string& db, const sqlite::StoreOptions& sqlite_options = {},
                                         int pool_connections = postgres::kPoolConnectionsDefault) {
    if (postgres::IsPostgresUrl(db)) {
        TALLY_ASSIGN_OR_RETURN(auto store, postgres::PostgresStore::Open(db, {pool_connections}));
        return std::unique_ptr<Store>(std::move(store));
    }
    if (db.find("://") != std::string::npos) {
        return InvalidArgument("--db must be a SQLite file path or a postgresql:// URL, not " + postgres::RedactUrl(db),
                               "db");
    }
    TALLY_ASSIGN_OR_RETURN(auto store, sqlite::SqliteStore::Open(db, sqlite_options));
    return std::unique_ptr<Store>(std::move(store));
}

/// How logs name the database: a SQLite path as given, a PostgreSQL URL without its password.
std::string DatabaseName(const std::string& db) { return postgres::RedactUrl(db); }

/// The webhook secrets: STRIPE_WEBHOOK_SECRET if given, else the secret file, created on first use.
Result<std::vector<std::string>> ResolveSecrets(const std::string& csv, const std::string& file, bool create) {
    if (!csv.empty()) {
        auto secrets = SplitSecrets(csv);
        if (secrets.empty()) return InvalidArgument("STRIPE_WEBHOOK_SECRET is empty", "STRIPE_WEBHOOK_SECRET");
        return secrets;
    }
    std::ifstream in(file);
    std::string secret;
    if (in && std::getline(in, secret) && !secret.empty()) return std::vector<std::string>{secret};
    if (!create) return NotFound("no webhook secret: set STRIPE_WEBHOOK_SECRET or run `tally serve` once", file);
    secret = "whsec_" + RandomHex(24);
    // Created owner-only from the start (not chmod'ed afterwards), and never over an existing file.
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return Unavailable("cannot create webhook secret file '" + file + "'");
    const std::string line = secret + "\n";
    const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!written) return Unavailable("cannot write webhook secret file '" + file + "'");
    return std::vector<std::string>{secret};
}

/// Blocks SIGINT and SIGTERM in the calling thread; call before any thread starts so all inherit the mask and
/// only the caller's sigwait receives them. Returns the set to wait on.
sigset_t BlockStopSignals() {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    return signals;
}

/// The Stripe sandbox behind its own one-thread HTTP server. Members are destroyed server first.
struct RunningSandbox {
    std::unique_ptr<sandbox::Sandbox> sandbox;
    std::unique_ptr<http::Server> server;
    std::string base_url;
};

/// Starts the sandbox on |host|:|port| and prints where it listens; kUnavailable if it cannot listen.
Result<RunningSandbox> StartSandbox(const std::string& host, uint16_t port, const SandboxOptions& options) {
    sandbox::SandboxConfig config;
    if (!options.dunning_retry_days.empty()) config.dunning_retry_days = options.dunning_retry_days;
    const auto end_state = sandbox::ParseDunningEndState(options.dunning_end_state);
    if (!end_state) {
        return InvalidArgument("dunning end state must be canceled, unpaid or past_due, not '" +
                               options.dunning_end_state + "'");
    }
    config.dunning_end_state = *end_state;
    for (size_t i = 0; i < config.dunning_retry_days.size(); ++i) {
        if (config.dunning_retry_days[i] < 1 || (i > 0 && config.dunning_retry_days[i] <= config.dunning_retry_days[i - 1])) {
            return InvalidArgument("dunning retry days must be increasing whole days >= 1");
        }
    }
    RunningSandbox running;
    running.sandbox = std::make_unique<sandbox::Sandbox>(std::move(config));
    running.server = std::make_unique<http::Server>(
        host, port, 1, [sb = running.sandbox.get()](const http::Request& req, const http::Responder& respond) {
            respond(sb->Handle(req));
        });
    if (std::string err = running.server->Start(); !err.empty()) return Unavailable("stripe sandbox: " + err);
    running.base_url = "http://" + host + ":" + std::to_string(running.server->port());
    running.sandbox->SetPublicUrl(options.public_url.empty() ? running.base_url : options.public_url);
    Log("info", "stripe sandbox listening on " + running.base_url);
    std::cout << "stripe sandbox listening on " << running.base_url << " (any sk_test_ key)" << std::endl;
    return running;
}

}  // namespace

void Log(const char* level, const std::string& message) {
    const std::string body = "\"msg\":" + boost::json::serialize(boost::json::string(message));
    if (std::string(level) == "error") {
        Logger()->error(body);
    } else if (std::string(level) == "warn") {
        Logger()->warn(body);
    } else {
        Logger()->info(body);
    }
    Logger()->flush();
}

int Migrate(const std::string& db) {
    if (postgres::IsPostgresUrl(db)) {
        auto conn = postgres::PgConnection::Open(db);
        if (!conn.ok()) {
            Log("error", conn.error().message);
            return ExitCodeFor(conn.error());
        }
        auto applied = postgres::Migrate(**conn);
        if (!applied.ok()) {
            Log("error", applied.error().message);
            return ExitCodeFor(applied.error());
        }
        std::cout << "database " << DatabaseName(db) << " at schema version " << postgres::LatestSchemaVersion() << " ("
                  << *applied << " migration(s) applied)\n";
        return 0;
    }
    auto conn = sqlite::Connection::Open(db);
    if (!conn.ok()) {
        Log("error", conn.error().message);
        return 1;
    }
    auto applied = sqlite::Migrate((*conn)->raw());
    if (!applied.ok()) {
        Log("error", applied.error().message);
        return 1;
    }
    std::cout << "database " << db << " at schema version " << sqlite::LatestSchemaVersion() << " (" << *applied
              << " migration(s) applied)\n";
    return 0;
}

int CopyDatabase(const std::string& from, const std::string& to) {
    if (!postgres::IsPostgresUrl(to)) {
        std::cerr << "--to must be a postgresql:// URL\n";
        return 2;
    }
    auto copied = db_copy::CopySqliteToPostgres(from, to);
    if (!copied.ok()) {
        Log("error", copied.error().message);
        return ExitCodeFor(copied.error());
    }
    int64_t total = 0;
    for (const auto& t : *copied) {
        std::cout << t.table << "\t" << t.rows << " rows\n";
        total += t.rows;
    }
    std::cout << "copied " << total << " rows from " << from << " to " << DatabaseName(to)
              << "; every table read back and verified (row counts and contents)\n";
    return 0;
}

int LedgerVerify(const std::string& db) {
    auto store = OpenStore(db);
    if (!store.ok()) {
        Log("error", store.error().message);
        return ExitCodeFor(store.error());
    }
    SystemClock clock;
    CreditService credits(**store, clock, {});
    auto problems = credits.Verify();
    if (!problems.ok()) {
        Log("error", problems.error().message);
        return ExitCodeFor(problems.error());
    }
    for (const auto& p : *problems) std::cout << "violation: " << p << "\n";
    if (!problems->empty()) {
        std::cout << problems->size() << " violation(s) in the credit ledger of " << DatabaseName(db) << "\n";
        return 1;
    }
    std::cout << "credit ledger of " << DatabaseName(db) << ": every invariant holds\n";
    return 0;
}

int CatalogCommand(const std::string& command, const std::string& catalog_file, const std::string& db) {
    auto file = LoadCatalog(catalog_file);
    if (!file.ok()) {
        Log("error", "invalid catalog: " + file.error().message);
        return 2;
    }
    auto store = OpenStore(db);
    if (!store.ok()) {
        Log("error", store.error().message);
        return ExitCodeFor(store.error());
    }
    SystemClock clock;
    http::JsonObjectRenderer renderer;
    EventOutbox outbox(renderer, clock);
    BillingService billing(**store, *file, clock, BillingConfig{}, &outbox);
    // No Stripe here: the running servers push what this changes (their background sync), and deliver its events.
    PlanService plans(**store, billing, nullptr, clock, &outbox);
    std::optional<CatalogSettings> settings;
    if (Status read = (*store)->Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(settings, tx.plans().Settings());
            return {};
        });
        !read.ok()) {
        Log("error", read.error().message);
        return ExitCodeFor(read.error());
    }
    const std::string name = catalog_file.empty() ? std::string("the built-in catalog") : catalog_file;
    if (!settings) {
        if (command == "diff") {
            std::cout << "the database has no catalog yet: the first `tally serve` (or `tally catalog apply`) seeds it "
                         "from " << name << "\n";
            return 1;
        }
        auto seeded = plans.SeedAndLoad(*file);
        if (!seeded.ok()) {
            Log("error", seeded.error().message);
            return ExitCodeFor(seeded.error());
        }
        std::cout << "seeded the database's catalog from " << name << " (" << file->plans().size() << " plans)\n";
        return 0;
    }
    auto changes = command == "diff" ? plans.Diff(*file) : plans.Apply(*file, "cli:catalog_apply");
    if (!changes.ok()) {
        Log("error", (changes.error().param.empty() ? "" : changes.error().param + ": ") + changes.error().message);
        return changes.error().code == ErrorCode::kInvalidArgument ? 2 : ExitCodeFor(changes.error());
    }
    for (const auto& c : *changes) {
        std::cout << c.plan << "\t" << c.what;
        if (!c.from.empty() || !c.to.empty()) std::cout << "\t" << c.from << " -> " << c.to;
        std::cout << "\n";
    }
    if (changes->empty()) std::cout << "the database's catalog equals " << name << "\n";
    if (command == "apply" && !changes->empty()) {
        std::cout << changes->size() << " change(s) applied; running servers install them within a second and push "
                     "them to Stripe (GET /v1/plans/{id} shows stripe_sync)\n";
    }
    // Like diff(1): 0 when equal, 1 when they differ (diff); apply succeeded either way.
    return command == "diff" && !changes->empty() ? 1 : 0;
}

int Keys(const KeysOptions& o) {
    auto store = OpenStore(o.db);
    if (!store.ok()) {
        Log("error", store.error().message);
        return ExitCodeFor(store.error());
    }
    SystemClock clock;
    OpenSslSecretHasher hasher;
    ApiKeyService keys(**store, clock, hasher, "");
    if (o.command == "create") {
        auto scope = ParseApiKeyScope(o.scope);
        if (!scope.ok()) {
            std::cerr << scope.error().message << "\n";
            return 2;
        }
        auto created = keys.Create(*scope, o.name, "cli");
        if (!created.ok()) {
            std::cerr << created.error().message << "\n";
            return created.error().code == ErrorCode::kInvalidArgument ? 2 : 1;
        }
        std::cout << created->secret << "\n";
        std::cerr << "created " << created->record.scope << " key " << created->record.id << " \"" << created->record.name
                  << "\" (only its SHA-256 is stored; keep the key above safe)\n";
        return 0;
    }
    if (o.command == "list") {
        auto list = keys.List();
        if (!list.ok()) {
            std::cerr << list.error().message << "\n";
            return 1;
        }
        std::cout << "id\tscope\tname\tcreated\tlast_used\trevoked\n";
        for (const auto& k : *list) {
            std::cout << k.id << "\t" << k.scope << "\t" << k.name << "\t" << FormatRfc3339(k.created_at) << "\t"
                      << (k.last_used_at ? FormatRfc3339(*k.last_used_at) : "-") << "\t"
                      << (k.revoked_at ? FormatRfc3339(*k.revoked_at) : "-") << "\n";
        }
        return 0;
    }
    auto revoked = keys.Revoke(o.id, "cli");
    if (!revoked.ok()) {
        std::cerr << revoked.error().message << "\n";
        return revoked.error().code == ErrorCode::kNotFound ? 2 : 1;
    }
    std::cout << "revoked " << revoked->id << " at " << FormatRfc3339(*revoked->revoked_at)
              << " (a running server refuses it within " << kApiKeyRecheckSeconds + 1 << " s)\n";
    return 0;
}

int Sign(const std::string& payload, const std::string& secret, const std::string& db, const std::string& secret_file) {
    std::string key = secret;
    if (key.empty() && secret_file.empty() && postgres::IsPostgresUrl(db)) {
        std::cerr << "with a PostgreSQL database there is no <db>.whsec file: pass --secret (the STRIPE_WEBHOOK_SECRET "
                     "the nodes verify with)\n";
        return 2;
    }
    if (key.empty()) {
        auto secrets = ResolveSecrets("", secret_file.empty() ? db + ".whsec" : secret_file, false);
        if (!secrets.ok()) {
            std::cerr << secrets.error().message << "\n";
            return 1;
        }
        key = secrets->front();
    }
    SystemClock clock;
    std::cout << StripeWebhookVerifier::SignHeader(key, payload, clock.Now().unix_seconds()) << "\n";
    return 0;
}

int RunSandbox(const std::string& host, uint16_t port, const SandboxOptions& options) {
    const sigset_t signals = BlockStopSignals();
    auto running = StartSandbox(host, port, options);
    if (!running.ok()) {
        Log("error", running.error().message);
        return 1;
    }
    int sig = 0;
    sigwait(&signals, &sig);
    running->server->Stop(5000);
    return 0;
}

namespace {
/// "live" for live-mode keys, "test" for test-mode ones (sk_/rk_), "" for anything else.
std::string StripeKeyMode(const std::string& key) {
    if (key.starts_with("sk_live_") || key.starts_with("rk_live_")) return "live";
    if (key.starts_with("sk_test_") || key.starts_with("rk_test_")) return "test";
    return "";
}
}  // namespace

int Serve(const ServeOptions& o) {
    // Before any thread exists (the store starts one): see BlockStopSignals.
    const sigset_t signals = BlockStopSignals();
    InstallThreadHooks(SystemThreadHooks());

    if (!o.admin_key.empty() && o.admin_key.size() < kAdminKeyBytesMin) {
        Log("error", "TALLY_ADMIN_KEY is " + std::to_string(o.admin_key.size()) + " characters; it must be at least " +
                         std::to_string(kAdminKeyBytesMin) + " (generate one with: openssl rand -hex 24)");
        return 2;
    }
    if (o.stripe_sandbox && !o.stripe_secret_key.empty()) {
        Log("error", "--stripe-sandbox and STRIPE_SECRET_KEY are both set: choose the sandbox or real Stripe");
        return 2;
    }
    const std::string stripe_mode =
        o.stripe_sandbox ? "sandbox" : o.stripe_secret_key.empty() ? "not_configured" : StripeKeyMode(o.stripe_secret_key);
    if (stripe_mode.empty()) {
        Log("error", "STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_live_, sk_test_, rk_live_, rk_test_)");
        return 2;
    }
    if (!o.stripe_test_clock.empty() && stripe_mode != "test") {
        Log("error", "STRIPE_TEST_CLOCK needs a test-mode STRIPE_SECRET_KEY (sk_test_/rk_test_): test clocks exist only "
                     "in test mode (the built-in sandbox makes its own)");
        return 2;
    }
    auto catalog = LoadCatalog(o.catalog);
    if (!catalog.ok()) {
        Log("error", "invalid catalog: " + catalog.error().message);
        return 2;
    }
    std::vector<FeatureFlag> flag_seeds;
    CreditActionCosts credit_actions;
    std::vector<CreditBundle> credit_bundles;
    if (auto text = ReadCatalogText(o.catalog); text.ok()) {
        auto parsed = ParseFlagsJson(*text);
        if (!parsed.ok()) {
            Log("error", "invalid catalog: " + parsed.error().param + ": " + parsed.error().message);
            return 2;
        }
        flag_seeds = std::move(*parsed);
        auto actions = ParseCreditActionsJson(*text);
        if (!actions.ok()) {
            Log("error", "invalid catalog: " + actions.error().param + ": " + actions.error().message);
            return 2;
        }
        credit_actions = std::move(*actions);
        auto bundles = ParseCreditBundlesJson(*text);
        if (!bundles.ok()) {
            Log("error", "invalid catalog: " + bundles.error().param + ": " + bundles.error().message);
            return 2;
        }
        credit_bundles = std::move(*bundles);
    }
    auto thresholds = ParseUsageThresholds(o.usage_thresholds);
    if (!thresholds.ok()) {
        Log("error", "--usage-thresholds: " + thresholds.error().message);
        return 2;
    }
    const bool postgres_mode = postgres::IsPostgresUrl(o.db);
    if (postgres_mode && o.stripe_sandbox) {
        // Each node would run a sandbox of its own, with customers and subscriptions the other nodes never see.
        Log("error", "--stripe-sandbox runs a sandbox inside this process, so it is for a single SQLite node; with "
                     "PostgreSQL run one `tally sandbox` and point every node at it (STRIPE_API_BASE=http://<host>:12111 "
                     "STRIPE_SECRET_KEY=sk_test_... STRIPE_WEBHOOK_SECRET=<the secret of the endpoint you register "
                     "with it>)");
        return 2;
    }
    if (postgres_mode && o.webhook_secrets.empty() && o.webhook_secret_file.empty()) {
        // Nodes keep no local state: every one must verify with the same secret, given to each of them.
        Log("error", "with PostgreSQL set STRIPE_WEBHOOK_SECRET (or --webhook-secret-file) on every node: there is no "
                     "<db>.whsec file to generate one into");
        return 2;
    }
    auto store = OpenStore(o.db, sqlite::StoreOptions{.wal_write_coalescing = o.sqlite_wal_coalescing},
                           o.db_pool_connections);
    if (!store.ok()) {
        Log("error", store.error().message);
        return ExitCodeFor(store.error());
    }
    if (o.sqlite_wal_coalescing && !postgres_mode) {
        Log("warn", "experimental: SQLite WAL write coalescing is on (it relies on undocumented SQLite behaviour)");
    }
    const std::string secret_file = o.webhook_secret_file.empty() ? o.db + ".whsec" : o.webhook_secret_file;
    auto secrets = ResolveSecrets(o.webhook_secrets, secret_file, true);
    if (!secrets.ok()) {
        Log("error", secrets.error().message);
        return 2;
    }
    if (o.webhook_secrets.empty()) Log("info", "webhook secret read from " + secret_file);

    SystemClock clock;
    OpenSslSecretHasher hasher;
    PrometheusMetrics metrics;
    (*store)->SetCommitObserver([&metrics](double seconds, bool ok) { metrics.StoreCommit(seconds, ok); });
    StripeEventDecoder decoder;
    StripeWebhookVerifier verifier(*secrets, o.webhook_tolerance_seconds);
    // Events to the app: written by the use cases inside their transactions, delivered by the dispatcher (which
    // outlives nothing it uses: the sender is destroyed after it).
    http::JsonObjectRenderer renderer;
    EventOutbox outbox(renderer, clock);
    CurlWebhookSender sender;
    DispatcherConfig dispatcher_config;
    dispatcher_config.retry.base_ms = o.event_retry_base_ms;
    dispatcher_config.event_retention_ms = int64_t{o.event_retention_days} * 86'400'000;
    WebhookReceiver* receiver_ptr = nullptr;  // set below; the dispatcher and the worker defer to its commits
    EventDispatcher dispatcher(**store, sender, hasher, clock, dispatcher_config,
                               [&receiver_ptr] { return receiver_ptr ? receiver_ptr->backlog() : 0; }, metrics);
    outbox.SetListener([&dispatcher] { dispatcher.Notify(); });
    WebhookEndpointService endpoints(**store, hasher, clock, [&dispatcher] { dispatcher.Notify(); });
    BillingService billing(**store, *catalog, clock, BillingConfig{o.grace_period_days * 86400}, &outbox);
    std::atomic<PlanService*> plans_view{nullptr};  // set once the Stripe client exists
    std::atomic<CreditPurchaseService*> purchases_view{nullptr};  // likewise
    std::atomic<CreditService*> credits_view{nullptr};             // likewise
    WebhookProcessor processor(**store, decoder, billing, clock, metrics);
    ApiKeyService keys(**store, clock, hasher, o.admin_key);
    IdempotencyService idempotency(**store, clock);
    MemberService members(**store, billing, clock, hasher);
    BillingHistoryService history(**store);
    std::atomic<StripeCustomerSync*> customer_sync{nullptr};  // set once the Stripe client exists
    // Acknowledging deliveries comes first: the worker defers while the receiver has commits queued.
    int64_t last_prune_s = 0;
    int64_t last_credit_sweep_ms = 0;
    WebhookWorker worker(
        processor, billing, o.poll_interval_ms, [&receiver_ptr] { return receiver_ptr ? receiver_ptr->backlog() : 0; },
        [&idempotency, &members, &customer_sync, &plans_view, &purchases_view, &credits_view, &clock, &last_prune_s,
         &last_credit_sweep_ms, sweep_ms = o.credit_sweep_interval_ms] {
            // Profiles waiting for Stripe: a cheap read when none is (its own backoff when Stripe fails).
            if (auto* sync = customer_sync.load()) (void)sync->SyncPending();
            // Plans: another node's change installed here, and pushes to Stripe due (claimed: one node does each).
            if (auto* plans = plans_view.load()) {
                (void)plans->ReloadIfChanged();
                (void)plans->SyncDue();
            }
            // Auto-purchases due: a cheap read when none is (each attempt claimed by one node).
            if (auto* purchases = purchases_view.load()) (void)purchases->RunDueAutoPurchases();
            // Reservations and grants that lapsed since the last sweep are settled (released, expired) without
            // waiting for the customer's next write, so credits.expired arrives on time.
            if (auto* credits = credits_view.load(); credits != nullptr) {
                const int64_t now_ms = clock.NowMs();
                if (now_ms - last_credit_sweep_ms >= sweep_ms) {
                    last_credit_sweep_ms = now_ms;
                    (void)credits->SettleLapsed();
                }
            }
            // Stripe keeps idempotency keys 24 hours; prune in the worker's quiet moments, at most every 10 minutes.
            if (clock.Now().unix_seconds() - last_prune_s < kIdempotencyPruneIntervalSeconds) return;
            last_prune_s = clock.Now().unix_seconds();
            (void)idempotency.Prune();
            (void)members.PruneExpiredSessions();
        });
    WebhookReceiver receiver(**store, verifier, decoder, clock, [&worker] { worker.Notify(); }, metrics);
    receiver_ptr = &receiver;
    // The sandbox is a stand-in for Stripe that anyone reaching its port can drive with any sk_test_ key: it runs
    // only when asked for.
    std::optional<RunningSandbox> stripe_sandbox;
    std::string api_base = o.stripe_api_base.empty() ? stripe::kStripeApiBaseDefault : o.stripe_api_base;
    std::string secret_key = o.stripe_secret_key;
    if (o.stripe_sandbox) {
        auto running = StartSandbox(o.sandbox_host, o.sandbox_port, o.sandbox);
        if (!running.ok()) {
            Log("error", running.error().message);
            return 1;
        }
        stripe_sandbox = std::move(*running);
        api_base = stripe_sandbox->base_url;
        secret_key = "sk_test_tally_sandbox";
        Log("warn", "STRIPE SANDBOX MODE: payments are simulated by the built-in sandbox at " + api_base +
                        ", which accepts any sk_test_ key; never expose it or use this mode in production");
    }
    stripe::ClientConfig client_config;
    client_config.api_base = api_base;
    client_config.secret_key = secret_key;
    client_config.on_call = [&metrics](const std::string& method, std::string_view outcome) {
        metrics.StripeCall(method, outcome);
    };
    stripe::Client client(client_config);
    stripe::HttpStripeApi http_stripe_api(client);
    stripe::UnconfiguredStripeApi unconfigured_stripe_api;
    StripeApi& stripe_api = stripe_mode == "not_configured" ? static_cast<StripeApi&>(unconfigured_stripe_api)
                                                            : static_cast<StripeApi&>(http_stripe_api);
    CheckoutService checkout(**store, billing, stripe_api, clock, CheckoutConfig{});
    SubscriptionService subscriptions(**store, billing, checkout, processor, stripe_api, clock,
                                      SubscriptionConfig{o.trial_missing_payment_method});
    StripeCustomerSync stripe_customer_sync(**store, stripe_api, clock);
    customer_sync = &stripe_customer_sync;
    // The catalog lives in the database: the file seeds an empty one; later changes come through the API or
    // `tally catalog apply`, and are pushed to Stripe in the background.
    PlanService plans(**store, billing, stripe_mode == "not_configured" ? nullptr : &stripe_api, clock, &outbox);
    plans.SetWakeup([&worker] { worker.Notify(); });
    UsageService usage(**store, billing, clock, &outbox, *thresholds);
    members.SetSeatCheck([&usage](StoreTx& tx, const CustomerId& c) { return usage.CheckSeat(tx, c); });
    FlagService flags(**store, clock);
    CreditService credits(**store, clock, credit_actions, &billing);
    CreditPurchaseService credit_purchases(**store, credits, checkout, stripe_api, clock, credit_bundles, &outbox);
    // A paid (or refunded) bundle moves its credits in the transaction of the Stripe event that says so.
    processor.SetPaymentListener(
        [&credit_purchases](StoreTx& tx, const DecodedEvent& event) { return credit_purchases.OnStripeEvent(tx, event); });
    // A spend that leaves the balance under the customer's threshold starts its auto-purchase in its transaction.
    credits.SetSpendListener([&credit_purchases](StoreTx& tx, const CustomerId& customer, const CreditBalance& after) {
        return credit_purchases.OnSpent(tx, customer, after);
    });
    credit_purchases.SetWakeup([&worker] { worker.Notify(); });
    // A stored subscription renews or upgrades its credits in the same transaction.
    processor.SetSubscriptionListener([&credits](StoreTx& tx, const CustomerId& customer,
                                                 const std::optional<SubscriptionRecord>& before,
                                                 const SubscriptionRecord& after) {
        return credits.OnSubscriptionStored(tx, customer, before, after);
    });
    // Recorded usage: one durable commit for the writes that arrive together.
    WriteGroupCommitter commits(WriteGroupSink(**store), kWriteGroupMax, kWriteGroupQueueMax);
    if (Status seeded = flags.Seed(flag_seeds); !seeded.ok()) {
        Log("error", "cannot seed the catalog file's flags: " + seeded.error().message);
        return ExitCodeFor(seeded.error());
    }
    if (auto seeded = plans.SeedAndLoad(*catalog); !seeded.ok()) {
        Log("error", "cannot load the plan catalog from the database: " + seeded.error().message);
        return ExitCodeFor(seeded.error());
    } else if (!seeded->empty()) {
        Log("warn", "the catalog file (" + (o.catalog.empty() ? std::string("built-in") : o.catalog) + ") differs from "
                    "the database's catalog in " + std::to_string(seeded->size()) + " place(s); the database's is used. "
                    "`tally catalog diff` shows the differences, `tally catalog apply` applies the file");
    }
    // Owned here; /health reads it through the atomic, since I/O threads already run when it is set.
    std::unique_ptr<stripe::WebhookEndpointMonitor> endpoint_monitor;
    std::atomic<stripe::WebhookEndpointMonitor*> endpoint_monitor_view{nullptr};
    http::Api api(http::ApiDeps{**store, billing, processor, receiver, checkout, keys, idempotency, endpoints, clock,
                                http::StripeHealth{stripe_mode,
                                                   [&endpoint_monitor_view] {
                                                       auto* monitor = endpoint_monitor_view.load();
                                                       return monitor ? monitor->State() : std::string("unknown");
                                                   }},
                                kVersion, metrics, [&metrics] { return metrics.Render(); }, &members, &history,
                                &subscriptions, &plans, &usage, &flags, &commits, &credits, &credit_purchases});
    http::Server server(o.host, o.port, o.http_threads,
                        [&api](http::Request req, const http::Responder& respond) { api.Handle(std::move(req), respond); },
                        http::ServerOptions{o.http_idle_timeout_ms});
    metrics.AddGauge("tally_http_connections_open", "Open HTTP connections",
                     [&server] { return static_cast<double>(server.stats().connections_open.load()); });
    metrics.AddGauge("tally_http_accept_errors", "Failed accepts since start (out of file descriptors, ...)",
                     [&server] { return static_cast<double>(server.stats().accept_errors.load()); });
    metrics.AddGauge("tally_http_malformed_requests", "Requests refused before routing since start (400/413/414/431)",
                     [&server] { return static_cast<double>(server.stats().malformed_requests.load()); });
    metrics.AddGauge("tally_webhook_commit_backlog", "Webhook deliveries waiting for their durable commit",
                     [&receiver] { return static_cast<double>(receiver.backlog()); });
    metrics.AddGauge("tally_event_deliveries_in_flight", "Event deliveries to the app's endpoints sent, not yet answered",
                     [&dispatcher] { return static_cast<double>(dispatcher.in_flight()); });
    // Read at scrape time (a count over the pending deliveries' index); -1 if the store cannot answer.
    metrics.AddGauge("tally_event_deliveries_pending",
                     "Event deliveries not yet delivered or given up on (queued, retrying, in flight)", [&store] {
                         int64_t pending = -1;
                         (void)(*store)->Read([&](StoreTx& tx) -> Status {
                             TALLY_ASSIGN_OR_RETURN(pending, tx.events().CountPendingDeliveries());
                             return {};
                         });
                         return static_cast<double>(pending);
                     });
    worker.Start();
    if (o.event_delivery) {
        dispatcher.Start();
    } else {
        Log("info", "event delivery is off in this process (--no-event-delivery): events are recorded, not sent");
    }
    if (std::string err = server.Start(); !err.empty()) {
        Log("error", err);
        return 1;
    }
    // From here every exit, early ones included, stops in dependency order: no request in flight, then no
    // sandbox event, then the commits drained (their callbacks answer through the server), then the worker.
    bool stopped = false;
    const auto stop_all = [&](int drain_ms) {
        if (stopped) return;
        stopped = true;
        server.Stop(drain_ms);
        endpoint_monitor_view = nullptr;
        endpoint_monitor.reset();
        if (stripe_sandbox) stripe_sandbox->server->Stop(1000);
        commits.Stop();
        receiver.Stop();
        worker.Stop();
        dispatcher.Stop();
        sender.Stop();
    };
    struct StopGuard {
        const std::function<void()> stop;
        ~StopGuard() {
            try {
                stop();
            } catch (...) {  // NOLINT(bugprone-empty-catch): the process is exiting
            }
        }
    } stop_guard{[&] { stop_all(0); }};
    const std::string public_url =
        !o.public_url.empty() ? o.public_url
                              : "http://" + (o.host == "0.0.0.0" ? std::string("127.0.0.1") : o.host) + ":" +
                                    std::to_string(server.port());
    checkout.SetDefaults(CheckoutConfig{public_url + "/billing/return?checkout=success&session_id={CHECKOUT_SESSION_ID}",
                                        public_url + "/billing/return?checkout=cancel", public_url + "/billing/return"});
    if (stripe_sandbox) {
        // Register Tally's endpoint through the same client code that talks to real Stripe.
        const std::string host = o.host == "0.0.0.0" ? "127.0.0.1" : o.host;
        auto endpoint = client.Post("/v1/webhook_endpoints",
                                    {{"url", "http://" + host + ":" + std::to_string(server.port()) + "/webhooks/stripe"},
                                     {"enabled_events", boost::json::array{"*"}}});
        if (!endpoint.ok()) {
            Log("error", "cannot register the webhook endpoint with the sandbox: " + endpoint.error().message);
            return 1;
        }
        verifier.AddSecret(std::string(endpoint->body.at("secret").as_string()));
        const std::string endpoint_id(endpoint->body.at("id").as_string());
        endpoint_monitor = std::make_unique<stripe::WebhookEndpointMonitor>(client, endpoint_id, "",
                                                                            o.stripe_check_interval_ms);
        endpoint_monitor_view = endpoint_monitor.get();
        // Customers Tally creates in the sandbox share one test clock, so their time can be advanced.
        auto test_clock = client.Post("/v1/test_helpers/test_clocks",
                                      {{"frozen_time", std::to_string(clock.Now().unix_seconds())}, {"name", "tally"}});
        if (!test_clock.ok()) {
            Log("error", "cannot create the sandbox test clock: " + test_clock.error().message);
            return 1;
        }
        const std::string clock_id(test_clock->body.at("id").as_string());
        http_stripe_api.SetTestClock(clock_id);
        std::cout << "stripe sandbox test clock " << clock_id << " (customers Tally creates live on it; advance it with "
                  << "POST " << api_base << "/v1/test_helpers/test_clocks/" << clock_id << "/advance)" << std::endl;
        // The sandbox starts empty: push the catalog's products and prices now, so Checkout works out of the box.
        if (Status reset = plans.ResetStripeSync(); !reset.ok()) {
            Log("error", "cannot reset the plans' Stripe state: " + reset.error().message);
            return 1;
        }
        auto pushed = plans.SyncDue();
        if (!pushed.ok()) {
            Log("error", "cannot push the catalog to the sandbox: " + pushed.error().message);
            return 1;
        }
        Log("info", "stripe sandbox at " + api_base + " sends its events to this server (endpoint " + endpoint_id + ")");
    } else if (stripe_mode == "not_configured") {
        Log("warn", "Stripe is not configured (no STRIPE_SECRET_KEY, no --stripe-sandbox): webhooks are received and "
                    "applied; endpoints that call Stripe answer 503 stripe_not_configured");
    } else {
        if (!o.stripe_test_clock.empty()) http_stripe_api.SetTestClock(o.stripe_test_clock);
        endpoint_monitor = std::make_unique<stripe::WebhookEndpointMonitor>(client, "", public_url + "/webhooks/stripe",
                                                                            o.stripe_check_interval_ms);
        endpoint_monitor_view = endpoint_monitor.get();
        Log("info", "using Stripe (" + stripe_mode + " mode) at " + api_base + " with key " + client.RedactedKey());
    }
    Log("info", "tally " + std::string(kVersion) + " listening on http://" + o.host + ":" + std::to_string(server.port()) +
                    " (db " + DatabaseName(o.db) + ", catalog " + (o.catalog.empty() ? std::string("built-in") : o.catalog) + ", " +
                    std::to_string(billing.catalog().plans().size()) + " plans, stripe " + stripe_mode + ")");
    plans_view = &plans;  // from here the worker installs other nodes' changes and pushes what is due
    purchases_view = &credit_purchases;
    credits_view = &credits;
    std::cout << "tally listening on http://" << o.host << ":" << server.port() << std::endl;

    int sig = 0;
    sigwait(&signals, &sig);
    Log("info", std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + ", draining");
    stop_all(o.drain_ms);  // answers what is in flight (their commits are still running)
    Log("info", "stopped cleanly");
    return 0;
}

int PushCatalogCommand(const std::string& catalog_file, const std::string& secret_key, const std::string& api_base) {
    auto catalog = LoadCatalog(catalog_file);
    if (!catalog.ok()) {
        Log("error", "invalid catalog: " + catalog.error().message);
        return 2;
    }
    if (secret_key.empty()) {
        Log("error", "STRIPE_SECRET_KEY (or --stripe-secret-key) is required");
        return 2;
    }
    stripe::ClientConfig config;
    config.api_base = api_base.empty() ? stripe::kStripeApiBaseDefault : api_base;
    config.secret_key = secret_key;
    stripe::Client client(config);
    stripe::HttpStripeApi api(client);
    auto pushed = PushCatalog(*catalog, api);
    if (!pushed.ok()) {
        Log("error", pushed.error().message);
        return 1;
    }
    for (const auto& p : *pushed) {
        std::cout << p.lookup_key << " " << p.price_id << (p.created ? " created" : " exists") << "\n";
    }
    return 0;
}

}  // namespace tally::cli
