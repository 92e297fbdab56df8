#!/usr/bin/env bash
# The one command that runs every test: starts the servers the tests need (installing
# what is missing), then runs the whole workspace's tests, each conformance case by name.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/services.sh" up
LOG="$ROOT/.services/test.log"
: >"$LOG"
run() { "$@" 2>&1 | tee -a "$LOG"; }
# Tests that need a server fail (never skip) when it is missing.
run cargo test --workspace --doc
run cargo test --workspace --all-targets --exclude queue-kafka "$@"
# tansu (the test Kafka broker) stalls when many consumer groups rebalance at once, so the
# Kafka tests run one at a time.
run cargo test -p queue-kafka --all-targets "$@" -- --test-threads=1
# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$LOG"
