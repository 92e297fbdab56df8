//! Fair sharing between keys: one queue split into shards, read round-robin.
//!
//! On a FIFO queue one tenant's backlog of 100,000 jobs starves a tenant that sends 10
//! behind it: every worker must receive (and run) the backlog first. Per-key concurrency
//! ([`crate::Worker::concurrency_per_key`]) caps the big tenant's share of the workers but
//! does not help the small one, whose jobs still wait at the back of the line. What does
//! help is giving each key its own line, the way BullMQ Pro's groups, Kafka's partitions
//! and SQS FIFO's message groups do.
//!
//! [`Fairness`] does that on every backend, over the backend's own queues:
//!
//! - a producer made [`fair`](crate::Producer::fair) sends each message to one of
//!   `shards` queues chosen by a stable hash of its key ([`FairKey`]): shard 0 is the
//!   queue itself, shard `i` is the queue `<name>-fair-<i>` (before `.fifo` on SQS FIFO
//!   queues: `orders-fair-3.fifo`); a message without a key goes to shard 0;
//! - a worker made [`fair`](crate::Worker::fair) runs one receive loop per shard, all
//!   drawing on the worker's one pool of `concurrency` slots. A freed slot goes to the loop
//!   that has waited longest for one (tokio's semaphore is first-in first-out), so busy
//!   shards take turns: a shard holding one key's backlog gets one turn in `shards`, and a
//!   key alone on its shard waits for at most one turn of the others, not for the backlog.
//!   A busy shard is polled without waiting; once it comes back empty its loop waits for
//!   the next message (a long poll for one) without holding a slot, so idle shards leave
//!   every slot to the busy ones.
//!
//! What it costs and what it cannot do (decisions, written down):
//! - Fairness is between shards, not between keys: keys that hash to the same shard share
//!   its line in FIFO order. With `shards` shards and a few heavy keys, the chance that a
//!   light key shares a heavy key's shard is about (heavy keys / shards); pick `shards` well
//!   above the number of heavy tenants (up to 256).
//! - An idle worker makes one long poll per shard instead of one (on SQS, requests are
//!   billed). A message that an idle shard's long poll brings waits, leased, for the next
//!   free slot (at most one job's run while every slot is busy); a busy shard's loop takes
//!   no more than it has slots for, like any worker.
//! - The shards are queues: create them before use where the backend needs it
//!   ([`Fairness::create`]), and each has its own stats and dead-letter queue
//!   ([`Fairness::queues`] lists them for operators and `queuectl`). Pause, rate limits and
//!   per-key limits apply to the queue's name and so to all its shards at once.
//! - Producer and worker must agree on `shards`: messages on a shard no worker reads wait
//!   there (shard 0 is always read, so a plain worker still drains the queue itself).
//!   Changing the shard count moves keys between shards: drain first where per-key order
//!   matters.
//! - Backends that shard natively do not need it: Kafka partitions by key (each partition
//!   is its own line), and SQS FIFO delivers one message group at a time, in parallel
//!   across groups. docs/benchmarks.md has the measurement.

use std::fmt;
use std::sync::Arc;

use crate::error::{QueueError, Result};
use crate::handle::Queue;
use crate::message::Message;

/// A key computed from a message.
pub type MessageKeyFn = Arc<dyn Fn(&Message) -> Option<String> + Send + Sync>;

/// Where a fair producer reads a message's key.
#[derive(Clone)]
#[non_exhaustive]
pub enum FairKey {
    /// A header's value (e.g. `tenant`).
    Header(String),
    /// The message's ordering key ([`crate::SendOptions::ordering_key`]).
    OrderingKey,
    /// Anything computed from the message (`None`: shard 0).
    Fn(MessageKeyFn),
}

