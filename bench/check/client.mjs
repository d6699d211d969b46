// Setup and verification over the HTTP API, the same for Tally and the baseline.
//   node client.mjs setup  <base url> <customers> <ids file>   creates the customers (external_id bench_<i>) and gives each a
//                                                              limit override of 10^15 on every meter (reason "bench"),
//                                                              writes their ids one a line, prints one sample check
//   node client.mjs sum    <base url> <ids file> <meter>       prints the sum of `current` of that meter over the customers
//                                                              (GET /v1/customers/{id}/usage)
// env: TALLY_ADMIN_KEY (Bearer key)
import { readFileSync, writeFileSync } from 'node:fs';

const [cmd, base, ...rest] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${process.env.TALLY_ADMIN_KEY}`, 'Content-Type': 'application/json' };
const hugeLimit = 10 ** 15; // under 2^53, far above anything a run records
const meters = ['projects', 'build_hours', 'storage_gb'];

async function call(method, path, body, expect = [200, 201]) {
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!expect.includes(res.status)) throw new Error(`${method} ${path} -> ${res.status}: ${text}`);
  return JSON.parse(text);
}
// Runs fn over items with a few requests in flight.
async function pool(items, width, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) { const i = next++; out[i] = await fn(items[i], i); }
  }));
  return out;
}

if (cmd === 'setup') {
  const [n, file] = rest;
  const ids = await pool(Array.from({ length: Number(n) }, (_, i) => i), 8, async (i) => {
    const c = await call('POST', '/v1/customers', { external_id: `bench_${i}` });
    for (const meter of meters) {
      await call('POST', `/v1/customers/${c.id}/limit_overrides`, { meter, limit: hugeLimit, reason: 'bench' });
    }
    return c.id;
  });
  writeFileSync(file, ids.join('\n') + '\n');
  const sample = await call('POST', '/v1/check', { customer: ids[0], meter: 'build_hours', amount: 1 });
  const { allowed, reason, current, limit, remaining } = sample;
  console.log(JSON.stringify({ allowed, reason, current, limit, remaining }));
} else if (cmd === 'sum') {
  const [file, meter] = rest;
  const ids = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  const values = await pool(ids, 8, async (id) => {
    const u = await call('GET', `/v1/customers/${id}/usage`, undefined, [200]);
    const m = u.meters.find((x) => x.meter === meter);
    if (!m) throw new Error(`no meter ${meter} in ${JSON.stringify(u)}`);
    return m.current;
  });
  console.log(values.reduce((a, b) => a + b, 0));
} else {
  console.error('usage: node client.mjs setup <base> <customers> <ids file> | sum <base> <ids file> <meter>');
  process.exit(2);
}
