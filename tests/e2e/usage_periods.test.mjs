// Usage periods on the sandbox's clock (issue 12): a counter starts again when the subscription renews and a gauge
// does not; a late event lands in the period it happened in.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { startTally, until } from './harness.mjs';

let server;
let stripe;
before(async () => {
  server = await startTally();
  stripe = new Stripe('sk_test_usage_periods', { host: '127.0.0.1', port: server.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
});
after(async () => { await server?.stop(); });

const meter = async (customer, name) =>
  (await server.get(`/v1/customers/${customer}/usage`)).json.meters.find((m) => m.meter === name);

test('a renewal on the sandbox clock resets counters, not gauges, and a late event counts in its own period', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'usage_renewal', email: 'renewal@example.com' })).json;
  const checkout = await server.post('/v1/checkout_sessions', { customer: c.id, plan: 'pro' });
  assert.equal(checkout.status, 200, checkout.text);
  const stripeId = await until(async () => (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id,
    'the Stripe customer link');
  const pm = await stripe.paymentMethods.attach('pm_card_visa', { customer: stripeId });
  await stripe.customers.update(stripeId, { invoice_settings: { default_payment_method: pm.id } });
  const made = await server.post('/v1/subscriptions', { customer: c.id, plan: 'pro' });
  assert.equal(made.status, 201, made.text);
  const sub = made.json;

  // Pro grants 5,000 credits a period; they are spent before a bundle.
  const credits = async () => (await server.get(`/v1/customers/${c.id}/credits`)).json;
  assert.deepEqual([(await credits()).subscription_credits, (await credits()).total], [5000, 5000]);
  await server.post('/v1/credits/grants', { customer: c.id, id: `renewal-bundle-${c.id}`, amount: 100, type: 'bundle' });
  const spent = await server.post('/v1/credits/deduct', { customer: c.id, id: `renewal-d1-${c.id}`, amount: 10 });
  assert.equal(spent.status, 200, spent.text);
  assert.deepEqual(spent.json.balance, { subscription: 4990, bundle: 100, promotional: 0, total: 5090 });
  const firstGrant = spent.json.breakdown[0].grant;

  const used = await server.post('/v1/check', { customer: c.id, meter: 'build_hours', amount: 120, record: true });
  assert.deepEqual([used.json.allowed, used.json.current, used.json.limit, used.json.period_start],
    [true, 120, 150, sub.current_period_start]);
  const projects = await server.post('/v1/usage', { customer: c.id, meter: 'projects', value: 2, action: 'set', idempotency_key: 'renewal-projects' });
  assert.equal(projects.status, 200, projects.text);
  assert.equal((await server.post('/v1/check', { customer: c.id, meter: 'build_hours', amount: 31 })).json.allowed, false);

  // The period ends on the sandbox clock and the subscription renews.
  await stripe.testHelpers.testClocks.advance(server.testClock, { frozen_time: sub.current_period_end + 3600 });
  await until(async () => (await server.get(`/v1/subscriptions/${sub.id}`)).json.current_period_start === sub.current_period_end,
    'the renewal');
  const hours = await meter(c.id, 'build_hours');
  assert.deepEqual([hours.current, hours.period_start, hours.remaining], [0, sub.current_period_end, 150]);
  assert.equal((await meter(c.id, 'projects')).current, 2);  // a gauge carries over
  assert.equal((await server.post('/v1/check', { customer: c.id, meter: 'build_hours', amount: 31 })).json.allowed, true);

  // Usage that happened before the renewal (Tally's clock is still there: the sandbox's ran ahead) counts in the
  // period it happened in, within the grace window; the new period is untouched.
  const late = await server.post('/v1/usage', { customer: c.id, meter: 'build_hours', value: 5,
    timestamp: sub.current_period_start, idempotency_key: 'renewal-late' });
  assert.equal(late.status, 200, late.text);
  assert.deepEqual([late.json.period_start, late.json.current], [sub.current_period_start, 125]);
  assert.equal((await meter(c.id, 'build_hours')).current, 0);
  const now = await server.post('/v1/usage', { customer: c.id, meter: 'build_hours', value: 2, idempotency_key: 'renewal-now' });
  assert.deepEqual([now.json.period_start, now.json.current], [sub.current_period_end, 2]);

  // The new period's 5,000 subscription credits replace what was left of the last period's (expired with the
  // renewal); the bundle stays.
  assert.deepEqual([(await credits()).subscription_credits, (await credits()).bundle_credits], [5000, 100]);
  const next = await server.post('/v1/credits/deduct', { customer: c.id, id: `renewal-d2-${c.id}`, amount: 1 });
  assert.deepEqual(next.json.balance, { subscription: 4999, bundle: 100, promotional: 0, total: 5099 });
  assert.notEqual(next.json.breakdown[0].grant, firstGrant);
  const grants = (await server.get(`/v1/customers/${c.id}/credit_grants`)).json.data.filter((g) => g.type === 'subscription');
  assert.deepEqual(grants.map((g) => [g.remaining, g.expires_at]).sort((a, b) => a[1] - b[1]),
    [[0, sub.current_period_end], [4999, grants.find((g) => g.id !== firstGrant).expires_at]]);
});
