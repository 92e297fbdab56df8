#!/usr/bin/env bash
# Installs (when missing) and starts (when not running) every server the tests need, on
# loopback only, then waits until each answers. Idempotent: run it as often as you like.
#
#   scripts/services.sh             # start everything
#   scripts/services.sh up-kafka    # only the Kafka broker (tansu: a long build on a fresh machine)
#   scripts/services.sh up-others   # every server but the Kafka broker
#   scripts/services.sh tools       # the test tools (cargo-public-api, cargo-fuzz)
#   scripts/services.sh status      # say what answers
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

# A 3-node Redis Cluster on 127.0.0.1:7001-7003 (no replicas, nothing persisted).
CLUSTER_PORTS="7001 7002 7003"
cluster_ok() {
  local p
  for p in $CLUSTER_PORTS; do
    redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
}
redis_cluster_up() {
  ensure_redis_binaries
  if cluster_ok; then log "redis cluster is up"; return; fi
  log "starting a 3-node redis cluster on ports $CLUSTER_PORTS"
  local p dir nodes=""
  for p in $CLUSTER_PORTS; do
    redis-cli -h 127.0.0.1 -p "$p" shutdown nosave >/dev/null 2>&1 || true
    dir="$STATE/redis-cluster/$p"; rm -rf "$dir"; mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$p" --cluster-enabled yes \
      --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 \
      --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log"
    wait_for "redis $p" 30 redis-cli -h 127.0.0.1 -p "$p" ping
    nodes="$nodes 127.0.0.1:$p"
  done
  # shellcheck disable=SC2086
  redis-cli --cluster create $nodes --cluster-replicas 0 --cluster-yes >"$STATE/redis-cluster/create.log" 2>&1 \
    || die "redis-cli --cluster create failed: $(tail -5 "$STATE/redis-cluster/create.log")"
  wait_for "redis cluster" 60 cluster_ok
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# SQS: moto_server (PyPI moto[server], in the project's .venv) on 127.0.0.1:4566.
MOTO_VERSION=5.2.5
MOTO_PORT=4566
moto_up() {
  local venv="$ROOT/.venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    log "installing moto[server]==$MOTO_VERSION into $venv"
    python3 -m venv "$venv" || { apt_install python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
      || die "pip install moto[server] failed"
  fi
  if ! port_open $MOTO_PORT; then
    log "starting moto_server on 127.0.0.1:$MOTO_PORT"
    nohup setsid "$venv/bin/moto_server" -H 127.0.0.1 -p $MOTO_PORT >"$STATE/moto.log" 2>&1 &
  fi
  wait_for "moto (sqs) $MOTO_PORT" 60 port_open $MOTO_PORT
}

# Tools built from crates.io are built at opt-level 1: they serve tests, and on a fresh
# 2-core machine their build is most of the install time (tansu at the default opt-level 3
# with its dynostore feature took about 25 minutes beside the project's own build).
cargo_install() {
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install --locked "$@"
}

# Kafka: tansu 0.6.0 (crates.io) on 127.0.0.1:9092 with sqlite storage, in its own working
# directory (it reads a .env there). Only its `libsql` feature (the sqlite storage engine)
# is built. Building it takes about 12 minutes of a 2-core machine, so an installed binary
# is reused.
TANSU_VERSION=0.6.0
TANSU_PORT=9092
tansu_bin() {
  local b
  for b in "$(command -v tansu 2>/dev/null)" "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"; do
    [ -n "$b" ] && [ -x "$b" ] && "$b" --version 2>/dev/null | grep -q "$TANSU_VERSION" && { echo "$b"; return; }
  done
  return 1
}
tansu_up() {
  local bin
  if ! bin=$(tansu_bin); then
    log "building tansu $TANSU_VERSION from crates.io (about 12 minutes)"
    cargo_install tansu --version "$TANSU_VERSION" --features libsql \
      >"$STATE/tansu-install.log" 2>&1 || die "cargo install tansu failed: $(tail -5 "$STATE/tansu-install.log")"
    bin=$(tansu_bin) || die "tansu installed but not found"
  fi
  if ! port_open $TANSU_PORT; then
    log "starting tansu on 127.0.0.1:$TANSU_PORT (sqlite storage)"
    mkdir -p "$STATE/tansu"
    (cd "$STATE/tansu" && rm -f tansu.db tansu.db-wal tansu.db-shm && : >.env && \
      nohup setsid "$bin" broker --listener-url tcp://127.0.0.1:$TANSU_PORT \
        --advertised-listener-url tcp://127.0.0.1:$TANSU_PORT \
        --storage-engine sqlite://tansu.db >tansu.log 2>&1 &)
  fi
  wait_for "tansu (kafka) $TANSU_PORT" 60 port_open $TANSU_PORT
}

# PostgreSQL on 127.0.0.1:5432 (Debian's package; the machine's own cluster when it runs),
# with the role and database the tests use: postgres://queue:queue@127.0.0.1:5432/queue_test.
PG_PORT=5432
pg_ready() { pg_isready -q -h 127.0.0.1 -p $PG_PORT; }
pg_sql() { runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p $PG_PORT -d postgres -tAc "$1"; }
postgres_up() {
  if ! command -v pg_isready >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql (Debian package)"; apt_install postgresql
  fi
  if ! pg_ready; then
    local ver
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    pg_lsclusters -h 2>/dev/null | grep -q "^$ver main" || pg_createcluster "$ver" main -p $PG_PORT >/dev/null
    log "starting postgresql $ver on 127.0.0.1:$PG_PORT"
    pg_ctlcluster "$ver" main start || die "pg_ctlcluster $ver main start failed"
  fi
  wait_for "postgresql $PG_PORT" 60 pg_ready
  [ "$(pg_sql "SELECT 1 FROM pg_roles WHERE rolname = 'queue'")" = 1 ] \
    || pg_sql "CREATE ROLE queue LOGIN PASSWORD 'queue'"
  [ "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = 'queue_test'")" = 1 ] \
    || pg_sql "CREATE DATABASE queue_test OWNER queue"
  # The tests check that a wrong password is refused: the test role always authenticates
  # by password over TCP, whatever the machine's own pg_hba.conf trusts.
  local hba
  hba=$(pg_sql "SHOW hba_file")
  if ! grep -q '^host queue_test queue 127.0.0.1/32 scram-sha-256' "$hba"; then
    sed -i '1i host queue_test queue 127.0.0.1/32 scram-sha-256' "$hba"
    pg_sql "SELECT pg_reload_conf()" >/dev/null
  fi
  log "postgresql role queue and database queue_test are there"
}

# Tools the tests use: cargo-fuzz for scripts/fuzz.sh, and cargo-public-api (crates.io) for
# the public-API snapshot check; it
# reads the nightly toolchain's rustdoc JSON (format 57: public-api 0.52.0 matches the
# machine's nightly). An installed binary is reused.
PUBLIC_API_VERSION=0.52.0
# cargo-fuzz (crates.io) runs the fuzz targets in fuzz/ on the nightly toolchain.
CARGO_FUZZ_VERSION=0.13.1
tools_up() {
  if ! cargo +nightly --version >/dev/null 2>&1; then
    die "the nightly toolchain is missing (the public-API check builds rustdoc JSON with it)"
  fi
  if ! cargo public-api --version 2>/dev/null | grep -q "$PUBLIC_API_VERSION"; then
    log "building cargo-public-api $PUBLIC_API_VERSION from crates.io (a few minutes)"
    cargo_install cargo-public-api --version "$PUBLIC_API_VERSION" \
      >"$STATE/public-api-install.log" 2>&1 \
      || die "cargo install cargo-public-api failed: $(tail -5 "$STATE/public-api-install.log")"
  fi
  log "cargo-public-api $PUBLIC_API_VERSION is installed"
  if ! cargo +nightly fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "building cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (about two minutes)"
    cargo_install cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
      >"$STATE/cargo-fuzz-install.log" 2>&1 \
      || die "cargo install cargo-fuzz failed: $(tail -5 "$STATE/cargo-fuzz-install.log")"
  fi
  log "cargo-fuzz $CARGO_FUZZ_VERSION is installed"
}

# Debian's chromium and chromedriver, for the dashboard's browser test
# (queuectl/tests/browser.rs).
browser_up() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver from Debian's packages"
    apt_install chromium chromium-driver || die "apt-get install chromium chromium-driver failed"
  fi
  chromium --version >/dev/null 2>&1 || die "chromium does not run"
  log "$(chromium --version 2>/dev/null | head -1) and $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2) are installed"
}

status() {
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && echo "redis 127.0.0.1:6379: up" || echo "redis 127.0.0.1:6379: down"
  cluster_ok && echo "redis cluster 127.0.0.1:7001-7003: up" || echo "redis cluster 127.0.0.1:7001-7003: down"
  port_open $MOTO_PORT && echo "moto (sqs) 127.0.0.1:$MOTO_PORT: up" || echo "moto (sqs) 127.0.0.1:$MOTO_PORT: down"
  port_open $TANSU_PORT && echo "tansu (kafka) 127.0.0.1:$TANSU_PORT: up" || echo "tansu (kafka) 127.0.0.1:$TANSU_PORT: down"
  command -v chromedriver >/dev/null 2>&1 && echo "chromium + chromedriver: installed" || echo "chromium + chromedriver: missing"
  pg_ready && echo "postgresql 127.0.0.1:$PG_PORT: up" || echo "postgresql 127.0.0.1:$PG_PORT: down"
}

# Every server but Kafka.
others_up() {
  redis_up; redis_cluster_up; postgres_up; moto_up; browser_up
}

case "${1:-up}" in
  up)
    # The tools' builds (a few minutes) go beside tansu's (the longest step): a cargo
    # build's last minutes leave a core idle.
    tools_up >"$STATE/tools-up.log" 2>&1 & tools=$!
    others_up; tansu_up
    tools_ok=0; wait $tools || tools_ok=$?
    cat "$STATE/tools-up.log" >&2
    [ "$tools_ok" -eq 0 ] || die "installing the test tools failed (see above)"
    ;;
  up-kafka) tansu_up ;;
  up-others) others_up ;;
  tools) tools_up ;;
  status) status ;;
  *) die "usage: $0 [up|up-kafka|up-others|tools|status]" ;;
esac
