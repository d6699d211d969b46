#!/usr/bin/env bash
# Credit deduction benchmark (issue 13): durable deductions over HTTP keep-alive with wrk, Tally against the baseline
# seed 003 sketches (bench/credits/baseline.mjs: express, one better-sqlite3 transaction per deduction, WAL and
# synchronous=FULL), measured in the same run on the same machine with the same load:
#   peak: POST /v1/credits/deduct {customer, amount: 1, id} (a new transfer id each) spread over the customers, closed
#         loop; afterwards the credits spent (10^12 less each balance) must equal the 2xx answers;
#   then each server paced at half its own peak, for p50/p99.
#   in-process: build/release/credits_bench (bench/credits/inprocess.cpp: CreditService::Deduct in group commits,
#         --concurrency in flight) against baseline_inprocess.mjs (the same ledger.mjs in a loop, no HTTP).
# Goals (HTTP): >= 30,000 deductions/s, p99 < 10 ms at half that rate, >= 10x the baseline; in-process >= 100,000/s.
# Usage: bench/credits/run.sh
#   env: TALLY_BIN (build/release/tally) DURATION=6 (s per phase) CONNECTIONS=64 CUSTOMERS=100 WRK_THREADS=1
#        IN_FLIGHT=512 (deductions the in-process driver keeps in flight; a group commit takes at most 512)
#        GRACE=3 (s after a windowed phase's last request for the answers in flight) KEEP=1 (keep the temp dir)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
check="$root/bench/check"
duration=${DURATION:-6}
connections=${CONNECTIONS:-64}
in_flight=${IN_FLIGHT:-512}
customers=${CUSTOMERS:-100}
threads=${WRK_THREADS:-1}
grace=${GRACE:-3}
bin=${TALLY_BIN:-$root/build/release/tally}
tport=9194
bport=9094
export TALLY_ADMIN_KEY=bench_credits_admin_key_0123456789abcdef0123
out=$(mktemp -d /tmp/tally-bench-credits.XXXXXX)
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
[ -f "$check/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ] ||
  (cd "$check" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# field, per_s, ratio, ms, goal, wait_port
source "$root/bench/lib.sh"

mkdir -p "$out/tally" "$out/baseline"
TALLY_DB="$out/tally/tally.db" TALLY_PORT=$tport TALLY_CATALOG="$root/config/pricing.json" "$bin" serve \
  >"$out/tally.out" 2>"$out/tally.err" &
echo $! >"$out/tally.pid"
DB="$out/baseline/baseline.db" PORT=$bport node "$here/baseline.mjs" >"$out/baseline.out" 2>&1 &
echo $! >"$out/baseline.pid"
wait_port $tport || { tail -20 "$out/tally.err" >&2; exit 1; }
wait_port $bport || { cat "$out/baseline.out" >&2; exit 1; }

# load <port> <ids file> <rate/s, 0 = closed loop> <window ms, 0 = none> -> wrk's RESULT line
load() {
  local d=$duration
  [ "$4" -gt 0 ] && d=$(( (${4} + 999) / 1000 + grace ))
  BENCH_MODE=deduct BENCH_RATE=$3 BENCH_WINDOW_MS=$4 BENCH_CUSTOMERS=$2 BENCH_KEY=$TALLY_ADMIN_KEY \
    BENCH_THREADS=$threads BENCH_RUN="r$$-$1-$3" \
    wrk -t"$threads" -c"$connections" -d"${d}s" --timeout 10s -s "$check/load.lua" "http://127.0.0.1:$1" >"$out/wrk.txt" 2>&1 || true
  grep '^RESULT' "$out/wrk.txt" || { echo "wrk failed:" >&2; cat "$out/wrk.txt" >&2; return 1; }
}
line() { # <name> <RESULT line> <rate>
  echo "$1 $3/s p50=$(ms "$(field "$2" p50_us)") p99=$(ms "$(field "$2" p99_us)") non2xx=$(field "$2" non2xx) errors=$(field "$2" errors)"
}

echo "== setup: $customers customers on each server, each granted 10^12 bundle credits"
echo "$(grep -o 'tally [0-9][^ ]* listening' "$out/tally.err" | head -1 | sed 's/ listening//') ($bin); $(nproc) cores; wrk -t$threads -c$connections"
echo "tally    sample: $(node "$here/client.mjs" setup "http://127.0.0.1:$tport" "$customers" "$out/tally.ids")"
echo "baseline sample: $(node "$here/client.mjs" setup "http://127.0.0.1:$bport" "$customers" "$out/baseline.ids")"

echo "== peak: POST /v1/credits/deduct {customer, amount: 1, id}, durable before the reply (closed loop, ${duration}s)"
window=$((duration * 1000))
peak() { # <name> <port> <ids> -> sets rate
  sync
  local r; r=$(load "$2" "$3" 0 $window)
  rate=$(per_s "$(field "$r" counted)" "$(field "$r" elapsed_us)")
  line "$1" "$r" "$rate"
  local spent; spent=$(node "$here/client.mjs" spent "http://127.0.0.1:$2" "$3")
  echo "          2xx answers=$(field "$r" counted) credits spent=$spent: $([ "$spent" = "$(field "$r" counted)" ] && echo equal || echo MISMATCH) (sent=$(field "$r" sent), answered=$(field "$r" requests))"
}
peak "tally:   " $tport "$out/tally.ids"; p_t=$rate
peak "baseline:" $bport "$out/baseline.ids"; p_b=$rate
echo "tally/baseline: $(ratio "$p_t" "$p_b")"

echo "== paced at half of each one's own peak (${duration}s)"
th=$(load $tport "$out/tally.ids" $((p_t / 2)) 0)
line "tally    @$((p_t / 2))/s: achieved" "$th" "$(per_s "$(field "$th" requests)" "$(field "$th" duration_us)")"
bh=$(load $bport "$out/baseline.ids" $((p_b / 2)) 0)
line "baseline @$((p_b / 2))/s: achieved" "$bh" "$(per_s "$(field "$bh" requests)" "$(field "$bh" duration_us)")"

echo "== in-process: the same deductions without HTTP (${duration}s; tally: $in_flight in flight, group commit; baseline: one loop)"
inproc="$(dirname "$bin")/credits_bench"
[ -x "$inproc" ] || { echo "no $inproc: make build" >&2; exit 1; }
sync
ti=$("$inproc" --db "$out/inprocess.db" --seconds "$duration" --concurrency "$in_flight" --customers "$customers" | grep '^RESULT')
p_ti=$(per_s "$(field "$ti" counted)" "$(field "$ti" elapsed_us)")
echo "tally:    $p_ti/s p50=$(ms "$(field "$ti" p50_us)") p99=$(ms "$(field "$ti" p99_us)") durable=$(field "$ti" counted) spent=$(field "$ti" spent): $([ "$(field "$ti" spent)" = "$(field "$ti" counted)" ] && echo equal || echo MISMATCH)"
sync
bi=$(DB="$out/baseline_inprocess.db" DURATION="$duration" CUSTOMERS="$customers" node "$here/baseline_inprocess.mjs" | grep '^RESULT')
p_bi=$(per_s "$(field "$bi" counted)" "$(field "$bi" elapsed_us)")
echo "baseline: $p_bi/s durable=$(field "$bi" counted) spent=$(field "$bi" spent): $([ "$(field "$bi" spent)" = "$(field "$bi" counted)" ] && echo equal || echo MISMATCH)"
echo "tally/baseline: $(ratio "$p_ti" "$p_bi")"

grep -hE '"level":"(warning|error)"' "$out/tally.err" | grep -v 'Stripe is not configured' | cut -c1-240 |
  sed 's/^/  tally log: /' | tail -5 || true
p99_half=$(field "$th" p99_us)
echo "== goals (issue 13, HTTP)"
echo "deductions: tally $p_t/s (goal >= 30000: $(goal $((p_t >= 30000)))), p99 $(ms "$p99_half") at half (goal < 10 ms: $(goal $((p99_half < 10000)))), tally/baseline: $(ratio "$p_t" "$p_b") (goal >= 10x: $(goal $((p_t >= 10 * p_b))))"
echo "== goals (issue 13, in-process)"
echo "deductions: tally $p_ti/s (goal >= 100000: $(goal $((p_ti >= 100000)))), tally/baseline: $(ratio "$p_ti" "$p_bi")"
