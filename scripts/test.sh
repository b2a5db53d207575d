#!/usr/bin/env bash
# Runs Herald's whole test suite against real PostgreSQL, RabbitMQ and the provider simulator:
# the deployment files' lint, formatting, that .sqlx/ describes the store's compile-time-checked
# statements, lints, unit tests, the Twilio contract check, the
# admin API against its OpenAPI document, the integration tests and the fault suite
# (scripts/faults.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh

# Leftovers of earlier runs: one database and one vhost per integration test.
drop_test_leftovers

echo "==> deployment files (hadolint, docker-compose config, kubernetes-validate, KEDA schema)"
scripts/lint-deploy.sh
echo "==> cargo fmt --check"; cargo fmt --all -- --check
# Before clippy: a statement changed without .sqlx/ is named here, not as a compile error.
echo "==> .sqlx/ describes the store's statements"; scripts/sqlx-prepare.sh --check
echo "==> cargo clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
# The integration tests run the built binaries, so build them first.
echo "==> cargo build"; cargo build --workspace --quiet
echo "==> cargo test"
# Each integration test runs its own simulator, scheduler and workers: two at a time suit a
# 2-core machine.
threads="${HERALD_TEST_THREADS:-2}"
cargo test --workspace --exclude herald-tests --quiet -- --test-threads "$threads"
scripts/contract.sh
scripts/api-schema.sh
cargo test -p herald-tests --quiet --lib --test integration --test exclusive --test backends -- --test-threads "$threads"
# The fault suite runs on release binaries, after everything else.
if [ "${HERALD_SKIP_FAULTS:-0}" = 1 ]; then
  echo "==> fault suite skipped (HERALD_SKIP_FAULTS=1)"
else
  scripts/faults.sh
fi
# Everything passed: nothing to look into, so this run's leftovers go too.
drop_test_leftovers
