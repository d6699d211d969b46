// Usage limits over HTTP (issue 12): a free customer's second project is refused at the 1-project limit, the
// warnings reach the app's receiver once each, recorded usage is deduplicated by its key, parallel checks never pass
// a hard limit, an upgrade lifts the block at once, and bad input names its parameter and records nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertError, startReceiver, startTally, until } from './harness.mjs';

let server;
let rx;
before(async () => {
  server = await startTally({ TALLY_EVENT_RETRY_BASE_MS: '50' });
  rx = await startReceiver();
  const registered = await server.post('/v1/webhook_endpoints', { url: rx.url, enabled_events: ['usage.threshold_reached'] });
  assert.equal(registered.status, 201, registered.text);
});
after(async () => { await rx?.close(); await server.stop(); });

const warnings = (customer, meter) => {
  const seen = new Map();
  for (const e of rx.received) {
    const o = e?.data?.object;
    if (e.type === 'usage.threshold_reached' && o.customer === customer && o.meter === meter) seen.set(e.id, o.threshold);
  }
  return [...seen.values()].sort((a, b) => a - b);
};

test('the 1-project limit blocks a second project, warns once, and an upgrade lifts it at once', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'usage_free' })).json;
  const first = await server.post('/v1/check', { customer: c.id, meter: 'projects', amount: 1, record: true });
  assert.equal(first.status, 200, first.text);
  assert.deepEqual([first.json.allowed, first.json.current, first.json.limit, first.json.remaining], [true, 1, 1, 0]);
  const second = await server.post('/v1/check', { customer: c.id, meter: 'projects', amount: 1, record: true });
  assert.deepEqual([second.json.allowed, second.json.reason, second.json.current, second.json.recorded],
    [false, 'limit_exceeded', 1, false]);
  await until(() => warnings(c.id, 'projects').length === 3, 'the threshold events');
  assert.deepEqual(warnings(c.id, 'projects'), [80, 95, 100]);
  // A read-only check answers without recording.
  const peek = await server.post('/v1/check', { customer: c.id, meter: 'projects' });
  assert.equal(peek.json.allowed, false);
  // Upgrade to pro (3 projects): the next check passes, no waiting.
  const sub = await server.post('/v1/subscriptions', { customer: c.id, plan: 'pro', trial_period_days: 14 });
  assert.equal(sub.status, 201, sub.text);
  const lifted = await server.post('/v1/check', { customer: c.id, meter: 'projects', amount: 1, record: true });
  assert.deepEqual([lifted.json.allowed, lifted.json.current, lifted.json.limit], [true, 2, 3]);
  const summary = await server.get(`/v1/customers/${c.id}/usage`);
  assert.equal(summary.json.plan, 'pro');
  assert.equal(summary.json.subscription, sub.json.id);
  const hours = summary.json.meters.find((m) => m.meter === 'build_hours');
  assert.equal(hours.kind, 'counter');
  assert.equal(hours.period_start, sub.json.current_period_start);  // counters follow the billing period
  assert.equal(hours.resets_at, sub.json.current_period_end);
  const features = await server.post('/v1/check', { customer: c.id, feature: 'ai_features' });
  assert.deepEqual([features.json.object, features.json.allowed], ['feature_check', true]);
  // Down to starter (1 project) with 2: the answer says which meters are over; nothing is deleted, and new
  // projects are refused at once.
  const down = await server.post(`/v1/subscriptions/${sub.json.id}/change`, { plan: 'starter' });
  assert.equal(down.status, 200, down.text);
  assert.equal(down.json.plan, 'starter');
  assert.deepEqual(down.json.usage_over_limit, [{ meter: 'projects', current: 2, limit: 1, mode: 'hard' }]);
  const blocked = await server.post('/v1/check', { customer: c.id, meter: 'projects', amount: 1, record: true });
  assert.deepEqual([blocked.json.allowed, blocked.json.current, blocked.json.limit, blocked.json.overage], [false, 2, 1, 1]);
  const up = await server.post(`/v1/subscriptions/${sub.json.id}/change`, { plan: 'pro' });
  assert.deepEqual(up.json.usage_over_limit, []);
});

