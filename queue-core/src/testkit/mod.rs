//! The driver conformance suite (feature `testkit`).
//!
//! Every driver, the in-memory one included, runs these cases against a real backend; a
//! driver written outside this workspace runs them the same way. Each case is a plain async
//! function taking a [`Harness`] and panicking with a message that names what broke. The
//! [`conformance_suite!`](crate::conformance_suite) macro turns them into one named
//! `#[tokio::test]` each:
//!
//! ```text
//! fn harness() -> queue_core::testkit::Harness {
//!     queue_core::testkit::Harness::new(|| async { my_driver_connect().await })
//! }
//! queue_core::conformance_suite!(harness);
//! ```
//!
//! Cases read the driver's [`Capabilities`] to decide what to check: a declared capability
//! is exercised, an undeclared one must be refused with a typed error. Times scale with
//! [`Harness::unit`] (by default the larger of 100 ms and the backend's timer granularity),
//! so the same case runs in milliseconds in memory and in seconds on SQS.
//!
//! Every case works on fresh, uniquely named queues, so cases may run in parallel against
//! one server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::idempotency::{IdempotencyStore, MemoryIdempotency};
use crate::{
    headers, Backoff, Capabilities, Delivery, Job, JobContext, JobError, LeaseModel, Message,
    Ordering, Producer, Queue, QueueError, QueueStats, ReceiveOptions, RetryPolicy, SendOptions,
    Worker, WorkerHandle,
};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Factory = Arc<dyn Fn() -> BoxFut<Arc<dyn Queue>> + Send + Sync>;
type StoreFactory = Arc<dyn Fn() -> BoxFut<Arc<dyn IdempotencyStore>> + Send + Sync>;

/// The names of every case, in the order [`run_all`] runs them.
pub const CASES: &[&str] = &[
    "round_trip",
    "batch_round_trip",
    "ack_removes",
    "nack_redelivers_after_delay",
    "lease_expiry_redelivers",
    "extend_keeps_hidden",
    "competing_consumers_exclusive",
    "delayed_send_not_early",
    "dlq_after_max_attempts",
    "permanent_error_skips_retries",
    "redrive_returns_messages",
    "ordering_per_key",
    "ordering_refused",
    "dedup_within_window",
    "oversize_refused",
    "malformed_payload_dead_lettered",
    "stats_agree",
    "graceful_shutdown_loses_nothing",
    "crash_mid_job_loses_nothing",
    "idempotent_effects",
    "drain_10k",
    "empty_receive_waits",
    "backend_errors_typed",
];

/// How the suite reaches a driver.
#[derive(Clone)]
pub struct Harness {
    factory: Factory,
    store: StoreFactory,
    unit: Option<Duration>,
    drain_count: usize,
    suffix: String,
    bad_urls: Vec<String>,
}

impl Harness {
    /// A harness whose `factory` opens a new driver instance on each call. Instances must
    /// share the backend (the same server, or the same named in-memory broker): the suite
    /// uses several of them as competing consumers and drops one to simulate a crash.
    pub fn new<F, Fut>(factory: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn Queue>> + Send + 'static,
    {
        Harness {
            factory: Arc::new(move || Box::pin(factory())),
            store: Arc::new(|| Box::pin(async { Arc::new(MemoryIdempotency::new()) as _ })),
            unit: None,
            drain_count: 10_000,
            suffix: String::new(),
            bad_urls: Vec::new(),
        }
    }

    /// The base time step (leases are 2–3 units, delays 3 units, waits up to 30 units).
    pub fn unit(mut self, unit: Duration) -> Self {
        self.unit = Some(unit);
        self
    }

    /// How many messages `drain_10k` moves (default 10,000).
    pub fn drain_count(mut self, n: usize) -> Self {
        self.drain_count = n;
        self
    }

    /// A suffix for every queue name the suite creates (SQS FIFO queues need `.fifo`).
    pub fn queue_suffix(mut self, suffix: &str) -> Self {
        self.suffix = suffix.to_string();
        self
    }

    /// An idempotency store for `idempotent_effects` (default: [`MemoryIdempotency`]).
    pub fn idempotency_store<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn IdempotencyStore>> + Send + 'static,
    {
        self.store = Arc::new(move || Box::pin(f()));
        self
    }

    /// A URL that must fail with a typed error on connect or on first use (an unreachable
    /// port, wrong credentials). `backend_errors_typed` tries each.
    pub fn bad_url(mut self, url: &str) -> Self {
        self.bad_urls.push(url.to_string());
        self
    }

    async fn driver(&self) -> Arc<dyn Queue> {
        (self.factory)().await
    }

    fn unit_for(&self, caps: &Capabilities) -> Duration {
        self.unit
            .unwrap_or_else(|| caps.timer_granularity.max(Duration::from_millis(100)))
    }

    /// A driver instance, a fresh queue (created), the capabilities and the time unit.
    async fn fresh(&self, case: &str) -> Ctx {
        let q = self.driver().await;
        let name = format!(
            "ct-{}-{:08x}{}",
            case.replace('_', "-"),
            fastrand::u32(..),
            self.suffix
        );
        q.create_queue(&name)
            .await
            .unwrap_or_else(|e| panic!("create_queue({name}) failed: {e}"));
        let caps = q.capabilities();
        let unit = self.unit_for(&caps);
        Ctx {
            q,
            name,
            caps,
            unit,
        }
    }
}

struct Ctx {
    q: Arc<dyn Queue>,
    name: String,
    caps: Capabilities,
    unit: Duration,
}

impl Ctx {
    fn producer(&self) -> Producer {
        Producer::new(self.q.clone(), self.name.clone())
    }
    fn opts(&self, max: usize, wait: Duration, lease: Duration) -> ReceiveOptions {
        ReceiveOptions {
            max: max.min(self.caps.max_batch),
            wait,
            lease,
        }
    }
    fn per_message_lease(&self) -> bool {
        matches!(self.caps.lease, LeaseModel::PerMessage { .. })
    }
    /// Sends `n` raw messages with payloads "m{i}" and returns their ids.
    async fn send_n(&self, n: usize) -> Vec<String> {
        let msgs: Vec<Message> = (0..n).map(|i| Message::new(format!("m{i}"))).collect();
        let ids = self.producer().send_batch(msgs).await.expect("send_batch");
        ids.into_iter().map(|i| i.0).collect()
    }
    /// Receives from `q` until `n` deliveries arrived or `within` passed.
    async fn collect(
        &self,
        q: &Arc<dyn Queue>,
        n: usize,
        within: Duration,
        lease: Duration,
    ) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.min(self.unit * 5);
            let got = q
                .receive(&self.name, self.opts(n - out.len(), wait, lease))
                .await
                .expect("receive");
            out.extend(got);
        }
        out
    }
    async fn stats_eventually(&self, want: QueueStats) {
        let deadline = tokio::time::Instant::now() + self.unit * 30 + Duration::from_secs(5);
        loop {
            let got = self.q.stats(&self.name).await.expect("stats");
            if got == want {
                return;
            }
            if self.caps.exact_stats || tokio::time::Instant::now() > deadline {
                panic!("stats: want {want:?}, got {got:?}");
            }
            tokio::time::sleep(self.unit / 2).await;
        }
    }
}

