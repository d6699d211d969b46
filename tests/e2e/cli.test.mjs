// The tally command line: help, migrations, and refusing to start on an invalid catalog.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from './harness.mjs';

const run = (args, env = {}) => spawnSync(BIN, args, { encoding: 'utf8', env: { ...process.env, ...env } });

test('--help describes every command and its environment variables', () => {
  const top = run(['--help']);
  assert.equal(top.status, 0);
  for (const cmd of ['serve', 'migrate', 'keys', 'sign']) assert.match(top.stdout, new RegExp(cmd));
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
    assert.match(first.stdout, /1 migration\(s\) applied/);
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
