// Organizations (issue 11): the customer profile (type, auth provider, company, verified email, Stripe-style
// metadata) and its list filters, members of organization customers and the last-owner rule, the effective role of
// an app user across every customer they belong to, customer sessions (tokens scoped to one customer, whose
// permissions follow the membership, and that see everything else as missing), and the member events.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { isDeepStrictEqual } from 'node:util';
import { startTally } from './harness.mjs';

let server;
before(async () => { server = await startTally({ TALLY_STRIPE_SANDBOX: undefined, TALLY_EVENT_RETRY_BASE_MS: '50' }); });
after(async () => { await server.stop(); });

function assertError(r, status, code, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.json?.error, 'object', r.text);
  for (const k of ['type', 'code', 'message', 'param']) assert.ok(k in r.json.error, `missing ${k}: ${r.text}`);
  if (code) assert.equal(r.json.error.code, code, r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
  assert.ok(r.json.error.message.length > 0);
}

/** As assertError, for a param that may be named one of several ways (the spec allows "metadata" or "metadata[key]"). */
function assertErrorParamIn(r, status, code, params) {
  assertError(r, status, code);
  assert.ok(params.includes(r.json.error.param), `param ${r.json.error.param} not in ${params}: ${r.text}`);
}

async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A receiver of app events on a free port, answering 200 to everything (as in events.test.mjs). */
async function startReceiver() {
  const received = [];  // { event, header, raw, at }
  const srv = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
      let event;
      try { event = JSON.parse(raw); } catch { event = null; }
      received.push({ event, header: req.headers['stripe-signature'], raw, at: Date.now() });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}/hooks`, received,
           events: () => received.map((r) => r.event).filter(Boolean),
           close: () => new Promise((r) => srv.close(r)) };
}

async function createCustomer(body) {
  const r = await server.post('/v1/customers', body);
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function createOrg(externalId, extra = {}) {
  const c = await createCustomer({ external_id: externalId, type: 'organization', ...extra });
  assert.equal(c.type, 'organization');
  return c;
}

async function addMember(orgId, user, role, { email, key } = {}) {
  const body = { user, role };
  if (email !== undefined) body.email = email;
  const r = await server.post(`/v1/customers/${orgId}/members`, body, key ? { key } : {});
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function setOverride(customerId, role) {
  const r = await server.post(`/v1/customers/${customerId}/role_override`, { role, reason: 'e2e: paying organization' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.role, role);
  return r.json;
}

function assertMember(m, customer, user, role, email = null) {
  assert.equal(m.object, 'member', JSON.stringify(m));
  assert.equal(m.customer, customer);
  assert.equal(m.user, user);
  assert.equal(m.email, email);
  assert.equal(m.role, role);
  assert.ok(Number.isInteger(m.created) && m.created > 0, JSON.stringify(m));
  assert.ok(Number.isInteger(m.updated) && m.updated >= m.created, JSON.stringify(m));
}

/** Ids of a list response, sorted (for filters whose matches were created in the same second). */
const idSet = (r) => { assert.equal(r.status, 200, r.text); return r.json.data.map((c) => c.id).sort(); };

/** |body| with every occurrence of each of |words| in its error message replaced by a placeholder. */
function blank(body, ...words) {
  const error = { ...body.error };
  for (const w of words) error.message = String(error.message).split(w).join('<x>');
  return { ...body, error };
}

// ---------------------------------------------------------------------------------------------------------------

test('customer profile: fields on create, Stripe-style metadata updates, list filters and pagination, bad input', async () => {
  const company = 'Profile Filters Ltd';
  const org = await createCustomer({
    external_id: 'prof_org', email: 'billing@profile.example', name: 'Profile Org', type: 'organization',
    auth_provider: 'okta', company, email_verified: true, metadata: { tier: 'gold', region: 'eu' },
  });
  assert.match(org.id, /^cust_/);
  assert.equal(org.type, 'organization');
  assert.equal(org.auth_provider, 'okta');
  assert.equal(org.company, company);
  assert.equal(org.email_verified, true);
  assert.deepEqual(org.metadata, { tier: 'gold', region: 'eu' });
  assert.deepEqual((await server.get(`/v1/customers/${org.id}`)).json, org);

  // The defaults of a customer created without a profile.
  const plain = await createCustomer({ external_id: 'prof_plain' });
  assert.equal(plain.type, 'individual');
  assert.equal(plain.auth_provider, null);
  assert.equal(plain.company, null);
  assert.equal(plain.email_verified, false);
  assert.deepEqual(plain.metadata, {});

  // Creating an existing external_id again returns the existing customer (200), not a new one.
  const again = await server.post('/v1/customers', { external_id: 'prof_org', company: 'Someone Else', type: 'organization' });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.id, org.id);
  assert.equal(again.json.company, company);

  const google = await createCustomer({ external_id: 'prof_google', auth_provider: 'google', company, email_verified: false,
                                        metadata: { tier: 'silver' } });
  const github = await createCustomer({ external_id: 'prof_github', auth_provider: 'github', company, email_verified: true,
                                        metadata: { tier: 'gold' } });
  // Every provider name of the spec is accepted.
  for (const p of ['azure_ad', 'linkedin', 'airtable', 'password', 'my_sso_2']) {
    const c = await createCustomer({ external_id: `prof_provider_${p}`, auth_provider: p });
    assert.equal(c.auth_provider, p);
  }
  // Stripe's boundaries are accepted: a 40-character key, a 500-character value.
  const edge = await createCustomer({ external_id: 'prof_edge', metadata: { ['k'.repeat(40)]: 'v'.repeat(500) } });
  assert.deepEqual(edge.metadata, { ['k'.repeat(40)]: 'v'.repeat(500) });

  // Filters: each one, and combinations, within this test's company.
  const q = (extra) => server.get(`/v1/customers?company=${encodeURIComponent(company)}${extra}`);
  const all = await q('');
  assert.equal(all.status, 200, all.text);
  assert.equal(all.json.object, 'list');
  assert.equal(all.json.url, '/v1/customers');
  assert.equal(all.json.has_more, false);
  assert.deepEqual(idSet(all), [org.id, google.id, github.id].sort());
  const created = all.json.data.map((c) => c.created);
  assert.deepEqual(created, [...created].sort((a, b) => b - a), 'newest first');
  assert.deepEqual(idSet(await q('&type=organization')), [org.id]);
  assert.deepEqual(idSet(await q('&type=individual')), [google.id, github.id].sort());
  assert.deepEqual(idSet(await q('&auth_provider=google')), [google.id]);
  assert.deepEqual(idSet(await q('&auth_provider=okta&type=organization')), [org.id]);
  assert.deepEqual(idSet(await q('&auth_provider=saml')), []);
  assert.deepEqual(idSet(await q('&email_verified=true')), [org.id, github.id].sort());
  assert.deepEqual(idSet(await q('&email_verified=false')), [google.id]);
  assert.deepEqual(idSet(await q('&metadata[tier]=gold')), [org.id, github.id].sort());
  assert.deepEqual(idSet(await q('&metadata[tier]=gold&metadata[region]=eu')), [org.id]);
  assert.deepEqual(idSet(await q('&metadata[tier]=bronze')), []);
  assert.deepEqual(idSet(await q('&metadata[tier]=gold&email_verified=true&type=individual')), [github.id]);
  assert.deepEqual(idSet(await server.get('/v1/customers?company=Nobody%20Inc')), []);
  // Without company: the metadata filter alone finds this test's org (its region is unique to it).
  assert.deepEqual(idSet(await server.get('/v1/customers?metadata[region]=eu&type=organization')), [org.id]);

  // Pagination: limit=1 and starting_after walk the same list, one at a time, has_more until the last page.
  const walked = [];
  let cursor = '';
  for (let page = 0; page < 10; ++page) {
    const r = await q(`&limit=1${cursor ? `&starting_after=${cursor}` : ''}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.length, 1, r.text);
    walked.push(r.json.data[0].id);
    cursor = r.json.data[0].id;
    // has_more on every page but the third (the last of the three matches).
    assert.equal(r.json.has_more, walked.length < 3, r.text);
    if (!r.json.has_more) break;
  }
  assert.deepEqual(walked, all.json.data.map((c) => c.id));
  const past = await q(`&limit=1&starting_after=${walked[walked.length - 1]}`);
  assert.deepEqual(past.json.data, []);
  assert.equal(past.json.has_more, false);
  const two = await q('&limit=2');
  assert.equal(two.json.data.length, 2);
  assert.equal(two.json.has_more, true);
  assert.deepEqual(two.json.data.map((c) => c.id), walked.slice(0, 2));

  // Bad list parameters.
  assertError(await server.get('/v1/customers?colour=red'), 400, 'parameter_unknown', 'colour');
  assertError(await server.get('/v1/customers?type=team'), 400, 'parameter_invalid', 'type');
  assertError(await server.get('/v1/customers?email_verified=yes'), 400, 'parameter_invalid', 'email_verified');
  assertError(await server.get('/v1/customers?limit=0'), 400, 'parameter_invalid', 'limit');
  assertError(await server.get('/v1/customers?limit=501'), 400, 'parameter_invalid', 'limit');
  assertError(await server.get('/v1/customers?limit=abc'), 400, 'parameter_invalid', 'limit');
  const badCursor = await server.get('/v1/customers?starting_after=cust_missing');
  assert.ok(badCursor.status >= 400 && badCursor.status < 500, badCursor.text);
  assert.equal(badCursor.json.error.param, 'starting_after', badCursor.text);
  assert.equal((await server.get('/v1/customers?limit=500')).status, 200);

  // Updates: profile fields, and metadata merged like Stripe's ("" removes a key).
  const up = await server.post(`/v1/customers/${org.id}`, {
    name: 'Profile Org Renamed', email: 'accounts@profile.example', company: 'Profile Filters GmbH', auth_provider: 'azure_ad',
    email_verified: false, metadata: { seats: '12', region: '' },
  });
  assert.equal(up.status, 200, up.text);
  assert.equal(up.json.id, org.id);
  assert.equal(up.json.name, 'Profile Org Renamed');
  assert.equal(up.json.email, 'accounts@profile.example');
  assert.equal(up.json.company, 'Profile Filters GmbH');
  assert.equal(up.json.auth_provider, 'azure_ad');
  assert.equal(up.json.email_verified, false);
  assert.equal(up.json.type, 'organization');
  assert.equal(up.json.external_id, 'prof_org');
  assert.deepEqual(up.json.metadata, { tier: 'gold', seats: '12' });
  assert.deepEqual((await server.get(`/v1/customers/${org.id}`)).json, up.json);
  // The filters see the update.
  assert.deepEqual(idSet(await server.get(`/v1/customers?company=${encodeURIComponent('Profile Filters GmbH')}`)), [org.id]);
  assert.deepEqual(idSet(await q('&type=organization')), []);
  assert.deepEqual(idSet(await server.get('/v1/customers?metadata[region]=eu&type=organization')), []);
  // Fields not sent are kept; removing a key that is not there changes nothing.
  const partial = await server.post(`/v1/customers/${org.id}`, { email_verified: true, metadata: { absent: '' } });
  assert.equal(partial.status, 200, partial.text);
  assert.equal(partial.json.email_verified, true);
  assert.equal(partial.json.company, 'Profile Filters GmbH');
  assert.equal(partial.json.name, 'Profile Org Renamed');
  assert.deepEqual(partial.json.metadata, { tier: 'gold', seats: '12' });
  // "metadata": "" clears every key.
  const cleared = await server.post(`/v1/customers/${org.id}`, { metadata: '' });
  assert.equal(cleared.status, 200, cleared.text);
  assert.deepEqual(cleared.json.metadata, {});
  const refilled = await server.post(`/v1/customers/${org.id}`, { metadata: { a: '1', b: '2' } });
  assert.deepEqual(refilled.json.metadata, { a: '1', b: '2' });

  // Bad input on create: 400 naming the param, and nothing created.
  const many = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`key_${i}`, 'v']));
  const createCases = [
    [{ type: 'team' }, 'parameter_invalid', ['type']],
    [{ type: 5 }, 'parameter_invalid', ['type']],
    [{ auth_provider: 'Google' }, 'parameter_invalid', ['auth_provider']],
    [{ auth_provider: 'azure-ad' }, 'parameter_invalid', ['auth_provider']],
    [{ auth_provider: 'has space' }, 'parameter_invalid', ['auth_provider']],
    [{ auth_provider: 'a'.repeat(41) }, 'parameter_invalid', ['auth_provider']],
    [{ auth_provider: 7 }, 'parameter_invalid', ['auth_provider']],
    [{ email_verified: 'yes' }, 'parameter_invalid', ['email_verified']],
    [{ email_verified: 1 }, 'parameter_invalid', ['email_verified']],
    [{ company: 5 }, 'parameter_invalid', ['company']],
    [{ metadata: 'gold' }, 'parameter_invalid', ['metadata']],
    [{ metadata: ['a'] }, 'parameter_invalid', ['metadata']],
    [{ metadata: { a: 1 } }, 'parameter_invalid', ['metadata', 'metadata[a]']],
    [{ metadata: many }, 'parameter_invalid', ['metadata']],
    [{ metadata: { ['k'.repeat(41)]: 'v' } }, 'parameter_invalid', [`metadata[${'k'.repeat(41)}]`]],
    [{ metadata: { long: 'v'.repeat(501) } }, 'parameter_invalid', ['metadata[long]']],
    [{ metadata: { 'a[b': 'v' } }, 'parameter_invalid', ['metadata', 'metadata[a[b]']],
    [{ metadata: { 'a]b': 'v' } }, 'parameter_invalid', ['metadata', 'metadata[a]b]']],
    [{ nickname: 'x' }, 'parameter_unknown', ['nickname']],
  ];
  for (const [i, [extra, code, params]] of createCases.entries()) {
    const externalId = `prof_bad_${i}`;
    assertErrorParamIn(await server.post('/v1/customers', { external_id: externalId, ...extra }), 400, code, params);
    assert.deepEqual((await server.get(`/v1/customers?external_id=${externalId}`)).json.data, [], JSON.stringify(extra));
  }

  // Bad input on update: 400 naming the param, and the customer unchanged.
  const beforeBad = (await server.get(`/v1/customers/${org.id}`)).json;
  const over = Object.fromEntries(Array.from({ length: 49 }, (_, i) => [`more_${i}`, 'v']));  // 2 kept + 49 = 51
  const updateCases = [
    [{ email: 'not-an-email' }, 'parameter_invalid', ['email']],
    [{ auth_provider: 'GitHub' }, 'parameter_invalid', ['auth_provider']],
    [{ email_verified: 'yes' }, 'parameter_invalid', ['email_verified']],
    [{ metadata: over }, 'parameter_invalid', ['metadata']],
    [{ metadata: many }, 'parameter_invalid', ['metadata']],
    [{ metadata: { ['x'.repeat(41)]: 'v' } }, 'parameter_invalid', [`metadata[${'x'.repeat(41)}]`]],
    [{ metadata: { a: 'v'.repeat(501) } }, 'parameter_invalid', ['metadata[a]']],
    [{ metadata: { '[a': 'v' } }, 'parameter_invalid', ['metadata', 'metadata[[a]']],
    [{ metadata: 'x' }, 'parameter_invalid', ['metadata']],
    [{ type: 'individual' }, 'parameter_unknown', ['type']],
    [{ external_id: 'prof_renamed' }, 'parameter_unknown', ['external_id']],
    [{ nickname: 'x' }, 'parameter_unknown', ['nickname']],
  ];
  for (const [body, code, params] of updateCases) {
    assertErrorParamIn(await server.post(`/v1/customers/${org.id}`, body), 400, code, params);
  }
  assert.deepEqual((await server.get(`/v1/customers/${org.id}`)).json, beforeBad);
  assertError(await server.post('/v1/customers/cust_does_not_exist', { name: 'x' }), 404, 'resource_missing');
});

