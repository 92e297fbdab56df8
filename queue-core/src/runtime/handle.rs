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
use crate::store::Store;

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
    store: Option<Arc<dyn Store>>,
    /// Priorities the application declared ([`Backend::with_priorities`]).
    priority_levels: Option<u8>,
    /// Other backends a flow's or batch's jobs may be sent to, by name
    /// ([`Backend::with_peer`]).
    peers: Arc<std::collections::BTreeMap<String, Backend>>,
    /// Its own name among peers ([`Backend::with_name`]).
    name: Option<Arc<str>>,
}

impl Backend {
    /// A backend over a driver you built yourself (a custom driver, or one of the bundled
    /// drivers' constructors).
    pub fn new(driver: impl Driver) -> Self {
        Self::from_driver(Arc::new(driver))
    }

    /// A backend over a shared driver.
    pub fn from_driver(driver: Arc<dyn Driver>) -> Self {
        Backend {
            driver,
            status: None,
            store: None,
            priority_levels: None,
            peers: Arc::default(),
            name: None,
        }
    }

    /// The backend's short name: `memory`, `redis`, `sqs`, `kafka`, ...
    pub fn kind(&self) -> &'static str {
        self.driver.kind()
    }

    /// What the backend can do: what its driver declares, and what queue-core emulates
    /// over it. With a shared store ([`Backend::with_store`] or
    /// [`Backend::with_status`]), a backend without dedup ids gets them for
    /// [`crate::dedup::EMULATED_WINDOW`] (see [`crate::dedup`]).
    pub fn capabilities(&self) -> Capabilities {
        let c = self.driver.capabilities();
        match c.dedup_window {
            None if self.store().is_some() => {
                c.with_dedup_window(Some(crate::dedup::EMULATED_WINDOW))
            }
            _ => c,
        }
    }

    /// This backend with a shared store for the layers that coordinate workers and
    /// producers: rate limits, pause, unique jobs, schedules, and the dedup ids it
    /// emulates where the backend has none. Without job status: see
    /// [`Backend::with_status`] for that (which brings its store too). The store need not
    /// be the queue's server.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// This backend, knowing `other` as `name`: a flow's jobs may then be on `other`'s
    /// queues ([`Flow::job_on`](crate::flow::Flow::job_on)), so that one flow spans
    /// backends (a Kafka event, then a job on Redis). Names are shared by every process
    /// that runs the flow's jobs: each backend involved gets its own name
    /// ([`Backend::with_name`]) and knows the others by theirs, and all share one store.
    /// A worker that must send a job to a peer it does not know gives its own job back
    /// and logs why, until it does. `name`: 1 to 64 letters, digits, `-` or `_`; a name
    /// given twice keeps the last.
    pub fn with_peer(mut self, name: &str, other: Backend) -> Result<Self> {
        check_peer_name(name)?;
        let mut peers = (*self.peers).clone();
        peers.insert(name.to_string(), other);
        self.peers = Arc::new(peers);
        Ok(self)
    }

    /// The backend known as `name` ([`Backend::with_peer`]).
    pub fn peer(&self, name: &str) -> Option<&Backend> {
        self.peers.get(name)
    }

    /// This backend's own name among its peers (see [`Backend::with_peer`]); a flow that
    /// spans backends is added through a named one.
    pub fn with_name(mut self, name: &str) -> Result<Self> {
        check_peer_name(name)?;
        self.name = Some(name.into());
        Ok(self)
    }

    /// Its name among peers, if it has one ([`Backend::with_name`]).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The backend a flow's job named `peer` goes to: this one (no name, or its own), or
    /// a peer.
    pub(crate) fn resolve(&self, peer: Option<&str>) -> Result<&Backend> {
        match peer {
            None => Ok(self),
            Some(p) if Some(p) == self.name() => Ok(self),
            Some(p) => self.peer(p).ok_or_else(|| {
                QueueError::InvalidFlow(format!(
                    "this process knows no backend named {p:?} (Backend::with_peer)"
                ))
            }),
        }
    }

    /// This backend for an application that uses priorities `0..levels` (2 to 16), on every
    /// backend alike: where the backend has priorities (memory, Redis, PostgreSQL) a higher
    /// one is refused at send; where it has none (SQS standard queues) each level above 0
    /// becomes a tier queue read before the lower ones ([`crate::tiers`], which says what
    /// that costs). SQS FIFO queues and Kafka refuse it ([`QueueError::Unsupported`]):
    /// tiers would split a key's jobs across queues, and Kafka's consumers could not keep
    /// tiers' order (see [`crate::tiers`]).
    /// So `Message::priority` means the same on every backend, and a test on memory refuses
    /// what production would. Call it before making queues, with the same `levels` in
    /// producers and workers. A `levels` outside 2 to 16 is [`QueueError::InvalidOption`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::Message;
    /// // An SQS-like backend (no native priorities): tiers are emulated.
    /// let backend = queue_core::connect("memory://app?like=sqs").await?.with_priorities(3)?;
    /// let jobs = backend.queue("jobs");
    /// jobs.create().await?;
    /// let p = jobs.producer();
    /// p.send(Message::new("later")).await?;
    /// p.send(Message::new("now").priority(2)).await?;
    /// assert!(p.send(Message::new("x").priority(3)).await.is_err(), "outside 0..3");
    /// # Ok(()) }
    /// ```
    pub fn with_priorities(mut self, levels: u8) -> Result<Self> {
        crate::tiers::check_levels(levels)?;
        if self.priority_levels.is_some() {
            return Err(QueueError::InvalidOption(
                "with_priorities was already called on this backend".into(),
            ));
        }
        if !self.driver.capabilities().priority {
            self.driver = Arc::new(crate::tiers::PriorityTiers::new(
                self.driver.clone(),
                levels,
            )?);
        }
        self.priority_levels = Some(levels);
        Ok(self)
    }

    /// The priority levels declared with [`Backend::with_priorities`], if any.
    pub fn priority_levels(&self) -> Option<u8> {
        self.priority_levels
    }

    /// The shared store: the one [`Backend::with_store`] set, else job status's.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store
            .as_ref()
            .or_else(|| self.status.as_ref().map(|s| s.store()))
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
    /// [`Worker::idempotency`](crate::Worker::idempotency); `None` where the backend has none (use
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

