// The tally command line: help, migrations, and refusing to start on an invalid catalog.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, SOURCE_DIR, startSandbox, startTally } from './harness.mjs';

const run = (args, env = {}) => spawnSync(BIN, args, { encoding: 'utf8', env: { ...process.env, ...env } });
/** Like run, without blocking the event loop (for commands that talk to a server started by this process). */
function runAsync(args, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(BIN, args, { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

test('--help describes every command and its environment variables', () => {
  const top = run(['--help']);
  assert.equal(top.status, 0);
  for (const cmd of ['serve', 'migrate', 'keys', 'sign', 'sandbox', 'simulate', 'catalog']) assert.match(top.stdout, new RegExp(cmd));
  const serve = run(['serve', '--help']);
  assert.equal(serve.status, 0);
  for (const v of ['TALLY_PORT', 'TALLY_DB', 'STRIPE_WEBHOOK_SECRET', 'TALLY_GRACE_PERIOD_DAYS']) assert.match(serve.stdout, new RegExp(v));
  assert.notEqual(run(['serve', '--port', 'eighty']).status, 0);
  assert.notEqual(run(['frobnicate']).status, 0);
});

test('migrate creates the schema once and is idempotent', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-cli-'));
  try {
    const db = join(dir, 'tally.db');
    const first = run(['migrate', '--db', db]);
    assert.equal(first.status, 0, first.stderr);
    // A new database gets every migration: as many as its schema version.
    const [, version, applied] = first.stdout.match(/schema version (\d+) \((\d+) migration\(s\) applied\)/);
    assert.equal(applied, version);
    assert.ok(Number(version) >= 4);
    const second = run(['migrate', '--db', db]);
    assert.equal(second.status, 0);
    assert.match(second.stdout, /0 migration\(s\) applied/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve refuses an invalid catalog with an error naming the JSON path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-cli-'));
  try {
    const catalog = join(dir, 'pricing.json');
    writeFileSync(catalog, JSON.stringify({
      roles: ['member'], default_plan: 'free',
      plans: [{ id: 'free', role: 'member', prices: [{ lookup_key: 'x', interval: 'month', unit_amount: 0, currency: 'usx' }] }],
    }));
    const r = run(['serve', '--db', join(dir, 'tally.db'), '--catalog', catalog, '--port', '0']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /plans\[0\]\.prices\[0\]\.currency/);
    assert.match(r.stderr, /unknown currency 'usx'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('simulate: the same seed gives the same population, written into a database serve can open', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-sim-'));
  const catalog = join(SOURCE_DIR, 'config/pricing.json');
  const summary = (out) => out.split('\n').filter((l) => !l.startsWith('elapsed_ms')).join('\n');
  try {
    const a = run(['simulate', '--customers', '80', '--months', '3', '--seed', '11', '--db', join(dir, 'a.db'), '--catalog', catalog]);
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, /^customers: 80 of 80 \(seed 11, 3 months from 2025-01-01T00:00:00Z\)$/m);
    assert.match(a.stdout, /events processed: \d+, failed: 0$/m);
    const processed = Number(a.stdout.match(/events processed: (\d+)/)[1]);
    assert.ok(processed > 80 * 8, `${processed} events`);
    for (const kind of ['customer.subscription.created', 'invoice.paid', 'invoice.payment_failed', 'customer.subscription.trial_will_end']) {
      assert.match(a.stdout, new RegExp(`${kind.replaceAll('.', '\\.')}=\\d+`), kind);
    }
    const b = run(['simulate', '--customers', '80', '--months', '3', '--seed', '11', '--db', join(dir, 'b.db'), '--catalog', catalog]);
    assert.equal(summary(b.stdout), summary(a.stdout));
    const c = run(['simulate', '--customers', '80', '--months', '3', '--seed', '12', '--db', join(dir, 'c.db'), '--catalog', catalog]);
    assert.notEqual(summary(c.stdout), summary(a.stdout));
    const again = run(['simulate', '--customers', '5', '--db', join(dir, 'a.db'), '--catalog', catalog]);
    assert.equal(again.status, 2);
    assert.match(again.stderr, /exists/);

    // The result is an ordinary Tally database: serve it and read a simulated customer through the API.
    const tally = await startTally({ TALLY_DB: join(dir, 'a.db') }, { dir });
    try {
      const found = (await tally.get('/v1/customers?external_id=sim_0')).json.data;
      assert.equal(found.length, 1);
      assert.match(found[0].stripe_customer_id, /^cus_/);
      assert.ok(found[0].subscription, 'sim_0 has a subscription');
    } finally {
      await tally.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('catalog push creates the paid prices once, by lookup key, in a standalone sandbox', async () => {
  const { child, port, stripe } = await startSandbox('sk_test_push');
  try {
    const env = { STRIPE_SECRET_KEY: 'sk_test_push', STRIPE_API_BASE: `http://127.0.0.1:${port}`, TALLY_CATALOG: join(SOURCE_DIR, 'config/pricing.json') };
    const first = await runAsync(['catalog', 'push'], env);
    assert.equal(first.status, 0, first.stderr);
    const lines = first.stdout.trim().split('\n').sort();
    assert.equal(lines.length, 6);
    assert.ok(lines.every((l) => /^(starter|pro|scale)_(monthly|yearly) price_\w+ created$/.test(l)), lines.join('\n'));
    const second = await runAsync(['catalog', 'push'], env);
    assert.ok(second.stdout.trim().split('\n').every((l) => l.endsWith(' exists')), second.stdout);
    const pro = (await stripe.prices.list({ lookup_keys: ['pro_yearly'] })).data[0];
    assert.equal(pro.unit_amount, 60000);
    assert.equal(pro.recurring.interval, 'year');
    assert.equal(pro.product, 'tally_pro');
    const missingKey = await runAsync(['catalog', 'push'], { ...env, STRIPE_SECRET_KEY: '' });
    assert.equal(missingKey.status, 2);
    assert.match(missingKey.stderr, /STRIPE_SECRET_KEY/);
  } finally {
    child.kill('SIGTERM');
  }
});
