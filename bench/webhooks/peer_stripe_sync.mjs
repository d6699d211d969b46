// The open-source peer for PostgreSQL: @supabase/stripe-sync-engine (Stripe webhooks into PostgreSQL), behind the
// lightest server it can have (node:http, no framework): read the raw body, StripeSync.processWebhook (signature
// check, then the object upserted into its "stripe" schema), answer 200. Its own migrations run first.
import http from 'node:http';
import { createRequire } from 'node:module';

// The CommonJS build: the ES module build of 0.48.5 locates its migrations through __dirname, which ES modules do
// not have, and its runMigrations swallows that error (it logs only through a logger, and then creates no table).
const { StripeSync, runMigrations } = createRequire(import.meta.url)('@supabase/stripe-sync-engine');
const logger = { info() {}, warn: console.error, error: console.error, debug() {}, trace() {}, fatal: console.error };

const port = Number(process.env.PORT ?? 9092);
const databaseUrl = process.env.DATABASE_URL;
const secret = process.env.STRIPE_WEBHOOK_SECRET;
await runMigrations({ databaseUrl, schema: 'stripe', logger });
const sync = new StripeSync({
  poolConfig: { connectionString: databaseUrl, max: 16 },
  schema: 'stripe',
  stripeSecretKey: 'sk_test_unused',
  stripeWebhookSecret: secret,
  backfillRelatedEntities: false,  // the events carry whole objects: no Stripe API call is needed
});

http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    try {
      await sync.processWebhook(Buffer.concat(chunks), req.headers['stripe-signature']);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"received":true}');
    } catch (err) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: String(err.message) } }));
    }
  });
}).listen(port, '127.0.0.1', () => console.log(`stripe-sync-engine listening on http://127.0.0.1:${port}`));
