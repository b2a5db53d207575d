#!/usr/bin/env bash
# The fault suite (tests/tests/faults): runs of 10,000–20,000 recipients with a fault struck
# mid-run (workers, schedulers, RabbitMQ and PostgreSQL killed or restarted, networks cut, a
# failing provider, poison messages, a RabbitMQ cluster losing a node), each classifying every
# recipient as sent once, lost, duplicated, unexpected or stuck. Runs on release binaries (the
# runs are load) as root or with password-less sudo (it starts PostgreSQL clusters and
# RabbitMQ nodes of its own); about 15 minutes on 2 cores, after the release build.
#
#   scripts/faults.sh             every scenario
#   scripts/faults.sh broker      the scenarios whose name contains "broker"
#
# Each scenario prints a `FAULT-SUITE {json}` line; they are gathered at the end and kept in
# $CARGO_TARGET_DIR/fault-suite.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh

# Private services a killed earlier run left behind.
pkill -9 -f 'RABBITMQ_NODENAME herald-|-sname herald-|-name herald-' 2>/dev/null || true
pkill -9 -f 'postgres -D /tmp/herald-pg-' 2>/dev/null || true
$SUDO rm -rf /tmp/herald-rmq-* /tmp/herald-pg-* 2>/dev/null || true

echo "==> cargo build --release"
cargo build --release --workspace --quiet --bins
echo "==> fault suite"
log="$CARGO_TARGET_DIR/fault-suite.log"
status=0
cargo test --release --quiet -p herald-tests --test faults -- --test-threads 2 --nocapture "$@" 2>&1 \
  | tee "$log" | grep -v 'FAULT-SUITE ' || status=$?
echo "==> fault suite: one line per scenario"
# (cargo's progress dots may precede a line)
grep -o 'FAULT-SUITE {.*' "$log" | sed 's/^FAULT-SUITE //' || true
exit "$status"