test('members: add, list oldest first, get, change role, remove; duplicates, bad roles, individuals, the last owner', async () => {
  const org = await createOrg('mem_org');
  const base = `/v1/customers/${org.id}/members`;
  // User ids sort in the order they are added, so "oldest first" holds whatever breaks a same-second tie.
  const owner = await addMember(org.id, 'mem_a_owner', 'owner', { email: 'owner@mem.example' });
  assertMember(owner, org.id, 'mem_a_owner', 'owner', 'owner@mem.example');
  const admin = await addMember(org.id, 'mem_b_admin', 'admin', { email: 'admin@mem.example' });
  assertMember(admin, org.id, 'mem_b_admin', 'admin', 'admin@mem.example');
  const member = await addMember(org.id, 'mem_c_member', 'member');
  assertMember(member, org.id, 'mem_c_member', 'member', null);

  const list = await server.get(base);
  assert.equal(list.status, 200, list.text);
  assert.equal(list.json.object, 'list');
  assert.deepEqual(list.json.data, [owner, admin, member]);
  const got = await server.get(`${base}/mem_b_admin`);
  assert.equal(got.status, 200, got.text);
  assert.deepEqual(got.json, admin);
  assertError(await server.get(`${base}/mem_nobody`), 404, 'resource_missing');
  assertError(await server.get('/v1/customers/cust_does_not_exist/members'), 404, 'resource_missing');
  assertError(await server.post('/v1/customers/cust_does_not_exist/members', { user: 'x', role: 'member' }), 404, 'resource_missing');

  // Bad adds: nothing added.
  const dup = await server.post(base, { user: 'mem_c_member', role: 'admin' });
  assertError(dup, 409, 'resource_already_exists');
  assert.equal((await server.get(`${base}/mem_c_member`)).json.role, 'member');
  assertError(await server.post(base, { user: 'mem_d', role: 'superuser' }), 400, 'parameter_invalid', 'role');
  assertError(await server.post(base, { user: 'mem_d', role: 7 }), 400, 'parameter_invalid', 'role');
  assertError(await server.post(base, { user: 'mem_d' }), 400, undefined, 'role');
  assertError(await server.post(base, { role: 'member' }), 400, 'parameter_missing', 'user');
  assertError(await server.post(base, { user: 'mem_d', role: 'member', email: 'nope' }), 400, 'parameter_invalid', 'email');
  assertError(await server.post(base, { user: 'mem_d', role: 'member', colour: 'red' }), 400, 'parameter_unknown', 'colour');
  assertError(await server.get(`${base}/mem_d`), 404, 'resource_missing');
  assert.equal((await server.get(base)).json.data.length, 3);

  // Individual customers have no members.
  const person = await createCustomer({ external_id: 'mem_person' });
  assertError(await server.post(`/v1/customers/${person.id}/members`, { user: 'mem_x', role: 'member' }),
    400, 'customer_not_organization', 'id');

  // Changing a role and an email.
  const promoted = await server.post(`${base}/mem_c_member`, { role: 'admin' });
  assert.equal(promoted.status, 200, promoted.text);
  assertMember(promoted.json, org.id, 'mem_c_member', 'admin', null);
  assert.equal(promoted.json.created, member.created);
  const emailed = await server.post(`${base}/mem_c_member`, { email: 'c@mem.example' });
  assert.equal(emailed.status, 200, emailed.text);
  assertMember(emailed.json, org.id, 'mem_c_member', 'admin', 'c@mem.example');
  assert.deepEqual((await server.get(`${base}/mem_c_member`)).json, emailed.json);
  assertError(await server.post(`${base}/mem_c_member`, { role: 'boss' }), 400, 'parameter_invalid', 'role');
  assertError(await server.post(`${base}/mem_c_member`, { colour: 'red' }), 400, 'parameter_unknown', 'colour');
  assertError(await server.post(`${base}/mem_nobody`, { role: 'admin' }), 404, 'resource_missing');

  // The last owner can be neither demoted nor removed.
  assertError(await server.post(`${base}/mem_a_owner`, { role: 'admin' }), 409, 'last_owner');
  assertError(await server.post(`${base}/mem_a_owner`, { role: 'member' }), 409, 'last_owner');
  assertError(await server.request('DELETE', `${base}/mem_a_owner`), 409, 'last_owner');
  assert.equal((await server.get(`${base}/mem_a_owner`)).json.role, 'owner');
  // With a second owner, the first may step down; the second is then the last one.
  const second = await server.post(`${base}/mem_b_admin`, { role: 'owner' });
  assert.equal(second.status, 200, second.text);
  assert.equal(second.json.role, 'owner');
  const down = await server.post(`${base}/mem_a_owner`, { role: 'admin' });
  assert.equal(down.status, 200, down.text);
  assert.equal(down.json.role, 'admin');
  assertError(await server.request('DELETE', `${base}/mem_b_admin`), 409, 'last_owner');
  assertError(await server.post(`${base}/mem_b_admin`, { role: 'member' }), 409, 'last_owner');

  // Removing a member.
  const removed = await server.request('DELETE', `${base}/mem_c_member`);
  assert.equal(removed.status, 200, removed.text);
  assert.equal(removed.json.deleted, true);
  assertMember(removed.json, org.id, 'mem_c_member', 'admin', 'c@mem.example');
  assertError(await server.get(`${base}/mem_c_member`), 404, 'resource_missing');
  assertError(await server.request('DELETE', `${base}/mem_c_member`), 404, 'resource_missing');
  assert.deepEqual((await server.get(base)).json.data.map((m) => [m.user, m.role]),
    [['mem_a_owner', 'admin'], ['mem_b_admin', 'owner']]);
  // A removed user may join again.
  assertMember(await addMember(org.id, 'mem_c_member', 'member'), org.id, 'mem_c_member', 'member', null);
});

