//! Priorities where the backend has none (SQS standard queues): emulated once here, as
//! tiers.
//!
//! [`Backend::with_priorities(levels)`](crate::Backend::with_priorities) declares that the
//! application uses priorities `0..levels`. On a backend with native priorities (memory,
//! Redis, PostgreSQL) that only bounds them: a higher one is refused at send, on every
//! backend alike, so a test on memory catches what SQS would refuse. On a backend without
//! them the driver is wrapped in [`PriorityTiers`], a [`Driver`] over the backend's own
//! queues, the way object_store's wrapper stores work:
//!
//! - priority `p` of queue `Q` lives in tier queue `Q-p<p>` (before `.fifo` for a backend
//!   whose queue names end so); priority 0, and a message without a priority, in `Q`
//!   itself, so an application that never sets a priority sees no difference;
//! - a receive takes from the highest tier first: each tier in turn without waiting, until
//!   `max` deliveries are in hand; when every tier is empty it long-polls all of them at
//!   once, and the first that brings something cancels the others' waits, so a
//!   high-priority job that arrives during the wait is not held up by it. What a cancelled
//!   poll returns is kept (what is over `max` is given back); what reaches a poll after it
//!   returned is given back by the driver (SQS standard: a fresh copy at the back of its
//!   tier, its attempt count kept, one more request). A receive that already holds
//!   deliveries returns them even when another tier's call fails;
//! - a retry stays in its tier (a nack goes back to the queue it came from), so a job keeps
//!   its priority across retries; receipts carry their tier, so ack, nack, extend and
//!   give-back reach the right queue;
//! - `create`, `delete`, `purge`, `stats` and worker start/stop cover every tier; peek
//!   lists the highest tier first.
//! - A dead-letter queue (named as the backend names them: `{queue}-dlq`, or
//!   `{queue}-dlq.fifo`) is not split: every tier's dead letters go to the queue's one
//!   dead-letter queue, and its workers and tools see a plain queue. A queue of your own
//!   whose name ends in `-dlq` is taken for a dead-letter queue too.
//!
//! What it costs and what it cannot do (decisions, written down):
//! - Every tier is a queue: `levels - 1` more queues per queue (each with its own
//!   dead-letter queue where the backend makes one at creation, as SQS does). A receive
//!   makes up to `levels` requests without waiting before its long poll, and the long poll
//!   is one per tier: on SQS, which bills requests, an idle worker costs `levels` times
//!   the requests of one without tiers. Keep `levels` small (2 to 16 are accepted; 3 or 4
//!   is the usual "low, normal, high, urgent").
//! - Priority is strict between tiers at the moment of each receive, as far as each tier's
//!   receive without waiting sees its queue, and FIFO within a tier as far as the
//!   backend's queue is (SQS standard is best-effort FIFO). A
//!   job already received (a worker's prefetched batch) is not overtaken by a higher one
//!   sent after it.
//! - Tiers are refused ([`QueueError::Unsupported`], naming why) where they could not keep
//!   the backend's other promises, and on the in-memory backend wearing such a profile, so
//!   that tests refuse what production would:
//!   - a backend with ordering keys (SQS FIFO, Kafka): one key's jobs sent at two
//!     priorities would sit in two queues, and the later could run first; and on SQS FIFO
//!     a message given back after a cancelled poll counts a receive;
//!   - a session-lease backend (Kafka): a consumer fetches only while it receives, so a
//!     receive without waiting does not see what its topic holds; a lower tier's record
//!     came before a higher tier's in two runs of three of a test of tiers on Kafka.
//! - Dead letters of every tier go to the queue's one dead-letter queue, where operators
//!   look; a redrive sends them back at priority 0 (a dead letter keeps no priority, on
//!   every backend). A backend's own redrive policy (SQS's `maxReceiveCount`) moves a
//!   message to its tier's dead-letter queue: `stats` counts those too, and a redrive
//!   sends them back to their tier.
//! - Producer and worker must agree on `levels`: a tier no worker reads keeps its jobs.
//!   Lowering `levels` leaves the higher tiers' jobs unread: drain first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinSet;

use crate::driver::{
    dead_letter_copy, receipt, receipt_str, Capabilities, DeadLetterReason, Driver, LeaseModel,
    Ordering, ReceiveOptions,
};
use crate::error::{QueueError, Result};
use crate::idempotency::IdempotencyStore;
use crate::message::{Delivery, Message, MessageId, Peeked, QueueStats, Receipt};

