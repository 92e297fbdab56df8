//! The conformance suite on a standard SQS queue (moto), one test per case.

mod common;

fn harness() -> queue_core::testkit::Harness {
    common::harness(common::KIT_STANDARD)
}

queue_core::conformance_suite!(harness);
