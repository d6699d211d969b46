// Joins the receiver's answers with the events' commit times (app_events.created_ms, stamped inside the committing
// transaction, so slightly before the commit: the latency is over-, never under-stated).
// Usage: node report.mjs <received.txt: "<event id> <unix s.ms>" lines, nginx's $msec> <created.txt: "<event id> <created_ms>" lines>
// Lines of requests that were not deliveries (the script's own readiness probes) are left out.
// Prints: "deliveries=N distinct=N rate_per_s=N p50_ms=N p99_ms=N max_ms=N span_ms=N"
import { readFileSync } from 'node:fs';

const lines = (path) => readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' '));
const created = new Map(lines(process.argv[3]).map(([id, ms]) => [id, Number(ms)]));
const received = lines(process.argv[2]).map(([id, s]) => [id, Number(s) * 1000]);
const latencies = [];
const seen = new Set();
let first = Infinity;
let last = -Infinity;
for (const [id, at] of received) {
  const c = created.get(id);
  if (c === undefined) continue;
  seen.add(id);
  latencies.push(at - c);
  first = Math.min(first, at);
  last = Math.max(last, at);
}
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] : 0);
const span = last > first ? last - first : 0;
console.log(`deliveries=${latencies.length} distinct=${seen.size} rate_per_s=${span ? Math.round((latencies.length * 1000) / span) : 0}` +
            ` p50_ms=${pct(50).toFixed(1)} p99_ms=${pct(99).toFixed(1)} max_ms=${(latencies.at(-1) ?? 0).toFixed(1)}` +
            ` span_ms=${Math.round(span)}`);
