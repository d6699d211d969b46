#include "adapters/sqlite/migrations.hpp"

#include <string>

namespace tally::sqlite {
namespace {

struct Migration {
    int version;
    const char* sql;
};

// Forward-only: never edit a migration that has shipped; add a new one.
constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE customers (
  id TEXT PRIMARY KEY,
  external_id TEXT NOT NULL DEFAULT '',
  email TEXT NOT NULL DEFAULT '',
  name TEXT NOT NULL DEFAULT '',
  stripe_customer_id TEXT,
  role TEXT NOT NULL,
  plan_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  stripe_deleted INTEGER NOT NULL DEFAULT 0,
  stamp_created INTEGER, stamp_rank INTEGER, stamp_event_id TEXT, stamp_terminal INTEGER,
  override_role TEXT, override_reason TEXT, override_expires_at INTEGER, override_created_at INTEGER,
  role_check_at INTEGER
);
CREATE UNIQUE INDEX customers_external_id ON customers(external_id) WHERE external_id <> '';
CREATE UNIQUE INDEX customers_stripe_customer_id ON customers(stripe_customer_id) WHERE stripe_customer_id IS NOT NULL;
CREATE INDEX customers_role_check_at ON customers(role_check_at) WHERE role_check_at IS NOT NULL;

CREATE TABLE subscriptions (
  id TEXT PRIMARY KEY,
  stripe_customer_id TEXT NOT NULL,
  status TEXT NOT NULL,
  price_id TEXT NOT NULL DEFAULT '',
  price_lookup_key TEXT NOT NULL DEFAULT '',
  plan_id TEXT NOT NULL DEFAULT '',
  interval_unit TEXT NOT NULL DEFAULT 'month',
  interval_count INTEGER NOT NULL DEFAULT 1,
  unit_amount INTEGER NOT NULL DEFAULT 0,
  currency TEXT NOT NULL DEFAULT '',
  quantity INTEGER NOT NULL DEFAULT 1,
  current_period_start INTEGER NOT NULL DEFAULT 0,
  current_period_end INTEGER NOT NULL DEFAULT 0,
  cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
  trial_end INTEGER,
  canceled_at INTEGER,
  created INTEGER NOT NULL DEFAULT 0,
  stamp_created INTEGER NOT NULL, stamp_rank INTEGER NOT NULL, stamp_event_id TEXT NOT NULL, stamp_terminal INTEGER NOT NULL
);
CREATE INDEX subscriptions_stripe_customer_id ON subscriptions(stripe_customer_id);

CREATE TABLE invoices (
  id TEXT PRIMARY KEY,
  stripe_customer_id TEXT NOT NULL,
  subscription_id TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT '',
  amount_due INTEGER NOT NULL DEFAULT 0,
  amount_paid INTEGER NOT NULL DEFAULT 0,
  currency TEXT NOT NULL DEFAULT '',
  stamp_created INTEGER NOT NULL, stamp_rank INTEGER NOT NULL, stamp_event_id TEXT NOT NULL, stamp_terminal INTEGER NOT NULL
);

CREATE TABLE payment_attempts (
  event_id TEXT PRIMARY KEY,
  invoice_id TEXT NOT NULL,
  subscription_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  succeeded INTEGER NOT NULL
);
CREATE INDEX payment_attempts_subscription_id ON payment_attempts(subscription_id);

CREATE TABLE payments (
  id TEXT PRIMARY KEY,
  object TEXT NOT NULL,
  stripe_customer_id TEXT NOT NULL DEFAULT '',
  amount INTEGER NOT NULL DEFAULT 0,
  amount_refunded INTEGER NOT NULL DEFAULT 0,
  currency TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT '',
  stamp_created INTEGER NOT NULL, stamp_rank INTEGER NOT NULL, stamp_event_id TEXT NOT NULL, stamp_terminal INTEGER NOT NULL
);

CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  customer_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  before TEXT NOT NULL DEFAULT '',
  after TEXT NOT NULL DEFAULT '',
  cause TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_customer_id ON audit_log(customer_id, id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- Processing state and the raw payload live apart: state changes rewrite a narrow row, never the blob.
-- A payload's rowid is its event's rowid, so it needs no index of its own.
CREATE TABLE webhook_payloads (
  event_rowid INTEGER PRIMARY KEY,
  payload BLOB NOT NULL
);
CREATE TABLE webhook_events (
  id TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  created INTEGER NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  outcome TEXT NOT NULL DEFAULT '',
  received_at INTEGER NOT NULL,
  next_attempt_at INTEGER,
  processed_at INTEGER
);
CREATE INDEX webhook_events_due ON webhook_events(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
-- Failed events are few and listed by admins; other listings walk rowids newest first.
CREATE INDEX webhook_events_failed ON webhook_events(received_at) WHERE status = 'failed';

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  scope TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE TABLE idempotency_keys (
  key TEXT PRIMARY KEY,
  request_hash TEXT NOT NULL,
  status INTEGER NOT NULL,
  response_body TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
)sql"},
    {2, R"sql(
-- API keys get names, a scope other than admin, revocation and a coarse last-use time.
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
-- Idempotency keys belong to the API key that used them, and are held while their request runs.
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
  api_key_id TEXT NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  state TEXT NOT NULL,            -- in_flight | done
  status INTEGER NOT NULL DEFAULT 0,
  response_body TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  locked_until INTEGER,           -- in_flight: when a crashed holder's lock lapses
  PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys(created_at);
)sql"},
    {3, R"sql(
-- The last grace period end Tally told the app about (customer.grace_period_started/ended).
ALTER TABLE customers ADD COLUMN grace_ends_at INTEGER;
-- Tally's own events (the outbox), written in the transaction of the change they describe.
CREATE TABLE app_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  object_id TEXT NOT NULL,
  object_sequence INTEGER NOT NULL,
  customer_id TEXT NOT NULL DEFAULT '',
  payload TEXT NOT NULL
);
CREATE INDEX app_events_created ON app_events(created_ms);
CREATE INDEX app_events_customer ON app_events(customer_id, seq) WHERE customer_id <> '';
CREATE INDEX app_events_type ON app_events(type, seq);
-- Per-object sequence numbers outlive pruned events, so they never restart.
CREATE TABLE app_event_objects (
  object_id TEXT PRIMARY KEY,
  last_sequence INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE webhook_endpoints (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  enabled_events TEXT NOT NULL,     -- event types joined with ','
  disabled INTEGER NOT NULL DEFAULT 0,
  disabled_reason TEXT NOT NULL DEFAULT '',
  secret TEXT NOT NULL,
  previous_secret TEXT NOT NULL DEFAULT '',
  previous_secret_expires_ms INTEGER,
  failing_since_ms INTEGER,
  created_ms INTEGER NOT NULL
);
CREATE TABLE event_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  event_seq INTEGER NOT NULL,
  event_id TEXT NOT NULL,
  endpoint_id TEXT NOT NULL,
  object_id TEXT NOT NULL,
  state TEXT NOT NULL,              -- pending | delivered | failed
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL,
  lease_until_ms INTEGER,
  event_created_ms INTEGER NOT NULL,
  delivered_ms INTEGER,
  last_status INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX event_deliveries_due ON event_deliveries(endpoint_id, next_attempt_ms) WHERE state = 'pending';
CREATE INDEX event_deliveries_object ON event_deliveries(endpoint_id, object_id, event_seq) WHERE state = 'pending';
CREATE INDEX event_deliveries_event ON event_deliveries(event_seq);
CREATE TABLE delivery_attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  delivery_id INTEGER NOT NULL,
  endpoint_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  at_ms INTEGER NOT NULL,
  status_code INTEGER NOT NULL,
  latency_ms INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX delivery_attempts_endpoint ON delivery_attempts(endpoint_id, id);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id);
)sql"},
    {4, R"sql(
-- Each delivery names the one before it in its (endpoint, object) line, so a claim checks one row by its key. The
-- partial index over pending deliveries by object, which that check used, lost an entry at every delivery, on a
-- page of its own: most of what a delivery wrote to the WAL. This index is written once, when a delivery is made.
ALTER TABLE event_deliveries ADD COLUMN prev_delivery_id INTEGER;
CREATE INDEX event_deliveries_line ON event_deliveries(endpoint_id, object_id, id);
UPDATE event_deliveries SET prev_delivery_id = (
  SELECT MAX(p.id) FROM event_deliveries p
  WHERE p.endpoint_id = event_deliveries.endpoint_id AND p.object_id = event_deliveries.object_id
    AND p.id < event_deliveries.id);
DROP INDEX event_deliveries_object;
)sql"},
    {5, R"sql(
-- The customer's profile (auth provider, company, verified email, Stripe-style metadata as JSON text), organizations
-- and their members, and customer sessions (browser tokens, stored hashed).
ALTER TABLE customers ADD COLUMN type TEXT NOT NULL DEFAULT 'individual';
ALTER TABLE customers ADD COLUMN auth_provider TEXT NOT NULL DEFAULT '';
ALTER TABLE customers ADD COLUMN company TEXT NOT NULL DEFAULT '';
ALTER TABLE customers ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE customers ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE customers ADD COLUMN stripe_sync_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX customers_created ON customers(created_at, id);
CREATE INDEX customers_stripe_sync_pending ON customers(id) WHERE stripe_sync_pending <> 0;
CREATE TABLE customer_members (
  customer_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  email TEXT NOT NULL DEFAULT '',
  role TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (customer_id, user_id)
);
CREATE INDEX customer_members_user ON customer_members(user_id);
CREATE TABLE customer_sessions (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  customer_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX customer_sessions_expires_at ON customer_sessions(expires_at);
)sql"},
    {6, R"sql(
-- Billing history (seeds 000/001): what an invoice and a payment need for lists and CSV exports.
ALTER TABLE invoices ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN attempt_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN next_payment_attempt INTEGER;
ALTER TABLE invoices ADD COLUMN hosted_invoice_url TEXT NOT NULL DEFAULT '';
ALTER TABLE invoices ADD COLUMN number TEXT NOT NULL DEFAULT '';
CREATE INDEX invoices_created ON invoices(created, id);
CREATE INDEX invoices_customer_created ON invoices(stripe_customer_id, created, id);
ALTER TABLE payments ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN failure_message TEXT NOT NULL DEFAULT '';
CREATE INDEX payments_created ON payments(created, id);
)sql"},
    {7, R"sql(
-- Subscriptions through Tally's API: a paused collection, and the admin list (newest first).
ALTER TABLE subscriptions ADD COLUMN pause_collection TEXT NOT NULL DEFAULT '';
CREATE INDEX subscriptions_created ON subscriptions(created, id);
)sql"},
    {8, R"sql(
-- Subscription schedules (a change at period end) and the pending change they put on a subscription.
CREATE TABLE subscription_schedules (
  id TEXT PRIMARY KEY,
  subscription_id TEXT NOT NULL,
  status TEXT NOT NULL,
  phases TEXT NOT NULL DEFAULT '',
  created INTEGER NOT NULL,
  stamp_created INTEGER NOT NULL,
  stamp_rank INTEGER NOT NULL,
  stamp_event_id TEXT NOT NULL,
  stamp_terminal INTEGER NOT NULL
);
CREATE INDEX subscription_schedules_subscription ON subscription_schedules(subscription_id, created, id);
ALTER TABLE subscriptions ADD COLUMN pending_schedule_id TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN pending_price_id TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN pending_plan_id TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN pending_quantity INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN pending_at INTEGER;
CREATE TABLE stripe_prices (id TEXT PRIMARY KEY, lookup_key TEXT NOT NULL);
)sql"},
    {9, R"sql(
-- Plans at runtime: the catalog lives in the database (seeded from the catalog file), each plan's prices are
-- immutable rows (a new amount is a new price), and each plan's push to Stripe is tracked.
CREATE TABLE catalog_settings (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  roles TEXT NOT NULL,
  default_plan TEXT NOT NULL,
  version INTEGER NOT NULL
);
CREATE TABLE plans (
  id TEXT PRIMARY KEY,
  position INTEGER NOT NULL,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  credits_monthly INTEGER NOT NULL,
  archived_at INTEGER,
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  stripe_sync_pending INTEGER NOT NULL,
  stripe_sync_error TEXT NOT NULL DEFAULT '',
  stripe_sync_attempts INTEGER NOT NULL DEFAULT 0,
  next_sync_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX plans_sync_due ON plans(stripe_sync_pending, next_sync_at);
CREATE TABLE plan_entitlements (
  plan_id TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('feature', 'limit')),
  name TEXT NOT NULL,
  value INTEGER NOT NULL,
  PRIMARY KEY (plan_id, kind, name)
);
CREATE TABLE plan_prices (
  id TEXT PRIMARY KEY,
  plan_id TEXT NOT NULL,
  lookup_key TEXT NOT NULL,
  interval_unit TEXT NOT NULL,
  interval_count INTEGER NOT NULL,
  unit_amount INTEGER NOT NULL,
  currency TEXT NOT NULL,
  stripe_price_id TEXT NOT NULL DEFAULT '',
  active INTEGER NOT NULL,
  created INTEGER NOT NULL,
  seq INTEGER NOT NULL
);
CREATE INDEX plan_prices_plan ON plan_prices(plan_id, seq);
-- Prices are immutable: only active, the Stripe id and the lookup key (handed over to a newer price) may change.
CREATE TRIGGER plan_prices_immutable BEFORE UPDATE OF plan_id, interval_unit, interval_count, unit_amount, currency
ON plan_prices BEGIN SELECT RAISE(ABORT, 'plan prices are immutable'); END;
)sql"},
    {10, R"sql(
-- Usage limits: how each limit is metered, the current value of every meter (gauges in period 0, counters per
-- billing period), the append-only ledger of recorded usage, and the warning thresholds already announced.
ALTER TABLE catalog_settings ADD COLUMN meters TEXT NOT NULL DEFAULT '';
CREATE TABLE usage_counters (
  customer_id TEXT NOT NULL,
  meter TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  value INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  PRIMARY KEY (customer_id, meter, period_start)
);
CREATE TABLE usage_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  customer_id TEXT NOT NULL,
  meter TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  action TEXT NOT NULL,
  value INTEGER NOT NULL,
  delta INTEGER NOT NULL,
  at INTEGER NOT NULL,
  recorded_at INTEGER NOT NULL
);
CREATE INDEX usage_events_customer ON usage_events(customer_id, meter, at);
CREATE TRIGGER usage_events_no_update BEFORE UPDATE ON usage_events BEGIN SELECT RAISE(ABORT, 'usage_events is append-only'); END;
CREATE TRIGGER usage_events_no_delete BEFORE DELETE ON usage_events BEGIN SELECT RAISE(ABORT, 'usage_events is append-only'); END;
CREATE TABLE usage_thresholds (
  customer_id TEXT NOT NULL,
  meter TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  threshold INTEGER NOT NULL,
  at INTEGER NOT NULL,
  PRIMARY KEY (customer_id, meter, period_start, threshold)
);
CREATE TABLE limit_overrides (
  customer_id TEXT NOT NULL,
  meter TEXT NOT NULL,
  limit_value INTEGER,
  extra INTEGER NOT NULL DEFAULT 0,
  expires_at INTEGER,
  reason TEXT NOT NULL,
  created INTEGER NOT NULL,
  actor TEXT NOT NULL,
  PRIMARY KEY (customer_id, meter)
);
)sql"},
    {11, R"sql(
-- Rollout flags: each flag's settings (seeded from the catalog file, changed by admins) and per-customer overrides;
-- unlimited (null) plan limits.
CREATE TABLE flags (
  name TEXT PRIMARY KEY,
  description TEXT NOT NULL,
  enabled INTEGER NOT NULL,
  rollout_percentage INTEGER NOT NULL CHECK (rollout_percentage BETWEEN 0 AND 100),
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  updated_by TEXT NOT NULL
);
CREATE TABLE flag_overrides (
  flag TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  enabled INTEGER NOT NULL,
  created INTEGER NOT NULL,
  actor TEXT NOT NULL,
  PRIMARY KEY (flag, customer_id)
);
CREATE INDEX flag_overrides_customer ON flag_overrides(customer_id);
-- A limit may be null: unlimited. SQLite cannot drop a NOT NULL, so the table is rebuilt
-- (sqlite.org/lang_altertable.html#otheralter).
CREATE TABLE plan_entitlements_v11 (
  plan_id TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('feature', 'limit')),
  name TEXT NOT NULL,
  value INTEGER CHECK (value IS NOT NULL OR kind = 'limit'),
  PRIMARY KEY (plan_id, kind, name)
);
INSERT INTO plan_entitlements_v11(plan_id, kind, name, value) SELECT plan_id, kind, name, value FROM plan_entitlements;
DROP TABLE plan_entitlements;
ALTER TABLE plan_entitlements_v11 RENAME TO plan_entitlements;
)sql"},
    {12, R"sql(
-- Credits: grants (balances), transfers (client ids, the idempotency keys) and append-only entries.
CREATE TABLE credit_grants (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('subscription', 'bundle', 'promotional')),
  amount INTEGER NOT NULL CHECK (amount > 0),
  remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
  priority INTEGER NOT NULL,
  expires_at INTEGER,
  transfer_id TEXT NOT NULL,
  reason TEXT NOT NULL,
  created INTEGER NOT NULL
);
CREATE INDEX credit_grants_customer ON credit_grants(customer_id, created);
CREATE TABLE credit_transfers (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('grant', 'deduct', 'reserve', 'capture', 'release', 'reverse', 'expire')),
  amount INTEGER NOT NULL,
  action TEXT NOT NULL,
  metadata TEXT NOT NULL,
  request TEXT NOT NULL,
  balance_subscription INTEGER NOT NULL,
  balance_bundle INTEGER NOT NULL,
  balance_promotional INTEGER NOT NULL,
  created INTEGER NOT NULL,
  actor TEXT NOT NULL,
  reference TEXT NOT NULL,
  seq INTEGER NOT NULL UNIQUE  -- commit order, for listing (several transfers share a second)
);
CREATE INDEX credit_transfers_customer ON credit_transfers(customer_id, created, seq);
-- Holds on credits: a row per reservation, its status moved once from pending (the credits move by transfers).
CREATE TABLE credit_reservations (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  amount INTEGER NOT NULL CHECK (amount > 0),
  expires_at INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'captured', 'released', 'expired')),
  captured INTEGER,
  settled_at INTEGER,
  metadata TEXT NOT NULL,
  created INTEGER NOT NULL
);
CREATE INDEX credit_reservations_pending ON credit_reservations(customer_id, status);
-- A customer's in-app notifications (credits' thresholds, renewals), and the kinds each customer turned off.
CREATE TABLE notifications (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  message TEXT NOT NULL,
  object TEXT NOT NULL,
  created INTEGER NOT NULL,
  dismissed_at INTEGER,
  seq INTEGER NOT NULL UNIQUE
);
CREATE INDEX notifications_customer ON notifications(customer_id, seq);
CREATE TABLE notification_preferences (
  customer_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  PRIMARY KEY (customer_id, kind)
);
CREATE TABLE credit_entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  transfer_id TEXT NOT NULL,
  grant_id TEXT NOT NULL,
  amount INTEGER NOT NULL,
  created INTEGER NOT NULL
);
CREATE INDEX credit_entries_transfer ON credit_entries(transfer_id);
CREATE INDEX credit_entries_grant ON credit_entries(grant_id);
CREATE TRIGGER credit_transfers_no_update BEFORE UPDATE ON credit_transfers BEGIN SELECT RAISE(ABORT, 'credit_transfers is append-only'); END;
CREATE TRIGGER credit_transfers_no_delete BEFORE DELETE ON credit_transfers BEGIN SELECT RAISE(ABORT, 'credit_transfers is append-only'); END;
CREATE TRIGGER credit_entries_no_update BEFORE UPDATE ON credit_entries BEGIN SELECT RAISE(ABORT, 'credit_entries is append-only'); END;
CREATE TRIGGER credit_entries_no_delete BEFORE DELETE ON credit_entries BEGIN SELECT RAISE(ABORT, 'credit_entries is append-only'); END;
)sql"},
    {13, R"sql(
-- Credit bundles bought (off-session, through Checkout or automatically), auto-purchase settings, and the refund
-- transfer kind. SQLite cannot alter a
-- CHECK constraint, so credit_transfers is rebuilt as its documentation says (ALTER TABLE, "other kinds of table
-- schema changes"): a new table, the rows copied, the old one dropped, the new one renamed, its index and triggers
-- made again. DROP TABLE fires no DELETE trigger.
CREATE TABLE credit_transfers_v13 (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('grant', 'deduct', 'reserve', 'capture', 'release', 'reverse', 'expire',
                                     'refund')),
  amount INTEGER NOT NULL,
  action TEXT NOT NULL,
  metadata TEXT NOT NULL,
  request TEXT NOT NULL,
  balance_subscription INTEGER NOT NULL,
  balance_bundle INTEGER NOT NULL,
  balance_promotional INTEGER NOT NULL,
  created INTEGER NOT NULL,
  actor TEXT NOT NULL,
  reference TEXT NOT NULL,
  seq INTEGER NOT NULL UNIQUE
);
INSERT INTO credit_transfers_v13 (id, customer_id, kind, amount, action, metadata, request, balance_subscription,
                                  balance_bundle, balance_promotional, created, actor, reference, seq)
  SELECT id, customer_id, kind, amount, action, metadata, request, balance_subscription, balance_bundle,
         balance_promotional, created, actor, reference, seq FROM credit_transfers;
DROP TABLE credit_transfers;
ALTER TABLE credit_transfers_v13 RENAME TO credit_transfers;
CREATE INDEX credit_transfers_customer ON credit_transfers(customer_id, created, seq);
CREATE TRIGGER credit_transfers_no_update BEFORE UPDATE ON credit_transfers BEGIN SELECT RAISE(ABORT, 'credit_transfers is append-only'); END;
CREATE TRIGGER credit_transfers_no_delete BEFORE DELETE ON credit_transfers BEGIN SELECT RAISE(ABORT, 'credit_transfers is append-only'); END;
CREATE TABLE credit_purchases (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  bundle TEXT NOT NULL,
  credits INTEGER NOT NULL CHECK (credits > 0),
  amount INTEGER NOT NULL CHECK (amount > 0),
  currency TEXT NOT NULL,
  expires_in_days INTEGER,
  source TEXT NOT NULL CHECK (source IN ('api', 'checkout', 'auto')),
  status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
  payment_intent TEXT NOT NULL,
  checkout_session TEXT NOT NULL,
  checkout_url TEXT NOT NULL,
  grant_id TEXT NOT NULL,
  failure_code TEXT NOT NULL,
  failure_message TEXT NOT NULL,
  amount_refunded INTEGER NOT NULL CHECK (amount_refunded >= 0 AND amount_refunded <= amount),
  credits_refunded INTEGER NOT NULL CHECK (credits_refunded >= 0),
  credits_refund_spent INTEGER NOT NULL CHECK (credits_refund_spent >= 0 AND credits_refunded + credits_refund_spent <= credits),
  request TEXT NOT NULL,
  actor TEXT NOT NULL,
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL
);
CREATE INDEX credit_purchases_customer ON credit_purchases(customer_id, created);
CREATE INDEX credit_purchases_payment_intent ON credit_purchases(payment_intent) WHERE payment_intent <> '';
-- Per customer: buy a bundle when the balance falls under a threshold; the purchase in flight and its retries.
CREATE TABLE credit_auto_purchase (
  customer_id TEXT PRIMARY KEY,
  enabled INTEGER NOT NULL,
  paused INTEGER NOT NULL,
  threshold INTEGER NOT NULL CHECK (threshold >= 0),
  bundle TEXT NOT NULL,
  max_per_month INTEGER NOT NULL CHECK (max_per_month >= 1),
  failures INTEGER NOT NULL,
  disabled_reason TEXT NOT NULL,
  pending_purchase TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  next_attempt_at INTEGER,
  updated INTEGER NOT NULL,
  actor TEXT NOT NULL
);
CREATE INDEX credit_auto_purchase_due ON credit_auto_purchase(next_attempt_at) WHERE pending_purchase <> '';
)sql"},
    {14, R"sql(
-- Usage events carry the idempotency key they were recorded under (scoped to the API key) and what they left: the
-- meter's value, the limit in force and the counter period's end. A replay of the key is answered from its event,
-- so the key is checked and recorded with the event in one row, in one index, for as long as the event exists.
ALTER TABLE usage_events ADD COLUMN api_key_id TEXT;
ALTER TABLE usage_events ADD COLUMN idempotency_key TEXT;
ALTER TABLE usage_events ADD COLUMN timestamp_given INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN current INTEGER;
ALTER TABLE usage_events ADD COLUMN limit_value INTEGER;
ALTER TABLE usage_events ADD COLUMN period_end INTEGER;
CREATE UNIQUE INDEX usage_events_idempotency ON usage_events(api_key_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
-- Keys of usage events recorded before: moved out of idempotency_keys (as "usage:<key>") with their stored
-- responses, replayed from there until pruned with the other keys after their retention.
CREATE TABLE usage_legacy_keys (
  api_key_id TEXT NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  response_body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (api_key_id, key)
);
INSERT INTO usage_legacy_keys (api_key_id, key, request_hash, response_body, created_at)
  SELECT api_key_id, substr(key, 7), request_hash, response_body, created_at FROM idempotency_keys
  WHERE substr(key, 1, 6) = 'usage:' AND state = 'done';
DELETE FROM idempotency_keys WHERE substr(key, 1, 6) = 'usage:';
)sql"},
    {15, R"sql(
-- The expiry sweep's work: pending reservations and grants with credits left, by when they lapse.
CREATE INDEX credit_reservations_lapsing ON credit_reservations(expires_at) WHERE status = 'pending';
CREATE INDEX credit_grants_lapsing ON credit_grants(expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;
)sql"},
    {16, R"sql(
-- No query reads entries by grant (a grant's balance is its own row; verify reads them all): the index only cost
-- every deduction a page write.
DROP INDEX credit_entries_grant;
)sql"},
};

Status Exec(sqlite3* db, const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errmsg(db);
        sqlite3_free(err);
        return Unavailable("migration failed: " + msg);
    }
    return {};
}

}  // namespace

int LatestSchemaVersion() { return kMigrations[std::size(kMigrations) - 1].version; }

Result<int> Migrate(sqlite3* db, int up_to_version) {
    TALLY_TRY(Exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"));
    int current = 0;
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &stmt, nullptr);
    if (sqlite3_step(stmt) == SQLITE_ROW) current = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    if (current > LatestSchemaVersion()) {
        return Conflict("database schema version " + std::to_string(current) + " is newer than this build (" +
                        std::to_string(LatestSchemaVersion()) + ")");
    }
    int applied = 0;
    for (const auto& m : kMigrations) {
        if (m.version <= current || m.version > up_to_version) continue;
        TALLY_TRY(Exec(db, "BEGIN IMMEDIATE"));
        Status s = Exec(db, m.sql);
        if (s.ok()) {
            const std::string record = "INSERT INTO schema_migrations(version, applied_at) VALUES (" +
                                       std::to_string(m.version) + ", strftime('%s','now'))";
            s = Exec(db, record.c_str());
        }
        if (!s.ok()) {
            (void)Exec(db, "ROLLBACK");
            return s.error();
        }
        TALLY_TRY(Exec(db, "COMMIT"));
        ++applied;
    }
    return applied;
}

}  // namespace tally::sqlite
