// Plans at runtime (issue 11, item 4) over HTTP: the admin API creates, changes and archives plans; each change
// reaches the Stripe sandbox (read back with the official SDK) as products and prices, a new amount as a new price
// that takes the lookup key over while subscribers on the old price keep it; an archived plan is no longer sold; and
// a plan saved while Stripe is unreachable is pushed by the background retry once Stripe is back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import Stripe from 'stripe';
import { assertError, BIN, freePort, startTally, until } from './harness.mjs';

let server;
let stripe;
before(async () => {
  server = await startTally();
  stripe = new Stripe('sk_test_plans', { host: '127.0.0.1', port: server.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
});
after(async () => { await server.stop(); });

const synced = (id) => until(async () => {
  const r = await server.get(`/v1/plans/${id}`);
  return r.json?.stripe_sync === 'synced' ? r.json : undefined;
}, `plan ${id} pushed to Stripe`);

const active = (plan, interval) => plan.prices.find((p) => p.active && p.interval === interval);

test('the file seeds the database: the pricing page lists it, and Stripe has every paid price', async () => {
  const list = await server.get('/v1/plans', { key: null });
  assert.equal(list.status, 200);
  assert.deepEqual(list.json.data.map((p) => p.id), ['free', 'starter', 'pro', 'scale']);
  const pro = await synced('pro');
  assert.equal(pro.stripe_product_id, 'tally_pro');
  const monthly = active(pro, 'month');
  const inStripe = await stripe.prices.retrieve(monthly.stripe_price_id);
  assert.equal(inStripe.lookup_key, 'pro_monthly');
  assert.equal(inStripe.unit_amount, 6000);
  assert.equal(inStripe.product, 'tally_pro');
  assert.equal((await stripe.products.retrieve('tally_pro')).name, 'Pro');
});

test('a plan created through the API is sold at once, idempotently, with a feature new to the catalog', async () => {
  const body = { id: 'team', name: 'Team', role: 'professional', features: { sso: true }, limits: { seats: 25 },
    prices: [{ interval: 'month', unit_amount: 20000, currency: 'usd' }], credits_monthly: 10000 };
  const created = await server.post('/v1/plans', body, { headers: { 'idempotency-key': 'team-plan' } });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.json.stripe_sync, 'pending');
  assert.equal(created.json.prices[0].lookup_key, 'team_monthly');
  const replay = await server.post('/v1/plans', body, { headers: { 'idempotency-key': 'team-plan' } });
  assert.equal(replay.status, 201);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.text, created.text);
  assertError(await server.post('/v1/plans', { ...body, name: 'Other' }, { headers: { 'idempotency-key': 'team-plan' } }),
    400, 'idempotency_error');
  assertError(await server.post('/v1/plans', body), 409, 'resource_already_exists', 'id');
  const team = await synced('team');
  const price = await stripe.prices.retrieve(active(team, 'month').stripe_price_id);
  assert.equal(price.unit_amount, 20000);
  assert.equal(price.lookup_key, 'team_monthly');
  // The other plans gained the feature, off; the customer's entitlements show it.
  assert.equal((await server.get('/v1/plans/free')).json.features.sso, false);
  const customer = (await server.post('/v1/customers', { external_id: 'team_buyer' })).json;
  assert.equal((await server.get(`/v1/customers/${customer.id}/entitlements`)).json.features.sso, false);
  const checkout = await server.post('/v1/checkout_sessions', { customer: customer.id, plan: 'team' });
  assert.equal(checkout.status, 200, checkout.text);
  const session = await stripe.checkout.sessions.retrieve(checkout.json.id);
  assert.equal(session.amount_total, 20000);  // the team price's amount
  // A limit may be null: unlimited.
  const unlimited = await server.post('/v1/plans/team', { limits: { seats: null } });
  assert.equal(unlimited.status, 200, unlimited.text);
  assert.equal(unlimited.json.limits.seats, null);
  assertError(await server.post('/v1/plans/team', { limits: { seats: 'many' } }), 400, 'parameter_invalid', 'limits.seats');
  const member = (await server.post('/v1/customers', { external_id: 'team_member' })).json;
  assert.equal((await server.post('/v1/subscriptions', { customer: member.id, plan: 'team', trial_period_days: 7 })).status, 201);
  const seats = await server.post('/v1/check', { customer: member.id, meter: 'seats', amount: 1000000, record: true });
  assert.deepEqual([seats.json.allowed, seats.json.limit, seats.json.current], [true, null, 1000000]);
  assert.equal((await server.get(`/v1/customers/${member.id}/entitlements`)).json.limits.seats, null);
});

