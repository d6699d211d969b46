// The baseline for bench/credits, written the way seed 003 sketches credit deduction: an express app with one
// better-sqlite3 transaction per deduction (WAL, synchronous=FULL, so the reply follows that transaction's fsync)
// that checks the transfer id, reads the customer's grants in the spend order, takes the amount from them and
// writes the transaction row. The same routes and shapes as Tally's for what the benchmark calls:
// POST /v1/customers {external_id}, POST /v1/credits/grants {customer, id, amount, type}, POST /v1/credits/deduct
// {customer, amount, id}, GET /v1/customers/:id/credits.
// env: PORT (9094), DB (baseline.db), TALLY_ADMIN_KEY (the Bearer key to accept).
// express and better-sqlite3 come from bench/check's node_modules (one install for both benchmarks).
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

const require = createRequire(new URL('../check/package.json', import.meta.url));
const express = require('express');
const Database = require('better-sqlite3');

const port = Number(process.env.PORT ?? 9094);
const key = process.env.TALLY_ADMIN_KEY ?? '';
const db = new Database(process.env.DB ?? 'baseline.db');
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec(`
CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, external_id TEXT NOT NULL UNIQUE, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS grants (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, type TEXT NOT NULL,
  amount INTEGER NOT NULL, remaining INTEGER NOT NULL, priority INTEGER NOT NULL, expires_at INTEGER,
  created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS grants_customer ON grants(customer_id);
CREATE TABLE IF NOT EXISTS credit_transactions (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, amount INTEGER NOT NULL,
  balance_after INTEGER NOT NULL, created INTEGER NOT NULL);
`);

const insertCustomer = db.prepare('INSERT INTO customers(id, external_id, created) VALUES (?, ?, ?)');
const insertGrant = db.prepare('INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?, NULL, ?)');
const usable = db.prepare(`SELECT id, remaining FROM grants WHERE customer_id = ? AND remaining > 0
  AND (expires_at IS NULL OR expires_at > ?) ORDER BY priority, COALESCE(expires_at, 9e18), type != 'promotional', created, id`);
const take = db.prepare('UPDATE grants SET remaining = remaining - ? WHERE id = ?');
const findTx = db.prepare('SELECT amount, balance_after FROM credit_transactions WHERE id = ?');
const insertTx = db.prepare('INSERT INTO credit_transactions VALUES (?, ?, ?, ?, ?)');
const balance = db.prepare(`SELECT COALESCE(SUM(remaining), 0) AS total FROM grants WHERE customer_id = ?
  AND (expires_at IS NULL OR expires_at > ?)`);

const deduct = db.transaction((customer, amount, id, now) => {
  const seen = findTx.get(id);
  if (seen) return { replayed: true, balance: seen.balance_after };
  const grants = usable.all(customer, now);
  const total = grants.reduce((a, g) => a + g.remaining, 0);
  if (total < amount) return { insufficient: true, total };
  let left = amount;
  for (const g of grants) {
    if (left === 0) break;
    const n = Math.min(left, g.remaining);
    take.run(n, g.id);
    left -= n;
  }
  insertTx.run(id, customer, amount, total - amount, now);
  return { balance: total - amount };
});

const app = express();
app.get('/health', (req, res) => res.json({ status: 'ok' }));
app.use(express.json());
app.use((req, res, next) => {
  if (req.headers.authorization !== `Bearer ${key}`) return res.status(401).json({ error: { code: 'unauthorized' } });
  next();
});
const now = () => Math.floor(Date.now() / 1000);
app.post('/v1/customers', (req, res) => {
  const id = `cust_${randomBytes(12).toString('hex')}`;
  insertCustomer.run(id, req.body.external_id, now());
  res.status(201).json({ id, object: 'customer', external_id: req.body.external_id });
});
app.post('/v1/credits/grants', (req, res) => {
  const { customer, id, amount, type = 'promotional' } = req.body;
  insertGrant.run(`cgr_${randomBytes(8).toString('hex')}`, customer, type, amount, amount, type === 'subscription' ? 0 : 10, now());
  res.status(201).json({ object: 'credit_grant', transfer: id, amount, remaining: amount });
});
app.post('/v1/credits/deduct', (req, res) => {
  const { customer, amount, id } = req.body;
  if (!Number.isInteger(amount) || amount < 1) return res.status(400).json({ error: { code: 'parameter_invalid', param: 'amount' } });
  const out = deduct(customer, amount, id, now());
  if (out.insufficient) return res.status(402).json({ error: { code: 'insufficient_credits', param: 'amount' } });
  res.json({ object: 'credit_deduction', transfer: id, amount, balance: { total: out.balance } });
});
app.get('/v1/customers/:id/credits', (req, res) => {
  res.json({ object: 'credit_balance', customer: req.params.id, total: balance.get(req.params.id, now()).total });
});
app.listen(port, '127.0.0.1');
