//! The driver interface (SPI): the primitives every backend implements, and its declared
//! [`Capabilities`].
//!
//! Applications do not call these methods: they hold a [`crate::Backend`] (from
//! [`crate::connect`]) whose queues validate every message against the capabilities
//! before it reaches a driver. A driver author implements [`Driver`], makes receipts
//! with [`receipt`], and runs the conformance kit (`queue_core::testkit`). This module
//! re-exports what a driver needs ([`async_trait`](macro@async_trait), [`Bytes`], [`Url`]) so that a driver
//! crate depends on `queue-core` and its client library only. See
//! `docs/writing-a-driver.md`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use url::Url;

use crate::error::{QueueError, Result};

mod keys;
mod moves;
mod validate;

use crate::idempotency::IdempotencyStore;
use crate::message::{Delivery, Message, MessageId, Peeked, QueueStats, Receipt};
pub use keys::KeyChars;
pub use moves::{dead_letter_copy, first_enqueued, redriven_copy};
pub use validate::validate;

/// How a backend orders deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ordering {
    /// No order is promised; an ordering key is refused with [`QueueError::Unsupported`].
    None,
    /// Messages with the same key are delivered in send order, one at a time: the next one
    /// becomes visible when the previous one is acked or dead-lettered, so a retry of one
    /// (nacked with its backoff, or back after its lease) holds the later ones, while
    /// other keys keep flowing. Every bundled backend that accepts ordering keys keeps
    /// this meaning: memory, Redis (per-key lists), SQS FIFO (message groups), Kafka (key
    /// lines in the consumer), PostgreSQL.
    PerKey,
    /// Messages with the same key land on one partition and are delivered in partition
    /// order to the single consumer that owns it, but a retried message may be overtaken
    /// by later messages of its key. Weaker than [`Ordering::PerKey`]; no bundled backend
    /// declares it (Kafka did before 0.3).
    PerPartition,
}

/// What a lease is on this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseModel {
    /// Each delivery is hidden for its own lease; an unsettled delivery comes back when the
    /// lease ends (SQS visibility timeout, Redis pending entries, in-memory deadlines).
    /// Build it with [`LeaseModel::per_message`].
    #[non_exhaustive]
    PerMessage {
        /// Whether [`Driver::extend`] can push the deadline out (heartbeats for long jobs).
        extend: bool,
    },
    /// Leases belong to a consumer session (Kafka partition assignment): an unsettled
    /// delivery comes back only when its consumer leaves or dies and another member takes
    /// over its partition. `receive`'s `lease` argument is ignored.
    Session,
}

impl LeaseModel {
    /// Per-message leases; `extend`: whether [`Driver::extend`] works.
    pub fn per_message(extend: bool) -> Self {
        LeaseModel::PerMessage { extend }
    }
}

/// Which queues [`Driver::peek`] can read without taking anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peek {
    /// None: reading a message means leasing it (Kafka: a record is read by a consumer
    /// group's position, and a second reader would need one of its own).
    None,
    /// Only dead-letter queues (SQS: a look is a receive with no visibility timeout, which
    /// counts toward a main queue's `maxReceiveCount`; a dead-letter queue has none).
    DeadLetterQueues,
    /// Every queue (memory, Redis).
    All,
}

