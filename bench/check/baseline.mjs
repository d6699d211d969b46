// The baseline, written the way a naive express app would do usage limits: the same routes and JSON shapes as
// Tally's (`POST /v1/customers`, `…/limit_overrides`, `POST /v1/check`, `POST /v1/usage/batch`,
// `GET /v1/customers/:id/usage`), with
//   - read-only checks answered from in-memory Maps (customer -> meter -> current, and its limit);
//   - `record: true` checks as one better-sqlite3 transaction each (read the counter, decide, update it, append the
//     event), WAL and synchronous=FULL, so the reply is sent after that transaction's fsync;
//   - batches handled event by event, one transaction (one fsync) per event of the batch.
// env: PORT (9093), DB (baseline.db), CATALOG (config/pricing.json), TALLY_ADMIN_KEY (the Bearer key to accept).
import express from 'express';
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

const port = Number(process.env.PORT ?? 9093);
const key = process.env.TALLY_ADMIN_KEY ?? '';
const catalog = JSON.parse(readFileSync(process.env.CATALOG ?? new URL('../../config/pricing.json', import.meta.url), 'utf8'));
const meters = catalog.meters;
const planLimits = catalog.plans.find((p) => p.id === catalog.default_plan).limits;

const db = new Database(process.env.DB ?? 'baseline.db');
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec(`
CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, external_id TEXT NOT NULL UNIQUE, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS limit_overrides (customer_id TEXT NOT NULL, meter TEXT NOT NULL, limit_value INTEGER,
  extra INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (customer_id, meter));
CREATE TABLE IF NOT EXISTS usage_counters (customer_id TEXT NOT NULL, meter TEXT NOT NULL, period_start INTEGER NOT NULL,
  value INTEGER NOT NULL, updated INTEGER NOT NULL, PRIMARY KEY (customer_id, meter, period_start));
CREATE TABLE IF NOT EXISTS usage_events (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL,
  meter TEXT NOT NULL, period_start INTEGER NOT NULL, action TEXT NOT NULL, value INTEGER NOT NULL,
  delta INTEGER NOT NULL, at INTEGER NOT NULL, recorded_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage_keys (key TEXT PRIMARY KEY, created INTEGER NOT NULL);`);

