// The hardened core (issue 8): scoped and revocable keys, idempotency inside the transaction, typed errors,
// HTTP and input edge cases, the sandbox only on request, the built-in catalog.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Stripe from 'stripe';
import { ADMIN_KEY, BIN, SECRET, SQLITE_ONLY, STORE, customerObject, dbQuery, makeEvent, startSandbox, startTally } from './harness.mjs';

let server;
before(async () => { server = await startTally(); });
after(async () => { await server.stop(); });

function assertError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json.error.code, code, r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
}

const keysCli = (args) => execFileSync(BIN, ['keys', ...args, '--db', server.db], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

async function until(predicate, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends |raw| bytes on a fresh connection and returns everything the server sent before closing (or |waitMs|). */
function rawExchange(port, raw, waitMs = 3000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    const timer = setTimeout(() => { socket.destroy(); resolve(data.toString('latin1')); }, waitMs);
    socket.on('data', (d) => { data = Buffer.concat([data, d]); });
    socket.on('end', () => { clearTimeout(timer); socket.destroy(); resolve(data.toString('latin1')); });
    socket.on('error', (e) => { clearTimeout(timer); if (data.length) resolve(data.toString('latin1')); else reject(e); });
    socket.write(raw);
  });
}
const statusOf = (text) => Number((text.match(/^HTTP\/1\.1 (\d{3})/) ?? [])[1]);
const bodyOf = (text) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));

test('keys: CLI create/list/revoke, scopes, names and last use; a revoked key is refused at once everywhere', async () => {
  const admin = keysCli(['create', '--scope', 'admin', '--name', 'ci deploys']).trim();
  assert.match(admin, /^tk_[0-9a-f]{48}$/);
  const reader = keysCli(['create', '--scope', 'read_only', '--name', 'dashboard']).trim();
  // Only digests are stored.
  const dump = dbQuery(server.db, 'SELECT * FROM api_keys');
  assert.ok(!dump.includes(admin) && !dump.includes(reader));

  assert.equal((await server.get('/v1/audit', { key: admin })).status, 200);
  assert.equal((await server.get('/v1/audit', { key: reader })).status, 200);
  // A read_only key reads and never writes: 403, nothing created.
  assertError(await server.post('/v1/customers', { external_id: 'by_reader' }, { key: reader }), 403, 'permission_denied');
  assert.deepEqual((await server.get('/v1/customers?external_id=by_reader')).json.data, []);

  const listed = (await server.get('/v1/api_keys')).json.data;
  const byName = Object.fromEntries(listed.map((k) => [k.name, k]));
  assert.equal(byName['ci deploys'].scope, 'admin');
  assert.equal(byName.dashboard.scope, 'read_only');
  assert.ok(byName.dashboard.last_used_at > 0, 'a used key has last_used_at');
  for (const k of listed) {
    assert.equal(k.object, 'api_key');
    assert.equal(k.secret, undefined);
    assert.ok(!JSON.stringify(k).includes('hash'));
  }
  const cliList = keysCli(['list']);
  assert.match(cliList, /dashboard/);
  assert.ok(!cliList.includes(reader));

  // Created over the API: the secret is shown once.
  const made = await server.post('/v1/api_keys', { scope: 'read_only', name: 'support tool' });
  assert.equal(made.status, 201, made.text);
  assert.match(made.json.secret, /^tk_/);
  assert.equal((await server.get('/v1/api_keys')).json.data.find((k) => k.id === made.json.id).secret, undefined);

  // Revoked through the API: every later request, on any connection and thread, is refused.
  const victim = made.json.secret;
  assert.equal((await server.get('/v1/audit', { key: victim })).status, 200);
  const revoked = await server.request('DELETE', `/v1/api_keys/${made.json.id}`);
  assert.equal(revoked.status, 200, revoked.text);
  assert.ok(revoked.json.revoked_at > 0);
  const after = await Promise.all(Array.from({ length: 20 }, () => server.get('/v1/audit', { key: victim })));
  for (const r of after) assertError(r, 401, 'api_key_revoked');

  // Revoked by the CLI (another process) while the server runs: refused within the recheck bound.
  const readerId = byName.dashboard.id;
  assert.match(keysCli(['revoke', readerId]), /revoked key_/);
  await until(async () => (await server.get('/v1/audit', { key: reader })).status === 401, 'the CLI revocation to apply');
  const audit = (await server.get('/v1/audit?limit=50')).json.data.map((e) => e.kind);
  assert.ok(audit.includes('api_key_created') && audit.includes('api_key_revoked'));

  // Bad input changes nothing.
  const before = (await server.get('/v1/api_keys')).json.data.length;
  assertError(await server.post('/v1/api_keys', { scope: 'root', name: 'x' }), 400, 'parameter_invalid', 'scope');
  assertError(await server.post('/v1/api_keys', { scope: 'admin', name: '  ' }), 400, 'parameter_missing', 'name');
  assertError(await server.post('/v1/api_keys', { scope: 'admin' }), 400, 'parameter_missing', 'name');
  assertError(await server.post('/v1/api_keys', { scope: 'admin', name: 'x', expires: 1 }), 400, 'parameter_unknown', 'expires');
  assertError(await server.request('DELETE', '/v1/api_keys/key_nope'), 404, 'resource_missing');
  assert.equal((await server.get('/v1/api_keys')).json.data.length, before);
  const badCli = spawnSync(BIN, ['keys', 'create', '--scope', 'root', '--name', 'x', '--db', server.db]);
  assert.notEqual(badCli.status, 0);
});

