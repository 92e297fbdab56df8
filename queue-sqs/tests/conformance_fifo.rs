//! The conformance suite on FIFO SQS queues (moto), one test per case.

mod common;

fn harness() -> queue_core::testkit::Harness {
    common::harness(common::FIFO)
}

queue_core::conformance_suite!(harness);
