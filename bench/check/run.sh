#!/usr/bin/env bash
# Usage-limit benchmark (issue 12): over HTTP keep-alive with wrk, Tally against an express baseline
# (bench/check/baseline.mjs) measured in the same run on the same machine with the same load:
#   (a) read-only checks, POST /v1/check {customer, meter, amount: 1} spread over the customers: peak (closed loop),
#       then each server paced at half its own peak, for p50/p99. Baseline: in-memory Maps.
#   (b) record: true checks (durable before the reply): peak; afterwards the recorded count (sum of `current` over
#       GET /v1/customers/{id}/usage) must equal the 2xx "allowed":true responses. Baseline: one better-sqlite3
#       transaction per check (WAL, synchronous=FULL).
#   (c) POST /v1/usage/batch with the maximum batch (1,000 events, each with its own idempotency_key, built by the
#       wrk script with a counter): events/s acknowledged, checked against the rows added to usage_events.
#       Baseline: one better-sqlite3 transaction per event of the batch.
# Goals: (a) >= 50,000 checks/s, p99 < 2 ms at half that rate, >= 8x the baseline; (b) >= 20,000 recorded checks/s;
# (c) >= 200,000 events/s.
# Usage: bench/check/run.sh
#   env: TALLY_BIN (build/release/tally) DURATION=6 (s per phase) CONNECTIONS=64 BATCH_CONNECTIONS=8 CUSTOMERS=100
#        WRK_THREADS=1 GRACE=3 (s after a windowed phase's last request for the answers in flight) KEEP=1 (keep the temp dir)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${DURATION:-6}
connections=${CONNECTIONS:-64}
batch_connections=${BATCH_CONNECTIONS:-8}
customers=${CUSTOMERS:-100}
threads=${WRK_THREADS:-1}
grace=${GRACE:-3}
batch_size=1000 # kUsageBatchEventsMax (src/adapters/http/api.hpp)
bin=${TALLY_BIN:-$root/build/release/tally}
tport=9193
bport=9093
export TALLY_ADMIN_KEY=bench_check_admin_key_0123456789abcdef01234567
out=$(mktemp -d /tmp/tally-bench-check.XXXXXX)
cleanup() {
  for p in tally baseline; do
    [ -f "$out/$p.pid" ] || continue
    kill "$(cat "$out/$p.pid")" 2>/dev/null || true
    wait "$(cat "$out/$p.pid")" 2>/dev/null || true
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $out" >&2; else rm -rf "$out"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$bin" ] || { echo "no tally binary at $bin: make build (or set TALLY_BIN)" >&2; exit 1; }
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
command -v sqlite3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null
[ -f "$here/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ] ||
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# field, per_s, ratio, ms, goal, wait_port
source "$root/bench/lib.sh"

mkdir -p "$out/tally" "$out/baseline"
tdb="$out/tally/tally.db"
bdb="$out/baseline/baseline.db"
TALLY_DB="$tdb" TALLY_PORT=$tport TALLY_CATALOG="$root/config/pricing.json" "$bin" serve \
  >"$out/tally.out" 2>"$out/tally.err" &
echo $! >"$out/tally.pid"
DB="$bdb" PORT=$bport CATALOG="$root/config/pricing.json" node "$here/baseline.mjs" >"$out/baseline.out" 2>&1 &
echo $! >"$out/baseline.pid"
wait_port $tport || { tail -20 "$out/tally.err" >&2; exit 1; }
wait_port $bport || { cat "$out/baseline.out" >&2; exit 1; }

# load <port> <ids file> <mode> <meter> <rate/s, 0 = closed loop> <window ms, 0 = none> <connections> -> wrk's RESULT line
load() {
  local d=$duration timeout=10s
  [ "$6" -gt 0 ] && d=$(( (${6} + 999) / 1000 + grace ))
  [ "$3" = batch ] && timeout=60s
  BENCH_MODE=$3 BENCH_METER=$4 BENCH_RATE=$5 BENCH_WINDOW_MS=$6 BENCH_CUSTOMERS=$2 BENCH_KEY=$TALLY_ADMIN_KEY \
    BENCH_THREADS=$threads BENCH_BATCH=$batch_size BENCH_RUN="r$$-$1" \
    wrk -t"$threads" -c"$7" -d"${d}s" --timeout "$timeout" -s "$here/load.lua" "http://127.0.0.1:$1" >"$out/wrk.txt" 2>&1 || true
  grep '^RESULT' "$out/wrk.txt" || { echo "wrk failed:" >&2; cat "$out/wrk.txt" >&2; return 1; }
}
line() { # <name> <RESULT line> <rate>
  echo "$1 $3/s p50=$(ms "$(field "$2" p50_us)") p99=$(ms "$(field "$2" p99_us)") non2xx=$(field "$2" non2xx) errors=$(field "$2" errors)"
}

echo "== setup: $customers customers on each server, each with a limit override of 10^15 on every meter (reason \"bench\")"
echo "$(grep -o 'tally [0-9][^ ]* listening' "$out/tally.err" | head -1 | sed 's/ listening//') ($bin); $(nproc) cores; wrk -t$threads"
t_sample=$(node "$here/client.mjs" setup "http://127.0.0.1:$tport" "$customers" "$out/tally.ids")
b_sample=$(node "$here/client.mjs" setup "http://127.0.0.1:$bport" "$customers" "$out/baseline.ids")
echo "tally    check: $t_sample"
echo "baseline check: $b_sample"

echo "== (a) read-only checks, POST /v1/check {customer, meter: build_hours, amount: 1}: peak (closed loop, $connections connections, ${duration}s)"
t=$(load $tport "$out/tally.ids" check build_hours 0 0 "$connections")
a_t=$(per_s "$(field "$t" requests)" "$(field "$t" duration_us)")
line "tally:   " "$t" "$a_t"
b=$(load $bport "$out/baseline.ids" check build_hours 0 0 "$connections")
a_b=$(per_s "$(field "$b" requests)" "$(field "$b" duration_us)")
line "baseline:" "$b" "$a_b"
echo "tally/baseline: $(ratio "$a_t" "$a_b")"

echo "== (a) paced at half of each one's own peak (${duration}s)"
th=$(load $tport "$out/tally.ids" check build_hours $((a_t / 2)) 0 "$connections")
ah_t=$(per_s "$(field "$th" requests)" "$(field "$th" duration_us)")
line "tally    @$((a_t / 2))/s: achieved" "$th" "$ah_t"
bh=$(load $bport "$out/baseline.ids" check build_hours $((a_b / 2)) 0 "$connections")
ah_b=$(per_s "$(field "$bh" requests)" "$(field "$bh" duration_us)")
line "baseline @$((a_b / 2))/s: achieved" "$bh" "$ah_b"

echo "== (b) record: true checks on build_hours, durable before the reply: peak (closed loop, $connections connections, ${duration}s)"
sync
window=$((duration * 1000))
t=$(load $tport "$out/tally.ids" record build_hours 0 $window "$connections")
b_t=$(per_s "$(field "$t" counted)" "$(field "$t" elapsed_us)")
line "tally:   " "$t" "$b_t"
t_sum=$(node "$here/client.mjs" sum "http://127.0.0.1:$tport" "$out/tally.ids" build_hours)
t_ok=$([ "$t_sum" = "$(field "$t" counted)" ] && echo "equal" || echo "MISMATCH")
echo "          2xx allowed responses=$(field "$t" counted) recorded (sum of current)=$t_sum: $t_ok (requests sent=$(field "$t" sent), answered=$(field "$t" requests))"
sync
b=$(load $bport "$out/baseline.ids" record build_hours 0 $window "$connections")
b_b=$(per_s "$(field "$b" counted)" "$(field "$b" elapsed_us)")
line "baseline:" "$b" "$b_b"
b_sum=$(node "$here/client.mjs" sum "http://127.0.0.1:$bport" "$out/baseline.ids" build_hours)
b_ok=$([ "$b_sum" = "$(field "$b" counted)" ] && echo "equal" || echo "MISMATCH")
echo "          2xx allowed responses=$(field "$b" counted) recorded (sum of current)=$b_sum: $b_ok (requests sent=$(field "$b" sent), answered=$(field "$b" requests))"
echo "tally/baseline: $(ratio "$b_t" "$b_b")"

echo "== (c) POST /v1/usage/batch, $batch_size events (storage_gb +1, unique idempotency_key) per request: peak (closed loop, $batch_connections connections, ${duration}s)"
rows() { sqlite3 "$1" "SELECT COUNT(*) FROM usage_events"; }
sync
t_before=$(rows "$tdb")
t=$(load $tport "$out/tally.ids" batch storage_gb 0 $window "$batch_connections")
c_t=$(per_s "$(field "$t" counted)" "$(field "$t" elapsed_us)")
t_rows=$(( $(rows "$tdb") - t_before ))
line "tally:    events" "$t" "$c_t"
t_ok=$([ "$t_rows" = "$(field "$t" counted)" ] && echo "equal" || echo "MISMATCH")
echo "          events acknowledged=$(field "$t" counted) rows added to usage_events=$t_rows: $t_ok (batches sent=$(field "$t" sent), answered=$(field "$t" requests))"
sync
b_before=$(rows "$bdb")
b=$(load $bport "$out/baseline.ids" batch storage_gb 0 $window "$batch_connections")
c_b=$(per_s "$(field "$b" counted)" "$(field "$b" elapsed_us)")
# Batches the baseline had not answered when wrk stopped go on committing event by event: stop it before counting.
kill "$(cat "$out/baseline.pid")" 2>/dev/null || true; wait "$(cat "$out/baseline.pid")" 2>/dev/null || true; rm -f "$out/baseline.pid"
b_rows=$(( $(rows "$bdb") - b_before ))
line "baseline: events" "$b" "$c_b"
echo "          events acknowledged=$(field "$b" counted) rows added to usage_events=$b_rows (batches sent=$(field "$b" sent), answered=$(field "$b" requests); rows past the acknowledged ones are from unanswered batches)"
echo "tally/baseline: $(ratio "$c_t" "$c_b")"

grep -hE '"level":"(warning|error)"' "$out/tally.err" | grep -v 'Stripe is not configured' | cut -c1-240 |
  sed 's/^/  tally log: /' | tail -5 || true
p99_half=$(field "$th" p99_us)
echo "== goals (issue 12)"
echo "(a) checks:   tally $a_t/s (goal >= 50000: $(goal $((a_t >= 50000)))), p99 $(ms "$p99_half") at $ah_t/s (goal < 2 ms at half: $(goal $((p99_half < 2000)))), tally/baseline: $(ratio "$a_t" "$a_b") (goal >= 8x: $(goal $((a_t >= 8 * a_b))))"
echo "(b) recorded: tally $b_t/s (goal >= 20000: $(goal $((b_t >= 20000)))), baseline $b_b/s, tally/baseline: $(ratio "$b_t" "$b_b")"
echo "(c) batch:    tally $c_t events/s (goal >= 200000: $(goal $((c_t >= 200000)))), baseline $c_b events/s, tally/baseline: $(ratio "$c_t" "$c_b")"
