// Webhook ingestion end to end: events signed by the official stripe package, delivered over HTTP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startTally, makeEvent, subscription, customerObject, stripe, OLD_SECRET,
} from './harness.mjs';
import { DAY, T0, finalState, lifecycle, shuffle } from './storm.mjs';

let server;
before(async () => { server = await startTally(); });
after(async () => { await server.stop(); });

test('a signed subscription event makes the customer professional, visible through the API', async () => {
  const ev = makeEvent('evt_single_1', 'customer.subscription.created', T0, subscription('sub_single', 'cus_single', 'active', 'pro_monthly', T0));
  const r = await server.deliver(ev);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { received: true, id: 'evt_single_1', type: 'customer.subscription.created', duplicate: false });
  await server.settle();
  const c = (await server.get('/v1/customers?stripe_customer_id=cus_single')).json.data[0];
  assert.equal(c.role, 'professional');
  assert.equal(c.plan, 'pro');
  assert.equal(c.subscription.id, 'sub_single');
  assert.equal(c.subscription.status, 'active');
  assert.equal(c.subscription.current_period_end, T0 + 30 * DAY);
  const ent = (await server.get(`/v1/customers/${c.id}/entitlements`)).json;
  assert.equal(ent.features.ai_features, true);
  assert.equal(ent.limits.projects, 3);
  const audit = (await server.get(`/v1/audit?customer=${c.id}`)).json.data;
  const change = audit.find((e) => e.kind === 'role_changed');
  assert.equal(change.before, 'member');
  assert.equal(change.after, 'professional');
  assert.equal(change.cause, 'event:evt_single_1');
  const stored = (await server.get('/v1/webhook_events/evt_single_1')).json;
  assert.equal(stored.status, 'processed');
  assert.equal(stored.outcome, 'applied');
  assert.equal(stored.attempts, 1);
});

test('shuffled delivery with duplicates ends in the same state as in-order delivery', async () => {
  for (const e of lifecycle('inorder')) assert.equal((await server.deliver(e)).status, 200);
  await server.settle();
  const want = await finalState(server, 'inorder');
  assert.deepEqual(want, { role: 'professional', plan: 'scale', email: 'inorder@example.com', external_id: 'user_inorder',
                           status: 'active', cancel_at_period_end: true, interval: 'month' });
  for (let seed = 1; seed <= 6; seed++) {
    const prefix = `shuf${seed}`;
    const events = lifecycle(prefix);
    const withDupes = shuffle([...events, ...events.filter((_, i) => (i + seed) % 3 === 0)], seed);
    // Concurrent deliveries, as Stripe may send them.
    const results = await Promise.all(withDupes.map((e) => server.deliver(e)));
    for (const r of results) assert.equal(r.status, 200, r.text);
    assert.equal(results.filter((r) => r.json.duplicate).length, withDupes.length - events.length);
    await server.settle();
    const got = await finalState(server, prefix);
    assert.deepEqual({ ...got, email: got.email.replace(prefix, 'inorder'), external_id: got.external_id.replace(prefix, 'inorder') }, want, `seed ${seed}`);
  }
});

test('a duplicate delivery is acknowledged and changes nothing', async () => {
  const ev = makeEvent('evt_dupe_1', 'customer.created', T0, customerObject('cus_dupe', 'dupe@example.com', 'user_dupe'));
  assert.equal((await server.deliver(ev)).json.duplicate, false);
  await server.settle();
  const auditBefore = (await server.get('/v1/audit?limit=500')).json.data.length;
  const again = await server.deliver(ev);
  assert.equal(again.status, 200);
  assert.equal(again.json.duplicate, true);
  await server.settle();
  assert.equal((await server.get('/v1/audit?limit=500')).json.data.length, auditBefore);
});

test('a secret being rotated out still verifies', async () => {
  const ev = makeEvent('evt_rot_1', 'customer.created', T0, customerObject('cus_rot', 'rot@example.com'));
  const r = await server.deliver(ev, { secret: OLD_SECRET });
  assert.equal(r.status, 200, r.text);
});

