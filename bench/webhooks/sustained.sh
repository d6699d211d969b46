#!/usr/bin/env bash
# Sustained webhook load on Tally alone: long enough (default 30 s) for the WAL to reach kWalBusyFramesMax and be
# checkpointed under load, which the 6 s phases of run.sh never see. Paced like run.sh's half-rate phase.
# Prints wrk's RESULT line and the store's slow-operation log (checkpoints, slow commits).
# Usage: bench/webhooks/sustained.sh   (env: DURATION=30 DELAY_MS=8 CONNECTIONS=64)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${DURATION:-30}
delay=${DELAY_MS:-8}
connections=${CONNECTIONS:-64}
secret=whsec_bench_secret
out=$(mktemp -d /tmp/tally-sustained.XXXXXX)
requests_dir=$( [ -d /dev/shm ] && [ -w /dev/shm ] && mktemp -d /dev/shm/tally-sustained.XXXXXX || echo "$out")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out" "$requests_dir"' EXIT

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
[ -d "$here/node_modules/stripe" ] || (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
bin="$root/build/release/tally"
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }

# Enough unique events for the whole run at up to connections*1000/delay requests a second.
node "$here/gen.mjs" $(( duration * connections * 1000 / delay )) "$secret" "$root/tests/fixtures/fixtures3.json" \
  "$requests_dir/requests.txt" 2>"$out/gen.log"
sync
STRIPE_WEBHOOK_SECRET=$secret TALLY_DB="$out/tally.db" TALLY_PORT=9192 TALLY_CATALOG="$root/config/pricing.json" \
  "$bin" serve >"$out/tally.out" 2>"$out/tally.err" &
for _ in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:9192/health && break; sleep 0.05; done
BENCH_REQUESTS="$requests_dir/requests.txt" BENCH_THREADS=1 BENCH_DELAY_MS="$delay" \
  wrk -t1 -c"$connections" -d"${duration}s" --timeout 10s -s "$here/load.lua" http://127.0.0.1:9192 | grep '^RESULT'
grep -h '"msg":"slow' "$out/tally.err" | sed 's/^/  tally log: /' || true
