#!/usr/bin/env bash
# Installs (when missing) and starts PostgreSQL and RabbitMQ from the OS packages, then makes
# sure Herald's database role and the RabbitMQ management API exist. Idempotent; needs root
# (or sudo) on a Debian/Ubuntu machine. No systemd needed.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The worker's allocator (jemalloc) is built from its C sources with make.
command -v make >/dev/null 2>&1 || missing+=(make)
# The TLS tests make their own certificates; the deployment lint runs Python tools in a venv.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# Headless Chromium and its WebDriver, for the admin web page's browser test.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  # The rabbitmq-server package tries to start itself through systemd; without systemd that
  # step fails harmlessly, and we start the broker ourselves below.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null || true
  for tool in pg_ctlcluster rabbitmq-server curl make openssl python3 chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is still missing after apt-get install" >&2; exit 1; }
  done
fi

# PostgreSQL: start every cluster that is down (Debian creates one at install).
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  log "starting PostgreSQL"
  version=$(pg_lsclusters -h | awk 'NR==1 {print $1}')
  cluster=$(pg_lsclusters -h | awk 'NR==1 {print $2}')
  $SUDO pg_ctlcluster "$version" "$cluster" start
fi
for _ in $(seq 1 30); do
  $SUDO su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
# Local peer auth is only for the postgres OS user; services connect over TCP with a password.
$SUDO su postgres -c "psql -qAt" >/dev/null <<'SQL'
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herald') THEN
    CREATE ROLE herald LOGIN CREATEDB PASSWORD 'herald';
  END IF;
END$$;
SELECT 'CREATE DATABASE herald OWNER herald' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'herald')\gexec
SQL

# RabbitMQ: start the broker if it is not answering, then enable the management API (used
# by the tests to create a vhost per test, and handy for operators).
if ! $SUDO rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting RabbitMQ"
  $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
  # `-detached` returns before the node registers with epmd, and `await_startup` fails at
  # once on a node that is not registered yet: poll until the node answers, then wait for
  # its boot to finish (restoring many vhosts and quorum queues can take a while).
  for i in $(seq 1 120); do
    $SUDO rabbitmqctl -q ping >/dev/null 2>&1 && break
    if [ "$i" -eq 120 ]; then
      echo "error: RabbitMQ did not start within 60 s; see /var/log/rabbitmq/" >&2
      exit 1
    fi
    sleep 0.5
  done
  $SUDO rabbitmqctl -q await_startup --timeout 120 >/dev/null
fi
if ! curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
  log "enabling the RabbitMQ management API"
  $SUDO rabbitmq-plugins -q enable rabbitmq_management >/dev/null
  for _ in $(seq 1 60); do
    curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
log "PostgreSQL and RabbitMQ are running"
