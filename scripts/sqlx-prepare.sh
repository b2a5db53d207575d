#!/usr/bin/env bash
# The store's compile-time-checked statements (`sqlx::query!` and friends) are checked against
# the schema as `.sqlx/` describes it (committed), so builds need no database. This script
# regenerates `.sqlx/` from a fresh database with every migration applied: run it after
# changing such a statement or the schema, and commit the result.
#   --check   regenerates into a temporary directory and fails if `.sqlx/` differs (part of
#             the test command: a statement or migration changed without it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh >/dev/null

fresh_database_and_vhost herald_sqlx_prepare
# Applied with psql, each in a transaction as sqlx's migrator does: building the binary that
# migrates would need this very data.
for migration in migrations/*.sql; do
  psql "$HERALD_DATABASE_URL" -q -v ON_ERROR_STOP=1 --single-transaction -f "$migration" >/dev/null
done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Touched so that cargo compiles the store again, expanding every statement's macro against
# the database (a proc macro's environment is not part of cargo's fingerprint).
touch store/src/lib.rs
SQLX_OFFLINE=false DATABASE_URL="$HERALD_DATABASE_URL" SQLX_OFFLINE_DIR="$out" \
  cargo check --quiet -p herald-store

if [ "${1:-}" = --check ]; then
  if ! diff -r "$out" .sqlx >/dev/null 2>&1; then
    diff -r "$out" .sqlx | head -20 >&2 || true
    echo "error: .sqlx/ does not describe the store's statements and schema as they are; run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    exit 1
  fi
  echo "==> .sqlx/ is up to date ($(find .sqlx -name '*.json' | wc -l) statements)"
else
  rm -rf .sqlx
  mkdir .sqlx
  cp "$out"/*.json .sqlx/
  echo "==> .sqlx/ regenerated: $(find .sqlx -name '*.json' | wc -l) statements"
fi
