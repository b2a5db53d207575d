#!/usr/bin/env bash
# Fairness under a burst, against a control: issue 13 asks for B's campaign's rate during
# tenant A's burst of transactional messages to stay within 10% of the run *without* the
# burst. One run of `bench/messages.sh`'s burst phase measures B's rate while A's 50,000
# messages are posted and drained; a control run, identical but with nothing posted (its
# batches prepared all the same), measures B's rate over a window of the same length at the
# same point of its campaign's life. Comparing B with its own first 20 s instead (as
# `bench/messages.sh` prints) mixes the burst's effect with the drift of a long campaign on
# this machine (in control runs B's rate fell 1.5–8.4% between those windows with nothing
# posted).
# Usage: bench/burst.sh   (RUNS=N pairs, default 1; each pair takes about 4 minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
summary() {
  grep '^BURST-SUMMARY' "$1" | tail -1 ||
    { echo "bench/burst.sh: no BURST-SUMMARY in the run's output ($1)" >&2; exit 1; }
}
value() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }
out=.demo/bench
mkdir -p "$out"
for run in $(seq 1 "${RUNS:-1}"); do
  PHASES=burst bench/messages.sh 2>&1 | tee "$out/burst.log"
  burst="$(summary "$out/burst.log")"
  seconds="$(value seconds <<<"$burst")"
  CONTROL_SECONDS="$seconds" PHASES=burst bench/messages.sh 2>&1 | tee "$out/control.log"
  control="$(summary "$out/control.log")"
  python3 - "$run" "$(value during <<<"$burst")" "$(value during <<<"$control")" "$seconds" \
    "$(value before <<<"$burst")" "$(value before <<<"$control")" <<'PY'
import sys
run, seconds = sys.argv[1], sys.argv[4]
with_burst, without, before_burst, before_control = map(float, sys.argv[2:4] + sys.argv[5:7])
change = (with_burst / without - 1) * 100 if without else float("nan")
print(f"== pair {run}: B's campaign over the burst's {seconds} s: {with_burst:.0f} msg/s with A's burst, "
      f"{without:.0f} msg/s in the control run without it: {change:+.1f}% (target: within 10%); "
      f"20 s before that window, before anything was posted: {before_burst:.0f} and {before_control:.0f} msg/s")
PY
done
