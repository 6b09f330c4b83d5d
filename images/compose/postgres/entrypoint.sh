#!/bin/sh
# The official postgres image's start-up contract: an empty PGDATA is initialised with
# POSTGRES_USER / POSTGRES_PASSWORD (required: no default), POSTGRES_DB is created, and the
# /docker-entrypoint-initdb.d/*.sql files run once; then the server runs as `postgres`.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
as_postgres() { runuser -u postgres -- "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  chown postgres "$password_file"
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
  exec runuser -u postgres -- postgres -c "listen_addresses=*" "$@"
fi
exec "$@"
