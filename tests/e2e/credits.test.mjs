// Credits over HTTP (issue 13): grants, deductions by amount and by action in the spend order, the transfer id as
// idempotency key, 402 when short with nothing spent, parallel deductions never spending a credit twice, holds
// captured in part and released, reversals, the ledger as transactions (JSON and CSV), sessions reading their own
// balance, and bad input naming its parameter and writing nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertError, startTally, until } from './harness.mjs';

let server;
before(async () => { server = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_CREDIT_SWEEP_INTERVAL_MS: '200' }); });
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
  const first = await balance(c);
  assert.deepEqual(first, { object: 'credit_balance', customer: c, subscription_credits: 0, bundle_credits: 100,
    promotional_credits: 20, total: 120, reserved: 0, used_this_period: 0, period_start: first.period_start,
    next_reset_at: null, plan: 'free' });
  // Without a subscription the period is the calendar month in UTC.
  const now = new Date();
  assert.equal(first.period_start, Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000);
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

test('a reservation holds credits; a capture spends part in the spend order and gives the rest back; a release gives all', async () => {
  const c = await customer('credits_hold');
  const promo = (await server.post('/v1/credits/grants', { customer: c, id: 'h-promo', amount: 30 })).json;
  const bundle = (await server.post('/v1/credits/grants', { customer: c, id: 'h-bundle', amount: 50, type: 'bundle' })).json;
  const held = await server.post('/v1/credits/reservations', { customer: c, id: 'gen-1', amount: 60, metadata: { model: 'big' } });
  assert.equal(held.status, 201, held.text);
  assert.deepEqual([held.json.object, held.json.status, held.json.amount, held.json.captured], ['credit_reservation', 'pending', 60, null]);
  assert.deepEqual(held.json.breakdown, [{ grant: promo.id, amount: 30 }, { grant: bundle.id, amount: 30 }]);
  assert.equal(held.json.expires_at - held.json.created, 600);
  let b = await balance(c);
  assert.deepEqual([b.total, b.reserved], [20, 60]);
  // What is held cannot be spent.
  assertError(await server.post('/v1/credits/deduct', { customer: c, id: 'h-over', amount: 21 }), 402, 'insufficient_credits', 'amount');
  const replay = await server.post('/v1/credits/reservations', { customer: c, id: 'gen-1', amount: 60, metadata: { model: 'big' } });
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.json.id, 'gen-1');

  assertError(await server.post('/v1/credits/reservations/gen-1/capture', { amount: 61 }), 400, 'parameter_invalid', 'amount');
  const captured = await server.post('/v1/credits/reservations/gen-1/capture', { amount: 45 });
  assert.equal(captured.status, 200, captured.text);
  assert.deepEqual([captured.json.status, captured.json.captured], ['captured', 45]);
  assert.deepEqual(captured.json.breakdown, [{ grant: bundle.id, amount: 15 }]);
  assert.deepEqual(captured.json.balance, { subscription: 0, bundle: 35, promotional: 0, total: 35 });
  assert.equal((await server.post('/v1/credits/reservations/gen-1/capture', { amount: 45 })).headers.get('idempotent-replayed'), 'true');
  assertError(await server.post('/v1/credits/reservations/gen-1/capture', { amount: 44 }), 409, 'reservation_settled', 'id');
  assertError(await server.post('/v1/credits/reservations/gen-1/release', {}), 409, 'reservation_settled', 'id');
  b = await balance(c);
  assert.deepEqual([b.total, b.reserved, b.used_this_period], [35, 0, 45]);

  const second = await server.post('/v1/credits/reservations', { customer: c, id: 'gen-2', amount: 35, expires_in: 30 });
  assert.equal(second.json.expires_at - second.json.created, 30);
  const released = await server.post('/v1/credits/reservations/gen-2/release');
  assert.equal(released.status, 200, released.text);
  assert.equal(released.json.status, 'released');
  assert.equal(released.json.balance.total, 35);
  assert.equal((await server.get('/v1/credits/reservations/gen-2')).json.status, 'released');
  assertError(await server.get('/v1/credits/reservations/nope'), 404, 'resource_missing', 'id');
});