test('bad deliveries get a 400 with a JSON error naming the cause and record nothing', async () => {
  const ev = makeEvent('evt_bad_1', 'customer.created', T0, customerObject('cus_bad', 'bad@example.com'));
  const text = JSON.stringify(ev);
  const post = (headers, raw = text) => server.request('POST', '/webhooks/stripe', { raw, key: null, headers });
  const sign = (payload, opts = {}) => stripe.webhooks.generateTestHeaderString({ payload, secret: 'whsec_e2e_primary_secret', ...opts });
  const cases = [
    { name: 'no header', headers: {}, code: 'signature_verification_failed', message: /No stripe-signature header/ },
    { name: 'wrong secret', headers: { 'stripe-signature': stripe.webhooks.generateTestHeaderString({ payload: text, secret: 'whsec_wrong' }) },
      code: 'signature_verification_failed', message: /No signatures found matching/ },
    { name: 'garbage header', headers: { 'stripe-signature': 'nonsense' }, code: 'signature_verification_failed', message: /Unable to extract/ },
    { name: 'stale timestamp', headers: { 'stripe-signature': sign(text, { timestamp: Math.floor(Date.now() / 1000) - 301 }) },
      code: 'signature_verification_failed', message: /tolerance/ },
    { name: 'body changed after signing', headers: { 'stripe-signature': sign(text) }, raw: text.replace('bad@', 'bad2@'),
      code: 'signature_verification_failed', message: /No signatures found matching/ },
    { name: 'signed but not JSON', headers: { 'stripe-signature': sign('{not json') }, raw: '{not json', code: 'malformed_payload', message: /malformed JSON/ },
    { name: 'signed, no id', headers: { 'stripe-signature': sign('{"type":"x","created":1}') }, raw: '{"type":"x","created":1}',
      code: 'malformed_payload', message: /id is required/, param: 'id' },
    { name: 'oversized', headers: { 'stripe-signature': sign('x'.repeat(600 * 1024)) }, raw: 'x'.repeat(600 * 1024), code: 'payload_too_large', message: /limit/ },
  ];
  for (const c of cases) {
    const r = await post(c.headers, c.raw);
    assert.equal(r.status, 400, `${c.name}: ${r.text}`);
    assert.equal(r.json.error.type, 'invalid_request_error', c.name);
    assert.equal(r.json.error.code, c.code, `${c.name}: ${r.text}`);
    assert.match(r.json.error.message, c.message, c.name);
    if (c.param) assert.equal(r.json.error.param, c.param, c.name);
  }
  assert.equal((await server.get('/v1/webhook_events/evt_bad_1')).status, 404);
  assert.equal((await server.get('/v1/customers?stripe_customer_id=cus_bad')).json.data.length, 0);
  const wrongMethod = await server.request('GET', '/webhooks/stripe', { key: null });
  assert.equal(wrongMethod.status, 405);
});

test('an event that cannot be applied is kept failed with its error, and an admin retry reruns it', async () => {
  const sub = subscription('sub_broken', 'cus_broken', 'hibernating', 'pro_monthly', T0);
  const ev = makeEvent('evt_broken_1', 'customer.subscription.updated', T0, sub);
  assert.equal((await server.deliver(ev)).status, 200);
  let stored;
  for (let i = 0; i < 200; i++) {
    stored = (await server.get('/v1/webhook_events/evt_broken_1')).json;
    if (stored.attempts > 0) break;
    await new Promise((res) => setTimeout(res, 25));
  }
  assert.equal(stored.status, 'failed');
  assert.match(stored.last_error, /data\.object\.status/);
  assert.ok(stored.next_attempt_at >= stored.received_at);
  const failed = (await server.get('/v1/webhook_events?status=failed')).json.data.map((e) => e.id);
  assert.ok(failed.includes('evt_broken_1'));
  const retried = await server.post('/v1/webhook_events/evt_broken_1/retry');
  assert.equal(retried.status, 200);
  assert.equal(retried.json.status, 'failed');
  assert.ok(retried.json.attempts >= 2);
  const processed = await server.post('/v1/webhook_events/evt_single_1/retry');
  assert.equal(processed.status, 409);
  assert.equal((await server.post('/v1/webhook_events/evt_nope/retry')).status, 404);
});

test('SIGTERM drains and exits cleanly', async () => {
  const other = await startTally();
  const ev = makeEvent('evt_term_1', 'customer.created', T0, customerObject('cus_term', 'term@example.com'));
  assert.equal((await other.deliver(ev)).status, 200);
  const { code } = await other.stop();
  assert.equal(code, 0, other.stderr());
  assert.match(other.stderr(), /stopped cleanly/);
});
