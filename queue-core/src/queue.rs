//! The driver trait every backend implements, and its declared capabilities.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::{QueueError, Result};
use crate::message::{
    from_unix_millis, headers, unix_millis, Delivery, Message, MessageId, QueueStats, Receipt,
};

/// How a backend orders deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// No order is promised; an ordering key is refused with [`QueueError::Unsupported`].
    None,
    /// Messages with the same key are delivered in send order, one at a time: the next one
    /// becomes visible when the previous one is acked or dead-lettered (SQS FIFO groups).
    PerKey,
    /// Messages with the same key land on one partition and are delivered in partition
    /// order to the single consumer that owns it (Kafka).
    PerPartition,
}

/// What a lease is on this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseModel {
    /// Each delivery is hidden for its own lease; an unsettled delivery comes back when the
    /// lease ends (SQS visibility timeout, Redis pending entries, in-memory deadlines).
    PerMessage {
        /// Whether [`Queue::extend`] can push the deadline out (heartbeats for long jobs).
        extend: bool,
    },
    /// Leases belong to a consumer session (Kafka partition assignment): an unsettled
    /// delivery comes back only when its consumer leaves or dies and another member takes
    /// over its partition. `receive`'s `lease` argument is ignored.
    Session,
}

/// What a backend can do, declared by its driver and *checked* by the conformance suite:
/// a declared capability is tested, an undeclared one must be refused with a typed error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest message accepted, payload plus headers ([`Message::encoded_size`]).
    pub max_message_size: usize,
    /// Most messages per `send`, `receive` or `ack` call; the core chunks larger batches.
    pub max_batch: usize,
    /// Longest delay accepted on send; `None` when delayed sends are not supported.
    pub max_delay: Option<Duration>,
    /// Longest delay [`Queue::nack`] honours (retry backoff); `None` when a nacked message
    /// is always visible again at once. The worker caps its backoff here.
    pub max_nack_delay: Option<Duration>,
    /// Whether the backend moves poison messages by itself (SQS redrive policy) in addition
    /// to the core's explicit dead-lettering.
    pub native_dlq: bool,
    /// Ordering guarantee for messages with an ordering key.
    pub ordering: Ordering,
    /// Whether [`Message::priority`] is honoured.
    pub priority: bool,
    /// Deduplication window for [`Message::dedup_id`]; `None` when not supported.
    pub dedup_window: Option<Duration>,
    /// How leases work.
    pub lease: LeaseModel,
    /// Whether [`Queue::stats`] counts are exact at the moment they are read.
    pub exact_stats: bool,
    /// Smallest time step the backend resolves for delays and leases (SQS: one second).
    pub timer_granularity: Duration,
}

