// Starts the real tally binary on a free port with a fresh database, and talks to it over HTTP.
// TALLY_E2E_STORE=postgres runs the suite on PostgreSQL (ctest's e2e_postgres): each server gets a schema of its own
// in the test server (TALLY_TEST_PG_URL_FILE), and, since a PostgreSQL node runs no sandbox of its own, a standalone
// `tally sandbox` with this server's webhook endpoint registered in it, as a team would set up real Stripe.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { checkResponse } from './openapi.mjs';

export const BIN = process.env.TALLY_BIN ?? new URL('../../build/debug/tally', import.meta.url).pathname;
export const SOURCE_DIR = process.env.TALLY_SOURCE_DIR ?? new URL('../..', import.meta.url).pathname;
export const ADMIN_KEY = 'tk_test_admin_key_for_e2e_at_least_32_chars';
export const SECRET = 'whsec_e2e_primary_secret';
export const OLD_SECRET = 'whsec_e2e_rotated_out_secret';

// The official SDK; only its webhook helpers are used here (no network).
export const stripe = new Stripe('sk_test_unused', { apiVersion: '2025-03-31.basil' });

/** Which store the servers of this run use: 'sqlite' (a file) or 'postgres'. */
export const STORE = process.env.TALLY_E2E_STORE === 'postgres' ? 'postgres' : 'sqlite';
const PG_URL = STORE === 'postgres' ? readFileSync(process.env.TALLY_TEST_PG_URL_FILE, 'utf8').trim() : undefined;
/** For tests of something only SQLite has (its file, `tally simulate`): the reason to skip them on PostgreSQL. */
export const SQLITE_ONLY = STORE === 'postgres' ? 'SQLite only' : false;

/** Runs |sql| with psql against |url| and returns its rows, unaligned ('|' between columns). */
export function psql(url, sql) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-X', '-q', '-At', '-c', sql],
                      { encoding: 'utf8', env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' } });
}

/** The rows of |sql| in the database |db| of either store, one line each, columns separated by '|'. */
export function dbQuery(db, sql) {
  if (db.startsWith('postgresql://')) return psql(db, sql);
  return execFileSync('sqlite3', [db, sql], { encoding: 'utf8' });
}

