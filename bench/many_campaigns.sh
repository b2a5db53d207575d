#!/usr/bin/env bash
# Many small campaigns at once: by default 1,000 tenants × 10 campaigns × 20 recipients
# (200,000 messages), all due at the same moment, provider latency 0 ms, two workers. Prints
# the messages per second, how long the scheduler's ticks took meanwhile (compare with
# bench/run.sh's one-campaign rate) and the CPU time each part of the system spent per
# message. Release build; everything on this machine.
# Usage: bench/many_campaigns.sh [TENANTS] [CAMPAIGNS_PER_TENANT] [RECIPIENTS]
#   RUNS=3 repeats the run; WORKERS=1 runs one worker; WORKERS=0 none (the campaigns stay
#   due: a full table to look at the scheduler's queries on; the run then fails at its
#   timeout, and the database stays as it was until the next bench).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
TENANTS="${1:-1000}"
PER_TENANT="${2:-10}"
RECIPIENTS="${3:-20}"

build_bench_binaries
cargo build --release --quiet --bin herald-admin --bin herald
trap stop_services EXIT

# The admin at this scale, once the campaigns have run: the campaign list's first page as the
# web page asks for it, and every page of it through the CLI.
measure_lists() {
  local url=http://127.0.0.1:9520 key first started count
  HERALD_ADMIN_LISTEN=127.0.0.1:9520 "$BIN/herald-admin" serve >"$LOGS/admin-many.log" 2>&1 & pids+=($!)
  wait_healthy "$url"
  key="$("$BIN/herald-admin" keys create --operator --name bench)"
  first="$(curl -fsS -o /dev/null -w '%{size_download} bytes in %{time_total} s' \
    -H "Authorization: Bearer $key" "$url/api/v1/campaigns?limit=50")"
  started="$(date +%s%N)"
  count="$("$BIN/herald" --url "$url" --key "$key" --json campaign list --all --limit 1000 \
    | grep -c '"tenant_name"')"
  echo "  admin: the campaign list's first page (50): $first; all $count campaigns" \
    "in pages of 1,000 (herald campaign list --all): $(( ($(date +%s%N) - started) / 1000000 )) ms"
}

run_one() {
  fresh_database_and_vhost herald_bench
  "$BIN/herald-scheduler" migrate
  export HERALD_SIMULATOR_URL="http://127.0.0.1:9191"
  "$BIN/herald-simulator" --listen 127.0.0.1:9191 --latency fixed:0 >"$LOGS/simulator-many.log" 2>&1 & pids+=($!)
  local cpu=(--cpu "simulator=$!") workers=()
  HERALD_OPS_LISTEN=127.0.0.1:9510 "$BIN/herald-scheduler" >"$LOGS/scheduler-many.log" 2>&1 & pids+=($!)
  cpu+=(--cpu "scheduler=$!")
  for n in $(seq 1 "${WORKERS:-2}"); do
    HERALD_OPS_LISTEN="127.0.0.1:$((9510 + n))" "$BIN/herald-worker" >"$LOGS/worker-many-$n.log" 2>&1 & pids+=($!)
    workers+=($!)
  done
  # WORKERS=0 leaves the campaigns running and due, for looking at the scheduler's queries.
  if [ "${#workers[@]}" -gt 0 ]; then cpu+=(--cpu "workers=$(IFS=,; echo "${workers[*]}")"); fi
  wait_healthy "$HERALD_SIMULATOR_URL"
  # shellcheck disable=SC2046 # one word per argument
  "$BIN/herald-demo" many --tenants "$TENANTS" --campaigns-per-tenant "$PER_TENANT" \
    --recipients "$RECIPIENTS" --scheduler-metrics http://127.0.0.1:9510/metrics \
    --label "${WORKERS:-2} workers, latency 0 ms" "${cpu[@]}" $(service_cpu_parts)
  measure_lists
  stop_services
}

echo "== Herald many-campaigns benchmark: $TENANTS tenants × $PER_TENANT campaigns × $RECIPIENTS recipients, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for _ in $(seq 1 "${RUNS:-1}"); do run_one; done
