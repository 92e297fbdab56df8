//! The in-memory driver: the embedded default, with real semantics.
//!
//! | primitive | mapping |
//! |---|---|
//! | storage | per-queue maps in process memory; nothing survives the process |
//! | lease | a deadline per delivery; at expiry the message is visible again, `attempt + 1` |
//! | ack | removes the message; a stale receipt (lease ended) is [`QueueError::ReceiptExpired`] |
//! | nack with delay | reschedules the message at `now + delay` |
//! | give back | the same, and the attempt count goes back down by one |
//! | extend | moves the deadline |
//! | delay | native, up to a year |
//! | DLQ | the core's emulation: a `{queue}-dlq` queue |
//! | ordering | per key: one delivery of a key in flight at a time, in send order (like SQS FIFO groups) |
//! | priority | higher first, FIFO within a priority |
//! | dedup | per-queue id set with a window (default 5 minutes) |
//! | limits | 1 MiB messages by default, 1,000 per batch, delays up to a year |
//! | delete / purge | drops the queue's maps / empties them (leased receipts go stale) |
//!
//! ## URLs
//! `memory://NAME[?max_message_size=1MiB&dedup_window=5m]` opens the process-wide broker
//! `NAME` (created on first use), so a producer and a worker that each call
//! `connect("memory://jobs")` meet. `memory://` alone opens a *private* broker that only
//! the returned [`crate::Backend`] (and its clones) can reach: two `connect("memory://")`
//! calls give two separate brokers. Long polls wait on a notification, never spin.
//! The options belong to each handle, not to the broker: two handles on one broker with
//! different options share queues but check sizes and dedup windows by their own.
//! `purge` keeps the queue's dedup marks (a purged message's dedup id still drops a
//! resend within the window); `delete_queue` drops them.
//!
//! ## Wearing another backend's profile
//! `memory://NAME?like=redis` (also `sqs`, `sqs-fifo`, `kafka`, `postgres`; see
//! [`crate::Profile`]) declares that backend's capabilities instead of its own, so an
//! application's tests are refused what production would refuse: a priority on `like=kafka`,
//! a dedup id or ordering key on `like=sqs`, a 20-minute delay or a purge on `like=kafka`,
//! a peek at a main queue on `like=sqs`, a lease under a second on `like=sqs`, a retry
//! policy with more attempts than SQS's receive limit. It also behaves as that backend does
//! where the difference shows: message and batch sizes, the dedup window, a give-back
//! costing an attempt on `like=sqs-fifo`, and, on `like=sqs`, a message received more
//! than `max_receives` (10) times moved to the dead-letter queue by the backend itself,
//! without reason headers. `max_message_size` and `dedup_window` in the URL override the
//! profile's. It keeps its own per-message, extendable leases, exact stats and stale-receipt
//! refusal (a profile copies refusals and limits, not failure modes). Without `like`, the
//! in-memory backend accepts everything any backend does: test on the profile of the
//! backend you deploy on.
//!
//! ## What it cannot do
//! Nothing survives the process; there is no cross-process sharing.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::driver::{
    first_enqueued, receipt, receipt_str, Capabilities, ConnectFuture, Driver, KeyChars,
    LeaseModel, Ordering, Peek, ReceiveOptions,
};
use crate::error::{QueueError, Result};
use crate::message::{Delivery, Headers, Message, MessageId, Peeked, QueueStats, Receipt};
use crate::options::UrlOptions;
use crate::profile::Profile;
use bytes::Bytes;

const BACKEND: &str = "memory";

/// `now + d`, saturating about a century ahead instead of overflowing on absurd durations.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum St {
    Ready,
    Scheduled(Instant),
    Leased(Instant),
    /// Behind another message with the same ordering key.
    Waiting,
}

struct Stored {
    id: MessageId,
    payload: Bytes,
    headers: Headers,
    key: Option<String>,
    priority: u8,
    enqueued: SystemTime,
    not_before: Instant,
    attempt: u32,
    generation: u64,
    state: St,
}

#[derive(Default)]
struct QState {
    msgs: HashMap<u64, Stored>,
    ready: BTreeSet<(Reverse<u8>, u64)>,
    scheduled: BTreeSet<(Instant, u64)>,
    leased: BTreeSet<(Instant, u64)>,
    groups: HashMap<String, VecDeque<u64>>,
    waiting: usize,
    dedup: HashMap<String, (Instant, MessageId)>,
    notify: Arc<Notify>,
}

