#!/usr/bin/env bash
# `tally simulate` benchmark (issue: 10,000 customers x 12 months in under 60 s on this machine).
# Runs the same seed at 1/10 of the population first, in the same run, as the baseline: the ratio
# (10k time / 10) / (1k time) shows how the cost per customer grows with the population (1.0 = linear).
# Usage: bench/simulate/run.sh   (env: CUSTOMERS=10000 MONTHS=12 SEED=1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
customers=${CUSTOMERS:-10000}
months=${MONTHS:-12}
seed=${SEED:-1}
bin="$root/build/release/tally"
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }
out=$(mktemp -d /tmp/tally-sim-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT

run() {  # run <customers> -> elapsed ms; the summary goes to $out/<customers>.txt
  "$bin" simulate --customers "$1" --months "$months" --seed "$seed" --db "$out/sim-$1.db" \
    --catalog "$root/config/pricing.json" >"$out/$1.txt"
  sed -nE 's/^elapsed_ms: ([0-9]+).*/\1/p' "$out/$1.txt"
}

small=$((customers / 10))
base_ms=$(run "$small")
full_ms=$(run "$customers")
cat "$out/$customers.txt"
echo
echo "baseline: $small customers x $months months: ${base_ms} ms"
echo "tally simulate: $customers customers x $months months: ${full_ms} ms (goal < 60000 ms)"
awk -v f="$full_ms" -v b="$base_ms" 'BEGIN { printf "per-customer cost ratio (full/10 vs baseline): %.2f\n", (f / 10) / b }'
awk -v f="$full_ms" 'BEGIN { printf "goal ratio (60 s / elapsed): %.2f\n", 60000 / f }'
