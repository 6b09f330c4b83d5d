#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks, from Debian's postgresql package.
#   scripts/postgres.sh start DIR PORT   initdb in DIR, start on 127.0.0.1:PORT, create db "sfmlops"
#   scripts/postgres.sh resume DIR PORT  start the server of an existing DIR again (after a crash)
#   scripts/postgres.sh stop DIR         stop it and remove DIR
# As root the cluster runs as the "postgres" user (PostgreSQL refuses to run as root).
# SFMLOPS_PG_FSYNC=on keeps durable writes (benchmarks); tests run with fsync off.
# The server runs with the settings of the chart's postgresql.config (sfmlops-helm/values.yaml),
# measured by benchmarks/postgres_upsert.py; SFMLOPS_PG_SHARED_BUFFERS sizes the cache (1GB).
# SFMLOPS_PG_OPTIONS adds server settings, e.g. "-c work_mem=64MB" (they come last and win).
set -euo pipefail

bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
  else
    # The newest installed major version (nothing printed when none is).
    find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
  fi
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

usage() { echo "usage: $0 start DIR PORT | resume DIR PORT | stop DIR" >&2; exit 2; }

run_server() {
  local dir=$1 port=$2 settings
  settings="-c shared_buffers=${SFMLOPS_PG_SHARED_BUFFERS:-1GB} -c wal_buffers=64MB"
  settings+=" -c max_wal_size=4GB -c checkpoint_timeout=15min -c wal_compression=lz4"
  settings+=" -c temp_buffers=64MB"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=${SFMLOPS_PG_FSYNC:-off} -c max_connections=100 $settings ${SFMLOPS_PG_OPTIONS:-}" \
    start >/dev/null
}

[ $# -ge 2 ] || usage
action=$1
dir=$2
bin=$(bindir)
[ -x "$bin/initdb" ] || { echo "PostgreSQL server not installed: run scripts/install-system-deps.sh" >&2; exit 1; }

case "$action" in
  start)
    [ $# -eq 3 ] || usage
    port=$3
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      chown postgres: "$dir"
      runuser -u postgres -- test -x "$dir" || {
        echo "$dir: the postgres user cannot reach it; pick a folder whose parents it may traverse" >&2
        exit 1
      }
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U sfmlops --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    run_server "$dir" "$port"
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U sfmlops sfmlops
    echo "postgresql+psycopg2://sfmlops@127.0.0.1:$port/sfmlops"
    ;;
  resume)
    [ $# -eq 3 ] || usage
    run_server "$dir" "$3"
    echo "postgresql+psycopg2://sfmlops@127.0.0.1:$3/sfmlops"
    ;;
  stop)
    if [ -d "$dir/data" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
