#!/usr/bin/env bash
# Installs (when missing) and starts (when not running) every server the tests need, on
# loopback only, then waits until each answers. Idempotent: run it as often as you like.
#
#   scripts/services.sh          # start everything
#   scripts/services.sh status   # say what answers
#
# State (logs, data, the Python virtualenv) lives under .services/ and .venv/ in the repo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.services"
mkdir -p "$STATE"

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local name=$1 secs=$2; shift 2
  local until=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || die "$name did not answer within ${secs}s (logs in $STATE)"
    sleep 0.2
  done
  log "$name is up"
}

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null; APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis_binaries() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
    log "installing redis-server (Debian package)"; apt_install redis-server redis-tools; }
}

# Standalone Redis on 127.0.0.1:6379 (the machine's own, started if it is not running).
redis_up() {
  ensure_redis_binaries
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting redis on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir "$STATE" --logfile "$STATE/redis-6379.log"
  fi
  wait_for "redis 6379" 30 redis-cli -h 127.0.0.1 -p 6379 ping
}

status() {
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && echo "redis 127.0.0.1:6379: up" || echo "redis 127.0.0.1:6379: down"
}

case "${1:-up}" in
  up) redis_up ;;
  status) status ;;
  *) die "usage: $0 [up|status]" ;;
esac
