#!/usr/bin/env bash
# Webhook ingestion on PostgreSQL: verified, durably stored events per second into one local PostgreSQL 15 (fsync on,
# synchronous_commit on), with one Tally node and with two nodes on the same database, and in the same run the
# open-source peer @supabase/stripe-sync-engine (webhooks into PostgreSQL) behind a bare node:http server. All get
# the same customer.updated events for 5,000 customers, signed by the official SDK, replayed by wrk; everything
# shares this machine's cores. Then Tally (one node) at half its peak, for latency.
# Usage: bench/webhooks/postgres.sh   (needs `make build`; env: DURATION=8 CONNECTIONS=64)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${DURATION:-8}
connections=${CONNECTIONS:-64}
secret=whsec_bench_secret
events=${EVENTS:-customer}  # gen.mjs mode: customer (customer.updated) or subscription (customer.subscription.updated)
out=$(mktemp -d /tmp/tally-bench-pg.XXXXXX)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  "$root/scripts/pg-test.sh" stop "$out/pg" >/dev/null 2>&1 || true
  rm -rf "$out" "${requests_dir:-}"
}
trap cleanup EXIT

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
[ -d "$here/node_modules/@supabase/stripe-sync-engine" ] || (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
bin="$root/build/release/tally"
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }

# shellcheck source=load.sh
. "$here/load.sh"
field() { sed -E "s/.*$2=([0-9]+).*/\1/" <<<"$1"; }
acked_rate() { echo $(( ($(field "$1" requests) - $(field "$1" non2xx)) * 1000000 / $(field "$1" duration_us) )); }

TALLY_PG_FSYNC=on "$root/scripts/pg-test.sh" start "$out/pg" >/dev/null
server=$(cat "$out/pg/url")
new_db() { psql -X -q "$server" -c "CREATE DATABASE $1"; echo "${server%/postgres}/$1"; }
stored() { psql -X -At "$1" -c "SELECT COUNT(*) FROM webhook_events"; }
start_node() {  # <port> <db>
  STRIPE_WEBHOOK_SECRET=$secret TALLY_DB="$2" TALLY_PORT=$1 TALLY_CATALOG="$root/config/pricing.json" \
    "$bin" serve >>"$out/tally.out" 2>>"$out/tally.err" &
  echo $! >"$out/tally_$1.pid"; wait_port "$1"
}
stop_pid() { kill "$(cat "$out/$1.pid")"; wait "$(cat "$out/$1.pid")" 2>/dev/null || true; }

echo "== peak (closed loop, $connections connections, ${duration}s each; PostgreSQL fsync=on)"
peer_db=$(new_db peer)
DATABASE_URL=$peer_db STRIPE_WEBHOOK_SECRET=$secret PORT=9092 node "$here/peer_stripe_sync.mjs" >"$out/peer.out" 2>&1 &
echo $! >"$out/peer.pid"; wait_port 9092
p=$(run_load 9092 0 $((duration * 3000)) "$events")
stop_pid peer
p_rate=$(acked_rate "$p")
echo "stripe-sync-engine: acknowledged=$(( $(field "$p" requests) - $(field "$p" non2xx) )) rate=${p_rate}/s p50=$(field "$p" p50_us)us p99=$(field "$p" p99_us)us non2xx=$(field "$p" non2xx)"

one_db=$(new_db tally_one)
start_node 9191 "$one_db"
t=$(run_load 9191 0 $((duration * 30000)) "$events")
stop_pid tally_9191
t_stored=$(stored "$one_db")
t_rate=$(( t_stored * 1000000 / $(field "$t" duration_us) ))
echo "tally, 1 node:      stored=$t_stored rate=${t_rate}/s p50=$(field "$t" p50_us)us p99=$(field "$t" p99_us)us non2xx=$(field "$t" non2xx)"

# Two nodes: the events split in two halves (no event sent to both), each half replayed at one node by its own wrk
# with half the connections.
two_db=$(new_db tally_two)
start_node 9191 "$two_db"
start_node 9193 "$two_db"
gen_requests $((duration * 30000)) "$events"
awk -v a="$requests_dir/a.txt" -v b="$requests_dir/b.txt" '{ f = ((NR - 1) % 4 < 2) ? a : b; print > f }' \
  "$requests_dir/requests.txt"
replay_file() {  # <port> <file> <connections>
  BENCH_REQUESTS="$2" BENCH_THREADS=1 BENCH_DELAY_MS=0 \
    wrk -t1 -c"$3" -d"${duration}s" --timeout 10s -s "$load_dir/load.lua" "http://127.0.0.1:$1" | grep '^RESULT'
}
replay_file 9191 "$requests_dir/a.txt" $((connections / 2)) >"$out/two_a" &
replay_file 9193 "$requests_dir/b.txt" $((connections / 2)) >"$out/two_b" &
wait %?replay_file 2>/dev/null || true
while [ ! -s "$out/two_a" ] || [ ! -s "$out/two_b" ]; do sleep 0.2; done
stop_pid tally_9191; stop_pid tally_9193
a=$(cat "$out/two_a"); b=$(cat "$out/two_b")
two_stored=$(stored "$two_db")
two_us=$(( $(field "$a" duration_us) > $(field "$b" duration_us) ? $(field "$a" duration_us) : $(field "$b" duration_us) ))
two_rate=$(( two_stored * 1000000 / two_us ))
echo "tally, 2 nodes:     stored=$two_stored rate=${two_rate}/s p99=$(field "$a" p99_us)us/$(field "$b" p99_us)us non2xx=$(( $(field "$a" non2xx) + $(field "$b" non2xx) ))"

ratio() { local x=$(( $1 * 100 / ($2 > 0 ? $2 : 1) )); echo "$((x / 100)).$(printf '%02d' $((x % 100)))x"; }
echo "ratio tally 1 node / stripe-sync-engine: $(ratio "$t_rate" "$p_rate")"
echo "ratio tally 2 nodes / 1 node: $(ratio "$two_rate" "$t_rate")"

echo "== tally, 1 node, at half its peak (paced with wrk's delay())"
half_db=$(new_db tally_half)
start_node 9191 "$half_db"
delay=$(( connections * 1000 * 2 / (t_rate > 0 ? t_rate : 1) )); delay=$(( delay > 0 ? delay : 1 ))
th=$(run_load 9191 "$delay" $((duration * 15000)) "$events")
stop_pid tally_9191
echo "tally @~$((t_rate / 2))/s: achieved=$(( $(field "$th" requests) * 1000000 / $(field "$th" duration_us) ))/s p50=$(field "$th" p50_us)us p99=$(field "$th" p99_us)us non2xx=$(field "$th" non2xx)"
tail -1 "$out/gen.log"
