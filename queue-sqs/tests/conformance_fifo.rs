//! The conformance suite on FIFO SQS queues (moto), one test per case.

mod common;

fn harness() -> queue_core::testkit::Harness {
    common::harness(common::KIT_FIFO)
}

queue_core::conformance_suite!(harness);