/// Waits until `cond` holds, checking every few milliseconds; panics with `what` after
/// `within`.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A job the suite sends through the worker.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Probe {
    /// Sequence number.
    pub n: u64,
    /// Grouping key used by ordering cases.
    pub key: String,
}

impl Job for Probe {
    const NAME: &'static str = "conformance_probe";
}

fn probe(n: u64) -> Probe {
    Probe {
        n,
        key: String::new(),
    }
}

fn worker(c: &Ctx, q: Arc<dyn Queue>) -> Worker {
    Worker::new(q, c.name.clone())
        .lease(c.unit * 20)
        .poll_wait(c.unit * 2)
        .shutdown_grace(c.unit * 10)
        .retry(RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Fixed(c.unit / 2),
        })
}

async fn dlq_contents(c: &Ctx, n: usize) -> Vec<Delivery> {
    let dlq = c.q.dead_letter_queue(&c.name);
    let deadline = tokio::time::Instant::now() + c.unit * 20 + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        let got =
            c.q.receive(&dlq, c.opts(n - out.len(), c.unit * 2, c.unit * 50))
                .await
                .expect("receive from DLQ");
        out.extend(got);
    }
    assert_eq!(out.len(), n, "dead-letter queue should hold {n} message(s)");
    out
}

fn within(c: &Ctx) -> Duration {
    c.unit * 40 + Duration::from_secs(10)
}

/// Payload and headers arrive intact, with attempt 1, the sent id and a sane enqueue time.
pub async fn round_trip(h: &Harness) {
    let c = h.fresh("round_trip").await;
    let before = SystemTime::now() - Duration::from_secs(2);
    let payload: Vec<u8> = (0..=255u8).collect();
    let m = Message::new(payload.clone())
        .header("trace-id", "abc-123")
        .header("unicode", "héllo wörld ✓");
    let id = c.producer().send(m).await.expect("send");
    let got = c.collect(&c.q, 1, within(&c), c.unit * 20).await;
    assert_eq!(got.len(), 1, "message not received");
    let d = &got[0];
    assert_eq!(d.id, id, "id changed in transit");
    assert_eq!(d.payload, payload, "payload changed in transit");
    assert_eq!(
        d.headers.get("trace-id").map(|s| s.as_str()),
        Some("abc-123")
    );
    assert_eq!(
        d.headers.get("unicode").map(|s| s.as_str()),
        Some("héllo wörld ✓")
    );
    assert_eq!(d.attempt, 1, "first delivery must be attempt 1");
    assert_eq!(d.queue, c.name);
    let after = SystemTime::now() + Duration::from_secs(2);
    assert!(
        d.first_enqueued_at >= before && d.first_enqueued_at <= after,
        "first_enqueued_at {:?} not near now",
        d.first_enqueued_at
    );
    c.q.ack(&c.name, std::slice::from_ref(&d.receipt))
        .await
        .expect("ack");
}

/// A batch larger than the driver's max batch is chunked and all of it arrives.
pub async fn batch_round_trip(h: &Harness) {
    let c = h.fresh("batch_round_trip").await;
    let n = (c.caps.max_batch * 2 + 3).min(250);
    let ids: HashSet<String> = c.send_n(n).await.into_iter().collect();
    assert_eq!(ids.len(), n, "ids must be distinct");
    let got = c.collect(&c.q, n, within(&c), c.unit * 50).await;
    let got_ids: HashSet<String> = got.iter().map(|d| d.id.0.clone()).collect();
    assert_eq!(got_ids, ids, "batch did not arrive whole");
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    for chunk in receipts.chunks(c.caps.max_batch) {
        c.q.ack(&c.name, chunk).await.expect("batch ack");
    }
}

/// An acked message is not delivered again, even after its lease would have ended.
pub async fn ack_removes(h: &Harness) {
    let c = h.fresh("ack_removes").await;
    c.send_n(1).await;
    let lease = c.unit * 3;
    let got = c.collect(&c.q, 1, within(&c), lease).await;
    assert_eq!(got.len(), 1);
    c.q.ack(&c.name, &[got[0].receipt.clone()])
        .await
        .expect("ack");
    // A new instance (a fresh consumer) must not see it either.
    let other = h.driver().await;
    let again = other
        .receive(&c.name, c.opts(1, lease * 2, lease))
        .await
        .expect("receive");
    assert!(again.is_empty(), "acked message was delivered again");
    if c.caps.exact_stats {
        c.stats_eventually(QueueStats::default()).await;
    }
}

