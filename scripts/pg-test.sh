#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the tests: on a free loopback port, in a temporary directory, trusted
# loopback auth, removed by `stop`. initdb refuses to run as root, so as root the cluster runs as `postgres`.
# Usage: scripts/pg-test.sh start <state-dir>   writes <state-dir>/url (postgresql://postgres@127.0.0.1:PORT/postgres)
#        scripts/pg-test.sh stop <state-dir>    stops the server and removes its data
#        scripts/pg-test.sh pause|resume <state-dir>   stops the server (fast shutdown) / starts it again on its port
#        scripts/pg-test.sh start-replicated <state-dir>   a primary and a synchronous hot standby (streaming
#            replication, synchronous_standby_names='*'); <state-dir>/url is a multi-host URL with
#            target_session_attrs=read-write, which finds whichever of the two is the primary
#        scripts/pg-test.sh kill-primary|promote <state-dir>   SIGKILL-like stop of the primary / promote the standby
# fsync is off in this cluster: the tests kill Tally and PostgreSQL processes, never the machine, and a killed
# server still recovers everything it committed from its WAL in the page cache. Sessions keep synchronous_commit=on.
# TALLY_PG_FSYNC=on keeps fsync (the benchmarks measure durable commits).
set -euo pipefail
cmd=${1:?start|stop}
state=${2:?state directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL server binaries not found (Debian package postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

server_options() {  # <port> <data-dir>
  echo "-c listen_addresses=127.0.0.1 -c port=$1 -c unix_socket_directories=$2 -c fsync=${TALLY_PG_FSYNC:-off} -c max_connections=300 -c shared_buffers=128MB ${TALLY_PG_OPTIONS:-}"
}

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

case "$cmd" in
start)
  "$0" stop "$state" 2>/dev/null || true
  mkdir -p "$state"
  data=$(mktemp -d /tmp/tally-pg.XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$data"
  echo "$data" > "$state/data_dir"
  as_pg "$bin/initdb" -D "$data/db" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 ||
    { cat "$state/initdb.log" >&2; exit 1; }
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if as_pg "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 start \
        -o "$(server_options "$port" "$data")" >/dev/null; then
      echo "postgresql://postgres@127.0.0.1:$port/postgres" > "$state/url"
      echo "$port" > "$state/port"
      echo "PostgreSQL test server at $(cat "$state/url") (data in $data)"
      exit 0
    fi
  done
  cat "$data/server.log" >&2
  exit 1
  ;;
start-replicated)
  "$0" stop "$state" 2>/dev/null || true
  mkdir -p "$state"
  data=$(mktemp -d /tmp/tally-pg.XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$data"
  echo "$data" > "$state/data_dir"
  as_pg "$bin/initdb" -D "$data/db" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 ||
    { cat "$state/initdb.log" >&2; exit 1; }
  primary=$(free_port)
  # Every commit waits for the standby to have flushed it (synchronous_commit=on, any one standby).
  as_pg "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 start \
    -o "$(server_options "$primary" "$data") -c wal_level=replica -c max_wal_senders=4 -c synchronous_standby_names='*'" \
    >/dev/null || { cat "$data/server.log" >&2; exit 1; }
  as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres -D "$data/standby" -R -X stream \
    >"$state/basebackup.log" 2>&1 || { cat "$state/basebackup.log" >&2; exit 1; }
  standby=$(free_port)
  as_pg "$bin/pg_ctl" -D "$data/standby" -l "$data/standby.log" -w -t 60 start \
    -o "$(server_options "$standby" "$data") -c hot_standby=on" >/dev/null || { cat "$data/standby.log" >&2; exit 1; }
  for _ in $(seq 1 200); do
    sync=$(psql -X -At "postgresql://postgres@127.0.0.1:$primary/postgres" \
      -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'" 2>/dev/null || true)
    [ "$sync" = 1 ] && break
    sleep 0.05
  done
  [ "$sync" = 1 ] || { echo "the standby did not become synchronous" >&2; exit 1; }
  echo "$primary" > "$state/port"
  echo "$standby" > "$state/standby_port"
  echo "postgresql://postgres@127.0.0.1:$primary,127.0.0.1:$standby/postgres?target_session_attrs=read-write" > "$state/url"
  echo "PostgreSQL primary on $primary, synchronous standby on $standby (data in $data)"
  ;;
kill-primary)
  data=$(cat "$state/data_dir")
  as_pg "$bin/pg_ctl" -D "$data/db" -m immediate -w stop >/dev/null
  ;;
promote)
  data=$(cat "$state/data_dir")
  as_pg "$bin/pg_ctl" -D "$data/standby" -w -t 60 promote >/dev/null
  ;;
pause)
  data=$(cat "$state/data_dir")
  as_pg "$bin/pg_ctl" -D "$data/db" -m fast -w stop >/dev/null
  ;;
resume)
  data=$(cat "$state/data_dir")
  port=$(cat "$state/port")
  as_pg "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 start \
    -o "$(server_options "$port" "$data")" >/dev/null
  ;;
stop)
  [ -f "$state/data_dir" ] || exit 0
  data=$(cat "$state/data_dir")
  for d in "$data/db" "$data/standby"; do
    if [ -d "$d" ]; then as_pg "$bin/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true; fi
  done
  rm -rf "$data" "$state/url" "$state/data_dir" "$state/port" "$state/standby_port"
  ;;
*) echo "usage: $0 start|stop|pause|resume|start-replicated|kill-primary|promote <state-dir>" >&2; exit 2 ;;
esac
