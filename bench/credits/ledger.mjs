// The seed-003-style credit ledger both baselines of bench/credits run (baseline.mjs over HTTP, baseline_inprocess.mjs
// in-process): better-sqlite3 with WAL and synchronous=FULL, one transaction per deduction that checks the transfer
// id, reads the customer's grants in the spend order, takes the amount from them and writes the transaction row.
// better-sqlite3 comes from bench/check's node_modules (one install for both benchmarks).
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

const require = createRequire(new URL('../check/package.json', import.meta.url));
const Database = require('better-sqlite3');

/** Opens (creating) the ledger at |path|: {deduct(customer, amount, id, now), createCustomer(external, now),
 *  grant(customer, amount, type, now), balance(customer, now)}. */
export function openLedger(path) {
  const db = new Database(path);
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

  return {
    deduct,
    createCustomer(external, now) {
      const id = `cust_${randomBytes(12).toString('hex')}`;
      insertCustomer.run(id, external, now);
      return id;
    },
    grant(customer, amount, type, now) {
      insertGrant.run(`cgr_${randomBytes(8).toString('hex')}`, customer, type, amount, amount, type === 'subscription' ? 0 : 10, now);
    },
    balance: (customer, now) => balance.get(customer, now).total,
  };
}
