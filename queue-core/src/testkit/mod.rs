//! The driver conformance kit (feature `testkit`).
//!
//! Every driver, the in-memory one included, runs these cases against a real backend; a
//! driver written outside this workspace runs them the same way. Each case is a plain async
//! function taking a [`Harness`] and panicking with a message that says what was expected
//! and what happened. The [`conformance_suite!`](crate::conformance_suite) macro turns
//! them into one named `#[tokio::test]` each:
//!
//! ```text
//! fn harness() -> queue_core::testkit::Harness {
//!     queue_core::testkit::Harness::new(|| async {
//!         Ok(std::sync::Arc::new(MyDriver::connect("...").await?) as _)
//!     })
//! }
//! queue_core::conformance_suite!(harness);
//! ```
//!
//! Cases read the driver's [`Capabilities`] to decide what to check: a declared capability
//! is exercised (at the edge of its declared limits), an undeclared one must be refused
//! with a typed error. Times scale with [`Harness::unit`] (by default the larger of 100 ms
//! and the backend's timer granularity), so the same case runs in milliseconds in memory
//! and in seconds on SQS.
//!
//! Every case works on fresh, uniquely named queues and deletes them when it passes, so
//! cases may run in parallel against one server (the test harness runs them on several
//! threads: size the driver's connection pool for a few dozen concurrent calls).
//!
//! The cases, by theme ([`CASES`] lists them in order):
//! - delivery (`delivery.rs`): round trips, batches, acks, `max`, long polls, competing
//!   consumers, the 10k drain;
//! - leases (`leases.rs`): nack delays, lease expiry, extension, stale receipts, delays;
//! - dead letters (`dead_letters.rs`): max attempts, permanent errors, malformed payloads,
//!   redrive, first-enqueued time kept;
//! - ordering and options (`ordering.rs`): per-key order, refusals, priorities, dedup;
//! - limits and errors (`limits.rs`): sizes and delays at their edge, stats, typed errors,
//!   unknown queues, delete and purge;
//! - crashes (`crashes.rs`): graceful shutdown, a crashed worker, idempotent effects;
//! - job status (`lifecycle.rs`): the recorded transitions, results, progress, cancellation;
//! - operations (`operations.rs`): peek, dead letters by reason, pause and resume.
//!
//! Stores for the layers above the queue have their own cases: [`store::run`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::idempotency::{IdempotencyStore, MemoryIdempotency};
use crate::{
    Backend, Capabilities, Delivery, Driver, Job, LeaseModel, Message, Producer, QueueStats,
    ReceiveOptions, Result, RetryPolicy, Worker, WorkerHandle,
};

mod crashes;
mod dead_letters;
mod delivery;
mod leases;
mod lifecycle;
mod limits;
mod operations;
mod ordering;
pub mod store;

pub use crashes::*;
pub use dead_letters::*;
pub use delivery::*;
pub use leases::*;
pub use lifecycle::*;
pub use limits::*;
pub use operations::*;
pub use ordering::*;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Factory = Arc<dyn Fn() -> BoxFut<Result<Arc<dyn Driver>>> + Send + Sync>;
/// The queues a harness created, to delete after the case.
type Created = Arc<Mutex<Vec<(Arc<dyn Driver>, String)>>>;
type StoreFactory = Arc<dyn Fn() -> BoxFut<Arc<dyn IdempotencyStore>> + Send + Sync>;
type StatusStoreFactory = Arc<dyn Fn() -> BoxFut<Arc<dyn crate::Store>> + Send + Sync>;

