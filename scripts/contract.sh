#!/usr/bin/env bash
# Contract check: Herald's Twilio requests (messages, calls, lookups; auth token and API key)
# against Twilio's own OpenAPI document, through Stoplight Prism as a validating mock
# (`prism mock --errors`: a request the document does not allow is answered 422, one without
# HTTP Basic 401). Part of the test command; about a minute the first time (npm install).
#
# The document is the team's copy, ../shared/specs/twilio_api_v2010.json (Twilio's
# twilio-oai), or HERALD_TWILIO_SPEC. Without it the check cannot run: it says so and,
# with HERALD_REQUIRE_CONTRACT=1, fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
require_cargo

SPEC="${HERALD_TWILIO_SPEC:-}"
for candidate in "$ROOT/../shared/specs/twilio_api_v2010.json" /work/shared/specs/twilio_api_v2010.json; do
  [ -z "$SPEC" ] && [ -f "$candidate" ] && SPEC="$candidate"
done
if [ -z "$SPEC" ] || [ ! -f "$SPEC" ]; then
  echo "==> Twilio contract check NOT RUN: no twilio_api_v2010.json (set HERALD_TWILIO_SPEC)"
  [ "${HERALD_REQUIRE_CONTRACT:-0}" = 1 ] && exit 1
  exit 0
fi

PRISM_VERSION=5.16.0
CACHE="$HOME/.cache/herald/prism-$PRISM_VERSION"
if [ ! -x "$CACHE/node_modules/.bin/prism" ]; then
  echo "==> installing Stoplight Prism $PRISM_VERSION (npm)"
  mkdir -p "$CACHE"
  npm install --silent --no-audit --no-fund --prefix "$CACHE" "@stoplight/prism-cli@$PRISM_VERSION" >/dev/null
fi

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
LOG="$(mktemp -t herald-prism.XXXXXX.log)"
"$CACHE/node_modules/.bin/prism" mock --errors --host 127.0.0.1 --port "$PORT" "$SPEC" >"$LOG" 2>&1 &
PRISM=$!
trap 'kill $PRISM 2>/dev/null || true; wait $PRISM 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  grep -q "Prism is listening" "$LOG" && break
  kill -0 "$PRISM" 2>/dev/null || { cat "$LOG"; echo "error: prism did not start" >&2; exit 1; }
  sleep 0.5
done
grep -q "Prism is listening" "$LOG" || { cat "$LOG"; echo "error: prism did not start in 60 s" >&2; exit 1; }

echo "==> Twilio contract check against $(basename "$SPEC") (Prism $PRISM_VERSION)"
HERALD_TWILIO_MOCK="http://127.0.0.1:$PORT" \
  cargo test --quiet -p herald-worker --test twilio_contract -- --ignored --test-threads 1
