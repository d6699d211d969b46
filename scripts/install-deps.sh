#!/usr/bin/env bash
# Installs the Debian packages Tally needs to build and test. Idempotent; quiet when all are present.
# Usage: scripts/install-deps.sh [build|test]   (test adds PostgreSQL, HAProxy, Chromium and the npm test tools)
set -euo pipefail
mode=${1:-build}
pkgs=(g++ cmake ninja-build pkg-config libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
      libcurl4-openssl-dev libssl-dev libsqlite3-dev libpq-dev libspdlog-dev libcli11-dev
      libgtest-dev libgmock-dev libbenchmark-dev clang-tidy python3 prometheus-cpp-dev)
if [ "$mode" = test ]; then pkgs+=(nodejs sqlite3 curl chromium python3-stripe clang-14 libclang-rt-14-dev postgresql haproxy); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$mode" = test ]; then
  command -v npm >/dev/null || { echo "npm is required for the end-to-end tests" >&2; exit 1; }
  if [ ! -f tests/e2e/node_modules/.installed ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules/.installed ]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed)
  fi
fi
