//! Messages going in, deliveries coming out.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Message headers: small string key/value pairs carried beside the payload.
///
/// Names starting with `x-queue-` are reserved for the framework (see [`headers`]).
pub type Headers = BTreeMap<String, String>;

/// Header names the framework writes. Drivers carry them like any other header.
pub mod headers {
    /// Why a message was dead-lettered: one of [`crate::DeadLetterKind`]'s stable names
    /// (`max-attempts`, `permanent`, `malformed`, `timeout`).
    pub const DLQ_REASON: &str = "x-queue-dlq-reason";
    /// The last error's message (at most 1 KiB).
    pub const DLQ_ERROR: &str = "x-queue-dlq-error";
    /// How many attempts were made.
    pub const DLQ_ATTEMPTS: &str = "x-queue-dlq-attempts";
    /// The queue the message was dead-lettered from (redrive sends it back there).
    pub const DLQ_SOURCE: &str = "x-queue-dlq-source";
    /// When it was dead-lettered, milliseconds since the Unix epoch.
    pub const DLQ_AT: &str = "x-queue-dlq-at";
    /// On a dead letter: the ordering key it had in its queue. The dead-letter queue holds
    /// it without the key (so that on per-key backends one key's dead letters do not wait
    /// behind each other, and every one can be listed and redriven); a redrive gives it
    /// back.
    pub const DLQ_ORDERING_KEY: &str = "x-queue-dlq-ordering-key";
    /// When the message was first enqueued, milliseconds since the Unix epoch. Written by
    /// the core when a message is dead-lettered or redriven, so the time survives the move;
    /// drivers report it as [`crate::Delivery::first_enqueued_at`] (see
    /// [`crate::driver::first_enqueued`]).
    pub const FIRST_ENQUEUED_AT: &str = "x-queue-first-enqueued-at";
    /// When the message was last redriven from its dead-letter queue, milliseconds since
    /// the Unix epoch. With [`DLQ_AT`], it lets a backend that deduplicates by message id
    /// (SQS FIFO) tell a redriven or dead-lettered copy from a resend of the original.
    pub const REDRIVEN_AT: &str = "x-queue-redriven-at";
    /// An explicit idempotency key; the worker's idempotency layer uses it instead of the id.
    pub const IDEMPOTENCY_KEY: &str = "x-queue-idempotency-key";
    /// Per-message override of the retry policy's maximum attempts (BullMQ's `attempts`).
    pub const MAX_ATTEMPTS: &str = "x-queue-max-attempts";
    /// Attempts made before this copy of the message was sent. A driver that returns a
    /// message by sending a fresh copy (SQS standard queues on a give-back, where the
    /// receive count cannot be turned back) writes it, and reports each delivery's
    /// attempt as this plus the copy's own receives. Dropped on dead-lettering and redrive.
    pub const ATTEMPTS_BEFORE: &str = "x-queue-attempts-before";
    /// Set by a driver on a delivery it could not fully decode (a foreign writer, broken
    /// headers): what was wrong. The worker dead-letters such a delivery as `malformed`
    /// instead of failing the whole receive. See [`crate::Delivery::malformed`].
    pub const MALFORMED: &str = "x-queue-malformed";
    /// The unique-key lock a job holds, `<scope>:<lock>`, written by a unique send and
    /// released by the worker (see [`crate::unique`]).
    pub const UNIQUE: &str = "x-queue-unique";
    /// The flow and node a job belongs to, `<flow id>/<node>` (see [`crate::flow`]).
    pub const FLOW: &str = "x-queue-flow";
    /// On a flow's job whose dependency failed under [`crate::flow::OnFailure::Fail`]:
    /// why. The worker dead-letters it without running it (`dependency-failed`), unless
    /// it was redriven since.
    pub const FLOW_FAILED: &str = "x-queue-flow-failed";
    /// The batch and slot a job belongs to, `<batch id>/<slot>` (see [`crate::batch`]).
    pub const BATCH: &str = "x-queue-batch";
    /// On a batch's callback job: the batch and which callback, `<batch id>/success` or
    /// `<batch id>/complete` (see [`crate::batch`]).
    pub const BATCH_CALLBACK: &str = "x-queue-batch-callback";
    /// A debounced or replacing job's place among the sends under its key,
    /// `<number>/<queue>:<key>` (see [`crate::debounce`]).
    pub const DEBOUNCE: &str = "x-queue-debounce";
}

