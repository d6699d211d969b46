// Acknowledged means durable: every event answered 200 survives a SIGKILL and is processed after restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BIN, startTally, makeEvent, subscription } from './harness.mjs';

test('every acknowledged event survives kill -9 and is processed after restart', async () => {
  const first = await startTally();
  const T = Math.floor(Date.now() / 1000) - 60;
  const events = Array.from({ length: 300 }, (_, i) =>
    makeEvent(`evt_crash_${i}`, 'customer.subscription.created', T, subscription(`sub_crash_${i}`, `cus_crash_${i}`, 'active', 'starter_monthly', T)));
  // Many in flight at once, so they share group commits; the kill lands right after the last answer.
  const answers = await Promise.all(events.map((e) => first.deliver(e)));
  const acked = answers.filter((r) => r.status === 200).map((r) => r.json.id);
  assert.equal(acked.length, events.length);
  const { signal } = await first.crash();
  assert.equal(signal, 'SIGKILL');

  const second = await startTally({}, { dir: first.dir });
  try {
    await second.settle();
    for (const id of acked) {
      const r = await second.get(`/v1/webhook_events/${id}`);
      assert.equal(r.status, 200, `${id} was acknowledged but is gone`);
      assert.equal(r.json.status, 'processed', id);
    }
    const c = await second.get('/v1/customers?stripe_customer_id=cus_crash_299');
    assert.equal(c.json.data[0].role, 'professional');
    // Redelivery after the crash is recognised as a duplicate.
    const again = await second.deliver(events[0]);
    assert.equal(again.json.duplicate, true);
  } finally {
    await second.stop();
  }
});

// Issue 12: every acknowledged usage record survives a SIGKILL under recording load and is counted exactly once.
test('usage acknowledged before kill -9 is counted exactly once after restart', async () => {
  const first = await startTally({ TALLY_STRIPE_SANDBOX: undefined });
  const c = (await first.post('/v1/customers', { external_id: 'usage_crash' })).json.id;
  // storage_gb is a soft gauge: nothing is refused, so every request records one unit.
  const requests = [];
  for (let i = 0; i < 2000; i++) {
    requests.push(i % 2 === 0
      ? { path: '/v1/usage', body: { customer: c, meter: 'storage_gb', value: 1, idempotency_key: `u${i}` }, headers: {} }
      : { path: '/v1/check', body: { customer: c, meter: 'storage_gb', amount: 1, record: true }, headers: { 'idempotency-key': `k${i}` } });
  }
  const acked = new Set();
  const sent = new Set();
  let next = 0;
  let crashed = false;
  const worker = async () => {
    while (!crashed && next < requests.length) {
      const i = next++;
      sent.add(i);
      try {
        const r = await first.post(requests[i].path, requests[i].body, { headers: requests[i].headers });
        if (r.status === 200) acked.add(i);
      } catch { /* the connection died with the process: not acknowledged */ }
    }
  };
  const load = Promise.all(Array.from({ length: 16 }, worker));
  while (acked.size < 300) await new Promise((res) => setTimeout(res, 5));
  crashed = true;
  const { signal } = await first.crash();
  assert.equal(signal, 'SIGKILL');
  await load;
  assert.ok(acked.size < requests.length, 'the load was still running at the kill');

  const second = await startTally({ TALLY_STRIPE_SANDBOX: undefined }, { dir: first.dir });
  try {
    const current = async () =>
      (await second.get(`/v1/customers/${c}/usage`)).json.meters.find((m) => m.meter === 'storage_gb').current;
    const after = await current();
    assert.ok(after >= acked.size, `${after} counted, ${acked.size} acknowledged`);
    assert.ok(after <= sent.size, `${after} counted, only ${sent.size} sent`);
    // Sending every request again with its key: the acknowledged ones are replays (they were durable), and in the
    // end each request is counted exactly once.
    for (const i of sent) {
      const r = await second.post(requests[i].path, requests[i].body, { headers: requests[i].headers });
      assert.equal(r.status, 200, r.text);
      if (acked.has(i)) assert.equal(r.headers.get('idempotent-replayed'), 'true', `request ${i} was acknowledged but is gone`);
    }
    assert.equal(await current(), sent.size);
    const history = (await second.get(`/v1/customers/${c}/usage/history?meter=storage_gb`)).json.data;
    assert.equal(history.reduce((n, b) => n + b.events, 0), sent.size);  // one ledger entry per request
  } finally {
    await second.stop();
  }
});

