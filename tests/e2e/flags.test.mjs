// Rollout flags and usage history over HTTP (issue 12): billing_v2 from the catalog file, a percentage raised only
// ever adding customers, overrides, the same buckets after a crash and restart, audit entries, sessions reading
// their own flags, and bad input naming its parameter and changing nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertError, startTally } from './harness.mjs';

let server;
before(async () => { server = await startTally({ TALLY_STRIPE_SANDBOX: undefined }); });
after(async () => { await server?.stop(); });

const onFor = async (srv, customers) => {
  const on = new Set();
  for (const c of customers) {
    const r = await srv.post('/v1/check', { customer: c, flag: 'billing_v2' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'flag_check');
    if (r.json.allowed) on.add(c);
    const listed = (await srv.get(`/v1/customers/${c}/flags`)).json.data.find((f) => f.flag === 'billing_v2');
    assert.equal(listed.enabled, r.json.allowed, c);  // both routes give the same answer
    assert.equal(listed.reason, r.json.reason, c);
  }
  return on;
};

test('billing_v2 rolls out by percentage: raising it only adds customers, and a restart keeps every bucket', async () => {
  const flags = await server.get('/v1/flags');
  assert.equal(flags.status, 200, flags.text);
  const seeded = flags.json.data.find((f) => f.name === 'billing_v2');
  assert.deepEqual([seeded.enabled, seeded.rollout_percentage, seeded.updated_by], [true, 0, 'config']);
  const customers = [];
  for (let i = 0; i < 60; i++) customers.push((await server.post('/v1/customers', { external_id: `flag_${i}` })).json.id);
  assert.equal((await onFor(server, customers)).size, 0);
  const at25 = await server.post('/v1/flags/billing_v2', { rollout_percentage: 25 });
  assert.equal(at25.status, 200, at25.text);
  assert.equal(at25.json.rollout_percentage, 25);
  const on25 = await onFor(server, customers);
  assert.ok(on25.size > 1 && on25.size < 35, `${on25.size} of 60 at 25%`);  // random ids: 15 expected
  await server.post('/v1/flags/billing_v2', { rollout_percentage: 70 });
  const on70 = await onFor(server, customers);
  assert.ok(on70.size > on25.size);
  for (const c of on25) assert.ok(on70.has(c), `${c} left the rollout when it grew`);
  // SIGKILL and start again on the same database: the runtime percentage stays (the file does not reseed it), and
  // every customer lands in the same bucket.
  await server.crash();
  server = await startTally({ TALLY_STRIPE_SANDBOX: undefined }, { dir: server.dir });
  assert.equal((await server.get('/v1/flags/billing_v2')).json.rollout_percentage, 70);
  assert.deepEqual([...(await onFor(server, customers))].sort(), [...on70].sort());
  const audit = (await server.get('/v1/audit?limit=500')).json.data.filter((e) => e.detail === 'flag=billing_v2');
  assert.deepEqual(audit.map((e) => [e.kind, e.before, e.after]),
    [['flag_updated', 'enabled 25%', 'enabled 70%'], ['flag_updated', 'enabled 0%', 'enabled 25%'],
      ['flag_seeded', null, 'enabled 0%']]);
});

test('overrides pin a customer on or off, a new flag starts off, and disabling turns it off for everyone', async () => {
  const a = (await server.post('/v1/customers', { external_id: 'flag_a' })).json.id;
  const b = (await server.post('/v1/customers', { external_id: 'flag_b' })).json.id;
  const created = await server.post('/v1/flags/new_dashboard', { description: 'the new dashboard' });
  assert.equal(created.status, 200, created.text);
  assert.deepEqual([created.json.enabled, created.json.rollout_percentage, created.json.overrides], [false, 0, {}]);
  const pinned = await server.post('/v1/flags/new_dashboard', { enabled: true, overrides: { [a]: true, [b]: false } });
  assert.deepEqual(pinned.json.overrides, { [a]: true, [b]: false });
  const check = async (c) => (await server.post('/v1/check', { customer: c, flag: 'new_dashboard' })).json;
  assert.deepEqual([(await check(a)).allowed, (await check(a)).reason], [true, 'override']);
  await server.post('/v1/flags/new_dashboard', { rollout_percentage: 100 });
  assert.deepEqual([(await check(b)).allowed, (await check(b)).reason], [false, 'override']);
  const removed = await server.post('/v1/flags/new_dashboard', { overrides: { [b]: null } });
  assert.deepEqual(removed.json.overrides, { [a]: true });
  assert.deepEqual([(await check(b)).allowed, (await check(b)).reason], [true, 'rollout']);
  await server.post('/v1/flags/new_dashboard', { enabled: false });
  assert.deepEqual([(await check(a)).allowed, (await check(a)).reason], [false, 'disabled']);
  const audit = (await server.get(`/v1/audit?customer=${b}`)).json.data.map((e) => e.kind);
  assert.deepEqual(audit.filter((k) => k.startsWith('flag_')), ['flag_override_cleared', 'flag_override_set']);
  // An idempotent change: the same key replays the first answer.
  const first = await server.post('/v1/flags/new_dashboard', { rollout_percentage: 5 }, { headers: { 'idempotency-key': 'flag-5' } });
  const again = await server.post('/v1/flags/new_dashboard', { rollout_percentage: 5 }, { headers: { 'idempotency-key': 'flag-5' } });
  assert.equal(again.text, first.text);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
});

test('a customer session reads its own flags only, and cannot change them', async () => {
  const org = (await server.post('/v1/customers', { external_id: 'flag_org', type: 'organization' })).json;
  await server.post(`/v1/customers/${org.id}/members`, { user: 'u_flag', role: 'owner' });
  const token = (await server.post('/v1/customer_sessions', { customer: org.id, user: 'u_flag' })).json.token;
  const own = await server.get(`/v1/customers/${org.id}/flags`, { key: token });
  assert.equal(own.status, 200, own.text);
  assert.ok(own.json.data.some((f) => f.flag === 'billing_v2'));
  const other = (await server.post('/v1/customers', { external_id: 'flag_other' })).json;
  assertError(await server.get(`/v1/customers/${other.id}/flags`, { key: token }), 404, 'resource_missing', 'id');
  assert.equal((await server.post('/v1/flags/billing_v2', { rollout_percentage: 100 }, { key: token })).status, 404);
  assert.equal((await server.get('/v1/flags/billing_v2')).json.rollout_percentage, 70);
});

test('usage history per day and month', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'history' })).json.id;
  for (const [value, key] of [[2, 'p1'], [1, 'p2']]) {
    const r = await server.post('/v1/usage', { customer: c, meter: 'projects', value, action: 'set', idempotency_key: key });
    assert.equal(r.status, 200, r.text);
  }
  await server.post('/v1/check', { customer: c, meter: 'build_hours', amount: 3, record: true });
  const days = await server.get(`/v1/customers/${c}/usage/history?meter=projects`);
  assert.equal(days.status, 200, days.text);
  assert.deepEqual([days.json.object, days.json.kind, days.json.granularity], ['usage_history', 'gauge', 'day']);
  assert.ok(days.json.data.length >= 30 && days.json.data.length <= 31, String(days.json.data.length));
  const today = days.json.data.at(-1);
  assert.deepEqual([today.usage, today.value, today.events], [1, 1, 2]);  // set to 2, then to 1
  assert.equal(today.end - today.start, 86400);
  const months = await server.get(`/v1/customers/${c}/usage/history?meter=build_hours&granularity=month`);
  assert.equal(months.json.data.length, 12);
  assert.deepEqual([months.json.data.at(-1).usage, months.json.data.at(-1).value], [3, null]);
  const now = Math.floor(Date.now() / 1000);
  const window = await server.get(`/v1/customers/${c}/usage/history?meter=build_hours&from=${now - 86400}&to=${now + 60}`);
  assert.ok(window.json.data.length >= 1 && window.json.data.length <= 2);
  const h = (q) => server.get(`/v1/customers/${c}/usage/history?${q}`);
  assertError(await h(''), 400, 'parameter_missing', 'meter');
  assertError(await h('meter=widgets'), 404, 'resource_missing', 'meter');
  assertError(await h('meter=projects&granularity=week'), 400, 'parameter_invalid', 'granularity');
  assertError(await h(`meter=projects&from=${now}&to=${now - 10}`), 400, 'parameter_invalid', 'from');
  assertError(await h(`meter=projects&from=0&to=${now}`), 400, 'parameter_invalid', 'to');
  assertError(await h('meter=projects&from=yesterday'), 400, 'parameter_invalid', 'from');
  assertError(await h('meter=projects&colour=red'), 400, 'parameter_unknown', 'colour');
  assertError(await server.get('/v1/customers/cust_nope/usage/history?meter=projects'), 404, 'resource_missing', 'id');
});