/// A message id, assigned by the framework when a [`Message`] is built, so it is the same
/// on every backend and stays the same across redeliveries, retries, dead-lettering and
/// redrive.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// A fresh random id in UUID v4 form (32 hex digits).
    ///
    /// The 122 random bits come from a per-thread generator seeded by the OS (`fastrand`),
    /// not from a system call per id: ids must be unique, not secret, and the `getrandom`
    /// call per message cost more than the rest of building it.
    pub fn random() -> Self {
        let bytes = fastrand::u128(..).to_le_bytes();
        MessageId(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .simple()
                .to_string(),
        )
    }
    /// An id with the given text (a driver decoding a stored id, an application that names
    /// its jobs).
    pub fn new(id: impl Into<String>) -> Self {
        MessageId(id.into())
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        MessageId(s.to_string())
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        MessageId(s)
    }
}

/// A message to send. Build it with [`Message::new`] and the option methods; the fields
/// are public to read (drivers map them) and the struct may gain fields in minor versions.
///
/// ```
/// use std::time::Duration;
/// let m = queue_core::Message::new("hello")
///     .header("trace-id", "abc")
///     .delay(Duration::from_secs(30));
/// assert_eq!(&m.payload[..], b"hello");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// Framework-assigned id (see [`MessageId`]).
    pub id: MessageId,
    /// Opaque payload bytes. [`Bytes`]: cloning shares the buffer, nothing is copied.
    pub payload: Bytes,
    /// Headers.
    pub headers: Headers,
    /// Do not deliver before this much time has passed.
    pub delay: Option<Duration>,
    /// Messages with the same key are delivered in send order, one at a time
    /// (requires [`crate::Ordering::PerKey`] or [`crate::Ordering::PerPartition`]).
    pub ordering_key: Option<String>,
    /// A second send with the same id inside the backend's window is dropped
    /// (requires [`crate::Capabilities::dedup_window`]).
    pub dedup_id: Option<String>,
    /// Higher is delivered first (requires [`crate::Capabilities::priority`]).
    pub priority: Option<u8>,
}

impl Message {
    /// A message with a fresh random id and no options.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            id: MessageId::random(),
            payload: payload.into(),
            headers: Headers::new(),
            delay: None,
            ordering_key: None,
            dedup_id: None,
            priority: None,
        }
    }
    /// Replaces the id (for instance to name a job after a business key).
    pub fn id(mut self, id: impl Into<MessageId>) -> Self {
        self.id = id.into();
        self
    }
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
    /// Sets a delivery delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
    /// Sets the ordering key.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
    /// Sets the deduplication id, **and makes it the message's id**.
    ///
    /// The one rule for duplicates on every backend: a message sent with a dedup id has
    /// that dedup id as its [`MessageId`], so `send` returns the same id for the original
    /// and for every duplicate dropped within the backend's window (as BullMQ does for a
    /// custom job id). Call [`Message::id`] afterwards to use another id.
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        self.id = MessageId(id.clone());
        self.dedup_id = Some(id);
        self
    }
    /// Sets the priority.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Size counted against [`crate::Capabilities::max_message_size`]: payload plus header
    /// names and values (the way SQS counts message attributes).
    pub fn encoded_size(&self) -> usize {
        self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// An opaque handle for settling one delivery (ack, nack, extend, dead-letter).
///
/// Its content is the driver's business (a receipt handle, a lease generation, an offset):
/// applications get receipts only inside [`Delivery`] values and cannot read or build
/// them. A driver makes one with [`crate::driver::receipt`] and reads it back with
/// [`crate::driver::receipt_str`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Receipt(String);

impl Receipt {
    pub(crate) fn from_string(s: String) -> Self {
        Receipt(s)
    }
    pub(crate) fn text(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SQS receipt handles are long; their tail is enough to tell two apart in logs.
        let mut cut = self.0.len().saturating_sub(12);
        while !self.0.is_char_boundary(cut) {
            cut += 1;
        }
        write!(f, "Receipt(…{})", &self.0[cut..])
    }
}

/// A message received under a lease. Drivers build it with [`Delivery::new`] and the
/// `with_*` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Delivery {
    /// The framework id the message was sent with.
    pub id: MessageId,
    /// The queue it was received from.
    pub queue: String,
    /// Payload bytes as sent (shared, never copied after the driver read them).
    pub payload: Bytes,
    /// Headers as sent (plus framework headers such as dead-letter reasons).
    pub headers: Headers,
    /// 1 on the first delivery, +1 on each redelivery (nack or lease expiry).
    pub attempt: u32,
    /// When the message was first enqueued (kept across retries, dead-lettering and
    /// redrive).
    pub first_enqueued_at: SystemTime,
    /// The ordering key, when it was sent with one.
    pub ordering_key: Option<String>,
    /// Settles this delivery; valid until the lease ends.
    pub receipt: Receipt,
}

