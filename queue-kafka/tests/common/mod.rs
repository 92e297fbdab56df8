//! Shared by the Kafka test binaries: tansu on 127.0.0.1:9092 (scripts/services.sh).
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;

use queue_core::testkit::Harness;
use queue_core::{Driver, QueueError};
use queue_kafka::KafkaQueue;

/// The test broker.
pub const URL: &str = "kafka://127.0.0.1:9092";

/// Connects, or fails the test with how to start the server (tests never skip).
pub async fn connect(url: &str) -> KafkaQueue {
    KafkaQueue::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "the Kafka broker at {url} is not reachable ({e}); start it with scripts/services.sh"
        )
    })
}

/// The conformance harness.
pub fn harness() -> Harness {
    queue_kafka::register();
    Harness::new(|| async {
        let q = KafkaQueue::connect(URL).await.map_err(|e| {
            QueueError::InvalidOption(format!(
                "the Kafka broker at {URL} is not reachable ({e}); start it with scripts/services.sh"
            ))
        })?;
        Ok(Arc::new(q) as Arc<dyn Driver>)
    })
        .drain_count(
            std::env::var("DRAIN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2_000),
        )
        // The group session (6 s) of the crashed consumer must end before the survivor
        // joins: tansu does not rebalance when a member of a formed generation expires.
        .crash_settle(std::time::Duration::from_secs(8))
        .bad_url("kafka://127.0.0.1:1")
        .bad_url("kafka://127.0.0.1:9092?partitions=zero")
        .bad_url("kafka://127.0.0.1:9092?partitions=5000")
        .bad_url("kafka://127.0.0.1:9092?nonsense=1")
}