/// A nacked message comes back after its delay, not before, with attempt + 1.
pub async fn nack_redelivers_after_delay(h: &Harness) {
    let c = h.fresh("nack_redelivers_after_delay").await;
    c.send_n(1).await;
    let got = c.collect(&c.q, 1, within(&c), c.unit * 20).await;
    assert_eq!(got.len(), 1);
    let delay = if c.caps.max_nack_delay.is_some() {
        c.unit * 3
    } else {
        Duration::ZERO
    };
    let t0 = tokio::time::Instant::now();
    c.q.nack(&c.name, &got[0].receipt, delay)
        .await
        .expect("nack");
    if !delay.is_zero() {
        let early =
            c.q.receive(&c.name, c.opts(1, c.unit, c.unit * 20))
                .await
                .expect("receive");
        assert!(
            early.is_empty(),
            "nacked message came back before its delay"
        );
    }
    let back = c.collect(&c.q, 1, within(&c), c.unit * 20).await;
    assert_eq!(back.len(), 1, "nacked message never came back");
    assert!(
        t0.elapsed() + c.caps.timer_granularity >= delay,
        "came back after {:?}, delay was {delay:?}",
        t0.elapsed()
    );
    assert_eq!(back[0].id, got[0].id);
    assert_eq!(back[0].attempt, 2, "redelivery must be attempt 2");
    c.q.ack(&c.name, &[back[0].receipt.clone()])
        .await
        .expect("ack");
}

/// An unsettled delivery comes back after its lease (per-message leases), or after its
/// consumer leaves (session leases).
pub async fn lease_expiry_redelivers(h: &Harness) {
    let c = h.fresh("lease_expiry_redelivers").await;
    c.send_n(1).await;
    let lease = c.unit * 3;
    if c.per_message_lease() {
        let got = c.collect(&c.q, 1, within(&c), lease).await;
        assert_eq!(got.len(), 1);
        let t0 = tokio::time::Instant::now();
        let hidden =
            c.q.receive(&c.name, c.opts(1, c.unit, lease))
                .await
                .expect("receive");
        assert!(
            hidden.is_empty(),
            "leased message visible before its lease ended"
        );
        let back = c.collect(&c.q, 1, within(&c), lease).await;
        assert_eq!(back.len(), 1, "message never came back after its lease");
        assert!(t0.elapsed() + c.caps.timer_granularity * 2 >= lease - c.unit);
        assert_eq!(back[0].id, got[0].id);
        assert_eq!(
            back[0].attempt, 2,
            "redelivery after lease must be attempt 2"
        );
        c.q.ack(&c.name, &[back[0].receipt.clone()])
            .await
            .expect("ack");
    } else {
        let first = h.driver().await;
        let got = c.collect(&first, 1, within(&c), lease).await;
        assert_eq!(got.len(), 1);
        drop(first); // the consumer dies without acking
        let second = h.driver().await;
        let back = c.collect(&second, 1, within(&c) * 2, lease).await;
        assert_eq!(
            back.len(),
            1,
            "message not redelivered after its consumer left"
        );
        assert_eq!(back[0].id, got[0].id);
        second
            .ack(&c.name, &[back[0].receipt.clone()])
            .await
            .expect("ack");
    }
}

/// An extended lease keeps the message hidden past the original lease; a backend that
/// cannot extend refuses with a typed error.
pub async fn extend_keeps_hidden(h: &Harness) {
    let c = h.fresh("extend_keeps_hidden").await;
    c.send_n(1).await;
    // Long enough that the extend below lands inside it even on a loaded server.
    let lease = c.unit * 5;
    let got = c.collect(&c.q, 1, within(&c), lease).await;
    assert_eq!(got.len(), 1);
    let r = c.q.extend(&c.name, &got[0].receipt, c.unit * 20).await;
    match c.caps.lease {
        LeaseModel::PerMessage { extend: false } => {
            assert!(
                matches!(r, Err(QueueError::Unsupported { .. })),
                "extend not declared, must be Unsupported: {r:?}"
            );
            return;
        }
        _ => r.expect("extend"),
    }
    if c.per_message_lease() {
        let other = h.driver().await;
        let seen = other
            .receive(&c.name, c.opts(1, lease * 2, lease))
            .await
            .expect("receive");
        assert!(
            seen.is_empty(),
            "extended message was delivered to another consumer"
        );
    } else {
        // Session leases: no other member joins (joining would rebalance the partition
        // away); past the would-be lease the delivery is still ours to ack.
        tokio::time::sleep(lease * 2).await;
        c.q.extend(&c.name, &got[0].receipt, c.unit * 12)
            .await
            .expect("extend again");
    }
    c.q.ack(&c.name, &[got[0].receipt.clone()])
        .await
        .expect("ack after extended lease");
}

/// Several consumers never hold the same message at the same time, and all are delivered.
pub async fn competing_consumers_exclusive(h: &Harness) {
    let c = h.fresh("competing_consumers_exclusive").await;
    let n = 60;
    let ids: HashSet<String> = c.send_n(n).await.into_iter().collect();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let q = h.driver().await;
        let seen = seen.clone();
        let name = c.name.clone();
        let opts = c.opts(5, c.unit * 2, c.unit * 100);
        let deadline = tokio::time::Instant::now() + within(&c);
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                if seen.lock().unwrap().len() >= n {
                    break;
                }
                let got = q.receive(&name, opts).await.expect("receive");
                let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
                seen.lock().unwrap().extend(got.into_iter().map(|d| d.id.0));
                if !receipts.is_empty() {
                    q.ack(&name, &receipts).await.expect("ack");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("consumer task");
    }
    let seen = seen.lock().unwrap().clone();
    let distinct: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(distinct, ids, "not every message was delivered");
    assert_eq!(
        seen.len(),
        n,
        "some message was held by two consumers at once"
    );
}

