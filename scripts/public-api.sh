#!/usr/bin/env bash
# The public API of queue-core, checked against the committed snapshot
# (queue-core/public-api.txt), so that every API change shows in review.
#
#   scripts/public-api.sh          # check (part of scripts/test.sh)
#   scripts/public-api.sh --bless  # write the snapshot after an intended change
#
# Uses cargo-public-api (installed by scripts/services.sh) and the nightly toolchain's
# rustdoc JSON. Prints a cargo-style result line, which the test script's summary counts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SNAP=queue-core/public-api.txt
OUT="$ROOT/target/public-api.txt"
mkdir -p target
if ! cargo public-api --version >/dev/null 2>&1; then
  echo "cargo-public-api is not installed: run scripts/services.sh" >&2
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
  exit 1
fi
# Its own target dir: the rustdoc JSON is a nightly build that must not churn the main one.
CARGO_TARGET_DIR="$ROOT/target/public-api" cargo public-api -p queue-core --features testkit -sss \
  >"$OUT" 2>"$ROOT/target/public-api.log" || {
  cat "$ROOT/target/public-api.log" >&2
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
  exit 1
}
if [ "${1:-}" = "--bless" ]; then
  cp "$OUT" "$SNAP"
  echo "wrote $SNAP ($(wc -l <"$SNAP") items)"
  exit 0
fi
if diff -u "$SNAP" "$OUT"; then
  echo "public API of queue-core: unchanged ($(wc -l <"$SNAP") items)"
  echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
else
  echo "public API of queue-core changed (diff above): if intended, run scripts/public-api.sh --bless and commit $SNAP" >&2
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
  exit 1
fi
