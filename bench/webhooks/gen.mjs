// Writes N unique Stripe events, each signed now by the official SDK, as "signature\nbody\n" pairs for wrk.
// Usage: node gen.mjs <count> <secret> <fixtures3.json> <out> [subscription|customer]
//   subscription (default): customer.subscription.updated for 5,000 subscriptions (bench/webhooks)
//   customer: customer.updated for 5,000 customers, each with a new name, so every event changes Tally's customer
//             and Tally emits one customer.updated event of its own (bench/events)
import { readFileSync, createWriteStream } from 'node:fs';
import Stripe from 'stripe';

const [count, secret, fixturesPath, out] = [Number(process.argv[2]), process.argv[3], process.argv[4], process.argv[5]];
const mode = process.argv[6] || 'subscription';
const stripe = new Stripe('sk_test_unused');
const fixtures = JSON.parse(readFileSync(fixturesPath, 'utf8')).resources;
const now = Math.floor(Date.now() / 1000);
const template = mode === 'customer'
  ? { ...fixtures.event, type: 'customer.updated', api_version: '2025-03-31.basil',
      data: { object: { ...fixtures.customer, metadata: {} }, previous_attributes: { name: null } } }
  : { ...fixtures.event, type: 'customer.subscription.updated', api_version: '2025-03-31.basil',
      data: { object: fixtures.subscription, previous_attributes: { status: 'trialing' } } };
const objectOf = mode === 'customer'
  ? (i) => ({ ...template.data.object, id: `cus_bench_${i % 5000}`, name: `Customer ${i}` })
  : (i) => ({ ...template.data.object, id: `sub_bench_${i % 5000}`, customer: `cus_bench_${i % 5000}` });
const stream = createWriteStream(out);
let bytes = 0;
for (let i = 0; i < count; i++) {
  // created rises through a 240 s window, as a stream of real deliveries would.
  const event = { ...template, id: `evt_bench_${now}_${i}`, created: now - 240 + Math.floor((i * 240) / count),
                  data: { ...template.data, object: objectOf(i) } };
  const body = JSON.stringify(event);
  bytes += body.length;
  const header = stripe.webhooks.generateTestHeaderString({ payload: body, secret, timestamp: now });
  if (!stream.write(`${header}\n${body}\n`)) await new Promise((r) => stream.once('drain', r));
}
stream.end();
await new Promise((r) => stream.on('finish', r));
console.error(`generated ${count} events, mean body ${Math.round(bytes / count)} bytes`);