test('users: the effective role is the highest among the customers a user belongs to', async () => {
  const byCustomer = (a, b) => a.customer.localeCompare(b.customer);
  const user = async (id) => {
    const r = await server.get(`/v1/users/${id}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'user');
    assert.equal(r.json.id, id);
    return r.json;
  };
  // A paying organization: its role override makes its role professional.
  const paying = await createOrg('usr_paying');
  await addMember(paying.id, 'usr_owner', 'owner');
  await addMember(paying.id, 'usr_admin', 'admin');
  const free = await createOrg('usr_free');
  await addMember(free.id, 'usr_free_only', 'owner');
  assert.equal((await user('usr_admin')).effective_role, 'member', 'before the organization pays');
  const overridden = await setOverride(paying.id, 'professional');
  assert.equal(overridden.role_source, 'override');

  const admin = await user('usr_admin');
  assert.equal(admin.effective_role, 'professional');
  assert.equal(admin.effective_role, (await server.get(`/v1/customers/${paying.id}`)).json.role);
  assert.deepEqual(admin.memberships,
    [{ customer: paying.id, type: 'organization', role: 'admin', customer_role: 'professional', plan: 'free' }]);
  assert.equal((await user('usr_owner')).effective_role, 'professional');
  const freeOnly = await user('usr_free_only');
  assert.equal(freeOnly.effective_role, 'member');
  assert.deepEqual(freeOnly.memberships,
    [{ customer: free.id, type: 'organization', role: 'owner', customer_role: 'member', plan: 'free' }]);

  // An own (free) individual customer plus a paying organization: the organization's role wins.
  const both = await createCustomer({ external_id: 'usr_both' });
  await addMember(paying.id, 'usr_both', 'member');
  const b = await user('usr_both');
  assert.equal(b.effective_role, 'professional');
  assert.deepEqual([...b.memberships].sort(byCustomer), [
    { customer: both.id, type: 'individual', role: 'owner', customer_role: 'member', plan: 'free' },
    { customer: paying.id, type: 'organization', role: 'member', customer_role: 'professional', plan: 'free' },
  ].sort(byCustomer));

  // A paying individual customer plus a free organization: the individual's role wins.
  const self = await createCustomer({ external_id: 'usr_self' });
  await setOverride(self.id, 'professional');
  await addMember(free.id, 'usr_self', 'member');
  const s = await user('usr_self');
  assert.equal(s.effective_role, 'professional');
  assert.deepEqual([...s.memberships].sort(byCustomer), [
    { customer: self.id, type: 'individual', role: 'owner', customer_role: 'professional', plan: 'free' },
    { customer: free.id, type: 'organization', role: 'member', customer_role: 'member', plan: 'free' },
  ].sort(byCustomer));

  // Only an individual customer: an owner membership of it.
  const alone = await createCustomer({ external_id: 'usr_alone' });
  assert.deepEqual((await user('usr_alone')).memberships,
    [{ customer: alone.id, type: 'individual', role: 'owner', customer_role: 'member', plan: 'free' }]);

  // The organization stops paying: its members fall back; a member with a paying customer of their own does not.
  const clearedOverride = await server.request('DELETE', `/v1/customers/${paying.id}/role_override`);
  assert.equal(clearedOverride.status, 200, clearedOverride.text);
  assert.equal((await user('usr_admin')).effective_role, 'member');
  assert.equal((await user('usr_both')).effective_role, 'member');
  assert.equal((await user('usr_self')).effective_role, 'professional');
  // Leaving the organization removes the membership.
  assert.equal((await server.request('DELETE', `/v1/customers/${free.id}/members/usr_self`)).status, 200);
  assert.deepEqual((await user('usr_self')).memberships.map((m) => m.customer), [self.id]);

  assertError(await server.get('/v1/users/usr_nobody_knows'), 404, 'resource_missing');

  // A read_only key reads users and customers, and writes no members.
  const made = await server.post('/v1/api_keys', { scope: 'read_only', name: 'org reader' });
  assert.equal(made.status, 201, made.text);
  const reader = made.json.secret;
  const asReader = await server.get('/v1/users/usr_admin', { key: reader });
  assert.equal(asReader.status, 200, asReader.text);
  assert.deepEqual(asReader.json, await user('usr_admin'));
  assert.equal((await server.get('/v1/customers?type=organization&limit=1', { key: reader })).status, 200);
  assert.equal((await server.get(`/v1/customers/${paying.id}/members`, { key: reader })).status, 200);
  assertError(await server.post(`/v1/customers/${paying.id}/members`, { user: 'usr_by_reader', role: 'member' }, { key: reader }),
    403, 'permission_denied');
  assertError(await server.post('/v1/customer_sessions', { customer: paying.id, user: 'usr_owner' }, { key: reader }),
    403, 'permission_denied');
  assertError(await server.get(`/v1/customers/${paying.id}/members/usr_by_reader`), 404, 'resource_missing');
});

test('customer sessions: scoped tokens whose rights follow the membership, and that see everything else as missing', async () => {
  const org = await createOrg('cs_org');
  await addMember(org.id, 'cs_owner', 'owner');
  await addMember(org.id, 'cs_admin', 'admin');
  await addMember(org.id, 'cs_member', 'member');
  const other = await createOrg('cs_other');
  await addMember(other.id, 'cs_other_owner', 'owner');
  const base = `/v1/customers/${org.id}/members`;

  // Creation.
  const made = await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_member' });
  assert.equal(made.status, 201, made.text);
  const session = made.json;
  assert.equal(session.object, 'customer_session');
  assert.match(session.id, /^csn_/);
  assert.equal(session.customer, org.id);
  assert.equal(session.user, 'cs_member');
  assert.match(session.token, /^tcs_/);
  assert.ok(Number.isInteger(session.created) && Math.abs(session.created - Date.now() / 1000) < 60, made.text);
  assert.equal(session.expires_at - session.created, 3600);
  assert.equal(session.revoked_at, null);
  const memberToken = session.token;
  for (const seconds of [60, 86400]) {
    const r = await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_member', expires_in: seconds });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.expires_at - r.json.created, seconds);
    assert.notEqual(r.json.token, memberToken);
  }
  for (const bad of [59, 0, -1, 86401, '3600', 1.5]) {
    assertError(await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_member', expires_in: bad }),
      400, 'parameter_invalid', 'expires_in');
  }
  assertError(await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_stranger' }), 400, 'user_not_member', 'user');
  assertError(await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_other_owner' }), 400, 'user_not_member', 'user');
  assertError(await server.post('/v1/customer_sessions', { customer: 'cust_does_not_exist', user: 'cs_member' }),
    404, 'resource_missing', 'customer');
  assertError(await server.post('/v1/customer_sessions', { customer: org.id }), 400, 'parameter_missing', 'user');
  assertError(await server.post('/v1/customer_sessions', { user: 'cs_member' }), 400, 'parameter_missing', 'customer');
  assertError(await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_member', scope: 'all' }),
    400, 'parameter_unknown', 'scope');
  // An individual customer: its user is its external_id.
  const person = await createCustomer({ external_id: 'cs_person' });
  const own = await server.post('/v1/customer_sessions', { customer: person.id, user: 'cs_person' });
  assert.equal(own.status, 201, own.text);
  assertError(await server.post('/v1/customer_sessions', { customer: person.id, user: 'cs_member' }), 400, 'user_not_member', 'user');
  const personSees = await server.get(`/v1/customers/${person.id}`, { key: own.json.token });
  assert.equal(personSees.status, 200, personSees.text);
  assert.equal(personSees.json.id, person.id);

  // What a member's token may read: its customer, its entitlements, its members.
  const asMember = { key: memberToken };
  const mine = await server.get(`/v1/customers/${org.id}`, asMember);
  assert.equal(mine.status, 200, mine.text);
  assert.equal(mine.json.id, org.id);
  assert.equal(mine.json.type, 'organization');
  const ent = await server.get(`/v1/customers/${org.id}/entitlements`, asMember);
  assert.equal(ent.status, 200, ent.text);
  const adminEnt = (await server.get(`/v1/customers/${org.id}/entitlements`)).json;
  assert.deepEqual(ent.json.limits, adminEnt.limits);
  assert.deepEqual(ent.json.features, adminEnt.features);
  const members = await server.get(base, asMember);
  assert.equal(members.status, 200, members.text);
  assert.deepEqual(members.json.data, (await server.get(base)).json.data);
  const one = await server.get(`${base}/cs_owner`, asMember);
  assert.equal(one.status, 200, one.text);
  assert.equal(one.json.role, 'owner');

  // A member writes nothing.
  assertError(await server.post(base, { user: 'cs_by_member', role: 'member' }, asMember), 403, 'permission_denied');
  assertError(await server.post(`${base}/cs_member`, { role: 'admin' }, asMember), 403, 'permission_denied');
  assertError(await server.request('DELETE', `${base}/cs_admin`, asMember), 403, 'permission_denied');
  assertError(await server.get(`${base}/cs_by_member`), 404, 'resource_missing');
  assert.equal((await server.get(`${base}/cs_member`)).json.role, 'member');
  assert.equal((await server.get(`${base}/cs_admin`)).status, 200);

  // Another customer looks exactly like one that does not exist (never 403).
  const missing = 'cust_doesnotexist0000';
  for (const suffix of ['', '/entitlements', '/members', '/members/cs_other_owner']) {
    const hidden = await server.get(`/v1/customers/${other.id}${suffix}`, asMember);
    const unknown = await server.get(`/v1/customers/${missing}${suffix}`);
    assert.equal(hidden.status, 404, `${suffix}: ${hidden.text}`);
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(hidden.json.error.type, unknown.json.error.type);
    assert.equal(hidden.json.error.code, unknown.json.error.code);
    assert.equal(hidden.json.error.param, unknown.json.error.param);
    assert.deepEqual(blank(hidden.json, other.id), blank(unknown.json, missing), suffix);
  }
  const hiddenWrite = await server.post(`/v1/customers/${other.id}/members`, { user: 'cs_intruder', role: 'owner' }, asMember);
  const unknownWrite = await server.post(`/v1/customers/${missing}/members`, { user: 'cs_intruder', role: 'owner' });
  assert.equal(hiddenWrite.status, 404, hiddenWrite.text);
  assert.deepEqual(blank(hiddenWrite.json, other.id), blank(unknownWrite.json, missing));
  assertError(await server.get(`/v1/customers/${other.id}/members/cs_intruder`), 404, 'resource_missing');

  // Admin-only routes look like routes that do not exist (or, for an id, like an unknown id).
  const routeRef = {};
  for (const method of ['GET', 'POST', 'DELETE']) {
    const r = await server.request(method, '/v1/zz_no_such_route', method === 'POST' ? { body: {} } : {});
    assertError(r, 404, 'route_not_found');
    routeRef[method] = blank(r.json, '/v1/zz_no_such_route');
  }
  const idRef = async (method, path, id, body) => {
    const r = await server.request(method, path, body ? { body } : {});
    assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
    return blank(r.json, id);
  };
  const assertHidden = async (method, path, { body, id, unknown } = {}) => {
    const r = await server.request(method, path, { key: memberToken, ...(body ? { body } : {}) });
    assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
    const candidates = [routeRef[method]];
    let got = [blank(r.json, path)];
    if (id) {
      candidates.push(await idRef(method, path.replace(id, unknown), unknown, body));
      got = [blank(r.json, path), blank(r.json, id)];
    }
    assert.ok(got.some((g) => candidates.some((c) => isDeepStrictEqual(g, c))),
      `${method} ${path} with a session: ${r.text} is like none of ${JSON.stringify(candidates)}`);
  };
  await assertHidden('GET', '/v1/api_keys');
  await assertHidden('GET', '/v1/audit');
  await assertHidden('GET', '/v1/events');
  await assertHidden('GET', '/v1/customers');
  await assertHidden('GET', '/v1/webhook_endpoints');
  await assertHidden('GET', '/v1/users/cs_nobody', { id: 'cs_nobody', unknown: 'cs_unknown_user' });
  await assertHidden('GET', '/v1/users/cs_member', { id: 'cs_member', unknown: 'cs_unknown_user' });
  await assertHidden('POST', '/v1/customer_sessions', { body: { customer: org.id, user: 'cs_owner' } });
  await assertHidden('DELETE', `/v1/customer_sessions/${session.id}`, { id: session.id, unknown: 'csn_doesnotexist0000' });
  await assertHidden('POST', `/v1/customers/${org.id}`, { body: { name: 'Renamed by a member' }, id: org.id, unknown: missing });
  await assertHidden('POST', `/v1/customers/${org.id}/role_override`, { body: { role: 'professional', reason: 'x' },
                                                                       id: org.id, unknown: missing });
  // Nothing the hidden writes asked for happened, and the session still works.
  const unchanged = (await server.get(`/v1/customers/${org.id}`)).json;
  assert.equal(unchanged.name, null);
  assert.equal(unchanged.role_override, null);
  assert.equal((await server.get(`/v1/customers/${org.id}`, asMember)).status, 200, 'the session was not revoked');

  // An admin's token manages members below owner, and no owner.
  const adminSession = await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_admin' });
  assert.equal(adminSession.status, 201, adminSession.text);
  const asAdmin = { key: adminSession.json.token };
  const added = await server.post(base, { user: 'cs_new_member', role: 'member' }, asAdmin);
  assert.equal(added.status, 201, added.text);
  assertMember(added.json, org.id, 'cs_new_member', 'member');
  const toAdmin = await server.post(`${base}/cs_new_member`, { role: 'admin' }, asAdmin);
  assert.equal(toAdmin.status, 200, toAdmin.text);
  assert.equal(toAdmin.json.role, 'admin');
  assertError(await server.post(base, { user: 'cs_new_owner', role: 'owner' }, asAdmin), 403, 'permission_denied');
  assertError(await server.post(`${base}/cs_new_member`, { role: 'owner' }, asAdmin), 403, 'permission_denied');
  assertError(await server.post(`${base}/cs_owner`, { role: 'member' }, asAdmin), 403, 'permission_denied');
  assertError(await server.request('DELETE', `${base}/cs_owner`, asAdmin), 403, 'permission_denied');
  assertError(await server.get(`${base}/cs_new_owner`), 404, 'resource_missing');
  assert.equal((await server.get(`${base}/cs_owner`)).json.role, 'owner');
  const gone = await server.request('DELETE', `${base}/cs_new_member`, asAdmin);
  assert.equal(gone.status, 200, gone.text);
  assert.equal(gone.json.deleted, true);

  // An owner's token may add an owner.
  const ownerSession = await server.post('/v1/customer_sessions', { customer: org.id, user: 'cs_owner' });
  assert.equal(ownerSession.status, 201, ownerSession.text);
  const asOwner = { key: ownerSession.json.token };
  const newOwner = await server.post(base, { user: 'cs_new_owner', role: 'owner' }, asOwner);
  assert.equal(newOwner.status, 201, newOwner.text);
  assertMember(newOwner.json, org.id, 'cs_new_owner', 'owner');
  assertError(await server.post(base, { user: 'cs_new_owner', role: 'owner' }, asOwner), 409, 'resource_already_exists');

  // Revocation: the token is refused at once; revoking again changes nothing; other sessions keep working.
  const revoked = await server.request('DELETE', `/v1/customer_sessions/${session.id}`);
  assert.equal(revoked.status, 200, revoked.text);
  assert.equal(revoked.json.object, 'customer_session');
  assert.equal(revoked.json.id, session.id);
  assert.ok(Number.isInteger(revoked.json.revoked_at) && revoked.json.revoked_at >= session.created, revoked.text);
  assert.equal(revoked.json.token, undefined);
  const twice = await server.request('DELETE', `/v1/customer_sessions/${session.id}`);
  assert.equal(twice.status, 200, twice.text);
  assert.equal(twice.json.revoked_at, revoked.json.revoked_at);
  assertError(await server.get(`/v1/customers/${org.id}`, asMember), 401, 'customer_session_revoked');
  assertError(await server.get(base, asMember), 401, 'customer_session_revoked');
  assert.equal((await server.get(`/v1/customers/${org.id}`, asOwner)).status, 200);
  assertError(await server.request('DELETE', '/v1/customer_sessions/csn_doesnotexist0000'), 404, 'resource_missing');
  assertError(await server.get(`/v1/customers/${org.id}`, { key: 'tcs_not_a_real_token_000000000000' }), 401, 'unauthorized');

  // An Idempotency-Key replay returns the same session, without its token.
  const headers = { 'idempotency-key': 'cs-idem-1' };
  const first = await server.request('POST', '/v1/customer_sessions', { body: { customer: org.id, user: 'cs_admin' }, headers });
  assert.equal(first.status, 201, first.text);
  assert.match(first.json.token, /^tcs_/);
  const replay = await server.request('POST', '/v1/customer_sessions', { body: { customer: org.id, user: 'cs_admin' }, headers });
  assert.equal(replay.status, 201, replay.text);
  assert.equal(replay.json.id, first.json.id);
  assert.equal('token' in replay.json, false, replay.text);
  assert.equal(replay.json.expires_at, first.json.expires_at);
  assert.ok(!replay.text.includes(first.json.token));
  assert.equal((await server.get(`/v1/customers/${org.id}`, { key: first.json.token })).status, 200);
});

test('member events: added, updated, removed, and a user role_changed when joining, leaving or paying', async () => {
  const rx = await startReceiver();
  const registered = await server.post('/v1/webhook_endpoints', { url: rx.url, enabled_events: ['*'], description: 'org e2e' });
  assert.equal(registered.status, 201, registered.text);
  const endpoint = registered.json;
  // The member event types are known to the endpoints API.
  const typed = await server.post('/v1/webhook_endpoints', { url: 'https://example.com/members',
    enabled_events: ['customer.member_added', 'customer.member_updated', 'customer.member_removed', 'customer.role_changed'] });
  assert.equal(typed.status, 201, typed.text);
  assert.equal((await server.request('DELETE', `/v1/webhook_endpoints/${typed.json.id}`)).status, 200);

  const find = (pred, what) => until(() => rx.events().find(pred), what);
  const userEvents = (user) => rx.events().filter((e) => e.type === 'customer.role_changed' && e.data.object.object === 'user'
                                                   && e.data.object.id === user);
  try {
    // A free organization: member events only.
    const org = await createOrg('ev_org');
    const added = await addMember(org.id, 'ev_owner', 'owner', { email: 'ev_owner@example.com' });
    await addMember(org.id, 'ev_m', 'member');
    const addedEvent = await find((e) => e.type === 'customer.member_added' && e.data.object.user === 'ev_owner', 'member_added');
    assert.equal(addedEvent.object, 'event');
    assert.match(addedEvent.id, /^evt_/);
    assert.equal(addedEvent.customer, org.id);
    assert.equal(addedEvent.data.object.object, 'member');
    assert.deepEqual(addedEvent.data.object, added);
    const updated = (await server.post(`/v1/customers/${org.id}/members/ev_m`, { role: 'admin' })).json;
    const updatedEvent = await find((e) => e.type === 'customer.member_updated' && e.data.object.user === 'ev_m', 'member_updated');
    assert.equal(updatedEvent.customer, org.id);
    assert.equal(updatedEvent.data.object.object, 'member');
    assert.equal(updatedEvent.data.object.role, 'admin');
    assert.equal(updatedEvent.data.object.customer, org.id);
    assert.deepEqual(updatedEvent.data.object, updated);
    assert.equal((await server.request('DELETE', `/v1/customers/${org.id}/members/ev_m`)).status, 200);
    const removedEvent = await find((e) => e.type === 'customer.member_removed' && e.data.object.user === 'ev_m', 'member_removed');
    assert.equal(removedEvent.customer, org.id);
    assert.equal(removedEvent.data.object.object, 'member');
    assert.equal(removedEvent.data.object.customer, org.id);
    assert.equal(removedEvent.data.object.role, 'admin');
    // The events API lists them under the organization.
    const listed = await server.get(`/v1/events?customer=${org.id}&type=customer.member_added`);
    assert.equal(listed.status, 200, listed.text);
    assert.ok(listed.json.data.some((e) => e.id === addedEvent.id), listed.text);
    // Joining and leaving a free organization changes no one's effective role: no user event.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(userEvents('ev_m'), []);
    assert.deepEqual(userEvents('ev_owner'), []);

    // Joining an organization whose role override is higher: the user's effective role changes.
    const paying = await createOrg('ev_paying');
    await addMember(paying.id, 'ev_pay_owner', 'owner');
    await setOverride(paying.id, 'professional');
    await find((e) => e.type === 'customer.role_changed' && e.data.object.object === 'customer' && e.data.object.id === paying.id,
      "the organization's own role_changed");
    await addMember(paying.id, 'ev_joiner', 'member');
    await find((e) => e.type === 'customer.member_added' && e.data.object.user === 'ev_joiner', 'member_added of the joiner');
    const joined = await until(() => userEvents('ev_joiner')[0], 'role_changed of the joiner');
    assert.equal(joined.data.object.object, 'user');
    assert.equal(joined.data.object.effective_role, 'professional');
    assert.deepEqual(joined.data.previous_attributes, { effective_role: 'member' });
    assert.deepEqual(joined.data.object, (await server.get('/v1/users/ev_joiner')).json);
    // The owner who was there when the organization started paying was told too.
    const owner = await until(() => userEvents('ev_pay_owner')[0], 'role_changed of the owner when the organization paid');
    assert.equal(owner.data.object.effective_role, 'professional');
    assert.deepEqual(owner.data.previous_attributes, { effective_role: 'member' });

    // Leaving it: back to the default role.
    assert.equal((await server.request('DELETE', `/v1/customers/${paying.id}/members/ev_joiner`)).status, 200);
    const left = await until(() => userEvents('ev_joiner').find((e) => e.data.previous_attributes?.effective_role === 'professional'),
      'role_changed of the leaver');
    assert.equal(left.data.object.object, 'user');
    assert.equal(left.data.object.effective_role, 'member');
    // Exactly one change each way, in order.
    assert.deepEqual(userEvents('ev_joiner').map((e) => e.data.object.effective_role), ['professional', 'member']);

    // A member whose own customer already pays gains nothing by joining: no user event for the joining (whether the
    // individual customer's own override was told as one is not this contract's business: at most that one,
    // member -> professional).
    const rich = await createCustomer({ external_id: 'ev_rich' });
    await setOverride(rich.id, 'professional');
    await addMember(paying.id, 'ev_rich', 'member');
    await find((e) => e.type === 'customer.member_added' && e.data.object.user === 'ev_rich', 'member_added of ev_rich');
    await new Promise((r) => setTimeout(r, 500));
    const richEvents = userEvents('ev_rich');
    assert.ok(richEvents.length <= 1, JSON.stringify(richEvents));
    for (const e of richEvents) {
      assert.deepEqual([e.data.previous_attributes.effective_role, e.data.object.effective_role], ['member', 'professional']);
    }
  } finally {
    await server.request('DELETE', `/v1/webhook_endpoints/${endpoint.id}`);
    await rx.close();
  }
});
