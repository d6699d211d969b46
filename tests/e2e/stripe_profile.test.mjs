// The customer profile reaches the Stripe customer (issue 11): email, name and metadata, with Tally's reserved
// keys (tally_customer_id, tally_company, ...), pushed after the API call commits; removed keys are removed in
// Stripe too; the customer object says whether Stripe's copy is current. Read back with the official SDK.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Stripe from 'stripe';
import { startTally } from './harness.mjs';

let server;
let stripe;
before(async () => {
  server = await startTally();
  stripe = new Stripe('sk_test_profile', { host: '127.0.0.1', port: server.sandboxPort, protocol: 'http', maxNetworkRetries: 0 });
});
after(async () => { await server.stop(); });

async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('profile changes are pushed to the Stripe customer, and stripe_sync tells when they landed', async () => {
  const created = await server.post('/v1/customers', {
    external_id: 'sync_user', email: 'sync@example.com', name: 'Sync Org', type: 'organization',
    auth_provider: 'github', company: 'Sync Ltd', email_verified: true, metadata: { tier: 'gold', region: 'eu' },
  });
  assert.equal(created.status, 201, created.text);
  const id = created.json.id;
  assert.equal(created.json.stripe_sync, null, 'no Stripe customer yet');

  // A checkout creates the Stripe customer; the profile set before follows it there.
  const checkout = await server.post('/v1/checkout_sessions', { customer: id, plan: 'pro' });
  assert.equal(checkout.status, 200, checkout.text);
  const linked = await until(async () => {
    const c = (await server.get(`/v1/customers/${id}`)).json;
    return c.stripe_customer_id && c.stripe_sync === 'synced' ? c : null;
  }, 'the profile pushed after the link');
  const stripeCustomer = await stripe.customers.retrieve(linked.stripe_customer_id);
  assert.deepEqual(stripeCustomer.metadata, {
    tier: 'gold', region: 'eu', external_id: 'sync_user', tally_customer_id: id, tally_auth_provider: 'github',
    tally_company: 'Sync Ltd', tally_email_verified: 'true',
  });
  assert.equal(stripeCustomer.email, 'sync@example.com');

  // An update: committed at once (pending or already synced), then Stripe matches it, removed keys included.
  const up = await server.post(`/v1/customers/${id}`, {
    name: 'Sync Org Renamed', company: 'Sync GmbH', email_verified: false, metadata: { region: '', seats: '12' },
  });
  assert.equal(up.status, 200, up.text);
  assert.ok(['pending', 'synced'].includes(up.json.stripe_sync), up.text);
  await until(async () => (await server.get(`/v1/customers/${id}`)).json.stripe_sync === 'synced', 'the update pushed');
  const after = await stripe.customers.retrieve(linked.stripe_customer_id);
  assert.deepEqual(after.metadata, {
    tier: 'gold', seats: '12', external_id: 'sync_user', tally_customer_id: id, tally_auth_provider: 'github',
    tally_company: 'Sync GmbH',
  });
  assert.equal(after.name, 'Sync Org Renamed');

  // Tally's reserved keys are not the app's to set.
  const reserved = await server.post(`/v1/customers/${id}`, { metadata: { tally_company: 'spoofed' } });
  assert.equal(reserved.status, 400, reserved.text);
  assert.equal(reserved.json.error.param, 'metadata[tally_company]');

  // The push went through Stripe's webhook path as well: Tally's customer did not change from its own echo.
  await new Promise((r) => setTimeout(r, 300));
  const final = (await server.get(`/v1/customers/${id}`)).json;
  assert.equal(final.name, 'Sync Org Renamed');
  assert.deepEqual(final.metadata, { tier: 'gold', seats: '12' });
  assert.equal(final.company, 'Sync GmbH');
});
