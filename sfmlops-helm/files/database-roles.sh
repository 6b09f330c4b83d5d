#!/usr/bin/env bash
# One login role per database of the sfmlops PostgreSQL server, none of them a superuser: each
# owns its database and what an older release created there, and only it (and the superuser)
# may connect to it. Idempotent; run with the superuser's connection in PG* variables on every
# start of the server: beside it in its pod (sfmlops-helm/templates/postgresql.yaml) or as a
# one-shot service (compose.yaml).
#
#   DATABASE_ROLES            role:database:secret-key, space-separated (the key only names
#                             where the password comes from, in messages)
#   ROLE_PASSWORD_<ROLE>      each role's password (role name upper-cased)
#   ROLES_WAIT_SECONDS        how long to wait for the server (default 600)
#   ROLES_HOLD                non-empty: stay idle once done (a container that exits is restarted)
set -euo pipefail
# As PID 1, bash ignores a SIGTERM it has no trap for: the pod would wait out its grace period
# on this container at every restart.
trap 'exit 143' TERM INT
# Every password first, so that a missing one changes nothing.
for entry in $DATABASE_ROLES; do
  IFS=: read -r role database key <<< "$entry"
  variable="ROLE_PASSWORD_${role^^}"
  if [ -z "${!variable:-}" ]; then
    echo "database roles: no password for the role $role: $variable is empty (key $key); nothing changed" >&2
    exit 1
  fi
done
# TCP, not the socket: while initialising a new data directory the image runs a temporary
# server on the socket only, which is stopped under anyone using it.
waited=0
until pg_isready --quiet; do
  if [ "$waited" -ge "${ROLES_WAIT_SECONDS:-600}" ]; then
    echo "database roles: PostgreSQL at $PGHOST:$PGPORT did not accept connections within ${waited} s" >&2
    exit 1
  fi
  sleep 2
  waited=$((waited + 2))
done
# No role but a database's own (and the superuser) may connect to it.
for entry in $DATABASE_ROLES; do
  IFS=: read -r role database key <<< "$entry"
  variable="ROLE_PASSWORD_${role^^}"
  # The password reaches psql through the environment, never the command line.
  ROLE_PASSWORD="${!variable}" psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 \
    -v role="$role" -v name="$database" >/dev/null <<'SQL'
\getenv password ROLE_PASSWORD
SELECT format('CREATE ROLE %I', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  NOBYPASSRLS INHERIT PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
ALTER DATABASE :"name" OWNER TO :"role";
REVOKE CONNECT, TEMPORARY ON DATABASE :"name" FROM PUBLIC;
\connect :"name"
-- What an older release created here as the superuser moves to the role: tables
-- (with their indexes, row types and column-owned sequences), then the rest.
SELECT format('ALTER %s %s OWNER TO %I',
    CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
      WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
    c.oid::regclass, :'role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
  AND c.relowner <> :'role'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e') \gexec
SELECT format('ALTER SEQUENCE %s OWNER TO %I', c.oid::regclass, :'role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
  AND c.relowner <> :'role'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e')) \gexec
SELECT format('ALTER TYPE %s OWNER TO %I', t.oid::regtype, :'role')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
  AND t.typowner <> :'role'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                  AND d.objid = t.oid AND d.deptype = 'e') \gexec
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, :'role')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
  AND p.proowner <> :'role'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e') \gexec
SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, :'role')
FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspowner NOT IN (:'role'::regrole, 'pg_database_owner'::regrole) \gexec
SQL
  echo "database roles: $database is owned by the role $role, and only it may connect"
done
if [ -n "${ROLES_HOLD:-}" ]; then
  sleep infinity &
  wait
fi
