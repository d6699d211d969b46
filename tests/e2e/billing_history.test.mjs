// Billing history (issue 11): invoices and payments as the webhooks stored them, per customer and for the admin,
// filtered by status, customer and creation time, paginated, as JSON or CSV, and a customer session's view of its
// own history only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTally, makeEvent, customerObject, invoiceObject, fixtures } from './harness.mjs';

let server;
before(async () => { server = await startTally({ TALLY_STRIPE_SANDBOX: undefined }); });
after(async () => { await server.stop(); });

const T0 = 1_780_000_000;

function assertError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  for (const k of ['type', 'code', 'message', 'param']) assert.ok(k in r.json.error, r.text);
  if (code) assert.equal(r.json.error.code, code, r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
}

function invoice(id, customer, status, created, extra = {}) {
  return Object.assign(invoiceObject(id, customer, 'sub_hist', status), {
    created, number: `INV-${id}`, attempt_count: status === 'open' ? 2 : 1,
    next_payment_attempt: status === 'open' ? created + 3 * 86400 : null,
    hosted_invoice_url: `https://invoice.stripe.com/i/${id}`, ...extra,
  });
}

function paymentIntent(id, customer, status, created, message) {
  return Object.assign(structuredClone(fixtures().payment_intent), {
    id, customer, status, created, amount: 6000, currency: 'usd',
    last_payment_error: message ? { message, type: 'card_error', code: 'card_declined' } : null,
  });
}

async function deliverAll(events) {
  for (const e of events) {
    const r = await server.deliver(e);
    assert.equal(r.status, 200, r.text);
  }
  await server.settle();
}

