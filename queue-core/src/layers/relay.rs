//! The relay: forwards every message of one queue to another, at least once, keeping
//! per-key order. Its main use is the transactional outbox: jobs enqueued inside the
//! application's PostgreSQL transaction (`queue_postgres::txn`) are relayed to the SQS,
//! Kafka or Redis queue the workers read.
//!
//! ```no_run
//! # async fn f() -> queue_core::Result<()> {
//! # let (outbox, target): (queue_core::Queue, queue_core::Queue) = todo!();
//! let relay = queue_core::relay::Relay::new(outbox, target).start()?;
//! // ... later
//! let report = relay.shutdown().await;
//! println!("forwarded {}, lag {:?}", report.forwarded, report.lag);
//! # Ok(()) }
//! ```
//!
//! A relay is a batch [`Worker`](crate::Worker) on the source queue whose handler sends
//! each batch to the target: it inherits the worker's leases, retries with backoff,
//! dead-letter queue, graceful shutdown and metrics. Its guarantees, written down:
//!
//! - **At least once.** A message is acked in the source only after the target's send
//!   returned `Ok`. A relay that dies between the two leaves the message leased; when the
//!   lease ends another relay (or this one, restarted) sends it again. Where the target
//!   deduplicates ([`Capabilities::dedup_window`](crate::Capabilities::dedup_window):
//!   memory, Redis, PostgreSQL, SQS FIFO) the copy carries the source id as its dedup id,
//!   so a resend within the window is dropped; elsewhere (SQS standard, Kafka) consumers
//!   see the duplicate and must be idempotent, as with any at-least-once queue.
//! - **Per-key order.** On a source that hands out one message per ordering key at a
//!   time ([`Ordering::PerKey`](crate::Ordering::PerKey): PostgreSQL, memory, SQS FIFO),
//!   a key's next message is not received until the previous one is acked (sent) or
//!   dead-lettered, so the target receives each key's messages in order, however many
//!   relays run at once. A resend after a crash can repeat a message (the target may see
//!   1, 2, 2, 3), never reorder it, as long as a send finishes within the relay's lease
//!   (default 2 minutes, kept alive by the worker's heartbeats; a send still in flight
//!   when its lease is lost can land after the next relay's copy of the key's later
//!   messages). A key's messages move one receive, send and ack at a time: a source
//!   with few keys relays slowly. The key is kept on the copy. A target that cannot
//!   order by key (SQS standard, Kafka's partitions aside) refuses keyed messages, which then go to the
//!   source's dead-letter queue with that reason instead of being sent out of order,
//!   unless [`Relay::without_ordering_keys`] says to send them without their key (into
//!   the target's one line, still in per-key order; a consumer running one job at a time
//!   sees each key in order, concurrent consumers may not).
//! - **Many relays.** Any number may run on one source, in any processes: the source's
//!   leases keep them from sending the same message at once.
//! - **Failures.** A message the target refuses (too large, an option it cannot honour)
//!   is dead-lettered in the source at once (`permanent`); a failed send (the target is
//!   down) is retried with backoff, by default for about a day (1,000 attempts, backoff
//!   1 s to 1 min; a message's own max-attempts header is for its final consumer and
//!   does not shorten this), then dead-lettered (`max-attempts`). Redrive brings them
//!   back. The framework's own headers of the source (`x-queue-…`: first-enqueued and
//!   redrive times, dead-letter records) stay behind; the job's idempotency key, unique
//!   key and max attempts travel with it.
//! - **Lag.** [`RelayHandle::report`] gives how far behind the relay is: the age (since
//!   its first send) of the oldest message of the last batch it tried to forward, sent or
//!   not (so it keeps growing while the target is down), and zero once the source is
//!   empty (its stats are read every `lag_every`: an exact count on PostgreSQL, so keep
//!   it coarse on big backlogs). Also exported as the gauge
//!   `queue_relay_lag_seconds{queue}`. The age is measured from the producer's clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::driver::validate;
use crate::error::{QueueError, Result};
use crate::handle::Queue;
use crate::message::{Delivery, Message};
use crate::retry::{Backoff, RetryPolicy};
use crate::worker::{ItemFailure, JobError, WorkerHandle, WorkerReport};

