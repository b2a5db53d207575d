# Sourced by the other scripts: where builds go and how services are reached.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One build shared by every checkout on this machine (CI's fresh clone reuses it).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald/target}"
# Loopback: no TLS (sqlx's default, sslmode=prefer, encrypts whenever the server offers it, as
# Debian's PostgreSQL does; that cost 16% of the bench's throughput for nothing on loopback).
export HERALD_DATABASE_URL="${HERALD_DATABASE_URL:-postgres://herald:herald@127.0.0.1:5432/herald?sslmode=disable}"
export HERALD_AMQP_URL="${HERALD_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
# Root commands (the services, private test clusters) go through sudo unless we are root.
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

require_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "error: Rust (cargo ≥ 1.94) is needed: https://rustup.rs" >&2; exit 1; }
}

# Builds the release binaries a bench runs and sets BIN (where they are) and LOGS (where
# the bench's services write, created). HERALD_BENCH_BIN names a directory of binaries
# built before (another commit's, to compare two builds run by run) instead.
build_bench_binaries() {
  warn_test_leftovers
  if [ -n "${HERALD_BENCH_BIN:-}" ]; then
    BIN="$HERALD_BENCH_BIN"
  else
    cargo build --release --quiet --bin herald-scheduler --bin herald-worker --bin herald-receiver --bin herald-simulator --bin herald-demo
    BIN="$CARGO_TARGET_DIR/release"
  fi
  refuse_running_services
  LOGS="$ROOT/.demo/bench"
  mkdir -p "$LOGS"
}

# A bench beside Herald services already running (a test suite, another bench, a process left
# by an interrupted run) measures them too, and one holding a port the bench uses would do
# its work: one left on a worker's metrics port once made a run count another worker's
# sends. Stops the bench with their PIDs instead.
refuse_running_services() {
  local running
  running="$(pgrep -f '(^|/)herald-(scheduler|worker|receiver|simulator|admin)( |$)' | paste -sd ' ' || true)"
  if [ -n "$running" ]; then
    echo "error: Herald services are already running (PIDs $running); stop them before a bench" >&2
    exit 1
  fi
}

# Integration tests leave a database and a vhost each (kept for a failed test's post-mortem;
# scripts/test.sh drops them before a run, and after one that passed).
drop_test_leftovers() {
  $SUDO su postgres -c "psql -qAt" <<'SQL' >/dev/null 2>&1 || true
SELECT format('DROP DATABASE %I', datname) FROM pg_database WHERE datname LIKE 'herald\_t\_%'\gexec
SQL
  local vhost
  for vhost in $(curl -fsS -u guest:guest http://127.0.0.1:15672/api/vhosts | grep -o '"name":"herald_t_[0-9a-f]*"' | cut -d'"' -f4); do
    curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$vhost" >/dev/null || true
  done
}

# A bench beside many leftover test databases measures PostgreSQL's autovacuum visiting them
# too: with 158 of them, one worker sent 10–14% fewer messages a second at 0 ms.
warn_test_leftovers() {
  local n
  n=$($SUDO su postgres -c "psql -qAt -c \"SELECT count(*) FROM pg_database WHERE datname LIKE 'herald\\_t\\_%'\"" 2>/dev/null || echo 0)
  if [ "${n:-0}" -gt 20 ]; then
    echo "warning: $n databases left by integration tests slow PostgreSQL down; drop them first: bash -c 'source scripts/env.sh; drop_test_leftovers'" >&2
  fi
}

# `herald-demo --cpu` arguments for the services every bench shares: PostgreSQL and RabbitMQ,
# each as every process of its user.
service_cpu_parts() {
  echo "--cpu postgres=uid:$(id -u postgres) --cpu rabbitmq=uid:$(id -u rabbitmq)"
}

# Gives a run a database and a vhost of its own, both named $1, empty, and points
# HERALD_DATABASE_URL / HERALD_AMQP_URL at them.
fresh_database_and_vhost() {
  local name="$1"
  $SUDO su postgres -c "psql -qAt" >/dev/null <<SQL
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$name';
DROP DATABASE IF EXISTS "$name";
CREATE DATABASE "$name" OWNER herald;
SQL
  local api="http://127.0.0.1:15672/api"
  curl -fsS -u guest:guest -X DELETE "$api/vhosts/$name" >/dev/null 2>&1 || true
  curl -fsS -u guest:guest -X PUT "$api/vhosts/$name" >/dev/null
  curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
    -d '{"configure":".*","write":".*","read":".*"}' "$api/permissions/$name/guest" >/dev/null
  export HERALD_DATABASE_URL="postgres://herald:herald@127.0.0.1:5432/$name?sslmode=disable"
  export HERALD_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$name"
}

# Background services of a script: start with `… & pids+=($!)`, stop all with stop_services
# (also on exit: `trap stop_services EXIT`).
pids=()
stop_services() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# Waits (up to 10 s) for a Herald HTTP service at $1 to answer /healthz.
wait_healthy() {
  for _ in $(seq 1 50); do curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "no answer from $1/healthz" >&2
  return 1
}
