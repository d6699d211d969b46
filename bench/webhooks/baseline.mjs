// The baseline, written the way the seed write-ups do it: express, stripe-node's constructEvent over the raw
// body, better-sqlite3 with WAL and synchronous=FULL, one transaction (one fsync) per event.
import express from 'express';
import Stripe from 'stripe';
import Database from 'better-sqlite3';

const port = Number(process.env.PORT ?? 9090);
const secret = process.env.STRIPE_WEBHOOK_SECRET;
const db = new Database(process.env.DB ?? 'baseline.db');
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec(`CREATE TABLE IF NOT EXISTS webhook_events (id TEXT PRIMARY KEY, type TEXT NOT NULL, created INTEGER NOT NULL,
         payload TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', received_at INTEGER NOT NULL)`);
const insert = db.prepare('INSERT OR IGNORE INTO webhook_events (id, type, created, payload, received_at) VALUES (?, ?, ?, ?, ?)');
const stripe = new Stripe('sk_test_unused');

const app = express();
app.post('/webhooks/stripe', express.raw({ type: 'application/json', limit: '512kb' }), (req, res) => {
  let event;
  try {
    event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], secret);
  } catch (err) {
    return res.status(400).json({ error: { message: err.message } });
  }
  const tx = db.transaction(() => insert.run(event.id, event.type, event.created, req.body.toString('utf8'), Math.floor(Date.now() / 1000)));
  const info = tx();
  res.json({ received: true, duplicate: info.changes === 0 });
});
app.listen(port, '127.0.0.1', () => console.log(`baseline listening on http://127.0.0.1:${port}`));