/// A delayed message is not delivered before its time (or delays are refused).
pub async fn delayed_send_not_early(h: &Harness) {
    let c = h.fresh("delayed_send_not_early").await;
    let delay = c.unit * 4;
    let m = Message::new("later").delay(delay);
    if c.caps.max_delay.is_none() {
        let r = c.producer().send(m).await;
        assert!(matches!(r, Err(QueueError::Unsupported { .. })), "{r:?}");
        return;
    }
    let t0 = tokio::time::Instant::now();
    c.producer().send(m).await.expect("send delayed");
    let early =
        c.q.receive(&c.name, c.opts(1, c.unit * 2, c.unit * 20))
            .await
            .expect("receive");
    assert!(early.is_empty(), "delayed message delivered early");
    let got = c.collect(&c.q, 1, within(&c), c.unit * 20).await;
    assert_eq!(got.len(), 1, "delayed message never delivered");
    assert!(
        t0.elapsed() + c.caps.timer_granularity >= delay,
        "delivered after {:?}, delay {delay:?}",
        t0.elapsed()
    );
    assert_eq!(got[0].attempt, 1);
    c.q.ack(&c.name, &[got[0].receipt.clone()])
        .await
        .expect("ack");
}

/// After the last attempt the job is in the DLQ with reason headers.
pub async fn dlq_after_max_attempts(h: &Harness) {
    let c = h.fresh("dlq_after_max_attempts").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let w = worker(&c, c.q.clone())
        .handle(move |_: Probe, _ctx| {
            calls2.fetch_add(1, AO::SeqCst);
            async { Err(JobError::retry("always fails")) }
        })
        .start();
    let id = c.producer().enqueue(&probe(1)).await.expect("enqueue");
    eventually(within(&c), "job dead-lettered", || {
        w.report().dead_lettered == 1
    })
    .await;
    let report = w.shutdown().await;
    assert_eq!(
        calls.load(AO::SeqCst),
        3,
        "handler must run max_attempts times"
    );
    assert_eq!(report.retried, 2);
    let dead = dlq_contents(&c, 1).await;
    let d = &dead[0];
    assert_eq!(d.id, id, "dead letter keeps the message id");
    assert_eq!(
        d.headers.get(headers::DLQ_REASON).map(String::as_str),
        Some("max-attempts")
    );
    assert_eq!(
        d.headers.get(headers::DLQ_ATTEMPTS).map(String::as_str),
        Some("3")
    );
    assert_eq!(d.headers.get(headers::DLQ_SOURCE), Some(&c.name));
    assert!(d.headers[headers::DLQ_ERROR].contains("always fails"));
    assert!(d.headers.contains_key(headers::DLQ_AT));
    if c.caps.exact_stats {
        c.stats_eventually(QueueStats {
            dead: 1,
            ..Default::default()
        })
        .await;
    }
}

/// A permanent failure goes to the DLQ on attempt 1.
pub async fn permanent_error_skips_retries(h: &Harness) {
    let c = h.fresh("permanent_error_skips_retries").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let w = worker(&c, c.q.clone())
        .handle(move |_: Probe, _ctx| {
            calls2.fetch_add(1, AO::SeqCst);
            async { Err(JobError::permanent("bad input")) }
        })
        .start();
    c.producer().enqueue(&probe(1)).await.expect("enqueue");
    eventually(within(&c), "job dead-lettered", || {
        w.report().dead_lettered == 1
    })
    .await;
    let report = w.shutdown().await;
    assert_eq!(
        calls.load(AO::SeqCst),
        1,
        "a permanent error must not be retried"
    );
    assert_eq!(report.retried, 0);
    let dead = dlq_contents(&c, 1).await;
    assert_eq!(
        dead[0].headers.get(headers::DLQ_REASON).map(String::as_str),
        Some("permanent")
    );
    assert_eq!(
        dead[0]
            .headers
            .get(headers::DLQ_ATTEMPTS)
            .map(String::as_str),
        Some("1")
    );
}

/// Redrive moves dead letters back; they are processed, without the dead-letter headers.
pub async fn redrive_returns_messages(h: &Harness) {
    let c = h.fresh("redrive_returns_messages").await;
    let fail = Arc::new(AtomicBool::new(true));
    let clean = Arc::new(AtomicUsize::new(0));
    let (f2, c2) = (fail.clone(), clean.clone());
    let w = worker(&c, c.q.clone())
        .handle(move |_: Probe, ctx: JobContext| {
            let fail = f2.load(AO::SeqCst);
            if !fail && !ctx.headers.contains_key(headers::DLQ_REASON) && ctx.attempt == 1 {
                c2.fetch_add(1, AO::SeqCst);
            }
            async move {
                if fail {
                    Err(JobError::permanent("not yet"))
                } else {
                    Ok(())
                }
            }
        })
        .start();
    for i in 0..3 {
        c.producer().enqueue(&probe(i)).await.expect("enqueue");
    }
    eventually(within(&c), "3 dead letters", || {
        w.report().dead_lettered == 3
    })
    .await;
    fail.store(false, AO::SeqCst);
    let moved = c.q.redrive(&c.name, 10).await.expect("redrive");
    assert_eq!(moved, 3, "redrive should move all 3");
    eventually(within(&c), "redriven jobs processed", || {
        w.report().succeeded == 3
    })
    .await;
    w.shutdown().await;
    assert_eq!(
        clean.load(AO::SeqCst),
        3,
        "redriven messages must be fresh (attempt 1, no DLQ headers)"
    );
    if c.caps.exact_stats {
        c.stats_eventually(QueueStats::default()).await;
    }
}

