// A plan's credits on the sandbox (issue 13): a subscription's period grant issued when Stripe reports the period,
// the 75/90/100% events once each, an upgrade mid-period granting the prorated difference once, and the events at
// the app's receiver.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { assertError, startReceiver, startTally, until } from './harness.mjs';

let server;
let stripe;
let rx;
before(async () => {
  server = await startTally({ TALLY_EVENT_RETRY_BASE_MS: '50' });
  stripe = new Stripe('sk_test_credit_plans', { host: '127.0.0.1', port: server.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
  rx = await startReceiver();
  const registered = await server.post('/v1/webhook_endpoints', { url: rx.url,
    enabled_events: ['credits.granted', 'credits.expired', 'credits.threshold_reached'] });
  assert.equal(registered.status, 201, registered.text);
});
after(async () => { await rx?.close(); await server?.stop(); });

const eventsOf = (type, customer) => {
  const byId = new Map();
  for (const e of rx.received) if (e.type === type && e.data.object.customer === customer) byId.set(e.id, e);
  return [...byId.values()];
};

async function subscribe(external, plan) {
  const c = (await server.post('/v1/customers', { external_id: external, email: `${external}@example.com` })).json;
  const checkout = await server.post('/v1/checkout_sessions', { customer: c.id, plan });
  assert.equal(checkout.status, 200, checkout.text);
  const stripeId = await until(async () => (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id,
    'the Stripe customer link');
  const pm = await stripe.paymentMethods.attach('pm_card_visa', { customer: stripeId });
  await stripe.customers.update(stripeId, { invoice_settings: { default_payment_method: pm.id } });
  const made = await server.post('/v1/subscriptions', { customer: c.id, plan });
  assert.equal(made.status, 201, made.text);
  return { c, sub: made.json };
}

test('the period grant is issued when the subscription is stored; 75, 90 and 100% used are announced once each', async () => {
  const { c, sub } = await subscribe('credit_plan_starter', 'starter');
  // Issued with the subscription, before any deduction: it is in the ledger and at the receiver.
  const grants = (await server.get(`/v1/customers/${c.id}/credit_grants`)).json.data;
  assert.equal(grants.length, 1);
  assert.deepEqual([grants[0].type, grants[0].amount, grants[0].expires_at, grants[0].transfer],
    ['subscription', 1000, sub.current_period_end, `period:${sub.id}:${sub.current_period_start}`]);
  await until(() => eventsOf('credits.granted', c.id).length === 1, 'credits.granted');
  assert.equal(eventsOf('credits.granted', c.id)[0].data.object.id, grants[0].id);
  const balance = (await server.get(`/v1/customers/${c.id}/credits`)).json;
  assert.deepEqual([balance.subscription_credits, balance.plan, balance.next_reset_at, balance.period_start],
    [1000, 'starter', sub.current_period_end, sub.current_period_start]);

  const spend = async (id, amount) => {
    const r = await server.post('/v1/credits/deduct', { customer: c.id, id, amount });
    assert.equal(r.status, 200, r.text);
    return r.json;
  };
  await spend('t-1', 700);
  await spend('t-2', 60);   // 76%: 75 reached
  await spend('t-3', 140);  // 90%
  await until(() => eventsOf('credits.threshold_reached', c.id).length === 2, 'the 75% and 90% events');
  // Back under 90% and over it again: not announced twice.
  assert.equal((await server.post('/v1/credits/transfers/t-3/reverse')).status, 200);
  await spend('t-4', 140);
  await spend('t-5', 100);  // 100%
  await until(() => eventsOf('credits.threshold_reached', c.id).length === 3, 'the 100% event');
  const thresholds = eventsOf('credits.threshold_reached', c.id).map((e) => e.data.object);
  assert.deepEqual(thresholds.map((o) => o.threshold).sort((a, b) => a - b), [75, 90, 100]);
  for (const o of thresholds) {
    assert.deepEqual([o.object, o.grant, o.allowance, o.period_start, o.period_end],
      ['credit_threshold', grants[0].id, 1000, sub.current_period_start, sub.current_period_end]);
  }
  assert.equal(thresholds.find((o) => o.threshold === 100).used, 1000);
  assert.equal((await server.get(`/v1/customers/${c.id}/credits`)).json.used_this_period, 1000);

  // The same moments in the customer's notification feed, newest first; dismissing hides one.
  const feed = (await server.get(`/v1/customers/${c.id}/notifications`)).json.data;
  assert.deepEqual(feed.map((n) => [n.kind, n.data.threshold ?? n.data.amount]),
    [['credits.threshold_reached', 100], ['credits.threshold_reached', 90], ['credits.threshold_reached', 75],
      ['credits.granted', 1000]]);
  assert.equal(feed[0].message, "100% of this period's 1000 subscription credits used");
  const dismissed = await server.post(`/v1/customers/${c.id}/notifications/${feed[0].id}/dismiss`);
  assert.equal(dismissed.status, 200, dismissed.text);
  assert.ok(dismissed.json.dismissed_at > 0);
  const again = await server.post(`/v1/customers/${c.id}/notifications/${feed[0].id}/dismiss`);
  assert.equal(again.json.dismissed_at, dismissed.json.dismissed_at);
  assert.equal((await server.get(`/v1/customers/${c.id}/notifications`)).json.data.length, 3);
  assert.equal((await server.get(`/v1/customers/${c.id}/notifications?include_dismissed=true`)).json.data.length, 4);
  const page = (await server.get(`/v1/customers/${c.id}/notifications?limit=2`)).json;
  assert.equal(page.has_more, true);
  const rest = (await server.get(`/v1/customers/${c.id}/notifications?starting_after=${page.data[1].id}`)).json.data;
  assert.deepEqual(rest.map((n) => n.kind), ['credits.granted']);
  assertError(await server.post(`/v1/customers/${c.id}/notifications/ntf_nope/dismiss`), 404, 'resource_missing', 'notification');
  assertError(await server.get(`/v1/customers/${c.id}/notifications?include_dismissed=maybe`), 400, 'parameter_invalid', 'include_dismissed');
});

test('a customer turns a kind of notification off: the event still goes to the app, the feed keeps nothing of it', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'credit_plan_prefs', type: 'organization' })).json;
  await server.post(`/v1/customers/${c.id}/members`, { user: 'prefs_owner', role: 'owner' });
  const token = (await server.post('/v1/customer_sessions', { customer: c.id, user: 'prefs_owner' })).json.token;
  const prefs = await server.get(`/v1/customers/${c.id}/notification_preferences`, { key: token });
  assert.deepEqual(prefs.json, { object: 'notification_preferences', customer: c.id,
    kinds: { 'credits.threshold_reached': true, 'credits.granted': true, 'credits.auto_purchase_succeeded': true,
      'credits.auto_purchase_failed': true } });
  const off = await server.post(`/v1/customers/${c.id}/notification_preferences`, { kinds: { 'credits.granted': false } }, { key: token });
  assert.equal(off.status, 200, off.text);
  assert.equal(off.json.kinds['credits.granted'], false);
  assertError(await server.post(`/v1/customers/${c.id}/notification_preferences`, { kinds: { 'credits.gift': false } }),
    400, 'parameter_invalid', 'kinds.credits.gift');
  assertError(await server.post(`/v1/customers/${c.id}/notification_preferences`, { kinds: { 'credits.granted': 'no' } }),
    400, 'parameter_invalid', 'kinds.credits.granted');
  assertError(await server.post(`/v1/customers/${c.id}/notification_preferences`, {}), 400, 'parameter_missing', 'kinds');
  const checkout = await server.post('/v1/checkout_sessions', { customer: c.id, plan: 'starter' });
  assert.equal(checkout.status, 200, checkout.text);
  const stripeId = await until(async () => (await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id, 'the link');
  const pm = await stripe.paymentMethods.attach('pm_card_visa', { customer: stripeId });
  await stripe.customers.update(stripeId, { invoice_settings: { default_payment_method: pm.id } });
  assert.equal((await server.post('/v1/subscriptions', { customer: c.id, plan: 'starter' })).status, 201);
  await until(() => eventsOf('credits.granted', c.id).length === 1, 'credits.granted at the app');
  assert.deepEqual((await server.get(`/v1/customers/${c.id}/notifications`, { key: token })).json.data, []);
  const other = (await server.post('/v1/customers', { external_id: 'credit_plan_prefs_other' })).json.id;
  assertError(await server.get(`/v1/customers/${other}/notifications`, { key: token }), 404, 'resource_missing', 'id');
  const audit = (await server.get(`/v1/audit?customer=${c.id}`)).json.data.map((e) => e.kind);
  assert.ok(audit.includes('notification_preferences_set'));
});

