#!/usr/bin/env bash
# The one command that runs every test: starts the servers the tests need (installing
# what is missing), then runs the whole workspace's tests, each conformance case by name.
#
# Where the time goes on a fresh machine: installing the servers and tools (tansu, the test
# Kafka broker, is a Rust build) and building the workspace's tests are both CPU work, so
# they run side by side; the tests run under cargo-nextest, several test binaries at a time
# (.config/nextest.toml says which tests must run alone or one at a time), those that need
# no Kafka while tansu still builds. Arguments go to cargo nextest (one run, after every
# server is up): `scripts/test.sh -E 'package(queue-redis)'`.
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

# The test binaries that may talk to Kafka: they run once tansu answers. Wider than the
# `kafka` test group in .config/nextest.toml (the tests that must take the broker one at a
# time): the facade's tests, the chaos runs, queuectl's and the examples' cross-backend
# tests connect to every backend, Kafka included, whatever their names say. A test binary
# that gains a Kafka connection joins this list.
KAFKA='package(queue-kafka) | package(queue) | package(queue-chaos) | binary(cli_backends) | binary(portable) | binary(key_held_crash) | binary(crash_loop) | binary(stories)'

# Three installs go beside the build of the tests: the servers but Kafka (quick), tansu, the
# test Kafka broker (on a fresh machine a Rust build of about 15 minutes), and the tools the
# last steps use (cargo-public-api, cargo-fuzz). The tests that need no Kafka run while tansu
# still builds; the two cargo installs run at a lower CPU priority so that the tests' build
# and those tests come first.
step "starting the servers (scripts/services.sh, logs in .services/services-*.log) while the tests build"
"$ROOT/scripts/services.sh" up-others >"$ROOT/.services/services-others.log" 2>&1 &
others=$!
nice -n 10 "$ROOT/scripts/services.sh" up-kafka >"$ROOT/.services/services-kafka.log" 2>&1 &
kafka=$!
nice -n 15 "$ROOT/scripts/services.sh" tools >"$ROOT/.services/services-tools.log" 2>&1 &
tools=$!
# await PID NAME: waits for one of the installs; a failure fails the run (the tests that
# need what it installs then fail too, loudly).
await() {
  if ! wait "$1"; then
    status=1
    echo "scripts/services.sh $2 failed; what needs it will fail:" | tee -a "$LOG"
  fi
  tee -a "$LOG" <"$ROOT/.services/services-$2.log" | tail -8
}
run_to "$NLOG" cargo nextest run --workspace --all-targets $FEATURES --no-run
step "tests built; waiting for the servers"
await $others others

# Tests that need a server fail (never skip) when it is missing.
if [ $# -eq 0 ]; then
  step "running the tests that need no Kafka"
  run_to "$NLOG" cargo nextest run --workspace --all-targets $FEATURES --no-fail-fast -E "not ($KAFKA)"
  step "waiting for the Kafka broker"
  await $kafka kafka
  step "running the Kafka tests"
  run_to "$NLOG" cargo nextest run --workspace --all-targets $FEATURES --no-fail-fast -E "$KAFKA"
else
  # Arguments (a filter, say) go to one nextest run over every server.
  await $kafka kafka
  step "running the tests ($*)"
  run_to "$NLOG" cargo nextest run --workspace --all-targets $FEATURES --no-fail-fast "$@"
fi
step "waiting for the test tools"
await $tools tools
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
