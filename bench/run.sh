#!/usr/bin/env bash
# End-to-end throughput of one worker at provider latencies of 0 ms and 200 ms.
# Usage: bench/run.sh [RECIPIENTS]   (default 60000)
#   LATENCIES="0"     runs one latency only; a latency is milliseconds or one of the
#                     simulator's distributions (LATENCIES="exp:200 uniform:0-400")
#   RECEIPTS=on       the simulator posts a `sent` and a `delivered` receipt for every message
#                     to a running receiver (receipts at twice the send rate); `both` runs
#                     without and with, alternately; default off
#   RUNS=3            repeats each (latency, receipts) run, then prints each figure's
#                     median per set-up (bench/medians.py)
#   WORKERS=2         runs that many workers (default 1)
#   PREFETCH=2000     the worker's requests in flight per provider lane (default: the
#                     worker's own default); the worker's peak RSS is printed with each run
#   THREADS=1         each worker's runtime threads (default: one per CPU)
#   BATCH_SIZE=1000   the campaign's batch_size (default 100000, the most the admin takes;
#                     the admin's own default is 1000)
#   MAX_BUDGET=20000  the scheduler's HERALD_SCHEDULER_MAX_BUDGET (default 50000 here; the
#                     scheduler's own default is 20000)
# Results go to stdout, with the CPU time each part of the system spent per message
# (simulator, receiver, scheduler, worker, PostgreSQL, RabbitMQ); record them in
# BENCHMARKS.md. Before each run, RabbitMQ alone is measured (`herald-demo broker`: a
# persistent message per recipient, up to 200,000, published with confirms into a lane and
# consumed with an ack each, no Herald logic), and Herald's rate is also given as a fraction
# of it. Release build; everything on this machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
RECIPIENTS="${1:-60000}"

build_bench_binaries

trap stop_services EXIT

run_one() {
  local latency="$1" receipts="$2"
  fresh_database_and_vhost herald_bench
  "$BIN/herald-scheduler" migrate
  export HERALD_SIMULATOR_URL="http://127.0.0.1:9191"
  local workers=${WORKERS:-1} worker_pids=()
  # Plain milliseconds are a fixed latency; anything else is the simulator's own spec.
  local spec="$latency" shown="$latency"
  case "$latency" in *:*) ;; *) spec="fixed:$latency" shown="$latency ms" ;; esac
  local worker_env=() label="$workers worker(s), prefetch ${PREFETCH:-default}, latency $shown"
  [ -n "${BATCH_SIZE:-}" ] && label="$label, batch size $BATCH_SIZE"
  [ -n "${MAX_BUDGET:-}" ] && label="$label, max budget $MAX_BUDGET"
  [ -n "${PREFETCH:-}" ] && worker_env+=(HERALD_WORKER_PREFETCH="$PREFETCH")
  if [ -n "${THREADS:-}" ]; then
    worker_env+=(HERALD_WORKER_THREADS="$THREADS")
    label="$label, $THREADS thread(s) each"
  fi
  "$BIN/herald-simulator" --listen 127.0.0.1:9191 --latency "$spec" >"$LOGS/simulator-$latency.log" 2>&1 & pids+=($!)
  local cpu=(--cpu "simulator=$!")
  if [ "$receipts" = on ]; then
    HERALD_RECEIVER_LISTEN=127.0.0.1:8191 "$BIN/herald-receiver" >"$LOGS/receiver-$latency.log" 2>&1 & pids+=($!)
    cpu+=(--cpu "receiver=$!")
    worker_env+=(HERALD_RECEIVER_URL=http://127.0.0.1:8191)
    label="$label, receipts"
    wait_healthy http://127.0.0.1:8191
  fi
  HERALD_SCHEDULER_MAX_BUDGET="${MAX_BUDGET:-50000}" "$BIN/herald-scheduler" >"$LOGS/scheduler-$latency.log" 2>&1 & pids+=($!)
  cpu+=(--cpu "scheduler=$!")
  for n in $(seq 1 "$workers"); do
    env "${worker_env[@]}" HERALD_OPS_LISTEN="127.0.0.1:$((9560 + n))" "$BIN/herald-worker" >"$LOGS/worker-$latency-$n.log" 2>&1 & pids+=($!)
    worker_pids+=($!)
  done
  cpu+=(--cpu "worker=$(IFS=,; echo "${worker_pids[*]}")")
  wait_healthy "$HERALD_SIMULATOR_URL"
  # shellcheck disable=SC2046 # one word per argument
  "$BIN/herald-demo" bench --recipients "$RECIPIENTS" --batch-size "${BATCH_SIZE:-100000}" --broker-ceiling --label "$label" "${cpu[@]}" $(service_cpu_parts) | tee -a "$results"
  stop_services
}

case "${RECEIPTS:-off}" in
  off) modes="off" ;;
  on) modes="on" ;;
  both) modes="off on" ;;
  *) echo "RECEIPTS must be off, on or both" >&2; exit 2 ;;
esac
results="$LOGS/run-results.txt"
: >"$results"
echo "== Herald end-to-end benchmark: $RECIPIENTS recipients, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for latency in ${LATENCIES:-0 200}; do
  for _ in $(seq 1 "${RUNS:-1}"); do
    for mode in $modes; do run_one "$latency" "$mode"; done
  done
done
# Repeated runs: the median of each figure per set-up (the one to quote).
if [ "${RUNS:-1}" -gt 1 ]; then python3 bench/medians.py <"$results"; fi
