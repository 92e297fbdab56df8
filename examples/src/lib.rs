//! Helpers shared by the runnable examples in this folder (`quickstart.rs`, ...).
//!
//! The examples pick their backend from `QUEUE_URL`; every driver crate this package is
//! built with is registered, so one binary runs on any of them.

use queue_core::Queue;

/// Registers every driver this package was built with, so that `queue_core::connect`
/// knows their URL schemes.
pub fn register_drivers() {
    #[cfg(feature = "redis")]
    queue_redis::register();
    #[cfg(feature = "sqs")]
    queue_sqs::register();
    #[cfg(feature = "kafka")]
    queue_kafka::register();
}

/// A queue name valid on every backend: letters, digits, `-` and `_` (SQS's rule; the SQS
/// driver adds `.fifo` itself in FIFO mode).
pub fn queue_name_for(queue: &dyn Queue, base: &str) -> String {
    let _ = queue;
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}
