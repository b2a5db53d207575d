#!/usr/bin/env bash
# Rate limits: how much of a provider's limit Herald uses without ever exceeding it. Runs the
# two timing tests of tests/tests/exclusive RUNS times (default 5) and prints, per run and as
# medians: for 4 workers at a 50/s limit, the busiest 1-second window at the simulator and
# the average rate from first request to last; for a primary at 20/s with an unlimited
# overflow and 10,000 recipients, the primary's busiest window and mean over whole seconds.
# Release build, as Herald is deployed (PROFILE=debug measures what the test suite sees);
# everything on this machine. Record results in BENCHMARKS.md.
# Usage: bench/rate_limits.sh [RUNS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
RUNS="${1:-${RUNS:-5}}"

PROFILE="${PROFILE:-release}"
flag=(); [ "$PROFILE" = release ] && flag=(--release)
# The tests start the binaries found next to their own executable: build both in one profile.
cargo build "${flag[@]}" --workspace --quiet
cargo test "${flag[@]}" -p herald-tests --test exclusive --no-run --quiet 2>/dev/null
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for run in $(seq "$RUNS"); do
  cargo test "${flag[@]}" -p herald-tests --test exclusive --quiet -- --nocapture >"$out" 2>&1 || true
  limit="$(grep -o 'busiest 1-s window [0-9]*, average [0-9.]*' "$out" | tail -1 || true)"
  over="$(grep -o 'busiest 1-s window [0-9]*, primary [0-9.]*' "$out" | tail -1 || true)"
  failed="$(grep -o '^[0-9]* requests in one 1-second window (limit [0-9]*)' "$out" || true)"
  echo "run $run: 50/s limit: ${limit:-no figure} | overflow: ${over:-no figure}${failed:+ | FAILED: $failed}"
done | tee "$out.runs"
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); else print "-"}'; }
echo "medians over $RUNS runs ($PROFILE build):"
echo "  50/s limit, 4 workers: average $(grep -o 'average [0-9.]*' "$out.runs" | cut -d' ' -f2 | median)/s," \
  "busiest window $(grep -o '50/s limit: busiest 1-s window [0-9]*' "$out.runs" | grep -o '[0-9]*$' | median)"
echo "  primary at 20/s beside overflow: $(grep -o 'primary [0-9.]*' "$out.runs" | cut -d' ' -f2 | median)/s," \
  "busiest window $(grep -o 'overflow: busiest 1-s window [0-9]*' "$out.runs" | grep -o '[0-9]*$' | median)"
rm -f "$out.runs"