/// What a backend can do, declared by its driver and *checked* by the conformance kit:
/// a declared capability is exercised, an undeclared one must be refused with a typed
/// error.
///
/// Start from [`Capabilities::baseline`] and state only what differs, so that a field
/// added in a later version takes its baseline value instead of breaking your driver:
///
/// ```
/// use std::time::Duration;
/// use queue_core::driver::{Capabilities, LeaseModel};
/// let caps = Capabilities::baseline()
///     .with_max_message_size(1024 * 1024)
///     .with_max_batch(100)
///     .with_max_delay(Some(Duration::from_secs(3600)))
///     .with_lease(LeaseModel::per_message(true));
/// assert_eq!(caps.max_batch, 100);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Largest message accepted, payload plus headers ([`Message::encoded_size`]).
    pub max_message_size: usize,
    /// Most messages per `send`, `receive` or `ack` call; the core chunks larger batches.
    pub max_batch: usize,
    /// Longest delay accepted on send; `None` when delayed sends are not supported.
    pub max_delay: Option<Duration>,
    /// Longest delay [`Driver::nack`] honours (retry backoff); `None` when a nacked message
    /// is always visible again at once. The worker caps its backoff here.
    pub max_nack_delay: Option<Duration>,
    /// Whether the backend moves poison messages by itself (SQS redrive policy) in addition
    /// to the core's explicit dead-lettering.
    pub native_dlq: bool,
    /// Ordering guarantee for messages with an ordering key.
    pub ordering: Ordering,
    /// Whether [`Message::priority`] is honoured (higher first).
    pub priority: bool,
    /// Deduplication window for [`Message::dedup_id`]; `None` when not supported.
    pub dedup_window: Option<Duration>,
    /// How leases work.
    pub lease: LeaseModel,
    /// Whether [`Driver::stats`] counts are exact at the moment they are read.
    pub exact_stats: bool,
    /// Smallest time step the backend resolves for delays and leases (SQS: one second).
    pub timer_granularity: Duration,
    /// Longest lease `receive` and `extend` honour (SQS: 12 hours). The worker refuses a
    /// longer lease instead of letting the backend shorten it.
    pub max_lease: Duration,
    /// Whether `ack`, `nack` and `extend` with a receipt whose lease ended are refused with
    /// [`QueueError::ReceiptExpired`] and change nothing (memory, Redis). SQS cannot
    /// promise it: AWS may accept an old receipt handle.
    pub stale_receipts_refused: bool,
    /// Whether [`Driver::purge`] and [`Driver::delete_queue`] are supported; where not,
    /// both return [`QueueError::Unsupported`] (Kafka: a topic's unread records cannot be
    /// dropped for one consumer group, and deleting topics is left to the operator).
    pub purge: bool,
    /// Whether [`Driver::give_back`] returns a delivery without counting an attempt
    /// (memory, Redis, Kafka). SQS cannot: its receive count grows on every receive, so
    /// there a give-back costs an attempt like a failure.
    pub give_back_keeps_attempt: bool,
    /// Where [`Capabilities::native_dlq`] is declared: after how many receives the backend
    /// moves a message to its dead-letter queue by itself (SQS's `maxReceiveCount`). The
    /// worker refuses a retry policy with more attempts, so the native move stays a
    /// safety net for crashed workers and never pre-empts the worker's dead-lettering,
    /// which records the reason.
    pub max_receives: Option<u32>,
    /// Which queues [`Driver::peek`] can read without taking anything.
    pub peek: Peek,
    /// Longest ordering key or dedup id, in bytes (`None`: bounded by the message size
    /// only). A longer one is refused before anything is sent (SQS: 128).
    pub max_key_len: Option<usize>,
    /// The characters ordering keys and dedup ids may hold (SQS: printable ASCII).
    pub key_chars: KeyChars,
}

