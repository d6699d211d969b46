#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ in build/fuzz (clang 14, ASan+UBSan), replays fuzz/regressions/<target>/,
# then fuzzes each target for a while on a temporary copy of its seed corpus (the committed corpus never grows).
# Prints one summary line per target and exits non-zero if any target crashes or a regression input still does.
# Usage: scripts/fuzz.sh [seconds] [target...]   (default 60 s each, every target)
# Environment: FUZZ_CXX (default clang++-14), FUZZ_JOBS (build jobs, default nproc), FUZZ_NICE (default 19).
# Crash inputs land in build/fuzz/artifacts/<target>/, full fuzzer logs in build/fuzz/logs/<target>.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

all_targets=(webhook_signature event_decoder json_body form_encoding http_request)
seconds=${1:-60}
[ $# -gt 0 ] && shift
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [seconds] [target...]   targets: ${all_targets[*]}" >&2
  exit 2
fi
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t' (${all_targets[*]})" >&2; exit 2; }
done

cxx=${FUZZ_CXX:-clang++-14}
command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found: run scripts/install-deps.sh test" >&2; exit 1; }
niced=(nice -n "${FUZZ_NICE:-19}")
build=$root/build/fuzz
mkdir -p "$build/logs"

# Configure once (Ninja re-runs CMake itself when fuzz/CMakeLists.txt changes), build; quiet when up to date.
log=$build/logs/build.log
: >"$log"
if [ ! -f "$build/build.ninja" ]; then
  "${niced[@]}" cmake -S fuzz -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" >"$log" 2>&1 || {
    cat "$log" >&2
    echo "fuzz: configuring build/fuzz failed" >&2
    exit 1
  }
fi
if ! "${niced[@]}" cmake --build "$build" -j "${FUZZ_JOBS:-$(nproc)}" --target "${targets[@]/%/_fuzzer}" >>"$log" 2>&1; then
  cat "$log" >&2
  echo "fuzz: building build/fuzz failed" >&2
  exit 1
fi
grep -q "no work to do" "$log" || echo "fuzz: built ${targets[*]} in build/fuzz"

# Reports from UBSan abort with a stack; the symbolizer turns addresses into lines.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# "#1234 DONE cov: 56 ft: 78 corp: 9/10Kb ..." (or the last status line before a crash) -> "cov ft corp".
status_of() {
  awk '/^#[0-9]+[ \t]/ && / cov: / {
         for (i = 1; i <= NF; i++) { if ($i == "cov:") c = $(i+1); if ($i == "ft:") f = $(i+1); if ($i == "corp:") p = $(i+1) }
       }
       END { sub(/\/.*/, "", p); print (c == "" ? "?" : c), (f == "" ? "?" : f), (p == "" ? "?" : p) }' "$1"
}
stat_of() {  # -print_final_stats=1 lines: "stat::number_of_executed_units: 1234"
  awk -v key="stat::$2:" '$1 == key { v = $2 } END { print (v == "" ? "?" : v) }' "$1"
}

for t in "${targets[@]}"; do
  bin=$build/${t}_fuzzer
  artifacts=$build/artifacts/$t
  mkdir -p "$artifacts"

  # Regressions: every saved crash input must run clean.
  replayed=0
  for f in fuzz/regressions/"$t"/*; do
    [ -f "$f" ] || continue
    case $(basename "$f") in README*) continue ;; esac
    replayed=$((replayed + 1))
    if ! "${niced[@]}" "$bin" -artifact_prefix="$artifacts/replay-" "$f" >"$work/replay.log" 2>&1; then
      failed=1
      echo "fuzz: $t: regression $f still crashes:" >&2
      grep -E "ERROR:|SUMMARY:|runtime error|Assertion" "$work/replay.log" | head -5 | sed 's/^/    /' >&2
    fi
  done

  corpus=$work/corpus-$t
  mkdir -p "$corpus"
  [ -d fuzz/corpus/"$t" ] && cp -R fuzz/corpus/"$t"/. "$corpus"/
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/")
  [ -f fuzz/"$t".dict ] && args+=(-dict=fuzz/"$t".dict)
  touch "$work/start"
  rc=0
  "${niced[@]}" "$bin" "${args[@]}" "$corpus" >"$build/logs/$t.log" 2>&1 || rc=$?
  crashes=$(find "$artifacts" -maxdepth 1 -type f -newer "$work/start" \
              \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ] && crashes=1
  read -r cov ft corp < <(status_of "$build/logs/$t.log")
  printf 'fuzz: %-18s execs=%-10s exec/s=%-7s cov=%-6s ft=%-7s corpus=%-6s regressions=%-3s crashes=%s\n' "$t" \
    "$(stat_of "$build/logs/$t.log" number_of_executed_units)" "$(stat_of "$build/logs/$t.log" average_exec_per_sec)" \
    "$cov" "$ft" "$corp" "$replayed" "$crashes"
  if [ "$crashes" -ne 0 ]; then
    failed=1
    grep -E "ERROR:|SUMMARY:|runtime error|Test unit written" "$build/logs/$t.log" | head -6 | sed 's/^/    /' >&2
  fi
done
exit "$failed"