test('bad flag input names its parameter and changes nothing', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'flag_bad' })).json.id;
  const before = (await server.get('/v1/flags/billing_v2')).json;
  const post = (body, name = 'billing_v2') => server.post(`/v1/flags/${name}`, body);
  assertError(await post({ rollout_percentage: 101 }), 400, 'parameter_invalid', 'rollout_percentage');
  assertError(await post({ rollout_percentage: -1 }), 400, 'parameter_invalid', 'rollout_percentage');
  assertError(await post({ rollout_percentage: '50' }), 400, undefined, 'rollout_percentage');
  assertError(await post({ enabled: 'yes' }), 400, 'parameter_invalid', 'enabled');
  assertError(await post({ description: 'x'.repeat(501) }), 400, 'parameter_invalid', 'description');
  assertError(await post({ overrides: [c] }), 400, 'parameter_invalid', 'overrides');
  assertError(await post({ overrides: { [c]: 'on' } }), 400, 'parameter_invalid', `overrides.${c}`);
  assertError(await post({ rollout_percentage: 90, overrides: { [c]: true, cust_nope: true } }), 404, 'resource_missing', 'overrides.cust_nope');
  assertError(await post({ colour: 'red' }), 400, 'parameter_unknown', 'colour');
  assertError(await post({}, 'Bad%20Name'), 400, 'parameter_invalid', 'name');
  assert.deepEqual((await server.get('/v1/flags/billing_v2')).json, before);
  assertError(await server.get('/v1/flags/nope'), 404, 'resource_missing', 'name');
  const check = (b) => server.post('/v1/check', { customer: c, ...b });
  assertError(await check({ flag: 'nope' }), 404, 'resource_missing', 'flag');
  assertError(await check({ flag: 'billing_v2', meter: 'projects' }), 400, 'parameter_invalid', 'flag');
  assertError(await check({ flag: 'billing_v2', amount: 1 }), 400, 'parameter_invalid', 'amount');
  assertError(await check({ flag: 7 }), 400, undefined, 'flag');
  assertError(await server.post('/v1/check', { customer: 'cust_nope', flag: 'billing_v2' }), 404, 'resource_missing', 'customer');
  assertError(await server.get('/v1/customers/cust_nope/flags'), 404, 'resource_missing', 'id');
});