impl Capabilities {
    /// The baseline a driver starts from: 256 KiB messages, 10 per batch, no delays, no
    /// nack delays, no native DLQ, no ordering, no priorities, no dedup, per-message
    /// leases of up to 12 hours without extension, stale receipts not promised to be refused,
    /// no purge, give-backs counted as attempts,
    /// approximate stats, one-second timers, ordering keys and dedup ids of at most 128
    /// printable ASCII characters. Every field a
    /// later version adds starts at its most conservative value here.
    pub fn baseline() -> Self {
        Capabilities {
            max_message_size: 256 * 1024,
            max_batch: 10,
            max_delay: None,
            max_nack_delay: None,
            native_dlq: false,
            ordering: Ordering::None,
            priority: false,
            dedup_window: None,
            lease: LeaseModel::PerMessage { extend: false },
            exact_stats: false,
            timer_granularity: Duration::from_secs(1),
            max_lease: Duration::from_secs(12 * 3600),
            stale_receipts_refused: false,
            purge: false,
            give_back_keeps_attempt: false,
            max_receives: None,
            peek: Peek::None,
            max_key_len: Some(128),
            key_chars: KeyChars::PrintableAscii,
        }
    }
    /// Sets [`Capabilities::max_message_size`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
    /// Sets [`Capabilities::max_batch`].
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
    /// Sets [`Capabilities::max_delay`].
    pub fn with_max_delay(mut self, max: Option<Duration>) -> Self {
        self.max_delay = max;
        self
    }
    /// Sets [`Capabilities::max_nack_delay`].
    pub fn with_max_nack_delay(mut self, max: Option<Duration>) -> Self {
        self.max_nack_delay = max;
        self
    }
    /// Sets [`Capabilities::native_dlq`].
    pub fn with_native_dlq(mut self, native: bool) -> Self {
        self.native_dlq = native;
        self
    }
    /// Sets [`Capabilities::ordering`].
    pub fn with_ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }
    /// Sets [`Capabilities::priority`].
    pub fn with_priority(mut self, priority: bool) -> Self {
        self.priority = priority;
        self
    }
    /// Sets [`Capabilities::dedup_window`].
    pub fn with_dedup_window(mut self, window: Option<Duration>) -> Self {
        self.dedup_window = window;
        self
    }
    /// Sets [`Capabilities::lease`].
    pub fn with_lease(mut self, lease: LeaseModel) -> Self {
        self.lease = lease;
        self
    }
    /// Sets [`Capabilities::exact_stats`].
    pub fn with_exact_stats(mut self, exact: bool) -> Self {
        self.exact_stats = exact;
        self
    }
    /// Sets [`Capabilities::timer_granularity`].
    pub fn with_timer_granularity(mut self, step: Duration) -> Self {
        self.timer_granularity = step;
        self
    }
    /// Sets [`Capabilities::max_lease`].
    pub fn with_max_lease(mut self, max: Duration) -> Self {
        self.max_lease = max;
        self
    }
    /// Sets [`Capabilities::stale_receipts_refused`].
    pub fn with_stale_receipts_refused(mut self, refused: bool) -> Self {
        self.stale_receipts_refused = refused;
        self
    }
    /// Sets [`Capabilities::purge`].
    pub fn with_purge(mut self, supported: bool) -> Self {
        self.purge = supported;
        self
    }
    /// Sets [`Capabilities::max_receives`].
    pub fn with_max_receives(mut self, receives: Option<u32>) -> Self {
        self.max_receives = receives;
        self
    }
    /// Sets [`Capabilities::give_back_keeps_attempt`].
    pub fn with_give_back_keeps_attempt(mut self, keeps: bool) -> Self {
        self.give_back_keeps_attempt = keeps;
        self
    }
    /// Sets [`Capabilities::peek`].
    pub fn with_peek(mut self, peek: Peek) -> Self {
        self.peek = peek;
        self
    }
    /// Sets [`Capabilities::max_key_len`].
    pub fn with_max_key_len(mut self, max: Option<usize>) -> Self {
        self.max_key_len = max;
        self
    }
    /// Sets [`Capabilities::key_chars`].
    pub fn with_key_chars(mut self, chars: KeyChars) -> Self {
        self.key_chars = chars;
        self
    }

    /// Whether [`Driver::peek`] works on a queue that is (`true`) or is not a
    /// dead-letter queue.
    pub fn can_peek(&self, is_dead_letter_queue: bool) -> bool {
        match self.peek {
            Peek::All => true,
            Peek::DeadLetterQueues => is_dead_letter_queue,
            Peek::None => false,
        }
    }

    /// Whether [`Driver::extend`] is supported.
    pub fn can_extend(&self) -> bool {
        matches!(
            self.lease,
            LeaseModel::PerMessage { extend: true } | LeaseModel::Session
        )
    }
}

/// Why a message is dead-lettered. Each kind has a stable name, written into the dead
/// letter's [`headers::DLQ_REASON`] header and parsed back with [`str::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterKind {
    /// The last allowed attempt failed with a retryable error or a panic (`max-attempts`).
    MaxAttempts,
    /// The handler returned a permanent error (`permanent`).
    Permanent,
    /// The payload could not be decoded, or no handler knows its job (`malformed`).
    Malformed,
    /// The last allowed attempt ran past the job timeout (`timeout`).
    Timeout,
    /// No handler knew the job's name for longer than the worker's
    /// [`unknown_job_grace`](crate::Worker::unknown_job_grace) (`unknown-job`): during a
    /// rolling deploy a newer producer's job waits, given back, for a newer worker.
    UnknownJob,
    /// Its runs ended without settling [`crash_limit`](crate::Worker::crash_limit) times
    /// (`crashed`): the handler kills the process (an abort, out of memory, a native crash),
    /// so the job is set aside instead of taking every worker down in turn.
    Crashed,
    /// A job of a flow whose dependency failed, under [`crate::flow::OnFailure::Fail`]
    /// (`dependency-failed`): it never ran.
    DependencyFailed,
}