/// The fewest and the most levels [`PriorityTiers`] accepts.
pub const LEVELS: std::ops::RangeInclusive<u8> = 2..=16;

/// A driver whose queues are split into priority tiers; see the [module docs](self).
#[derive(Clone)]
pub struct PriorityTiers {
    inner: Arc<dyn Driver>,
    levels: u8,
}

impl std::fmt::Debug for PriorityTiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityTiers")
            .field("backend", &self.inner.kind())
            .field("levels", &self.levels)
            .finish()
    }
}

/// Checks a number of priority levels: [`LEVELS`], else a typed error.
pub(crate) fn check_levels(levels: u8) -> Result<()> {
    if LEVELS.contains(&levels) {
        Ok(())
    } else {
        Err(QueueError::InvalidOption(format!(
            "priority levels must be {} to {}, got {levels}",
            LEVELS.start(),
            LEVELS.end()
        )))
    }
}

impl PriorityTiers {
    /// Tiers `0..levels` over `inner` (levels in [`LEVELS`], else
    /// [`QueueError::InvalidOption`]).
    pub fn new(inner: Arc<dyn Driver>, levels: u8) -> Result<Self> {
        check_levels(levels)?;
        // See the module docs for why each is refused.
        let (kind, caps) = (inner.kind(), inner.capabilities());
        if caps.lease == LeaseModel::Session {
            return Err(QueueError::unsupported(
                kind,
                "priorities (emulated tiers need a receive that sees its queue without waiting; a Kafka consumer fetches only while it receives)",
            ));
        }
        if caps.ordering != Ordering::None {
            return Err(QueueError::unsupported(
                kind,
                "priorities (emulated tiers would split an ordering key's jobs across queues)",
            ));
        }
        Ok(PriorityTiers { inner, levels })
    }

    /// The number of levels: priorities `0..levels` are accepted.
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// The queue holding priority `tier` of `queue` (tier 0 is `queue` itself).
    pub fn tier_name(queue: &str, tier: u8) -> String {
        if tier == 0 {
            return queue.to_string();
        }
        match queue.strip_suffix(".fifo") {
            Some(base) => format!("{base}-p{tier}.fifo"),
            None => format!("{queue}-p{tier}"),
        }
    }

    /// Every tier queue of `queue`, highest first, for operators: each is a queue of the
    /// backend with its own stats and, where the backend makes one, dead-letter queue (read
    /// them through a backend without [`with_priorities`](crate::Backend::with_priorities):
    /// through this wrapper a name is taken for an application's queue).
    pub fn queues(&self, queue: &str) -> Vec<String> {
        self.tiers().map(|t| Self::tier_name(queue, t)).collect()
    }

    /// Tiers, highest first.
    fn tiers(&self) -> impl Iterator<Item = u8> {
        (0..self.levels).rev()
    }

    /// The tiers of `queue`, highest first: all of them, but only tier 0 (the queue
    /// itself) for a dead-letter queue, which is not split.
    fn tiers_of(&self, queue: &str) -> Vec<u8> {
        if self.is_dead_letter_queue(queue) {
            vec![0]
        } else {
            self.tiers().collect()
        }
    }

    /// Whether `queue` is another queue's dead-letter queue by the backend's naming
    /// (`{queue}-dlq`, or `{queue}-dlq.fifo` on SQS FIFO queues).
    fn is_dead_letter_queue(&self, queue: &str) -> bool {
        let base = queue
            .strip_suffix("-dlq.fifo")
            .map(|b| format!("{b}.fifo"))
            .or_else(|| queue.strip_suffix("-dlq").map(str::to_string));
        base.is_some_and(|b| self.inner.dead_letter_queue(&b) == queue)
    }

    fn tier_of(&self, m: &Message) -> Result<u8> {
        match m.priority {
            None => Ok(0),
            Some(p) if p < self.levels => Ok(p),
            Some(p) => Err(out_of_range(p, self.levels)),
        }
    }

    /// A delivery of tier `t` as the application sees it: the logical queue, a receipt
    /// that carries the tier.
    fn outer(queue: &str, t: u8, mut d: Delivery) -> Delivery {
        d.receipt = receipt(format!("{t}:{}", receipt_str(&d.receipt)));
        d.queue = queue.to_string();
        d
    }