impl QState {
    /// Removes `seq` from the index of its current state.
    fn detach(&mut self, seq: u64) {
        let Some(m) = self.msgs.get(&seq) else { return };
        match m.state {
            St::Ready => {
                self.ready.remove(&(Reverse(m.priority), seq));
            }
            St::Scheduled(at) => {
                self.scheduled.remove(&(at, seq));
            }
            St::Leased(at) => {
                self.leased.remove(&(at, seq));
            }
            St::Waiting => self.waiting -= 1,
        }
    }

    fn set_state(&mut self, seq: u64, new: St) {
        self.detach(seq);
        let Some(m) = self.msgs.get_mut(&seq) else {
            return;
        };
        match new {
            St::Ready => {
                self.ready.insert((Reverse(m.priority), seq));
            }
            St::Scheduled(at) => {
                self.scheduled.insert((at, seq));
            }
            St::Leased(at) => {
                self.leased.insert((at, seq));
            }
            St::Waiting => self.waiting += 1,
        }
        m.state = new;
    }

    fn activate(&mut self, seq: u64, visible_at: Instant, now: Instant) {
        let st = if visible_at <= now {
            St::Ready
        } else {
            St::Scheduled(visible_at)
        };
        self.set_state(seq, st);
    }

    /// Moves due scheduled messages and expired leases to ready.
    fn promote(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.scheduled.first() {
            if at > now {
                break;
            }
            self.set_state(seq, St::Ready);
        }
        while let Some(&(at, seq)) = self.leased.first() {
            if at > now {
                break;
            }
            if let Some(m) = self.msgs.get_mut(&seq) {
                m.generation += 1; // the old receipt is stale now
            }
            self.set_state(seq, St::Ready);
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let a = self.scheduled.first().map(|x| x.0);
        let b = self.leased.first().map(|x| x.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Finds the leased message a receipt names, if the receipt is still current: the
    /// same lease generation, and the lease not yet ended at `now`.
    fn leased_seq(&self, r: &Receipt, now: Instant) -> Result<u64> {
        let text = receipt_str(r);
        let (seq, gen) = text
            .split_once('.')
            .and_then(|(s, g)| Some((s.parse::<u64>().ok()?, g.parse::<u64>().ok()?)))
            .ok_or_else(|| QueueError::invalid_receipt(BACKEND, format!("{text:?}")))?;
        match self.msgs.get(&seq) {
            Some(m) if m.generation == gen && matches!(m.state, St::Leased(at) if at > now) => {
                Ok(seq)
            }
            _ => Err(QueueError::ReceiptExpired),
        }
    }

    fn remove(&mut self, seq: u64, now: Instant) -> Option<Stored> {
        self.detach(seq);
        let m = self.msgs.remove(&seq)?;
        if let Some(key) = &m.key {
            let mut next = None;
            if let Some(g) = self.groups.get_mut(key) {
                g.retain(|s| *s != seq);
                next = g.front().copied();
                if g.is_empty() {
                    self.groups.remove(key);
                }
            }
            let waiting_next = next.and_then(|n| {
                let m = self.msgs.get(&n)?;
                (m.state == St::Waiting).then_some((n, m.not_before))
            });
            if let Some((n, not_before)) = waiting_next {
                self.activate(n, not_before, now);
            }
        }
        Some(m)
    }

    /// Stores a new message under `seq`: behind its key's line if it has one, else ready
    /// (or scheduled) at `m.not_before`.
    fn push(&mut self, seq: u64, m: Stored, now: Instant) {
        let (key, not_before) = (m.key.clone(), m.not_before);
        self.msgs.insert(seq, m);
        self.waiting += 1;
        let head = match key {
            Some(k) => {
                let g = self.groups.entry(k).or_default();
                g.push_back(seq);
                g.len() == 1
            }
            None => true,
        };
        if head {
            self.activate(seq, not_before, now);
        }
    }
}

#[derive(Default)]
struct Broker {
    queues: Mutex<HashMap<String, QState>>,
    seq: std::sync::atomic::AtomicU64,
}

/// Configuration of a [`MemoryQueue`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Deduplication window.
    pub dedup_window: Duration,
    /// The backend profile this driver wears (`?like=`), if any: see the module docs.
    pub like: Option<Profile>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_message_size: 1024 * 1024,
            dedup_window: Duration::from_secs(300),
            like: None,
        }
    }
}