test('the expiry sweep releases a lapsed hold and expires a lapsed grant without any write of the customer', async () => {
  const c = await customer('credits_sweep');
  const promo = (await server.post('/v1/credits/grants', { customer: c, id: 's-promo', amount: 30,
    expires_at: Math.floor(Date.now() / 1000) + 2 })).json;
  await server.post('/v1/credits/grants', { customer: c, id: 's-bundle', amount: 50, type: 'bundle' });
  assert.equal((await server.post('/v1/credits/reservations', { customer: c, id: 's-hold', amount: 40, expires_in: 1 })).status, 201);
  // Only reads from here: the releases and the expiry are written by the sweep.
  const kinds = async () => (await server.get(`/v1/customers/${c}/credit_transactions?limit=100`)).json.data.map((t) => t.id);
  const ids = await until(async () => { const k = await kinds(); return k.includes(`expire:${promo.id}:lapsed`) && k; },
    'the sweep to expire the promotion', 10000);
  assert.ok(ids.includes('release:s-hold'), ids.join(' '));
  assert.equal((await server.get('/v1/credits/reservations/s-hold')).json.status, 'expired');
  const b = await balance(c);
  assert.deepEqual([b.promotional_credits, b.bundle_credits, b.reserved], [0, 50, 0]);
});

test('parallel holds never hold a credit twice', async () => {
  const c = await customer('credits_hold_race');
  await server.post('/v1/credits/grants', { customer: c, id: 'hr-g', amount: 25 });
  const answers = await Promise.all(Array.from({ length: 60 }, (_, i) =>
    server.post('/v1/credits/reservations', { customer: c, id: `hr-${i}`, amount: 1 })));
  assert.equal(answers.filter((r) => r.status === 201).length, 25);
  assert.equal(answers.filter((r) => r.status === 402).length, 35);
  const b = await balance(c);
  assert.deepEqual([b.total, b.reserved], [0, 25]);
});

test('a reversal returns a deduction to its grants once; transactions list the ledger newest first, as JSON and CSV', async () => {
  const c = await customer('credits_reverse');
  const promo = (await server.post('/v1/credits/grants', { customer: c, id: 'r-promo', amount: 10 })).json;
  const bundle = (await server.post('/v1/credits/grants', { customer: c, id: 'r-bundle', amount: 10, type: 'bundle' })).json;
  await server.post('/v1/credits/deduct', { customer: c, id: 'r-d', amount: 15, action: undefined });
  const reversed = await server.post('/v1/credits/transfers/r-d/reverse');
  assert.equal(reversed.status, 200, reversed.text);
  assert.deepEqual([reversed.json.id, reversed.json.type, reversed.json.amount, reversed.json.reference], ['reversal:r-d', 'reverse', 15, 'r-d']);
  assert.deepEqual(reversed.json.breakdown, [{ grant: promo.id, amount: 10 }, { grant: bundle.id, amount: 5 }]);
  assert.equal(reversed.json.balance.total, 20);
  const again = await server.post('/v1/credits/transfers/r-d/reverse');
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal((await balance(c)).total, 20);
  assertError(await server.post('/v1/credits/transfers/reversal:r-d/reverse'), 400, 'transfer_not_reversible', 'id');
  assertError(await server.post('/v1/credits/transfers/r-promo/reverse'), 400, 'transfer_not_reversible', 'id');
  assertError(await server.post('/v1/credits/transfers/nope/reverse'), 404, 'resource_missing', 'id');
  assertError(await server.post('/v1/credits/deduct', { customer: c, id: 'reversal:x', amount: 1 }), 400, 'parameter_invalid', 'id');

  const list = (await server.get(`/v1/customers/${c}/credit_transactions`)).json;
  assert.deepEqual(list.data.map((t) => [t.id, t.type, t.amount]),
    [['reversal:r-d', 'reverse', 15], ['r-d', 'deduct', 15], ['r-bundle', 'grant', 10], ['r-promo', 'grant', 10]]);
  assert.equal(list.has_more, false);
  const page = (await server.get(`/v1/customers/${c}/credit_transactions?limit=2`)).json;
  assert.equal(page.has_more, true);
  const next = (await server.get(`/v1/customers/${c}/credit_transactions?limit=2&starting_after=${page.data[1].id}`)).json;
  assert.deepEqual(next.data.map((t) => t.id), ['r-bundle', 'r-promo']);
  assert.deepEqual((await server.get(`/v1/customers/${c}/credit_transactions?type=grant`)).json.data.map((t) => t.id).sort(), ['r-bundle', 'r-promo']);
  const csv = await server.get(`/v1/customers/${c}/credit_transactions?format=csv&limit=1`);
  assert.equal(csv.status, 200);
  assert.match(csv.headers.get('content-type'), /^text\/csv/);
  assert.equal(csv.headers.get('tally-has-more'), 'true');
  assert.equal(csv.headers.get('tally-next-starting-after'), 'reversal:r-d');
  const lines = csv.text.trim().split(/\r?\n/);
  assert.equal(lines[0], 'id,customer,type,amount,action,reference,balance_subscription,balance_bundle,balance_promotional,balance_total,actor,created');
  assert.match(lines[1], new RegExp(`^reversal:r-d,${c},reverse,15,,r-d,0,10,10,20,`));
  assertError(await server.get(`/v1/customers/${c}/credit_transactions?type=gift`), 400, 'parameter_invalid', 'type');
  assertError(await server.get(`/v1/customers/${c}/credit_transactions?created[gte]=x`), 400, 'parameter_invalid', 'created[gte]');
  assertError(await server.get(`/v1/customers/${c}/credit_transactions?starting_after=nope`), 404, 'resource_missing', 'starting_after');
  assertError(await server.get(`/v1/customers/${c}/credit_transactions?colour=red`), 400, 'parameter_unknown', 'colour');
  assertError(await server.get('/v1/customers/cust_nope/credit_transactions'), 404, 'resource_missing', 'id');
});

