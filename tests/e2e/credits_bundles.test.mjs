// Credit bundles on the sandbox (issue 13, items 5 and 6): bought off-session with the saved card or through
// Checkout in payment mode, granted once when the payment succeeds (the API's answer and the webhook agree on one
// grant), a declined card recorded as failed, refunds (partial, then the rest) taking back only what is left;
// auto-purchase buying exactly one bundle when racing deductions cross the threshold, and disabling itself after
// three failed payments; the events at the app's receiver, and `tally ledger verify` clean afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import Stripe from 'stripe';
import { BIN, assertError, startReceiver, startTally, until } from './harness.mjs';

let server;
let stripe;
let rx;
before(async () => {
  server = await startTally({ TALLY_EVENT_RETRY_BASE_MS: '50' });
  stripe = new Stripe('sk_test_credit_bundles', { host: '127.0.0.1', port: server.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
  rx = await startReceiver();
  const registered = await server.post('/v1/webhook_endpoints', { url: rx.url,
    enabled_events: ['credits.granted', 'credits.purchase_succeeded', 'credits.purchase_failed', 'credits.purchase_refunded',
      'credits.auto_purchase_succeeded', 'credits.auto_purchase_failed'] });
  assert.equal(registered.status, 201, registered.text);
});
after(async () => { await rx?.close(); await server?.stop(); });

const eventsOf = (type, customer) => {
  const byId = new Map();
  for (const e of rx.received) if (e.type === type && e.data.object.customer === customer) byId.set(e.id, e);
  return [...byId.values()];
};

/** A customer with a Stripe customer whose default payment method is |card| (none: no card). */
async function customerWithCard(external, card) {
  const c = (await server.post('/v1/customers', { external_id: external, email: `${external}@example.com` })).json;
  const checkout = await server.post('/v1/checkout_sessions', { customer: c.id, plan: 'starter' });
  assert.equal(checkout.status, 200, checkout.text);
  const stripeId = await until(async () => (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id,
    'the Stripe customer link');
  if (card) {
    const pm = await stripe.paymentMethods.attach(card, { customer: stripeId });
    await stripe.customers.update(stripeId, { invoice_settings: { default_payment_method: pm.id } });
  }
  return { c, stripeId };
}

const purchaseOf = async (id) => (await server.get(`/v1/credits/purchases/${id}`)).json;

test('the bundles on sale are listed without a key', async () => {
  const r = await server.get('/v1/credits/bundles', { key: null });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.data.map((b) => [b.id, b.credits, b.unit_amount, b.currency, b.expires_in_days]),
    [['credits_1000', 1000, 1000, 'usd', null], ['credits_5000', 5000, 4500, 'usd', null],
      ['credits_20000', 20000, 16000, 'usd', null]]);
});

test('an off-session purchase grants the bundle once; refunds take back only what is left and record the rest as spent', async () => {
  const { c, stripeId } = await customerWithCard('bundle_buyer', 'pm_card_visa');
  const bought = await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_1000', id: 'buy-1' });
  assert.equal(bought.status, 201, bought.text);
  assert.deepEqual([bought.json.status, bought.json.source, bought.json.credits, bought.json.amount, bought.json.currency],
    ['succeeded', 'api', 1000, 1000, 'usd']);
  assert.match(bought.json.payment_intent, /^pi_/);
  const grant = bought.json.credit_grant;
  assert.deepEqual([grant.type, grant.amount, grant.remaining, grant.expires_at, grant.transfer],
    ['bundle', 1000, 1000, null, 'purchase:buy-1']);
  assert.equal(bought.json.grant, grant.id);
  // Stripe charged exactly once, for the bundle, with the purchase in its metadata.
  const intents = (await stripe.paymentIntents.list({ customer: stripeId })).data;
  assert.deepEqual(intents.map((pi) => [pi.amount, pi.currency, pi.status, pi.metadata.tally_purchase]),
    [[1000, 'usd', 'succeeded', 'buy-1']]);

  // The replay answers as the first time; the id with another bundle is refused.
  const replay = await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_1000', id: 'buy-1' });
  assert.equal(replay.status, 200, replay.text);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.json.credit_grant.id, grant.id);
  assertError(await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_5000', id: 'buy-1' }),
    400, 'idempotency_error', 'id');
  assert.equal((await stripe.paymentIntents.list({ customer: stripeId })).data.length, 1);

  // payment_intent.succeeded arrives too (the payment is in the customer's history): still one grant.
  await until(async () => (await server.get(`/v1/customers/${c.id}/payments`)).json.data
    .some((p) => p.id === bought.json.payment_intent && p.status === 'succeeded'), 'the payment_intent webhook');
  await server.settle();
  const grants = (await server.get(`/v1/customers/${c.id}/credit_grants`)).json.data.filter((g) => g.type === 'bundle');
  assert.equal(grants.length, 1);
  await until(() => eventsOf('credits.purchase_succeeded', c.id).length === 1, 'credits.purchase_succeeded');
  assert.equal(eventsOf('credits.purchase_succeeded', c.id)[0].data.object.id, 'buy-1');

  // 300 spent, then half the price refunded: 500 credits come back out of the 700 left.
  assert.equal((await server.post('/v1/credits/deduct', { customer: c.id, id: 'spend-1', amount: 300 })).status, 200);
  await stripe.refunds.create({ payment_intent: bought.json.payment_intent, amount: 500 });
  await until(async () => (await purchaseOf('buy-1')).amount_refunded === 500, 'the first refund');
  let p = await purchaseOf('buy-1');
  assert.deepEqual([p.credits_refunded, p.credits_refund_spent, p.credit_grant.remaining], [500, 0, 200]);
  // The rest refunded: 500 more are due, 200 are left to take, 300 were already spent.
  await stripe.refunds.create({ payment_intent: bought.json.payment_intent });
  await until(async () => (await purchaseOf('buy-1')).amount_refunded === 1000, 'the second refund');
  p = await purchaseOf('buy-1');
  assert.deepEqual([p.credits_refunded, p.credits_refund_spent, p.credit_grant.remaining], [700, 300, 0]);
  const balance = (await server.get(`/v1/customers/${c.id}/credits`)).json;
  assert.equal(balance.bundle_credits, 0);
  const refunds = (await server.get(`/v1/customers/${c.id}/credit_transactions?type=refund`)).json.data;
  assert.deepEqual(refunds.map((t) => [t.id, t.amount, t.reference]),
    [['refund:buy-1:1000', 200, 'buy-1'], ['refund:buy-1:500', 500, 'buy-1']]);
  await until(() => eventsOf('credits.purchase_refunded', c.id).length === 2, 'two credits.purchase_refunded');
  const listed = (await server.get(`/v1/customers/${c.id}/credit_purchases`)).json.data;
  assert.deepEqual(listed.map((x) => [x.id, x.status]), [['buy-1', 'succeeded']]);

  const verify = spawnSync(BIN, ['ledger', 'verify', '--db', server.db], { encoding: 'utf8' });
  assert.equal(verify.status, 0, verify.stdout + verify.stderr);
  assert.match(verify.stdout, /every invariant holds/);
});

test('without a saved card nothing is recorded; a declined card records the purchase as failed, and says so again on replay', async () => {
  const bare = await customerWithCard('bundle_no_card', null);
  assertError(await server.post('/v1/credits/purchases', { customer: bare.c.id, bundle: 'credits_1000', id: 'bare-1' }),
    402, 'payment_method_required', 'customer');
  assertError(await server.get('/v1/credits/purchases/bare-1'), 404, 'resource_missing', 'id');

  const { c } = await customerWithCard('bundle_declined', 'pm_card_chargeCustomerFail');
  const declined = await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_5000', id: 'decl-1' });
  assertError(declined, 402, 'card_declined');
  assert.equal(declined.json.error.type, 'card_error');
  const p = await purchaseOf('decl-1');
  assert.deepEqual([p.status, p.failure_code, p.grant, p.credit_grant], ['failed', 'card_declined', null, null]);
  assert.match(p.failure_message, /declined/);
  assertError(await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_5000', id: 'decl-1' }),
    402, 'card_declined');
  assert.equal((await server.get(`/v1/customers/${c.id}/credits`)).json.bundle_credits, 0);
  await until(() => eventsOf('credits.purchase_failed', c.id).length === 1, 'credits.purchase_failed');
});

test('a Checkout purchase is granted once when the page is paid, and its card pays the next one off-session', async () => {
  const { c } = await customerWithCard('bundle_checkout', null);
  const started = await server.post('/v1/credits/checkout_sessions', { customer: c.id, bundle: 'credits_5000', id: 'co-1' });
  assert.equal(started.status, 201, started.text);
  assert.deepEqual([started.json.status, started.json.source, started.json.credit_grant], ['pending', 'checkout', null]);
  assert.match(started.json.checkout_session, /^cs_/);
  const again = await server.post('/v1/credits/checkout_sessions', { customer: c.id, bundle: 'credits_5000', id: 'co-1' });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.checkout_url, started.json.checkout_url);
  // The customer pays on the sandbox's hosted page.
  const paid = await fetch(started.json.checkout_url, {
    method: 'POST', redirect: 'manual',
    body: new URLSearchParams({ card_number: '4242424242424242', card_expiry: '12 / 34', card_cvc: '123', billing_name: 'Ada' }),
  });
  assert.equal(paid.status, 303, await paid.text());
  await until(async () => (await purchaseOf('co-1')).status === 'succeeded', 'the paid checkout');
  await server.settle();
  const p = await purchaseOf('co-1');
  assert.deepEqual([p.credit_grant.amount, p.credit_grant.type, p.credit_grant.transfer], [5000, 'bundle', 'purchase:co-1']);
  assert.match(p.payment_intent, /^pi_/);
  const grants = (await server.get(`/v1/customers/${c.id}/credit_grants`)).json.data.filter((g) => g.type === 'bundle');
  assert.equal(grants.length, 1, 'checkout.session.completed and payment_intent.succeeded grant once between them');
  assert.equal((await server.get(`/v1/customers/${c.id}/credits`)).json.bundle_credits, 5000);
  await until(() => eventsOf('credits.purchase_succeeded', c.id).length === 1, 'credits.purchase_succeeded');
  // The card the page saved (attached, not the customer's default) pays the next bundle off-session.
  const next = await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_1000', id: 'co-next' });
  assert.equal(next.status, 201, next.text);
  assert.equal((await server.get(`/v1/customers/${c.id}/credits`)).json.bundle_credits, 6000);
});

