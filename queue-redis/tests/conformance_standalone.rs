//! The conformance suite on standalone Redis (127.0.0.1:6379), one test per case.

mod common;

fn harness() -> queue_core::testkit::Harness {
    common::harness("redis://127.0.0.1:6379?dedup_window=2s")
}

queue_core::conformance_suite!(harness);
