#!/usr/bin/env bash
# Events benchmark: Tally's own events delivered to a local receiver (nginx, answering 200 at once: nginx.conf.in)
# while Stripe webhooks drive the changes. Each signed customer.updated webhook renames one of 5,000 customers, so
# Tally commits a change and one customer.updated event (plus customer.created the first time) per webhook.
#   1. the dispatcher's throughput: a backlog of deliveries to one endpoint (enabled_events ["*"]), recorded by a
#      Tally with delivery off (--no-event-delivery), drained by one with it on (goal >= 5,000/s)
#   2. peak webhook ingestion while the dispatcher delivers that backlog at full speed, against the same load on
#      the same backlog with delivery off: what delivering costs ingestion (goal: keeps >= 90%)
#   3. paced at half the goal (2,500/s) and at half of what 1 measured: the latency from each event's commit to the
#      receiver's 200 (goal p99 < 50 ms at 2,500/s)
# Usage: bench/events/run.sh   (env: DURATION=8 CONNECTIONS=64 PHASES="1 2 3" PAIRS=3 BACKLOG_SECONDS=5; D_RATE=5000 stands for phase 1's
# result when phase 3 runs without it)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${DURATION:-8}
connections=${CONNECTIONS:-64}
secret=whsec_bench_secret
admin_key=bench_admin_key_0123456789abcdef0123456789
out=$(mktemp -d /tmp/tally-bench-events.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$out"; rm -rf "${requests_dir:-}"' EXIT

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
command -v nginx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
[ -d "$root/bench/webhooks/node_modules/stripe" ] || (cd "$root/bench/webhooks" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
bin="$root/build/release/tally"
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }

# shellcheck source=../webhooks/load.sh
. "$root/bench/webhooks/load.sh"
field() { sed -E "s/.*$2=([0-9.]+).*/\1/" <<<"$1"; }
fresh_dir() { sync; sleep 2; mktemp -d "$out/phase.XXXXXX"; }
start_tally() {
  dir=$(fresh_dir)
  STRIPE_WEBHOOK_SECRET=$secret TALLY_DB="$dir/tally.db" TALLY_PORT=9191 TALLY_CATALOG="$root/config/pricing.json" \
    TALLY_ADMIN_KEY=$admin_key "$bin" serve >"$out/tally.out" 2>"$out/tally.err" &
  echo $! >"$out/tally.pid"; wait_port 9191
}
# nginx writes its buffered log when it quits (SIGQUIT: graceful).
stop() {
  kill -s "$([ "$1" = receiver ] && echo QUIT || echo TERM)" "$(cat "$out/$1.pid")"
  wait "$(cat "$out/$1.pid")" 2>/dev/null || true
}
# The receiver is nginx: a Node receiver cost 180 us of CPU per delivery here, taken from the 2 cores Tally and
# the load generator share; nginx costs a fraction of that, as an app on another machine would.
start_receiver() {
  rm -f "$out/received.txt"
  sed -e "s|@OUT@|$out|g" -e "s|@PORT@|9292|g" "$here/nginx.conf.in" >"$out/nginx.conf"
  nginx -c "$out/nginx.conf" &
  echo $! >"$out/receiver.pid"; wait_port 9292
}
register_endpoint() {
  curl -sf -o /dev/null -H "Authorization: Bearer $admin_key" http://127.0.0.1:9191/v1/webhook_endpoints \
    -H 'Content-Type: application/json' -d "{\"url\":\"http://127.0.0.1:9292$1\",\"enabled_events\":[\"*\"]}"
}
stored() { sqlite3 "$dir/tally.db" "SELECT COUNT(*) FROM webhook_events"; }
events() { sqlite3 "$dir/tally.db" "SELECT COUNT(*) FROM app_events"; }
# Waits until the webhooks are processed (and every event is delivered), or 180 s pass.
wait_zero() {
  for _ in $(seq 1 1800); do
    [ "$(sqlite3 "$dir/tally.db" "$1" 2>/dev/null || echo 1)" = 0 ] && return 0
    sleep 0.1
  done
  echo "not drained after 180 s: $1" >&2
}
drain_webhooks() { wait_zero "SELECT COUNT(*) FROM webhook_events WHERE processed_at IS NULL"; }
drain() { drain_webhooks; wait_zero "SELECT COUNT(*) FROM event_deliveries WHERE state = 'pending'"; }
report() {
  sqlite3 -separator ' ' "$dir/tally.db" "SELECT id, created_ms FROM app_events" >"$out/created.txt"
  node "$here/report.mjs" "$out/received.txt" "$out/created.txt"
}

phases=${PHASES:-1 2 3}
pairs=${PAIRS:-3}
want() { [[ " $phases " == *" $1 "* ]]; }
d_rate=${D_RATE:-5000}

# A backlog: webhooks for backlog_s seconds processed by a Tally with delivery off, so every event's delivery to the
# one endpoint is pending. Phases 1 and 2 each start from a copy.
backlog_s=${BACKLOG_SECONDS:-5}
if want 1 || want 2; then
  TALLY_EVENT_DELIVERY=off start_tally; register_endpoint /tally
  run_load 9191 0 $((backlog_s * 40000)) customer >/dev/null
  drain_webhooks; stop tally
  mv "$dir/tally.db" "$out/backlog.db"
  backlog=$(sqlite3 "$out/backlog.db" "SELECT COUNT(*) FROM event_deliveries WHERE state = 'pending'")
fi
# start_tally_on_backlog [env assignments...]: a fresh copy of the backlog; the receiver listens first (a refused
# delivery would wait a minute for its retry and hold its object's line).
start_tally_on_backlog() {
  dir=$(fresh_dir); cp "$out/backlog.db" "$dir/tally.db"
  env "$@" STRIPE_WEBHOOK_SECRET=$secret TALLY_DB="$dir/tally.db" TALLY_PORT=9191 \
    TALLY_CATALOG="$root/config/pricing.json" TALLY_ADMIN_KEY=$admin_key "$bin" serve >"$out/tally.out" 2>"$out/tally.err" &
  echo $! >"$out/tally.pid"; wait_port 9191
}

if want 1; then
echo "== 1. dispatcher throughput: a backlog of $backlog deliveries, drained (recorded with --no-event-delivery)"
start_receiver; start_tally_on_backlog; drain; stop tally; stop receiver
r=$(report)
echo "delivered: $r"
d_rate=$(field "$r" rate_per_s); d_rate=${d_rate%.*}
fi

if want 2; then
# Alternating runs, because this machine's peak moves by +-15% from one run to the next: the median of each. Both
# start from the backlog; "alone" does not deliver it, "delivering" does, at full speed, during the load.
echo "== 2. webhook ingestion alone vs. while the dispatcher delivers the backlog (closed loop, $connections" \
     "connections, ${duration}s each, $pairs pairs)"
alone=(); with=()
for i in $(seq 1 "$pairs"); do
  # Signed before Tally starts, so that the backlog is still there when the load begins.
  gen_requests $((duration * 40000)) customer
  start_tally_on_backlog TALLY_EVENT_DELIVERY=off
  a=$(replay 9191 0)
  stop tally
  alone+=("$(( $(field "$a" requests) * 1000000 / $(field "$a" duration_us) ))")
  echo "alone:      rate=${alone[-1]}/s p99=$(field "$a" p99_us)us non2xx=$(field "$a" non2xx)"
  gen_requests $((duration * 40000)) customer
  start_receiver; start_tally_on_backlog
  b=$(replay 9191 0)
  stop tally; stop receiver
  grep -h '"msg":"slow' "$out/tally.err" | sed 's/^/  tally log: /' | tail -5 || true
  with+=("$(( $(field "$b" requests) * 1000000 / $(field "$b" duration_us) ))")
  echo "delivering: rate=${with[-1]}/s p99=$(field "$b" p99_us)us non2xx=$(field "$b" non2xx);" \
       "delivered meanwhile: $(report)"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
a_rate=$(median "${alone[@]}"); b_rate=$(median "${with[@]}")
echo "median ingestion: alone ${a_rate}/s, while delivering ${b_rate}/s: $(( b_rate * 100 / (a_rate > 0 ? a_rate : 1) ))%"
fi

# paced <deliveries per second> <label>: two endpoints, so each event makes two deliveries; webhook i makes one
# event (two for a customer's first), and wrk's delay() paces each connection.
paced() {
  echo "== 3$2. $1 deliveries/s (paced webhooks, two endpoints): latency from commit to the receiver's 200"
  start_tally; start_receiver; register_endpoint /tally; register_endpoint /tally-2
  local delay=$(( connections * 1000 * 2 / $1 ))
  c=$(run_load 9191 "$(( delay > 0 ? delay : 1 ))" $((duration * 20000)) customer)
  drain; stop tally; stop receiver
  echo "ingestion: achieved=$(( $(field "$c" requests) * 1000000 / $(field "$c" duration_us) ))/s p99=$(field "$c" p99_us)us"
  echo "delivered: $(report)"
}
if want 3; then
  paced 2500 a   # half the goal of 5,000/s
  paced $(( d_rate / 2 )) b  # half of what phase 1 measured
fi
tail -1 "$out/gen.log"
