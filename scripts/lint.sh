#!/usr/bin/env bash
# clang-tidy with the project's .clang-tidy (warnings are errors) over every non-test source.
# Usage: scripts/lint.sh [build-dir]   (default build/debug; needs its compile_commands.json)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/debug}
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
# clang-tidy cannot read GCC's precompiled headers: drop those flags from its copy of the compile database.
python3 - "$build/compile_commands.json" "$db/compile_commands.json" <<'PY'
import json, re, sys
cc = json.load(open(sys.argv[1]))
for e in cc:
    c = re.sub(r'-include \S*cmake_pch\.hxx', '', e['command']).replace('-Winvalid-pch', '')
    e['command'] = re.sub(r'-Xclang -include-pch -Xclang \S+', '', c)
json.dump(cc, open(sys.argv[2], 'w'))
PY
cd "$root"
find src -name '*.cpp' ! -name '*_test.cpp' -print0 |
  xargs -0 -n 1 -P "$(nproc)" sh -c 'clang-tidy -p "$0" --quiet "$1" 2>/dev/null' "$db" |
  tee "$db/out.txt" | grep -E 'warning:|error:' || true
if grep -qE 'warning:|error:' "$db/out.txt"; then
  echo "lint: clang-tidy found problems (above)" >&2
  exit 1
fi
echo "lint: clean"
