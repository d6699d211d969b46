// Events to the app (issue 9): the outbox, signed deliveries verified by the official SDK, retries in per-object
// order, crash safety, secret rolls, the events and endpoints API and its bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import Stripe from 'stripe';
import { startTally, makeEvent, subscription, customerObject } from './harness.mjs';

const sdk = new Stripe('sk_test_unused', { apiVersion: '2025-03-31.basil' });
const T0 = Math.floor(Date.now() / 1000) - 3600;

async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A receiver on a free port. |answer(event, attempt)| gives the status (200 by default). */
async function startReceiver(answer = () => 200) {
  const received = [];  // { event, header, raw, at, status }
  const attempts = new Map();
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
      let event;
      try { event = JSON.parse(raw); } catch { event = null; }
      const n = (attempts.get(event?.id) ?? 0) + 1;
      attempts.set(event?.id, n);
      const status = answer(event, n);
      received.push({ event, header: req.headers['stripe-signature'], raw, at: Date.now(), status });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}/hooks`, received, attempts,
           ok: () => received.filter((r) => r.status === 200), close: () => new Promise((r) => server.close(r)) };
}

let tally;
before(async () => { tally = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_EVENT_RETRY_BASE_MS: '50' }); });
after(async () => { await tally.stop(); });

async function register(url, events = ['*']) {
  const r = await tally.post('/v1/webhook_endpoints', { url, enabled_events: events, description: 'e2e' });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

test('a Stripe webhook that upgrades a customer reaches the app as customer.role_changed, verified by stripe-node', async () => {
  const rx = await startReceiver();
  const endpoint = await register(rx.url);
  assert.match(endpoint.secret, /^whsec_[0-9a-f]{48}$/);
  assert.equal((await tally.get(`/v1/webhook_endpoints/${endpoint.id}`)).json.secret, undefined);
  const made = await tally.post('/v1/customers', { external_id: 'user_ev1', email: 'ev1@example.com' });
  assert.equal(made.status, 201);
  const cust = made.json.id;
  await tally.deliver(makeEvent('evt_ev1_c', 'customer.created', T0, customerObject('cus_ev1', 'ev1@example.com', 'user_ev1')));
  const sent = Date.now();
  await tally.deliver(makeEvent('evt_ev1_s', 'customer.subscription.created', T0 + 1,
    subscription('sub_ev1', 'cus_ev1', 'active', 'pro_monthly', T0)));
  const changed = await until(() => rx.ok().find((r) => r.event.type === 'customer.role_changed'), 'customer.role_changed');
  assert.ok(changed.at - sent < 5000, `arrived after ${changed.at - sent} ms`);
  // The official SDK verifies it with the endpoint's secret, and only with it.
  const event = sdk.webhooks.constructEvent(changed.raw, changed.header, endpoint.secret);
  assert.equal(event.object, 'event');
  assert.match(event.id, /^evt_/);
  assert.equal(event.data.object.id, cust);
  assert.equal(event.data.object.role, 'professional');
  assert.equal(event.data.previous_attributes.role, 'member');
  assert.equal(event.customer, cust);
  assert.throws(() => sdk.webhooks.constructEvent(changed.raw, changed.header, 'whsec_other'));
  // data.object is what the API returns for the customer.
  const api = (await tally.get(`/v1/customers/${cust}`)).json;
  assert.deepEqual(event.data.object, api);
  // Every type the change produced, each once, in per-object sequence order. (Objects are delivered in parallel:
  // the customer's entitlements_updated may still be on its way when its role_changed has arrived.)
  const expected = ['customer.created', 'customer.updated', 'subscription.created', 'customer.role_changed',
    'customer.entitlements_updated'];
  await until(() => expected.every((t) => rx.ok().some((r) => r.event.type === t)), 'every event of the change');
  const types = rx.ok().map((r) => r.event.type);
  for (const t of expected) assert.ok(types.includes(t), `${t} in ${types}`);
  // (A subscription, and the credit grant its plan issues, are objects of their own, with their own sequences.)
  const aboutCustomer = rx.ok().filter((r) => r.event.customer === cust &&
    !['subscription', 'credit_grant'].includes(r.event.data.object.object));
  const seqs = aboutCustomer.map((r) => r.event.sequence);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  assert.equal(new Set(seqs).size, seqs.length);
  // The events API has them too.
  const listed = await tally.get(`/v1/events?customer=${cust}&type=customer.role_changed`);
  assert.equal(listed.status, 200, listed.text);
  assert.equal(listed.json.data.length, 1);
  assert.equal(listed.json.data[0].id, event.id);
  assert.deepEqual((await tally.get(`/v1/events/${event.id}`)).json, JSON.parse(changed.raw));
  const attempts = await tally.get(`/v1/webhook_endpoints/${endpoint.id}/deliveries`);
  assert.equal(attempts.status, 200);
  assert.ok(attempts.json.data.some((a) => a.event === event.id && a.status_code === 200 && a.error === null));
  await tally.request('DELETE', `/v1/webhook_endpoints/${endpoint.id}`);
  await rx.close();
});

test('a receiver failing its first attempts gets every event, in per-object order, with the expected attempts', async () => {
  const failures = 3;
  const rx = await startReceiver((event, attempt) => (attempt <= failures ? 500 : 200));
  const endpoint = await register(rx.url, ['customer.created', 'customer.role_changed', 'customer.entitlements_updated']);
  const ids = [];
  for (let i = 0; i < 3; ++i) {
    const c = await tally.post('/v1/customers', { external_id: `user_retry_${i}` });
    ids.push(c.json.id);
    // Two more events about the same customer: an override and its removal.
    await tally.post(`/v1/customers/${c.json.id}/role_override`, { role: 'professional', reason: 'support' });
    await tally.request('DELETE', `/v1/customers/${c.json.id}/role_override`);
  }
  // 3 customers x (created + role_changed x2 + entitlements? no: overrides keep the plan) = 9 events.
  await until(() => new Set(rx.ok().map((r) => r.event.id)).size >= 9, 'every event delivered', 30000);
  for (const id of ids) {
    const mine = rx.ok().filter((r) => r.event.customer === id);
    assert.deepEqual(mine.map((r) => r.event.sequence), [1, 2, 3], JSON.stringify(mine.map((r) => r.event.type)));
    assert.deepEqual(mine.map((r) => r.event.type), ['customer.created', 'customer.role_changed', 'customer.role_changed']);
    for (const r of mine) assert.equal(rx.attempts.get(r.event.id), failures + 1);
  }
  // No event about a customer was sent before the previous one about it was delivered.
  for (const id of ids) {
    const all = rx.received.filter((r) => r.event.customer === id);
    let highestDelivered = 0;
    for (const r of all) {
      assert.ok(r.event.sequence <= highestDelivered + 1, `sequence ${r.event.sequence} sent before ${highestDelivered + 1} was delivered`);
      if (r.status === 200) highestDelivered = Math.max(highestDelivered, r.event.sequence);
    }
  }
  const log = (await tally.get(`/v1/webhook_endpoints/${endpoint.id}/deliveries?limit=100`)).json.data;
  assert.equal(log.filter((a) => a.status_code === 500).length, 9 * failures);
  assert.ok(log.filter((a) => a.status_code === 500).every((a) => a.error.includes('500')));
  await tally.request('DELETE', `/v1/webhook_endpoints/${endpoint.id}`);
  await rx.close();
});

test('rolling a secret: during the overlap, a receiver with only the old secret and one with only the new both verify', async () => {
  const rx = await startReceiver();
  const endpoint = await register(rx.url, ['customer.created']);
  const rolled = await tally.post(`/v1/webhook_endpoints/${endpoint.id}/roll_secret`, undefined);
  assert.equal(rolled.status, 200, rolled.text);
  assert.match(rolled.json.secret, /^whsec_/);
  assert.notEqual(rolled.json.secret, endpoint.secret);
  await tally.post('/v1/customers', { external_id: 'user_roll' });
  const got = await until(() => rx.ok().find((r) => r.event.data.object.external_id === 'user_roll'), 'the event');
  assert.equal(sdk.webhooks.constructEvent(got.raw, got.header, endpoint.secret).type, 'customer.created');
  assert.equal(sdk.webhooks.constructEvent(got.raw, got.header, rolled.json.secret).type, 'customer.created');
  assert.equal((got.header.match(/v1=/g) ?? []).length, 2);
  await tally.request('DELETE', `/v1/webhook_endpoints/${endpoint.id}`);
  await rx.close();
});

test('redeliver sends an event again; a deleted endpoint gets nothing more', async () => {
  const rx = await startReceiver();
  const endpoint = await register(rx.url, ['customer.created']);
  const c = await tally.post('/v1/customers', { external_id: 'user_redeliver' });
  const first = await until(() => rx.ok().find((r) => r.event.customer === c.json.id), 'the event');
  const again = await tally.post(`/v1/events/${first.event.id}/redeliver`, { endpoint: endpoint.id });
  assert.equal(again.status, 200, again.text);
  await until(() => rx.ok().filter((r) => r.event.id === first.event.id).length === 2, 'the redelivery');
  await tally.request('DELETE', `/v1/webhook_endpoints/${endpoint.id}`);
  await tally.post('/v1/customers', { external_id: 'user_after_delete' });
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(!rx.received.some((r) => r.event.data.object.external_id === 'user_after_delete'));
  await rx.close();
});

test('SIGKILL after a burst: every committed change is delivered after the restart', async () => {
  const own = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_EVENT_RETRY_BASE_MS: '50' });
  // The receiver is down during the burst, so everything is still queued when the process dies.
  const rx = await startReceiver(() => 503);
  const endpoint = (await own.post('/v1/webhook_endpoints', { url: rx.url, enabled_events: ['customer.created'] })).json;
  const made = [];
  await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    const r = await own.post('/v1/customers', { external_id: `user_kill_${i}` });
    if (r.status === 201) made.push(r.json.id);
  }));
  assert.equal(made.length, 40);
  await own.crash();
  await rx.close();
  const rx2 = await startReceiver();
  const restarted = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_EVENT_RETRY_BASE_MS: '50',
    TALLY_DB: own.db }, { dir: own.dir });
  try {
    await restarted.post(`/v1/webhook_endpoints/${endpoint.id}`, { url: rx2.url });
    await until(() => made.every((id) => rx2.ok().some((r) => r.event.customer === id)), 'all 40 events', 60000);
    // Nothing for work that never happened: every delivered event is one of the acknowledged creations.
    assert.ok(rx2.ok().every((r) => made.includes(r.event.customer)));
  } finally {
    await restarted.stop();
    await rx2.close();
  }
});

test('a process with event delivery off records events and sends none; one with delivery on sends them', async () => {
  const off = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_EVENT_DELIVERY: 'off' });
  const rx = await startReceiver();
  let on;
  try {
    assert.equal((await off.post('/v1/webhook_endpoints', { url: rx.url, enabled_events: ['customer.created'] })).status, 201);
    const made = await off.post('/v1/customers', { external_id: 'user_no_delivery' });
    assert.equal(made.status, 201);
    const listed = await off.get(`/v1/events?customer=${made.json.id}&type=customer.created`);
    assert.equal(listed.json.data.length, 1, 'the event is recorded with the change');
    // The dispatcher would have sent it within milliseconds; this process has none running.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(rx.received.length, 0);
    // A clean stop that keeps the database for the next process (stop() would remove the directory).
    const exited = new Promise((r) => off.child.on('exit', r));
    off.child.kill('SIGTERM');
    await exited;
    on = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: off.db }, { dir: off.dir });
    const got = await until(() => rx.ok().find((r) => r.event.customer === made.json.id), 'the recorded event');
    assert.equal(got.event.id, listed.json.data[0].id);
  } finally {
    if (on) await on.stop(); else await off.stop();
    await rx.close();
  }
});

test('/metrics counts delivery attempts by outcome and shows what is pending', async () => {
  const own = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_EVENT_RETRY_BASE_MS: '50' });
  const rx = await startReceiver((event, attempt) => (attempt === 1 ? 500 : 200));
  try {
    await own.post('/v1/webhook_endpoints', { url: rx.url, enabled_events: ['customer.created'] });
    const made = (await own.post('/v1/customers', { external_id: 'user_metrics_ev' })).json;
    await until(() => rx.ok().some((r) => r.event.customer === made.id), 'the event after its retry');
    const value = (text, series) => {
      const line = text.split('\n').find((l) => l.startsWith(series + ' '));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    // The outcome is recorded (and counted) in the round after the answer.
    const text = await until(async () => {
      const t = (await own.get('/metrics', { key: null })).text;
      return value(t, 'tally_event_delivery_attempts_total{outcome="delivered"}') === 1 ? t : undefined;
    }, 'the delivered attempt counted');
    assert.equal(value(text, 'tally_event_delivery_attempts_total{outcome="retrying"}'), 1, text);
    assert.equal(value(text, 'tally_event_delivery_attempt_seconds_count'), 2);
    assert.equal(value(text, 'tally_event_delivered_age_seconds_count'), 1);
    assert.equal(value(text, 'tally_event_deliveries_pending'), 0);
    assert.equal(value(text, 'tally_event_deliveries_in_flight'), 0);
  } finally {
    await own.stop();
    await rx.close();
  }
});

test('bad input to the endpoints and events API is refused with the param named, and creates nothing', async () => {
  const before = (await tally.get('/v1/webhook_endpoints')).json.data.length;
  const cases = [
    [{ url: 'ftp://example.com/x', enabled_events: ['*'] }, 'url_invalid', 'url'],
    [{ url: 'example.com/x', enabled_events: ['*'] }, 'url_invalid', 'url'],
    [{ url: 'https://user:pw@example.com/', enabled_events: ['*'] }, 'url_invalid', 'url'],
    [{ url: 'https://example.com:99999/', enabled_events: ['*'] }, 'url_invalid', 'url'],
    [{ enabled_events: ['*'] }, 'parameter_missing', 'url'],
    [{ url: 'https://example.com/x' }, 'parameter_missing', 'enabled_events'],
    [{ url: 'https://example.com/x', enabled_events: [] }, 'parameter_missing', 'enabled_events'],
    [{ url: 'https://example.com/x', enabled_events: ['customer.created', 'customer.nope'] }, 'parameter_invalid', 'enabled_events[1]'],
    [{ url: 'https://example.com/x', enabled_events: [7] }, 'parameter_invalid', 'enabled_events[0]'],
    [{ url: 'https://example.com/x', enabled_events: 'customer.created' }, 'parameter_invalid', 'enabled_events'],
    [{ url: 'https://example.com/x', enabled_events: ['*'], secret: 'mine' }, 'parameter_unknown', 'secret'],
    [{ url: 'https://example.com/x', enabled_events: ['*'], description: 'x'.repeat(1001) }, 'parameter_invalid', 'description'],
  ];
  for (const [body, code, param] of cases) {
    const r = await tally.post('/v1/webhook_endpoints', body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.code, code, r.text);
    assert.equal(r.json.error.param, param, r.text);
  }
  const malformed = await tally.request('POST', '/v1/webhook_endpoints', { raw: '{"url":', headers: { 'content-type': 'application/json' } });
  assert.equal(malformed.json.error.code, 'malformed_json');
  assert.equal((await tally.get('/v1/webhook_endpoints')).json.data.length, before);
  // More than the named maximum.
  const made = [];
  for (let i = before; i < 16; ++i) {
    const r = await tally.post('/v1/webhook_endpoints', { url: `https://example.com/${i}`, enabled_events: ['invoice.paid'] });
    assert.equal(r.status, 201, r.text);
    made.push(r.json.id);
  }
  const over = await tally.post('/v1/webhook_endpoints', { url: 'https://example.com/17', enabled_events: ['*'] });
  assert.equal(over.status, 400);
  assert.equal(over.json.error.code, 'resource_limit_exceeded');
  for (const id of made) assert.equal((await tally.request('DELETE', `/v1/webhook_endpoints/${id}`)).status, 200);
  // Updates, unknown ids, events API parameters.
  const one = (await tally.post('/v1/webhook_endpoints', { url: 'https://example.com/u', enabled_events: ['*'] })).json;
  const badUpdate = await tally.post(`/v1/webhook_endpoints/${one.id}`, { url: 'nope' });
  assert.equal(badUpdate.json.error.param, 'url');
  assert.equal((await tally.post(`/v1/webhook_endpoints/${one.id}`, { disabled: 'yes' })).json.error.param, 'disabled');
  assert.equal((await tally.get(`/v1/webhook_endpoints/${one.id}`)).json.url, 'https://example.com/u');
  const disabled = await tally.post(`/v1/webhook_endpoints/${one.id}`, { disabled: true });
  assert.equal(disabled.json.status, 'disabled');
  assert.equal((await tally.get('/v1/webhook_endpoints/we_missing')).status, 404);
  assert.equal((await tally.request('DELETE', '/v1/webhook_endpoints/we_missing')).status, 404);
  assert.equal((await tally.post('/v1/webhook_endpoints/we_missing/roll_secret')).status, 404);
  assert.equal((await tally.get('/v1/events/evt_missing')).status, 404);
  assert.equal((await tally.get('/v1/events?type=customer.nope')).json.error.param, 'type');
  assert.equal((await tally.get('/v1/events?limit=0')).json.error.param, 'limit');
  assert.equal((await tally.get('/v1/events?limit=abc')).json.error.param, 'limit');
  assert.equal((await tally.get('/v1/events?created[gte]=x')).json.error.param, 'created[gte]');
  assert.equal((await tally.get('/v1/events?starting_after=evt_missing')).json.error.param, 'starting_after');
  assert.equal((await tally.get('/v1/events?colour=red')).json.error.code, 'parameter_unknown');
  const anyEvent = (await tally.get('/v1/events?limit=1')).json.data[0];
  assert.equal((await tally.post(`/v1/events/${anyEvent.id}/redeliver`, {})).json.error.param, 'endpoint');
  assert.equal((await tally.post(`/v1/events/${anyEvent.id}/redeliver`, { endpoint: 'we_missing' })).json.error.param, 'endpoint');
  await tally.request('DELETE', `/v1/webhook_endpoints/${one.id}`);
});

test('events are listed newest first with Stripe pagination', async () => {
  for (let i = 0; i < 5; ++i) await tally.post('/v1/customers', { external_id: `user_page_${i}` });
  const first = (await tally.get('/v1/events?type=customer.created&limit=2')).json;
  assert.equal(first.object, 'list');
  assert.equal(first.data.length, 2);
  assert.equal(first.has_more, true);
  const second = (await tally.get(`/v1/events?type=customer.created&limit=2&starting_after=${first.data[1].id}`)).json;
  assert.equal(second.data.length, 2);
  assert.ok(second.data[0].created <= first.data[1].created);
  assert.ok(!second.data.some((e) => first.data.some((f) => f.id === e.id)));
  const recent = (await tally.get(`/v1/events?created[gte]=${Math.floor(Date.now() / 1000) + 3600}`)).json;
  assert.equal(recent.data.length, 0);
});
