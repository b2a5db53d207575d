#!/usr/bin/env bash
# Transactional messages' latency: from `POST /api/v1/messages` (answered 202 once the
# message is committed) to the worker's lease of it (its provider request leaves right after)
# and to its recorded `sent`, for MESSAGES messages (default 200) sent one at a time,
# INTERVAL_MS apart (default 50). First on an otherwise idle system; then while another
# tenant's campaign of CAMPAIGN recipients (default 200,000) saturates the same provider's
# lane. Then fairness under a burst: two tenants' campaigns (A's and B's, FAIR recipients
# each, default 400,000: enough to outlast the burst) share the provider, and A sends BURST
# messages (default 50,000, in batches of 1,000): B's campaign should keep its rate, and A's
# campaign yield to A's messages. The rates are measured over 20 s without the burst, while
# the burst is posted (its ingestion shares this machine's two cores), after that until the
# last of A's messages is sent, over both, and for 10 s once they are (A's campaign back),
# with the CPU seconds each process spent in the first three windows. CONTROL_SECONDS=N
# makes the burst phase bench/burst.sh's control run: the burst is prepared but not posted,
# and its window lasts N seconds. Scheduler tick 2 s,
# provider latency 0 ms (LATENCY=fixed:N), one worker; release build, everything on this
# machine. Prints median, p90, p99 and max per latency phase. PHASES (default "latency
# burst") picks parts.
# Usage: bench/messages.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
require_cargo
scripts/services.sh
MESSAGES="${MESSAGES:-200}"
INTERVAL_MS="${INTERVAL_MS:-50}"
CAMPAIGN="${CAMPAIGN:-200000}"
FAIR="${FAIR:-400000}"
BURST="${BURST:-50000}"
PHASES="${PHASES:-latency burst}"
TICK_MS=2000

build_bench_binaries
cargo build --release --quiet --bin herald-admin
trap stop_services EXIT
fresh_database_and_vhost herald_bench_messages
"$BIN/herald-scheduler" migrate >/dev/null

SIM=http://127.0.0.1:9192
"$BIN/herald-simulator" --listen 127.0.0.1:9192 --latency "${LATENCY:-fixed:0}" >"$LOGS/simulator-messages.log" 2>&1 & pids+=($!)
CPU_PIDS="simulator=$!"
HERALD_TICK_MS=$TICK_MS HERALD_OPS_LISTEN=127.0.0.1:9530 "$BIN/herald-scheduler" >"$LOGS/scheduler-messages.log" 2>&1 & pids+=($!)
CPU_PIDS+=" scheduler=$!"
HERALD_OPS_LISTEN=127.0.0.1:9531 "$BIN/herald-worker" >"$LOGS/worker-messages.log" 2>&1 & pids+=($!)
CPU_PIDS+=" worker=$!"
ADMIN=http://127.0.0.1:9532
HERALD_ADMIN_LISTEN=127.0.0.1:9532 HERALD_OPS_LISTEN=127.0.0.1:9533 "$BIN/herald-admin" serve >"$LOGS/admin-messages.log" 2>&1 & pids+=($!)
CPU_PIDS+=" admin=$!"

