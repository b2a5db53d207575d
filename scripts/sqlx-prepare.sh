#!/usr/bin/env bash
# The store's compile-time-checked statements (`sqlx::query!` and friends) are checked against
# the schema as `.sqlx/` describes it (committed), so builds need no database. This script
# regenerates `.sqlx/` from a fresh database with the schema applied: run it after changing
# such a statement or a migration, and commit the result.
#   --check   regenerates into a temporary directory and fails if `.sqlx/` differs (part of
#             the test command: a statement or migration changed without it).
# What sqlx records (parameter types, which columns may be NULL) comes from the server's own
# answers, which may differ between PostgreSQL majors: `.sqlx/postgres-major` names the one it
# was made on (Debian bookworm's 15), and the check compares only on that major (elsewhere it
# says so and passes: the build still checks every statement against the committed data).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh >/dev/null

# A database of this run's own (two checkouts may run this at once), dropped on exit.
name="herald_sqlx_$$"
out="$(mktemp -d)"
cleanup() {
  rm -rf "$out"
  $SUDO su postgres -c "psql -qAt -c 'DROP DATABASE IF EXISTS $name WITH (FORCE)'" >/dev/null 2>&1 || true
}
trap cleanup EXIT
$SUDO su postgres -c "psql -qAt -c 'CREATE DATABASE $name OWNER herald'" >/dev/null
url="postgres://herald:herald@127.0.0.1:5432/$name?sslmode=disable"
# Applied with psql, each in a transaction as sqlx's migrator does (but one that begins
# `-- no-transaction`, as sqlx's does): building the binary that migrates would need this
# very data.
for migration in migrations/*.sql; do
  one=(--single-transaction)
  head -n 1 "$migration" | grep -q '^-- no-transaction' && one=()
  psql "$url" -q -v ON_ERROR_STOP=1 "${one[@]}" -f "$migration" >/dev/null
done

# Touched so that cargo compiles the store again, expanding every statement's macro against
# the database (a proc macro's environment is not part of cargo's fingerprint).
touch store/src/lib.rs
SQLX_OFFLINE=false DATABASE_URL="$url" SQLX_OFFLINE_DIR="$out" cargo check --quiet -p herald-store
count="$(find "$out" -name 'query-*.json' | wc -l)"
major="$(psql "$url" -qAt -c 'SELECT current_setting($$server_version_num$$)::int / 10000')"
echo "$major" >"$out/postgres-major"
if [ "$count" -eq 0 ]; then
  echo "error: the store's build described no statement; .sqlx/ left as it was" >&2
  exit 1
fi

if [ "${1:-}" = --check ]; then
  made_on="$(cat .sqlx/postgres-major 2>/dev/null || echo unknown)"
  if [ "$made_on" != "$major" ]; then
    echo "==> .sqlx/ was made on PostgreSQL $made_on, this server is $major: not compared"
    exit 0
  fi
  if ! diff -r "$out" .sqlx >/dev/null 2>&1; then
    diff -r "$out" .sqlx | head -20 >&2 || true
    echo "error: .sqlx/ does not describe the store's statements and schema as they are; run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    exit 1
  fi
  echo "==> .sqlx/ is up to date ($count statements)"
else
  rm -rf .sqlx
  mkdir .sqlx
  cp "$out"/query-*.json "$out/postgres-major" .sqlx/
  echo "==> .sqlx/ regenerated: $count statements"
fi
