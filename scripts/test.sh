#!/usr/bin/env bash
# The one command that runs every test: starts the servers the tests need (installing
# what is missing), then runs the whole workspace's tests, each conformance case by name.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/services.sh" up
LOG="$ROOT/.services/test.log"
: >"$LOG"
status=0
# Every step runs even when an earlier one failed; the exit status says whether any did.
run() {
  set +e
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=1
}
# Every feature that ships is built and tested (the examples' server-backed test and
# binary need their backends' features; queue-redis's `tls` is compiled too).
FEATURES="--all-features"
# Tests that need a server fail (never skip) when it is missing.
run cargo test --workspace $FEATURES --doc
run cargo test --workspace $FEATURES --all-targets --exclude queue-kafka --no-fail-fast "$@"
# tansu (the test Kafka broker) stalls when many consumer groups rebalance at once, so the
# Kafka tests run one at a time.
run cargo test -p queue-kafka --all-targets --no-fail-fast "$@" -- --test-threads=1
# The quickstart's build graph holds no backend client (a small cold build).
run "$ROOT/scripts/check-quickstart.sh"
# The committed snapshot of queue-core's public API.
run "$ROOT/scripts/public-api.sh"
# The fuzz targets, 20 seconds each (scripts/fuzz.sh --runs N for a long run).
run "$ROOT/scripts/fuzz.sh"
# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$LOG"
exit $status