test('TALLY_ADMIN_KEY shorter than 32 characters is refused at start with a clear message', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-short-'));
  try {
    const r = spawnSync(BIN, ['serve', '--db', join(dir, 't.db'), '--port', '0'],
      { env: { ...process.env, TALLY_ADMIN_KEY: 'short-key' }, encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /TALLY_ADMIN_KEY is 9 characters; it must be at least 32/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('idempotency: 20 concurrent identical POST /v1/customers make one customer and replay one response', async () => {
  const headers = { 'idempotency-key': 'concurrent-create-1' };
  const rs = await Promise.all(Array.from({ length: 20 }, () =>
    server.request('POST', '/v1/customers', { body: { external_id: 'user_concurrent' }, headers })));
  for (const r of rs) assert.equal(r.status, 201, r.text);
  assert.equal(new Set(rs.map((r) => r.text)).size, 1, 'every response is the first one');
  assert.equal(rs.filter((r) => r.headers.get('idempotent-replayed') !== 'true').length, 1, 'one ran, 19 replayed');
  const id = rs[0].json.id;
  const created = (await server.get(`/v1/audit?customer=${id}`)).json.data.filter((e) => e.kind === 'customer_created');
  assert.equal(created.length, 1);
  // Keys belong to the API key that used them: another key's identical key is its own request.
  const other = keysCli(['create', '--scope', 'admin', '--name', 'other']).trim();
  const theirs = await server.request('POST', '/v1/customers', { body: { external_id: 'user_theirs' }, headers, key: other });
  assert.equal(theirs.status, 201, theirs.text);
  assert.equal(theirs.headers.get('idempotent-replayed'), null);
  // The same key and other parameters: 400 idempotency_error, nothing created.
  const reused = await server.request('POST', '/v1/customers', { body: { external_id: 'user_else' }, headers });
  assertError(reused, 400, 'idempotency_error', 'Idempotency-Key');
  assert.equal(reused.json.error.type, 'idempotency_error');
  assert.deepEqual((await server.get('/v1/customers?external_id=user_else')).json.data, []);
});

test('idempotency: 20 concurrent identical POST /v1/checkout_sessions make one session and one Stripe customer', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'user_concurrent_checkout', email: 'cc@example.com' })).json;
  const headers = { 'idempotency-key': 'concurrent-checkout-1' };
  const body = { customer: c.id, plan: 'pro' };
  const rs = await Promise.all(Array.from({ length: 20 }, () => server.request('POST', '/v1/checkout_sessions', { body, headers })));
  const ok = rs.filter((r) => r.status === 200);
  const busy = rs.filter((r) => r.status === 409);
  assert.equal(ok.length + busy.length, 20, rs.map((r) => r.text).join('\n'));
  assert.ok(ok.length >= 1);
  for (const r of busy) {
    assert.equal(r.json.error.type, 'idempotency_error');
    assert.equal(r.json.error.code, 'idempotency_key_in_use');
  }
  assert.equal(new Set(ok.map((r) => r.json.id)).size, 1);
  // Once the first finished, a retry replays it.
  const replay = await server.request('POST', '/v1/checkout_sessions', { body, headers });
  assert.equal(replay.status, 200);
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.json.id, ok[0].json.id);
  // In the sandbox: exactly one Stripe customer for this user, and one Checkout Session for it.
  const sb = new Stripe('sk_test_x', { host: '127.0.0.1', port: server.sandboxPort, protocol: 'http' });
  const customers = await sb.customers.list({ email: 'cc@example.com' });
  assert.equal(customers.data.length, 1);
  const sessions = await sb.checkout.sessions.list({ customer: customers.data[0].id });
  assert.equal(sessions.data.length, 1);
  assert.equal(sessions.data[0].id, ok[0].json.id);
});

