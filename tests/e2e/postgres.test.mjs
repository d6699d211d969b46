// PostgreSQL only (run by ctest's e2e_postgres): the command line on a PostgreSQL URL, two nodes on one database, and
// a database that goes away under a running node and comes back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN_KEY, BIN, SECRET, SOURCE_DIR, STORE, customerObject, makeEvent, psql, startTally, subscription } from './harness.mjs';

const skip = STORE !== 'postgres' && 'runs with TALLY_E2E_STORE=postgres';
const run = (args, env = {}) => spawnSync(BIN, args, { encoding: 'utf8', env: { ...process.env, ...env } });

async function until(fn, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('the command line on PostgreSQL: migrate, keys, and clear refusals', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-pgcli-'));
  const tally = await startTally({ TALLY_STRIPE_SANDBOX: undefined }, { dir });
  try {
    const db = tally.db;
    const migrated = run(['migrate', '--db', db]);
    assert.equal(migrated.status, 0, migrated.stderr);
    assert.match(migrated.stdout, /at schema version \d+ \(0 migration\(s\) applied\)/);
    const created = run(['keys', 'create', '--db', db, '--name', 'pg key', '--scope', 'read_only']);
    assert.equal(created.status, 0, created.stderr);
    const key = created.stdout.trim();
    assert.equal((await tally.get('/v1/customers?external_id=nobody', { key })).status, 200, 'a key made by the CLI works on the node');
    assert.match(run(['keys', 'list', '--db', db]).stdout, /read_only\tpg key/);
    assert.equal(psql(db, 'SELECT COUNT(*) FROM api_keys').trim(), '1');

    const secretless = run(['serve', '--db', db, '--port', '0'], { STRIPE_WEBHOOK_SECRET: '' });
    assert.equal(secretless.status, 2);
    assert.match(secretless.stderr, /set STRIPE_WEBHOOK_SECRET/);
    const sandboxed = run(['serve', '--db', db, '--port', '0', '--stripe-sandbox'], { STRIPE_WEBHOOK_SECRET: SECRET });
    assert.equal(sandboxed.status, 2);
    assert.match(sandboxed.stderr, /run one `tally sandbox`/);
    const scheme = run(['serve', '--db', 'mysql://tally:hunter2@db/tally', '--port', '0'], { STRIPE_WEBHOOK_SECRET: SECRET });
    assert.equal(scheme.status, 2);
    assert.match(scheme.stderr, /SQLite file path or a postgresql:\/\/ URL/);
    assert.doesNotMatch(scheme.stderr, /hunter2/);
    const unreachable = run(['serve', '--db', 'postgresql://tally:hunter2@127.0.0.1:1/tally', '--port', '0'],
                            { STRIPE_WEBHOOK_SECRET: SECRET });
    assert.equal(unreachable.status, 69, 'EX_UNAVAILABLE');
    assert.match(unreachable.stderr, /cannot connect to PostgreSQL at postgresql:\/\/tally:\*\*\*@127\.0\.0\.1:1\/tally/);
    assert.doesNotMatch(unreachable.stderr, /hunter2/);
    const badUser = run(['migrate', '--db', db.replace('postgres@', 'nobody@')]);
    assert.equal(badUser.status, 69);
    assert.match(badUser.stderr, /role \\"nobody\\" does not exist/);
    const sign = run(['sign', '--db', db, '{}']);
    assert.equal(sign.status, 2);
    assert.match(sign.stderr, /pass --secret/);
  } finally {
    await tally.stop();
  }
});

test('two nodes on one database: a webhook sent to both is recorded once and either node shows its effect', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-pg2-'));
  const a = await startTally({ TALLY_STRIPE_SANDBOX: undefined }, { dir });
  const b = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: a.db }, { dir: mkdtempSync(join(tmpdir(), 'tally-pg2b-')) });
  try {
    const t = Math.floor(Date.now() / 1000);
    const created = makeEvent('evt_pg2_cus', 'customer.created', t, customerObject('cus_pg2', 'two@example.com', 'user_pg2'));
    const sub = makeEvent('evt_pg2_sub', 'customer.subscription.created', t + 1,
                          subscription('sub_pg2', 'cus_pg2', 'active', 'pro_monthly', t));
    const answers = await Promise.all([a.deliver(created), b.deliver(created), a.deliver(sub), b.deliver(sub)]);
    for (const r of answers) assert.equal(r.status, 200, r.text);
    assert.deepEqual(answers.map((r) => r.json.duplicate).sort(), [false, false, true, true]);
    for (const node of [a, b]) {
      const c = await until(async () => {
        const r = await node.get('/v1/customers?external_id=user_pg2');
        return r.json.data[0]?.role === 'professional' && r.json.data[0];
      }, 'the role on each node');
      assert.equal(c.plan, 'pro');
    }
    assert.equal(psql(a.db, "SELECT COUNT(*) FROM webhook_events WHERE id LIKE 'evt_pg2_%'").trim(), '2');
    assert.equal(psql(a.db, "SELECT COUNT(*) FROM audit_log WHERE kind = 'role_changed'").trim(), '1', 'applied once');
    // Either node answers for what the other wrote, with the same keys.
    const one = (await a.get('/v1/customers?external_id=user_pg2')).json.data[0];
    assert.deepEqual((await b.get(`/v1/customers/${one.id}`)).json, (await a.get(`/v1/customers/${one.id}`)).json);
  } finally {
    await b.stop();
    await a.stop();
  }
});

