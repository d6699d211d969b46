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
# shellcheck source=load.sh
. "$here/load.sh"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out" "$requests_dir"' EXIT

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
[ -d "$here/node_modules/stripe" ] || (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
bin="$root/build/release/tally"
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }

STRIPE_WEBHOOK_SECRET=$secret TALLY_DB="$out/tally.db" TALLY_PORT=9192 TALLY_CATALOG="$root/config/pricing.json" \
  "$bin" serve >"$out/tally.out" 2>"$out/tally.err" &
wait_port 9192
# Enough unique events for the whole run at up to connections*1000/delay requests a second.
run_load 9192 "$delay" $(( duration * connections * 1000 / delay ))
grep -h '"msg":"slow' "$out/tally.err" | sed 's/^/  tally log: /' || true
