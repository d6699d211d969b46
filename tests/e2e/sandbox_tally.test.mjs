// Tally end to end with the sandbox: Stripe objects made through the official SDK reach Tally as signed
// webhooks and move the customer's role.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import Stripe from 'stripe';
import { startTally, startSandbox, fixtures } from './harness.mjs';

async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

async function until(fn, what) {
  for (let i = 0; i < 200; i++) {
    const v = await fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The pro_monthly price: pushed from the catalog by `serve`'s sandbox, created here for a standalone one. */
async function proMonthly(stripe) {
  const found = await stripe.prices.list({ lookup_keys: ['pro_monthly'] });
  if (found.data.length > 0) return found.data[0];
  return stripe.prices.create({ product_data: { name: 'Pro' }, currency: 'usd', unit_amount: 6000, recurring: { interval: 'month' }, lookup_key: 'pro_monthly' });
}

/** A customer's life in the sandbox, checked through Tally's API as the webhooks arrive. */
async function lifecycle(stripe, tally) {
  const appCustomer = (await tally.post('/v1/customers', { external_id: 'user_e2e', email: 'e2e@example.com' })).json;
  const customer = await stripe.customers.create({ email: 'e2e@example.com', metadata: { external_id: 'user_e2e' } });
  const linked = await until(async () => {
    const c = (await tally.get(`/v1/customers/${appCustomer.id}`)).json;
    return c.stripe_customer_id === customer.id && c;
  }, 'customer link');
  assert.equal(linked.role, 'member');

  const price = await proMonthly(stripe);
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }], trial_period_days: 14 });
  assert.equal(sub.status, 'trialing');
  assert.equal(sub.items.data[0].current_period_end, sub.trial_end);
  const wire = await (await fetch(`http://127.0.0.1:${stripe.getApiField('port')}/v1/subscriptions/${sub.id}`,
    { headers: { authorization: 'Bearer sk_test_e2e' } })).json();
  for (const [key, value] of Object.entries(fixtures().subscription)) {
    assert.ok(key in wire, `subscription.${key} is missing`);
    if (value !== null && wire[key] !== null) assert.equal(Array.isArray(wire[key]), Array.isArray(value), key);
  }

  const pro = await until(async () => {
    const c = (await tally.get(`/v1/customers/${appCustomer.id}`)).json;
    return c.role === 'professional' && c;
  }, 'professional role');
  assert.equal(pro.plan, 'pro');
  assert.equal(pro.subscription.status, 'trialing');
  assert.equal(pro.subscription.id, sub.id);

  await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
  await until(async () => (await tally.get(`/v1/customers/${appCustomer.id}`)).json.subscription.cancel_at_period_end, 'cancel_at_period_end');

  await stripe.subscriptions.cancel(sub.id);
  const member = await until(async () => {
    const c = (await tally.get(`/v1/customers/${appCustomer.id}`)).json;
    return c.role === 'member' && c;
  }, 'member role');
  assert.equal(member.subscription.status, 'canceled');
  const audit = (await tally.get(`/v1/audit?customer=${appCustomer.id}`)).json.data.map((e) => `${e.kind}:${e.before}->${e.after}`);
  assert.ok(audit.includes('role_changed:member->professional'), audit.join());
  assert.ok(audit.includes('role_changed:professional->member'), audit.join());
  assert.equal((await stripe.subscriptions.list({ customer: customer.id })).data.length, 0);  // canceled ones are hidden
  assert.equal((await stripe.subscriptions.list({ customer: customer.id, status: 'all' })).data.length, 1);
}

test('standalone sandbox: subscribe, schedule cancellation, cancel; Tally follows through webhooks', async () => {
  const { child, stripe } = await startSandbox();
  const tallyPort = await freePort();
  const endpoint = await stripe.webhookEndpoints.create({ url: `http://127.0.0.1:${tallyPort}/webhooks/stripe`, enabled_events: ['*'] });
  // Tally only receives this sandbox's webhooks: it needs no Stripe of its own.
  const tally = await startTally({ TALLY_PORT: String(tallyPort), STRIPE_WEBHOOK_SECRET: endpoint.secret, TALLY_STRIPE_SANDBOX: undefined });
  try {
    await lifecycle(stripe, tally);
  } finally {
    await tally.stop();
    child.kill('SIGTERM');
  }
});

