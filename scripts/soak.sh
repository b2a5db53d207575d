#!/usr/bin/env bash
# The soak (tests/tests/faults/soak.rs): a steady load through three rate-limited providers
# of different speeds (5 ms, 100–300 ms, ~1.5 s) with errors, lost answers and a worker
# killed half-way, for HERALD_SOAK_SECS seconds (600 by default; about 11 minutes in all, after the release build).
# Fails if a Herald process's memory grows (more than 25% + 16 MiB after warm-up), a lane
# grows past 3,000 messages, dispatch stalls, or Herald's counts differ from the providers'.
# Prints a `SOAK {json}` summary.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
echo "==> cargo build --release"
cargo build --release --workspace --quiet --bins
echo "==> soak (${HERALD_SOAK_SECS:-600} s)"
cargo test --release --quiet -p herald-tests --test faults soak -- --ignored --nocapture
