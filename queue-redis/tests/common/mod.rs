//! Shared by the Redis test binaries.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;

use queue_core::testkit::Harness;
use queue_core::{Driver, IdempotencyStore, QueueError};
use queue_redis::{RedisIdempotency, RedisQueue, RedisStore};

fn unreachable(url: &str, e: QueueError) -> QueueError {
    QueueError::InvalidOption(format!(
        "Redis is not reachable at {url}: {e}. Start the test servers with scripts/services.sh"
    ))
}

/// Connects, or fails the test with how to start the server (tests never skip).
pub async fn connect(url: &str) -> RedisQueue {
    RedisQueue::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable(url, e)))
}

/// A conformance harness on `url`.
pub fn harness(url: &'static str) -> Harness {
    queue_redis::register();
    Harness::new(move || async move {
        let q = RedisQueue::connect(url)
            .await
            .map_err(|e| unreachable(url, e))?;
        Ok(Arc::new(q) as Arc<dyn Driver>)
    })
    .idempotency_store(move || async move {
        Arc::new(RedisIdempotency::new(&connect(url).await)) as Arc<dyn IdempotencyStore>
    })
    .status_store(move || async move {
        Arc::new(RedisStore::new(&connect(url).await)) as Arc<dyn queue_core::Store>
    })
    .bad_url("redis://127.0.0.1:1") // nothing listens on port 1
    .bad_url("redis://:wrong-password@127.0.0.1:6379")
    .bad_url("redis://127.0.0.1:6379?cluster=maybe")
    .bad_url("redis://127.0.0.1:6379?nonsense=1")
    .bad_url("redis://127.0.0.1:6379?max_message_size=1GiB")
}
