#!/usr/bin/env bash
# shop's PostgreSQL roles: one per service (shop_user, shop_order, shop_inventory,
# shop_notification), each a plain LOGIN role that owns its own database shop_<service> and
# nothing else. CONNECT (and TEMPORARY) on those databases is revoked from PUBLIC, so no role
# but the owner (and superusers) can connect to a service's database.
#
# docker-compose.yml mounts this into the postgres image's /docker-entrypoint-initdb.d/, which
# runs it once, on the first start of an empty data directory, as the superuser. It is
# idempotent, so it can also be run again (e.g. after changing a password in .env):
#
#   docker compose exec -T postgres bash /docker-entrypoint-initdb.d/10-shop-roles.sh
#
# or against any server as a superuser (psql's PGHOST, PGPORT, PGUSER, PGPASSWORD apply):
#
#   PGHOST=db.example PGUSER=postgres USER_DB_PASSWORD=… ORDER_DB_PASSWORD=… \
#   INVENTORY_DB_PASSWORD=… NOTIFICATION_DB_PASSWORD=… deploy/postgres/init.sh
#
# Environment:
#   USER_DB_PASSWORD, ORDER_DB_PASSWORD, INVENTORY_DB_PASSWORD, NOTIFICATION_DB_PASSWORD
#                    the roles' passwords (required; URL-safe characters only, they go into
#                    <SERVICE>_DATABASE_URL unescaped). Stored hashed (password_encryption,
#                    scram-sha-256 by default); they reach psql through its environment, never a
#                    command line.
#   POSTGRES_USER    the superuser to run as when PGUSER is unset (default postgres)
#   SHOP_PG_PREFIX   prepended to every role and database name (default empty), for trying it
#                    out next to a real installation, e.g. lp_ gives lp_shop_order
#
# The image may source this file instead of running it, so it sets no shell options that
# would outlive it; errors still stop the image's entrypoint, which runs with -e.

shop_pg_init() {
  local prefix=${SHOP_PG_PREFIX:-} service var password
  for service in user order inventory notification; do
    var=${service^^}_DB_PASSWORD
    password=${!var:-}
    if [ -z "$password" ]; then
      echo "shop postgres init: $var is not set (docker compose reads it from .env)" >&2
      return 1
    fi
    if ! [[ "$password" =~ ^[A-Za-z0-9._~-]+$ ]]; then
      echo "shop postgres init: $var must be URL-safe (letters, digits, . _ ~ -): it goes into ${service^^}_DATABASE_URL as is; e.g. openssl rand -hex 24" >&2
      return 1
    fi
  done
  for service in user order inventory notification; do
    var=${service^^}_DB_PASSWORD
    password=${!var}
    echo "shop postgres init: role ${prefix}shop_$service owns database ${prefix}shop_$service"
    # psql's variables: :'x' is x as a literal, :"x" as an identifier (both quoted safely).
    # The password reaches psql through its environment (\getenv), not its command line.
    SHOP_PG_PASSWORD=$password psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 \
      --username "${PGUSER:-${POSTGRES_USER:-postgres}}" --dbname postgres \
      --set role="${prefix}shop_$service" --set db="${prefix}shop_$service" <<'SQL' || return 1
\getenv password SHOP_PG_PASSWORD
SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
-- A plain role: it logs in, and may do nothing cluster-wide (no new databases or roles).
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"role";
-- Only the owner connects. (The owner keeps every right on its database; the service's
-- migrations create its tables in the public schema, which the database owner owns.)
REVOKE CONNECT, TEMPORARY ON DATABASE :"db" FROM PUBLIC;
SQL
  done
}
shop_pg_init