impl fmt::Debug for FairKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FairKey::Header(h) => f.debug_tuple("Header").field(h).finish(),
            FairKey::OrderingKey => f.write_str("OrderingKey"),
            FairKey::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl FairKey {
    fn of(&self, m: &Message) -> Option<String> {
        match self {
            FairKey::Header(h) => m.headers.get(h).cloned(),
            FairKey::OrderingKey => m.ordering_key.clone(),
            FairKey::Fn(f) => f(m),
        }
    }
}

/// The most shards a queue may be split into.
pub const MAX_SHARDS: u16 = 256;

/// A queue split into `shards` lines read round-robin; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Fairness {
    shards: u16,
    key: FairKey,
}

impl Fairness {
    /// `shards` lines (2 to [`MAX_SHARDS`]), keyed by `key`. Anything else is
    /// [`QueueError::InvalidOption`].
    pub fn new(shards: u16, key: FairKey) -> Result<Self> {
        if !(2..=MAX_SHARDS).contains(&shards) {
            return Err(QueueError::InvalidOption(format!(
                "fairness needs 2 to {MAX_SHARDS} shards, got {shards}"
            )));
        }
        if let FairKey::Header(h) = &key {
            if h.is_empty() {
                return Err(QueueError::InvalidOption(
                    "fairness key header name is empty".into(),
                ));
            }
        }
        Ok(Fairness { shards, key })
    }

    /// Shorthand for `Fairness::new(shards, FairKey::Header(header))`.
    pub fn by_header(shards: u16, header: impl Into<String>) -> Result<Self> {
        Self::new(shards, FairKey::Header(header.into()))
    }

    /// How many shards.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The shard (0-based) a key goes to: FNV-1a over its bytes, stable across processes,
    /// platforms and versions of this crate.
    pub fn shard_of(&self, key: &str) -> u16 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(self.shards)) as u16
    }

    /// The name of shard `i` of `queue` (shard 0 is `queue` itself).
    pub fn shard_name(queue: &str, i: u16) -> String {
        if i == 0 {
            return queue.to_string();
        }
        match queue.strip_suffix(".fifo") {
            Some(base) => format!("{base}-fair-{i}.fifo"),
            None => format!("{queue}-fair-{i}"),
        }
    }

    /// The queue `m` goes to.
    pub(crate) fn route(&self, queue: &str, m: &Message) -> String {
        let i = self.key.of(m).map_or(0, |k| self.shard_of(&k));
        Self::shard_name(queue, i)
    }

    /// Every shard of `queue`, shard 0 first.
    pub fn queues(&self, queue: &Queue) -> Vec<Queue> {
        (0..self.shards)
            .map(|i| queue.backend().queue(Self::shard_name(queue.name(), i)))
            .collect()
    }

    /// Creates every shard (where the backend creates queues).
    pub async fn create(&self, queue: &Queue) -> Result<()> {
        for q in self.queues(queue) {
            q.create().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_shard_counts_are_refused() {
        for n in [0, 1, 257] {
            assert!(matches!(
                Fairness::by_header(n, "tenant"),
                Err(QueueError::InvalidOption(_))
            ));
        }
        assert!(Fairness::by_header(4, "").is_err());
    }

    #[test]
    fn shards_are_stable_and_named() {
        let f = Fairness::by_header(8, "tenant").unwrap();
        // Pinned: a change would move keys between shards across versions.
        assert_eq!((f.shard_of("big"), f.shard_of("small")), (1, 4));
        let spread: std::collections::HashSet<u16> = (0..100)
            .map(|i| f.shard_of(&format!("tenant-{i}")))
            .collect();
        assert_eq!(spread.len(), 8);
        assert_eq!(Fairness::shard_name("mail", 0), "mail");
        assert_eq!(Fairness::shard_name("mail", 3), "mail-fair-3");
        assert_eq!(Fairness::shard_name("orders.fifo", 2), "orders-fair-2.fifo");
        let m = Message::new("x").header("tenant", "small");
        let none = Message::new("x");
        assert_eq!(f.route("mail", &none), "mail");
        assert_eq!(
            f.route("mail", &m),
            Fairness::shard_name("mail", f.shard_of("small"))
        );
    }
}
