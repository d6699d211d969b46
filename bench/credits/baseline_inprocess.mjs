// The in-process baseline for bench/credits: the seed-style ledger (ledger.mjs: one better-sqlite3 transaction per
// deduction, synchronous=FULL, so each returns after its fsync) called in a loop, without HTTP, for DURATION
// seconds over CUSTOMERS customers each granted 10^12 bundle credits. Prints
// `RESULT counted=<deductions> elapsed_us=<µs> spent=<credits gone from the balances>`.
// env: DB (path), DURATION (s, 6), CUSTOMERS (100).
import { openLedger } from './ledger.mjs';

const ledger = openLedger(process.env.DB ?? 'baseline_inprocess.db');
const duration = Number(process.env.DURATION ?? 6);
const now = () => Math.floor(Date.now() / 1000);
const customers = Array.from({ length: Number(process.env.CUSTOMERS ?? 100) }, (_, i) => {
  const id = ledger.createCustomer(`bench_${i}`, now());
  ledger.grant(id, 1e12, 'bundle', now());
  return id;
});
const start = process.hrtime.bigint();
const stop = start + BigInt(duration) * 1_000_000_000n;
let counted = 0;
while (process.hrtime.bigint() < stop) {
  const out = ledger.deduct(customers[counted % customers.length], 1, `t_${counted}`, now());
  if (out.balance === undefined) throw new Error(`deduction refused: ${JSON.stringify(out)}`);
  counted += 1;
}
const elapsed = Number((process.hrtime.bigint() - start) / 1000n);
const spent = customers.reduce((a, c) => a + (1e12 - ledger.balance(c, now())), 0);
console.log(`RESULT counted=${counted} elapsed_us=${elapsed} spent=${spent}`);
