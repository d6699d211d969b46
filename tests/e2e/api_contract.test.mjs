// The API as a contract: api/openapi.yaml is a valid OpenAPI 3.1 document, Tally serves exactly it at
// /openapi.json, renders it at /docs (Swagger UI from npm, compiled in: the page makes no outside request), and
// answers documented statuses for routes it has with another method. Every other test's responses are checked
// against the spec by harness.mjs (openapi.mjs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Validator } from '@seriousme/openapi-schema-validator';
import { launchBrowser, SOURCE_DIR, startTally } from './harness.mjs';
import { checkResponse, openapiSpec } from './openapi.mjs';

let tally;
before(async () => { tally = await startTally({ TALLY_STRIPE_SANDBOX: undefined }); });
after(async () => { await tally?.stop(); });

test('api/openapi.yaml is a valid OpenAPI 3.1 document', async () => {
  const validator = new Validator();
  const res = await validator.validate(join(SOURCE_DIR, 'api/openapi.yaml'));
  assert.equal(res.valid, true, JSON.stringify(res.errors, null, 2));
  assert.equal(validator.version, '3.1');
});

test('GET /openapi.json is api/openapi.yaml, as JSON', async () => {
  const r = await tally.get('/openapi.json', { key: null });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.deepEqual(r.json, openapiSpec(SOURCE_DIR));
});

test('/docs renders the reference with Swagger UI, from Tally alone', async () => {
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const outside = [];
    page.on('request', (req) => { if (!req.url().startsWith(tally.base)) outside.push(req.url()); });
    const res = await page.goto(`${tally.base}/docs`);
    assert.equal(res.status(), 200);
    await page.waitForSelector('.opblock-summary-path', { timeout: 20000 });
    const paths = await page.$$eval('.opblock-summary-path', (els) => els.map((e) => e.getAttribute('data-path')));
    const spec = openapiSpec(SOURCE_DIR);
    for (const p of ['/v1/customers', '/v1/subscriptions/{id}/change', '/v1/customer_sessions']) assert.ok(paths.includes(p), p);
    const documented = Object.values(spec.paths).reduce((n, item) => n + ['get', 'post', 'delete'].filter((m) => item[m]).length, 0);
    assert.equal(paths.length, documented, 'every operation is rendered');
    assert.match(await page.textContent('.info .title'), new RegExp(spec.info.title));
    assert.deepEqual(outside, [], 'the page loads nothing from outside Tally');
  } finally {
    await browser.close();
  }
});

test('a public route with another method is a documented 405; HEAD answers like GET without a body', async () => {
  const r = await tally.request('POST', '/health', { key: null });
  assert.equal(r.status, 405);
  assert.equal(r.json.error.code, 'method_not_allowed');
  assert.equal(r.headers.get('allow'), 'GET');
  const w = await tally.request('GET', '/webhooks/stripe', { key: null });
  assert.equal(w.status, 405);
  assert.equal(w.headers.get('allow'), 'POST');
  const head = await tally.request('HEAD', '/health', { key: null });
  assert.equal(head.status, 200);
  assert.equal(head.text, '');
});

test('the response checker itself refuses what the spec does not say', () => {
  // The guard on every other test: an undocumented field, a wrong type, an undocumented route and an
  // undocumented content type all throw.
  const customer = { id: 'cus_1', object: 'customer' };
  assert.throws(() => checkResponse(SOURCE_DIR, 'GET', '/v1/customers/cus_1', 200, 'application/json', JSON.stringify(customer)),
    /does not match the spec/);
  const error = { error: { type: 'invalid_request_error', code: 'resource_missing', message: 'x', param: null } };
  assert.doesNotThrow(() => checkResponse(SOURCE_DIR, 'GET', '/v1/customers/cus_1', 404, 'application/json', JSON.stringify(error)));
  assert.throws(() => checkResponse(SOURCE_DIR, 'GET', '/v1/customers/cus_1', 404, 'application/json',
    JSON.stringify({ error: { ...error.error, extra: 1 } })), /does not match the spec/);
  assert.throws(() => checkResponse(SOURCE_DIR, 'GET', '/v2/nothing', 200, 'application/json', '{}'), /no operation/);
  assert.throws(() => checkResponse(SOURCE_DIR, 'GET', '/v1/plans', 200, 'text/html', '<p>'), /content type/);
  assert.throws(() => checkResponse(SOURCE_DIR, 'GET', '/health', 200, 'application/json',
    JSON.stringify({ status: 'fine', database: 'ok', stripe: 'sandbox', webhook_endpoint: 'unknown', version: '1', time: 1 })),
  /does not match the spec/);
});