impl DeadLetterKind {
    /// The stable header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterKind::MaxAttempts => "max-attempts",
            DeadLetterKind::Permanent => "permanent",
            DeadLetterKind::Malformed => "malformed",
            DeadLetterKind::Timeout => "timeout",
            DeadLetterKind::UnknownJob => "unknown-job",
            DeadLetterKind::Crashed => "crashed",
            DeadLetterKind::DependencyFailed => "dependency-failed",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadLetterKind {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "max-attempts" => DeadLetterKind::MaxAttempts,
            "permanent" => DeadLetterKind::Permanent,
            "malformed" => DeadLetterKind::Malformed,
            "timeout" => DeadLetterKind::Timeout,
            "unknown-job" => DeadLetterKind::UnknownJob,
            "crashed" => DeadLetterKind::Crashed,
            "dependency-failed" => DeadLetterKind::DependencyFailed,
            other => {
                return Err(QueueError::InvalidOption(format!(
                    "unknown dead-letter reason {other:?}"
                )))
            }
        })
    }
}

/// Why a message is being dead-lettered; written into the dead letter's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterReason {
    /// The kind, with a stable header value.
    pub kind: DeadLetterKind,
    /// The last error's message.
    pub error: String,
    /// Attempts made so far.
    pub attempts: u32,
}

impl DeadLetterReason {
    /// A reason of `kind` after `attempts` attempts, the last failing with `error`.
    pub fn new(kind: DeadLetterKind, error: impl Into<String>, attempts: u32) -> Self {
        DeadLetterReason {
            kind,
            error: error.into(),
            attempts,
        }
    }
}

/// Options for [`Driver::receive`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReceiveOptions {
    /// Most deliveries to return (at least 1, at most [`Capabilities::max_batch`]).
    pub max: usize,
    /// Long-poll: wait up to this long for the first message; return early when one arrives.
    pub wait: Duration,
    /// Each delivery stays hidden from other consumers for this long.
    pub lease: Duration,
    /// Ends the wait early: once it fires, a receive returns at once with what it holds
    /// (often nothing). It stops the *waiting*, never a take half done: a message the
    /// backend has already leased to this call is returned, or given back
    /// ([`Driver::give_back`]) if it arrives after the receive returned. A worker fires it
    /// on shutdown, so that an idle worker stops at once rather than at the end of its
    /// long poll.
    pub cancel: CancellationToken,
}

impl ReceiveOptions {
    /// Up to `max` deliveries, waiting up to `wait`, each leased for `lease`; the wait is
    /// never cancelled (see [`ReceiveOptions::cancelled_by`]).
    pub fn new(max: usize, wait: Duration, lease: Duration) -> Self {
        ReceiveOptions {
            max,
            wait,
            lease,
            cancel: CancellationToken::new(),
        }
    }

