//! The stories behind the runnable examples in this folder (`long_job.rs`,
//! `batch_handler.rs`, `idempotent_payment.rs`, `flow.rs`; the `web` example has its own package,
//! `examples/web`), and helpers they share. Each example's `main` calls its story's `run`,
//! which the tests in `examples/tests/stories.rs` call too.
//!
//! The examples pick their backend from `QUEUE_URL` through `queue::connect`, which knows
//! the schemes of the drivers this package was built with (features `redis`, `sqs`,
//! `kafka`).

/// A queue name valid on every backend: letters, digits, `-` and `_` (SQS's rule; the SQS
/// driver adds `.fifo` itself in FIFO mode).
pub fn queue_name(base: &str) -> String {
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

/// Deletes a story's queue when it ends. Kafka cannot (its topics are deleted with the
/// broker's tools): the queue is left, and that is said.
pub async fn remove_queue(queue: &queue::Queue) -> queue::Result<()> {
    match queue.delete().await {
        Err(queue::QueueError::Unsupported { feature, .. }) => {
            println!("queue {} kept: this backend cannot {feature}", queue.name());
            Ok(())
        }
        other => other,
    }
}

pub mod batch_handler;
pub mod flow;
pub mod idempotent_payment;
pub mod long_job;
pub mod portable;
