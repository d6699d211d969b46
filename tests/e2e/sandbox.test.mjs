// The Stripe sandbox driven by the official stripe SDK as its client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import Stripe from 'stripe';
import { assertStripeShape, startSandbox, wireGet } from './harness.mjs';

let child;
let stripe;

before(async () => {
  ({ child, stripe } = await startSandbox());
});
after(() => child.kill('SIGTERM'));

/** The object as the sandbox sent it on the wire. */
const wire = (path) => wireGet(stripe.getApiField('port'), path);

test('customers: create, retrieve, update with previous_attributes, list with pagination', async () => {
  const c = await stripe.customers.create({ email: 'ada@example.com', name: 'Ada', metadata: { external_id: 'user_1', tier: 'x' } });
  assert.match(c.id, /^cus_/);
  assert.equal(c.email, 'ada@example.com');
  assert.deepEqual(c.metadata, { external_id: 'user_1', tier: 'x' });
  assertStripeShape('customer', await wire(`/v1/customers/${c.id}`));
  assert.equal((await stripe.customers.retrieve(c.id)).name, 'Ada');
  const u = await stripe.customers.update(c.id, { email: 'ada@new.example.com', metadata: { tier: '' } });
  assert.equal(u.email, 'ada@new.example.com');
  assert.deepEqual(u.metadata, { external_id: 'user_1' });  // an empty value deletes a key
  const events = await stripe.events.list({ limit: 5 });
  const updated = events.data.find((e) => e.type === 'customer.updated' && e.data.object.id === c.id);
  assert.ok(updated, 'customer.updated event');
  assert.equal(updated.data.previous_attributes.email, 'ada@example.com');
  assertStripeShape('event', await wire(`/v1/events/${updated.id}`));

  for (let i = 0; i < 23; i++) await stripe.customers.create({ email: `page${i}@example.com` });
  const firstPage = await stripe.customers.list({ limit: 10 });
  assert.equal(firstPage.data.length, 10);
  assert.equal(firstPage.has_more, true);
  assert.equal(firstPage.data[0].email, 'page22@example.com');  // newest first
  const all = [];
  for await (const cust of stripe.customers.list({ limit: 7 })) all.push(cust.id);
  assert.equal(all.length, 24);
  assert.equal(new Set(all).size, 24);
  const byEmail = await stripe.customers.list({ email: 'page3@example.com' });
  assert.equal(byEmail.data.length, 1);
  const del = await stripe.customers.del(byEmail.data[0].id);
  assert.equal(del.deleted, true);
});

test('products and prices: recurring prices found by lookup_keys, keys unique unless transferred', async () => {
  const product = await stripe.products.create({ name: 'Pro' });
  assertStripeShape('product', await wire(`/v1/products/${product.id}`));
  const monthly = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 6000, recurring: { interval: 'month' }, lookup_key: 'sb_pro_monthly' });
  assert.equal(monthly.type, 'recurring');
  assert.equal(monthly.recurring.interval, 'month');
  assert.equal(monthly.unit_amount, 6000);
  assertStripeShape('price', await wire(`/v1/prices/${monthly.id}`));
  const once = await stripe.prices.create({ product_data: { name: 'Credits' }, currency: 'usd', unit_amount: 1000 });
  assert.equal(once.type, 'one_time');
  const found = await stripe.prices.list({ lookup_keys: ['sb_pro_monthly'] });
  assert.deepEqual(found.data.map((p) => p.id), [monthly.id]);
  await assert.rejects(stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 6500, recurring: { interval: 'month' }, lookup_key: 'sb_pro_monthly' }),
    (e) => e.type === 'StripeInvalidRequestError' && e.param === 'lookup_key');
  const moved = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 6500, recurring: { interval: 'month' }, lookup_key: 'sb_pro_monthly', transfer_lookup_key: true });
  assert.deepEqual((await stripe.prices.list({ lookup_keys: ['sb_pro_monthly'] })).data.map((p) => p.id), [moved.id]);
  assert.equal((await stripe.prices.retrieve(monthly.id)).lookup_key, null);
});

test('test clocks have Stripe\'s shape and only move forward', async () => {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: 1767225600, name: 'shape' });
  assertStripeShape('test_helpers.test_clock', await wire(`/v1/test_helpers/test_clocks/${clock.id}`));
  const advanced = await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: 1767225600 + 3600 });
  assert.equal(advanced.frozen_time, 1767225600 + 3600);
  await assert.rejects(stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: 1767225600 }), (e) => e.param === 'frozen_time');
  await assert.rejects(stripe.customers.create({ test_clock: 'clock_nope' }), (e) => e.param === 'test_clock');
});

