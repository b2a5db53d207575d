#!/usr/bin/env bash
# Herald's demo on one machine: installs and starts PostgreSQL and RabbitMQ where missing,
# builds Herald, starts the provider simulator (200 ms latency, delivery receipts 0.2–1.5 s
# later, 2% undelivered), the receipt receiver, a scheduler and two workers, then runs three
# tenants' campaigns (10,000, 10,000 and 1,000 recipients, started a few seconds apart) with
# live progress (sent and delivered) and a summary, and serves the admin web page (its URL and
# an operator key are printed). Services stop when the demo ends (interactive runs keep the
# admin page up until Ctrl-C, to look around).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh

echo "==> building Herald (release)"
cargo build --release --quiet --bin herald-scheduler --bin herald-worker --bin herald-receiver --bin herald-simulator --bin herald-demo --bin herald-admin --bin herald
BIN="$CARGO_TARGET_DIR/release"
LOGS="$ROOT/.demo"
mkdir -p "$LOGS"

# A fresh database and vhost each run, so the summary shows only this run and the demo's
# queues stay apart from anything else on the broker.
fresh_database_and_vhost herald_demo

echo "==> migrating"
"$BIN/herald-scheduler" migrate

trap stop_services EXIT

PORT="${HERALD_DEMO_SIMULATOR_PORT:-9090}"
export HERALD_SIMULATOR_URL="http://127.0.0.1:$PORT"
RECEIVER_PORT="${HERALD_DEMO_RECEIVER_PORT:-8090}"
# Where providers post receipts: the receiver, and the workers name it in every request.
export HERALD_RECEIVER_LISTEN="127.0.0.1:$RECEIVER_PORT"
export HERALD_RECEIVER_URL="http://127.0.0.1:$RECEIVER_PORT"
# The simulator signs its receipts with this; the demo's provider gets it as its secret.
export HERALD_SIMULATOR_WEBHOOK_SECRET="demo-$(date +%s%N)"
"$BIN/herald-simulator" --listen "127.0.0.1:$PORT" --latency fixed:200 \
  --receipt-delay uniform:200-1500 --delivery-failure-rate 0.02 >"$LOGS/simulator.log" 2>&1 & pids+=($!)
"$BIN/herald-receiver" >"$LOGS/receiver.log" 2>&1 & pids+=($!)
"$BIN/herald-scheduler" >"$LOGS/scheduler.log" 2>&1 & pids+=($!)
"$BIN/herald-worker" >"$LOGS/worker-1.log" 2>&1 & pids+=($!)
# Each service serves /metrics, /livez and /readyz on its own port (HERALD_OPS_LISTEN); the
# second worker on this machine needs one other than the worker's default.
HERALD_OPS_LISTEN=127.0.0.1:9421 "$BIN/herald-worker" >"$LOGS/worker-2.log" 2>&1 & pids+=($!)
ADMIN_PORT="${HERALD_DEMO_ADMIN_PORT:-8080}"
HERALD_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" "$BIN/herald-admin" serve >"$LOGS/admin.log" 2>&1 & pids+=($!)
OPERATOR_KEY="$("$BIN/herald-admin" keys create --operator --name demo)"
wait_healthy "$HERALD_SIMULATOR_URL"
wait_healthy "$HERALD_RECEIVER_URL"
wait_healthy "http://127.0.0.1:$ADMIN_PORT"
echo "==> simulator (200 ms latency), receipt receiver, scheduler, two workers and the admin server running; logs in $LOGS/"
echo
echo "    Admin web page: http://127.0.0.1:$ADMIN_PORT/ (sign in with the operator key)"
echo "    Operator key:   $OPERATOR_KEY"
echo "    CLI:            HERALD_ADMIN_URL=http://127.0.0.1:$ADMIN_PORT HERALD_API_KEY=$OPERATOR_KEY $BIN/herald campaign list"
echo "    Metrics:        http://127.0.0.1:9410/metrics (scheduler), :9411 and :9421 (workers),"
echo "                    :9412 (receiver), :9413 (admin); health at /livez and /readyz on each"
echo

"$BIN/herald-demo" run "$@"

if [ -t 0 ] && [ -t 1 ]; then
  echo
  echo "The admin page stays up at http://127.0.0.1:$ADMIN_PORT/ (key $OPERATOR_KEY) — press Ctrl-C to stop."
  wait
fi
