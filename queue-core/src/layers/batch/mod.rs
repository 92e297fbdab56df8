//! Batches: a group of jobs with callbacks that run once the group is done (Sidekiq Pro's
//! batches). Not to be confused with a batch handler ([`Worker::batch`](crate::Worker)), which
//! takes several messages in one call.
//!
//! A batch is opened with its callbacks ([`Backend::new_batch`](crate::Backend::new_batch)),
//! takes jobs on any of the backend's queues for as long as it is open
//! ([`Batch::add`](crate::batch::Batch::add), from any process: [`Backend::batch`](crate::Backend::batch)
//! finds it by id), and is closed once every job is in ([`Batch::close`](crate::batch::Batch::close)).
//! When it is closed and every job has either succeeded or been dead-lettered, its
//! callbacks, themselves jobs, are sent, each once:
//! - `on_complete`: every job finished, whatever became of it;
//! - `on_success`: every job succeeded. If some job was dead-lettered, it is sent the day
//!   the last such job, redriven from the dead-letter queue, succeeds.
//!
//! A callback's handler reads the counts with [`Backend::batch_status`](crate::Backend::batch_status)
//! and [`JobContext::batch_id`](crate::JobContext::batch_id).
//!
//! ```
//! use queue_core::{Job, JobContext, MemoryStore};
//! use std::sync::Arc;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Thumbnail { photo: u32 }
//! # impl Job for Thumbnail { const NAME: &'static str = "thumbnail"; }
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Report;
//! # impl Job for Report { const NAME: &'static str = "report"; }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! // Batches keep their state in the shared store (here the in-memory one).
//! let backend = queue_core::connect("memory://").await?
//!     .with_store(Arc::new(MemoryStore::new()));
//! for q in ["thumbnails", "reports"] { backend.queue(q).create().await?; }
//!
//! let batch = backend.new_batch()
//!     .description("album 7")
//!     .on_complete("reports", &Report)
//!     .open().await?;
//! let photos: Vec<Thumbnail> = (0..100).map(|photo| Thumbnail { photo }).collect();
//! batch.add("thumbnails", &photos).await?;
//! batch.close().await?;
//!
//! let thumbnails = backend.queue("thumbnails").worker()
//!     .handle(|_: Thumbnail, _| async { Ok(()) })
//!     .start()?;
//! let b = backend.clone();
//! let reports = backend.queue("reports").worker()
//!     .handle(move |_: Report, ctx: JobContext| {
//!         let b = b.clone();
//!         async move {
//!             let id = ctx.batch_id().expect("a batch's callback");
//!             let status = b.batch_status(id).await?.expect("a batch");
//!             assert_eq!((status.succeeded, status.dead), (100, 0));
//!             Ok(())
//!         }
//!     })
//!     .start()?;
//! # while backend.batch_status(batch.id()).await?.unwrap().callbacks[0].state
//! #     != queue_core::batch::CallbackState::Succeeded {
//! #     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! # }
//! # thumbnails.shutdown().await; reports.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # The model
//! - Each job added takes the batch's next slot. A slot is *pending*, *succeeded* or
//!   *dead* (dead-lettered: its retries spent, a permanent error, cancelled). Retries
//!   within a job are not the batch's business. A success replaces a death: a job
//!   redriven from the dead-letter queue, or a copy of a job whose lease ran out that
//!   succeeds after the other copy was dead-lettered (a flow keeps the failure there);
//!   a death never replaces a success. A job skipped because its idempotency key's work
//!   is done counts as succeeded. A batch's jobs cannot carry dedup ids (a dropped
//!   duplicate would never settle its slot), nor be debounced.
//! - A job's worker records its slot *before* it acks the job, by compare-and-set on one
//!   of the batch's [`SHARDS`] shard records (two bitmaps each), so a duplicate delivery
//!   counts once, and a crash in between only means the job is delivered and recorded
//!   again. The callbacks are made due by exactly one compare-and-set on the batch's head
//!   record, and sent by whoever made that write; if that sender dies before it marks
//!   them sent, the repeat of its job's settlement (or of the close) sends them once they
//!   have been due for 30 s. A callback's worker records its
//!   outcome the same way, and skips a duplicate of a callback that already succeeded:
//!   each callback runs once in effect.
//! - Nested batches: [`Batch::child`](crate::batch::Batch::child) opens a batch that takes
//!   one slot of its parent (at most [`MAX_DEPTH`] levels). That slot settles once the child has finished: complete,
//!   and its due callbacks have settled. It succeeds when none of the child's jobs and
//!   callbacks is dead. So a parent's `on_success` runs after its children's callbacks.
//! - Adding is open until the batch is closed: [`Batch::add`](crate::batch::Batch::add)
//!   on a closed batch is refused ([`QueueError::InvalidBatch`](crate::QueueError::InvalidBatch)).
//!   A job of the batch that must add more jobs to it needs the batch kept open until it
//!   has (close it from that job, or from whatever knows the batch is whole).
//! - An add whose send fails records its slots dead with the send's error, so the batch
//!   still completes (`on_complete` runs, `on_success` does not), and returns the error.
//!   A producer that dies between handing out slots and sending their jobs leaves those
//!   slots pending: the batch never completes, and
//!   [`BatchStatus::pending`](crate::batch::BatchStatus::pending) shows them. Open and
//!   close are one call each; close is idempotent, so a close that failed is called again.
//! - Records live for the batch's retention (default [`DEFAULT_RETENTION`]) from its
//!   opening; jobs that settle after that advance nothing.
//! - Cost: one shard write and one head read per job, plus one head write per shard once
//!   the batch is closed ([`SHARDS`] in all): a 10,000-job batch does not funnel its
//!   settlements through one record.

mod ops;
mod record;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use ops::{parse_header, settle, settle_callback, state_of, valid_header};
pub use ops::{Batch, BatchBuilder, BatchStatus, CallbackStatus};
pub(crate) use record::Settled;

/// How many shard records a batch spreads its slots over.
pub const SHARDS: u32 = 32;
/// The most slots one batch may hand out (jobs and child batches).
pub const MAX_SLOTS: u32 = 1_000_000;
/// How long a batch's records live by default: seven days from when it was opened.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest batch id.
pub const MAX_ID_LEN: usize = 128;
/// The deepest nesting of batches.
pub const MAX_DEPTH: u8 = 16;
/// The longest error a dead slot or a failed callback keeps (bytes).
pub const MAX_REASON: usize = 256;

/// Which callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// Sent when every job has succeeded.
    Success,
    /// Sent when every job has finished, succeeded or dead.
    Complete,
}

impl Kind {
    /// `success` or `complete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::Complete => "complete",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Kind::Success),
            "complete" => Some(Kind::Complete),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a callback stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CallbackState {
    /// Its condition has not come true (yet).
    Pending,
    /// Its condition came true; being sent.
    Due,
    /// In its queue (or running, or being retried).
    Sent,
    /// Its handler succeeded.
    Succeeded,
    /// Dead-lettered.
    Failed,
}

impl CallbackState {
    /// The state's name: `pending`, `due`, `sent`, `succeeded`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            CallbackState::Due => "due",
            CallbackState::Sent => "sent",
            CallbackState::Succeeded => "succeeded",
            CallbackState::Failed => "failed",
        }
    }
}

impl fmt::Display for CallbackState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