fn check_peer_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(QueueError::InvalidOption(format!(
            "backend name {name:?}: 1 to 64 letters, digits, '-' or '_'"
        ))),
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
        Self::from_driver(d)
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
    ///
    /// Dedup ids the backend does not take natively are claimed in the shared store first
    /// (see [`crate::dedup`]): a duplicate is not sent and answers with the original's id.
    pub(crate) async fn send_checked(&self, messages: Vec<Message>) -> Result<Vec<MessageId>> {
        let driver = self.driver();
        let caps = self.backend.capabilities();
        let kind = driver.kind();
        let mut messages = messages;
        for m in &mut messages {
            crate::trace::inject(&mut m.headers);
            validate(&caps, kind, m)?;
            if let Some(levels) = self.backend.priority_levels {
                crate::tiers::check_priority(m, levels)?;
            }
        }
        if caps.max_batch == 0 {
            return Err(QueueError::backend(
                kind,
                "driver declares max_batch = 0; it can send nothing",
            ));
        }
        let emulated = driver.capabilities().dedup_window.is_none()
            && messages.iter().any(|m| m.dedup_id.is_some());
        let store = match self.backend.store() {
            Some(s) if emulated => s.clone(),
            _ => return self.send_chunks(messages, caps.max_batch).await,
        };
        let (slots, claims) = crate::dedup::claim_all(&store, &self.name, messages).await?;
        let mut send = Vec::new();
        let mut order = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot {
                crate::dedup::Slot::Send(m) => {
                    order.push(None);
                    send.push(m);
                }
                crate::dedup::Slot::Duplicate(id) => order.push(Some(id)),
            }
        }
        let sent = match self.send_chunks(send, caps.max_batch).await {
            Ok(ids) => ids,
            Err(e) => {
                crate::dedup::give_up(&store, claims).await;
                return Err(e);
            }
        };
        crate::dedup::confirm(&store, claims).await;
        let mut sent = sent.into_iter();
        order
            .into_iter()
            .map(|o| {
                o.or_else(|| sent.next())
                    .ok_or_else(|| QueueError::backend(kind, "send returned too few ids"))
            })
            .collect()
    }

    async fn send_chunks(&self, messages: Vec<Message>, max: usize) -> Result<Vec<MessageId>> {
        let mut ids = Vec::with_capacity(messages.len());
        let mut rest = messages;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(max));
            ids.extend(self.driver().send(&self.name, rest).await?);
            rest = tail;
        }
        Ok(ids)
    }
}
