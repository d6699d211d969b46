// Setup and verification over the HTTP API, the same for Tally and the baseline.
//   node client.mjs setup <base url> <customers> <ids file>  creates the customers (external_id credits_<i>), grants each
//                                                            10^12 bundle credits, writes their ids one a line
//   node client.mjs spent <base url> <ids file>              prints the credits spent over the customers
//                                                            (10^12 less GET /v1/customers/{id}/credits's total)
// env: TALLY_ADMIN_KEY (Bearer key)
import { readFileSync, writeFileSync } from 'node:fs';

const [cmd, base, ...rest] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${process.env.TALLY_ADMIN_KEY}`, 'Content-Type': 'application/json' };
const granted = 10 ** 12; // far above anything a run spends, under 2^53

async function call(method, path, body) {
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${path} -> ${res.status}: ${text}`);
  return JSON.parse(text);
}

if (cmd === 'setup') {
  const [n, file] = rest;
  const ids = [];
  for (let i = 0; i < Number(n); ++i) {
    const c = await call('POST', '/v1/customers', { external_id: `credits_${i}` });
    await call('POST', '/v1/credits/grants', { customer: c.id, id: `bench-grant-${c.id}`, amount: granted, type: 'bundle' });
    ids.push(c.id);
  }
  writeFileSync(file, ids.join('\n') + '\n');
  const sample = await call('POST', '/v1/credits/deduct', { customer: ids[0], id: `bench-sample-${ids[0]}`, amount: 1 });
  console.log(JSON.stringify(sample.balance));
} else if (cmd === 'spent') {
  const [file] = rest;
  let spent = 0;
  for (const id of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    spent += granted - (await call('GET', `/v1/customers/${id}/credits`)).total;
  }
  console.log(spent - 1); // less setup's sample deduction
} else {
  console.error('usage: client.mjs setup <base> <customers> <ids file> | spent <base> <ids file>');
  process.exit(2);
}
