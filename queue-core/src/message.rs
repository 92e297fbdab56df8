//! Messages going in, deliveries coming out.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Message headers: small string key/value pairs carried beside the payload.
///
/// Names starting with `x-queue-` are reserved for the framework (see [`headers`]).
pub type Headers = BTreeMap<String, String>;

/// Header names the framework writes. Drivers carry them like any other header.
pub mod headers {
    /// Why a message was dead-lettered: `max-attempts`, `permanent`, `malformed`, `timeout`.
    pub const DLQ_REASON: &str = "x-queue-dlq-reason";
    /// The last error's message.
    pub const DLQ_ERROR: &str = "x-queue-dlq-error";
    /// How many attempts were made.
    pub const DLQ_ATTEMPTS: &str = "x-queue-dlq-attempts";
    /// The queue the message was dead-lettered from (redrive sends it back there).
    pub const DLQ_SOURCE: &str = "x-queue-dlq-source";
    /// When it was dead-lettered, milliseconds since the Unix epoch.
    pub const DLQ_AT: &str = "x-queue-dlq-at";
    /// When the message was first enqueued, milliseconds since the Unix epoch. Set by drivers
    /// that store time in headers, and kept through dead-lettering and redrive.
    pub const FIRST_ENQUEUED_AT: &str = "x-queue-first-enqueued-at";
    /// An explicit idempotency key; the worker's idempotency layer uses it instead of the id.
    pub const IDEMPOTENCY_KEY: &str = "x-queue-idempotency-key";
    /// Per-message override of the retry policy's maximum attempts (BullMQ's `attempts`).
    pub const MAX_ATTEMPTS: &str = "x-queue-max-attempts";
}

/// A message id, assigned by the framework when a [`Message`] is built, so it is the same
/// on every backend and stays the same across redeliveries, retries and dead-lettering.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub String);

impl MessageId {
    /// A fresh random (UUID v4) id.
    pub fn random() -> Self {
        MessageId(uuid::Uuid::new_v4().simple().to_string())
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
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

/// A message to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Framework-assigned id (see [`MessageId`]).
    pub id: MessageId,
    /// Opaque payload bytes.
    pub payload: Vec<u8>,
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
    /// A message with a fresh id and no options.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
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
    /// Sets the deduplication id.
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
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
/// Its content is the driver's business (a receipt handle, a stream entry id, an offset).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// A message received under a lease.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The framework id the message was sent with.
    pub id: MessageId,
    /// The queue it was received from.
    pub queue: String,
    /// Payload bytes as sent.
    pub payload: Vec<u8>,
    /// Headers as sent (plus framework headers such as dead-letter reasons).
    pub headers: Headers,
    /// 1 on the first delivery, +1 on each redelivery (nack or lease expiry).
    pub attempt: u32,
    /// When the message was first enqueued (kept across retries).
    pub first_enqueued_at: SystemTime,
    /// The ordering key, when it was sent with one.
    pub ordering_key: Option<String>,
    /// Settles this delivery; valid until the lease ends.
    pub receipt: Receipt,
}

/// Counts of messages in a queue by state. Backends whose counts are approximate
/// (SQS) say so in [`crate::Capabilities::exact_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The inverse of [`unix_millis`].
pub fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