/// Calls `$callback!($($args)* ; case case ...)` with the one list of case names. The
/// list is kept here only: [`CASES`], [`run_case`] and
/// [`conformance_suite!`](crate::conformance_suite) are all built from it.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_conformance_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {$($args)* ;
            round_trip batch_round_trip ack_removes receive_respects_max
            empty_receive_waits long_poll_not_busy shutdown_cuts_long_poll
            competing_consumers_exclusive
            nack_redelivers_after_delay lease_expiry_redelivers extend_keeps_hidden
            stale_receipt_refused give_back_keeps_attempt delayed_send_not_early
            dlq_after_max_attempts permanent_error_skips_retries redrive_returns_messages
            malformed_payload_dead_lettered unknown_job_waits_for_its_worker
            first_enqueued_kept native_dlq_moves_poison
            ordering_per_key ordering_survives_retries ordered_job_timeout_starts_at_handler
            ordering_refused priority_honoured
            dedup_within_window
            oversize_refused limits_at_edge keys_at_edge stats_agree unknown_queue_typed delete_and_purge
            backend_errors_typed
            graceful_shutdown_loses_nothing crash_mid_job_loses_nothing idempotent_effects
            status_lifecycle status_cancel
            peek_leaves_messages dead_letters_by_reason pause_stops_workers
            drain_10k}
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __define_conformance_cases {
    (; $($case:ident)*) => {
        /// The names of every case, in the order [`run_all`] runs them.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        /// Runs one case by name, then deletes the queues it created.
        pub async fn run_case(h: &Harness, case: &str) {
            match case {
                $(stringify!($case) => $case(h).await,)*
                other => panic!("no conformance case named {other:?}; see CASES"),
            }
            h.cleanup().await;
        }
    };
}

__with_conformance_cases!(__define_conformance_cases!());