test('recorded usage is deduplicated by its key; parallel checks never pass a hard limit', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'usage_builds' })).json;
  const body = { customer: c.id, meter: 'build_hours', value: 4, idempotency_key: 'build-1' };
  const r = await server.post('/v1/usage', body);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual([r.json.current, r.json.limit, r.json.percent], [4, 5, 80]);
  const replay = await server.post('/v1/usage', body);
  assert.equal(replay.text, r.text);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assertError(await server.post('/v1/usage', { ...body, value: 3 }), 400, 'idempotency_error');
  const parallel = await Promise.all(Array.from({ length: 40 }, () =>
    server.post('/v1/check', { customer: c.id, meter: 'build_hours', amount: 1, record: true })));
  assert.ok(parallel.every((p) => p.status === 200), parallel.map((p) => p.text).join('\n'));
  assert.equal(parallel.filter((p) => p.json.allowed).length, 1);
  const hours = (await server.get(`/v1/customers/${c.id}/usage`)).json.meters.find((m) => m.meter === 'build_hours');
  assert.deepEqual([hours.current, hours.remaining], [5, 0]);
  await until(() => warnings(c.id, 'build_hours').length === 3, 'the build hour warnings');
  assert.deepEqual(warnings(c.id, 'build_hours'), [80, 95, 100]);
  // Storage is a soft limit: past it is allowed, reported as overage.
  const over = await server.post('/v1/check', { customer: c.id, meter: 'storage_gb', amount: 3, record: true });
  assert.deepEqual([over.json.allowed, over.json.reason, over.json.overage], [true, 'overage', 2]);
});

test('a batch records each event on its own, deduplicated by its key', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'usage_batch' })).json;
  const ev = (key, extra = {}) => ({ customer: c.id, meter: 'storage_gb', value: 1, idempotency_key: key, ...extra });
  const r = await server.post('/v1/usage/batch', { events: [ev('s1'), ev('s2', { value: 2 }), ev('s1'), ev('s3', { meter: 'nope' }), 7] });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.data.map((x) => x.status), ['recorded', 'recorded', 'replayed', 'rejected', 'rejected']);
  assert.deepEqual([r.json.recorded, r.json.replayed, r.json.rejected], [2, 1, 2]);
  assert.equal(r.json.data[3].error.param, 'meter');
  assert.equal(r.json.data[4].error.param, 'events[4]');
  assert.equal(r.json.data[1].record.current, 3);
  const storage = (await server.get(`/v1/customers/${c.id}/usage`)).json.meters.find((m) => m.meter === 'storage_gb');
  assert.equal(storage.current, 3);  // s1 once, s2; the rejected ones nothing
  // The same event alone replays the batch's record of it.
  const alone = await server.post('/v1/usage', ev('s2', { value: 2 }));
  assert.equal(alone.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(alone.json, r.json.data[1].record);
  assert.deepEqual([alone.json.current, alone.json.idempotency_key, alone.json.action, alone.json.value], [3, 's2', 'increment', 2]);
  // The same key with other fields is refused, alone or in a batch (a timestamp given where the first had none too).
  assertError(await server.post('/v1/usage', ev('s2', { value: 5 })), 400, 'idempotency_error');
  const reused = await server.post('/v1/usage/batch', { events: [ev('s2', { value: 2, timestamp: alone.json.timestamp })] });
  assert.deepEqual([reused.json.data[0].status, reused.json.data[0].error.code], ['rejected', 'idempotency_error']);
  assertError(await server.post('/v1/usage/batch', { events: Array.from({ length: 1001 }, (_, i) => ev(`x${i}`)) }),
    400, 'parameter_invalid', 'events');
  assertError(await server.post('/v1/usage/batch', { events: [] }), 400, 'parameter_invalid', 'events');
  assertError(await server.post('/v1/usage/batch', { events: {} }), 400, 'parameter_invalid', 'events');
  assertError(await server.post('/v1/usage/batch', {}), 400, 'parameter_missing', 'events');
});