/// A relay from one queue to another; see the [module docs](self).
#[derive(Debug)]
#[must_use = "a relay does nothing until start() is called"]
pub struct Relay {
    source: Queue,
    target: Queue,
    batch: usize,
    concurrency: usize,
    lease: Duration,
    retry: RetryPolicy,
    lag_every: Duration,
    strip_keys: bool,
}

impl Relay {
    /// A relay from `source` to `target`, with batches of up to 100 messages, 2 batches
    /// in flight, a 2-minute lease and the retry policy described in the module docs.
    pub fn new(source: Queue, target: Queue) -> Self {
        Relay {
            source,
            target,
            batch: 100,
            concurrency: 2,
            lease: Duration::from_secs(120),
            retry: RetryPolicy::new(
                1000,
                Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)),
            ),
            lag_every: Duration::from_secs(5),
            strip_keys: false,
        }
    }

    /// Where the target cannot order by key (SQS standard), sends keyed messages
    /// without their key instead of dead-lettering them (see the module docs). Targets
    /// that order by key keep it either way.
    pub fn without_ordering_keys(mut self) -> Self {
        self.strip_keys = true;
        self
    }

    /// Most messages per batch (at most both backends' batch limits; the worker checks).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n;
        self
    }

    /// Batches in flight at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How long a batch stays leased in the source: a relay that dies mid-batch delays
    /// those messages by up to this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How failed sends are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How often the lag is read (100 ms to 1 h).
    pub fn lag_every(mut self, every: Duration) -> Self {
        self.lag_every = every;
        self
    }

    /// Starts relaying. Bad settings are [`QueueError::InvalidOption`], as for a worker.
    pub fn start(self) -> Result<RelayHandle> {
        if self.lag_every < Duration::from_millis(100) || self.lag_every > Duration::from_secs(3600)
        {
            return Err(QueueError::InvalidOption(format!(
                "lag_every must be 100ms to 1h, got {:?}",
                self.lag_every
            )));
        }
        let lag = Arc::new(Mutex::new(None));
        let gauge =
            metrics::gauge!("queue_relay_lag_seconds", "queue" => self.source.name().to_string());
        let fwd = Forward {
            target: self.target.clone(),
            strip_keys: self.strip_keys,
            lag: lag.clone(),
            gauge: gauge.clone(),
        };
        let worker = self
            .source
            .worker()
            .batch_size(self.batch)
            .concurrency(self.concurrency)
            .lease(self.lease)
            .retry(self.retry)
            .own_attempts_only()
            .handle_batch(move |batch| fwd.clone().send(batch))
            .start()?;
        let source = self.source.clone();
        let (every, lag2) = (self.lag_every, lag.clone());
        let watcher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Ok(s) = source.stats().await {
                    if s.ready + s.in_flight + s.delayed == 0 {
                        gauge.set(0.0);
                        *lag2.lock().unwrap_or_else(|p| p.into_inner()) = Some(Duration::ZERO);
                    }
                }
            }
        });
        Ok(RelayHandle {
            worker,
            lag,
            watcher: Watcher(watcher),
        })
    }
}

/// What a relay's batch handler needs.
#[derive(Clone)]
struct Forward {
    target: Queue,
    strip_keys: bool,
    lag: Arc<Mutex<Option<Duration>>>,
    gauge: metrics::Gauge,
}

