// Acknowledged means durable: every event answered 200 survives a SIGKILL and is processed after restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTally, makeEvent, subscription } from './harness.mjs';

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