test('the database going away: 503 service_unavailable, then reconnection, and nothing acknowledged is lost', { skip }, async () => {
  const state = mkdtempSync(join(tmpdir(), 'tally-pgdown-'));
  const script = join(SOURCE_DIR, 'scripts/pg-test.sh');
  execFileSync(script, ['start', state], { stdio: 'ignore' });
  let tally;
  try {
    const url = execFileSync('cat', [join(state, 'url')], { encoding: 'utf8' }).trim();
    tally = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: url });
    const t = Math.floor(Date.now() / 1000);
    const acknowledged = [];
    for (let i = 0; i < 20; i++) {
      const e = makeEvent(`evt_down_${i}`, 'customer.created', t, customerObject(`cus_down_${i}`, `d${i}@example.com`, `user_down_${i}`));
      const r = await tally.deliver(e);
      assert.equal(r.status, 200, r.text);
      acknowledged.push(e.id);
    }
    execFileSync(script, ['pause', state], { stdio: 'ignore' });
    const down = await tally.deliver(makeEvent('evt_down_x', 'customer.created', t, customerObject('cus_down_x', 'x@example.com', 'user_down_x')));
    assert.equal(down.status, 503, down.text);
    assert.equal(down.json.error.code, 'service_unavailable');
    assert.doesNotMatch(down.text, /127\.0\.0\.1|postgres/, 'the database address stays in the log');
    const health = await tally.get('/health', { key: null });
    assert.equal(health.status, 503);
    assert.equal(health.json.database, 'unavailable');
    assert.equal((await tally.get('/v1/customers?external_id=user_down_1')).json.error.code, 'service_unavailable');
    assert.match(tally.stderr(), /cannot connect to PostgreSQL/);

    execFileSync(script, ['resume', state], { stdio: 'ignore' });
    await until(async () => (await tally.get('/health', { key: null })).status === 200, 'reconnection');
    const again = await tally.deliver(makeEvent('evt_down_x', 'customer.created', t, customerObject('cus_down_x', 'x@example.com', 'user_down_x')));
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.duplicate, false, 'the refused delivery was not recorded');
    await tally.settle();
    const recorded = psql(url, "SELECT id FROM webhook_events WHERE status = 'processed' ORDER BY id").trim().split('\n');
    assert.deepEqual(recorded, [...acknowledged, 'evt_down_x'].sort());
  } finally {
    if (tally) await tally.stop();
    execFileSync(script, ['stop', state], { stdio: 'ignore' });
    rmSync(state, { recursive: true, force: true });
  }
});

test('db copy: a SQLite server\'s database moved to PostgreSQL answers the same', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tally-copy-'));
  const file = join(dir, 'old.db');
  const lite = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: file }, { dir });
  const t = Math.floor(Date.now() / 1000);
  const created = (await lite.post('/v1/customers', { external_id: 'user_moved', email: 'moved@example.com' })).json;
  assert.equal((await lite.deliver(makeEvent('evt_mv_1', 'customer.created', t,
    customerObject('cus_moved', 'moved@example.com', 'user_moved')))).status, 200);
  assert.equal((await lite.deliver(makeEvent('evt_mv_2', 'customer.subscription.created', t + 1,
    subscription('sub_moved', 'cus_moved', 'active', 'pro_monthly', t)))).status, 200);
  await lite.settle();
  const before = (await lite.get(`/v1/customers/${created.id}`)).json;
  const auditBefore = (await lite.get(`/v1/audit?customer=${created.id}`)).json;
  assert.equal(before.role, 'professional');
  // Stop the SQLite server first (its directory is kept for the copy).
  lite.child.kill('SIGTERM');
  await new Promise((r) => lite.child.on('exit', r));

  // A PostgreSQL database of its own: the URL of a server's schema, which stop() drops; made again, empty, for the
  // copy (which migrates it).
  const target = await startTally({ TALLY_STRIPE_SANDBOX: undefined }, { dir: mkdtempSync(join(tmpdir(), 'tally-copy-pg-')) });
  const url = target.db;
  await target.stop();
  psql(url.split('?')[0], `CREATE SCHEMA IF NOT EXISTS ${decodeURIComponent(url.split('search_path%3D')[1])}`);
  const copy = run(['db', 'copy', '--from', file, '--to', url]);
  assert.equal(copy.status, 0, copy.stderr);
  assert.match(copy.stdout, /customers\t1 rows/);
  assert.match(copy.stdout, /verified/);
  const again = run(['db', 'copy', '--from', file, '--to', url]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /not empty/);

  const moved = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: url }, { dir: mkdtempSync(join(tmpdir(), 'tally-copy-pg2-')) });
  try {
    assert.deepEqual((await moved.get(`/v1/customers/${created.id}`)).json, before);
    assert.deepEqual((await moved.get(`/v1/audit?customer=${created.id}`)).json, auditBefore);
    assert.equal((await moved.get('/v1/webhook_events/evt_mv_2')).json.status, 'processed');
    const dup = await moved.deliver(makeEvent('evt_mv_2', 'customer.subscription.created', t + 1,
      subscription('sub_moved', 'cus_moved', 'active', 'pro_monthly', t)));
    assert.equal(dup.json.duplicate, true, 'the inbox came along: a redelivery is a duplicate');
  } finally {
    await moved.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