/// Where declared, per-key order holds through the worker with several consumers; where
/// not, an ordering key is refused.
pub async fn ordering_per_key(h: &Harness) {
    let c = h.fresh("ordering_per_key").await;
    if c.caps.ordering == Ordering::None {
        let r = c.producer().send(Message::new("x").ordering_key("k")).await;
        assert!(matches!(r, Err(QueueError::Unsupported { .. })), "{r:?}");
        return;
    }
    let keys = ["alpha", "beta", "gamma"];
    let per_key = 15u64;
    let mut msgs = Vec::new();
    for n in 0..per_key {
        for k in keys {
            let job = Probe { n, key: k.into() };
            let opts = SendOptions {
                ordering_key: Some(k.into()),
                ..Default::default()
            };
            msgs.push(crate::job_message(&job, opts).expect("job message"));
        }
    }
    let total = msgs.len();
    c.producer().send_batch(msgs).await.expect("send");
    let log = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let log = log.clone();
        let q = h.driver().await;
        workers.push(
            worker(&c, q)
                .concurrency(4)
                .handle(move |p: Probe, _ctx| {
                    let log = log.clone();
                    async move {
                        log.lock().unwrap().push((p.key.clone(), p.n));
                        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5))).await;
                        Ok(())
                    }
                })
                .start(),
        );
    }
    eventually(within(&c) * 2, "all ordered jobs processed", || {
        let log = log.lock().unwrap();
        log.iter().collect::<HashSet<_>>().len() >= total
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let log = log.lock().unwrap();
    // Duplicates are allowed (at-least-once: an ack lost under load redelivers), order
    // and completeness are not negotiable.
    for k in keys {
        key_order(&log, k, per_key);
    }
}

/// Checks the start order of one key's messages `0..per_key` in `log` (key, sequence
/// number) and returns that key's sequence. At-least-once: a redelivery (after a
/// rebalance) may replay messages already seen, but a message never starts before every
/// earlier one of its key has started, and none is missing.
pub fn key_order(log: &[(String, u64)], key: &str, per_key: u64) -> Vec<u64> {
    let seq: Vec<u64> = log.iter().filter(|(k, _)| k == key).map(|x| x.1).collect();
    let mut next = 0;
    for n in &seq {
        assert!(*n <= next, "key {key} processed out of order: {seq:?}");
        if *n == next {
            next += 1;
        }
    }
    assert_eq!(next, per_key, "key {key} incomplete: {seq:?}");
    seq
}

/// Every option the backend does not declare is refused with a typed error, and a batch
/// with one refused message sends nothing.
pub async fn ordering_refused(h: &Harness) {
    let c = h.fresh("ordering_refused").await;
    let p = c.producer();
    let unsupported = |r: crate::Result<_>| matches!(r, Err(QueueError::Unsupported { .. }));
    if c.caps.ordering == Ordering::None {
        assert!(unsupported(
            p.send(Message::new("x").ordering_key("k")).await
        ));
    }
    if !c.caps.priority {
        assert!(unsupported(p.send(Message::new("x").priority(9)).await));
    }
    if c.caps.dedup_window.is_none() {
        assert!(unsupported(p.send(Message::new("x").dedup_id("d")).await));
    }
    if c.caps.max_delay.is_none() {
        assert!(unsupported(p.send(Message::new("x").delay(c.unit)).await));
    } else if let Some(max) = c.caps.max_delay {
        let too_long = max + Duration::from_secs(1);
        assert!(unsupported(p.send(Message::new("x").delay(too_long)).await));
    }
    let big = vec![b'x'; c.caps.max_message_size + 1];
    let r = p
        .send_batch(vec![Message::new("ok"), Message::new(big)])
        .await;
    assert!(matches!(r, Err(QueueError::Oversize { .. })), "{r:?}");
    let none =
        c.q.receive(&c.name, c.opts(10, c.unit * 2, c.unit * 10))
            .await
            .expect("receive");
    assert!(none.is_empty(), "a refused batch must send nothing");
}

/// Where declared, a duplicate dedup id inside the window is delivered once.
pub async fn dedup_within_window(h: &Harness) {
    let c = h.fresh("dedup_within_window").await;
    let p = c.producer();
    if c.caps.dedup_window.is_none() {
        let r = p.send(Message::new("x").dedup_id("d")).await;
        assert!(matches!(r, Err(QueueError::Unsupported { .. })), "{r:?}");
        return;
    }
    p.send(Message::new("first").dedup_id("order-42"))
        .await
        .expect("send");
    p.send(Message::new("second").dedup_id("order-42"))
        .await
        .expect("duplicate send is Ok");
    p.send(Message::new("other").dedup_id("order-43"))
        .await
        .expect("send");
    let got = c.collect(&c.q, 3, c.unit * 10, c.unit * 50).await;
    let payloads: Vec<&[u8]> = got.iter().map(|d| d.payload.as_slice()).collect();
    assert_eq!(got.len(), 2, "duplicate delivered: {payloads:?}");
    assert!(payloads.contains(&&b"first"[..]) && payloads.contains(&&b"other"[..]));
}

/// A message over the limit is a typed error before any network call; one at the limit
/// goes through intact.
pub async fn oversize_refused(h: &Harness) {
    let c = h.fresh("oversize_refused").await;
    let max = c.caps.max_message_size;
    let r = c.producer().send(Message::new(vec![7u8; max + 1])).await;
    match r {
        Err(QueueError::Oversize { size, max: m, .. }) => {
            assert_eq!(size, max + 1);
            assert_eq!(m, max);
        }
        other => panic!("oversize message: want Oversize, got {other:?}"),
    }
    let at_limit = Message::new(vec![7u8; max - 10]).header("h", "1234567");
    assert_eq!(at_limit.encoded_size(), max - 2);
    c.producer()
        .send(at_limit)
        .await
        .expect("a message under the declared limit must be accepted");
    let got = c.collect(&c.q, 1, within(&c), c.unit * 50).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.len(), max - 10);
    c.q.ack(&c.name, &[got[0].receipt.clone()])
        .await
        .expect("ack");
}

