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
cargo test -p herald-tests --quiet --lib --test integration --test backends -- --test-threads "$threads"
# The timing tests (a provider's rate limit in every 1-second window, a newcomer's first send)
# run on release binaries, as Herald is deployed: with debug binaries on this 2-core machine
# the rate-limit test's busiest 1-second window was at its limit of 50 in most runs and over
# it (51, 53) in two of ten, release binaries 49 in every run (BENCHMARKS.md 2026-12-12).
echo "==> cargo build --release"; cargo build --release --workspace --quiet --bins
echo "==> timing tests (release)"
cargo test --release -p herald-tests --quiet --test exclusive
# The fault suite runs on release binaries, after everything else.
if [ "${HERALD_SKIP_FAULTS:-0}" = 1 ]; then
  echo "==> fault suite skipped (HERALD_SKIP_FAULTS=1)"
else
  scripts/faults.sh
fi
# Everything passed: nothing to look into, so this run's leftovers go too.
drop_test_leftovers
