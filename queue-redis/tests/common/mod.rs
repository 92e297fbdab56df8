//! Shared by the Redis test binaries.

use std::sync::Arc;

use queue_core::testkit::Harness;
use queue_core::{IdempotencyStore, Queue};
use queue_redis::{RedisIdempotency, RedisQueue};

/// Connects, or fails the test with how to start the server (tests never skip).
pub async fn connect(url: &str) -> RedisQueue {
    RedisQueue::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "Redis is not reachable at {url}: {e}. Start the test servers with scripts/services.sh"
        )
    })
}

/// A conformance harness on `url`.
pub fn harness(url: &'static str) -> Harness {
    queue_redis::register();
    Harness::new(move || async move { Arc::new(connect(url).await) as Arc<dyn Queue> })
        .idempotency_store(move || async move {
            Arc::new(RedisIdempotency::new(&connect(url).await)) as Arc<dyn IdempotencyStore>
        })
        .bad_url("redis://127.0.0.1:1") // nothing listens on port 1
        .bad_url("redis://:wrong-password@127.0.0.1:6379")
        .bad_url("redis://127.0.0.1:6379?cluster=maybe&nonsense=1")
}