impl Delivery {
    /// A delivery of message `id` from `queue`, attempt 1, enqueued now, no headers.
    pub fn new(
        queue: impl Into<String>,
        id: MessageId,
        payload: impl Into<Bytes>,
        receipt: Receipt,
    ) -> Self {
        Delivery {
            id,
            queue: queue.into(),
            payload: payload.into(),
            headers: Headers::new(),
            attempt: 1,
            first_enqueued_at: SystemTime::now(),
            ordering_key: None,
            receipt,
        }
    }
    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }
    /// Sets the attempt number (1-based).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }
    /// Sets the first-enqueued time.
    pub fn with_first_enqueued_at(mut self, at: SystemTime) -> Self {
        self.first_enqueued_at = at;
        self
    }
    /// Sets the ordering key.
    pub fn with_ordering_key(mut self, key: Option<String>) -> Self {
        self.ordering_key = key;
        self
    }
    /// Marks the delivery as one the driver could not fully decode, with what was wrong
    /// (the [`headers::MALFORMED`] header). A driver returns such a delivery, with what it
    /// could read, instead of failing the whole receive; the worker dead-letters it with
    /// reason `malformed` while the rest of the batch runs.
    pub fn malformed(mut self, reason: impl Into<String>) -> Self {
        self.headers
            .insert(headers::MALFORMED.into(), reason.into());
        self
    }
}

/// A message seen without taking it ([`crate::Driver::peek`]): nothing about it changes,
/// no lease is taken and no attempt is counted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Peeked {
    /// The framework id the message was sent with.
    pub id: MessageId,
    /// Payload bytes as sent.
    pub payload: Bytes,
    /// Headers as sent, with the framework's (a dead letter carries its reason here:
    /// [`crate::DeadLetter`] reads it).
    pub headers: Headers,
    /// Deliveries made so far (0 for a message never received).
    pub deliveries: u32,
    /// When the message was first enqueued.
    pub first_enqueued_at: SystemTime,
    /// The ordering key, when it was sent with one.
    pub ordering_key: Option<String>,
}

impl Peeked {
    /// A peeked message `id` with `payload`, no headers, never delivered, enqueued now.
    pub fn new(id: MessageId, payload: impl Into<Bytes>) -> Self {
        Peeked {
            id,
            payload: payload.into(),
            headers: Headers::new(),
            deliveries: 0,
            first_enqueued_at: SystemTime::now(),
            ordering_key: None,
        }
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets how many deliveries were made so far.
    pub fn with_deliveries(mut self, n: u32) -> Self {
        self.deliveries = n;
        self
    }

    /// Sets when the message was first enqueued.
    pub fn with_first_enqueued_at(mut self, at: SystemTime) -> Self {
        self.first_enqueued_at = at;
        self
    }

    /// Sets the ordering key.
    pub fn with_ordering_key(mut self, key: Option<String>) -> Self {
        self.ordering_key = key;
        self
    }
}

/// Counts of messages in a queue by state. Backends whose counts are approximate
/// (SQS) say so in [`crate::Capabilities::exact_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Visible, waiting for a consumer.
    pub ready: u64,
    /// Leased by a consumer and not yet settled.
    pub in_flight: u64,
    /// Waiting for a delay (or a retry backoff) to pass.
    pub delayed: u64,
    /// In the queue's dead-letter queue.
    pub dead: u64,
}

impl QueueStats {
    /// Counts by state.
    pub fn new(ready: u64, in_flight: u64, delayed: u64, dead: u64) -> Self {
        QueueStats {
            ready,
            in_flight,
            delayed,
            dead,
        }
    }
    /// Every message the queue holds, dead letters included.
    pub fn total(&self) -> u64 {
        self.ready
            .saturating_add(self.in_flight)
            .saturating_add(self.delayed)
            .saturating_add(self.dead)
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// The inverse of [`unix_millis`]; saturates at the far future instead of overflowing.
pub fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(i32::MAX as u64))
}
