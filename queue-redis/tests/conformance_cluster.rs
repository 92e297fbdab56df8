//! The conformance suite on a 3-node Redis Cluster (127.0.0.1:7001-7003, started by
//! scripts/services.sh), one test per case.

mod common;

fn harness() -> queue_core::testkit::Harness {
    common::harness("redis://127.0.0.1:7001?cluster=true&seed=127.0.0.1:7002&dedup_window=2s")
}

queue_core::conformance_suite!(harness);
