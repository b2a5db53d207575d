#!/usr/bin/env bash
# The fuzz targets, long: every parser of outside input (segment filters, phone numbers,
# CSV/NDJSON/JSON uploads, queue messages, receipt references, signatures, provider answers,
# Twilio lookups, Retry-After, webhook bodies) fed HERALD_FUZZ_CASES generated inputs each
# (20,000 by default; a few minutes on 2 cores, release build). The test command runs the
# same targets with proptest's 256 cases. A failure prints the smallest input that fails,
# and proptest keeps it in the crate's proptest-regressions/ to be replayed first next time.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo
CASES="${HERALD_FUZZ_CASES:-20000}"
echo "==> fuzz targets, $CASES cases each"
PROPTEST_CASES="$CASES" cargo test --release --quiet \
  -p herald-admin -p herald-shared -p herald-worker -p herald-receiver --test fuzz