test('an upgrade mid-period grants the prorated difference once; a downgrade waits for the next period', async () => {
  const { c, sub } = await subscribe('credit_plan_upgrade', 'starter');
  const up = await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'pro', interval: 'month' });
  assert.equal(up.status, 200, up.text);
  const subscriptionGrants = async () =>
    (await server.get(`/v1/customers/${c.id}/credit_grants`)).json.data.filter((g) => g.type === 'subscription');
  const grants = await until(async () => { const g = await subscriptionGrants(); return g.length === 2 && g; }, 'the upgrade grant');
  const extra = grants.find((g) => g.transfer.endsWith(':upgrade:pro'));
  // 5,000 - 1,000 for the rest of the period: at most all of it, and the period has barely begun.
  const span = sub.current_period_end - sub.current_period_start;
  assert.ok(extra.amount <= 4000 && extra.amount >= Math.floor(4000 * (span - 600) / span), JSON.stringify(extra));
  assert.equal(extra.expires_at, sub.current_period_end);
  // Down and up again within the period: nothing more.
  assert.equal((await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'starter', interval: 'month' })).status, 200);
  assert.equal((await server.post(`/v1/subscriptions/${sub.id}/change`, { plan: 'pro', interval: 'month' })).status, 200);
  await until(async () => (await server.get(`/v1/subscriptions/${sub.id}`)).json.plan === 'pro', 'the last change');
  assert.equal((await subscriptionGrants()).length, 2);
  assert.equal((await server.get(`/v1/customers/${c.id}/credits`)).json.subscription_credits, 1000 + extra.amount);
  await until(() => eventsOf('credits.granted', c.id).length === 2, 'both credits.granted events');
});