test('errors carry their code as a value, and never echo bytes that are not UTF-8', async () => {
  const r = await server.get('/v1/customers/%ff%fe');
  assert.equal(r.status, 404);
  assert.ok(r.json, `the body is JSON: ${r.text}`);
  assert.equal(r.json.error.code, 'resource_missing');
  assert.match(r.json.error.message, /\uFFFD\uFFFD/);
  const route = await server.get('/v1/n%C0owhere');
  assert.equal(route.json.error.code, 'route_not_found');
  assertError(await server.request('POST', '/v1/customers', { raw: '{"external_id": ' }), 400, 'malformed_json');
});

test('input edge cases are refused, not defaulted', async () => {
  const c = (await server.post('/v1/customers', { external_id: 'user_edges' })).json;
  for (const [body, param] of [
    [{ customer: c.id, plan: 'pro', trial_period_days: 0 }, 'trial_period_days'],
    [{ customer: c.id, plan: 'pro', trial_period_days: -3 }, 'trial_period_days'],
    [{ customer: c.id, plan: 'pro', interval: '' }, 'interval'],
    [{ customer: '   ', plan: 'pro' }, 'customer'],
  ]) assertError(await server.post('/v1/checkout_sessions', body), 400, 'parameter_invalid', param);
  assertError(await server.post('/v1/billing_portal_sessions', { customer: ' \t' }), 400, 'parameter_invalid', 'customer');
  assertError(await server.post('/v1/customers', { external_id: '   ' }), 400, 'parameter_invalid', 'external_id');
  assertError(await server.post(`/v1/customers/${c.id}/role_override`, { role: 'member', reason: 'x', expires_at: 1e15 }),
    400, 'parameter_invalid', 'expires_at');
  assert.equal((await server.get(`/v1/customers/${c.id}`)).json.stripe_customer_id, null, 'nothing reached Stripe');
});