test('a Checkout page left unpaid until it expires fails its purchase, once, and grants nothing', async () => {
  const { c } = await customerWithCard('bundle_checkout_expired', null);
  const started = await server.post('/v1/credits/checkout_sessions', { customer: c.id, bundle: 'credits_1000', id: 'co-exp' });
  assert.equal(started.status, 201, started.text);
  // Stripe expires an open session after 24 h, or when asked: either way it sends checkout.session.expired.
  const expired = await stripe.checkout.sessions.expire(started.json.checkout_session);
  assert.equal(expired.status, 'expired');
  await until(async () => (await purchaseOf('co-exp')).status === 'failed', 'the expired checkout');
  const p = await purchaseOf('co-exp');
  assert.deepEqual([p.failure_code, p.credit_grant], ['checkout_expired', null]);
  await until(() => eventsOf('credits.purchase_failed', c.id).length === 1, 'credits.purchase_failed');
  assert.equal((await server.get(`/v1/customers/${c.id}/credits`)).json.bundle_credits, 0);
  // The same id answers the failed purchase as it is.
  const replay = await server.post('/v1/credits/checkout_sessions', { customer: c.id, bundle: 'credits_1000', id: 'co-exp' });
  assert.equal(replay.json.status, 'failed', replay.text);
});

test('bad purchase requests are refused naming the parameter, and change nothing', async () => {
  const { c } = await customerWithCard('bundle_bad', 'pm_card_visa');
  assertError(await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_7', id: 'bad-1' }), 404, 'resource_missing', 'bundle');
  assertError(await server.post('/v1/credits/purchases', { customer: 'cus_nope', bundle: 'credits_1000', id: 'bad-2' }), 404, 'resource_missing', 'customer');
  assertError(await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_1000' }), 400, 'parameter_missing', 'id');
  assertError(await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_1000', id: 'purchase:x' }), 400, 'parameter_invalid', 'id');
  assertError(await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_1000', id: 'bad-3', amount: 5 }), 400, 'parameter_unknown', 'amount');
  assertError(await server.post('/v1/credits/checkout_sessions', { customer: c.id, bundle: 'credits_1000', success_url: 'ftp://x' }), 400, 'parameter_invalid', 'success_url');
  assertError(await server.get('/v1/credits/purchases/nope'), 404, 'resource_missing', 'id');
  assertError(await server.get(`/v1/customers/${c.id}/credit_purchases?starting_after=nope`), 404, 'resource_missing', 'starting_after');
  assert.deepEqual((await server.get(`/v1/customers/${c.id}/credit_purchases`)).json.data, []);
  assert.deepEqual((await server.get(`/v1/customers/${c.id}/credit_grants`)).json.data, []);
});

test('running low buys exactly one bundle however many deductions race past the threshold, and the balance goes on', async () => {
  const { c, stripeId } = await customerWithCard('bundle_auto', 'pm_card_visa');
  assert.equal((await server.post('/v1/credits/grants', { customer: c.id, id: `gift-${c.id}`, amount: 300 })).status, 201);
  const initial = await server.get(`/v1/customers/${c.id}/auto_purchase`);
  assert.deepEqual([initial.json.enabled, initial.json.bundle, initial.json.pending_purchase], [false, null, null]);
  const set = await server.post(`/v1/customers/${c.id}/auto_purchase`, { threshold: 200, bundle: 'credits_1000', max_per_month: 3 });
  assert.equal(set.status, 200, set.text);
  assert.deepEqual([set.json.enabled, set.json.paused, set.json.threshold, set.json.bundle, set.json.max_per_month],
    [true, false, 200, 'credits_1000', 3]);
  // 30 deductions of 5 at once: the balance falls from 300 to 150, past 200 once.
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) =>
    server.post('/v1/credits/deduct', { customer: c.id, id: `auto-d-${i}`, amount: 5 })));
  for (const r of results) assert.equal(r.status, 200, r.text);
  await until(async () => (await server.get(`/v1/customers/${c.id}/credits`)).json.total === 1150, 'the bought bundle');
  await until(() => eventsOf('credits.auto_purchase_succeeded', c.id).length === 1, 'credits.auto_purchase_succeeded');
  const bought = eventsOf('credits.auto_purchase_succeeded', c.id)[0].data.object;
  assert.deepEqual([bought.object, bought.purchase.status, bought.purchase.source, bought.purchases_this_month, bought.pending_purchase],
    ['auto_purchase', 'succeeded', 'auto', 1, null]);
  const auto = (await server.get(`/v1/customers/${c.id}/auto_purchase`)).json;
  assert.deepEqual([auto.purchases_this_month, auto.pending_purchase, auto.failures], [1, null, 0]);
  assert.equal((await stripe.paymentIntents.list({ customer: stripeId })).data.length, 1);
  const feed = (await server.get(`/v1/customers/${c.id}/notifications`)).json.data;
  assert.ok(feed.some((n) => n.kind === 'credits.auto_purchase_succeeded'), JSON.stringify(feed));
  // The balance continues: spending goes on from the bundle.
  const next = await server.post('/v1/credits/deduct', { customer: c.id, id: 'auto-after', amount: 100 });
  assert.equal(next.status, 200, next.text);
  // Promotional credits go before paid ones: the 150 left of the gift pay for it, the bundle is untouched.
  assert.deepEqual([next.json.balance.promotional, next.json.balance.bundle, next.json.balance.total], [50, 1000, 1050]);
  const listed = (await server.get(`/v1/customers/${c.id}/credit_purchases`)).json.data;
  assert.equal(listed.filter((p) => p.source === 'auto').length, 1);
});

test('a failing card: each failure is announced, and the third turns auto-purchase off and says why', async () => {
  const { c } = await customerWithCard('bundle_auto_fail', 'pm_card_chargeCustomerFail');
  assertError(await server.post(`/v1/customers/${c.id}/auto_purchase/trigger`), 400, 'parameter_invalid', 'customer');
  assert.equal((await server.post(`/v1/customers/${c.id}/auto_purchase`, { threshold: 100, bundle: 'credits_5000' })).status, 200);
  assert.equal((await server.post('/v1/credits/grants', { customer: c.id, id: `gift-${c.id}`, amount: 120 })).status, 201);
  assert.equal((await server.post('/v1/credits/deduct', { customer: c.id, id: 'fail-d-1', amount: 30 })).status, 200);
  await until(() => eventsOf('credits.auto_purchase_failed', c.id).length === 1, 'the first failure');
  let state = (await server.get(`/v1/customers/${c.id}/auto_purchase`)).json;
  assert.equal(state.failures, 1);
  assert.ok(state.pending_purchase && state.next_attempt_at > 0, JSON.stringify(state));
  // An admin forces the retries now: the second failure, then the third disables it.
  const second = await server.post(`/v1/customers/${c.id}/auto_purchase/trigger`);
  assert.equal(second.status, 200, second.text);
  assert.equal(second.json.status, 'pending');
  const third = await server.post(`/v1/customers/${c.id}/auto_purchase/trigger`);
  assert.equal(third.status, 200, third.text);
  assert.deepEqual([third.json.status, third.json.failure_code], ['failed', 'card_declined']);
  state = (await server.get(`/v1/customers/${c.id}/auto_purchase`)).json;
  assert.deepEqual([state.enabled, state.failures, state.pending_purchase], [false, 3, null]);
  assert.match(state.disabled_reason, /3 failed payments/);
  await until(() => eventsOf('credits.auto_purchase_failed', c.id).length === 3, 'three failures announced');
  const last = eventsOf('credits.auto_purchase_failed', c.id).map((e) => e.data.object).find((o) => !o.enabled);
  assert.ok(last, 'the last failure says auto-purchase is off');
  assert.equal((await server.post('/v1/credits/deduct', { customer: c.id, id: 'fail-d-2', amount: 30 })).status, 200);
  assert.equal((await server.get(`/v1/customers/${c.id}/auto_purchase`)).json.pending_purchase, null);
  assert.equal((await server.get(`/v1/customers/${c.id}/credits`)).json.total, 60);
  const verify = spawnSync(BIN, ['ledger', 'verify', '--db', server.db], { encoding: 'utf8' });
  assert.equal(verify.status, 0, verify.stdout + verify.stderr);
});

test('bad auto-purchase settings are refused naming the parameter', async () => {
  const { c } = await customerWithCard('bundle_auto_bad', null);
  assertError(await server.post(`/v1/customers/${c.id}/auto_purchase`, { bundle: 'credits_1000' }), 400, 'parameter_missing', 'threshold');
  assertError(await server.post(`/v1/customers/${c.id}/auto_purchase`, { threshold: 10 }), 400, 'parameter_missing', 'bundle');
  assertError(await server.post(`/v1/customers/${c.id}/auto_purchase`, { threshold: -1, bundle: 'credits_1000' }), 400, 'parameter_invalid', 'threshold');
  assertError(await server.post(`/v1/customers/${c.id}/auto_purchase`, { threshold: 10, bundle: 'credits_7' }), 404, 'resource_missing', 'bundle');
  assertError(await server.post(`/v1/customers/${c.id}/auto_purchase`, { threshold: 10, bundle: 'credits_1000', max_per_month: 0 }), 400, 'parameter_invalid', 'max_per_month');
  assertError(await server.post(`/v1/customers/${c.id}/auto_purchase`, { threshold: 10, bundle: 'credits_1000', enabled: 'yes' }), 400, 'parameter_invalid', 'enabled');
  assertError(await server.get('/v1/customers/cus_nope/auto_purchase'), 404, 'resource_missing', 'id');
  const state = (await server.get(`/v1/customers/${c.id}/auto_purchase`)).json;
  assert.deepEqual([state.enabled, state.bundle], [false, null]);
});

test('an admin refunds a purchase through Tally: its credits come back at once, and the webhook after it changes nothing', async () => {
  const { c } = await customerWithCard('bundle_refund_api', 'pm_card_visa');
  assert.equal((await server.post('/v1/credits/purchases', { customer: c.id, bundle: 'credits_1000', id: 'ref-1' })).status, 201);
  assert.equal((await server.post('/v1/credits/deduct', { customer: c.id, id: 'ref-spend', amount: 100 })).status, 200);
  assertError(await server.post('/v1/credits/purchases/ref-1/refund', { amount: 1001 }), 400, 'parameter_invalid', 'amount');
  const part = await server.post('/v1/credits/purchases/ref-1/refund', { amount: 300, id: 'r1' });
  assert.equal(part.status, 200, part.text);
  assert.deepEqual([part.json.amount_refunded, part.json.credits_refunded, part.json.credits_refund_spent,
    part.json.credit_grant.remaining], [300, 300, 0, 600]);
  // The same refund id again is the same Stripe refund: nothing more.
  const again = await server.post('/v1/credits/purchases/ref-1/refund', { amount: 300, id: 'r1' });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.amount_refunded, 300);
  const rest = await server.post('/v1/credits/purchases/ref-1/refund');
  assert.equal(rest.status, 200, rest.text);
  assert.deepEqual([rest.json.amount_refunded, rest.json.credits_refunded, rest.json.credits_refund_spent,
    rest.json.credit_grant.remaining], [1000, 900, 100, 0]);
  await server.settle();
  const settled = await purchaseOf('ref-1');
  assert.deepEqual([settled.credits_refunded, settled.credits_refund_spent], [900, 100]);
  assertError(await server.post('/v1/credits/purchases/ref-1/refund'), 400, 'parameter_invalid', 'id');
  assertError(await server.post('/v1/credits/purchases/nope/refund'), 404, 'resource_missing', 'id');
  assertError(await server.post('/v1/credits/purchases/decl-1/refund'), 400, 'parameter_invalid', 'id');
  const verify = spawnSync(BIN, ['ledger', 'verify', '--db', server.db], { encoding: 'utf8' });
  assert.equal(verify.status, 0, verify.stdout + verify.stderr);
});
