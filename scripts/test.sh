#!/usr/bin/env bash
# The one command that runs every test: starts the servers the tests need (installing
# what is missing), then runs the whole workspace's tests, each conformance case by name.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/services.sh" up
# Tests that need a server fail (never skip) when it is missing.
cargo test --workspace --all-targets --exclude queue-kafka "$@"
# tansu (the test Kafka broker) stalls when many consumer groups rebalance at once, so the
# Kafka tests run one at a time.
cargo test -p queue-kafka --all-targets "$@" -- --test-threads=1
cargo test --workspace --doc