test('default wiring: without STRIPE_SECRET_KEY, serve runs the sandbox and registers itself with it', async () => {
  const tally = await startTally({ STRIPE_WEBHOOK_SECRET: '' });
  try {
    assert.ok(tally.sandboxPort, 'serve printed the sandbox address');
    const stripe = new Stripe('sk_test_default', { host: '127.0.0.1', port: tally.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
    const endpoints = await stripe.webhookEndpoints.list();
    assert.equal(endpoints.data.length, 1);
    assert.equal(endpoints.data[0].url, `${tally.base}/webhooks/stripe`);
    // The catalog's paid prices were pushed: 3 paid plans x monthly and yearly, under their lookup keys.
    const prices = await stripe.prices.list({ limit: 100 });
    assert.deepEqual(prices.data.map((p) => p.lookup_key).sort(),
      ['pro_monthly', 'pro_yearly', 'scale_monthly', 'scale_yearly', 'starter_monthly', 'starter_yearly']);
    assert.equal(prices.data.find((p) => p.lookup_key === 'starter_yearly').unit_amount, 30000);
    await lifecycle(stripe, tally);
  } finally {
    await tally.stop();
  }
});

test('test clock: trial notice, trial conversion, a year of renewals on a month-end anchor, cancel at period end', async () => {
  const tally = await startTally({ STRIPE_WEBHOOK_SECRET: '' });
  try {
    const stripe = new Stripe('sk_test_clock', { host: '127.0.0.1', port: tally.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
    const day = 86400;
    const t0 = Date.UTC(2026, 0, 17) / 1000;  // a 14-day trial ends on Jan 31: the anchor is a month end
    const clock = await stripe.testHelpers.testClocks.create({ frozen_time: t0 });
    const app = (await tally.post('/v1/customers', { external_id: 'user_clock' })).json;
    const customer = await stripe.customers.create({ email: 'clock@example.com', test_clock: clock.id, metadata: { external_id: 'user_clock' },
      payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
    assert.equal(customer.created, t0);
    const price = await proMonthly(stripe);
    const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }], trial_period_days: 14 });
    assert.equal(sub.trial_end, Date.UTC(2026, 0, 31) / 1000);
    const get = async () => (await tally.get(`/v1/customers/${app.id}`)).json;
    await until(async () => (await get()).role === 'professional', 'trialing grants the role');

    await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t0 + 12 * day });
    await until(async () => (await tally.get(`/v1/audit?customer=${app.id}`)).json.data.some((e) => e.kind === 'trial_will_end'), 'trial_will_end');
    assert.equal((await get()).subscription.status, 'trialing');

    await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: Date.UTC(2027, 0, 15) / 1000 });
    const renewed = await until(async () => {
      const c = await get();
      return c.subscription.current_period_end === Date.UTC(2027, 0, 31) / 1000 && c;
    }, 'a year of renewals');
    assert.equal(renewed.subscription.status, 'active');
    assert.equal(renewed.subscription.current_period_start, Date.UTC(2026, 11, 31) / 1000);
    const updates = (await stripe.events.list({ limit: 100 }).autoPagingToArray({ limit: 10000 }))
      .filter((e) => e.type === 'customer.subscription.updated' && e.data.object.id === sub.id);
    assert.equal(updates.length, 12);  // trial end (Jan 31) + 11 renewals (Feb 28, Mar 31, Apr 30, ...)
    const ends = updates.map((e) => e.data.object.items.data[0].current_period_end).sort((a, b) => a - b);
    assert.equal(ends[0], Date.UTC(2026, 1, 28) / 1000);  // Jan 31 -> Feb 28
    assert.equal(ends[1], Date.UTC(2026, 2, 31) / 1000);  // -> Mar 31, the anchor day again
    assert.equal(ends[2], Date.UTC(2026, 3, 30) / 1000);

    const invoices = [];
    for await (const inv of stripe.invoices.list({ subscription: sub.id, limit: 100 })) invoices.push(inv);
    assert.equal(invoices.length, 13);  // the trial's (0.00), then trial end + 11 renewals (60.00 each)
    assert.ok(invoices.every((i) => i.status === 'paid'));
    assert.deepEqual(invoices.map((i) => i.amount_paid).sort((a, b) => a - b), [0, ...Array(12).fill(6000)]);
    assert.deepEqual(new Set(invoices.map((i) => i.billing_reason)), new Set(['subscription_create', 'subscription_cycle']));

    await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
    await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: Date.UTC(2027, 1, 1) / 1000 });
    const ended = await until(async () => {
      const c = await get();
      return c.role === 'member' && c;
    }, 'canceled at period end');
    assert.equal(ended.subscription.status, 'canceled');
    assert.equal(ended.subscription.canceled_at, Date.UTC(2027, 0, 31) / 1000);
    await assert.rejects(stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t0 }), (e) => e.param === 'frozen_time');
    // Tally applied everything the sandbox sent, invoices included.
    await tally.settle();
    assert.deepEqual((await tally.get('/v1/webhook_events?status=failed')).json.data, []);
    const processed = (await tally.get('/v1/webhook_events?status=processed&limit=500')).json.data;
    assert.ok(processed.filter((e) => e.type === 'invoice.paid').length >= 13);
  } finally {
    await tally.stop();
  }
});
