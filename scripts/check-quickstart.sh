#!/usr/bin/env bash
# The README's first command, `cargo run --example quickstart`, must build small on a fresh
# clone: no backend client in its graph. Checks the dependency graph cargo resolves for
# that command (default members, dev-dependencies included) and prints a cargo-style
# result line, which the test script's summary counts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
graph=$(cargo tree -e normal,build,dev --prefix none --format '{p}' 2>&1) || {
  echo "$graph" >&2
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
  exit 1
}
heavy=$(printf '%s\n' "$graph" | grep -E '^(aws-sdk-sqs|aws-config|rdkafka|rdkafka-sys|tokio-postgres|redis|sqlx|axum) ' | sort -u || true)
crates=$(printf '%s\n' "$graph" | awk '{print $1}' | sort -u | wc -l)
if [ -n "$heavy" ]; then
  echo "the quickstart's build graph ($crates crates) contains backend clients:" >&2
  echo "$heavy" >&2
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
  exit 1
fi
echo "quickstart build graph: $crates crates, no backend client"
echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