# CPU seconds so far of each process above and of every PostgreSQL and RabbitMQ process, as
# `name=seconds …`; `cpu_since BEFORE` prints what each spent since snapshot BEFORE.
cpu_snapshot() {
  python3 - "$(id -u postgres)" "$(id -u rabbitmq)" $CPU_PIDS <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def seconds(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except OSError:
        return 0.0
users = {int(sys.argv[1]): "postgres", int(sys.argv[2]): "rabbitmq"}
totals = {name: 0.0 for name in users.values()}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        name = users.get(os.stat(f"/proc/{pid}").st_uid)
    except OSError:
        continue
    if name:
        totals[name] += seconds(pid)
for part in sys.argv[3:]:
    name, pid = part.split("=")
    totals[name] = seconds(pid)
print(" ".join(f"{k}={v:.2f}" for k, v in totals.items()))
PY
}
cpu_since() {
  python3 - "$1" "$(cpu_snapshot)" <<'PY'
import sys
before = dict(p.split("=") for p in sys.argv[1].split())
after = dict(p.split("=") for p in sys.argv[2].split())
print(", ".join(f"{k} {float(after[k]) - float(before.get(k, 0)):.1f}" for k in after))
PY
}
wait_healthy "$SIM"
wait_healthy "$ADMIN"
KEY="$("$BIN/herald-admin" keys create --operator --name bench)"

api() { curl -fsS -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$@"; }
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
sql() { psql "$HERALD_DATABASE_URL" -qAtX -c "$1"; }

A="$(api -X POST "$ADMIN/api/v1/tenants" -d '{"name":"messages","max_queued_messages":100000}' | field id)"
B="$(api -X POST "$ADMIN/api/v1/tenants" -d '{"name":"campaigns"}' | field id)"
# An operator's provider, shared by both tenants: the campaign saturates the messages' lane.
PROVIDER="$(api -X POST "$ADMIN/api/v1/providers" \
  -d "{\"name\":\"sim\",\"endpoint\":\"$SIM/v1/messages\",\"max_in_flight\":10000}" | field id)"

# Sends the messages one by one; prints the phase's latencies (ms) once all are sent.
phase() {
  local label="$1" since
  since="$(sql "SELECT now()")"
  for i in $(seq 1 "$MESSAGES"); do
    api -X POST "$ADMIN/api/v1/messages" -o /dev/null \
      -d "{\"tenant_id\":\"$A\",\"to\":\"+1555$(printf '%07d' "$i")\",\"channel\":\"sms\",\"provider_id\":\"$PROVIDER\",\"text\":\"Your code is $i\"}"
    sleep "$(python3 -c "print($INTERVAL_MS / 1000)")"
  done
  for _ in $(seq 1 120); do
    [ "$(sql "SELECT count(*) FROM messages m JOIN recipients r ON r.id = m.recipient_id
               WHERE m.created_at >= '$since' AND r.state <> 'sent'")" = 0 ] && break
    sleep 0.5
  done
  sql "SELECT '$label: ' || count(*) || ' messages; accepted → leased (request sent) ms: median '
              || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l)::numeric, 1)
              || ', p90 ' || round(percentile_cont(0.9) WITHIN GROUP (ORDER BY l)::numeric, 1)
              || ', p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l)::numeric, 1)
              || ', max ' || round(max(l)::numeric, 1)
              || '; accepted → sent recorded ms: median '
              || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 1)
              || ', p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 1)
              || ' (tick $TICK_MS ms)'
       FROM (SELECT extract(epoch FROM r.attempted_at - m.created_at) * 1000 AS l,
                    extract(epoch FROM r.sent_at - m.created_at) * 1000 AS s
             FROM messages m JOIN recipients r ON r.id = m.recipient_id
             WHERE m.created_at >= '$since' AND r.state = 'sent') x"
}

echo "== Herald transactional messages' latency: $MESSAGES messages ${INTERVAL_MS} ms apart, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
# Warm-up: the first message makes the tenant's stream and the scheduler's lane.
api -X POST "$ADMIN/api/v1/messages" -o /dev/null \
  -d "{\"tenant_id\":\"$A\",\"to\":\"+15559999999\",\"channel\":\"sms\",\"provider_id\":\"$PROVIDER\",\"text\":\"warm-up\"}"
sleep 3

# A started campaign of tenant $1 named $2 with $3 recipients (numbers from prefix $4); prints
# its id. Its batch size is the largest allowed, so that the fair plan, not the campaign's own
# batch, sets how finely its sends interleave with the messages'.
campaign() {
  local csv="$LOGS/messages-$2.csv" id
  python3 -c "
print('address')
for i in range($3):
    print(f'+1$4{i:07d}')
" >"$csv"
  id="$(api -X POST "$ADMIN/api/v1/campaigns" \
    -d "{\"tenant_id\":\"$1\",\"name\":\"$2\",\"provider_id\":\"$PROVIDER\",\"channel\":\"sms\",\"template\":\"Sale\",\"batch_size\":100000}" | field id)"
  curl -fsS -H "Authorization: Bearer $KEY" -H 'Content-Type: text/csv' --data-binary "@$csv" \
    "$ADMIN/api/v1/campaigns/$id/recipients" -o /dev/null
  api -X POST "$ADMIN/api/v1/campaigns/$id/start" -o /dev/null
  echo "$id"
}
# Messages per second sent by campaigns matching the SQL condition $1 between $2 and $3.
rate() {
  sql "SELECT round(coalesce(sum(s.sent), 0) / extract(epoch FROM '$3'::timestamptz - '$2'::timestamptz))
       FROM campaign_send_seconds s JOIN campaigns c ON c.id = s.campaign_id
       WHERE $1 AND s.second >= '$2' AND s.second < '$3'"
}

case " $PHASES " in *" latency "*)
phase "idle"
CAMPAIGN_ID="$(campaign "$B" saturating "$CAMPAIGN" 666)"
# Saturating: its first batches are out and its lane is full.
for _ in $(seq 1 60); do
  [ "$(sql "SELECT coalesce(sum(n), 0) FROM campaign_bucket_counts WHERE campaign_id = '$CAMPAIGN_ID' AND state = 'sent'")" -gt 5000 ] && break
  sleep 0.5
done
phase "beside a saturating campaign"
echo "  the campaign: $(sql "SELECT coalesce(sum(n), 0) FROM campaign_bucket_counts WHERE campaign_id = '$CAMPAIGN_ID' AND state = 'sent'") of $CAMPAIGN sent meanwhile"
# Finished, not cancelled: ending its waiting recipients would load the next phase.
for _ in $(seq 1 240); do
  [ "$(sql "SELECT status FROM campaigns WHERE id = '$CAMPAIGN_ID'")" = completed ] && break
  sleep 0.5