impl MemoryConfig {
    /// The configuration that wears `profile`: its message size and dedup window, and
    /// every refusal it declares.
    pub fn like(profile: Profile) -> Self {
        let caps = profile.capabilities();
        MemoryConfig {
            max_message_size: caps.max_message_size,
            dedup_window: caps.dedup_window.unwrap_or(Duration::from_secs(300)),
            like: Some(profile),
        }
    }
}

/// The in-memory driver (see the module docs for its mapping).
#[derive(Clone)]
pub struct MemoryQueue {
    broker: Arc<Broker>,
    config: MemoryConfig,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// A driver over a fresh private broker.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A driver over a fresh private broker with `config`.
    pub fn with_config(config: MemoryConfig) -> Self {
        MemoryQueue {
            broker: Arc::default(),
            config,
        }
    }

    /// A driver over the process-wide broker called `name` (created on first use).
    pub fn named(name: &str, config: MemoryConfig) -> Self {
        static BROKERS: OnceLock<Mutex<HashMap<String, Arc<Broker>>>> = OnceLock::new();
        let mut all = BROKERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let broker = all.entry(name.to_string()).or_default().clone();
        MemoryQueue { broker, config }
    }

    /// Back to the queue after `delay` (nack); `uncount` also gives the attempt back (the
    /// handler never ran).
    fn requeue(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Duration,
        uncount: bool,
    ) -> Result<()> {
        let now = Instant::now();
        self.with_queue(queue, |q| {
            let seq = q.leased_seq(receipt, now)?;
            if let Some(m) = q.msgs.get_mut(&seq) {
                m.generation += 1;
                if uncount {
                    m.attempt = m.attempt.saturating_sub(1);
                }
            }
            q.activate(seq, later(now, delay), now);
            q.notify.notify_waiters();
            Ok(())
        })
    }

    /// The in-memory driver's own capabilities, before any profile.
    fn own_capabilities(&self) -> Capabilities {
        own_capabilities(&self.config)
    }

    /// Leases up to `opts.max` ready messages of `queue` at `now`; returns them and when
    /// the next scheduled message or lease comes due.
    fn take(
        &self,
        queue: &str,
        opts: &ReceiveOptions,
        now: Instant,
    ) -> Result<(Vec<Delivery>, Option<Instant>)> {
        let mut qs = self.broker.queues.lock().unwrap_or_else(|p| p.into_inner());
        // Where the worn profile dead-letters natively (SQS's maxReceiveCount), a
        // message received that often already moves to the dead-letter queue instead
        // of being delivered again.
        let dlq = self.dead_letter_queue(queue);
        let native_limit = match self.capabilities() {
            c if c.native_dlq && qs.contains_key(&dlq) => c.max_receives,
            _ => None,
        };
        let mut moved = Vec::new();
        let (out, wake) = {
            let q = qs
                .get_mut(queue)
                .ok_or_else(|| QueueError::UnknownQueue(queue.to_string()))?;
            q.promote(now);
            let mut out = Vec::with_capacity(opts.max.min(q.ready.len()));
            while out.len() < opts.max {
                let Some(&(_, seq)) = q.ready.first() else {
                    break;
                };
                let received = q.msgs.get(&seq).map_or(0, |m| m.attempt);
                if native_limit.is_some_and(|limit| received >= limit) {
                    moved.extend(q.remove(seq, now));
                    continue;
                }
                q.set_state(seq, St::Leased(later(now, opts.lease)));
                let Some(m) = q.msgs.get_mut(&seq) else { break };
                m.attempt += 1;
                m.generation += 1;
                out.push(
                    Delivery::new(
                        queue,
                        m.id.clone(),
                        m.payload.clone(),
                        receipt(format!("{seq}.{}", m.generation)),
                    )
                    .with_headers(m.headers.clone())
                    .with_attempt(m.attempt)
                    .with_first_enqueued_at(m.enqueued)
                    .with_ordering_key(m.key.clone()),
                );
            }
            (out, q.next_wake())
        };
        if let Some(d) = qs.get_mut(&dlq).filter(|_| !moved.is_empty()) {
            for mut m in moved {
                let seq = self
                    .broker
                    .seq
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (m.key, m.attempt, m.generation, m.not_before) = (None, 0, 0, now);
                m.state = St::Waiting;
                d.push(seq, m, now);
            }
            d.notify.notify_waiters();
        }
        Ok((out, wake))
    }

