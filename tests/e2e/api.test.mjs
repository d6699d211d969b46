// HTTP API v1 end to end: happy paths, authentication, and bad input on every endpoint.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTally, makeEvent, subscription, ADMIN_KEY } from './harness.mjs';
import { execFileSync } from 'node:child_process';
import { BIN } from './harness.mjs';

let server;
before(async () => { server = await startTally(); });
after(async () => { await server.stop(); });

function assertError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.json.error, 'object', r.text);
  for (const k of ['type', 'code', 'message', 'param']) assert.ok(k in r.json.error, `missing ${k}: ${r.text}`);
  if (code) assert.equal(r.json.error.code, code, r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
  assert.ok(r.json.error.message.length > 0);
}

test('health and plans need no key', async () => {
  const h = await server.get('/health', { key: null });
  assert.equal(h.status, 200);
  assert.equal(h.json.status, 'ok');
  assert.equal(h.json.database, 'ok');
  const p = await server.get('/v1/plans', { key: null });
  assert.equal(p.status, 200);
  assert.deepEqual(p.json.data.map((x) => x.id), ['free', 'starter', 'pro', 'scale']);
  const starter = p.json.data[1];
  assert.equal(starter.role, 'professional');
  assert.deepEqual(starter.prices.map((x) => [x.lookup_key, x.unit_amount, x.interval]),
    [['starter_monthly', 3000, 'month'], ['starter_yearly', 30000, 'year']]);
});

test('every v1 endpoint except plans needs a valid key', async () => {
  for (const [method, path] of [['GET', '/v1/customers?external_id=x'], ['POST', '/v1/customers'], ['GET', '/v1/customers/cust_x'],
    ['GET', '/v1/audit'], ['GET', '/v1/webhook_events'], ['POST', '/v1/webhook_events/evt_x/retry']]) {
    assertError(await server.request(method, path, { key: null }), 401, 'unauthorized');
    assertError(await server.request(method, path, { key: 'tk_wrong' }), 401, 'unauthorized');
    assertError(await server.request(method, path, { key: null, headers: { authorization: 'Basic abc' } }), 401);
  }
});

test('customers: create is idempotent on external_id; get and lookups', async () => {
  const a = await server.post('/v1/customers', { external_id: 'user_1', email: 'one@example.com', name: 'One' });
  assert.equal(a.status, 201, a.text);
  assert.match(a.json.id, /^cust_/);
  assert.equal(a.json.role, 'member');
  assert.equal(a.json.plan, 'free');
  assert.equal(a.json.subscription, null);
  assert.equal(a.json.stripe_customer_id, null);
  const again = await server.post('/v1/customers', { external_id: 'user_1', email: 'one@example.com', name: 'One' });
  assert.equal(again.status, 200);
  assert.equal(again.json.id, a.json.id);
  assert.equal((await server.get(`/v1/customers/${a.json.id}`)).json.email, 'one@example.com');
  assert.equal((await server.get('/v1/customers?external_id=user_1')).json.data[0].id, a.json.id);
  assert.deepEqual((await server.get('/v1/customers?external_id=nobody')).json.data, []);
  // Literal brackets in a query (as Stripe's clients send them) are accepted, not taken as part of the path.
  const bracketed = await server.post('/v1/customers', { external_id: 'team[7]' });
  assert.equal(bracketed.status, 201);
  const found = await server.get('/v1/customers?external_id=team[7]');
  assert.equal(found.status, 200, found.text);
  assert.equal(found.json.data[0].id, bracketed.json.id);
  const ent = await server.get(`/v1/customers/${a.json.id}/entitlements`);
  assert.equal(ent.status, 200);
  assert.deepEqual(ent.json.limits, { build_hours: 5, projects: 1, storage_gb: 1, users: 5 });
  assert.equal(ent.json.features.ai_features, false);
});

test('customers: bad input gets a 4xx JSON error and creates nothing', async () => {
  const cases = [
    [{ raw: '{not json', headers: { 'content-type': 'application/json' } }, 'malformed_json', undefined],
    [{ raw: '[1,2]' }, 'parameter_invalid', 'body'],
    [{ raw: '' }, 'parameter_missing', 'body'],
    [{ body: {} }, 'parameter_missing', 'external_id'],
    [{ body: { external_id: 42 } }, 'parameter_invalid', 'external_id'],
    [{ body: { external_id: '' } }, 'parameter_missing', 'external_id'],
    [{ body: { external_id: 'x'.repeat(256) } }, 'parameter_invalid', 'external_id'],
    [{ body: { external_id: 'user_bad', email: 'not-an-email' } }, 'parameter_invalid', 'email'],
    [{ body: { external_id: 'user_bad', email: ['a@b.c'] } }, 'parameter_invalid', 'email'],
    [{ body: { external_id: 'user_bad', plan: 'pro' } }, 'parameter_unknown', 'plan'],
  ];
  for (const [opts, code, param] of cases) {
    assertError(await server.request('POST', '/v1/customers', opts), 400, code, param);
  }
  assert.deepEqual((await server.get('/v1/customers?external_id=user_bad')).json.data, []);
  // Without a lookup key the customers list is a page of every customer, newest first.
  const everyone = await server.get('/v1/customers');
  assert.equal(everyone.status, 200, everyone.text);
  assert.equal(everyone.json.object, 'list');
  assert.ok(Array.isArray(everyone.json.data));
  assertError(await server.get('/v1/customers?external_id=x&type=organization'), 400, 'parameter_invalid', 'external_id');
  assertError(await server.get('/v1/customers/cust_does_not_exist'), 404, 'resource_missing', 'id');
  assertError(await server.get('/v1/customers/cust_does_not_exist/entitlements'), 404, 'resource_missing');
  assertError(await server.get('/v1/nothing/here'), 404, 'route_not_found');
});