done
;; esac
case " $PHASES " in *" burst "*)

# Fairness under a burst: A's and B's campaigns at once, then A's messages on top.
FAIR_A="$(campaign "$A" fair-a "$FAIR" 777)"
FAIR_B="$(campaign "$B" fair-b "$FAIR" 888)"
sleep 6
# Rates (msg/s) of A's messages, A's campaign and B's campaign between $1 and $2.
rates() {
  echo "A's messages $(rate "c.tenant_id = '$A' AND c.kind = 'messages'" "$1" "$2"), A's campaign $(rate "c.id = '$FAIR_A'" "$1" "$2"), B's campaign $(rate "c.id = '$FAIR_B'" "$1" "$2") msg/s"
}
cpu0="$(cpu_snapshot)"
t0_before="$(sql "SELECT date_trunc('second', now())")"; sleep 20; t1_before="$(sql "SELECT date_trunc('second', now())")"
echo "  without a burst ($t0_before + 20 s): $(rates "$t0_before" "$t1_before"); CPU s: $(cpu_since "$cpu0")"
rm -f "$LOGS"/messages-burst-*.json
python3 - "$LOGS" "$A" "$PROVIDER" "$BURST" <<'PY'
import json, sys
logs, tenant, provider, burst = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for b in range((burst + 999) // 1000):
    items = [{"tenant_id": tenant, "to": f"+1999{b * 1000 + i:07d}", "channel": "sms",
              "provider_id": provider, "text": f"Your code is {i}"}
             for i in range(min(1000, burst - b * 1000))]
    with open(f"{logs}/messages-burst-{b:03d}.json", "w") as f:
        json.dump({"messages": items}, f)
PY
# Until the whole second `$1` is over (and its sends committed): a window's last second is
# counted only then.
after() { sql "SELECT pg_sleep(greatest(0, extract(epoch FROM '$1'::timestamptz - now()) + 0.5))" >/dev/null; }
cpu0="$(cpu_snapshot)"
t0="$(sql "SELECT date_trunc('second', now()) + interval '1 second'")"
if [ -z "${CONTROL_SECONDS:-}" ]; then
  for f in "$LOGS"/messages-burst-*.json; do
    [ -e "$f" ] || continue
    api -X POST "$ADMIN/api/v1/messages/batch" --data-binary "@$f" -o /dev/null
  done
  t1="$(sql "SELECT date_trunc('second', now())")"
else
  # The control run (bench/burst.sh): nothing posted, over a window as long as the burst
  # run's, so both measure B's campaign over the same span of its life.
  t1="$(sql "SELECT '$t0'::timestamptz + make_interval(secs => $CONTROL_SECONDS)")"
  after "$t1"
fi
posted="while $BURST of A's messages were posted"
[ -z "${CONTROL_SECONDS:-}" ] || posted="the control run's window, nothing posted"
echo "  $posted ($t0 to $t1): $(rates "$t0" "$t1"); CPU s: $(cpu_since "$cpu0")"
cpu0="$(cpu_snapshot)"
# Until the last of A's messages is out: the burst is served while any waits.
waiting="SELECT coalesce(sum(herald_unfinished(k.state, k.n, true)), 0) FROM campaign_bucket_counts k
         JOIN campaigns c ON c.id = k.campaign_id WHERE c.tenant_id = '$A' AND c.kind = 'messages'"
drained=""
for _ in $(seq 1 600); do
  [ "$(sql "$waiting")" -eq 0 ] && { drained=yes; break; }
  sleep 0.5
done
[ -n "$drained" ] || echo "  A's messages were not all sent within 300 s; the drain window ends there"
t2="$(sql "SELECT date_trunc('second', now()) + interval '1 second'")"
[ -z "${CONTROL_SECONDS:-}" ] || t2="$t1"
after "$t2"
[ -n "${CONTROL_SECONDS:-}" ] ||
  echo "  after, while A's messages drain ($t1 to $t2): $(rates "$t1" "$t2"); CPU s: $(cpu_since "$cpu0")"
echo "  the whole burst, posted and drained ($t0 to $t2): $(rates "$t0" "$t2")"
# For bench/burst.sh: the window's length and B's campaign's rate without and with the burst.
echo "BURST-SUMMARY seconds=$(sql "SELECT extract(epoch FROM '$t2'::timestamptz - '$t0'::timestamptz)::int") before=$(rate "c.id = '$FAIR_B'" "$t0_before" "$t1_before") during=$(rate "c.id = '$FAIR_B'" "$t0" "$t2")"
sleep 1
t3="$(sql "SELECT date_trunc('second', now())")"; sleep 10; t4="$(sql "SELECT date_trunc('second', now())")"
echo "  once drained ($t3 + 10 s): $(rates "$t3" "$t4")"
api -X POST "$ADMIN/api/v1/campaigns/$FAIR_A/cancel" -o /dev/null || true
api -X POST "$ADMIN/api/v1/campaigns/$FAIR_B/cancel" -o /dev/null || true
;; esac
