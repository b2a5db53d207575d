#!/usr/bin/env bash
# End-to-end throughput of one worker at provider latencies of 0 ms and 200 ms.
# Usage: bench/run.sh [RECIPIENTS]   (default 60000; LATENCIES="0" runs one latency only). Results go to stdout; record them in
# BENCHMARKS.md. Release build; everything on this machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
RECIPIENTS="${1:-60000}"

build_bench_binaries

trap stop_services EXIT

run_one() {
  local latency="$1"
  fresh_database_and_vhost herald_bench
  "$BIN/herald-scheduler" migrate
  export HERALD_SIMULATOR_URL="http://127.0.0.1:9191"
  "$BIN/herald-simulator" --listen 127.0.0.1:9191 --latency "fixed:$latency" >"$LOGS/simulator-$latency.log" 2>&1 & pids+=($!)
  HERALD_SCHEDULER_MAX_BUDGET=50000 "$BIN/herald-scheduler" >"$LOGS/scheduler-$latency.log" 2>&1 & pids+=($!)
  "$BIN/herald-worker" >"$LOGS/worker-$latency.log" 2>&1 & pids+=($!)
  wait_healthy "$HERALD_SIMULATOR_URL"
  "$BIN/herald-demo" bench --recipients "$RECIPIENTS" --label "1 worker, prefetch 300, latency ${latency} ms"
  stop_services
}

echo "== Herald end-to-end benchmark: $RECIPIENTS recipients, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for latency in ${LATENCIES:-0 200}; do run_one "$latency"; done