test('a new amount is a new price: subscribers keep the old one, new sales get the new one', async () => {
  const trialing = async (external) => {
    const c = (await server.post('/v1/customers', { external_id: external })).json;
    const s = await server.post('/v1/subscriptions', { customer: c.id, plan: 'pro', trial_period_days: 14 });
    assert.equal(s.status, 201, s.text);
    return s.json;
  };
  const before = await trialing('early_bird');
  assert.equal(before.unit_amount, 6000);
  const old = active(await synced('pro'), 'month');

  const changed = await server.post('/v1/plans/pro', {
    name: 'Pro 2027',
    prices: [{ interval: 'month', unit_amount: 7000, currency: 'usd' }, { interval: 'year', unit_amount: 60000, currency: 'usd' }],
  });
  assert.equal(changed.status, 200, changed.text);
  assert.equal(changed.json.prices.find((p) => p.id === old.id).active, false);
  assert.equal(active(changed.json, 'month').unit_amount, 7000);
  assert.equal(active(changed.json, 'month').lookup_key, 'pro_monthly');
  const pro = await synced('pro');
  const fresh = active(pro, 'month');
  // In Stripe: the key moved to the new price (transfer_lookup_key), the old price is inactive, the product renamed.
  const [oldInStripe, newInStripe] = await Promise.all([stripe.prices.retrieve(old.stripe_price_id),
    stripe.prices.retrieve(fresh.stripe_price_id)]);
  assert.equal(oldInStripe.active, false);
  assert.equal(oldInStripe.lookup_key, null);
  assert.equal(newInStripe.lookup_key, 'pro_monthly');
  assert.equal(newInStripe.unit_amount, 7000);
  assert.equal((await stripe.products.retrieve('tally_pro')).name, 'Pro 2027');
  // Grandfathered: the early subscriber is still on 6000 and still pro (with pro's role); a new one pays 7000.
  const kept = await server.get(`/v1/subscriptions/${before.id}`);
  assert.equal(kept.json.unit_amount, 6000);
  assert.equal(kept.json.plan, 'pro');
  assert.equal((await stripe.subscriptions.retrieve(before.id)).items.data[0].price.id, old.stripe_price_id);
  assert.equal((await server.get(`/v1/customers/${before.customer}`)).json.plan, 'pro');
  const after = await trialing('late_comer');
  assert.equal(after.unit_amount, 7000);
  // The public list shows only what is sold; an API key sees the replaced price too.
  const pub = (await server.get('/v1/plans', { key: null })).json.data.find((p) => p.id === 'pro');
  assert.deepEqual(pub.prices.map((p) => p.unit_amount).sort(), [60000, 7000].sort());
  const all = (await server.get('/v1/plans?include_archived=true')).json.data.find((p) => p.id === 'pro');
  assert.equal(all.prices.length, 3);
});

test('an archived plan is not sold, stays for its subscribers, and is listed only on request', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'starter_fan' })).json;
  const sub = (await server.post('/v1/subscriptions', { customer: c.id, plan: 'starter', trial_period_days: 7 })).json;
  const archived = await server.request('DELETE', '/v1/plans/starter');
  assert.equal(archived.status, 200, archived.text);
  assert.equal(archived.json.active, false);
  assert.equal(typeof archived.json.archived_at, 'number');
  assert.ok(!(await server.get('/v1/plans', { key: null })).json.data.some((p) => p.id === 'starter'));
  assertError(await server.get('/v1/plans?include_archived=true', { key: null }), 401, 'unauthorized');
  assert.ok((await server.get('/v1/plans?include_archived=true')).json.data.some((p) => p.id === 'starter'));
  assertError(await server.post('/v1/checkout_sessions', { customer: c.id, plan: 'starter' }), 400, 'plan_archived', 'plan');
  assertError(await server.post('/v1/subscriptions', { customer: c.id, plan: 'starter', trial_period_days: 7 }), 400,
    'plan_archived', 'plan');
  assert.equal((await server.get(`/v1/subscriptions/${sub.id}`)).json.plan, 'starter');
  assert.equal((await server.get(`/v1/customers/${c.id}`)).json.plan, 'starter');
  await synced('starter');
  assert.equal((await stripe.products.retrieve('tally_starter')).active, false);
  assertError(await server.request('DELETE', '/v1/plans/free'), 400, 'parameter_invalid', 'id');
});