    /// The tier and the inner driver's receipt.
    fn split(&self, r: &Receipt) -> Result<(u8, Receipt)> {
        let text = receipt_str(r);
        let bad = || QueueError::invalid_receipt(self.inner.kind(), "no priority tier in it");
        let (t, rest) = text.split_once(':').ok_or_else(bad)?;
        match t.parse::<u8>() {
            Ok(t) if t < self.levels => Ok((t, receipt(rest.to_string()))),
            _ => Err(bad()),
        }
    }

    /// The delivery as the inner driver issued it.
    fn inner_delivery(&self, d: &Delivery) -> Result<Delivery> {
        let (t, r) = self.split(&d.receipt)?;
        let mut inner = d.clone();
        inner.queue = Self::tier_name(&d.queue, t);
        inner.receipt = r;
        Ok(inner)
    }

    /// Long-polls every tier at once; the first to bring something ends the others' waits.
    async fn receive_waiting(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        let stop = opts.cancel.child_token();
        let mut polls = JoinSet::new();
        for t in self.tiers_of(queue) {
            let (inner, name) = (self.inner.clone(), Self::tier_name(queue, t));
            let o = opts.clone().cancelled_by(stop.clone());
            polls.spawn(async move { (t, inner.receive(&name, o).await) });
        }
        let mut got: BTreeMap<u8, Vec<Delivery>> = BTreeMap::new();
        let mut error = None;
        while let Some(joined) = polls.join_next().await {
            let (t, r) = match joined {
                Ok(polled) => polled,
                Err(e) => (0, Err(QueueError::backend(self.inner.kind(), e))),
            };
            match r.map_err(|e| named(queue, e)) {
                Ok(ds) if !ds.is_empty() => {
                    // The others stop waiting; what they already took comes back below.
                    stop.cancel();
                    got.entry(t).or_default().extend(ds);
                }
                Ok(_) => {}
                Err(e) => {
                    stop.cancel();
                    error.get_or_insert(e);
                }
            }
        }
        let mut out = Vec::new();
        for (t, ds) in got.into_iter().rev() {
            for d in ds {
                if out.len() < opts.max {
                    out.push(Self::outer(queue, t, d));
                } else if let Err(e) = self.inner.give_back(&d, Duration::ZERO).await {
                    tracing::warn!(queue = %d.queue, error = %e, "could not give back a delivery over the receive's max; it returns when its lease ends");
                }
            }
        }
        match error {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

/// A tier queue's `UnknownQueue` as the application's queue's.
fn named(queue: &str, e: QueueError) -> QueueError {
    match e {
        QueueError::UnknownQueue(q) if !q.is_empty() => QueueError::UnknownQueue(queue.into()),
        e => e,
    }
}

fn out_of_range(p: u8, levels: u8) -> QueueError {
    QueueError::InvalidOption(format!(
        "priority {p} is outside the application's {levels} levels (0 to {}): see Backend::with_priorities",
        levels - 1
    ))
}

/// Checks `m`'s priority against `levels` (for backends with native priorities, so that
/// every backend refuses the same priorities).
pub(crate) fn check_priority(m: &Message, levels: u8) -> Result<()> {
    match m.priority {
        Some(p) if p >= levels => Err(out_of_range(p, levels)),
        _ => Ok(()),
    }
}

#[async_trait]
impl Driver for PriorityTiers {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_priority(true)
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        for t in self.tiers_of(queue) {
            self.inner
                .create_queue(&Self::tier_name(queue, t))
                .await
                .map_err(|e| named(queue, e))?;
        }
        Ok(())
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        for t in self.tiers_of(queue) {
            self.inner
                .delete_queue(&Self::tier_name(queue, t))
                .await
                .map_err(|e| named(queue, e))?;
        }
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        for t in self.tiers_of(queue) {
            self.inner
                .purge(&Self::tier_name(queue, t))
                .await
                .map_err(|e| named(queue, e))?;
        }
        Ok(())
    }

    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        if self.is_dead_letter_queue(queue) {
            return self.inner.send(queue, batch).await;
        }
        // Every priority is checked before anything is sent.
        let tiers = batch
            .iter()
            .map(|m| self.tier_of(m))
            .collect::<Result<Vec<u8>>>()?;
        if tiers.iter().all(|t| *t == tiers[0]) {
            let t = tiers.first().copied().unwrap_or(0);
            return self
                .inner
                .send(&Self::tier_name(queue, t), batch)
                .await
                .map_err(|e| named(queue, e));
        }
        // A mixed batch: one send per tier, ids put back in the batch's order.
        let mut by_tier: BTreeMap<u8, (Vec<usize>, Vec<Message>)> = BTreeMap::new();
        for (i, (m, t)) in batch.into_iter().zip(tiers).enumerate() {
            let e = by_tier.entry(t).or_default();
            e.0.push(i);
            e.1.push(m);
        }
        let total = by_tier.values().map(|(i, _)| i.len()).sum();
        let mut ids: Vec<Option<MessageId>> = vec![None; total];
        for (t, (at, ms)) in by_tier.into_iter().rev() {
            let sent = self
                .inner
                .send(&Self::tier_name(queue, t), ms)
                .await
                .map_err(|e| named(queue, e))?;
            for (i, id) in at.into_iter().zip(sent) {
                ids[i] = Some(id);
            }
        }
        ids.into_iter()
            .map(|id| {
                id.ok_or_else(|| QueueError::backend(self.kind(), "send returned too few ids"))
            })
            .collect()
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        for t in self.tiers_of(queue) {
            let want = opts.max - out.len();
            if want == 0 || opts.cancel.is_cancelled() {
                break;
            }
            let now = ReceiveOptions::new(want, Duration::ZERO, opts.lease)
                .cancelled_by(opts.cancel.clone());
            match self.inner.receive(&Self::tier_name(queue, t), now).await {
                Ok(got) => out.extend(got.into_iter().map(|d| Self::outer(queue, t, d))),
                // What is in hand is returned, never left leased; the error comes back
                // on the next receive.
                Err(e) if !out.is_empty() => {
                    tracing::warn!(queue, error = %e, "a priority tier's receive failed");
                    break;
                }
                Err(e) => return Err(named(queue, e)),
            }
        }
        if !out.is_empty() || opts.wait.is_zero() || opts.cancel.is_cancelled() {
            return Ok(out);
        }
        self.receive_waiting(queue, opts).await
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        let mut by_tier: BTreeMap<u8, (Vec<usize>, Vec<Receipt>)> = BTreeMap::new();
        for (i, r) in receipts.iter().enumerate() {
            let (t, inner) = self.split(r)?;
            let e = by_tier.entry(t).or_default();
            e.0.push(i);
            e.1.push(inner);
        }
        let mut stale = Vec::new();
        for (t, (at, rs)) in by_tier {
            match self
                .inner
                .ack(&Self::tier_name(queue, t), &rs)
                .await
                .map_err(|e| named(queue, e))
            {
                Ok(()) => {}
                Err(QueueError::ReceiptExpired) => stale.extend(at),
                Err(QueueError::PartialBatch { failed }) => {
                    stale.extend(failed.into_iter().filter_map(|(i, _)| at.get(i).copied()))
                }
                Err(e) => return Err(e),
            }
        }
        stale.sort_unstable();
        QueueError::stale_receipts(receipts.len(), stale)
    }

    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        let (t, r) = self.split(receipt)?;
        self.inner
            .nack(&Self::tier_name(queue, t), &r, delay)
            .await
            .map_err(|e| named(queue, e))
    }

