#!/usr/bin/env bash
# The receipt receiver alone: signed generic receipts (a `sent` and a `delivered` for each
# of RECIPIENTS messages already sent) posted by CONCURRENCY clients at once, each stored,
# deduplicated and applied to its recipient before its 200.
# Usage: bench/receipts.sh [RECIPIENTS]   (default 50000; CONCURRENCY=64, RUNS=1)
# Results go to stdout; record them in BENCHMARKS.md. Release build; everything on this machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
RECIPIENTS="${1:-50000}"

build_bench_binaries

trap stop_services EXIT

echo "== Herald receipt receiver benchmark: $RECIPIENTS recipients, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for _ in $(seq 1 "${RUNS:-1}"); do
  fresh_database_and_vhost herald_bench_receipts
  "$BIN/herald-scheduler" migrate
  HERALD_RECEIVER_LISTEN=127.0.0.1:8191 "$BIN/herald-receiver" >"$LOGS/receiver.log" 2>&1 & pids+=($!)
  wait_healthy http://127.0.0.1:8191
  "$BIN/herald-demo" receipts --recipients "$RECIPIENTS" --concurrency "${CONCURRENCY:-64}" \
    --receiver-url http://127.0.0.1:8191
  stop_services
done