    /// Where the worn profile has no purge (Kafka), `purge` and `delete_queue` are refused.
    fn check_purge(&self) -> Result<()> {
        if self.capabilities().purge {
            Ok(())
        } else {
            Err(QueueError::unsupported(
                self.kind(),
                "purge and delete_queue",
            ))
        }
    }

    fn with_queue<T>(&self, queue: &str, f: impl FnOnce(&mut QState) -> Result<T>) -> Result<T> {
        let mut qs = self.broker.queues.lock().unwrap_or_else(|p| p.into_inner());
        let q = qs
            .get_mut(queue)
            .ok_or_else(|| QueueError::UnknownQueue(queue.to_string()))?;
        f(q)
    }
}

/// What the in-memory driver declares with `config` and no profile (also
/// [`Profile::Memory`]'s capabilities).
pub(crate) fn own_capabilities(config: &MemoryConfig) -> Capabilities {
    Capabilities::baseline()
        .with_max_message_size(config.max_message_size)
        .with_purge(true)
        .with_max_batch(1000)
        .with_max_delay(Some(MAX_DELAY))
        .with_max_nack_delay(Some(MAX_DELAY))
        .with_ordering(Ordering::PerKey)
        .with_priority(true)
        .with_dedup_window(Some(config.dedup_window))
        .with_lease(LeaseModel::per_message(true))
        .with_exact_stats(true)
        .with_stale_receipts_refused(true)
        .with_give_back_keeps_attempt(true)
        .with_timer_granularity(Duration::from_millis(1))
        .with_peek(Peek::All)
        .with_max_key_len(None)
        .with_key_chars(KeyChars::Any)
}

/// Longest delay the in-memory driver accepts (and the longest nack delay).
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Opens `memory://[NAME][?like=PROFILE&max_message_size=SIZE&dedup_window=DURATION]`.
pub(crate) fn connector(url: url::Url) -> ConnectFuture {
    Box::pin(async move {
        let mut o = UrlOptions::new(&url);
        let mut config = match o.string("like")? {
            Some(name) => MemoryConfig::like(name.parse().map_err(|e: QueueError| {
                o.error(
                    e.to_string()
                        .trim_start_matches("invalid option: ")
                        .to_string(),
                )
            })?),
            None => MemoryConfig::default(),
        };
        if let Some(n) = o.size_within("max_message_size", 1, 1 << 30)? {
            config.max_message_size = n;
        }
        if let Some(d) = o.duration_within("dedup_window", Duration::from_millis(1), MAX_DELAY)? {
            config.dedup_window = d;
        }
        o.finish()?;
        if !matches!(url.path(), "" | "/") {
            return Err(QueueError::invalid_url(
                url.as_str(),
                "memory URLs name a broker as their host (memory://NAME) and take no path",
            ));
        }
        let q: Arc<dyn Driver> = match url.host_str() {
            Some(name) if !name.is_empty() => Arc::new(MemoryQueue::named(name, config)),
            _ => Arc::new(MemoryQueue::with_config(config)),
        };
        Ok(q)
    })
}