    /// The same options, whose wait ends when `cancel` fires.
    pub fn cancelled_by(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

/// The future a [`Connector`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Driver>>> + Send>>;

/// Opens a backend from a parsed URL (see [`crate::register`]).
pub type Connector = fn(Url) -> ConnectFuture;

/// Makes a receipt from the driver's own encoding of what it needs to settle a delivery.
pub fn receipt(text: impl Into<String>) -> Receipt {
    Receipt::from_string(text.into())
}

/// Reads back what [`receipt`] was given.
pub fn receipt_str(r: &Receipt) -> &str {
    r.text()
}

/// A queue backend, as its driver implements it: one implementation per backend
/// (in-memory, Redis, SQS, Kafka, or your own).
///
/// The methods are *primitives*: a driver maps each onto its backend and nothing more.
/// Validation, batching, retries, backoff, dead-letter decisions, idempotency and lease
/// heartbeats live in [`crate::Backend`], [`crate::Producer`] and [`crate::Worker`], once
/// for every backend. The defaults of [`Driver::dead_letter`] and [`Driver::redrive`]
/// emulate those features from the other primitives; a backend with a native way
/// overrides them.
///
/// # The contract (checked by `queue_core::testkit`)
/// - At-least-once: `send` returns `Ok` only once the backend has the messages, and each
///   is delivered until acked or dead-lettered.
/// - `send` gets messages already validated against [`Driver::capabilities`] and at most
///   `max_batch` of them; it returns their ids in order. A message with a dedup id has that
///   id as its message id (see [`Message::dedup_id`]), so a dropped duplicate returns the
///   same id as the original.
/// - `receive` returns at most `opts.max` deliveries; it long-polls without spinning (it
///   waits on the backend or a timer, not in a loop of short sleeps).
/// - `attempt` counts deliveries that reached a handler: a nacked message reappears after
///   its delay with `attempt + 1`, and so does a delivery whose lease ends unsettled (its
///   handler may have run); a delivery given back ([`Driver::give_back`]) keeps its
///   attempt where [`Capabilities::give_back_keeps_attempt`] is declared.
/// - `first_enqueued_at` is the first send's time, kept across retries; across
///   dead-lettering and redrive the core carries it in [`headers::FIRST_ENQUEUED_AT`] and
///   the driver reports it through [`first_enqueued`].
/// - A receipt is valid only while its lease is current: `ack`, `nack` and `extend` with
///   a receipt whose lease ended (whether or not someone else leased the message since)
///   fail with [`QueueError::ReceiptExpired`] and change nothing. A receipt this driver
///   did not issue is [`QueueError::InvalidReceipt`]. In a batch `ack`, the current
///   receipts are acked and the stale ones reported by index
///   ([`QueueError::stale_receipts`]).
/// - Every call on a queue that was never created (or was deleted) fails with
///   [`QueueError::UnknownQueue`], including `ack`, `nack`, `extend`, `stats` and `purge`.
/// - Delays up to `max_delay`, nack delays up to `max_nack_delay` and leases of any length
///   the worker accepts are honoured without overflow.
/// - A receive whose [`ReceiveOptions::cancel`] fires stops waiting and returns at once;
///   whatever it had already leased is returned or given back, never left leased.
/// - Errors are typed: unreachable server [`QueueError::Connection`], refused credentials
///   [`QueueError::Auth`], bad URL [`QueueError::InvalidUrl`]; never a panic.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The backend's short name, e.g. `"memory"`, `"redis"`.
    fn kind(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates `queue` and its dead-letter queue if they do not exist (idempotent).
    async fn create_queue(&self, queue: &str) -> Result<()>;

    /// Deletes `queue` and its dead-letter queue with every message in them. Deleting a
    /// queue that does not exist is `Ok`. Afterwards every call on it but `create_queue`
    /// fails with [`QueueError::UnknownQueue`].
    async fn delete_queue(&self, queue: &str) -> Result<()>;

    /// Removes every message of `queue`: ready, delayed and leased (their receipts go
    /// stale). The dead-letter queue is a queue of its own: purge it by its name.
    async fn purge(&self, queue: &str) -> Result<()>;

    /// Sends one batch of at most [`Capabilities::max_batch`] messages, already validated
    /// against the capabilities. Returns their ids in order.
    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>>;

    /// Leases up to `opts.max` messages, waiting up to `opts.wait` for the first.
    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>>;

    /// Settles deliveries as done: they are never delivered again.
    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()>;

    /// Gives a delivery back: visible again after `delay`, with `attempt + 1`.
    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()>;

    /// Gives a delivery back *without counting an attempt*: its handler never ran
    /// (shutdown, an idempotency key held elsewhere, a per-key predecessor that went
    /// back). Visible again after `delay`; the next delivery has the same `attempt`. It
    /// takes the whole delivery, so a backend whose receive count cannot be turned back
    /// can send a fresh copy carrying [`headers::ATTEMPTS_BEFORE`] (SQS standard queues).
    /// A backend that cannot keep the count at all (SQS FIFO, where a copy would lose its
    /// place in line) leaves the default, a plain `nack`, and does not declare
    /// [`Capabilities::give_back_keeps_attempt`].
    async fn give_back(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.nack(&delivery.queue, &delivery.receipt, delay).await
    }

    /// Pushes a delivery's lease out to `lease` from now. A backend that cannot
    /// (`LeaseModel::PerMessage { extend: false }`) returns [`QueueError::Unsupported`].
    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<()>;

    /// Counts of messages by state, `dead` being the dead-letter queue's depth.
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// Up to `max` of `queue`'s ready messages, next in line first, read without leasing
    /// them or counting an attempt; delayed and leased messages are not listed. Where
    /// [`Capabilities::peek`] does not cover `queue` this returns
    /// [`QueueError::Unsupported`], as the default does.
    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>> {
        let _ = (queue, max);
        Err(QueueError::unsupported(
            self.kind(),
            "peek (reading a message without leasing it)",
        ))
    }

    /// Called by a worker before its first receive from `queue`, paired with one
    /// [`Driver::stop_receiving`] when it stops. A backend whose consumers hold a session
    /// shared by the workers of one driver instance (Kafka) counts them here, so that one
    /// worker stopping does not end the session under another. The default does nothing.
    async fn start_receiving(&self, queue: &str) -> Result<()> {
        let _ = queue;
        Ok(())
    }

    /// Called by the worker after it stopped receiving from `queue` (graceful shutdown). A
    /// backend whose consumers hold a session (Kafka group membership) leaves it here when
    /// the last worker that started receiving stops, so that the other members take over
    /// its partitions at once. The default does nothing.
    async fn stop_receiving(&self, queue: &str) -> Result<()> {
        let _ = queue;
        Ok(())
    }

    /// The name of `queue`'s dead-letter queue. `{queue}-dlq` unless the backend needs
    /// another form (SQS FIFO names end in `.fifo`).
    fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}-dlq")
    }

