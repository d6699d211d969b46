// Three Tally nodes on one PostgreSQL database behind HAProxy (run by ctest's e2e_postgres): the shuffled and
// duplicated webhook storm, with one node killed in the middle, ends in the state of in-order delivery, with every
// event recorded and applied once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Stripe from 'stripe';
import { SECRET, STORE, freePort, psql, startTally, stripe } from './harness.mjs';
import { finalState, lifecycle, shuffle } from './storm.mjs';

const skip = STORE !== 'postgres' && 'runs with TALLY_E2E_STORE=postgres';

async function startHaproxy(ports) {
  const dir = mkdtempSync(join(tmpdir(), 'tally-haproxy-'));
  const port = await freePort();
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(cfg, `global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
  default-server inter 200ms fall 2 rise 1
frontend tally
  bind 127.0.0.1:${port}
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /health
${ports.map((p, i) => `  server n${i} 127.0.0.1:${p} check`).join('\n')}
`);
  const child = spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/health`)).status === 200) break;
    } catch { /* not listening yet */ }
    if (i > 200 || child.exitCode !== null) throw new Error(`haproxy did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return { base, stop() { child.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); } };
}

/** Delivers |event| through the balancer as Stripe would: signed, and sent again until it gets a 2xx. */
async function deliver(base, event) {
  const payload = JSON.stringify(event);
  for (let attempt = 0; ; attempt++) {
    const header = stripe.webhooks.generateTestHeaderString({ payload, secret: SECRET });
    try {
      const res = await fetch(`${base}/webhooks/stripe`, {
        method: 'POST', body: payload, headers: { 'stripe-signature': header, 'content-type': 'application/json' } });
      const body = await res.json().catch(() => undefined);
      if (res.status === 200) return body;
    } catch { /* the connection died with its node: send again */ }
    if (attempt > 100) throw new Error(`${event.id} never got a 2xx`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('three nodes behind HAProxy, one killed mid-storm: every event recorded and applied once, state as in order', { skip }, async () => {
  const first = await startTally({ TALLY_STRIPE_SANDBOX: undefined });
  const nodes = [first];
  for (let i = 1; i < 3; i++) {
    nodes.push(await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: first.db },
                                { dir: mkdtempSync(join(tmpdir(), `tally-node${i}-`)) }));
  }
  const lb = await startHaproxy(nodes.map((n) => Number(new URL(n.base).port)));
  const victim = nodes[1];
  try {
    for (const e of lifecycle('inorder')) await deliver(lb.base, e);
    await first.settle();
    const want = await finalState(first, 'inorder');
    // The audit trail of one customer: the history depends on the order events were applied in, but an event
    // applied twice would leave its entry twice.
    const auditOf = async (node, prefix) => {
      const c = (await node.get(`/v1/customers?stripe_customer_id=cus_${prefix}`)).json.data[0];
      return (await node.get(`/v1/audit?customer=${c.id}&limit=100`)).json.data.map((e) => `${e.kind}:${e.before}>${e.after}:${e.cause}`);
    };

    let unique = lifecycle('inorder').length;
    let sent = 0;
    const seeds = [1, 2, 3, 4, 5, 6];
    for (const seed of seeds) {
      const events = lifecycle(`shuf${seed}`);
      unique += events.length;
      const storm = shuffle([...events, ...events.filter((_, i) => (i + seed) % 3 === 0)], seed);
      const answers = await Promise.all(storm.map(async (e) => {
        // Halfway through the third storm, one node dies with whatever it had in flight.
        if (seed === 3 && ++sent === Math.floor(storm.length / 2)) await victim.crash();
        return deliver(lb.base, e);
      }));
      for (const a of answers) assert.equal(a.received, true);
    }
    assert.notEqual(victim.child.exitCode ?? victim.child.signalCode, null, 'the victim was killed');
    const survivors = nodes.filter((n) => n !== victim);
    await first.settle(60000);
    for (const seed of seeds) {
      const prefix = `shuf${seed}`;
      for (const node of survivors) {
        const got = await finalState(node, prefix);
        assert.deepEqual({ ...got, email: got.email.replace(prefix, 'inorder'), external_id: got.external_id.replace(prefix, 'inorder') },
                         want, `seed ${seed} through ${node.base}`);
      }
      const audit = await auditOf(nodes[2], prefix);
      assert.equal(new Set(audit).size, audit.length, `seed ${seed}: no change applied twice: ${audit.join(', ')}`);
    }
    // Each event once in the inbox, every one processed, whichever node received or applied it.
    const counts = psql(first.db, "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'processed'), SUM(attempts) "
                                  + 'FROM webhook_events').trim();
    assert.equal(counts, `${unique}|${unique}|${unique}`, 'recorded once, processed once, by one node');
  } finally {
    lb.stop();
    for (const n of nodes) {
      if (n === victim) n.cleanup();
      else await n.stop();
    }
  }
});

test('atomic across three nodes: an Idempotency-Key runs once, a customer gets exactly one Stripe customer', { skip }, async () => {
  const first = await startTally();  // with the standalone sandbox the harness wires for PostgreSQL
  const stripeEnv = { TALLY_STRIPE_SANDBOX: undefined, TALLY_DB: first.db, STRIPE_SECRET_KEY: 'sk_test_tally_sandbox',
                      STRIPE_API_BASE: `http://127.0.0.1:${first.sandboxPort}`, STRIPE_TEST_CLOCK: first.testClock };
  const nodes = [first];
  for (let i = 1; i < 3; i++) nodes.push(await startTally(stripeEnv, { dir: mkdtempSync(join(tmpdir(), `tally-atomic${i}-`)) }));
  try {
    // The same creation with the same key, sent to every node at once, ten times over.
    for (let k = 0; k < 10; k++) {
      const body = { external_id: `user_idem_${k}`, email: `idem${k}@example.com` };
      const headers = { 'idempotency-key': `create-${k}` };
      const answers = await Promise.all(nodes.flatMap((n) => [n, n].map((m) => m.request('POST', '/v1/customers', { body, headers }))));
      const ok = answers.filter((r) => r.status === 200 || r.status === 201);
      for (const r of answers.filter((a) => !ok.includes(a))) {
        assert.equal(r.status, 409, r.text);  // a twin while the first runs: Stripe's idempotency "in use"
        assert.equal(r.json.error.type, 'idempotency_error');
      }
      assert.ok(ok.length >= 1);
      assert.equal(new Set(ok.map((r) => r.json.id)).size, 1, `key ${k}: one customer, replayed to every caller`);
      assert.equal(psql(first.db, `SELECT COUNT(*) FROM customers WHERE external_id = 'user_idem_${k}'`).trim(), '1');
    }
    // Checkout for one customer from every node at once: one Stripe customer, linked once.
    const customer = (await first.post('/v1/customers', { external_id: 'user_one_stripe', email: 'one@example.com' })).json;
    const sessions = await Promise.all(nodes.flatMap((n) => [1, 2, 3].map(() =>
      n.post('/v1/checkout_sessions', { customer: customer.id, plan: 'pro', interval: 'month' }))));
    for (const s of sessions) assert.equal(s.status, 200, s.text);
    const sandbox = new Stripe('sk_test_tally_sandbox', { host: '127.0.0.1', port: first.sandboxPort, protocol: 'http' });
    const inStripe = (await sandbox.customers.list({ email: 'one@example.com', limit: 100 })).data;
    assert.equal(inStripe.length, 1, 'exactly one Stripe customer');
    assert.equal(new Set(sessions.map((s) => s.json.id)).size, sessions.length, 'each request its own session');
    for (const n of nodes) assert.equal((await n.get(`/v1/customers/${customer.id}`)).json.stripe_customer_id, inStripe[0].id);
  } finally {
    for (const n of nodes.slice(1)) await n.stop();
    await first.stop();
  }
});
