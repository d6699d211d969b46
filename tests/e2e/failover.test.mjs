// Failover (ctest e2e_failover): a primary with a synchronous hot standby, the primary killed under webhook load
// and the standby promoted. Tally answers 503 while no primary is reachable, reconnects by itself (a libpq
// multi-host URL with target_session_attrs=read-write), and every delivery that got a 2xx is there exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SOURCE_DIR, STORE, customerObject, makeEvent, psql, startTally } from './harness.mjs';

const skip = STORE !== 'postgres' && 'runs with TALLY_E2E_STORE=postgres';
const script = join(SOURCE_DIR, 'scripts/pg-test.sh');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('the primary killed under load, the standby promoted: 503 meanwhile, then every acknowledged delivery once', { skip }, async (t) => {
  const state = mkdtempSync(join(tmpdir(), 'tally-failover-'));
  execFileSync(script, ['start-replicated', state], { stdio: 'ignore' });
  let tally;
  try {
    const url = readFileSync(join(state, 'url'), 'utf8').trim();
    assert.match(url, /,.*target_session_attrs=read-write/);
    tally = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: url });
    const now = Math.floor(Date.now() / 1000);
    const acked = new Set();
    const refused = new Set();
    const statuses = new Map();
    let phase = 'primary';
    let n = 0;
    let running = true;
    const send = async (id) => {
      const e = makeEvent(id, 'customer.created', now, customerObject(`cus_${id}`, `${id}@example.com`, `user_${id}`));
      const r = await tally.deliver(e).catch(() => ({ status: 0 }));
      const key = `${phase}:${r.status}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
      if (r.status === 200) {
        acked.add(id);
        refused.delete(id);
      } else {
        assert.equal(r.status, 503, r.text);
        assert.equal(r.json.error.code, 'service_unavailable');
        refused.add(id);
      }
    };
    const senders = Array.from({ length: 8 }, async () => {
      while (running) await send(`evt_fo_${n++}`);
    });
    await sleep(1500);
    execFileSync(script, ['kill-primary', state], { stdio: 'ignore' });
    phase = 'none';
    await sleep(1500);
    execFileSync(script, ['promote', state], { stdio: 'ignore' });
    phase = 'promoted';
    for (let i = 0; i < 400 && !((statuses.get('promoted:200') ?? 0) > 50); i++) await sleep(25);
    running = false;
    await Promise.all(senders);
    t.diagnostic(`answers by phase: ${JSON.stringify([...statuses])}; ${acked.size} acknowledged`);
    assert.ok((statuses.get('primary:200') ?? 0) > 0, `acknowledged before: ${[...statuses]}`);
    assert.ok((statuses.get('none:503') ?? 0) > 0, `503 without a primary: ${[...statuses]}`);
    assert.ok((statuses.get('promoted:200') ?? 0) > 50, `acknowledged after promotion: ${[...statuses]}`);
    // What was refused is sent again, as Stripe retries: then everything sent is there.
    for (const id of [...refused]) await send(id);
    assert.equal(refused.size, 0);
    const ids = psql(url, "SELECT id FROM webhook_events WHERE id LIKE 'evt_fo_%'").trim().split('\n');
    assert.equal(new Set(ids).size, ids.length, 'no event recorded twice');
    const missing = [...acked].filter((id) => !ids.includes(id));
    assert.deepEqual(missing, [], 'every acknowledged delivery survived the failover');
    assert.equal(ids.length, acked.size, 'and nothing that was not sent');
    await tally.settle(30000);
    assert.equal(psql(url, "SELECT COUNT(*) FROM customers WHERE stripe_customer_id LIKE 'cus_evt_fo_%'").trim(),
                 String(acked.size));
  } finally {
    if (tally) await tally.stop();
    execFileSync(script, ['stop', state], { stdio: 'ignore' });
    rmSync(state, { recursive: true, force: true });
  }
});
