// Credits over HTTP (issue 13, first slice): grants, deductions by amount and by action in the spend order, the
// transfer id as idempotency key, 402 when short with nothing spent, parallel deductions never spending a credit
// twice, sessions reading their own balance, and bad input naming its parameter and writing nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertError, startTally } from './harness.mjs';

let server;
before(async () => { server = await startTally({ TALLY_STRIPE_SANDBOX: undefined }); });
after(async () => { await server?.stop(); });

const customer = async (external) => (await server.post('/v1/customers', { external_id: external })).json.id;
const balance = async (c) => (await server.get(`/v1/customers/${c}/credits`)).json;

test('a deduction spends the soonest-expiring promotion first, spans grants, and replays by its id', async () => {
  const c = await customer('credits_ada');
  const bundle = await server.post('/v1/credits/grants', { customer: c, id: 'g-bundle', amount: 100, type: 'bundle' });
  assert.equal(bundle.status, 201, bundle.text);
  const promo = await server.post('/v1/credits/grants', { customer: c, id: 'g-promo', amount: 20, reason: 'launch',
    expires_at: Math.floor(Date.now() / 1000) + 86400 });
  assert.equal(promo.json.type, 'promotional');
  assert.deepEqual(await balance(c), { object: 'credit_balance', customer: c, subscription_credits: 0, bundle_credits: 100,
    promotional_credits: 20, total: 120 });
  const byAction = await server.post('/v1/credits/deduct', { customer: c, id: 'd-1', action: 'GENERATE_CAMPAIGN', metadata: { lead: 'L9' } });
  assert.equal(byAction.status, 200, byAction.text);
  assert.deepEqual([byAction.json.amount, byAction.json.action, byAction.json.metadata], [5, 'GENERATE_CAMPAIGN', { lead: 'L9' }]);
  assert.deepEqual(byAction.json.breakdown, [{ grant: promo.json.id, amount: 5 }]);
  const spans = await server.post('/v1/credits/deduct', { customer: c, id: 'd-2', amount: 25 });
  assert.deepEqual(spans.json.breakdown, [{ grant: promo.json.id, amount: 15 }, { grant: bundle.json.id, amount: 10 }]);
  assert.deepEqual(spans.json.balance, { subscription: 0, bundle: 90, promotional: 0, total: 90 });
  // The same id again: the first answer, nothing spent; other fields: refused.
  const replay = await server.post('/v1/credits/deduct', { customer: c, id: 'd-2', amount: 25 });
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(replay.json, spans.json);
  assertError(await server.post('/v1/credits/deduct', { customer: c, id: 'd-2', amount: 26 }), 400, 'idempotency_error', 'id');
  assert.equal((await balance(c)).total, 90);
  const grants = (await server.get(`/v1/customers/${c}/credit_grants`)).json.data;
  assert.deepEqual(grants.map((g) => [g.transfer, g.remaining]).sort(), [['g-bundle', 90], ['g-promo', 0]]);
  const audit = (await server.get(`/v1/audit?customer=${c}`)).json.data.filter((e) => e.kind === 'credit_granted');
  assert.equal(audit.length, 2);
});

test('short of credits is a 402 and spends nothing; parallel deductions never spend a credit twice', async () => {
  const c = await customer('credits_race');
  await server.post('/v1/credits/grants', { customer: c, id: 'race-g', amount: 50 });
  assertError(await server.post('/v1/credits/deduct', { customer: c, id: 'too-much', amount: 51 }), 402, 'insufficient_credits', 'amount');
  assert.equal((await balance(c)).total, 50);
  const answers = await Promise.all(Array.from({ length: 80 }, (_, i) =>
    server.post('/v1/credits/deduct', { customer: c, id: `race-${i}`, action: 'SEND_EMAIL' })));
  assert.equal(answers.filter((r) => r.status === 200).length, 50);
  assert.equal(answers.filter((r) => r.status === 402).length, 30);
  assert.equal((await balance(c)).total, 0);
});

test('a customer session reads its own credits only, and cannot spend them', async () => {
  const org = (await server.post('/v1/customers', { external_id: 'credits_org', type: 'organization' })).json.id;
  await server.post(`/v1/customers/${org}/members`, { user: 'cr_owner', role: 'owner' });
  const token = (await server.post('/v1/customer_sessions', { customer: org, user: 'cr_owner' })).json.token;
  assert.equal((await server.get(`/v1/customers/${org}/credits`, { key: token })).status, 200);
  assert.equal((await server.get(`/v1/customers/${org}/credit_grants`, { key: token })).status, 200);
  const other = await customer('credits_other');
  assertError(await server.get(`/v1/customers/${other}/credits`, { key: token }), 404, 'resource_missing', 'id');
  assert.equal((await server.post('/v1/credits/deduct', { customer: org, id: 'x', amount: 1 }, { key: token })).status, 404);
});

test('bad input names its parameter and writes nothing', async () => {
  const c = await customer('credits_bad');
  await server.post('/v1/credits/grants', { customer: c, id: 'bad-g', amount: 10 });
  const deduct = (b) => server.post('/v1/credits/deduct', { customer: c, id: `bad-${Math.random()}`, ...b });
  assertError(await deduct({ amount: 0 }), 400, 'parameter_invalid', 'amount');
  assertError(await deduct({ amount: -3 }), 400, 'parameter_invalid', 'amount');
  assertError(await deduct({ amount: 1.5 }), 400, 'parameter_invalid', 'amount');
  assertError(await deduct({ amount: 2 ** 53 + 2 }), 400, 'parameter_invalid', 'amount');
  assertError(await deduct({}), 400, 'parameter_invalid', 'amount');
  assertError(await deduct({ amount: 1, action: 'SEND_EMAIL' }), 400, 'parameter_invalid', 'action');
  assertError(await deduct({ action: 'TELEPORT' }), 404, 'resource_missing', 'action');
  assertError(await deduct({ amount: 1, metadata: 'x' }), 400, 'parameter_invalid', 'metadata');
  assertError(await deduct({ amount: 1, colour: 'red' }), 400, 'parameter_unknown', 'colour');
  assertError(await deduct({ amount: 1, id: '' }), 400, undefined, 'id');
  assertError(await server.post('/v1/credits/deduct', { customer: 'cust_nope', id: 'nope-1', amount: 1 }), 404, 'resource_missing', 'customer');
  const grant = (b) => server.post('/v1/credits/grants', { customer: c, id: `bad-${Math.random()}`, amount: 5, ...b });
  assertError(await grant({ type: 'subscription' }), 400, 'parameter_invalid', 'type');
  assertError(await grant({ type: 'gift' }), 400, 'parameter_invalid', 'type');
  assertError(await grant({ expires_at: 1 }), 400, 'parameter_invalid', 'expires_at');
  assertError(await grant({ amount: undefined }), 400, 'parameter_missing', 'amount');
  assertError(await grant({ priority: 5000 }), 400, 'parameter_invalid', 'priority');
  assertError(await server.post('/v1/credits/grants', { customer: 'cust_nope', id: 'nope-2', amount: 1 }), 404, 'resource_missing', 'customer');
  assertError(await server.get('/v1/customers/cust_nope/credits'), 404, 'resource_missing', 'id');
  assert.equal((await balance(c)).total, 10);
  assert.equal((await server.get(`/v1/customers/${c}/credit_grants`)).json.data.length, 1);
});
