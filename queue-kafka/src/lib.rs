//! # queue-kafka
//!
//! The Kafka driver for [`queue_core`], on `rdkafka`. Kafka has no per-message ack, no
//! visibility timeout, no delay and no dead-letter queue; this driver supplies job-queue
//! semantics on top of consumer groups and offsets, and says below what it cannot promise.
//! Applications use it through the `queue` crate's `kafka` feature,
//! `queue::connect("kafka://127.0.0.1:9092")` (without the facade, call [`register`] once
//! at start-up and use `queue_core::connect`).
//!
//! ## Mapping
//!
//! | primitive | Kafka |
//! |---|---|
//! | storage | queue `Q` is topic `Q` plus topic `Q-delay` (delayed sends and retries); `create_queue` creates both, and the DLQ's pair, with `?partitions=` partitions (default 3) |
//! | send | idempotent producer, `acks=all`; `Ok` only once the broker acknowledged every record. The ordering key is the record key (else the message id); id, attempt, enqueue time and due time travel in record headers |
//! | receive | one consumer per queue and driver instance, in consumer group `{group}-{Q}` (`?group=`, default `queue-workers`), subscribed to `Q` and `Q-delay` |
//! | lease | none per message ([`LeaseModel::Session`](queue_core::driver::LeaseModel::Session)): a delivery is this consumer's until it is settled or the consumer leaves the group; then the partition's new owner redelivers from the last committed offset |
//! | ack | marks the offset done and commits each partition's contiguous done prefix, so nothing is ever committed past an unsettled message |
//! | nack with delay | a keyed record of `Q`: held in this consumer for its delay, in its key's place, then handed out again with `attempt + 1` (never committed past meanwhile); any other: republished to `Q-delay` with `attempt + 1` and a due time, then the original is marked done |
//! | delay | records in `Q-delay` carry a due time; a consumer that reads one early pauses just that partition and seeks back to it when it is due; other partitions and `Q` keep flowing. A due time more than `max_delay` (plus a minute of clock skew) away, or an attempt or due-time header that does not parse, is another writer's: the record is delivered at once marked malformed, so it never holds its partition |
//! | DLQ | the core's emulation: queue `Q-dlq` (topics `Q-dlq`, `Q-dlq-delay`), written before the original is marked done |
//! | redrive | the core's receive / send / ack loop from `Q-dlq` back to `Q` |
//! | ordering | per key: same key, same partition, and this consumer hands a key's records out one at a time (the next once the one before is acked or dead-lettered); a retry holds its key in place with its backoff while other keys of the partition flow (`driver/lines.rs`). A keyed message sent with a delay comes from `Q-delay` when it is due and is not ordered against its key's others (memory, Redis and PostgreSQL keep it in its key's line) |
//! | peek | not offered (see below) |
//! | stats | approximate: lag (high watermark − committed offset) of `Q` minus this instance's in-flight, lag of `Q-delay` as delayed, lag of the DLQ |
//! | limits | 1 MB records (librdkafka's `message.max.bytes`) less 2 KiB for headers; 500 messages per send call |
//!
//! On a rebalance, the consumer drops the in-flight state of revoked partitions (their acks
//! are refused as stale, [`QueueError::ReceiptExpired`](queue_core::QueueError::ReceiptExpired)); the new owner redelivers them.
//!
//! ## URLs
//!
//! `kafka://host:port[?bootstrap=h2:p2,h3:p3&group=NAME&partitions=N&replication=N&max_delay=15m&<librdkafka property>=<value>...]`.
//! Topics that `create_queue` creates get `partitions` partitions (default 3, at most
//! 1000) and `replication` replicas (default 1, for a single broker; use 3 on a
//! production cluster); an existing topic is used as it is.
//! Any parameter with a dot in its name (`security.protocol`, `sasl.mechanism`,
//! `sasl.username`, `ssl.ca.location`, ...) is passed to librdkafka as it is.
//!
//! ## What it cannot do
//! - No peek (`Capabilities::peek` is `None`): a record is read at the consumer group's
//!   position, and reading without moving it would take a consumer of its own per look.
//!   `queuectl peek` and `dlq list` say so; a redrive by reason works (it leases, moves the
//!   matching records and gives the others back).
//! - No per-message lease expiry: a worker that hangs without dying keeps its messages;
//!   use the worker's job timeout. `extend` succeeds as a no-op while the delivery is held.
//! - After a consumer crash the redelivered message's attempt count is the one it was last
//!   published with (Kafka does not count deliveries); a keyed record held for its retry
//!   comes back at the count it was read with.
//! - A keyed message sent with a delay is not ordered against its key's others: it is
//!   delivered when due, outside the key's line.
//! - A key held for a retry holds its partition's commits (never past the held record) for
//!   up to the retry's backoff, and keeps the key's later records in this consumer's
//!   memory meanwhile; a crash replays the partition from the held record, in order
//!   (duplicates of the other keys' settled records included).
//! - No deduplication of user dedup ids and no priorities (both refused); the idempotent
//!   producer only removes the broker-side duplicates of its own retries.
//! - A due time blocks the rest of its `Q-delay` partition until it is due (one delay topic,
//!   not one per delay tier), so a delayed record can wait behind a longer one sent before
//!   it on the same partition. The driver therefore accepts delays (and retry backoffs) of
//!   at most `max_delay`, 15 minutes by default, which bounds that hold-back: a delayed
//!   record is delivered at most `max_delay` after its due time. A longer delay is refused
//!   with a typed error ([`QueueError::InvalidOption`](queue_core::QueueError::InvalidOption) from the handle's validation), and a
//!   longer retry backoff is capped at it, logged. `?max_delay=` raises the bound (up to a
//!   year) for applications that accept the longer hold-back; per-tier delay topics, which
//!   would remove it, are not built (each tier is two more topics per queue). The worker's
//!   default retry policy grows to this 15-minute cap, so once unkeyed jobs fail for a
//!   while, a short retry can wait behind a 15-minute one on its `Q-delay` partition
//!   (keyed retries wait in their key's line instead).
//! - No purge (refused with a typed error): Kafka cannot drop a topic's unread records for
//!   one consumer group. No `delete_queue` either (refused): delete the topics `Q`,
//!   `Q-delay`, `Q-dlq` and `Q-dlq-delay` with the broker's own tools.
#![warn(missing_docs, missing_debug_implementations)]
//!
//! ## Features
//! - `client` (default): the driver itself, on librdkafka. Without it the crate holds only
//!   the record codec, for the fuzz targets (feature `fuzzing`), which then build without
//!   librdkafka.

mod codec;
#[cfg(feature = "client")]
mod driver;
#[cfg(feature = "client")]
pub use driver::{register, KafkaConfig, KafkaQueue};

const BACKEND: &str = "kafka";

// The fuzz targets' entry points (`fuzz/`); documented in the module.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