impl Forward {
    /// Sends one batch: messages the target refuses fail permanently, a failed send
    /// fails the rest for a retry.
    async fn send(self, batch: Vec<Delivery>) -> Vec<ItemFailure> {
        let caps = self.target.driver().capabilities();
        let kind = self.target.backend().kind();
        let now = SystemTime::now();
        let oldest = batch
            .iter()
            .map(|d| now.duration_since(d.first_enqueued_at).unwrap_or_default())
            .max()
            .unwrap_or_default();
        let mut failures = Vec::new();
        let mut send = Vec::with_capacity(batch.len());
        let mut at = Vec::with_capacity(batch.len());
        for (i, d) in batch.into_iter().enumerate() {
            let mut m = Message::new(d.payload);
            m.id = d.id;
            m.headers = d.headers;
            // The source's framework headers stay behind; the job's own travel on.
            m.headers.retain(|k, _| {
                !k.starts_with("x-queue-")
                    || [
                        crate::headers::IDEMPOTENCY_KEY,
                        crate::headers::UNIQUE,
                        crate::headers::MAX_ATTEMPTS,
                    ]
                    .contains(&k.as_str())
            });
            m.ordering_key = d.ordering_key;
            if self.strip_keys && caps.ordering == crate::Ordering::None {
                m.ordering_key = None;
            }
            if caps.dedup_window.is_some() {
                let id = m.id.as_str().to_string();
                m = m.dedup_id(id);
            }
            match validate(&caps, kind, &m) {
                Ok(()) => {
                    send.push(m);
                    at.push(i);
                }
                Err(e) => failures.push(ItemFailure::new(
                    i,
                    JobError::permanent(format!("the relay's target refused it: {e}")),
                )),
            }
        }
        // Set before the send: while the target is down the lag keeps growing.
        self.gauge.set(oldest.as_secs_f64());
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = Some(oldest);
        if !send.is_empty() {
            if let Err(e) = self.target.producer().send_batch(send).await {
                let why = format!("relay send to {} failed: {e}", self.target.name());
                failures.extend(
                    at.into_iter()
                        .map(|i| ItemFailure::new(i, JobError::retry(&why))),
                );
            }
        }
        failures
    }
}

/// A running relay. Dropping it stops the relay (as [`RelayHandle::shutdown`] would,
/// without waiting).
#[must_use = "dropping the handle stops the relay"]
#[derive(Debug)]
pub struct RelayHandle {
    worker: WorkerHandle,
    lag: Arc<Mutex<Option<Duration>>>,
    watcher: Watcher,
}

/// The lag task, stopped with the relay.
#[derive(Debug)]
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a relay has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayReport {
    /// Messages sent to the target and acked in the source.
    pub forwarded: u64,
    /// Sends that failed and will be retried.
    pub retried: u64,
    /// Messages moved to the source's dead-letter queue (refused by the target, or out
    /// of attempts).
    pub dead_lettered: u64,
    /// How far behind the relay is (see the module docs); `None` before the first batch
    /// or look.
    pub lag: Option<Duration>,
    /// The source worker's own report.
    pub worker: WorkerReport,
}

fn report(w: WorkerReport, lag: &Mutex<Option<Duration>>) -> RelayReport {
    RelayReport {
        forwarded: w.succeeded,
        retried: w.retried,
        dead_lettered: w.dead_lettered,
        lag: *lag.lock().unwrap_or_else(|p| p.into_inner()),
        worker: w,
    }
}

impl RelayHandle {
    /// What the relay has done so far.
    pub fn report(&self) -> RelayReport {
        report(self.worker.report(), &self.lag)
    }

    /// Stops taking batches, lets the batches in flight finish, and reports.
    pub async fn shutdown(self) -> RelayReport {
        let RelayHandle {
            worker,
            lag,
            watcher,
        } = self;
        drop(watcher);
        report(worker.shutdown().await, &lag)
    }

    /// Kills the relay as a crash would: batches in flight are neither acked nor given
    /// back; their leases run out and the source redelivers them.
    pub fn abort(self) {
        self.worker.abort();
    }
}