test('reservations: bad input names its parameter and holds nothing', async () => {
  const c = await customer('credits_hold_bad');
  await server.post('/v1/credits/grants', { customer: c, id: 'hb-g', amount: 10 });
  const reserve = (b) => server.post('/v1/credits/reservations', { customer: c, id: `hb-${Math.random()}`, amount: 1, ...b });
  assertError(await reserve({ amount: 0 }), 400, 'parameter_invalid', 'amount');
  assertError(await reserve({ amount: 1.5 }), 400, 'parameter_invalid', 'amount');
  assertError(await reserve({ amount: undefined }), 400, 'parameter_missing', 'amount');
  assertError(await reserve({ amount: 11 }), 402, 'insufficient_credits', 'amount');
  assertError(await reserve({ expires_in: 0 }), 400, 'parameter_invalid', 'expires_in');
  assertError(await reserve({ expires_in: 604801 }), 400, 'parameter_invalid', 'expires_in');
  assertError(await reserve({ metadata: [] }), 400, 'parameter_invalid', 'metadata');
  assertError(await reserve({ colour: 'red' }), 400, 'parameter_unknown', 'colour');
  assertError(await reserve({ customer: 'cust_nope' }), 404, 'resource_missing', 'customer');
  assertError(await server.post('/v1/credits/reservations/nope/capture', { amount: 1 }), 404, 'resource_missing', 'id');
  await reserve({ id: 'hb-ok', amount: 2 });
  assertError(await server.post('/v1/credits/reservations/hb-ok/capture', {}), 400, 'parameter_missing', 'amount');
  assertError(await server.post('/v1/credits/reservations/hb-ok/capture', { amount: 0 }), 400, 'parameter_invalid', 'amount');
  assertError(await server.post('/v1/credits/reservations/hb-ok/release', { now: true }), 400, 'parameter_unknown', 'now');
  const b = await balance(c);
  assert.deepEqual([b.total, b.reserved], [8, 2]);
  assert.equal((await server.get(`/v1/customers/${c}/credit_transactions?type=reserve`)).json.data.length, 1);
});