test('subscriptions are invoiced and paid, with Stripe\'s invoice shape', async () => {
  const customer = await stripe.customers.create({ email: 'inv@example.com', payment_method: 'pm_card_visa', invoice_settings: { default_payment_method: 'pm_card_visa' } });
  assert.match(customer.invoice_settings.default_payment_method, /^pm_/);
  const price = await stripe.prices.create({ product_data: { name: 'Seat' }, currency: 'usd', unit_amount: 1500, recurring: { interval: 'month' } });
  const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id, quantity: 3 }] });
  assert.equal(sub.status, 'active');
  assert.match(sub.latest_invoice, /^in_/);
  const invoice = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.equal(invoice.status, 'paid');
  assert.equal(invoice.amount_due, 4500);
  assert.equal(invoice.amount_paid, 4500);
  assert.equal(invoice.billing_reason, 'subscription_create');
  assert.equal(invoice.parent.subscription_details.subscription, sub.id);
  assert.equal(invoice.lines.data[0].period.end, sub.items.data[0].current_period_end);
  assertStripeShape('invoice', await wire(`/v1/invoices/${invoice.id}`));
  const types = (await stripe.events.list({ limit: 20 })).data.filter((e) => e.data.object.id === invoice.id).map((e) => e.type);
  assert.deepEqual(types.sort(), ['invoice.created', 'invoice.finalized', 'invoice.paid', 'invoice.payment_succeeded']);
  assert.deepEqual((await stripe.invoices.list({ subscription: sub.id })).data.map((i) => i.id), [invoice.id]);
});

test('idempotency: the same key replays, other parameters are an idempotency_error', async () => {
  const a = await stripe.customers.create({ email: 'idem@example.com' }, { idempotencyKey: 'sb-idem-1' });
  const b = await stripe.customers.create({ email: 'idem@example.com' }, { idempotencyKey: 'sb-idem-1' });
  assert.equal(b.id, a.id);
  await assert.rejects(stripe.customers.create({ email: 'other@example.com' }, { idempotencyKey: 'sb-idem-1' }),
    (e) => e.type === 'StripeIdempotencyError' && e.statusCode === 400);
  assert.equal((await stripe.customers.list({ email: 'other@example.com' })).data.length, 0);
});

test("errors come back as the SDK's typed errors", async () => {
  await assert.rejects(stripe.customers.retrieve('cus_nope'),
    (e) => e.type === 'StripeInvalidRequestError' && e.statusCode === 404 && e.code === 'resource_missing' && e.param === 'id');
  await assert.rejects(stripe.prices.create({ currency: 'usd', unit_amount: 100 }),
    (e) => e.code === 'parameter_missing' && e.param === 'product');
  await assert.rejects(stripe.customers.create({ colour: 'red' }),
    (e) => e.code === 'parameter_unknown' && e.param === 'colour');
  await assert.rejects(stripe.prices.create({ product_data: { name: 'x' }, currency: 'usx', unit_amount: 1 }),
    (e) => e.param === 'currency');
  const bad = new Stripe('sk_live_nope', { host: stripe.getApiField('host'), port: stripe.getApiField('port'), protocol: 'http', maxNetworkRetries: 0 });
  await assert.rejects(bad.customers.list(), (e) => e.type === 'StripeAuthenticationError' && e.statusCode === 401);
});

test('webhooks: signed exactly as Stripe signs, retried when the endpoint fails', async () => {
  const received = [];
  let failFirst = true;
  const receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (failFirst) { failFirst = false; res.writeHead(500).end(); return; }
      received.push({ body, signature: req.headers['stripe-signature'] });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${receiver.address().port}/hook`;
    const endpoint = await stripe.webhookEndpoints.create({ url, enabled_events: ['customer.created'] });
    assert.match(endpoint.secret, /^whsec_/);
    assertStripeShape('webhook_endpoint', await wire(`/v1/webhook_endpoints/${endpoint.id}`));
    assert.equal((await stripe.webhookEndpoints.retrieve(endpoint.id)).secret, null);  // shown once
    const c = await stripe.customers.create({ email: 'hook@example.com' });
    await stripe.products.create({ name: 'not subscribed to' });
    for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(received.length, 1, 'delivered after one failed attempt');
    const event = stripe.webhooks.constructEvent(received[0].body, received[0].signature, endpoint.secret);
    assert.equal(event.type, 'customer.created');
    assert.equal(event.data.object.id, c.id);
    const attempts = await stripe.rawRequest('GET', '/v1/test_helpers/webhook_deliveries');
    const mine = attempts.data.filter((d) => d.event === event.id);
    assert.deepEqual(mine.map((d) => [d.attempt, d.status]), [[1, 500], [2, 200]]);
    await stripe.webhookEndpoints.del(endpoint.id);
  } finally {
    receiver.close();
  }
});