/// Garbage bytes, unknown job names and malformed data go to the DLQ with the reason;
/// valid jobs around them are processed.
pub async fn malformed_payload_dead_lettered(h: &Harness) {
    let c = h.fresh("malformed_payload_dead_lettered").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let w = worker(&c, c.q.clone())
        .handle(move |_: Probe, _ctx| {
            calls2.fetch_add(1, AO::SeqCst);
            async { Ok(()) }
        })
        .start();
    let p = c.producer();
    p.send(Message::new(vec![0xff, 0x00, 0xfe]))
        .await
        .expect("send garbage");
    p.send(Message::new(r#"{"job":"no_such_job","v":1,"data":{}}"#))
        .await
        .expect("send");
    p.send(Message::new(
        r#"{"job":"conformance_probe","v":1,"data":{"n":"NaN"}}"#,
    ))
    .await
    .expect("send");
    p.send(Message::new(
        r#"{"job":"conformance_probe","v":99,"data":{"n":1,"key":""}}"#,
    ))
    .await
    .expect("send");
    p.enqueue(&probe(7)).await.expect("enqueue");
    eventually(within(&c), "4 dead letters and 1 success", || {
        let r = w.report();
        r.dead_lettered == 4 && r.succeeded == 1
    })
    .await;
    let report = w.shutdown().await;
    assert_eq!(report.retried, 0, "malformed messages must not be retried");
    assert_eq!(calls.load(AO::SeqCst), 1);
    let dead = dlq_contents(&c, 4).await;
    let mut errors = Vec::new();
    for d in &dead {
        assert_eq!(
            d.headers.get(headers::DLQ_REASON).map(String::as_str),
            Some("malformed")
        );
        errors.push(d.headers[headers::DLQ_ERROR].clone());
    }
    let all = errors.join(" | ");
    assert!(all.contains("not a job envelope"), "{all}");
    assert!(all.contains("no handler for job \"no_such_job\""), "{all}");
    assert!(all.contains("malformed data"), "{all}");
    assert!(all.contains("version 99"), "{all}");
}

/// Ready / in-flight / delayed / dead counts match what the test did.
pub async fn stats_agree(h: &Harness) {
    let c = h.fresh("stats_agree").await;
    c.stats_eventually(QueueStats::default()).await;
    c.send_n(3).await;
    let delayed = if c.caps.max_delay.is_some() {
        let far = c.unit * 100;
        c.producer()
            .send_batch(vec![
                Message::new("d1").delay(far),
                Message::new("d2").delay(far),
            ])
            .await
            .expect("send delayed");
        2
    } else {
        0
    };
    let got = c.collect(&c.q, 2, within(&c), c.unit * 100).await;
    assert_eq!(got.len(), 2);
    let reason = crate::DeadLetterReason {
        kind: "permanent",
        error: "test".into(),
        attempts: 1,
    };
    c.q.dead_letter(&got[0], &reason)
        .await
        .expect("dead_letter");
    c.stats_eventually(QueueStats {
        ready: 1,
        in_flight: 1,
        delayed,
        dead: 1,
    })
    .await;
}

/// Shutdown mid-stream: in-flight jobs finish or go back at once; nothing is lost.
pub async fn graceful_shutdown_loses_nothing(h: &Harness) {
    let c = h.fresh("graceful_shutdown_loses_nothing").await;
    let n = 30u64;
    for i in 0..n {
        c.producer().enqueue(&probe(i)).await.expect("enqueue");
    }
    let done = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let slow = c.unit * 2;
    let make = |q: Arc<dyn Queue>, grace: Duration| {
        let done = done.clone();
        let started = started.clone();
        worker(&c, q)
            .concurrency(4)
            .lease(c.unit * 200) // a message not returned would be stuck far past the test
            .shutdown_grace(grace)
            .handle(move |p: Probe, _ctx| {
                let done = done.clone();
                started.fetch_add(1, AO::SeqCst);
                async move {
                    tokio::time::sleep(slow).await;
                    done.lock().unwrap().insert(p.n);
                    Ok(())
                }
            })
    };
    let w = make(c.q.clone(), c.unit).start();
    eventually(within(&c), "jobs started", || started.load(AO::SeqCst) >= 4).await;
    let first = w.shutdown().await;
    assert!(
        first.returned > 0,
        "a grace shorter than the jobs must return some: {first:?}"
    );
    if c.per_message_lease() && c.caps.exact_stats {
        let s = c.q.stats(&c.name).await.expect("stats");
        assert_eq!(s.in_flight, 0, "shutdown left messages leased: {s:?}");
    }
    let w2 = make(h.driver().await, c.unit * 10).start();
    eventually(
        within(&c) * 2,
        "the rest processed by a second worker",
        || done.lock().unwrap().len() as u64 == n,
    )
    .await;
    w2.shutdown().await;
}

/// A worker killed mid-job loses nothing: its messages come back to another worker.
pub async fn crash_mid_job_loses_nothing(h: &Harness) {
    let c = h.fresh("crash_mid_job_loses_nothing").await;
    let n = 20u64;
    for i in 0..n {
        c.producer().enqueue(&probe(i)).await.expect("enqueue");
    }
    let held = Arc::new(AtomicUsize::new(0));
    let held2 = held.clone();
    let doomed = h.driver().await;
    let lease = c.unit * 3;
    let a = worker(&c, doomed.clone())
        .concurrency(4)
        .lease(lease)
        .handle(move |_: Probe, _ctx| {
            held2.fetch_add(1, AO::SeqCst);
            std::future::pending::<Result<(), JobError>>()
        });
    // No heartbeat may keep the doomed worker's leases alive after the crash.
    let a: WorkerHandle = a.start();
    eventually(within(&c), "the doomed worker holds jobs", || {
        held.load(AO::SeqCst) >= 4
    })
    .await;
    a.abort();
    drop(doomed);
    let done = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
    let done2 = done.clone();
    let b = worker(&c, h.driver().await)
        .concurrency(8)
        .lease(lease)
        .handle(move |p: Probe, ctx: JobContext| {
            done2.lock().unwrap().insert(p.n, ctx.attempt);
            async { Ok(()) }
        })
        .start();
    eventually(
        within(&c) * 2,
        "every job processed after the crash",
        || done.lock().unwrap().len() as u64 == n,
    )
    .await;
    b.shutdown().await;
    if c.per_message_lease() {
        let retried = done.lock().unwrap().values().filter(|a| **a >= 2).count();
        assert!(
            retried >= 4,
            "the crashed worker's jobs must come back as attempt 2+"
        );
    }
}

/// With the idempotency layer on, duplicate messages produce one effect per key.
pub async fn idempotent_effects(h: &Harness) {
    let c = h.fresh("idempotent_effects").await;
    let store = (h.store)().await;
    let effects = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
    let e2 = effects.clone();
    let w = worker(&c, c.q.clone())
        .concurrency(4)
        .lease(c.unit * 3)
        .idempotency(store, Duration::from_secs(600))
        .handle(move |p: Probe, _ctx| {
            *e2.lock().unwrap().entry(p.n).or_default() += 1;
            async { Ok(()) }
        })
        .start();
    let keys = 5u64;
    let run = fastrand::u64(..);
    for round in 0..2 {
        for i in 0..keys {
            let opts = SendOptions {
                idempotency_key: Some(format!("ct-{run}-{i}")),
                ..Default::default()
            };
            let _ = round;
            c.producer()
                .enqueue_with(&probe(i), opts)
                .await
                .expect("enqueue");
        }
    }
    eventually(within(&c) * 2, "all 10 messages settled", || {
        let r = w.report();
        r.succeeded + r.duplicates_skipped == 2 * keys
    })
    .await;
    let report = w.shutdown().await;
    let effects = effects.lock().unwrap();
    for i in 0..keys {
        assert_eq!(
            effects.get(&i),
            Some(&1),
            "key {i} had {:?} effects",
            effects.get(&i)
        );
    }
    assert_eq!(report.duplicates_skipped, keys);
}

/// Jepsen-style total-queue check: every sent message is received; reports lost,
/// unexpected, duplicated and recovered.
pub async fn drain_10k(h: &Harness) {
    let c = h.fresh("drain_10k").await;
    let n = h.drain_count;
    let producers = 4;
    let sent: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default(); // id -> send returned Ok
    let mut tasks = Vec::new();
    for p in 0..producers {
        let q = h.driver().await;
        let sent = sent.clone();
        let name = c.name.clone();
        let share = n / producers + usize::from(p < n % producers);
        tasks.push(tokio::spawn(async move {
            let prod = Producer::new(q, name);
            let mut left = share;
            while left > 0 {
                let k = left.min(100);
                let msgs: Vec<Message> = (0..k).map(|_| Message::new(&b"drain"[..])).collect();
                let ids: Vec<String> = msgs.iter().map(|m| m.id.0.clone()).collect();
                let ok = prod.send_batch(msgs).await.is_ok();
                let mut s = sent.lock().unwrap();
                for id in ids {
                    s.insert(id, ok);
                }
                left -= k;
            }
        }));
    }
    let received: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let r = received.clone();
        workers.push(
            worker(&c, h.driver().await)
                .concurrency(16)
                .handle_raw(move |d: Delivery| {
                    *r.lock().unwrap().entry(d.id.0).or_default() += 1;
                    async { Ok(()) }
                })
                .start(),
        );
    }
    for t in tasks {
        t.await.expect("producer");
    }
    let ok_count = sent.lock().unwrap().values().filter(|ok| **ok).count();
    let budget = within(&c) + Duration::from_millis(20 * n as u64);
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let got = received.lock().unwrap().len();
        if got >= ok_count {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drain: {got} of {ok_count} received after {budget:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut processed = 0;
    for w in workers {
        processed += w.shutdown().await.succeeded;
    }
    let sent = sent.lock().unwrap();
    let received = received.lock().unwrap();
    let lost = sent
        .iter()
        .filter(|(id, ok)| **ok && !received.contains_key(*id))
        .count();
    let unexpected = received.keys().filter(|id| !sent.contains_key(*id)).count();
    let duplicated = received.values().filter(|c| **c > 1).count();
    let recovered = sent
        .iter()
        .filter(|(id, ok)| !**ok && received.contains_key(*id))
        .count();
    eprintln!(
        "drain_10k[{}]: sent {} (ok {ok_count}), processed {processed}, lost {lost}, unexpected {unexpected}, duplicated {duplicated}, recovered {recovered}",
        c.q.backend(),
        sent.len()
    );
    assert_eq!(lost, 0, "lost messages");
    assert_eq!(unexpected, 0, "unexpected messages");
    assert_eq!(
        ok_count, n,
        "every send should succeed against a healthy backend"
    );
}

/// An empty long-poll waits (no busy loop) and returns early when a message arrives.
pub async fn empty_receive_waits(h: &Harness) {
    let c = h.fresh("empty_receive_waits").await;
    let wait = c.unit * 3;
    let t0 = tokio::time::Instant::now();
    let got =
        c.q.receive(&c.name, c.opts(1, wait, c.unit * 10))
            .await
            .expect("receive");
    assert!(got.is_empty());
    assert!(
        t0.elapsed() + c.caps.timer_granularity >= wait,
        "empty receive returned after {:?}, asked to wait {wait:?}",
        t0.elapsed()
    );
    let long = c.unit * 30;
    let sender = c.producer();
    let pause = c.unit;
    let send = tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        sender.send(Message::new("wake")).await.expect("send");
    });
    let t0 = tokio::time::Instant::now();
    let got =
        c.q.receive(&c.name, c.opts(1, long, c.unit * 10))
            .await
            .expect("receive");
    send.await.expect("sender");
    assert_eq!(got.len(), 1, "long poll did not return the message");
    assert!(
        t0.elapsed() < long / 2,
        "long poll returned after {:?}, not early on arrival",
        t0.elapsed()
    );
}

/// Unknown schemes, malformed URLs, unknown queues, unreachable servers and bad
/// credentials are typed errors, not panics or hangs.
pub async fn backend_errors_typed(h: &Harness) {
    let c = h.fresh("backend_errors_typed").await;
    assert!(matches!(
        crate::connect("nosuchscheme://x").await,
        Err(QueueError::UnknownScheme { .. })
    ));
    assert!(matches!(
        crate::connect("::not a url").await,
        Err(QueueError::InvalidUrl { .. })
    ));
    let missing = format!("ct-missing-{:08x}{}", fastrand::u32(..), h.suffix);
    let r = c.q.send(&missing, vec![Message::new("x")]).await;
    assert!(
        matches!(r, Err(QueueError::UnknownQueue(_))),
        "send to missing queue: {r:?}"
    );
    let r = c.q.receive(&missing, c.opts(1, c.unit, c.unit)).await;
    assert!(
        matches!(r, Err(QueueError::UnknownQueue(_))),
        "receive from missing queue: {r:?}"
    );
    for url in &h.bad_urls {
        let attempt = async {
            let q = crate::connect(url).await?;
            q.create_queue("ct-bad-url").await?;
            q.send("ct-bad-url", vec![Message::new("x")])
                .await
                .map(|_| ())
        };
        let r = tokio::time::timeout(Duration::from_secs(60), attempt)
            .await
            .unwrap_or_else(|_| panic!("{url}: no error within 60 s"));
        match r {
            Err(
                QueueError::Connection { .. }
                | QueueError::Auth { .. }
                | QueueError::InvalidUrl { .. }
                | QueueError::Timeout(_),
            ) => {}
            other => panic!("{url}: want a Connection/Auth/InvalidUrl error, got {other:?}"),
        }
    }
}

/// Runs one case by name.
pub async fn run_case(h: &Harness, case: &str) {
    match case {
        "round_trip" => round_trip(h).await,
        "batch_round_trip" => batch_round_trip(h).await,
        "ack_removes" => ack_removes(h).await,
        "nack_redelivers_after_delay" => nack_redelivers_after_delay(h).await,
        "lease_expiry_redelivers" => lease_expiry_redelivers(h).await,
        "extend_keeps_hidden" => extend_keeps_hidden(h).await,
        "competing_consumers_exclusive" => competing_consumers_exclusive(h).await,
        "delayed_send_not_early" => delayed_send_not_early(h).await,
        "dlq_after_max_attempts" => dlq_after_max_attempts(h).await,
        "permanent_error_skips_retries" => permanent_error_skips_retries(h).await,
        "redrive_returns_messages" => redrive_returns_messages(h).await,
        "ordering_per_key" => ordering_per_key(h).await,
        "ordering_refused" => ordering_refused(h).await,
        "dedup_within_window" => dedup_within_window(h).await,
        "oversize_refused" => oversize_refused(h).await,
        "malformed_payload_dead_lettered" => malformed_payload_dead_lettered(h).await,
        "stats_agree" => stats_agree(h).await,
        "graceful_shutdown_loses_nothing" => graceful_shutdown_loses_nothing(h).await,
        "crash_mid_job_loses_nothing" => crash_mid_job_loses_nothing(h).await,
        "idempotent_effects" => idempotent_effects(h).await,
        "drain_10k" => drain_10k(h).await,
        "empty_receive_waits" => empty_receive_waits(h).await,
        "backend_errors_typed" => backend_errors_typed(h).await,
        other => panic!("no conformance case named {other:?}; see CASES"),
    }
}

/// Runs every case in turn (for a driver that wants one test; prefer
/// [`conformance_suite!`](crate::conformance_suite), which names each).
pub async fn run_all(h: &Harness) {
    for case in CASES {
        run_case(h, case).await;
    }
}

/// Counter used by drivers' own tests to make unique names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{:06x}",
        N.fetch_add(1, AO::Relaxed),
        fastrand::u32(..0xffffff)
    )
}

/// Expands to one `#[tokio::test]` per conformance case, each calling the case with the
/// [`Harness`] that `$harness()` returns. The calling crate needs `tokio` (with the
/// `macros` and `rt-multi-thread` features) as a dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:path) => {
        $crate::conformance_suite!(@cases $harness;
            round_trip batch_round_trip ack_removes nack_redelivers_after_delay
            lease_expiry_redelivers extend_keeps_hidden competing_consumers_exclusive
            delayed_send_not_early dlq_after_max_attempts permanent_error_skips_retries
            redrive_returns_messages ordering_per_key ordering_refused dedup_within_window
            oversize_refused malformed_payload_dead_lettered stats_agree
            graceful_shutdown_loses_nothing crash_mid_job_loses_nothing idempotent_effects
            drain_10k empty_receive_waits backend_errors_typed);
    };
    (@cases $harness:path; $($case:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testkit::$case(&$harness()).await;
            }
        )*
    };
}
