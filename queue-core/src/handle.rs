//! What applications hold: a [`Backend`] from [`crate::connect`], and a [`Queue`] per
//! queue name, from which producers, workers, stats and dead-letter tools hang.
//!
//! Producers and workers hang off a [`Queue`] too: `queue.producer()` is defined in
//! `producer.rs` and `queue.worker()` in `worker/`, so that this file depends on neither.
//!
//! Nothing reaches a driver from here without being checked against the backend's
//! [`Capabilities`]: an oversized message, or an option the backend cannot honour, is a
//! typed error before any network call.

use std::fmt;
use std::sync::Arc;

use crate::driver::{validate, Capabilities, Driver};
use crate::error::{QueueError, Result};
use crate::idempotency::IdempotencyStore;
use crate::message::{Message, MessageId, QueueStats};
use crate::status::{CancelOutcome, JobStatus, JobStatuses};

/// A connected backend. Cheap to clone; share it across the application.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// let backend = queue_core::connect("memory://").await?;
/// let emails = backend.queue("emails");
/// emails.create().await?;
/// emails.producer().send(queue_core::Message::new("hi")).await?;
/// assert_eq!(emails.stats().await?.ready, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Backend {
    driver: Arc<dyn Driver>,
    status: Option<JobStatuses>,
}

impl Backend {
    /// A backend over a driver you built yourself (a custom driver, or one of the bundled
    /// drivers' constructors).
    pub fn new(driver: impl Driver) -> Self {
        Backend {
            driver: Arc::new(driver),
            status: None,
        }
    }

    /// A backend over a shared driver.
    pub fn from_driver(driver: Arc<dyn Driver>) -> Self {
        Backend {
            driver,
            status: None,
        }
    }

    /// The backend's short name: `memory`, `redis`, `sqs`, `kafka`, ...
    pub fn kind(&self) -> &'static str {
        self.driver.kind()
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.driver.capabilities()
    }

    /// Checks, once at start, that this backend gives everything `needs` lists: `Ok`, or
    /// one [`QueueError::Unmet`] naming every missing need and the backends that have it
    /// (see [`crate::needs`]). Call it where the application starts, before it serves
    /// traffic, so that a backend swapped by URL is refused there and not at the first
    /// send that needs what it lacks.
    pub fn require(&self, needs: &crate::Needs) -> Result<()> {
        needs.check(self.kind(), &self.capabilities())
    }

    /// A handle on the queue called `name` (nothing is created or checked yet: see
    /// [`Queue::create`]).
    pub fn queue(&self, name: impl Into<String>) -> Queue {
        Queue {
            backend: self.clone(),
            name: name.into().into(),
        }
    }

    /// The idempotency store this backend offers (Redis: one on the same server), for
    /// [`Worker::idempotency`]; `None` where the backend has none (use
    /// [`crate::MemoryIdempotency`] or a store of your own).
    pub fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        self.driver.idempotency_store()
    }

    /// This backend with job status on: its producers record every job they send as
    /// `queued`, its workers record each run (see [`crate::status`]), and
    /// [`job_status`](Backend::job_status) and [`cancel_job`](Backend::cancel_job) answer
    /// by id. The store need not be the queue's server: SQS with a Redis store is fine.
    pub fn with_status(mut self, statuses: JobStatuses) -> Self {
        self.status = Some(statuses);
        self
    }

    /// The job status this backend records, if [`with_status`](Backend::with_status) set it.
    pub fn status(&self) -> Option<&JobStatuses> {
        self.status.as_ref()
    }

    /// A job's status by the id its send returned; `Ok(None)` for an unknown or expired
    /// id, [`QueueError::NoStatusStore`] without [`with_status`](Backend::with_status).
    pub async fn job_status(&self, id: &MessageId) -> Result<Option<JobStatus>> {
        self.status
            .as_ref()
            .ok_or(QueueError::NoStatusStore)?
            .get(id.as_str())
            .await
    }

    /// Cancels a job by id (see [`JobStatuses::cancel`]).
    pub async fn cancel_job(&self, id: &MessageId) -> Result<CancelOutcome> {
        self.status
            .as_ref()
            .ok_or(QueueError::NoStatusStore)?
            .cancel(id.as_str())
            .await
    }

    /// Requests made to the backend through this handle's driver so far, where the backend
    /// bills by request (SQS); `None` elsewhere.
    pub fn requests_made(&self) -> Option<u64> {
        self.driver.requests_made()
    }

    /// The driver underneath, for the worker and the conformance kit.
    pub(crate) fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl<D: Driver> From<Arc<D>> for Backend {
    fn from(d: Arc<D>) -> Self {
        Backend {
            driver: d,
            status: None,
        }
    }
}

/// One queue of a backend: send to it, work it, watch it, and manage its dead letters.
/// Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    backend: Backend,
    name: Arc<str>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &&*self.name)
            .field("backend", &self.backend.kind())
            .finish()
    }
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend it lives on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub(crate) fn driver(&self) -> &Arc<dyn Driver> {
        self.backend.driver()
    }

    /// Creates the queue and its dead-letter queue if they do not exist (idempotent).
    pub async fn create(&self) -> Result<()> {
        self.driver().create_queue(&self.name).await
    }

    /// Deletes the queue and its dead-letter queue, with every message in them.
    pub async fn delete(&self) -> Result<()> {
        self.driver().delete_queue(&self.name).await
    }

    /// Removes every message of the queue, leased ones included; the dead-letter queue is
    /// left alone (purge it with `queue.dead_letter_queue().purge()`).
    pub async fn purge(&self) -> Result<()> {
        self.driver().purge(&self.name).await
    }

    /// Counts by state; `dead` is the dead-letter queue's depth.
    pub async fn stats(&self) -> Result<QueueStats> {
        self.driver().stats(&self.name).await
    }

    /// The dead-letter queue, as a queue of its own: read its stats, work it with a
    /// worker (a DLQ processor), purge it.
    pub fn dead_letter_queue(&self) -> Queue {
        self.backend
            .queue(self.driver().dead_letter_queue(&self.name))
    }

    /// Moves up to `limit` dead letters back into this queue, with a fresh attempt count
    /// and the dead-letter headers removed; returns how many moved.
    pub async fn redrive(&self, limit: usize) -> Result<usize> {
        self.driver().redrive(&self.name, limit).await
    }

    /// Checks `messages` against the capabilities and sends them in chunks of the
    /// backend's maximum batch.
    pub(crate) async fn send_checked(&self, messages: Vec<Message>) -> Result<Vec<MessageId>> {
        let driver = self.driver();
        let caps = driver.capabilities();
        let kind = driver.kind();
        let mut messages = messages;
        for m in &mut messages {
            crate::trace::inject(&mut m.headers);
            validate(&caps, kind, m)?;
        }
        if caps.max_batch == 0 {
            return Err(QueueError::backend(
                kind,
                "driver declares max_batch = 0; it can send nothing",
            ));
        }
        let mut ids = Vec::with_capacity(messages.len());
        let mut rest = messages;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(caps.max_batch));
            ids.extend(driver.send(&self.name, rest).await?);
            rest = tail;
        }
        Ok(ids)
    }
}
