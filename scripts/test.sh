#!/usr/bin/env bash
# The one command that runs every test: starts the servers the tests need (installing
# what is missing), then runs the whole workspace's tests, each conformance case by name.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/services.sh" up
# Tests that need a server fail (never skip) when it is missing.
export QUEUE_TEST_STRICT=1
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