test('HTTP edge cases: 414, 431, 400 for NUL and raw spaces, HEAD without a body, %2F stays in its segment', async () => {
  const port = Number(new URL(server.base).port);
  const longLine = await rawExchange(port, `GET /v1/${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(statusOf(longLine), 414, longLine.slice(0, 200));
  assert.equal(bodyOf(longLine).error.code, 'uri_too_long');
  const longTarget = await rawExchange(port, `GET /v1/${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(statusOf(longTarget), 414);
  const headers = Array.from({ length: 400 }, (_, i) => `X-Filler-${i}: ${'v'.repeat(40)}\r\n`).join('');
  const bigHeaders = await rawExchange(port, `GET /health HTTP/1.1\r\nHost: x\r\n${headers}\r\n`);
  assert.equal(statusOf(bigHeaders), 431, bigHeaders.slice(0, 200));
  for (const raw of [
    'GET /v1/cust\0omers HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /v1/a b HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n',
  ]) {
    const r = await rawExchange(port, raw);
    assert.equal(statusOf(r), 400, JSON.stringify(raw) + ' -> ' + r.slice(0, 200));
    assert.equal(bodyOf(r).error.type, 'invalid_request_error');
  }
  // HEAD: headers only, so the next response on the same connection is read correctly.
  const both = await rawExchange(port, 'HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const responses = both.split(/(?=HTTP\/1\.1 )/);
  assert.equal(responses.length, 2, both);
  assert.ok(responses[0].endsWith('\r\n\r\n'), 'the HEAD response has no body');
  assert.match(responses[0], /Content-Length: [1-9]/i);
  assert.equal(bodyOf(responses[1]).database, 'ok');
  // %2F is part of an id, not a path separator.
  const c = (await server.post('/v1/customers', { external_id: 'user_slash' })).json;
  assertError(await server.get(`/v1/customers/${c.id}%2Fentitlements`), 404, 'resource_missing');
  assert.equal((await server.get(`/v1/customers/${c.id}/entitlements`)).status, 200);
  assert.equal((await server.get('/health', { key: null })).status, 200);
});

function openFds(pid) { return readdirSync(`/proc/${pid}/fd`).length; }

test('idle connections are fully closed after the idle timeout', async () => {
  // One database connection at most (PostgreSQL's pool would otherwise open more under the 10 requests below).
  const idle = await startTally({ TALLY_HTTP_IDLE_TIMEOUT_MS: '300', TALLY_STRIPE_SANDBOX: undefined, TALLY_DB_POOL: '1' });
  try {
    const port = Number(new URL(idle.base).port);
    // A first request opens what the server opens lazily (the database's WAL files for reads, say).
    assert.equal((await idle.get('/health', { key: null })).status, 200);
    await new Promise((r) => setTimeout(r, 800));  // the client's own keep-alive connection times out too
    const baseline = openFds(idle.child.pid);
    const sockets = await Promise.all(Array.from({ length: 10 }, () => new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'); });
      s.once('data', () => resolve(s));
    })));
    assert.ok(openFds(idle.child.pid) >= baseline + 10);
    // The client keeps its end open; the server must still let go of its descriptors.
    await until(async () => openFds(idle.child.pid) <= baseline, 'the server to close idle connections');
    for (const s of sockets) s.destroy();
  } finally {
    await idle.stop();
  }
});

test('the idle timeout is the longest pause between reads: a slow upload that never pauses that long is not cut', async () => {
  // One database connection at most (PostgreSQL's pool would otherwise open more under the 10 requests below).
  const idle = await startTally({ TALLY_HTTP_IDLE_TIMEOUT_MS: '300', TALLY_STRIPE_SANDBOX: undefined, TALLY_DB_POOL: '1' });
  try {
    const port = Number(new URL(idle.base).port);
    const body = JSON.stringify({ external_id: 'slow_upload_user' });
    // 1.2 s in all, four times the timeout, in pieces 100 ms apart.
    const answer = await new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      let data = '';
      s.on('data', (d) => { data += d.toString('latin1'); if (data.includes('\r\n\r\n') && data.endsWith('}')) { s.destroy(); resolve(data); } });
      s.on('error', reject);
      s.on('close', () => resolve(data));
      const head = `POST /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_KEY}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
      const pieces = [head.slice(0, 20), head.slice(20), ...body.match(/.{1,4}/g)];
      let i = 0;
      const next = () => { if (i < pieces.length) { s.write(pieces[i++]); setTimeout(next, 1200 / pieces.length); } };
      s.on('connect', next);
    });
    assert.equal(statusOf(answer), 201, answer);
    assert.equal(bodyOf(answer).external_id, 'slow_upload_user');
    // A request that stops half way for longer than the timeout is closed without an answer, and creates nothing.
    const stalled = await rawExchange(port, `POST /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_KEY}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{"external_id":"stalled"', 3000);
    assert.equal(stalled, '');
    assert.equal((await idle.get('/v1/customers?external_id=stalled')).json.data.length, 0);
  } finally {
    await idle.stop();
  }
});

test('running out of file descriptors does not stop the listener: /health answers once they are free', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-fds-'));
  const { spawn } = await import('node:child_process');
  const child = spawn('sh', ['-c', `ulimit -n 40; exec "${BIN}" serve --port 0 --db "${join(dir, 't.db')}"`],
    { env: { ...process.env, TALLY_ADMIN_KEY: ADMIN_KEY, STRIPE_WEBHOOK_SECRET: SECRET }, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const port = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => { out += d; const m = out.match(/listening on http:\/\/[^:]+:(\d+)/); if (m) resolve(Number(m[1])); });
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    const sockets = [];
    for (let i = 0; i < 60; i++) {
      sockets.push(await new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', () => resolve(s));
      }));
    }
    await new Promise((r) => setTimeout(r, 500));
    for (const s of sockets) s.destroy();
    await until(async () => {
      try { return (await fetch(`http://127.0.0.1:${port}/health`)).status === 200; } catch { return false; }
    }, '/health after the descriptors are freed');
    // The listener backed off instead of retrying accept in a loop (which would count errors by the hundred
    // thousand per second).
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const errors = Number(text.match(/^tally_http_accept_errors (\S+)$/m)[1]);
    assert.ok(errors >= 1, `accept failed at least once: ${errors}`);
    assert.ok(errors < 1000, `accept errors are paced: ${errors}`);
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the sandbox runs only when asked: without a key Tally is webhook-only and says so', async () => {
  const bare = await startTally({ TALLY_STRIPE_SANDBOX: undefined });
  try {
    assert.equal(bare.sandboxPort, undefined, 'no sandbox listens');
    const health = (await bare.get('/health', { key: null })).json;
    assert.equal(health.stripe, 'not_configured');
    assert.equal(health.status, 'ok');
    const c = (await bare.post('/v1/customers', { external_id: 'user_nostripe' })).json;
    assertError(await bare.post('/v1/checkout_sessions', { customer: c.id, plan: 'pro' }), 503, 'stripe_not_configured');
    // Webhooks still arrive and apply.
    const T = Math.floor(Date.now() / 1000);
    const r = await bare.deliver(makeEvent('evt_bare_1', 'customer.created', T, customerObject('cus_bare', 'b@example.com', 'user_nostripe')));
    assert.equal(r.status, 200, r.text);
    await bare.settle();
    assert.equal((await bare.get(`/v1/customers/${c.id}`)).json.stripe_customer_id, 'cus_bare');
  } finally {
    await bare.stop();
  }
});