    async fn give_back(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.inner
            .give_back(&self.inner_delivery(delivery)?, delay)
            .await
            .map_err(|e| named(&delivery.queue, e))
    }

    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<()> {
        let (t, r) = self.split(receipt)?;
        self.inner
            .extend(&Self::tier_name(queue, t), &r, lease)
            .await
            .map_err(|e| named(queue, e))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let (mut ready, mut in_flight, mut delayed, mut dead) = (0, 0, 0, 0);
        for t in self.tiers_of(queue) {
            let s = self
                .inner
                .stats(&Self::tier_name(queue, t))
                .await
                .map_err(|e| named(queue, e))?;
            ready += s.ready;
            in_flight += s.in_flight;
            delayed += s.delayed;
            dead += s.dead;
        }
        Ok(QueueStats::new(ready, in_flight, delayed, dead))
    }

    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>> {
        let mut out = Vec::new();
        for t in self.tiers_of(queue) {
            if out.len() >= max {
                break;
            }
            let name = Self::tier_name(queue, t);
            out.extend(
                self.inner
                    .peek(&name, max - out.len())
                    .await
                    .map_err(|e| named(queue, e))?,
            );
        }
        Ok(out)
    }

    async fn start_receiving(&self, queue: &str) -> Result<()> {
        for t in self.tiers_of(queue) {
            self.inner
                .start_receiving(&Self::tier_name(queue, t))
                .await
                .map_err(|e| named(queue, e))?;
        }
        Ok(())
    }

