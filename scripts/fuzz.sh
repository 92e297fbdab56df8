#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (nightly toolchain; cargo-fuzz is installed by
# scripts/services.sh). Each target runs for SECONDS (default 20) or, with --runs N, for N
# executions; a crash stops with its input saved under fuzz/artifacts/<target>/ and a
# non-zero exit. Corpora live in fuzz/corpus/<target>/ (not committed); fuzz/seeds/<target>/
# holds committed inputs that once failed, replayed by every run.
#
#   scripts/fuzz.sh                 # every target, 20 s each (the CI-sized run)
#   scripts/fuzz.sh --runs 10000000 # every target, 10 million executions each
#   scripts/fuzz.sh envelope 60     # one target for 60 s
set -uo pipefail
cd "$(dirname "$0")/.."
targets=(envelope url_options redis_stored kafka_record sqs_message)
limit=(-max_total_time=20)
if [ "${1:-}" = "--runs" ]; then
  limit=(-runs="${2:?--runs needs a count}")
elif [ $# -ge 1 ]; then
  targets=("$1")
  limit=(-max_total_time="${2:-20}")
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz (nightly) is missing: run scripts/services.sh up" >&2
  exit 1
fi
failed=0
passed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  echo "fuzz: $t (${limit[*]})"
  # -rss_limit_mb: an input that makes a decoder allocate without bound is a failure.
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- "${limit[@]}" -rss_limit_mb=1024 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|Done|==[0-9]+==|SUMMARY|ERROR|.*panicked|.*Crash|.*deadly)"
  st=${PIPESTATUS[0]}
  if [ "$st" -ne 0 ]; then
    echo "fuzz: $t FAILED (see fuzz/artifacts/$t/)"
    failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
done
# The line scripts/test.sh counts into its summary: one test per fuzz target.
if [ "$failed" -eq 0 ]; then result=ok; else result=FAILED; fi
echo "test result: $result. $passed passed; $failed failed; fuzz targets"
[ "$failed" -eq 0 ]
