//! # queue-core
//!
//! One API for background jobs and message queues, whatever the backend: AWS SQS, Kafka,
//! Redis, or the embedded in-memory driver in this crate.
//!
//! - [`Queue`]: the driver trait, a handful of primitives (send, receive under a lease,
//!   ack, nack with delay, extend, stats) plus declared [`Capabilities`]. Hold it as
//!   `Arc<dyn Queue>`; choose it at run time with [`connect`] and a URL.
//! - [`Producer`]: validates messages against the capabilities, chunks batches, sends.
//! - [`Job`]: a serde type with a stable name, carried in a versioned envelope.
//! - [`Worker`]: the runtime every backend shares: bounded concurrency, retries with
//!   backoff ([`RetryPolicy`]), dead-lettering with reasons, idempotency
//!   ([`IdempotencyStore`]), lease heartbeats, timeouts, panics caught, graceful shutdown,
//!   batch handlers, tracing spans and `metrics` counters.
//! - [`MemoryQueue`]: the in-memory driver, with real lease, delay, ordering and dedup
//!   semantics.
//! - `testkit` (feature `testkit`): the conformance suite every driver runs.
//!
//! ## Guarantees
//! Delivery is at-least-once: a message whose send returned `Ok` is delivered until a
//! handler succeeds, or it lands in the dead-letter queue with the reason in its headers.
//! Duplicates come only from an expired lease, a crashed worker or a retried send; the
//! idempotency layer makes their effects exactly-once within its retention window.
//!
//! ```
//! use queue_core::{Job, JobContext, MemoryQueue, Producer, Queue, Worker};
//! use std::sync::Arc;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Welcome { user: String }
//! impl Job for Welcome { const NAME: &'static str = "welcome"; }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
//! queue.create_queue("mail").await?;
//! Producer::new(queue.clone(), "mail").enqueue(&Welcome { user: "ada".into() }).await?;
//! let worker = Worker::new(queue.clone(), "mail")
//!     .handle(|job: Welcome, _ctx: JobContext| async move {
//!         println!("welcome, {}", job.user);
//!         Ok(())
//!     })
//!     .start();
//! # while queue.stats("mail").await?.in_flight + queue.stats("mail").await?.ready > 0 {
//! #     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! # }
//! worker.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
pub mod idempotency;
pub mod job;
pub mod memory;
mod message;
mod producer;
mod queue;
mod registry;
pub mod retry;
mod worker;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{redact, BoxError, DecodeError, QueueError, Result};
pub use idempotency::{Begin, IdempotencyStore, MemoryIdempotency};
pub use job::Job;
pub use memory::{MemoryConfig, MemoryQueue};
pub use message::{
    from_unix_millis, headers, unix_millis, Delivery, Headers, Message, MessageId, QueueStats,
    Receipt,
};
pub use producer::{job_message, Producer, SendOptions};
pub use queue::{
    dead_letter_copy, first_enqueued, redriven_copy, validate, Capabilities, DeadLetterReason,
    LeaseModel, Ordering, Queue, ReceiveOptions,
};
pub use registry::{connect, register, schemes, ConnectFuture, Connector};
pub use retry::{Backoff, Decision, RetryPolicy};
pub use worker::{
    ItemFailure, JobContext, JobError, JobResult, Worker, WorkerConfig, WorkerHandle, WorkerReport,
};