    async fn stop_receiving(&self, queue: &str) -> Result<()> {
        let mut first = Ok(());
        for t in self.tiers_of(queue) {
            let r = self
                .inner
                .stop_receiving(&Self::tier_name(queue, t))
                .await
                .map_err(|e| named(queue, e));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn dead_letter_queue(&self, queue: &str) -> String {
        self.inner.dead_letter_queue(queue)
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        // Copy first, then settle the original: a crash in between duplicates, never loses.
        let dlq = self.inner.dead_letter_queue(&delivery.queue);
        self.inner
            .send(&dlq, vec![dead_letter_copy(delivery, reason)])
            .await?;
        self.ack(&delivery.queue, std::slice::from_ref(&delivery.receipt))
            .await
    }

    async fn redrive(&self, queue: &str, limit: usize) -> Result<usize> {
        // The queue's own dead-letter queue, back to priority 0, then what the backend's
        // own redrive policy moved to a tier's dead-letter queue, back to its tier.
        let mut moved = self.inner.redrive(queue, limit).await?;
        for t in self.tiers_of(queue).into_iter().filter(|t| *t > 0) {
            if moved >= limit {
                break;
            }
            let name = Self::tier_name(queue, t);
            if self
                .inner
                .stats(&name)
                .await
                .map_err(|e| named(queue, e))?
                .dead
                > 0
            {
                moved += self
                    .inner
                    .redrive(&name, limit - moved)
                    .await
                    .map_err(|e| named(queue, e))?;
            }
        }
        Ok(moved)
    }

    fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        self.inner.idempotency_store()
    }

    fn requests_made(&self) -> Option<u64> {
        self.inner.requests_made()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryConfig, MemoryQueue, Profile};

    fn tiers(levels: u8) -> PriorityTiers {
        let inner = MemoryQueue::with_config(MemoryConfig::like(Profile::Sqs));
        PriorityTiers::new(Arc::new(inner), levels).unwrap()
    }

    #[test]
    fn levels_are_bounded_and_names_keep_fifo_suffixes() {
        for bad in [0, 1, 17, 255] {
            let inner = Arc::new(MemoryQueue::new()) as Arc<dyn Driver>;
            assert!(matches!(
                PriorityTiers::new(inner, bad),
                Err(QueueError::InvalidOption(_))
            ));
        }
        assert_eq!(PriorityTiers::tier_name("jobs", 0), "jobs");
        assert_eq!(PriorityTiers::tier_name("jobs", 2), "jobs-p2");
        assert_eq!(PriorityTiers::tier_name("jobs.fifo", 3), "jobs-p3.fifo");
        // Backends with ordering keys or session leases are refused (module docs).
        for like in [Profile::SqsFifo, Profile::Kafka] {
            let inner = Arc::new(MemoryQueue::with_config(MemoryConfig::like(like)));
            assert!(matches!(
                PriorityTiers::new(inner, 3),
                Err(QueueError::Unsupported { .. })
            ));
        }
        assert_eq!(tiers(3).queues("jobs"), ["jobs-p2", "jobs-p1", "jobs"]);
    }

    /// A mixed batch is split by tier; the ids come back in the batch's order, and a
    /// priority outside the levels refuses the whole batch before anything is sent.
    #[tokio::test]
    async fn a_mixed_batch_keeps_its_order_of_ids_and_refuses_as_a_whole() {
        let t = tiers(3);
        t.create_queue("q").await.unwrap();
        let batch = vec![
            Message::new("a").id("a"),
            Message::new("b").id("b").priority(2),
            Message::new("c").id("c").priority(1),
        ];
        let ids = t.send("q", batch).await.unwrap();
        let ids: Vec<&str> = ids.iter().map(MessageId::as_str).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let bad = vec![Message::new("d"), Message::new("e").priority(3)];
        assert!(matches!(
            t.send("q", bad).await,
            Err(QueueError::InvalidOption(_))
        ));
        assert_eq!(
            t.stats("q").await.unwrap().ready,
            3,
            "nothing of the bad batch"
        );
    }

    /// `with_priorities` means the same on every backend: native priorities are bounded
    /// to the declared levels as the tiers are, and only a backend without priorities is
    /// wrapped.
    #[tokio::test]
    async fn with_priorities_refuses_the_same_priorities_everywhere() {
        let kafka = crate::connect("memory://y?like=kafka").await.unwrap();
        assert!(matches!(
            kafka.with_priorities(3),
            Err(QueueError::Unsupported { .. })
        ));
        let fifo = crate::connect("memory://w?like=sqs-fifo").await.unwrap();
        assert!(matches!(
            fifo.with_priorities(3),
            Err(QueueError::Unsupported { .. })
        ));
        for url in ["memory://", "memory://x?like=sqs"] {
            let b = crate::connect(url).await.unwrap();
            let native = b.capabilities().priority;
            assert!(matches!(
                b.clone().with_priorities(1),
                Err(QueueError::InvalidOption(_))
            ));
            let b = b.with_priorities(3).unwrap();
            assert!(b.capabilities().priority, "{url}");
            assert_eq!(b.priority_levels(), Some(3));
            assert!(b.clone().with_priorities(3).is_err(), "{url}: twice");
            let q = b.queue("jobs");
            q.create().await.unwrap();
            let p = q.producer();
            p.send(Message::new("low")).await.unwrap();
            p.send(Message::new("high").priority(2)).await.unwrap();
            let r = p.send(Message::new("x").priority(3)).await;
            assert!(
                matches!(r, Err(QueueError::InvalidOption(_))),
                "{url}: {r:?}"
            );
            let got = b
                .driver()
                .receive(
                    "jobs",
                    ReceiveOptions::new(2, Duration::ZERO, Duration::from_secs(30)),
                )
                .await
                .unwrap();
            let order: Vec<&[u8]> = got.iter().map(|d| &d.payload[..]).collect();
            assert_eq!(order, [&b"high"[..], b"low"], "{url} (native: {native})");
        }
    }

    /// A job sent to a higher tier while a receive waits on every tier ends the wait at
    /// once: the long poll covers all tiers, not just the lowest.
    #[tokio::test]
    async fn a_waiting_receive_wakes_for_any_tier() {
        let t = tiers(4);
        t.create_queue("q").await.unwrap();
        let (rx, sender) = (t.clone(), t.clone());
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(async move {
            rx.receive(
                "q",
                ReceiveOptions::new(5, Duration::from_secs(10), Duration::from_secs(30)),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        sender
            .send("q", vec![Message::new("urgent").priority(3)])
            .await
            .unwrap();
        let got = waiting.await.unwrap().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].payload[..], b"urgent");
        assert_eq!(got[0].queue, "q", "the application's queue, not the tier's");
        // Its receipt carries the tier: the ack reaches the tier queue.
        t.ack("q", std::slice::from_ref(&got[0].receipt))
            .await
            .unwrap();
        assert_eq!(t.stats("q").await.unwrap().in_flight, 0);
        let foreign = receipt("no tier here");
        assert!(matches!(
            t.ack("q", std::slice::from_ref(&foreign)).await,
            Err(QueueError::InvalidReceipt { .. })
        ));
    }

    /// The dead-letter queue is not split, and a tier's unknown queue is reported under
    /// the application's name.
    #[tokio::test]
    async fn the_dead_letter_queue_is_one_plain_queue() {
        let t = tiers(3);
        t.create_queue("q").await.unwrap();
        let dlq = t.dead_letter_queue("q");
        assert!(t.is_dead_letter_queue(&dlq));
        assert!(!t.is_dead_letter_queue("q"));
        assert_eq!(t.stats(&dlq).await.unwrap().ready, 0);
        match t.stats("missing").await {
            Err(QueueError::UnknownQueue(q)) => assert_eq!(q, "missing"),
            other => panic!("want UnknownQueue(missing), got {other:?}"),
        }
    }
}