test('invoices and payments: lists, filters, pagination, CSV, sessions, bad input', async () => {
  const a = (await server.post('/v1/customers', { external_id: 'hist_a', type: 'organization' })).json;
  const b = (await server.post('/v1/customers', { external_id: 'hist_b' })).json;
  assert.equal((await server.post(`/v1/customers/${a.id}/members`, { user: 'hist_member', role: 'member' })).status, 201);
  await deliverAll([
    makeEvent('evt_h_ca', 'customer.created', T0, customerObject('cus_hist_a', 'a@hist.example', 'hist_a')),
    makeEvent('evt_h_cb', 'customer.created', T0, customerObject('cus_hist_b', 'b@hist.example', 'hist_b')),
    makeEvent('evt_h_i1', 'invoice.paid', T0 + 10, invoice('in_h1', 'cus_hist_a', 'paid', T0 + 10)),
    makeEvent('evt_h_i2', 'invoice.payment_failed', T0 + 20, invoice('in_h2', 'cus_hist_a', 'open', T0 + 20)),
    makeEvent('evt_h_i3', 'invoice.paid', T0 + 30,
      invoice('in_h3', 'cus_hist_b', 'paid', T0 + 30, { number: '=HYPERLINK("http://evil","x")' })),
    makeEvent('evt_h_p1', 'payment_intent.succeeded', T0 + 10, paymentIntent('pi_h1', 'cus_hist_a', 'succeeded', T0 + 10)),
    makeEvent('evt_h_p2', 'payment_intent.payment_failed', T0 + 20,
      paymentIntent('pi_h2', 'cus_hist_a', 'requires_payment_method', T0 + 20, 'Your card was declined.')),
  ]);

  // Every invoice, newest first, with what the webhooks carried.
  const all = await server.get('/v1/invoices?created[gte]=' + T0);
  assert.equal(all.status, 200, all.text);
  assert.equal(all.json.object, 'list');
  assert.deepEqual(all.json.data.map((i) => i.id), ['in_h3', 'in_h2', 'in_h1']);
  const open = all.json.data[1];
  assert.deepEqual(open, {
    id: 'in_h2', object: 'invoice', customer: a.id, stripe_customer_id: 'cus_hist_a', subscription: 'sub_hist',
    number: 'INV-in_h2', status: 'open', amount_due: 6000, amount_paid: 0, currency: 'usd', attempt_count: 2,
    next_payment_attempt: T0 + 20 + 3 * 86400, hosted_invoice_url: 'https://invoice.stripe.com/i/in_h2', created: T0 + 20,
  });
  // Filters.
  const ids = async (path) => { const r = await server.get(path); assert.equal(r.status, 200, r.text); return r.json.data.map((x) => x.id); };
  assert.deepEqual(await ids(`/v1/invoices?customer=${a.id}`), ['in_h2', 'in_h1']);
  assert.deepEqual(await ids(`/v1/customers/${a.id}/invoices`), ['in_h2', 'in_h1']);
  assert.deepEqual(await ids(`/v1/customers/${b.id}/invoices`), ['in_h3']);
  assert.deepEqual(await ids('/v1/invoices?status=paid&created[gte]=' + T0), ['in_h3', 'in_h1']);
  assert.deepEqual(await ids(`/v1/invoices?status=open&customer=${a.id}`), ['in_h2']);
  assert.deepEqual(await ids(`/v1/invoices?created[gte]=${T0 + 20}`), ['in_h3', 'in_h2']);
  const noStripe = (await server.post('/v1/customers', { external_id: 'hist_none' })).json;
  assert.deepEqual(await ids(`/v1/customers/${noStripe.id}/invoices`), []);
  // Pages of one.
  const p1 = await server.get(`/v1/customers/${a.id}/invoices?limit=1`);
  assert.deepEqual([p1.json.data.map((i) => i.id), p1.json.has_more], [['in_h2'], true]);
  const p2 = await server.get(`/v1/customers/${a.id}/invoices?limit=1&starting_after=in_h2`);
  assert.deepEqual([p2.json.data.map((i) => i.id), p2.json.has_more], [['in_h1'], false]);

  // Failed payments, with the reason.
  const failed = await server.get(`/v1/payments?status=requires_payment_method&customer=${a.id}`);
  assert.equal(failed.status, 200, failed.text);
  assert.equal(failed.json.data.length, 1);
  assert.deepEqual(failed.json.data[0], {
    id: 'pi_h2', object: 'payment', type: 'payment_intent', customer: a.id, stripe_customer_id: 'cus_hist_a',
    amount: 6000, amount_refunded: 0, currency: 'usd', status: 'requires_payment_method',
    failure_message: 'Your card was declined.', created: T0 + 20,
  });
  assert.deepEqual(await ids(`/v1/customers/${a.id}/payments`), ['pi_h2', 'pi_h1']);

  // CSV: a header, one record per row, formulas disarmed, the page's continuation in headers.
  const csv = await server.get('/v1/invoices?format=csv&created[gte]=' + T0);
  assert.equal(csv.status, 200, csv.text);
  assert.match(csv.headers.get('content-type'), /^text\/csv/);
  assert.match(csv.headers.get('content-disposition'), /filename="invoices.csv"/);
  assert.equal(csv.headers.get('tally-has-more'), 'false');
  const lines = csv.text.split('\r\n');
  assert.equal(lines[0], 'id,customer,stripe_customer_id,subscription,number,status,amount_due,amount_paid,currency,'
    + 'attempt_count,next_payment_attempt,hosted_invoice_url,created');
  assert.equal(lines.length, 5, csv.text);  // header, 3 rows, and the empty string after the last CRLF
  assert.equal(lines[4], '');
  assert.ok(lines[1].startsWith(`in_h3,${b.id},cus_hist_b,sub_hist,"'=HYPERLINK(""http://evil"",""x"")",paid,6000,6000,`), lines[1]);
  assert.ok(lines[2].endsWith(`,2,${T0 + 20 + 3 * 86400},https://invoice.stripe.com/i/in_h2,${T0 + 20}`), lines[2]);
  const csvPage = await server.get(`/v1/payments?format=csv&limit=1&customer=${a.id}`);
  assert.equal(csvPage.headers.get('tally-has-more'), 'true');
  assert.equal(csvPage.headers.get('tally-next-starting-after'), 'pi_h2');
  assert.equal(csvPage.text.split('\r\n')[1],
    `pi_h2,payment_intent,${a.id},cus_hist_a,6000,0,usd,requires_payment_method,Your card was declined.,${T0 + 20}`);

  // A member's session reads its own customer's history and nothing else.
  const session = (await server.post('/v1/customer_sessions', { customer: a.id, user: 'hist_member' })).json;
  const asMember = { key: session.token };
  const own = await server.get(`/v1/customers/${a.id}/invoices`, asMember);
  assert.equal(own.status, 200, own.text);
  assert.deepEqual(own.json.data.map((i) => i.id), ['in_h2', 'in_h1']);
  assert.equal((await server.get(`/v1/customers/${a.id}/payments`, asMember)).status, 200);
  assertError(await server.get(`/v1/customers/${b.id}/invoices`, asMember), 404, 'resource_missing', 'id');
  assertError(await server.get('/v1/invoices', asMember), 404, 'route_not_found');
  assertError(await server.get('/v1/payments', asMember), 404, 'route_not_found');

  // Bad input.
  assertError(await server.get('/v1/invoices?colour=red'), 400, 'parameter_unknown', 'colour');
  assertError(await server.get(`/v1/customers/${a.id}/invoices?customer=${b.id}`), 400, 'parameter_unknown', 'customer');
  assertError(await server.get('/v1/invoices?limit=0'), 400, 'parameter_invalid', 'limit');
  assertError(await server.get('/v1/invoices?created[gte]=yesterday'), 400, 'parameter_invalid', 'created[gte]');
  assertError(await server.get('/v1/invoices?format=xml'), 400, 'parameter_invalid', 'format');
  assertError(await server.get('/v1/invoices?starting_after=in_missing'), 404, 'resource_missing', 'starting_after');
  assertError(await server.get('/v1/invoices?customer=cust_missing'), 404, 'resource_missing', 'customer');
  assertError(await server.get('/v1/customers/cust_missing/invoices'), 404, 'resource_missing', 'id');
});