/// Runs every case in turn (for a driver that wants one test; prefer
/// [`conformance_suite!`](crate::conformance_suite), which names each).
pub async fn run_all(h: &Harness) {
    for case in CASES {
        run_case(h, case).await;
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each calling the case with the
/// [`Harness`] that `$harness()` returns. The calling crate needs `tokio` (with the
/// `macros` and `rt-multi-thread` features) as a dev-dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:path) => {
        $crate::__with_conformance_cases!(conformance_suite!(@cases $harness));
    };
    (@cases $harness:path ; $($case:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testkit::run_case(&$harness(), stringify!($case)).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per case named after the harness, like
/// [`conformance_suite!`](crate::conformance_suite) but for the listed cases only (a
/// slow variant of a backend, such as its priority tiers, need not run them all):
/// `conformance_cases!(harness; round_trip priority_honoured)`.
#[macro_export]
macro_rules! conformance_cases {
    ($harness:path ; $($case:ident)*) => {
        $crate::conformance_suite!(@cases $harness ; $($case)*);
    };
}

/// How the kit reaches a driver.
#[derive(Clone)]
pub struct Harness {
    factory: Factory,
    store: StoreFactory,
    pub(crate) status_store: StatusStoreFactory,
    unit: Option<Duration>,
    drain_count: usize,
    suffix: String,
    bad_urls: Vec<String>,
    crash_settle: Duration,
    created: Created,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("unit", &self.unit)
            .field("drain_count", &self.drain_count)
            .field("suffix", &self.suffix)
            .field(
                "bad_urls",
                &self
                    .bad_urls
                    .iter()
                    .map(|u| crate::redact(u))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness whose `factory` opens a new driver instance on each call. Instances must
    /// share the backend (the same server, or the same named in-memory broker): the kit
    /// uses several of them as competing consumers and drops one to simulate a crash.
    /// A factory that fails (the server is down) fails the case with its error, which
    /// should say how to start the server.
    pub fn new<F, Fut>(factory: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Driver>>> + Send + 'static,
    {
        Harness {
            factory: Arc::new(move || Box::pin(factory())),
            store: Arc::new(|| Box::pin(async { Arc::new(MemoryIdempotency::new()) as _ })),
            status_store: Arc::new(|| Box::pin(async { Arc::new(crate::MemoryStore::new()) as _ })),
            unit: None,
            drain_count: 10_000,
            suffix: String::new(),
            bad_urls: Vec::new(),
            crash_settle: Duration::ZERO,
            created: Arc::default(),
        }
    }

    /// The base time step (leases are 2–5 units, delays 3–4 units, waits up to 40 units).
    pub fn unit(mut self, unit: Duration) -> Self {
        self.unit = Some(unit);
        self
    }

    /// How many messages `drain_10k` moves (default 10,000).
    pub fn drain_count(mut self, n: usize) -> Self {
        self.drain_count = n;
        self
    }

    /// How long `crash_mid_job_loses_nothing` waits after a consumer crashed before it
    /// starts the survivor (default none): the time the backend needs to notice the crash
    /// when its leases are sessions. Kafka's harness sets its group session timeout plus a
    /// margin, because the tansu broker the tests run on never rebalances a generation
    /// formed with a member that then expires (docs/reliability.md): a survivor joining
    /// while the crashed member's session lasts can be left without its partitions.
    pub fn crash_settle(mut self, wait: Duration) -> Self {
        self.crash_settle = wait;
        self
    }

    /// Every driver the factory opens wrapped in [`crate::tiers::PriorityTiers`] with
    /// `levels` levels (at least 4: `priority_honoured` sends priorities 1 to 3), so that
    /// the kit checks the emulated priorities over this backend.
    pub fn priority_tiers(mut self, levels: u8) -> Self {
        let inner = self.factory.clone();
        self.factory = Arc::new(move || {
            let open = inner();
            Box::pin(async move {
                let d = open.await?;
                Ok(Arc::new(crate::tiers::PriorityTiers::new(d, levels)?) as Arc<dyn Driver>)
            })
        });
        self
    }

    /// A suffix for every queue name the kit creates (SQS FIFO queues need `.fifo`).
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

    /// The store for the job-status cases (default: [`crate::MemoryStore`]).
    pub fn status_store<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn crate::Store>> + Send + 'static,
    {
        self.status_store = Arc::new(move || Box::pin(f()));
        self
    }

    /// A URL that must fail with a typed error on connect or on first use (an unreachable
    /// port, wrong credentials, an unknown option). `backend_errors_typed` tries each with
    /// the process's registered schemes, so register your scheme first (or use a scheme
    /// `queue_core::connect` already knows).
    pub fn bad_url(mut self, url: &str) -> Self {
        self.bad_urls.push(url.to_string());
        self
    }

    async fn driver(&self) -> Arc<dyn Driver> {
        match (self.factory)().await {
            Ok(d) => d,
            Err(e) => panic!("the harness could not open a driver: {e}"),
        }
    }

    fn unit_for(&self, caps: &Capabilities) -> Duration {
        self.unit
            .unwrap_or_else(|| caps.timer_granularity.max(Duration::from_millis(100)))
    }

    fn queue_name(&self, case: &str) -> String {
        format!(
            "ct-{}-{:08x}{}",
            case.replace('_', "-"),
            fastrand::u32(..),
            self.suffix
        )
    }

    /// A driver instance, a fresh queue (created), the capabilities and the time unit.
    async fn fresh(&self, case: &str) -> Ctx {
        let q = self.driver().await;
        let name = self.queue_name(case);
        q.create_queue(&name)
            .await
            .unwrap_or_else(|e| panic!("create_queue({name}) failed: {e}"));
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((q.clone(), name.clone()));
        let caps = q.capabilities();
        let unit = self.unit_for(&caps);
        Ctx {
            q,
            name,
            caps,
            unit,
        }
    }

    /// Deletes the queues the cases run so far created (errors ignored).
    pub async fn cleanup(&self) {
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        for (d, name) in created {
            let _ = tokio::time::timeout(Duration::from_secs(30), d.delete_queue(&name)).await;
        }
    }
}

pub(crate) struct Ctx {
    pub(crate) q: Arc<dyn Driver>,
    pub(crate) name: String,
    pub(crate) caps: Capabilities,
    pub(crate) unit: Duration,
}

impl Ctx {
    pub(crate) fn backend(&self) -> Backend {
        Backend::from_driver(self.q.clone())
    }
    pub(crate) fn queue(&self) -> crate::Queue {
        self.backend().queue(self.name.clone())
    }
    pub(crate) fn producer(&self) -> Producer {
        self.queue().producer()
    }
    pub(crate) fn opts(&self, max: usize, wait: Duration, lease: Duration) -> ReceiveOptions {
        ReceiveOptions::new(max.min(self.caps.max_batch), wait, lease)
    }
    pub(crate) fn per_message_lease(&self) -> bool {
        matches!(self.caps.lease, LeaseModel::PerMessage { .. })
    }
    /// Sends `n` raw messages with payloads "m{i}" and returns their ids.
    pub(crate) async fn send_n(&self, n: usize) -> Vec<String> {
        let msgs: Vec<Message> = (0..n).map(|i| Message::new(format!("m{i}"))).collect();
        let ids = self.producer().send_batch(msgs).await.expect("send_batch");
        ids.into_iter().map(|i| i.into_string()).collect()
    }
    /// Receives from `q` until `n` deliveries arrived or `within` passed.
    pub(crate) async fn collect(
        &self,
        q: &Arc<dyn Driver>,
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
    pub(crate) async fn ack(&self, d: &Delivery) {
        self.q
            .ack(&self.name, std::slice::from_ref(&d.receipt))
            .await
            .unwrap_or_else(|e| panic!("ack of a current receipt: want Ok, got {e}"));
    }
    pub(crate) async fn stats_eventually(&self, want: QueueStats) {
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
    /// A worker on this queue through driver instance `q`, with the kit's settings.
    pub(crate) fn worker(&self, q: Arc<dyn Driver>) -> Worker {
        self.worker_for(Backend::from_driver(q))
    }
    /// [`Ctx::worker`] on a backend handle of the case's own (one with job status on).
    pub(crate) fn worker_for(&self, b: Backend) -> Worker {
        b.queue(self.name.clone())
            .worker()
            .lease(self.unit * 20)
            .poll_wait(self.unit * 2)
            .shutdown_grace(self.unit * 10)
            .retry(RetryPolicy::new(3, crate::Backoff::Fixed(self.unit / 2)))
    }
    /// The longest any single step of a case may take.
    pub(crate) fn within(&self) -> Duration {
        self.unit * 40 + Duration::from_secs(10)
    }
    /// Receives `n` messages from the dead-letter queue.
    pub(crate) async fn dlq_contents(&self, n: usize) -> Vec<Delivery> {
        let dlq = self.q.dead_letter_queue(&self.name);
        let deadline = tokio::time::Instant::now() + self.within();
        let mut out = Vec::new();
        while out.len() < n && tokio::time::Instant::now() < deadline {
            let got = self
                .q
                .receive(
                    &dlq,
                    self.opts(n - out.len(), self.unit * 2, self.unit * 50),
                )
                .await
                .expect("receive from DLQ");
            out.extend(got);
        }
        assert_eq!(
            out.len(),
            n,
            "dead-letter queue: want {n} message(s), got {}",
            out.len()
        );
        out
    }
}

/// Starts a worker, failing the case with the configuration error if it refuses.
pub(crate) fn start(w: Worker) -> WorkerHandle {
    w.start()
        .unwrap_or_else(|e| panic!("worker refused the kit's configuration: {e}"))
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

/// Like [`eventually`], for a condition on a running worker: a timeout panics with the
/// worker's report and its last backend error, which usually say what went wrong.
pub async fn eventually_worker(
    w: &WorkerHandle,
    within: Duration,
    what: &str,
    mut cond: impl FnMut(&crate::WorkerReport) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = w.report();
        if cond(&r) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {within:?} waiting for: {what}\n  worker report: {r:?}\n  last backend error: {}",
                w.last_error().unwrap_or_else(|| "none".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A job the kit sends through the worker.
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

pub(crate) fn probe(n: u64) -> Probe {
    Probe {
        n,
        key: String::new(),
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
        assert!(
            *n <= next,
            "key {key}: want each message after all earlier ones, got {seq:?}"
        );
        if *n == next {
            next += 1;
        }
    }
    assert_eq!(
        next, per_key,
        "key {key}: want all {per_key} messages, got {seq:?}"
    );
    seq
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

/// Counts how often a future is polled: a long poll that spins (a loop of short sleeps or
/// yields) is polled hundreds of times a second, one that waits on the backend a handful.
pub(crate) struct CountPolls<F> {
    pub(crate) inner: Pin<Box<F>>,
    pub(crate) polls: u64,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = (F::Output, u64);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.polls += 1;
        let polls = self.polls;
        match self.inner.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready((v, polls)),
            Poll::Pending => Poll::Pending,
        }
    }
}
