// Subscriptions through Tally (issue 11, item 5): created, changed, paused and canceled with Tally's API, each
// call going to Stripe (the sandbox, driven and read back with the official SDK) and its answer applied at once
// under the events' ordering rules, so the webhooks that follow change nothing and the app hears of each change
// once. Customer sessions read their own subscriptions; only owners and admins change them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import Stripe from 'stripe';
import { startTally } from './harness.mjs';

let server;
let stripe;
let rx;
before(async () => {
  server = await startTally({ TALLY_EVENT_RETRY_BASE_MS: '50' });
  stripe = new Stripe('sk_test_subscriptions', { host: '127.0.0.1', port: server.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
  rx = await startReceiver();
  const registered = await server.post('/v1/webhook_endpoints', { url: rx.url, enabled_events: ['*'] });
  assert.equal(registered.status, 201, registered.text);
});
after(async () => { await rx?.close(); await server.stop(); });

function assertError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.json?.error, 'object', r.text);
  for (const k of ['type', 'code', 'message', 'param']) assert.ok(k in r.json.error, `missing ${k}: ${r.text}`);
  if (code) assert.equal(r.json.error.code, code, r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
}

async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function startReceiver() {
  const received = [];
  const srv = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
      try { received.push(JSON.parse(raw)); } catch { /* not an event */ }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}/hooks`, received, close: () => new Promise((r) => srv.close(r)) };
}

/** The app events about subscription |id|, in the order they were emitted. */
function eventsFor(id) {
  const seen = new Map();
  for (const e of rx.received) if (e?.data?.object?.id === id) seen.set(e.id, e);
  return [...seen.values()].sort((a, b) => a.sequence - b.sequence);
}

/**
 * Waits until the sandbox has sent every webhook so far and Tally has applied them. Each step of a person's
 * session is seconds apart; here the calls would otherwise race their own webhooks, which all carry the test
 * clock's one frozen second (see the README's note on same-second changes).
 */
async function quiet() {
  const count = async () => {
    const r = await fetch(`http://127.0.0.1:${server.sandboxPort}/v1/test_helpers/webhook_deliveries`,
      { headers: { authorization: 'Bearer sk_test_quiet' } });
    return (await r.json()).data.length;
  };
  let last = -1;
  for (;;) {
    const n = await count();
    if (n === last) break;
    last = n;
    await new Promise((r) => setTimeout(r, 200));
  }
  await server.settle();
}

