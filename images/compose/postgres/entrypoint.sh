#!/bin/sh
# The official postgres image's start-up contract: an empty PGDATA is initialised with
# POSTGRES_USER / POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE; required: no default),
# POSTGRES_DB is created, and the /docker-entrypoint-initdb.d/*.sql files run once; then the
# server runs. As root (Compose) it runs as `postgres`; as any other user (sfmlops-helm's pod:
# UID 10001, read-only root filesystem, no capabilities) it runs as that user, named through
# nss_wrapper as the official image does, since initdb needs a name for its user. Arguments
# that start with "-" are the server's options (`-c name=value`, as the chart passes them).
set -eu
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE is required}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
case "${1:-postgres}" in -*) set -- postgres "$@" ;; esac
mkdir -p "$PGDATA" /var/run/postgresql
if [ "$(id -u)" = 0 ]; then
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  as_postgres() { runuser -u postgres -- "$@"; }
else
  if ! getent passwd "$(id -u)" >/dev/null; then
    wrapper=$(mktemp -d)
    echo "postgres:x:$(id -u):$(id -g):PostgreSQL:$PGDATA:/bin/false" >"$wrapper/passwd"
    echo "postgres:x:$(id -g):" >"$wrapper/group"
    export LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD="$wrapper/passwd" \
      NSS_WRAPPER_GROUP="$wrapper/group"
  fi
  as_postgres() { "$@"; }
fi
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  [ "$(id -u)" != 0 ] || chown postgres "$password_file"
  as_postgres initdb -D "$PGDATA" -U "$user" --pwfile="$password_file" --encoding=UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$database" != postgres ]; then
    as_postgres psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -qc "CREATE DATABASE \"$database\""
  fi
  for file in /docker-entrypoint-initdb.d/*; do
    case "$file" in
      *.sql) as_postgres psql -v ON_ERROR_STOP=1 -U "$user" -d "$database" -qf "$file" ;;
      *.sh)
        # shellcheck source=/dev/null  # the user's own init scripts
        . "$file"
        ;;
    esac
  done
  as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "initialised $PGDATA (database $database, user $user)"
fi
if [ "$1" = postgres ]; then
  shift
  if [ "$(id -u)" = 0 ]; then
    exec runuser -u postgres -- postgres -c "listen_addresses=*" "$@"
  fi
  exec postgres -c "listen_addresses=*" "$@"
fi
exec "$@"
