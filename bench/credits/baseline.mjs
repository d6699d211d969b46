// The baseline for bench/credits, written the way seed 003 sketches credit deduction: an express app with one
// better-sqlite3 transaction per deduction (WAL, synchronous=FULL, so the reply follows that transaction's fsync)
// that checks the transfer id, reads the customer's grants in the spend order, takes the amount from them and
// writes the transaction row. The same routes and shapes as Tally's for what the benchmark calls:
// POST /v1/customers {external_id}, POST /v1/credits/grants {customer, id, amount, type}, POST /v1/credits/deduct
// {customer, amount, id}, GET /v1/customers/:id/credits.
// env: PORT (9094), DB (baseline.db), TALLY_ADMIN_KEY (the Bearer key to accept).
// express and better-sqlite3 come from bench/check's node_modules (one install for both benchmarks).
import { createRequire } from 'node:module';
import { openLedger } from './ledger.mjs';

const require = createRequire(new URL('../check/package.json', import.meta.url));
const express = require('express');

const port = Number(process.env.PORT ?? 9094);
const key = process.env.TALLY_ADMIN_KEY ?? '';
const ledger = openLedger(process.env.DB ?? 'baseline.db');

const app = express();
app.get('/health', (req, res) => res.json({ status: 'ok' }));
app.use(express.json());
app.use((req, res, next) => {
  if (req.headers.authorization !== `Bearer ${key}`) return res.status(401).json({ error: { code: 'unauthorized' } });
  next();
});
const now = () => Math.floor(Date.now() / 1000);
app.post('/v1/customers', (req, res) => {
  const id = ledger.createCustomer(req.body.external_id, now());
  res.status(201).json({ id, object: 'customer', external_id: req.body.external_id });
});
app.post('/v1/credits/grants', (req, res) => {
  const { customer, id, amount, type = 'promotional' } = req.body;
  ledger.grant(customer, amount, type, now());
  res.status(201).json({ object: 'credit_grant', transfer: id, amount, remaining: amount });
});
app.post('/v1/credits/deduct', (req, res) => {
  const { customer, amount, id } = req.body;
  if (!Number.isInteger(amount) || amount < 1) return res.status(400).json({ error: { code: 'parameter_invalid', param: 'amount' } });
  const out = ledger.deduct(customer, amount, id, now());
  if (out.insufficient) return res.status(402).json({ error: { code: 'insufficient_credits', param: 'amount' } });
  res.json({ object: 'credit_deduction', transfer: id, amount, balance: { total: out.balance } });
});
app.get('/v1/customers/:id/credits', (req, res) => {
  res.json({ object: 'credit_balance', customer: req.params.id, total: ledger.balance(req.params.id, now()) });
});
app.listen(port, '127.0.0.1');
