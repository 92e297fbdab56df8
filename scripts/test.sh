#!/usr/bin/env bash
# The one command that runs every test: starts the servers the tests need (installing
# what is missing), then runs the whole workspace's tests, each conformance case by name.
#
# Where the time goes on a fresh machine: installing the servers and tools (tansu, the test
# Kafka broker, is a Rust build) and building the workspace's tests are both CPU work, so
# they run side by side; then the tests run under cargo-nextest, several test binaries at a
# time (.config/nextest.toml says which tests must run alone or one at a time).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p "$ROOT/.services"
LOG="$ROOT/.services/test.log"
: >"$LOG"
status=0
# Every step runs even when an earlier one failed; the exit status says whether any did.
run_to() {
  local log=$1; shift
  set +e
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=1
}
run() { run_to "$LOG" "$@"; }
# nextest's output has a log of its own: a failing test's captured output holds libtest's
# own `test result:` line, which must not count twice.
NLOG="$ROOT/.services/nextest.log"
: >"$NLOG"
T0=$SECONDS
step() { printf '[test.sh] %s (at %ds)\n' "$*" $((SECONDS - T0)) | tee -a "$LOG"; }

# cargo-nextest runs the tests (it is on the machines this project is developed on; a
# machine without it builds it once).
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest from crates.io"
  cargo install --locked cargo-nextest >"$ROOT/.services/nextest-install.log" 2>&1 \
    || { tail -5 "$ROOT/.services/nextest-install.log"; exit 1; }
fi

# Every feature that ships is built and tested (the examples' server-backed tests and
# binaries need their backends' features; queue-redis's `tls` is compiled too).
FEATURES="--all-features"

step "starting the servers (scripts/services.sh up, log in .services/services-up.log) while the tests build"
"$ROOT/scripts/services.sh" up >"$ROOT/.services/services-up.log" 2>&1 &
services=$!
run_to "$NLOG" cargo nextest run --workspace --all-targets $FEATURES --no-run
step "tests built; waiting for the servers"
if ! wait $services; then
  status=1
  echo "scripts/services.sh up failed; the tests that need its servers will fail:" | tee -a "$LOG"
fi
cat "$ROOT/.services/services-up.log" | tee -a "$LOG" >/dev/null
tail -20 "$ROOT/.services/services-up.log"

# Tests that need a server fail (never skip) when it is missing.
step "running the tests"
run_to "$NLOG" cargo nextest run --workspace --all-targets $FEATURES --no-fail-fast "$@"
step "running the doctests (the README's and docs' Rust blocks among them)"
run cargo test --workspace $FEATURES --doc
# The quickstart's build graph holds no backend client (a small cold build).
run "$ROOT/scripts/check-quickstart.sh"
# The committed snapshot of queue-core's public API.
step "checking the public API"
run "$ROOT/scripts/public-api.sh"
# The fuzz targets, 20 seconds each (scripts/fuzz.sh --runs N for a long run).
step "fuzzing"
run "$ROOT/scripts/fuzz.sh"
step "done"
# One closing line for the whole run: cargo's `test result:` lines (doctests and the
# scripts) and nextest's `Summary` line.
{ grep -E "^test result:" "$LOG" || true; grep -E "^ *Summary \\[" "$NLOG" || true; } | awk '
  { for (i = 2; i <= NF; i++) {
      if ($i ~ /^passed/) p += $(i-1)
      if ($i ~ /^failed/ || ($i == "timed" && $(i+1) ~ /^out/)) f += $(i-1) } }
  END { printf "all tests: %d passed, %d failed\n", p, f }'
exit $status