test('a renewal expires the last period\'s rest (an expiry entry and credits.expired) and issues the new grant', async () => {
  const { c, sub } = await subscribe('credit_plan_renewal', 'starter');
  assert.equal((await server.post('/v1/credits/deduct', { customer: c.id, id: 'rn-1', amount: 100 })).status, 200);
  await stripe.testHelpers.testClocks.advance(server.testClock, { frozen_time: sub.current_period_end + 3600 });
  await until(async () => (await server.get(`/v1/subscriptions/${sub.id}`)).json.current_period_start === sub.current_period_end,
    'the renewal');
  const expiries = (await server.get(`/v1/customers/${c.id}/credit_transactions?type=expire`)).json.data;
  assert.equal(expiries.length, 1);
  assert.equal(expiries[0].amount, 900);
  await until(() => eventsOf('credits.expired', c.id).length === 1, 'credits.expired');
  const expired = eventsOf('credits.expired', c.id)[0];
  assert.deepEqual([expired.data.object.remaining, expired.data.previous_attributes.remaining], [0, 900]);
  const grants = (await server.get(`/v1/customers/${c.id}/credit_grants`)).json.data;
  assert.deepEqual(grants.map((g) => [g.type, g.amount, g.remaining]), [['subscription', 1000, 0], ['subscription', 1000, 1000]]);
  const verify = await server.post('/v1/credits/deduct', { customer: c.id, id: 'rn-2', amount: 1 });
  assert.equal(verify.json.balance.subscription, 999);
});