    /// Moves a delivery to the dead-letter queue with its reason in the headers.
    ///
    /// The default publishes a copy (same id, payload and headers, plus the reason headers)
    /// to [`Driver::dead_letter_queue`] and only then acks the original: a crash in between
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
            let opts = ReceiveOptions::new(
                caps.max_batch.max(1).min(limit - moved),
                caps.timer_granularity.max(Duration::from_secs(1)),
                Duration::from_secs(60),
            );
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

    /// The idempotency store this backend offers, if any (Redis: one on the same server),
    /// so that `Worker::idempotency` can use it without the application knowing the
    /// backend. The default is `None`.
    fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        None
    }

    /// Requests this driver instance has made to the backend so far, where that is what
    /// the backend bills by (SQS). The default is `None`.
    fn requests_made(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::headers;

    #[test]
    fn moved_copies_drop_the_carried_attempt_count() {
        let d = Delivery::new("q", MessageId::new("m1"), "x", receipt("r"))
            .with_headers(crate::Headers::from([
                (headers::ATTEMPTS_BEFORE.to_string(), "3".to_string()),
                ("trace".to_string(), "t".to_string()),
            ]))
            .with_attempt(4);
        let reason = DeadLetterReason::new(DeadLetterKind::MaxAttempts, "boom", 4);
        let dead = dead_letter_copy(&d, &reason);
        assert!(!dead.headers.contains_key(headers::ATTEMPTS_BEFORE));
        assert_eq!(
            dead.headers.get(headers::DLQ_ATTEMPTS).map(String::as_str),
            Some("4")
        );
        assert_eq!(dead.headers.get("trace").map(String::as_str), Some("t"));
        let back = redriven_copy(d);
        assert!(!back.headers.contains_key(headers::ATTEMPTS_BEFORE));
    }

    #[test]
    fn a_dead_letter_holds_its_key_in_a_header_and_a_redrive_gives_it_back() {
        let d = Delivery::new("q", MessageId::new("m1"), "x", receipt("r"))
            .with_ordering_key(Some("account-7".into()));
        let reason = DeadLetterReason::new(DeadLetterKind::Permanent, "no", 1);
        let dead = dead_letter_copy(&d, &reason);
        assert_eq!(dead.ordering_key, None);
        assert_eq!(
            dead.headers
                .get(headers::DLQ_ORDERING_KEY)
                .map(String::as_str),
            Some("account-7")
        );
        let in_dlq = Delivery::new("q-dlq", MessageId::new("m1"), "x", receipt("r2"))
            .with_headers(dead.headers);
        let back = redriven_copy(in_dlq);
        assert_eq!(back.ordering_key.as_deref(), Some("account-7"));
        assert!(!back.headers.contains_key(headers::DLQ_ORDERING_KEY));
    }

    #[test]
    fn a_dead_letter_copy_is_not_marked_malformed_again() {
        let d = Delivery::new("q", MessageId::new("m1"), "\u{0}raw", receipt("r"))
            .malformed("headers are not JSON");
        let reason = DeadLetterReason::new(
            DeadLetterKind::Malformed,
            "driver could not decode this message: headers are not JSON",
            1,
        );
        let dead = dead_letter_copy(&d, &reason);
        assert!(!dead.headers.contains_key(headers::MALFORMED));
        assert_eq!(
            dead.headers.get(headers::DLQ_REASON).map(String::as_str),
            Some("malformed")
        );
        assert!(dead.headers[headers::DLQ_ERROR].contains("headers are not JSON"));
    }

    #[test]
    fn receipt_debug_never_splits_a_character() {
        for text in ["short", "ééééééééééééééé", "a€€€€€€€€€€€€b", ""]
        {
            let shown = format!("{:?}", receipt(text));
            assert!(shown.starts_with("Receipt(…"), "{shown}");
        }
    }
}
