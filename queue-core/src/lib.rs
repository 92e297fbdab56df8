//! # queue-core
//!
//! One API for background jobs and message queues, whatever the backend: AWS SQS, Kafka,
//! Redis, or the embedded in-memory driver in this crate.
//!
//! - [`connect`] a URL and get a [`Backend`]; `backend.queue("emails")` is a [`Queue`]:
//!   [`Queue::producer`] sends, [`Queue::worker`] runs handlers, [`Queue::stats`],
//!   [`Queue::redrive`], [`Queue::purge`], [`Queue::peek`], [`Queue::dead_letters`],
//!   [`Queue::pause`] and [`Queue::dead_letter_queue`] serve operators.
//!   Every message is checked against the backend's [`Capabilities`] before it is sent.
//! - [`Job`]: a serde type with a stable name, carried in a versioned envelope.
//! - [`Worker`]: the runtime every backend shares: bounded concurrency, retries with
//!   backoff ([`RetryPolicy`]), dead-lettering with typed reasons ([`DeadLetterKind`]),
//!   idempotency ([`IdempotencyStore`]), lease heartbeats, timeouts, panics caught,
//!   graceful shutdown, batch handlers, tracing spans and `metrics` counters.
//! - [`status`]: job status by id (queued, running, succeeded, failed, dead, cancelled),
//!   progress, results and cancellation, over a [`Store`] ([`MemoryStore`] here, Redis and
//!   PostgreSQL in their crates); turned on with [`Backend::with_status`].
//! - Flow control over the same store, on every backend: [`limit`] (rate limits per queue
//!   and per key, per-key concurrency, a handler's back-off), [`unique`] (one job per
//!   key), [`pause`] (a queue paused for all its workers).
//! - [`flow`]: jobs that wait for other jobs (a DAG across queues) and read their
//!   results, with a failure policy per dependency ([`Backend::add_flow`]).
//! - [`batch`]: a group of jobs, open until closed, with `on_success` and `on_complete`
//!   callbacks that run once, progress counts, and nesting ([`Backend::new_batch`]).
//! - [`aggregate`]: jobs that share a key handed to one handler call in sets (by size,
//!   minimum size or wait), each still settled on its own.
//! - [`debounce`]: of the jobs sent under one key, only the last runs
//!   ([`Producer::debounce`], [`Producer::replace_pending`]).
//! - [`driver`]: the interface a backend implements ([`Driver`]), for driver authors.
//! - [`MemoryQueue`]: the in-memory driver, with real lease, delay, ordering, priority and
//!   dedup semantics (`memory://NAME`).
//! - `testkit` (feature `testkit`): the conformance kit every driver runs.
//! - Feature `cron`: [`schedule`], cron and repeatable jobs in any time zone, safe with
//!   many schedulers.
//! - Feature `otel`: W3C trace context from the producer's span to the job's span, through
//!   the message headers (OpenTelemetry through `tracing-opentelemetry`; see `trace.rs`).
//!
//! The bundled drivers for Redis, SQS and Kafka live in their own crates; the `queue`
//! crate re-exports this one and knows their URL schemes through cargo features.
//!
//! ## Guarantees
//! Delivery is at-least-once: a message whose send returned `Ok` is delivered until a
//! handler succeeds, or it lands in the dead-letter queue with the reason in its headers.
//!
//! Duplicates happen. Their sources: a lease that ended while the handler still ran (a
//! slow job without heartbeats, a paused process); a worker that crashed after the handler
//! ran but before the ack landed; a send retried after a timeout whose first try had in
//! fact succeeded; SQS standard queues, which may deliver twice on their own; Kafka
//! rebalances, which replay records whose offsets were not yet committed; an ack that
//! failed (the message comes back when its lease ends); and a crash between the two steps
//! of an emulated move (dead-lettering, redrive and Kafka's retries copy a message, then
//! settle the original: a crash in between leaves both). The idempotency
//! layer ([`Worker::idempotency`]) turns duplicates into exactly-once *effects* within its
//! retention window, provided the handler's effect and the store's completion mark cannot
//! be separated by a crash: the mark is written after the handler returns and before the
//! ack, so a crash between the effect and the mark runs the effect again. Make effects
//! that must never repeat idempotent themselves (a unique key in your database), or
//! record them in the same transaction as the mark.
//!
//! ```
//! use queue_core::{Job, JobContext};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Welcome { user: String }
//! impl Job for Welcome { const NAME: &'static str = "welcome"; }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! let backend = queue_core::connect("memory://").await?;
//! let mail = backend.queue("mail");
//! mail.create().await?;
//! mail.enqueue(&Welcome { user: "ada".into() }).await?;
//! let worker = mail
//!     .worker()
//!     .handle(|job: Welcome, _ctx: JobContext| async move {
//!         println!("welcome, {}", job.user);
//!         Ok(())
//!     })
//!     .start()?;
//! # while mail.stats().await?.total() > 0 {
//! #     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! # }
//! worker.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs, missing_debug_implementations)]

// The crate's parts, one folder each: the contract drivers implement, the runtime
// applications hold, the layers over the shared store, the in-memory driver, and the kit.
mod contract;
mod layers;
pub mod memory;
mod runtime;

pub use contract::{driver, needs, options, profile};
#[cfg(feature = "cron")]
pub use layers::schedule;
pub use layers::{
    aggregate, batch, debounce, dedup, fair, flow, limit, pause, relay, status, store, tiers,
    unique,
};
pub use runtime::{idempotency, job, retry};

pub(crate) use contract::{error, message, registry};
pub(crate) use runtime::{handle, inspect, producer, trace, worker};

#[cfg(feature = "testkit")]
pub mod testkit;

pub use driver::{
    Capabilities, DeadLetterKind, DeadLetterReason, Driver, KeyChars, LeaseModel, Ordering, Peek,
    ReceiveOptions,
};
pub use error::{redact, BoxError, DecodeError, QueueError, Result};
pub use fair::{FairKey, Fairness};
pub use handle::{Backend, Queue};
pub use idempotency::{Begin, IdempotencyStore, MemoryIdempotency};
pub use inspect::DeadLetter;
pub use job::Job;
pub use limit::{LimitKey, RateLimit};
pub use memory::{MemoryConfig, MemoryQueue};
pub use message::{
    from_unix_millis, headers, unix_millis, Delivery, Headers, Message, MessageId, Peeked,
    QueueStats, Receipt,
};
pub use needs::{Need, Needs, Unmet};
pub use producer::{job_message, Producer, SendOptions};
pub use profile::Profile;
pub use registry::{connect, register, schemes};
pub use retry::{Backoff, Decision, RetryPolicy};
pub use status::{CancelOutcome, JobState, JobStatus, JobStatuses, Progress, Retention};
pub use store::{MemoryStore, Store};
pub use unique::{Enqueued, Unique, UniqueScope};
pub use worker::{
    shutdown_signal, CancellationToken, ItemFailure, JobContext, JobError, JobResult, Worker,
    WorkerConfig, WorkerHandle, WorkerReport,
};