/** A fresh PostgreSQL database (a schema of the test server) named after |dir|, the same one for a restart. */
function postgresDbFor(dir) {
  const schema = `e2e_${basename(dir).replace(/[^A-Za-z0-9]/g, '_').toLowerCase()}`;
  psql(PG_URL, `CREATE SCHEMA IF NOT EXISTS ${schema}`);
  return `${PG_URL}?options=-csearch_path%3D${schema}`;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

// PostgreSQL runs: the standalone sandbox, port and Stripe settings of each server directory, kept across restarts.
const attached = new Map();

/** What `serve --stripe-sandbox` does for itself, done from outside for a PostgreSQL node: a standalone sandbox,
 *  this node's webhook endpoint registered in it (its secret is the node's STRIPE_WEBHOOK_SECRET), a test clock,
 *  and the catalog pushed. */
async function attachSandbox(dir, env) {
  let a = attached.get(dir);
  if (!a) {
    const args = [];
    for (const [name, flag] of [['TALLY_SANDBOX_DUNNING_RETRY_DAYS', '--dunning-retry-days'],
                                ['TALLY_SANDBOX_DUNNING_END_STATE', '--dunning-end-state'],
                                ['TALLY_SANDBOX_PUBLIC_URL', '--public-url']]) {
      if (env[name] !== undefined) args.push(flag, env[name]);
    }
    const sb = await startSandbox('sk_test_tally_sandbox', args);
    const port = await freePort();
    const endpoint = await sb.stripe.webhookEndpoints.create({ url: `http://127.0.0.1:${port}/webhooks/stripe`, enabled_events: ['*'] });
    const clock = await sb.stripe.testHelpers.testClocks.create({ frozen_time: Math.floor(Date.now() / 1000), name: 'tally' });
    const base = `http://127.0.0.1:${sb.port}`;
    execFileSync(BIN, ['catalog', 'push', '--catalog', env.TALLY_CATALOG],
                 { env: { ...process.env, STRIPE_SECRET_KEY: 'sk_test_tally_sandbox', STRIPE_API_BASE: base }, stdio: 'ignore' });
    a = { sb, port, secret: endpoint.secret, clock: clock.id, base };
    attached.set(dir, a);
  }
  return a;
}

function detachSandbox(dir) {
  const a = attached.get(dir);
  if (a) { a.sb.child.kill('SIGTERM'); attached.delete(dir); }
}

export function fixtures() {
  return JSON.parse(readFileSync(join(SOURCE_DIR, 'tests/fixtures/fixtures3.json'), 'utf8')).resources;
}

export async function startTally(extraEnv = {}, { dir = mkdtempSync(join(tmpdir(), 'tally-e2e-')) } = {}) {
  const db = STORE === 'postgres' ? postgresDbFor(dir) : join(dir, 'tally.db');
  const env = {
    ...process.env,
    TALLY_PORT: '0',
    TALLY_DB: db,
    TALLY_CATALOG: join(SOURCE_DIR, 'config/pricing.json'),
    TALLY_ADMIN_KEY: ADMIN_KEY,
    STRIPE_WEBHOOK_SECRET: `${SECRET},${OLD_SECRET}`,
    TALLY_POLL_INTERVAL_MS: '50',
    TALLY_SANDBOX_PORT: '0',
    // The built-in Stripe sandbox runs only when asked for; most tests drive it. Pass TALLY_STRIPE_SANDBOX:
    // undefined for a Tally without Stripe.
    TALLY_STRIPE_SANDBOX: '1',
    ASAN_OPTIONS: 'detect_leaks=1',
    ...extraEnv,
  };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  let attachedSandbox;
  if (STORE === 'postgres' && env.TALLY_STRIPE_SANDBOX === '1' && env.TALLY_DB.startsWith('postgresql://')) {
    attachedSandbox = await attachSandbox(dir, env);
    delete env.TALLY_STRIPE_SANDBOX;
    Object.assign(env, {
      TALLY_PORT: String(attachedSandbox.port),
      STRIPE_API_BASE: attachedSandbox.base,
      STRIPE_SECRET_KEY: 'sk_test_tally_sandbox',
      STRIPE_TEST_CLOCK: attachedSandbox.clock,
      STRIPE_WEBHOOK_SECRET: `${env.STRIPE_WEBHOOK_SECRET},${attachedSandbox.secret}`,
    });
  }
  // Started in its temporary directory, not the repository: nothing may depend on the working directory.
  const child = spawn(BIN, ['serve'], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let sandboxPort;
  let testClock;
  child.stderr.on('data', (d) => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`tally did not start: ${stderr}`)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/tally listening on http:\/\/[^:]+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        const sb = out.match(/stripe sandbox listening on http:\/\/[^:]+:(\d+)/);
        sandboxPort = sb ? Number(sb[1]) : attachedSandbox?.sb.port;
        const tc = out.match(/stripe sandbox test clock (clock_\w+)/);
        testClock = tc ? tc[1] : attachedSandbox?.clock;
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`tally exited ${code}: ${stderr}`)); });
  });
  const base = `http://127.0.0.1:${port}`;
  const server = {
    base, db: env.TALLY_DB, dir, child, sandboxPort, testClock,
    stderr: () => stderr,
    async request(method, path, { body, headers = {}, key = ADMIN_KEY, raw } = {}) {
      const h = { ...headers };
      if (key) h.authorization = `Bearer ${key}`;
      let payload = raw;
      if (body !== undefined) { payload = JSON.stringify(body); h['content-type'] = 'application/json'; }
      const res = await fetch(base + path, { method, headers: h, body: payload });
      const text = await res.text();
      // Every answer is held to the contract (api/openapi.yaml): an undocumented one fails the test.
      checkResponse(SOURCE_DIR, method, path, res.status, res.headers.get('content-type'), text);
      let json;
      try { json = JSON.parse(text); } catch { json = undefined; }
      return { status: res.status, json, text, headers: res.headers };
    },
    get(path, opts) { return this.request('GET', path, opts); },
    post(path, body, opts = {}) { return this.request('POST', path, { ...opts, body }); },
    /** Sends a webhook signed by the official SDK; returns the response. */
    async deliver(event, { secret = SECRET, timestamp, payload } = {}) {
      const text = payload ?? JSON.stringify(event);
      const header = stripe.webhooks.generateTestHeaderString({ payload: text, secret, timestamp });
      return this.request('POST', '/webhooks/stripe', {
        raw: text, key: null, headers: { 'stripe-signature': header, 'content-type': 'application/json' },
      });
    },
    /** Waits until every recorded event is processed (or failed). */
    async settle(timeoutMs = 20000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const r = await this.get('/v1/webhook_events?status=pending&limit=500');
        if (r.status === 200 && r.json.data.length === 0) return;
        if (Date.now() > deadline) throw new Error('events did not settle');
        await new Promise((res) => setTimeout(res, 25));
      }
    },
    /** SIGKILL: no drain, no final checkpoint; the directory is kept for a restart. */
    async crash() {
      const exited = new Promise((res) => child.on('exit', (code, signal) => res({ code, signal })));
      child.kill('SIGKILL');
      return exited;
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((res) => child.on('exit', (code, signal) => res({ code, signal })));
        child.kill('SIGTERM');
        const r = await exited;
        this.cleanup();
        return r;
      }
      this.cleanup();
      return { code: child.exitCode };
    },
    /** Removes what the server kept: its directory, and on PostgreSQL its schema and its sandbox. */
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
      if (STORE === 'postgres') {
        detachSandbox(dir);
        if (this.db.startsWith('postgresql://')) {
          const schema = decodeURIComponent(this.db.split('search_path%3D')[1] ?? '');
          if (schema) psql(PG_URL, `DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        }
      }
    },
  };
  return server;
}

/** Starts a standalone `tally sandbox` on a free port; returns it with an official SDK client pointed at it. */
export async function startSandbox(key = 'sk_test_sandbox', args = []) {
  const child = spawn(BIN, ['sandbox', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  // A crash is a test failure with its reason, not a stream of connection errors.
  child.on('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM') console.error(`tally sandbox exited (${code ?? signal}):\n${stderr.slice(0, 6000)}`);
  });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`sandbox exited ${code}`)));
  });
  return { child, port, stripe: new Stripe(key, { host: '127.0.0.1', port, protocol: 'http', maxNetworkRetries: 0 }) };
}

/** A Stripe event around |object| shaped like fixtures3.json's event resource. */
export function makeEvent(id, type, created, object, previous) {
  const base = fixtures().event;
  const data = { object };
  if (previous) data.previous_attributes = previous;
  return { ...base, id, type, created, api_version: '2025-03-31.basil', data,
           request: { id: null, idempotency_key: null } };
}

/** Stripe's own subscription fixture, moved to |customer| with a price of |lookupKey|. */
export function subscription(id, customer, status, lookupKey, periodStart, extra = {}) {
  const sub = structuredClone(fixtures().subscription);
  const item = sub.items.data[0];
  Object.assign(item.price, { id: `price_${lookupKey}`, lookup_key: lookupKey, unit_amount: 6000 });
  item.price.recurring.interval = 'month';
  item.price.recurring.interval_count = 1;
  item.subscription = id;
  item.current_period_start = periodStart;
  item.current_period_end = periodStart + 30 * 86400;
  return Object.assign(sub, { id, customer, status, created: periodStart, start_date: periodStart,
                               cancel_at_period_end: false, cancel_at: null, canceled_at: null, ended_at: null,
                               trial_end: null, trial_start: null }, extra);
}

export function customerObject(id, email, externalId) {
  const c = structuredClone(fixtures().customer);
  return Object.assign(c, { id, email, name: email.split('@')[0], metadata: externalId ? { external_id: externalId } : {} });
}

export function invoiceObject(id, customer, sub, status) {
  const inv = structuredClone(fixtures().invoice);
  return Object.assign(inv, { id, customer, status, amount_due: 6000, amount_paid: status === 'paid' ? 6000 : 0,
                               parent: { type: 'subscription_details', quote_details: null,
                                         subscription_details: { metadata: {}, subscription: sub } } });
}

const kind = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

/** Every key of Stripe's fixture for |resource| is present in |obj| with the same JSON type, or null. */
export function assertStripeShape(resource, obj) {
  const fixture = fixtures()[resource];
  if (!fixture) throw new Error(`fixtures3.json has no resource ${resource}`);
  for (const [key, value] of Object.entries(fixture)) {
    if (!(key in obj)) throw new Error(`${resource}.${key} is missing`);
    const want = kind(value);
    const got = kind(obj[key]);
    if (want !== 'null' && got !== 'null' && got !== want) throw new Error(`${resource}.${key}: ${got} instead of ${want}`);
  }
}

/** The object at |path| as the sandbox sent it on the wire (the SDK turns *_decimal strings into Decimals). */
export async function wireGet(port, path, key = 'sk_test_sandbox') {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${key}` } });
  return res.json();
}

/** Headless Debian Chromium driven by playwright-core. */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
}

/** Polls |predicate| every 25 ms until it returns something truthy (returned), or throws after |timeoutMs|. */
export async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A Stripe-style error answer: |status|, the four fields, and |code| and |param| when given. */
export function assertError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.json?.error, 'object', r.text);
  for (const k of ['type', 'code', 'message', 'param']) assert.ok(k in r.json.error, `missing ${k}: ${r.text}`);
  if (code) assert.equal(r.json.error.code, code, r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
}

/** An HTTP receiver for Tally's events: collects every JSON body it is sent and answers 200. */
export async function startReceiver() {
  const { createServer: createHttpServer } = await import('node:http');
  const received = [];
  const srv = createHttpServer((req, res) => {
    let raw = '';
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
      try { received.push(JSON.parse(raw)); } catch { /* not an event */ }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  // Neither the listener nor its connections keep the test process alive: a test that fails before its close()
  // ends its file instead of hanging it until ctest's timeout.
  srv.unref();
  srv.on('connection', (socket) => socket.unref());
  return { url: `http://127.0.0.1:${srv.address().port}/hooks`, received, close: () => new Promise((r) => srv.close(r)) };
}