const q = {
  insertCustomer: db.prepare('INSERT INTO customers (id, external_id, created) VALUES (?, ?, ?)'),
  customerByExternal: db.prepare('SELECT id FROM customers WHERE external_id = ?'),
  putOverride: db.prepare(`INSERT INTO limit_overrides (customer_id, meter, limit_value, extra, reason, created)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (customer_id, meter) DO UPDATE SET limit_value = excluded.limit_value,
    extra = excluded.extra, reason = excluded.reason, created = excluded.created`),
  counter: db.prepare('SELECT value FROM usage_counters WHERE customer_id = ? AND meter = ? AND period_start = ?').pluck(),
  putCounter: db.prepare(`INSERT INTO usage_counters (customer_id, meter, period_start, value, updated) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (customer_id, meter, period_start) DO UPDATE SET value = excluded.value, updated = excluded.updated`),
  appendEvent: db.prepare(`INSERT INTO usage_events (customer_id, meter, period_start, action, value, delta, at, recorded_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
  claimKey: db.prepare('INSERT OR IGNORE INTO usage_keys (key, created) VALUES (?, ?)'),
};

// In memory: customer -> {limits: Map meter -> limit|null, current: Map meter -> {period, value}}.
const customers = new Map();
const now = () => Math.floor(Date.now() / 1000);
const monthStart = (t) => { const d = new Date(t * 1000); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000; };
const monthEnd = (t) => { const d = new Date(t * 1000); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000; };
const periodOf = (meter, t) => (meters[meter].kind === 'counter' ? monthStart(t) : 0);
const currentOf = (c, meter, period) => { const v = c.current.get(meter); return v && v.period === period ? v.value : 0; };

const fail = (res, status, code, message, param) =>
  res.status(status).json({ error: { type: 'invalid_request_error', code, message, param } });

// As Tally answers: `current` as the meter is (after recording, if recorded); a read-only check that is allowed
// reports in `remaining`/`overage` what recording |pending| more would leave.
function outcome(id, meter, current, limit, allowed, recorded, t, pending = 0) {
  const m = meters[meter];
  const remaining = limit === null ? null : Math.max(0, limit - current - pending);
  const overage = limit === null ? 0 : Math.max(0, current + pending - limit);
  return {
    meter, kind: m.kind, mode: m.mode, unit: m.unit, current, limit, remaining,
    percent: limit === null ? null : limit > 0 ? Math.floor((current * 100) / limit) : current > 0 ? 100 : 0,
    overage, period_start: m.kind === 'counter' ? monthStart(t) : null, resets_at: m.kind === 'counter' ? monthEnd(t) : null,
    override: null, object: 'usage_check', customer: id, allowed,
    reason: allowed ? (overage > 0 ? 'overage' : null) : 'limit_exceeded', recorded,
  };
}

// One transaction per recorded event: read, decide, write the counter, append to the ledger.
const recordTx = db.transaction((id, meter, period, amount, limit, hard, t) => {
  const current = q.counter.get(id, meter, period) ?? 0;
  const after = current + amount;
  if (hard && limit !== null && after > limit) return { allowed: false, current };
  q.putCounter.run(id, meter, period, after, t);
  q.appendEvent.run(id, meter, period, 'increment', amount, amount, t, t);
  return { allowed: true, current: after };
});
// One transaction per event of a batch, deduplicated by its key.
const usageTx = db.transaction((id, meter, period, value, set, idemKey, t) => {
  if (q.claimKey.run(idemKey, t).changes === 0) return { replayed: true, current: q.counter.get(id, meter, period) ?? 0 };
  const current = q.counter.get(id, meter, period) ?? 0;
  const after = set ? value : current + value;
  q.putCounter.run(id, meter, period, after, t);
  q.appendEvent.run(id, meter, period, set ? 'set' : 'increment', value, after - current, t, t);
  return { replayed: false, current: after };
});

const app = express();
app.use(express.json({ limit: '1mb' }));
app.use('/v1', (req, res, next) =>
  req.headers.authorization === `Bearer ${key}` ? next() : fail(res, 401, 'unauthorized', 'invalid API key'));

app.post('/v1/customers', (req, res) => {
  const ext = req.body?.external_id;
  if (typeof ext !== 'string' || ext === '') return fail(res, 400, 'parameter_missing', 'external_id is required', 'external_id');
  const existing = q.customerByExternal.get(ext);
  if (existing) return res.status(200).json({ id: existing.id, object: 'customer', external_id: ext });
  const id = `cust_${randomBytes(12).toString('hex')}`;
  q.insertCustomer.run(id, ext, now());
  customers.set(id, { limits: new Map(Object.entries(planLimits)), current: new Map() });
  res.status(201).json({ id, object: 'customer', external_id: ext, plan: catalog.default_plan });
});

app.post('/v1/customers/:id/limit_overrides', (req, res) => {
  const c = customers.get(req.params.id);
  if (!c) return fail(res, 404, 'resource_missing', 'no such customer', 'id');
  const { meter, limit = null, extra = 0, reason } = req.body ?? {};
  if (!meters[meter]) return fail(res, 404, 'resource_missing', 'no such meter', 'meter');
  if (typeof reason !== 'string' || reason === '') return fail(res, 400, 'parameter_missing', 'reason is required', 'reason');
  q.putOverride.run(req.params.id, meter, limit, extra, reason, now());
  const base = limit ?? planLimits[meter] ?? null;
  c.limits.set(meter, base === null ? null : base + extra);
  res.json({ object: 'limit_override', customer: req.params.id, meter, limit, extra, reason });
});

app.post('/v1/check', (req, res) => {
  const { customer, meter, amount = 1, record = false } = req.body ?? {};
  const c = customers.get(customer);
  if (!c) return fail(res, 404, 'resource_missing', 'no such customer', 'customer');
  if (!meters[meter]) return fail(res, 404, 'resource_missing', 'no such meter', 'meter');
  if (!Number.isSafeInteger(amount) || amount < 1) return fail(res, 400, 'parameter_invalid', 'amount must be between 1 and 2^53', 'amount');
  const t = now();
  const period = periodOf(meter, t);
  const limit = c.limits.get(meter) ?? null;
  const hard = meters[meter].mode === 'hard';
  if (!record) {
    const current = currentOf(c, meter, period);
    const allowed = !hard || limit === null || current + amount <= limit;
    return res.json(outcome(customer, meter, current, limit, allowed, false, t, allowed ? amount : 0));
  }
  const r = recordTx(customer, meter, period, amount, limit, hard, t);
  if (r.allowed) c.current.set(meter, { period, value: r.current });
  res.json(outcome(customer, meter, r.current, limit, r.allowed, r.allowed, t));
});

app.post('/v1/usage/batch', (req, res) => {
  const events = req.body?.events;
  if (!Array.isArray(events) || events.length === 0) return fail(res, 400, 'parameter_invalid', 'events must be a non-empty array', 'events');
  if (events.length > 1000) return fail(res, 400, 'parameter_invalid', 'at most 1000 events per batch', 'events');
  const t = now();
  let recorded = 0;
  let rejected = 0;
  const data = events.map((e, index) => {
    const c = customers.get(e?.customer);
    const bad = !c ? ['resource_missing', 'no such customer', 'customer']
      : !meters[e.meter] ? ['resource_missing', 'no such meter', 'meter']
        : !Number.isSafeInteger(e.value) ? ['parameter_invalid', 'value must be an integer', 'value']
          : typeof e.idempotency_key !== 'string' || e.idempotency_key === '' ? ['parameter_missing', 'idempotency_key is required', 'idempotency_key']
            : null;
    if (bad) {
      rejected++;
      return { index, status: 'rejected', error: { type: 'invalid_request_error', code: bad[0], message: bad[1], param: bad[2] } };
    }
    const period = periodOf(e.meter, t);
    const r = usageTx(e.customer, e.meter, period, e.value, e.action === 'set', `usage:${e.idempotency_key}`, t);
    c.current.set(e.meter, { period, value: r.current });
    recorded++;
    const record = outcome(e.customer, e.meter, r.current, c.limits.get(e.meter) ?? null, true, true, t);
    return { index, status: r.replayed ? 'replayed' : 'recorded', record: { ...record, object: 'usage_record', action: e.action ?? 'increment', value: e.value } };
  });
  res.json({ object: 'usage_batch', recorded, rejected, data });
});

app.get('/v1/customers/:id/usage', (req, res) => {
  const c = customers.get(req.params.id);
  if (!c) return fail(res, 404, 'resource_missing', 'no such customer', 'id');
  const t = now();
  const list = Object.keys(meters).map((m) => {
    const o = outcome(req.params.id, m, q.counter.get(req.params.id, m, periodOf(m, t)) ?? 0, c.limits.get(m) ?? null, true, false, t);
    return { meter: o.meter, kind: o.kind, mode: o.mode, unit: o.unit, current: o.current, limit: o.limit, remaining: o.remaining,
      percent: o.percent, overage: o.overage, period_start: o.period_start, resets_at: o.resets_at };
  });
  res.json({ object: 'usage_summary', customer: req.params.id, plan: catalog.default_plan, subscription: null, meters: list });
});

app.get('/health', (req, res) => res.json({ status: 'ok' }));
app.listen(port, '127.0.0.1', () => console.log(`baseline listening on http://127.0.0.1:${port}`));