test('checkout and portal sessions: bad input gets a 4xx JSON error and touches nothing in Stripe', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'user_checkout_bad' })).json;
  const cases = [
    [{ raw: '{not json', headers: { 'content-type': 'application/json' } }, 'malformed_json', undefined],
    [{ body: { plan: 'pro' } }, 'parameter_missing', 'customer'],
    [{ body: { customer: c.id } }, 'parameter_missing', 'plan'],
    [{ body: { customer: c.id, plan: 5 } }, 'parameter_invalid', 'plan'],
    [{ body: { customer: c.id, plan: 'pro', coupon: 'x' } }, 'parameter_unknown', 'coupon'],
    [{ body: { customer: c.id, plan: 'gold' } }, 'parameter_invalid', 'plan'],
    [{ body: { customer: c.id, plan: 'free' } }, 'parameter_invalid', 'plan'],
    [{ body: { customer: c.id, plan: 'pro', interval: 'week' } }, 'parameter_invalid', 'interval'],
    [{ body: { customer: c.id, plan: 'pro', trial_period_days: 'x' } }, 'parameter_invalid', 'trial_period_days'],
    [{ body: { customer: c.id, plan: 'pro', trial_period_days: 731 } }, 'parameter_invalid', 'trial_period_days'],
    [{ body: { customer: c.id, plan: 'pro', cancel_url: 'ftp://x' } }, 'parameter_invalid', 'cancel_url'],
    [{ body: { customer: c.id, plan: 'pro', success_url: `https://x/${'a'.repeat(2100)}` } }, 'parameter_invalid', 'success_url'],
  ];
  for (const [opts, code, param] of cases) {
    const r = await server.request('POST', '/v1/checkout_sessions', opts);
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.equal(r.json.error.code, code, JSON.stringify(r.json));
    if (param !== undefined) assert.equal(r.json.error.param, param);
  }
  assertError(await server.request('POST', '/v1/checkout_sessions', { body: { customer: 'cust_nope', plan: 'pro' } }), 404, 'resource_missing');
  // Nothing was created in Stripe for the customer: it still has no Stripe customer.
  assert.equal((await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id, null);
  assertError(await server.request('POST', '/v1/billing_portal_sessions', { body: { customer: c.id } }), 400, 'parameter_invalid', 'customer');
  assertError(await server.request('POST', '/v1/billing_portal_sessions', { body: {} }), 400, 'parameter_missing', 'customer');
  assertError(await server.request('POST', '/v1/billing_portal_sessions', { body: { customer: 'cust_nope' } }), 404, 'resource_missing');
  assertError(await server.request('POST', '/v1/billing_portal_sessions', { body: { customer: c.id, return_url: 'nope' } }), 400, 'parameter_invalid', 'return_url');

  // A good request on the same customer works, and an Idempotency-Key replays it.
  const headers = { 'idempotency-key': 'checkout-once' };
  const first = await server.request('POST', '/v1/checkout_sessions', { body: { customer: c.id, plan: 'starter', interval: 'year' }, headers });
  assert.equal(first.status, 200, JSON.stringify(first.json));
  assert.match(first.json.url, /\/checkout\/cs_test_/);
  const again = await server.request('POST', '/v1/checkout_sessions', { body: { customer: c.id, plan: 'starter', interval: 'year' }, headers });
  assert.equal(again.json.id, first.json.id);
  assert.match((await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id, /^cus_/);
});

test('Idempotency-Key replays the first response and rejects other parameters', async () => {
  const headers = { 'idempotency-key': 'idem-create-1' };
  const first = await server.request('POST', '/v1/customers', { body: { external_id: 'user_idem' }, headers });
  assert.equal(first.status, 201);
  const replay = await server.request('POST', '/v1/customers', { body: { external_id: 'user_idem' }, headers });
  assert.equal(replay.status, 201);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.text, first.text);
  const other = await server.request('POST', '/v1/customers', { body: { external_id: 'user_other' }, headers });
  assertError(other, 400, 'idempotency_error', 'Idempotency-Key');
  assert.equal(other.json.error.type, 'idempotency_error');
  assert.deepEqual((await server.get('/v1/customers?external_id=user_other')).json.data, []);
  assertError(await server.request('POST', '/v1/customers', { body: { external_id: 'u' }, headers: { 'idempotency-key': 'k'.repeat(256) } }),
    400, 'parameter_invalid', 'Idempotency-Key');
});

