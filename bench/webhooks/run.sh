#!/usr/bin/env bash
# Webhook ingestion benchmark: verified, durably stored events per second over HTTP, tally vs the seed-style
# baseline (express + stripe-node constructEvent + better-sqlite3, synchronous=FULL, one transaction per event),
# measured in the same run on the same machine with the same pre-signed events and load generator (wrk).
# Then each at half its peak rate, for latency, and right after Tally's half-rate phase the disk's own floor at the
# same rate (disk_floor.cpp: an ideal group-commit writer with no CPU cost), so a p99 can be read against what this
# disk allowed at that moment. Usage: bench/webhooks/run.sh   (env: DURATION=8 CONNECTIONS=64)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${DURATION:-8}
connections=${CONNECTIONS:-64}
secret=whsec_bench_secret
out=$(mktemp -d /tmp/tally-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out" "${requests_dir:-}"' EXIT

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
[ -d "$here/node_modules/better-sqlite3" ] || (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
bin="$root/build/release/tally"
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }
g++ -O2 -std=c++20 -o "$out/disk_floor" "$here/disk_floor.cpp"

# shellcheck source=load.sh
. "$here/load.sh"
field() { sed -E "s/.*$2=([0-9]+).*/\1/" <<<"$1"; }

# Each phase gets a fresh directory and nothing is deleted until the end: on a filesystem mounted with
# `discard`, deleting the previous phase's large files stalls the next phase's fsyncs.
fresh_dir() { sync; sleep 2; mktemp -d "$out/phase.XXXXXX"; }
start_tally() {
  dir=$(fresh_dir)
  STRIPE_WEBHOOK_SECRET=$secret TALLY_DB="$dir/tally.db" TALLY_PORT=9191 TALLY_CATALOG="$root/config/pricing.json" \
    "$bin" serve >"$out/tally.out" 2>"$out/tally.err" &
  echo $! >"$out/tally.pid"; wait_port 9191
}
start_baseline() {
  dir=$(fresh_dir)
  STRIPE_WEBHOOK_SECRET=$secret DB="$dir/baseline.db" PORT=9090 node "$here/baseline.mjs" >"$out/baseline.out" 2>&1 &
  echo $! >"$out/baseline.pid"; wait_port 9090
}
stop() { kill "$(cat "$out/$1.pid")"; wait "$(cat "$out/$1.pid")" 2>/dev/null || true; }
stored() { sqlite3 "$1" "SELECT COUNT(*) FROM webhook_events"; }

echo "== peak (closed loop, $connections connections, ${duration}s each)"
start_baseline
b=$(run_load 9090 0 $((duration * 6000)))
b_stored=$(stored "$dir/baseline.db"); stop baseline
b_rate=$(( b_stored * 1000000 / $(field "$b" duration_us) ))
echo "baseline: stored=$b_stored rate=${b_rate}/s p50=$(field "$b" p50_us)us p99=$(field "$b" p99_us)us non2xx=$(field "$b" non2xx)"

start_tally
t=$(run_load 9191 0 $((duration * 40000)))
t_stored=$(stored "$dir/tally.db"); stop tally
t_rate=$(( t_stored * 1000000 / $(field "$t" duration_us) ))
echo "tally:    stored=$t_stored rate=${t_rate}/s p50=$(field "$t" p50_us)us p99=$(field "$t" p99_us)us non2xx=$(field "$t" non2xx)"
ratio_x100=$(( t_rate * 100 / (b_rate > 0 ? b_rate : 1) ))
echo "ratio tally/baseline: $((ratio_x100 / 100)).$(printf '%02d' $((ratio_x100 % 100)))x"

# Half the peak: each connection waits so that connections*1000/delay ~= rate/2.
half_delay() { local d=$(( $1 * 1000 * 2 / ($2 > 0 ? $2 : 1) )); echo $(( d > 0 ? d : 1 )); }
echo "== half of each one's peak rate (paced with wrk's delay())"
start_baseline
bh=$(run_load 9090 "$(half_delay "$connections" "$b_rate")" $((duration * 4000)))
stop baseline
echo "baseline @~$((b_rate / 2))/s: achieved=$(( $(field "$bh" requests) * 1000000 / $(field "$bh" duration_us) ))/s p50=$(field "$bh" p50_us)us p99=$(field "$bh" p99_us)us"
start_tally
th=$(run_load 9191 "$(half_delay "$connections" "$t_rate")" $((duration * 20000)))
stop tally
grep -h '"msg":"slow' "$out/tally.err" | sed 's/^/  tally log: /' | tail -5 || true
th_rate=$(( $(field "$th" requests) * 1000000 / $(field "$th" duration_us) ))
echo "tally    @~$((t_rate / 2))/s: achieved=${th_rate}/s p50=$(field "$th" p50_us)us p99=$(field "$th" p99_us)us"
# The floor writes as many bytes per request as Tally's database holds per event after the half-rate phase.
per_event=$(( $(stat -c %s "$dir/tally.db") / $(stored "$dir/tally.db") ))
f=$("$out/disk_floor" "$dir" "$th_rate" "$duration" "$per_event")
echo "disk floor @${th_rate}/s: p50=$(field "$f" p50_us)us p99=$(field "$f" p99_us)us max=$(field "$f" max_us)us (ideal group commit of ${per_event} B/event, no CPU cost)"
cat "$out/gen.log" | tail -1
