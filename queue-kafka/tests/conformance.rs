//! The conformance suite on a Kafka-protocol broker (tansu), one test per case.

mod common;

queue_core::conformance_suite!(common::harness);