#[async_trait]
impl Driver for MemoryQueue {
    fn kind(&self) -> &'static str {
        match self.config.like {
            None | Some(Profile::Memory) => BACKEND,
            Some(Profile::Redis) => "memory (like redis)",
            Some(Profile::Sqs) => "memory (like sqs)",
            Some(Profile::SqsFifo) => "memory (like sqs-fifo)",
            Some(Profile::Kafka) => "memory (like kafka)",
            Some(Profile::Postgres) => "memory (like postgres)",
        }
    }

    fn capabilities(&self) -> Capabilities {
        let own = self.own_capabilities();
        match self.config.like {
            None => own,
            Some(p) => {
                let worn = p.apply(&own);
                let window = worn.dedup_window.map(|_| self.config.dedup_window);
                worn.with_max_message_size(self.config.max_message_size)
                    .with_dedup_window(window)
            }
        }
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        let mut qs = self.broker.queues.lock().unwrap_or_else(|p| p.into_inner());
        qs.entry(queue.to_string()).or_default();
        qs.entry(self.dead_letter_queue(queue)).or_default();
        Ok(())
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.check_purge()?;
        let mut qs = self.broker.queues.lock().unwrap_or_else(|p| p.into_inner());
        for name in [queue.to_string(), self.dead_letter_queue(queue)] {
            if let Some(q) = qs.remove(&name) {
                // Wake long polls so they see the queue is gone.
                q.notify.notify_waiters();
            }
        }
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        self.check_purge()?;
        self.with_queue(queue, |q| {
            let notify = q.notify.clone();
            let dedup = std::mem::take(&mut q.dedup);
            *q = QState {
                dedup,
                notify,
                ..QState::default()
            };
            Ok(())
        })
    }

    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        let now = Instant::now();
        let window = self.config.dedup_window;
        let broker = &self.broker;
        self.with_queue(queue, |q| {
            q.dedup.retain(|_, (until, _)| *until > now);
            let mut ids = Vec::with_capacity(batch.len());
            for m in batch {
                if let Some(d) = &m.dedup_id {
                    if let Some((_, id)) = q.dedup.get(d) {
                        ids.push(id.clone());
                        continue;
                    }
                    q.dedup
                        .insert(d.clone(), (later(now, window), m.id.clone()));
                }
                let seq = broker
                    .seq
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let not_before = later(now, m.delay.unwrap_or_default());
                let enqueued = first_enqueued(&m.headers, SystemTime::now());
                ids.push(m.id.clone());
                let stored = Stored {
                    id: m.id,
                    payload: m.payload,
                    headers: m.headers,
                    key: m.ordering_key,
                    priority: m.priority.unwrap_or(0),
                    enqueued,
                    not_before,
                    attempt: 0,
                    generation: 0,
                    state: St::Waiting,
                };
                q.push(seq, stored, now);
            }
            q.notify.notify_waiters();
            Ok(ids)
        })
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        let deadline = later(Instant::now(), opts.wait);
        loop {
            let notify = self.with_queue(queue, |q| Ok(q.notify.clone()))?;
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (out, wake) = self.take(queue, &opts, now)?;
            if !out.is_empty() || now >= deadline || opts.cancel.is_cancelled() {
                return Ok(out);
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = tokio::time::timeout_at(until, notified) => {}
                _ = opts.cancel.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>> {
        if !self.capabilities().can_peek(queue.ends_with("-dlq")) {
            return Err(QueueError::unsupported(
                self.kind(),
                "peek (reading a message without leasing it)",
            ));
        }
        let now = Instant::now();
        self.with_queue(queue, |q| {
            q.promote(now);
            Ok(q.ready
                .iter()
                .take(max)
                .filter_map(|(_, seq)| q.msgs.get(seq))
                .map(|m| {
                    Peeked::new(m.id.clone(), m.payload.clone())
                        .with_headers(m.headers.clone())
                        .with_deliveries(m.attempt)
                        .with_first_enqueued_at(m.enqueued)
                        .with_ordering_key(m.key.clone())
                })
                .collect())
        })
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        let now = Instant::now();
        self.with_queue(queue, |q| {
            let mut failed = Vec::new();
            for (i, r) in receipts.iter().enumerate() {
                match q.leased_seq(r, now) {
                    Ok(seq) => {
                        q.remove(seq, now);
                    }
                    Err(e) => failed.push((i, e)),
                }
            }
            q.notify.notify_waiters();
            if receipts.len() == 1 {
                return failed.pop().map_or(Ok(()), |(_, e)| Err(e));
            }
            match failed.len() {
                0 => Ok(()),
                _ => Err(QueueError::PartialBatch {
                    failed: failed
                        .into_iter()
                        .map(|(i, e)| (i, e.to_string()))
                        .collect(),
                }),
            }
        })
    }

    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.requeue(queue, receipt, delay, false)
    }

    async fn give_back(&self, d: &Delivery, delay: Duration) -> Result<()> {
        let keep = self.capabilities().give_back_keeps_attempt;
        self.requeue(&d.queue, &d.receipt, delay, keep)
    }

    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<()> {
        let now = Instant::now();
        self.with_queue(queue, |q| {
            let seq = q.leased_seq(receipt, now)?;
            q.set_state(seq, St::Leased(later(now, lease)));
            Ok(())
        })
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let now = Instant::now();
        let dlq = self.dead_letter_queue(queue);
        let dead = self
            .with_queue(&dlq, |q| Ok(q.msgs.len() as u64))
            .unwrap_or(0);
        self.with_queue(queue, |q| {
            q.promote(now);
            Ok(QueueStats::new(
                (q.ready.len() + q.waiting) as u64,
                q.leased.len() as u64,
                q.scheduled.len() as u64,
                dead,
            ))
        })
    }
}
