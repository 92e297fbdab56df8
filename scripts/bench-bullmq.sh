#!/usr/bin/env bash
# BullMQ beside this project on the same Redis, in the same run, the same workload:
# N no-op jobs of ~100 bytes, enqueued by one producer in batches of 1,000, one worker at
# concurrency 50. Each run does three measurements, in an order that rotates from run to
# run so drift on a shared machine hits all three alike:
#   bullmq  queue-bench/bullmq/bench.mjs (BullMQ keeps every job's state in Redis)
#   plain   queue-bench --backends redis (the framework side; its raw side runs after it)
#   status  the same with --status on the same Redis (every job's status recorded)
# then prints the medians and the ratios to BullMQ (queue-bench/bullmq/compare.mjs).
#
#   scripts/bench-bullmq.sh                 # 30,000 jobs, 3 runs
#   scripts/bench-bullmq.sh --quick         # 3,000 jobs, 1 run
#   scripts/bench-bullmq.sh --jobs 10000 --runs 5 --out /tmp/cmp
#
# Needs node and npm (BullMQ comes from the npm registry, pinned in
# queue-bench/bullmq/package-lock.json), cargo, and a Redis on loopback
# (scripts/services.sh starts one on 127.0.0.1:6379). Traffic goes to that Redis only:
# a URL whose host is not loopback is refused. Each BullMQ run obliterates its queue and
# each queue-bench run deletes its queue; job status records (--status) expire on their
# own (a day for succeeded jobs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BULL="$ROOT/queue-bench/bullmq"

JOBS=30000 RUNS=3 BATCH=1000 CONCURRENCY=50 PAYLOAD=100
REDIS=redis://127.0.0.1:6379
OUT=""
TIMEOUT=120

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) JOBS=3000 RUNS=1 ;;
    --jobs) JOBS=${2:?}; shift ;;
    --runs) RUNS=${2:?}; shift ;;
    --redis) REDIS=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --timeout) TIMEOUT=${2:?}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bench-bullmq: unknown argument $1" >&2; usage ;;
  esac
  shift
done
for v in JOBS RUNS TIMEOUT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-bullmq: --${v,,} must be a positive integer" >&2; exit 2; }
done

log() { printf '[bench-bullmq] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (apt-get install nodejs npm)"
command -v cargo >/dev/null || die "cargo is needed"

# Loopback only.
host=$(node -e 'try { console.log(new URL(process.argv[1]).hostname.replace(/^\[|\]$/g, "")) } catch { process.exit(1) }' "$REDIS") \
  || die "bad Redis URL $REDIS"
[[ $host == localhost || $host == ::1 || $host =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] \
  || die "refusing non-loopback Redis host $host"
if command -v redis-cli >/dev/null; then
  redis-cli -u "$REDIS" ping >/dev/null 2>&1 || die "no Redis answers at $REDIS (scripts/services.sh starts one)"
fi

# BullMQ, exactly as locked, when missing or older than the lock file.
if [ ! -d "$BULL/node_modules/bullmq" ] || [ "$BULL/package-lock.json" -nt "$BULL/node_modules/.package-lock.json" ]; then
  log "installing BullMQ (npm ci in queue-bench/bullmq)"
  (cd "$BULL" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
fi

log "building queue-bench (release)"
(cd "$ROOT" && cargo build --release -q -p queue-bench) || die "cargo build failed"

if [ -z "$OUT" ]; then OUT=$(mktemp -d "${TMPDIR:-/tmp}/bench-bullmq.XXXXXX"); fi
mkdir -p "$OUT"
rm -f "$OUT"/bullmq-*.json "$OUT"/plain-*.json "$OUT"/status-*.json

qb() { # qb NAME RUN [extra queue-bench args...]
  local name=$1 run=$2; shift 2
  # No --framework-only: with it queue-bench writes no result row to --json. Its raw
  # client then runs after the framework side in the same invocation (a second or so).
  (cd "$ROOT" && timeout "$((TIMEOUT * 3))" cargo run --release -q -p queue-bench -- \
      --backends redis --redis-url "$REDIS" \
      --messages "$JOBS" --batch "$BATCH" --consumers "$CONCURRENCY" --producers 1 \
      --payload "$PAYLOAD" --runs 1 --json "$OUT/$name-$run.json" "$@") \
    >"$OUT/$name-$run.log" 2>&1 || { cat "$OUT/$name-$run.log" >&2; die "queue-bench ($name, run $run) failed"; }
}

measure() { # measure SIDE RUN
  case $1 in
    bullmq)
      (cd "$BULL" && timeout "$((TIMEOUT + 30))" node bench.mjs --jobs "$JOBS" --batch "$BATCH" \
          --concurrency "$CONCURRENCY" --payload "$PAYLOAD" --redis "$REDIS" --timeout "$TIMEOUT") \
        >"$OUT/bullmq-$2.json" 2>"$OUT/bullmq-$2.log" \
        || { cat "$OUT/bullmq-$2.log" >&2; die "BullMQ run $2 failed"; } ;;
    plain) qb plain "$2" ;;
    status) qb status "$2" --status "$REDIS" ;;
  esac
}

log "workload: $JOBS jobs of $PAYLOAD bytes, batch $BATCH, 1 producer, concurrency $CONCURRENCY, $RUNS run(s), Redis $REDIS"
SIDES=(bullmq plain status)
for run in $(seq 1 "$RUNS"); do
  for i in 0 1 2; do
    side=${SIDES[$(((run - 1 + i) % 3))]}
    log "run $run/$RUNS: $side"
    measure "$side" "$run"
  done
done

echo
echo "BullMQ vs this project on Redis $REDIS: $JOBS no-op jobs of $PAYLOAD bytes, batches of $BATCH, one worker at concurrency $CONCURRENCY; median of $RUNS run(s)"
echo
node "$BULL/compare.mjs" "$OUT" --json "$OUT/summary.json"
echo
echo "(each run's JSON and log: $OUT)"
