# Sourced by run.sh and sustained.sh: signing requests and replaying them with wrk.
# Expects: here, root, secret, out, connections, duration.

wait_port() { for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done; return 1; }

# The signed requests (~5 KB each, hundreds of MB) go to tmpfs, and are synced before the load starts: left dirty
# on ext4 (data=ordered), their writeback is folded into the next journal commit, and a server's fdatasync then
# waits for it (fsyncs of 230-375 ms, seen in three runs of five before this). Callers remove it on exit.
requests_dir=$( [ -d /dev/shm ] && [ -w /dev/shm ] && mktemp -d /dev/shm/tally-bench.XXXXXX || echo "$out")

load_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# gen_requests <events> [gen.mjs mode]: signs them now (signatures are valid for 5 minutes)
gen_requests() {
  node "$load_dir/gen.mjs" "$1" "$secret" "$root/tests/fixtures/fixtures3.json" "$requests_dir/requests.txt" \
    "${2:-subscription}" 2>>"$out/gen.log"
  sync
}
# replay <port> <delay_ms> -> wrk's RESULT line
replay() {
  BENCH_REQUESTS="$requests_dir/requests.txt" BENCH_THREADS=1 BENCH_DELAY_MS="$2" \
    wrk -t1 -c"$connections" -d"${duration}s" --timeout 10s -s "$load_dir/load.lua" "http://127.0.0.1:$1" | grep '^RESULT'
}
# run_load <port> <delay_ms> <events> [gen.mjs mode] -> wrk's RESULT line
run_load() { gen_requests "$3" "${4:-}"; replay "$1" "$2"; }
