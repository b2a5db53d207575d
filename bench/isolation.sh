#!/usr/bin/env bash
# Provider isolation: provider A's end-to-end throughput alone, then beside provider B (2 s
# per request, 30% of requests hanging until B's 3 s timeout; B capped at 100 in flight)
# running a big campaign for another tenant. Alternates the two, RUNS times each, and prints the medians and the drop.
# Usage: bench/isolation.sh [RECIPIENTS]   (default 60000; LATENCY=ms of A, default 0;
# RUNS, default 3). Release build; everything on this machine. Record results in BENCHMARKS.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
RECIPIENTS="${1:-60000}"
LATENCY="${LATENCY:-0}"
RUNS="${RUNS:-3}"

build_bench_binaries

trap stop_services EXIT

# run_one alone|beside: prints A's end-to-end msg/s on the last line.
run_one() {
  local mode="$1" neighbour=()
  fresh_database_and_vhost herald_bench
  "$BIN/herald-scheduler" migrate >/dev/null 2>&1
  export HERALD_SIMULATOR_URL="http://127.0.0.1:9191"
  "$BIN/herald-simulator" --listen 127.0.0.1:9191 --latency "fixed:$LATENCY" >"$LOGS/iso-a.log" 2>&1 & pids+=($!)
  wait_healthy "$HERALD_SIMULATOR_URL"
  if [ "$mode" = beside ]; then
    "$BIN/herald-simulator" --listen 127.0.0.1:9192 --latency fixed:2000 --timeout-rate 0.3 \
      >"$LOGS/iso-b.log" 2>&1 & pids+=($!)
    wait_healthy "http://127.0.0.1:9192"
    neighbour=(--neighbour-url "http://127.0.0.1:9192")
  fi
  HERALD_SCHEDULER_MAX_BUDGET=50000 "$BIN/herald-scheduler" >"$LOGS/iso-scheduler.log" 2>&1 & pids+=($!)
  "$BIN/herald-worker" >"$LOGS/iso-worker.log" 2>&1 & pids+=($!)
  "$BIN/herald-demo" bench --recipients "$RECIPIENTS" --label "A $mode, latency ${LATENCY} ms" "${neighbour[@]}" 2>/dev/null
  stop_services
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "== Herald isolation benchmark: $RECIPIENTS recipients via A (${LATENCY} ms), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
alone=() beside=()
for _ in $(seq 1 "$RUNS"); do
  out=$(run_one alone); echo "$out"
  alone+=("$(echo "$out" | grep -o '[0-9]* msg/s end to end' | cut -d' ' -f1)")
  out=$(run_one beside); echo "$out"
  beside+=("$(echo "$out" | grep -o '[0-9]* msg/s end to end' | cut -d' ' -f1)")
done
a=$(printf '%s\n' "${alone[@]}" | median)
b=$(printf '%s\n' "${beside[@]}" | median)
echo "median end to end: A alone $a msg/s, A beside B $b msg/s: $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%+.1f%%", (b - a) / a * 100}')"
