#!/usr/bin/env bash
# Installs the Debian packages Tally needs to build and test. Idempotent; quiet when all are present.
# Usage: scripts/install-deps.sh [build|test]   (test adds PostgreSQL, HAProxy, Chromium and the npm test tools)
set -euo pipefail
mode=${1:-build}
pkgs=(g++ cmake ninja-build pkg-config libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
      libcurl4-openssl-dev libssl-dev libsqlite3-dev libpq-dev libspdlog-dev libcli11-dev
      libgtest-dev libgmock-dev libbenchmark-dev clang-tidy python3 python3-yaml nodejs prometheus-cpp-dev)
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
command -v npm >/dev/null || { echo "npm is required (Swagger UI for /docs, and the end-to-end tests)" >&2; exit 1; }
# Swagger UI's static bundle is compiled into the binary (/docs); --ignore-scripts: no install-time analytics.
if [ ! -f api/node_modules/.installed ] || [ api/package-lock.json -nt api/node_modules/.installed ]; then
  (cd api && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed)
fi
if [ "$mode" = test ]; then
  if [ ! -f tests/e2e/node_modules/.installed ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules/.installed ]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed)
  fi
fi