test('role override beats the automation, is audited, and can be removed', async () => {
  const T = Math.floor(Date.now() / 1000) - 100;
  const c = (await server.post('/v1/customers', { external_id: 'user_ov' })).json;
  // Link a paying Stripe customer through checkout.
  const r1 = await server.deliver(makeEvent('evt_ov_1', 'customer.subscription.created', T, subscription('sub_ov', 'cus_ov', 'active', 'pro_monthly', T)));
  assert.equal(r1.status, 200);
  const r2 = await server.deliver(makeEvent('evt_ov_2', 'checkout.session.completed', T + 1,
    { id: 'cs_ov', object: 'checkout.session', customer: 'cus_ov', subscription: 'sub_ov', client_reference_id: c.id, mode: 'subscription', payment_status: 'paid', metadata: {} }));
  assert.equal(r2.status, 200);
  await server.settle();
  assert.equal((await server.get(`/v1/customers/${c.id}`)).json.role, 'professional');

  const path = `/v1/customers/${c.id}/role_override`;
  for (const [body, code, param] of [
    [{ role: 'wizard', reason: 'x' }, 'parameter_invalid', 'role'],
    [{ role: 'member' }, 'parameter_missing', 'reason'],
    [{ reason: 'x' }, 'parameter_missing', 'role'],
    [{ role: 'member', reason: 'x', expires_at: 'tomorrow' }, 'parameter_invalid', 'expires_at'],
    [{ role: 'member', reason: 'x', expires_at: 1000 }, 'parameter_invalid', 'expires_at'],
    [{ role: 'member', reason: 'x', color: 'red' }, 'parameter_unknown', 'color'],
    [{ role: 'member', reason: '   ' }, 'parameter_invalid', 'reason'],
    [{ role: 'member', reason: 'x', expires_at: 253402300800 }, 'parameter_invalid', 'expires_at'],
  ]) assertError(await server.post(path, body), 400, code, param);
  assertError(await server.post('/v1/customers/cust_nope/role_override', { role: 'member', reason: 'x' }), 404, 'resource_missing');
  assertError(await server.request('DELETE', path), 404, 'resource_missing');

  const expires = Math.floor(Date.now() / 1000) + 3600;
  const set = await server.post(path, { role: 'member', reason: 'fraud review', expires_at: expires });
  assert.equal(set.status, 200, set.text);
  assert.equal(set.json.role, 'member');
  assert.equal(set.json.role_source, 'override');
  assert.deepEqual({ ...set.json.role_override, created: 0 }, { role: 'member', reason: 'fraud review', expires_at: expires, created: 0 });
  assert.equal(set.json.plan, 'pro');
  const cleared = await server.request('DELETE', path);
  assert.equal(cleared.status, 200);
  assert.equal(cleared.json.role, 'professional');
  assert.equal(cleared.json.role_override, null);
  const kinds = (await server.get(`/v1/audit?customer=${c.id}`)).json.data.map((e) => `${e.kind}:${e.cause}`);
  assert.ok(kinds.includes('role_override_set:admin:env_admin'), kinds.join());
  assert.ok(kinds.includes('role_override_cleared:admin:env_admin'), kinds.join());
  assert.ok(kinds.includes('role_changed:admin:env_admin'), kinds.join());
  assert.ok(kinds.includes('stripe_customer_linked:event:evt_ov_2'), kinds.join());
});

test('audit and webhook_events listings validate their parameters', async () => {
  assertError(await server.get('/v1/audit?limit=0'), 400, 'parameter_invalid', 'limit');
  assertError(await server.get('/v1/audit?limit=abc'), 400, 'parameter_invalid', 'limit');
  assertError(await server.get('/v1/audit?limit=501'), 400, 'parameter_invalid', 'limit');
  assertError(await server.get('/v1/audit?customer=cust_nope'), 404, 'resource_missing', 'customer');
  assertError(await server.get('/v1/webhook_events?status=weird'), 400, 'parameter_invalid', 'status');
  assertError(await server.get('/v1/webhook_events/evt_nope'), 404, 'resource_missing', 'id');
  const list = await server.get('/v1/webhook_events?status=processed&limit=2');
  assert.equal(list.status, 200);
  assert.ok(list.json.data.length <= 2);
  for (const e of list.json.data) assert.equal(e.status, 'processed');
});

test('an oversized request body is refused with a JSON error', async () => {
  const big = JSON.stringify({ external_id: 'big', name: 'x'.repeat(100 * 1024) });
  assertError(await server.request('POST', '/v1/customers', { raw: big }), 413, 'payload_too_large', 'body');
  const huge = 'x'.repeat(5 * 1024 * 1024);
  const r = await server.request('POST', '/v1/customers', { raw: huge, key: ADMIN_KEY }).catch((e) => ({ status: 0, error: e }));
  // The server answers 413 and closes; a client may see the close before the answer.
  if (r.status !== 0) assertError(r, 413, 'payload_too_large');
  assert.equal((await server.get('/health', { key: null })).status, 200);
});