test('an admin override lifts a limit for one customer, audited, until removed', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'usage_override' })).json;
  const project = () => server.post('/v1/check', { customer: c.id, meter: 'projects', record: true });
  assert.equal((await project()).json.allowed, true);
  assert.equal((await project()).json.allowed, false);
  const o = await server.post(`/v1/customers/${c.id}/limit_overrides`, { meter: 'projects', extra: 2, reason: 'design partner' });
  assert.equal(o.status, 200, o.text);
  assert.deepEqual([o.json.extra, o.json.limit], [2, null]);
  const lifted = await project();
  assert.deepEqual([lifted.json.allowed, lifted.json.limit, lifted.json.override.reason], [true, 3, 'design partner']);
  assert.equal((await server.get(`/v1/customers/${c.id}/limit_overrides`)).json.data.length, 1);
  const audit = (await server.get(`/v1/audit?customer=${c.id}`)).json.data.map((e) => e.kind);
  assert.ok(audit.includes('limit_override_set'), audit.join());
  const removed = await server.request('DELETE', `/v1/customers/${c.id}/limit_overrides/projects`);
  assert.equal(removed.json.deleted, true);
  assert.equal((await project()).json.allowed, false);  // 2 projects, the plan's limit of 1 again
  assertError(await server.request('DELETE', `/v1/customers/${c.id}/limit_overrides/projects`), 404, 'resource_missing', 'meter');
  assertError(await server.post(`/v1/customers/${c.id}/limit_overrides`, { meter: 'projects', reason: 'x' }), 400, 'parameter_missing', 'limit');
  assertError(await server.post(`/v1/customers/${c.id}/limit_overrides`, { meter: 'projects', extra: 1 }), 400, 'parameter_missing', 'reason');
  assertError(await server.post(`/v1/customers/${c.id}/limit_overrides`, { meter: 'projects', extra: -1, reason: 'x' }), 400, undefined, 'extra');
  assertError(await server.post(`/v1/customers/${c.id}/limit_overrides`, { meter: 'nope', extra: 1, reason: 'x' }), 404, 'resource_missing', 'meter');
  assertError(await server.post('/v1/customers/cust_nope/limit_overrides', { meter: 'projects', extra: 1, reason: 'x' }), 404, 'resource_missing', 'id');
});

test('a customer session reads its own usage only', async () => {
  const org = (await server.post('/v1/customers', { external_id: 'usage_org', type: 'organization' })).json;
  await server.post(`/v1/customers/${org.id}/members`, { user: 'u_usage', role: 'member' });
  const token = (await server.post('/v1/customer_sessions', { customer: org.id, user: 'u_usage' })).json.token;
  assert.equal((await server.get(`/v1/customers/${org.id}/usage`, { key: token })).status, 200);
  const other = (await server.post('/v1/customers', { external_id: 'usage_other' })).json;
  assertError(await server.get(`/v1/customers/${other.id}/usage`, { key: token }), 404, 'resource_missing', 'id');
  assertError(await server.post('/v1/check', { customer: org.id, meter: 'projects' }, { key: token }), 404, 'route_not_found');
});

