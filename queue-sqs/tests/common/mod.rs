//! Shared by the SQS test binaries: moto_server on 127.0.0.1:4566 (scripts/services.sh).
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;

use queue_core::testkit::Harness;
use queue_core::{Driver, QueueError};
use queue_sqs::SqsQueue;

/// Dummy credentials: moto accepts any.
pub const STANDARD: &str = "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566";
/// The same server, every queue FIFO.
pub const FIFO: &str = "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566&fifo=true";
/// The kit's URLs: SQS's own dead-lettering after 10 receives rather than the default 25,
/// so that `native_dlq_moves_poison` (a receive and a lease's wait each) takes 20 s, not
/// 50 (the kit's workers make 3 attempts).
pub const KIT_STANDARD: &str =
    "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566&max_receive_count=10";
/// [`KIT_STANDARD`], every queue FIFO.
pub const KIT_FIFO: &str =
    "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566&fifo=true&max_receive_count=10";

/// Connects, or fails the test with how to start the server (tests never skip).
pub async fn connect(url: &str) -> SqsQueue {
    let q = SqsQueue::connect(url).await.expect("valid URL");
    if let Err(e) = q.client().list_queues().max_results(1).send().await {
        panic!("the SQS server at {url} is not reachable ({e}); start it with scripts/services.sh");
    }
    q
}

/// A conformance harness on `url`.
pub fn harness(url: &'static str) -> Harness {
    queue_sqs::register();
    Harness::new(move || async move {
        let q = SqsQueue::connect(url).await?;
        if let Err(e) = q.client().list_queues().max_results(1).send().await {
            return Err(QueueError::InvalidOption(format!(
                "the SQS server at {url} is not reachable ({e}); start it with scripts/services.sh"
            )));
        }
        Ok(Arc::new(q) as Arc<dyn Driver>)
    })
    .drain_count(2_000)
    .bad_url("sqs://test:test@us-east-1?endpoint=http://127.0.0.1:1")
    .bad_url("sqs://test:test@us-east-1?endpoint=not-a-url")
    .bad_url("sqs://test:test@us-east-1?max_receive_count=5000")
}