async function createCustomer(externalId, extra = {}) {
  const r = await server.post('/v1/customers', { external_id: externalId, email: `${externalId}@example.com`, ...extra });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

/** Gives |customer| a Stripe customer (through a checkout) and a default card; returns the Stripe customer id. */
async function addCard(customer, token = 'pm_card_visa') {
  const checkout = await server.post('/v1/checkout_sessions', { customer: customer.id, plan: 'starter' });
  assert.equal(checkout.status, 200, checkout.text);
  const stripeId = await until(async () => (await server.get(`/v1/customers/${customer.id}`)).json.stripe_customer_id,
    'the Stripe customer link');
  const pm = await stripe.paymentMethods.attach(token, { customer: stripeId });
  await stripe.customers.update(stripeId, { invoice_settings: { default_payment_method: pm.id } });
  return stripeId;
}

async function session(customer, user) {
  const r = await server.post('/v1/customer_sessions', { customer, user });
  assert.equal(r.status, 201, r.text);
  return r.json.token;
}

test('the walkthrough: a trial for an organization, a member refused, an upgrade invoiced as previewed, pause, cancel', async () => {
  const org = await createCustomer('sub_org', { type: 'organization', name: 'Acme' });
  for (const [user, role] of [['sub_owner', 'owner'], ['sub_member', 'member']]) {
    const r = await server.post(`/v1/customers/${org.id}/members`, { user, role });
    assert.equal(r.status, 201, r.text);
  }

  // A trial without a card starts trialing at once, and Stripe has it.
  const created = await server.post('/v1/subscriptions', { customer: org.id, plan: 'starter', trial_period_days: 14 });
  assert.equal(created.status, 201, created.text);
  const trial = created.json;
  assert.equal(trial.object, 'subscription');
  assert.equal(trial.status, 'trialing');
  assert.equal(trial.plan, 'starter');
  assert.equal(trial.customer, org.id);
  assert.ok(trial.trial_end > trial.current_period_start);
  const inStripe = await stripe.subscriptions.retrieve(trial.id);
  assert.equal(inStripe.status, 'trialing');
  assert.equal(inStripe.trial_settings.end_behavior.missing_payment_method, 'cancel');
  assert.equal(inStripe.metadata.tally_customer_id, org.id);
  // Already applied: the customer's plan follows without waiting for a webhook.
  const view = await server.get(`/v1/customers/${org.id}`);
  assert.equal(view.json.plan, 'starter', view.text);
  assert.equal((await server.get(`/v1/subscriptions/${trial.id}`)).json.status, 'trialing');
  await quiet();

  // The member reads the subscription and may not change it; the owner may.
  const memberToken = await session(org.id, 'sub_member');
  const ownerToken = await session(org.id, 'sub_owner');
  const read = await server.get(`/v1/subscriptions/${trial.id}`, { key: memberToken });
  assert.equal(read.status, 200, read.text);
  const listed = await server.get(`/v1/customers/${org.id}/subscriptions`, { key: memberToken });
  assert.deepEqual(listed.json.data.map((s) => s.id), [trial.id]);
  assertError(await server.post(`/v1/subscriptions/${trial.id}/cancel`, { at_period_end: true }, { key: memberToken }),
    403, 'permission_denied');
  assertError(await server.post('/v1/subscriptions', { customer: org.id, plan: 'pro', trial_period_days: 3 }, { key: memberToken }),
    403, 'permission_denied');
  assert.equal((await stripe.subscriptions.retrieve(trial.id)).cancel_at_period_end, false, 'the refused write reached Stripe');

  // The owner cancels the trial at once; a customer with a card then subscribes without a trial.
  const ended = await server.post(`/v1/subscriptions/${trial.id}/cancel`, { at_period_end: false }, { key: ownerToken });
  assert.equal(ended.status, 200, ended.text);
  assert.equal(ended.json.status, 'canceled');
  await quiet();
  await addCard(org);
  const paid = await server.post('/v1/subscriptions', { customer: org.id, plan: 'starter' }, { key: ownerToken });
  assert.equal(paid.status, 201, paid.text);
  assert.equal(paid.json.status, 'active');
  const sub = paid.json;
  await quiet();

  // The upgrade's preview, pinned to a proration date, is what the change invoices.
  const preview = await server.post(`/v1/subscriptions/${sub.id}/preview_change`, { plan: 'pro' }, { key: memberToken });
  assert.equal(preview.status, 200, preview.text);
  const p = preview.json;
  assert.equal(p.object, 'subscription_change_preview');
  assert.ok(p.proration_date >= sub.current_period_start && p.proration_date < sub.current_period_end, preview.text);
  assert.ok(p.lines.length >= 2 && p.lines.every((l) => l.proration), preview.text);
  assert.equal(p.amount_due, p.lines.reduce((a, l) => a + l.amount, 0));
  assert.ok(p.amount_due > 0 && p.amount_due <= 3000, preview.text);  // pro minus starter, for the rest of the month
  assert.equal(p.next_invoice_total, 6000);
  assert.equal(p.next_invoice_at, sub.current_period_end);
  const before = (await server.get(`/v1/customers/${org.id}/invoices`)).json.data.map((i) => i.id);
  const changed = await server.post(`/v1/subscriptions/${sub.id}/change`,
    { plan: 'pro', interval: 'month', proration_date: p.proration_date }, { key: ownerToken });
  assert.equal(changed.status, 200, changed.text);
  assert.equal(changed.json.plan, 'pro');
  assert.equal(changed.json.unit_amount, 6000);
  await quiet();
  const invoice = await until(async () => {
    const list = (await server.get(`/v1/customers/${org.id}/invoices`)).json.data;
    return list.find((i) => !before.includes(i.id) && i.status === 'paid');
  }, 'the proration invoice');
  assert.equal(invoice.amount_due, p.amount_due, 'the invoice equals the preview');
  assert.equal(invoice.subscription, sub.id);

  // Cancel at the period end, and undo it; pause collection and resume it.
  const pending = await server.post(`/v1/subscriptions/${sub.id}/cancel`, { at_period_end: true }, { key: ownerToken });
  assert.equal(pending.status, 200, pending.text);
  assert.equal(pending.json.cancel_at_period_end, true);
  assert.equal(pending.json.status, 'active');
  await quiet();
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).cancel_at_period_end, true);
  const resumed = await server.post(`/v1/subscriptions/${sub.id}/resume`, undefined, { key: ownerToken });
  assert.equal(resumed.status, 200, resumed.text);
  assert.equal(resumed.json.cancel_at_period_end, false);
  await quiet();
  assertError(await server.post(`/v1/subscriptions/${sub.id}/resume`), 409, 'subscription_not_changeable', 'id');
  const paused = await server.post(`/v1/subscriptions/${sub.id}/pause`, { behavior: 'keep_as_draft' });
  assert.equal(paused.status, 200, paused.text);
  assert.deepEqual(paused.json.pause_collection, { behavior: 'keep_as_draft' });
  await quiet();
  assert.deepEqual((await stripe.subscriptions.retrieve(sub.id)).pause_collection?.behavior, 'keep_as_draft');
  const unpaused = await server.post(`/v1/subscriptions/${sub.id}/unpause`);
  assert.equal(unpaused.status, 200, unpaused.text);
  assert.equal(unpaused.json.pause_collection, null);
  await quiet();

  // An immediate cancel, crediting the unused time.
  const canceled = await server.post(`/v1/subscriptions/${sub.id}/cancel`, { at_period_end: false, prorate: true });
  assert.equal(canceled.status, 200, canceled.text);
  assert.equal(canceled.json.status, 'canceled');
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'canceled');
  assertError(await server.post(`/v1/subscriptions/${sub.id}/cancel`, {}), 409, 'subscription_not_changeable', 'id');
  await server.settle();
  assert.equal((await server.get(`/v1/subscriptions/${sub.id}`)).json.status, 'canceled', 'a webhook moved it back');

  // The app heard each change once, when Tally answered; the webhooks that followed added nothing.
  await until(() => eventsFor(sub.id).some((e) => e.type === 'subscription.canceled'), 'the canceled event');
  await new Promise((r) => setTimeout(r, 300));
  const events = eventsFor(sub.id);
  const trace = JSON.stringify(events.map((e) => [e.type, e.data.object.status, e.data.previous_attributes]));
  assert.equal(events[0].type, 'subscription.created', trace);
  // Once active, never back to incomplete: the creation's own older webhooks were stale against Tally's answer.
  // (If those webhooks won the race to Tally, the app saw incomplete first, then active, and nothing more.)
  const statuses = events.map((e) => e.data.object.status);
  assert.ok(!statuses.slice(statuses.indexOf('active')).includes('incomplete'), trace);
  const changes = events.slice(1).filter((e) => e.data.previous_attributes?.status !== 'incomplete');
  assert.deepEqual(changes.map((e) => e.type), ['subscription.updated', 'subscription.updated', 'subscription.updated',
    'subscription.updated', 'subscription.updated', 'subscription.canceled'], trace);
  assert.equal(changes[0].data.previous_attributes.plan, 'starter', trace);
  assert.equal(changes[0].data.previous_attributes.unit_amount, 3000, trace);
  assert.deepEqual(changes[1].data.previous_attributes, { cancel_at_period_end: false });
  assert.deepEqual(changes[2].data.previous_attributes, { cancel_at_period_end: true });
  assert.deepEqual(changes[3].data.previous_attributes, { pause_collection: null });
  assert.deepEqual(changes[4].data.previous_attributes, { pause_collection: { behavior: 'keep_as_draft' } });
  assert.equal(changes[5].data.object.status, 'canceled');
  const trialEvents = eventsFor(trial.id).map((e) => e.type);
  assert.deepEqual(trialEvents, ['subscription.created', 'subscription.canceled']);
});

