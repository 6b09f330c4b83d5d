#!/usr/bin/env bash
# One login role per database of the sfmlops PostgreSQL server, none of them a superuser: each
# owns its database and what an older release created there, and only it (and the superuser)
# may connect to it; no role may connect to a database that is not its own (`postgres` and
# `template1` included). Optional read-only roles get SELECT on every table of one database,
# present and future, and nothing else. Idempotent; run with the superuser's connection in PG* variables on every
# start of the server: beside it in its pod (sfmlops-helm/templates/postgresql.yaml) or as a
# one-shot service (compose.yaml).
#
#   DATABASE_ROLES            role:database:secret-key, space-separated (the key only names
#                             where the password comes from, in messages)
#   DATABASE_READERS          role:database:secret-key of the read-only roles (optional)
#   ROLE_PASSWORD_<ROLE>      each role's password (role name upper-cased)
#   ROLES_WAIT_SECONDS        how long to wait for the server (default 600)
#   ROLES_HOLD                non-empty: stay idle once done (a container that exits is restarted)
set -euo pipefail
# As PID 1, bash ignores a SIGTERM it has no trap for: the pod would wait out its grace period
# on this container at every restart.
trap 'exit 143' TERM INT
# Every password first, so that a missing one changes nothing.
for entry in $DATABASE_ROLES ${DATABASE_READERS:-}; do
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
# A role without admin attributes, created if missing. A new role cannot log in yet: on a fresh
# server the migrations Job (as the application role) starts while this script runs, and a
# table it created before the readers' default privileges existed would stay unreadable to
# them, silently (the API's reads refused, its writes accepted).
make_role() {
  psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v role="$1" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I NOLOGIN', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
SQL
}
# Login, with the password of its ROLE_PASSWORD_<ROLE> variable: it reaches psql through the
# environment, never the command line.
allow_login() {
  local variable="ROLE_PASSWORD_${1^^}"
  ROLE_PASSWORD="${!variable}" psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v role="$1" \
    >/dev/null <<'SQL'
\getenv password ROLE_PASSWORD
ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';
SQL
}
# No role but a database's own (and the superuser) may connect to it.
for entry in $DATABASE_ROLES; do
  IFS=: read -r role database key <<< "$entry"
  make_role "$role"
  psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v role="$role" -v name="$database" >/dev/null <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
ALTER DATABASE :"name" OWNER TO :"role";
REVOKE CONNECT, TEMPORARY ON DATABASE :"name" FROM PUBLIC;
\connect :"name"
-- Nobody but the owner creates objects in its schemas (PostgreSQL before 15 let PUBLIC create
-- in `public`, and pg_upgrade keeps that): a role that may read here must not be able to plant
-- a function or operator the owner's queries would then resolve to.
SELECT format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', n.nspname)
FROM pg_namespace n
WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  AND has_schema_privilege('public', n.oid, 'CREATE') \gexec
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
# Read-only roles, after the owners: SELECT on the tables of every schema the database's owner
# has, and on those it creates later (default privileges: a migration's new table included).
# Nothing else: no CREATE (revoked above), no TEMPORARY, no write. Reading in a read-only
# transaction by default also stops a function with side effects run through it.
for entry in ${DATABASE_READERS:-}; do
  IFS=: read -r role database key <<< "$entry"
  make_role "$role"
  psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v role="$role" -v name="$database" >/dev/null <<'SQL'
ALTER ROLE :"role" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"name" TO :"role";
\connect :"name"
SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = current_database() \gset
SELECT format('GRANT USAGE ON SCHEMA %1$I TO %2$I; GRANT SELECT ON ALL TABLES IN SCHEMA %1$I TO %2$I;'
              ' ALTER DEFAULT PRIVILEGES FOR ROLE %3$I IN SCHEMA %1$I GRANT SELECT ON TABLES TO %2$I',
              n.nspname, :'role', :'owner')
FROM pg_namespace n
WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspowner IN (:'owner'::regrole, 'pg_database_owner'::regrole) \gexec
SQL
  echo "database roles: $role reads every table of $database, and only reads"
done
# Nor may a role connect to a database that is not its own: PostgreSQL grants CONNECT and
# TEMPORARY on every new database to PUBLIC, the maintenance database `postgres` and
# `template1` included. Owners keep theirs (an owner's privileges do not come from PUBLIC), and
# the superuser needs none.
revoked=$(psql --no-psqlrc --quiet --tuples-only --no-align -v ON_ERROR_STOP=1 <<'SQL'
SELECT datname FROM pg_database
WHERE datallowconn
  AND (has_database_privilege('public', oid, 'CONNECT')
       OR has_database_privilege('public', oid, 'TEMPORARY'))
ORDER BY datname;
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', datname)
FROM pg_database
WHERE datallowconn
  AND (has_database_privilege('public', oid, 'CONNECT')
       OR has_database_privilege('public', oid, 'TEMPORARY')) \gexec
SQL
)
if [ -n "$revoked" ]; then
  echo "database roles: PUBLIC may no longer connect to ${revoked//$'\n'/, }"
fi
# Only now may the roles log in: every database has its owner and every reader its grants and
# default privileges (on a restart they already could, and this sets a changed password).
for entry in $DATABASE_ROLES ${DATABASE_READERS:-}; do
  IFS=: read -r role database key <<< "$entry"
  allow_login "$role"
done
if [ -n "${ROLES_HOLD:-}" ]; then
  sleep infinity &
  wait
fi