// Issue 13: holds and captures acknowledged before a SIGKILL under load are there after the restart, as acknowledged,
// and the ledger verifies.
test('holds and captures acknowledged before kill -9 are there after restart, and tally ledger verify passes', async () => {
  const first = await startTally({ TALLY_STRIPE_SANDBOX: undefined });
  const c = (await first.post('/v1/customers', { external_id: 'holds_crash' })).json.id;
  assert.equal((await first.post('/v1/credits/grants', { customer: c, id: 'holds-crash-grant', amount: 100000 })).status, 201);
  const held = new Set();
  const captured = new Set();
  let next = 0;
  let crashed = false;
  const worker = async () => {
    while (!crashed && next < 2000) {
      const i = next++;
      try {
        const r = await first.post('/v1/credits/reservations', { customer: c, id: `hold-${i}`, amount: 3 });
        if (r.status !== 201) continue;
        held.add(i);
        const k = await first.post(`/v1/credits/reservations/hold-${i}/capture`, { amount: 2 });
        if (k.status === 200) captured.add(i);
      } catch { /* the connection died with the process */ }
    }
  };
  const load = Promise.all(Array.from({ length: 16 }, worker));
  while (captured.size < 150) await new Promise((res) => setTimeout(res, 5));
  crashed = true;
  await first.crash();
  await load;
  const second = await startTally({ TALLY_STRIPE_SANDBOX: undefined }, { dir: first.dir });
  try {
    for (const i of held) {
      const r = (await second.get(`/v1/credits/reservations/hold-${i}`)).json;
      assert.equal(r.amount, 3, `hold ${i} was acknowledged but is gone`);
      if (captured.has(i)) assert.deepEqual([r.status, r.captured], ['captured', 2], `capture of hold ${i} was acknowledged but is gone`);
    }
    // What was held and not captured is still held; settling it now leaves the ledger exact.
    // (One whose capture committed without its answer reaching the client is captured: a 409.)
    for (const i of held) {
      if (captured.has(i)) continue;
      const released = await second.post(`/v1/credits/reservations/hold-${i}/release`);
      if (released.status !== 200) {
        assert.equal((await second.get(`/v1/credits/reservations/hold-${i}`)).json.status, 'captured', released.text);
      }
    }
    const verify = spawnSync(BIN, ['ledger', 'verify', '--db', second.db], { encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /every invariant holds/);
  } finally {
    await second.stop();
  }
});

// Issue 13: every acknowledged deduction survives a SIGKILL under load, exactly once, and the ledger verifies.
test('credits deducted before kill -9 are spent exactly once after restart, and tally ledger verify passes', async () => {
  const first = await startTally({ TALLY_STRIPE_SANDBOX: undefined });
  const c = (await first.post('/v1/customers', { external_id: 'credits_crash' })).json.id;
  assert.equal((await first.post('/v1/credits/grants', { customer: c, id: 'crash-grant', amount: 100000 })).status, 201);
  const acked = new Set();
  const sent = new Set();
  let next = 0;
  let crashed = false;
  const worker = async () => {
    while (!crashed && next < 3000) {
      const i = next++;
      sent.add(i);
      try {
        const r = await first.post('/v1/credits/deduct', { customer: c, id: `crash-${i}`, amount: 1 });
        if (r.status === 200) acked.add(i);
      } catch { /* the connection died with the process */ }
    }
  };
  const load = Promise.all(Array.from({ length: 16 }, worker));
  while (acked.size < 300) await new Promise((res) => setTimeout(res, 5));
  crashed = true;
  await first.crash();
  await load;
  const second = await startTally({ TALLY_STRIPE_SANDBOX: undefined }, { dir: first.dir });
  try {
    const spent = async () => 100000 - (await second.get(`/v1/customers/${c}/credits`)).json.total;
    const after = await spent();
    assert.ok(after >= acked.size && after <= sent.size, `${after} spent, ${acked.size} acknowledged, ${sent.size} sent`);
    for (const i of sent) {
      const r = await second.post('/v1/credits/deduct', { customer: c, id: `crash-${i}`, amount: 1 });
      assert.equal(r.status, 200, r.text);
      if (acked.has(i)) assert.equal(r.headers.get('idempotent-replayed'), 'true', `deduction ${i} was acknowledged but is gone`);
    }
    assert.equal(await spent(), sent.size);
    const verify = spawnSync(BIN, ['ledger', 'verify', '--db', second.db], { encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /every invariant holds/);
  } finally {
    await second.stop();
  }
});