test('no trial and no card is a 402 pointing to Checkout, and nothing reaches Stripe', async () => {
  const c = await createCustomer('sub_nocard');
  const r = await server.post('/v1/subscriptions', { customer: c.id, plan: 'pro' });
  assertError(r, 402, 'payment_method_required', 'payment_method');
  assert.match(r.json.error.message, /checkout/i);
  const linked = (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id;
  if (linked) assert.equal((await stripe.subscriptions.list({ customer: linked, status: 'all' })).data.length, 0);
  assert.equal((await server.get(`/v1/customers/${c.id}/subscriptions`)).json.data.length, 0);

  // A card that declines: Stripe refuses the first payment and creates nothing.
  const declining = await createCustomer('sub_declined');
  const stripeId = await addCard(declining, 'pm_card_chargeCustomerFail');
  const refused = await server.post('/v1/subscriptions', { customer: declining.id, plan: 'pro' });
  assertError(refused, 402, 'card_declined');
  assert.equal(refused.json.error.type, 'card_error');
  assert.equal((await stripe.subscriptions.list({ customer: stripeId, status: 'all' })).data.length, 0);
});

test('bad input changes nothing, in Tally or in Stripe', async () => {
  const c = await createCustomer('sub_bad');
  const made = await server.post('/v1/subscriptions', { customer: c.id, plan: 'starter', trial_period_days: 7 });
  assert.equal(made.status, 201, made.text);
  const id = made.json.id;
  const cases = [
    [['POST', '/v1/subscriptions', { customer: c.id, plan: 'gold', trial_period_days: 7 }], 400, 'parameter_invalid', 'plan'],
    [['POST', '/v1/subscriptions', { customer: c.id, plan: 'free', trial_period_days: 7 }], 400, 'parameter_invalid', 'plan'],
    [['POST', '/v1/subscriptions', { customer: c.id, plan: 'pro', interval: 'week', trial_period_days: 7 }], 400, 'parameter_invalid', 'interval'],
    [['POST', '/v1/subscriptions', { customer: c.id, plan: 'pro', trial_period_days: 0 }], 400, 'parameter_invalid', 'trial_period_days'],
    [['POST', '/v1/subscriptions', { customer: c.id, plan: 'pro', trial_period_days: '7' }], 400, 'parameter_invalid', 'trial_period_days'],
    [['POST', '/v1/subscriptions', { customer: c.id, plan: 'pro', coupon: 'x' }], 400, 'parameter_unknown', 'coupon'],
    [['POST', '/v1/subscriptions', { plan: 'pro' }], 400, 'parameter_missing', 'customer'],
    [['POST', '/v1/subscriptions', { customer: 'cust_nope', plan: 'pro', trial_period_days: 7 }], 404, 'resource_missing', 'customer'],
    [['POST', '/v1/subscriptions', { customer: c.id, plan: 'pro', payment_method: 'card_123' }], 400, 'parameter_invalid', 'payment_method'],
    [['RAW', '/v1/subscriptions', '{"customer":'], 400, 'malformed_json'],
    [['GET', '/v1/subscriptions/sub_nope'], 404, 'resource_missing', 'id'],
    [['POST', '/v1/subscriptions/sub_nope/cancel', {}], 404, 'resource_missing', 'id'],
    [['POST', `/v1/subscriptions/${id}/change`, { plan: 'pro', at: 'tomorrow' }], 400, 'parameter_invalid', 'at'],
    [['POST', `/v1/subscriptions/${id}/change`, { plan: 'pro', at: 'period_end', proration_date: 1 }], 400,
      'parameter_invalid', 'proration_date'],
    // A trial changes plan now, for free; a schedule would have to carry the trial over.
    [['POST', `/v1/subscriptions/${id}/change`, { plan: 'pro', at: 'period_end' }], 409, 'subscription_not_changeable', 'at'],
    [['POST', `/v1/subscriptions/${id}/change`, { plan: 'starter' }], 400, 'parameter_invalid', 'plan'],
    [['POST', `/v1/subscriptions/${id}/change`, { plan: 'pro', proration_date: 1 }], 400, 'parameter_invalid', 'proration_date'],
    [['POST', `/v1/subscriptions/${id}/preview_change`, {}], 400, 'parameter_missing', 'plan'],
    [['POST', `/v1/subscriptions/${id}/cancel`, { at_period_end: 'yes' }], 400, 'parameter_invalid', 'at_period_end'],
    [['POST', `/v1/subscriptions/${id}/cancel`, { at_period_end: true, prorate: true }], 400, 'parameter_invalid', 'prorate'],
    [['POST', `/v1/subscriptions/${id}/pause`, { behavior: 'forever' }], 400, 'parameter_invalid', 'behavior'],
    [['POST', `/v1/subscriptions/${id}/unpause`, {}], 409, 'subscription_not_changeable', 'id'],
    [['GET', '/v1/subscriptions?status=sleeping'], 400, 'parameter_invalid', 'status'],
    [['GET', '/v1/subscriptions?color=red'], 400, 'parameter_unknown', 'color'],
    [['GET', '/v1/subscriptions?starting_after=sub_nope'], 404, 'resource_missing', 'starting_after'],
  ];
  for (const [[method, path, body], status, code, param] of cases) {
    const r = method === 'RAW'
      ? await server.request('POST', path, { raw: body, headers: { 'content-type': 'application/json' } })
      : await server.request(method, path, body === undefined ? {} : { body });
    assertError(r, status, code, param);
  }
  const linked = (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id;
  const all = await stripe.subscriptions.list({ customer: linked, status: 'all' });
  assert.deepEqual(all.data.map((s) => s.id), [id]);
  assert.equal(all.data[0].cancel_at_period_end, false);
  assert.equal(all.data[0].schedule, null);
  assert.equal(all.data[0].items.data[0].price.lookup_key, 'starter_monthly');
  assert.equal((await server.get(`/v1/subscriptions/${id}`)).json.plan, 'starter');
});

test('an Idempotency-Key replays the first answer and never makes a second Stripe subscription', async () => {
  const c = await createCustomer('sub_idem');
  const body = { customer: c.id, plan: 'pro', trial_period_days: 5 };
  const headers = { 'idempotency-key': 'create-sub-idem-1' };
  const first = await server.post('/v1/subscriptions', body, { headers });
  assert.equal(first.status, 201, first.text);
  const again = await server.post('/v1/subscriptions', body, { headers });
  assert.equal(again.status, 201, again.text);
  assert.equal(again.json.id, first.json.id);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assertError(await server.post('/v1/subscriptions', { ...body, plan: 'scale' }, { headers }), 400, 'idempotency_error');
  const linked = (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id;
  assert.equal((await stripe.subscriptions.list({ customer: linked, status: 'all' })).data.length, 1);
  const cancelHeaders = { 'idempotency-key': 'cancel-sub-idem-1' };
  const canceled = await server.post(`/v1/subscriptions/${first.json.id}/cancel`, { at_period_end: true }, { headers: cancelHeaders });
  assert.equal(canceled.status, 200, canceled.text);
  const replay = await server.post(`/v1/subscriptions/${first.json.id}/cancel`, { at_period_end: true }, { headers: cancelHeaders });
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.text, canceled.text);
});

test('20 concurrent first calls for a customer create exactly one Stripe customer', async () => {
  const c = await createCustomer('sub_race', { email: 'race@example.com' });
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    server.post('/v1/subscriptions', { customer: c.id, plan: 'starter', trial_period_days: 3 },
      { headers: { 'idempotency-key': `race-${i}` } })));
  for (const r of results) assert.equal(r.status, 201, r.text);
  const stripeCustomers = (await stripe.customers.list({ email: 'race@example.com', limit: 100 })).data;
  assert.equal(stripeCustomers.length, 1, JSON.stringify(stripeCustomers.map((x) => x.id)));
  const linked = (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id;
  assert.equal(linked, stripeCustomers[0].id);
  assert.ok(results.every((r) => r.json.stripe_customer_id === linked));
  assert.equal((await server.get(`/v1/customers/${c.id}/subscriptions`)).json.data.length, 20);
});

test('lists: the admin pages and filters; a session sees only its customer', async () => {
  const a = await createCustomer('sub_list_a', { type: 'organization' });
  const b = await createCustomer('sub_list_b');
  await server.post(`/v1/customers/${a.id}/members`, { user: 'list_owner', role: 'owner' });
  const ids = [];
  for (const [customer, plan] of [[a.id, 'starter'], [a.id, 'scale'], [b.id, 'scale']]) {
    const r = await server.post('/v1/subscriptions', { customer, plan, trial_period_days: 10 });
    assert.equal(r.status, 201, r.text);
    ids.push(r.json.id);
  }
  const scale = (await server.get('/v1/subscriptions?plan=scale&status=trialing&limit=100')).json;
  for (const id of [ids[1], ids[2]]) assert.ok(scale.data.some((s) => s.id === id));
  assert.ok(scale.data.every((s) => s.plan === 'scale' && s.status === 'trialing'));
  // Newest first, one page at a time.
  const page1 = (await server.get('/v1/subscriptions?limit=2')).json;
  assert.equal(page1.data.length, 2);
  assert.equal(page1.has_more, true);
  const page2 = (await server.get(`/v1/subscriptions?limit=2&starting_after=${page1.data[1].id}`)).json;
  assert.ok(page2.data.every((s) => !page1.data.some((x) => x.id === s.id)));
  const token = await session(a.id, 'list_owner');
  const own = (await server.get(`/v1/customers/${a.id}/subscriptions`, { key: token })).json;
  assert.deepEqual(own.data.map((s) => s.id).sort(), [ids[0], ids[1]].sort());
  // Another customer's subscription and the admin list read as missing.
  assertError(await server.get(`/v1/subscriptions/${ids[2]}`, { key: token }), 404, 'resource_missing', 'id');
  assertError(await server.post(`/v1/subscriptions/${ids[2]}/cancel`, {}, { key: token }), 404, 'resource_missing', 'id');
  assertError(await server.get('/v1/subscriptions', { key: token }), 404);
  assertError(await server.get(`/v1/customers/${b.id}/subscriptions`, { key: token }), 404, 'resource_missing');
  assertError(await server.post('/v1/subscriptions', { customer: b.id, plan: 'pro', trial_period_days: 2 }, { key: token }),
    404, 'resource_missing', 'customer');
});

// Runs last: it advances the sandbox's one test clock past every subscription's period end.
test('a downgrade at period end goes through a Stripe subscription schedule and happens when the clock gets there', async () => {
  const org = await createCustomer('sub_sched_org', { type: 'organization' });
  await server.post(`/v1/customers/${org.id}/members`, { user: 'sched_owner', role: 'owner' });
  await server.post(`/v1/customers/${org.id}/members`, { user: 'sched_member', role: 'member' });
  await addCard(org);
  const made = await server.post('/v1/subscriptions', { customer: org.id, plan: 'pro' });
  assert.equal(made.status, 201, made.text);
  const sub = made.json;
  assert.equal(sub.pending_change, null);
  await quiet();

  // A member may not schedule it; an owner may. Nothing changes now: the pending change shows on the subscription.
  const memberToken = await session(org.id, 'sched_member');
  const ownerToken = await session(org.id, 'sched_owner');
  assertError(await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'starter', at: 'period_end' },
    { key: memberToken }), 403, 'permission_denied');
  const scheduled = await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'starter', at: 'period_end' },
    { key: ownerToken });
  assert.equal(scheduled.status, 200, scheduled.text);
  assert.equal(scheduled.json.plan, 'pro');
  assert.equal(scheduled.json.unit_amount, 6000);
  assert.equal(scheduled.json.pending_change.plan, 'starter', scheduled.text);
  assert.equal(scheduled.json.pending_change.effective_at, sub.current_period_end);
  assert.equal(scheduled.json.pending_change.quantity, 1);
  const inStripe = await stripe.subscriptions.retrieve(sub.id);
  assert.match(inStripe.schedule, /^sub_sched_/);
  const schedule = await stripe.subscriptionSchedules.retrieve(inStripe.schedule);
  assert.equal(schedule.status, 'active');
  assert.equal(schedule.end_behavior, 'release');
  assert.deepEqual(schedule.phases.map((ph) => [ph.start_date, ph.items[0].price]),
    [[sub.current_period_start, inStripe.items.data[0].price.id], [sub.current_period_end, scheduled.json.pending_change.price]]);
  await quiet();
  const afterWebhooks = (await server.get(`/v1/subscriptions/${sub.id}`)).json;
  assert.deepEqual(afterWebhooks.pending_change, scheduled.json.pending_change, 'the webhooks changed what Tally answered');

  // Scheduling it again is the same answer; asking for the current plan drops it (the schedule is released).
  const again = await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'starter', at: 'period_end' });
  assert.deepEqual(again.json.pending_change, scheduled.json.pending_change);
  const dropped = await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'pro', at: 'period_end' });
  assert.equal(dropped.status, 200, dropped.text);
  assert.equal(dropped.json.pending_change, null);
  assert.equal((await stripe.subscriptionSchedules.retrieve(schedule.id)).status, 'released');
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).schedule, null);
  await quiet();
  const rescheduled = await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'starter', at: 'period_end' });
  assert.equal(rescheduled.json.pending_change.plan, 'starter', rescheduled.text);
  assert.notEqual(rescheduled.json.pending_change.schedule, schedule.id);
  await quiet();

  // The period ends on the sandbox clock: the subscription renews on starter, invoiced at starter's price.
  await stripe.testHelpers.testClocks.advance(server.testClock, { frozen_time: sub.current_period_end + 3600 });
  const downgraded = await until(async () => {
    const s = (await server.get(`/v1/subscriptions/${sub.id}`)).json;
    return s.plan === 'starter' && s.current_period_start === sub.current_period_end && s;
  }, 'the downgrade at period end');
  assert.equal(downgraded.unit_amount, 3000);
  assert.equal(downgraded.pending_change, null);
  assert.equal(downgraded.status, 'active');
  assert.equal((await server.get(`/v1/customers/${org.id}`)).json.plan, 'starter');
  const renewal = await until(async () => (await server.get(`/v1/customers/${org.id}/invoices`)).json.data
    .find((i) => i.created >= sub.current_period_end && i.status === 'paid'), 'the renewal invoice');
  assert.equal(renewal.amount_due, 3000);

  // The app heard: the change scheduled, dropped, scheduled again, then the plan moving at the period's end.
  await quiet();
  await until(() => eventsFor(sub.id).some((e) => e.data.previous_attributes?.plan === 'pro'), 'the plan change event');
  const trace = eventsFor(sub.id).map((e) => [e.type, e.data.previous_attributes]);
  const pendingMoves = trace.filter(([, prev]) => prev && 'pending_change' in prev);
  assert.deepEqual(pendingMoves.map(([, prev]) => prev.pending_change?.plan ?? null), [null, 'starter', null, 'starter'],
    JSON.stringify(trace));
  const planMoves = trace.filter(([, prev]) => prev && 'plan' in prev);
  assert.deepEqual(planMoves.map(([, prev]) => prev.plan), ['pro'], JSON.stringify(trace));
});