test("an organization's seats are its members: the one past the plan's seats is refused", async () => {
  const org = (await server.post('/v1/customers', { external_id: 'usage_seats', type: 'organization' })).json;
  for (let i = 0; i < 5; i++) {
    const r = await server.post(`/v1/customers/${org.id}/members`, { user: `seat_${i}`, role: i === 0 ? 'owner' : 'member' });
    assert.equal(r.status, 201, r.text);
  }
  const seats = (await server.get(`/v1/customers/${org.id}/usage`)).json.meters.find((m) => m.meter === 'users');
  assert.deepEqual([seats.current, seats.limit, seats.unit, seats.remaining], [5, 5, 'seats', 0]);
  const ask = await server.post('/v1/check', { customer: org.id, meter: 'users' });
  assert.deepEqual([ask.json.allowed, ask.json.reason], [false, 'limit_exceeded']);
  assertError(await server.post(`/v1/customers/${org.id}/members`, { user: 'seat_5', role: 'member' }), 409, 'limit_exceeded', 'user');
  assert.equal((await server.get(`/v1/customers/${org.id}/members`)).json.data.length, 5);
  assertError(await server.post('/v1/usage', { customer: org.id, meter: 'users', value: 1, idempotency_key: 'seat-set' }), 400, 'parameter_invalid', 'meter');
  // Removing a member frees a seat.
  assert.equal((await server.request('DELETE', `/v1/customers/${org.id}/members/seat_4`)).status, 200);
  assert.equal((await server.post(`/v1/customers/${org.id}/members`, { user: 'seat_5', role: 'member' })).status, 201);
});

test('bad input names its parameter and records nothing', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'usage_bad' })).json;
  const usage = (b) => server.post('/v1/usage', { customer: c.id, meter: 'projects', value: 1, idempotency_key: `k${Math.random()}`, ...b });
  assertError(await usage({ customer: 'cust_nope' }), 404, 'resource_missing', 'customer');
  assertError(await usage({ meter: 'widgets' }), 404, 'resource_missing', 'meter');
  assertError(await usage({ meter: 'build_hours', value: -1 }), 400, 'parameter_invalid', 'value');
  assertError(await usage({ value: '3' }), 400, undefined, 'value');
  assertError(await usage({ value: 1.5 }), 400, undefined, 'value');
  assertError(await usage({ action: 'add' }), 400, undefined, 'action');
  assertError(await usage({ idempotency_key: undefined }), 400, 'parameter_missing', 'idempotency_key');
  assertError(await usage({ timestamp: Math.floor(Date.now() / 1000) + 3600 }), 400, 'parameter_invalid', 'timestamp');
  // A counter's usage from before the previous period (or from it, past the 24 h grace window) is refused.
  assertError(await usage({ meter: 'build_hours', timestamp: Math.floor(Date.now() / 1000) - 70 * 86400 }), 400, 'parameter_invalid', 'timestamp');
  assertError(await usage({ timestamp: 'yesterday' }), 400, undefined, 'timestamp');
  assertError(await usage({ value: -1 }), 400, 'parameter_invalid', 'value');  // a gauge cannot go below 0
  assertError(await usage({ colour: 'red' }), 400, 'parameter_unknown', 'colour');
  const check = (b) => server.post('/v1/check', { customer: c.id, ...b });
  assertError(await check({ meter: 'projects', amount: 0 }), 400, 'parameter_invalid', 'amount');
  assertError(await check({ meter: 'projects', amount: -2 }), 400, 'parameter_invalid', 'amount');
  assertError(await check({ meter: 'projects', amount: 2 ** 53 + 2 }), 400, 'parameter_invalid', 'amount');
  assertError(await check({ meter: 'projects', feature: 'sso' }), 400, undefined, 'meter');
  assertError(await check({}), 400, undefined, 'feature');
  assertError(await check({ feature: 'teleport' }), 404, 'resource_missing', 'feature');
  assertError(await check({ feature: 'ai_features', amount: 1 }), 400, undefined, 'amount');
  assertError(await server.post('/v1/check', { customer: 'cust_nope', meter: 'projects' }), 404, 'resource_missing', 'customer');
  assertError(await server.post('/v1/usage', undefined, { raw: '{"customer":' }), 400, 'malformed_json');
  assertError(await server.get('/v1/customers/cust_nope/usage'), 404, 'resource_missing', 'id');
  const summary = (await server.get(`/v1/customers/${c.id}/usage`)).json;
  assert.ok(summary.meters.every((m) => m.current === 0), JSON.stringify(summary));
});