/// Why a message is being dead-lettered; written into the dead letter's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterReason {
    /// Short machine-readable kind: `max-attempts`, `permanent` or `malformed`.
    pub kind: &'static str,
    /// The last error's message.
    pub error: String,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Options for [`Queue::receive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most deliveries to return (at most [`Capabilities::max_batch`]).
    pub max: usize,
    /// Long-poll: wait up to this long for the first message; return early when one arrives.
    pub wait: Duration,
    /// Each delivery stays hidden from other consumers for this long.
    pub lease: Duration,
}

/// A queue backend. One implementation per backend (in-memory, Redis, SQS, Kafka, or your
/// own); applications hold it as `Arc<dyn Queue>` chosen at run time (see [`crate::connect`]).
///
/// The methods are *primitives*: a driver maps each onto its backend and nothing more.
/// Retries, backoff, dead-letter decisions, idempotency, lease heartbeats, batching and
/// option validation live in [`crate::Producer`] and [`crate::Worker`], once for every
/// backend. The defaults of [`Queue::dead_letter`] and [`Queue::redrive`] emulate those
/// features from the other primitives; a backend with a native way overrides them.
///
/// Contract (checked by the conformance suite, `queue_core::testkit`): at-least-once delivery; `attempt` counts
/// deliveries; a nacked message reappears after its delay with `attempt + 1`; a delivery
/// whose lease ends unsettled reappears; `send` returns `Ok` only once the backend has the
/// messages.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// The backend's short name, e.g. `"memory"`, `"redis"`.
    fn backend(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates `queue` and its dead-letter queue if they do not exist (idempotent).
    /// Every other call on a queue that was never created fails with
    /// [`QueueError::UnknownQueue`].
    async fn create_queue(&self, queue: &str) -> Result<()>;

    /// Sends one batch of at most [`Capabilities::max_batch`] messages, already validated
    /// against the capabilities by the caller. Returns their ids in order; a message
    /// dropped as a duplicate returns the id it was sent with.
    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>>;

    /// Leases up to `opts.max` messages, waiting up to `opts.wait` for the first.
    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>>;

    /// Settles deliveries as done: they are never delivered again.
    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()>;

    /// Gives a delivery back: visible again after `delay`, with `attempt + 1`.
    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()>;

    /// Pushes a delivery's lease out to `lease` from now.
    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<()>;

    /// Called by the worker after it stopped receiving from `queue` (graceful shutdown). A
    /// backend whose consumers hold a session (Kafka group membership) leaves it here, so
    /// that the others take over its partitions at once. The default does nothing.
    async fn stop_receiving(&self, queue: &str) -> Result<()> {
        let _ = queue;
        Ok(())
    }

    /// Counts of messages by state, `dead` being the dead-letter queue's depth.
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// The name of `queue`'s dead-letter queue. `{queue}-dlq` unless the backend needs
    /// another form (SQS FIFO names end in `.fifo`).
    fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}-dlq")
    }

    /// Moves a delivery to the dead-letter queue with its reason in the headers.
    ///
    /// The default publishes a copy (same id, payload and headers, plus the reason headers)
    /// to [`Queue::dead_letter_queue`] and only then acks the original: a crash in between
    /// leaves a duplicate in the DLQ, never a loss.
    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        let dlq = self.dead_letter_queue(&delivery.queue);
        let copy = dead_letter_copy(delivery, reason);
        self.send(&dlq, vec![copy]).await?;
        self.ack(&delivery.queue, std::slice::from_ref(&delivery.receipt))
            .await
    }

    /// Moves up to `limit` messages from `queue`'s dead-letter queue back to `queue`, with
    /// the dead-letter headers removed and a fresh attempt count; returns how many moved.
    ///
    /// The default receives from the DLQ, sends each message back, then acks it in the DLQ
    /// (a crash in between duplicates, never loses). It stops at `limit` or when a receive
    /// comes back empty.
    async fn redrive(&self, queue: &str, limit: usize) -> Result<usize> {
        let dlq = self.dead_letter_queue(queue);
        let caps = self.capabilities();
        let mut moved = 0;
        while moved < limit {
            let opts = ReceiveOptions {
                max: caps.max_batch.min(limit - moved),
                wait: caps.timer_granularity.max(Duration::from_secs(1)),
                lease: Duration::from_secs(60),
            };
            let batch = self.receive(&dlq, opts).await?;
            if batch.is_empty() {
                break;
            }
            let receipts: Vec<Receipt> = batch.iter().map(|d| d.receipt.clone()).collect();
            let back: Vec<Message> = batch.into_iter().map(redriven_copy).collect();
            moved += back.len();
            self.send(queue, back).await?;
            self.ack(&dlq, &receipts).await?;
        }
        Ok(moved)
    }
}

/// The message the default [`Queue::dead_letter`] writes to the dead-letter queue.
pub fn dead_letter_copy(delivery: &Delivery, reason: &DeadLetterReason) -> Message {
    let mut h = delivery.headers.clone();
    h.insert(headers::DLQ_REASON.into(), reason.kind.into());
    h.insert(headers::DLQ_ERROR.into(), truncate(&reason.error, 1024));
    h.insert(headers::DLQ_ATTEMPTS.into(), reason.attempts.to_string());
    h.insert(headers::DLQ_SOURCE.into(), delivery.queue.clone());
    h.insert(
        headers::DLQ_AT.into(),
        unix_millis(SystemTime::now()).to_string(),
    );
    h.insert(
        headers::FIRST_ENQUEUED_AT.into(),
        unix_millis(delivery.first_enqueued_at).to_string(),
    );
    Message {
        id: delivery.id.clone(),
        payload: delivery.payload.clone(),
        headers: h,
        delay: None,
        ordering_key: delivery.ordering_key.clone(),
        dedup_id: None,
        priority: None,
    }
}

/// The message the default [`Queue::redrive`] sends back to the source queue.
pub fn redriven_copy(d: Delivery) -> Message {
    let mut h = d.headers;
    for k in [
        headers::DLQ_REASON,
        headers::DLQ_ERROR,
        headers::DLQ_ATTEMPTS,
        headers::DLQ_SOURCE,
        headers::DLQ_AT,
    ] {
        h.remove(k);
    }
    Message {
        id: d.id,
        payload: d.payload,
        headers: h,
        delay: None,
        ordering_key: d.ordering_key,
        dedup_id: None,
        priority: None,
    }
}

/// The first-enqueued time a driver should report: the [`headers::FIRST_ENQUEUED_AT`]
/// header when present (kept across dead-lettering and redrive), else `stored`.
pub fn first_enqueued(headers: &crate::Headers, stored: SystemTime) -> SystemTime {
    headers
        .get(headers::FIRST_ENQUEUED_AT)
        .and_then(|v| v.parse::<u64>().ok())
        .map(from_unix_millis)
        .unwrap_or(stored)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Checks a message against a backend's declared capabilities, before any network call.
/// [`crate::Producer`] calls it for every message; drivers need not repeat it.
pub fn validate(caps: &Capabilities, backend: &'static str, m: &Message) -> Result<()> {
    let size = m.encoded_size();
    if size > caps.max_message_size {
        return Err(QueueError::Oversize {
            size,
            max: caps.max_message_size,
            backend,
        });
    }
    if m.ordering_key.is_some() && caps.ordering == Ordering::None {
        return Err(QueueError::unsupported(backend, "ordering keys"));
    }
    if m.dedup_id.is_some() && caps.dedup_window.is_none() {
        return Err(QueueError::unsupported(backend, "deduplication ids"));
    }
    if m.priority.is_some() && !caps.priority {
        return Err(QueueError::unsupported(backend, "priorities"));
    }
    if let Some(delay) = m.delay {
        match caps.max_delay {
            None if !delay.is_zero() => {
                return Err(QueueError::unsupported(backend, "delayed delivery"))
            }
            Some(max) if delay > max => {
                return Err(QueueError::unsupported(
                    backend,
                    format!("delays over {max:?} (asked for {delay:?})"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}