test('sandbox mode logs a banner and /health notices when Tally’s webhook endpoint is deleted',
  { skip: SQLITE_ONLY && 'serve --stripe-sandbox runs with SQLite only' }, async () => {
  const sb = await startTally({ TALLY_STRIPE_CHECK_INTERVAL_MS: '100' });
  try {
    assert.match(sb.stderr(), /STRIPE SANDBOX MODE/);
    await until(async () => (await sb.get('/health', { key: null })).json.webhook_endpoint === 'registered', 'registered');
    const health = (await sb.get('/health', { key: null })).json;
    assert.equal(health.stripe, 'sandbox');
    const stripe = new Stripe('sk_test_x', { host: '127.0.0.1', port: sb.sandboxPort, protocol: 'http' });
    for (const e of (await stripe.webhookEndpoints.list()).data) await stripe.webhookEndpoints.del(e.id);
    await until(async () => (await sb.get('/health', { key: null })).json.webhook_endpoint === 'missing', 'missing');
    assert.equal((await sb.get('/health', { key: null })).json.status, 'degraded');
  } finally {
    await sb.stop();
  }
});

test('a test-mode key talks to Stripe (here a standalone sandbox); the sandbox and a key together are refused', async () => {
  const standalone = await startSandbox();
  const t = await startTally({ TALLY_STRIPE_SANDBOX: undefined, STRIPE_SECRET_KEY: 'sk_test_standalone',
    STRIPE_API_BASE: `http://127.0.0.1:${standalone.port}`, TALLY_STRIPE_CHECK_INTERVAL_MS: '100' });
  try {
    const health = (await t.get('/health', { key: null })).json;
    assert.equal(health.stripe, 'test');
    // Nobody registered Tally's URL with this "Stripe": the check says so.
    await until(async () => (await t.get('/health', { key: null })).json.webhook_endpoint === 'missing', 'missing');
  } finally {
    await t.stop();
    standalone.child.kill('SIGTERM');
  }
  const dir = mkdtempSync(join(tmpdir(), 'tally-both-'));
  try {
    const both = spawnSync(BIN, ['serve', '--stripe-sandbox', '--db', join(dir, 't.db'), '--port', '0'],
      { env: { ...process.env, STRIPE_SECRET_KEY: 'sk_test_x' }, encoding: 'utf8', timeout: 20000 });
    assert.equal(both.status, 2);
    assert.match(both.stderr, /choose the sandbox or real Stripe/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve runs outside the repository on its built-in catalog', async () => {
  const t = await startTally({ TALLY_CATALOG: undefined, TALLY_STRIPE_SANDBOX: undefined });
  try {
    const plans = (await t.get('/v1/plans', { key: null })).json.data.map((p) => p.id);
    assert.deepEqual(plans, ['free', 'starter', 'pro', 'scale']);
  } finally {
    await t.stop();
  }
});

test('GET /metrics exports webhooks, processing, commits, HTTP requests by route and Stripe calls', async () => {
  const m = await startTally();
  try {
    const T = Math.floor(Date.now() / 1000);
    const event = makeEvent('evt_metrics_1', 'customer.created', T, customerObject('cus_metrics', 'm@example.com', 'user_m'));
    assert.equal((await m.deliver(event)).status, 200);
    assert.equal((await m.deliver(event)).json.duplicate, true);
    assert.equal((await m.deliver(event, { secret: 'whsec_wrong' })).status, 400);
    await m.settle();
    await m.get('/v1/customers/cust_nope');
    const c = (await m.post('/v1/customers', { external_id: 'user_metrics' })).json;
    assert.equal((await m.post('/v1/checkout_sessions', { customer: c.id, plan: 'pro' })).status, 200);
    const r = await m.get('/metrics', { key: null });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/plain/);
    const value = (series) => {
      const line = r.text.split('\n').find((l) => l.startsWith(series + ' '));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    // The sandbox sends its own events too (the catalog push, Tally's customer): at least ours are counted.
    assert.ok(value('tally_webhooks_received_total{outcome="recorded",reason=""}') >= 1, r.text);
    assert.ok(value('tally_webhooks_received_total{outcome="duplicate",reason=""}') >= 1);
    assert.equal(value('tally_webhooks_received_total{outcome="rejected",reason="signature"}'), 1);
    assert.ok(value('tally_webhooks_processed_total{outcome="applied"}') >= 1);
    assert.ok(value('tally_webhook_processing_lag_seconds_count') >= 1);
    assert.ok(value('tally_store_commit_seconds_count') >= 3);
    assert.equal(value('tally_http_requests_total{method="GET",route="/v1/customers/{id}",status="404"}'), 1, r.text);
    assert.equal(value('tally_http_requests_total{method="POST",route="/webhooks/stripe",status="400"}'), 1);
    assert.ok(value('tally_http_request_seconds_count{route="/v1/checkout_sessions"}') >= 1);
    // With SQLite, serve registers its endpoint, makes its test clock and pushes the catalog itself; with PostgreSQL
    // the harness does that from outside, so only the customer and the session are Tally's calls.
    assert.ok(value('tally_stripe_api_calls_total{method="POST",outcome="ok"}') >= (STORE === 'postgres' ? 2 : 3),
      'endpoint, clock, catalog, customer, session');
    assert.ok(value('tally_http_connections_open') >= 1);
    // Ids never become label values.
    assert.ok(!r.text.includes('cust_nope') && !r.text.includes(c.id));
  } finally {
    await m.stop();
  }
});

test('review fixes: no secret in replays, bounded metric labels, a bad sandbox call cannot kill Tally', async () => {
  const t = await startTally();
  try {
    const headers = { 'idempotency-key': 'key-create-once' };
    const first = await t.request('POST', '/v1/api_keys', { body: { scope: 'read_only', name: 'replayed' }, headers });
    assert.equal(first.status, 201);
    assert.match(first.json.secret, /^tk_/);
    const replay = await t.request('POST', '/v1/api_keys', { body: { scope: 'read_only', name: 'replayed' }, headers });
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.equal(replay.json.id, first.json.id);
    assert.equal(replay.json.secret, undefined, 'the secret is shown once, never stored for replays');
    const dump = dbQuery(t.db, 'SELECT response_body FROM idempotency_keys');
    assert.ok(!dump.includes(first.json.secret));

    const port = Number(new URL(t.base).port);
    for (let i = 0; i < 3; i++) await rawExchange(port, `M${i} /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const metrics = (await t.get('/metrics', { key: null })).text;
    assert.ok(!/method="M\d"/.test(metrics), 'request methods never become label values');

    // The sandbox refuses what it could not use later (an event type that is no string), and metadata is free-form.
    const sb = `http://127.0.0.1:${t.sandboxPort}`;
    const auth = { authorization: 'Bearer sk_test_x', 'content-type': 'application/x-www-form-urlencoded' };
    const bad = await fetch(`${sb}/v1/webhook_endpoints`, { method: 'POST', headers: auth, body: 'url=http://127.0.0.1:1/x&enabled_events[0][a]=b' });
    assert.equal(bad.status, 400);
    const made = await fetch(`${sb}/v1/customers`, { method: 'POST', headers: auth, body: 'email=x@example.com&metadata[active]=yes&metadata[amount]=lots' });
    assert.equal(made.status, 200, await made.clone().text());
    assert.deepEqual((await made.json()).metadata, { active: 'yes', amount: 'lots' });
    const notUtf8 = await fetch(`${sb}/v1/customers/cus_%FF`, { headers: auth });
    assert.equal(notUtf8.status, 404);
    JSON.parse(await notUtf8.text());
    assert.equal((await t.get('/health', { key: null })).status, 200);
  } finally {
    await t.stop();
  }
});