test('bad input names its parameter and changes nothing', async () => {
  const before = (await server.get('/v1/plans?include_archived=true')).text;
  assertError(await server.post('/v1/plans', undefined, { raw: '{"id":' }), 400, 'malformed_json');
  assertError(await server.post('/v1/plans', { id: 'x', role: 'member', colour: 'red' }), 400, 'parameter_unknown', 'colour');
  assertError(await server.post('/v1/plans', { id: 5, role: 'member' }), 400, undefined, 'id');
  assertError(await server.post('/v1/plans', { id: 'a/b', role: 'member' }), 400, 'parameter_invalid', 'id');
  assertError(await server.post('/v1/plans', { id: 'x', role: 'wizard' }), 400, undefined, 'role');
  assertError(await server.post('/v1/plans', { id: 'x', role: 'member', prices: [{ interval: 'month', unit_amount: 100, currency: 'zzz' }] }),
    400, undefined, 'prices[0].currency');
  assertError(await server.post('/v1/plans/pro', { name: 7 }), 400, undefined, 'name');
  assertError(await server.post('/v1/plans/pro', { features: { ai_features: 'yes' } }), 400, undefined, 'features.ai_features');
  assertError(await server.post('/v1/plans/pro', { prices: [{ interval: 'fortnight', unit_amount: 1, currency: 'usd' }] }),
    400, undefined, 'prices[0].interval');
  assertError(await server.post('/v1/plans/pro', { role: 'member' }), 400, 'parameter_unknown', 'role');
  assertError(await server.get('/v1/plans/nope'), 404, 'resource_missing', 'id');
  assertError(await server.post('/v1/plans/nope', { name: 'x' }), 404, 'resource_missing', 'id');
  assertError(await server.request('DELETE', '/v1/plans/nope'), 404, 'resource_missing', 'id');
  assertError(await server.get('/v1/plans?include_archived=maybe', { key: null }), 400, undefined, 'include_archived');
  // A read_only key reads plans but changes none; a customer session sees no admin route at all.
  const ro = (await server.post('/v1/api_keys', { scope: 'read_only', name: 'dashboard' })).json.secret;
  assert.equal((await server.get('/v1/plans/pro', { key: ro })).status, 200);
  assertError(await server.post('/v1/plans/pro', { name: 'x' }, { key: ro }), 403, 'permission_denied');
  const org = (await server.post('/v1/customers', { external_id: 'org_plans', type: 'organization' })).json;
  await server.post(`/v1/customers/${org.id}/members`, { user: 'owner_1', role: 'owner' });
  const token = (await server.post('/v1/customer_sessions', { customer: org.id, user: 'owner_1' })).json.token;
  assertError(await server.get('/v1/plans/pro', { key: token }), 404, 'route_not_found');
  assertError(await server.post('/v1/plans', { id: 'x', role: 'member' }, { key: token }), 404, 'route_not_found');
  assert.equal((await server.get('/v1/plans', { key: token })).status, 200);  // the public list
  assert.equal((await server.get('/v1/plans?include_archived=true')).text, before);
});

test('a plan saved while Stripe is unreachable is pushed by the background retry once it is back', async () => {
  const port = await freePort();
  const offline = await startTally({
    TALLY_STRIPE_SANDBOX: undefined, STRIPE_API_BASE: `http://127.0.0.1:${port}`, STRIPE_SECRET_KEY: 'sk_test_offline',
  });
  let sandbox;
  try {
    const created = await offline.post('/v1/plans', { id: 'later', role: 'professional',
      prices: [{ interval: 'month', unit_amount: 4200, currency: 'usd' }] });
    assert.equal(created.status, 201, created.text);
    const pending = await until(async () => {
      const r = (await offline.get('/v1/plans/later')).json;
      return r.stripe_sync_error ? r : undefined;
    }, 'a failed push');
    assert.equal(pending.stripe_sync, 'pending');
    assert.equal(active(pending, 'month').stripe_price_id, null);
    // Selling it meanwhile fails clearly instead of charging a guess.
    const c = (await offline.post('/v1/customers', { external_id: 'offline_buyer' })).json;
    assert.equal((await offline.post('/v1/checkout_sessions', { customer: c.id, plan: 'later' })).status, 503);
    // Stripe comes back on that port: the retry pushes the plan without anyone asking.
    sandbox = spawn(BIN, ['sandbox', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const pushed = await until(async () => {
      const r = (await offline.get('/v1/plans/later')).json;
      return r.stripe_sync === 'synced' ? r : undefined;
    }, 'the retried push', 30000);
    assert.equal(pushed.stripe_sync_error, null);
    const back = new Stripe('sk_test_offline', { host: '127.0.0.1', port, protocol: 'http', maxNetworkRetries: 0 });
    const price = await back.prices.retrieve(active(pushed, 'month').stripe_price_id);
    assert.equal(price.lookup_key, 'later_monthly');
    assert.equal(price.unit_amount, 4200);
  } finally {
    sandbox?.kill('SIGTERM');
    await offline.stop();
  }
});
