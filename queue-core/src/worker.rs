//! The Worker: one runtime for every backend.
//!
//! It leases messages, runs handlers with bounded concurrency, heartbeats leases of long
//! jobs, and settles every delivery exactly one way:
//!
//! | outcome | action |
//! |---|---|
//! | handler `Ok` | ack (batched) |
//! | retryable error, panic, timeout, attempts left | nack with the policy's backoff (or the error's `retry_after`) |
//! | retryable error on the last attempt | dead-letter, reason `max-attempts` |
//! | [`JobError::permanent`] | dead-letter at once, reason `permanent` |
//! | undecodable payload or unknown job name | dead-letter at once, reason `malformed` |
//! | idempotency key already completed | ack without running |
//! | shutdown grace ran out | given back with no delay: back in the queue at once |
//! | idempotency key held by another worker | given back until its claim can end (one lease) |
//!
//! An *attempt* is a delivery that reached its handler. A delivery given back without
//! running (the last three rows above, and a per-key successor whose predecessor went
//! back) costs no attempt on backends that declare
//! [`Capabilities::give_back_keeps_attempt`] (memory, Redis, Kafka); on SQS the receive
//! count grows anyway.
//!
//! Deliveries with the same ordering key from one receive (an SQS FIFO group, a Kafka
//! partition) run one after another in receive order; on a per-key backend, a delivery
//! whose predecessor went back to the queue goes back too, so the backend redelivers both
//! in order. Prefetch never exceeds the free concurrency slots, so nothing waits leased
//! but unstarted. On graceful shutdown the worker calls [`Driver::stop_receiving`].
//!
//! Everything here is backend-agnostic: drivers only provide the [`Driver`] primitives.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::driver::{
    Capabilities, DeadLetterKind, DeadLetterReason, Driver, LeaseModel, ReceiveOptions,
};
use crate::error::DecodeError;
use crate::error::{QueueError, Result as QResult};
use crate::handle::Queue;
use crate::idempotency::{Begin, IdempotencyStore};
use crate::job::{decode_data, decode_envelope, Job, RawEnvelope};
use crate::message::{headers, Delivery, Headers, MessageId, Receipt};
use crate::retry::{Decision, RetryPolicy};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A decoded job, ready to run once the idempotency claim allows it.
type Thunk = Box<dyn FnOnce() -> BoxFut<JobResult> + Send>;
type JobFn = Arc<dyn Fn(RawEnvelope, JobContext) -> Result<Thunk, DecodeError> + Send + Sync>;
type RawFn = Arc<dyn Fn(Delivery) -> BoxFut<JobResult> + Send + Sync>;
type BatchFn = Arc<dyn Fn(Vec<Delivery>) -> BoxFut<Vec<ItemFailure>> + Send + Sync>;

/// What a handler returns.
pub type JobResult = Result<(), JobError>;

/// A handler's failure: retryable (the default) or permanent.
///
/// Any `std::error::Error` converts into a retryable `JobError` with `?`; use
/// [`JobError::permanent`] for failures a retry cannot fix (bad input, a deleted account).
pub struct JobError {
    message: String,
    permanent: bool,
    retry_after: Option<Duration>,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retry(e: impl fmt::Display) -> Self {
        JobError {
            message: e.to_string(),
            permanent: false,
            retry_after: None,
        }
    }
    /// A failure no retry can fix: the job goes straight to the dead-letter queue.
    pub fn permanent(e: impl fmt::Display) -> Self {
        JobError {
            message: e.to_string(),
            permanent: true,
            retry_after: None,
        }
    }
    /// Retry after `delay` instead of the policy's backoff (e.g. an HTTP 429's Retry-After).
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
    /// Whether this failure skips retries.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::retry(e)
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.permanent { "permanent" } else { "retry" };
        write!(f, "JobError({kind}: {})", self.message)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One failed item of a batch handler's batch (Lambda's `batchItemFailures`).
#[derive(Debug)]
#[non_exhaustive]
pub struct ItemFailure {
    /// Index of the failed delivery in the batch the handler was given.
    pub index: usize,
    /// Why it failed.
    pub error: JobError,
}

impl ItemFailure {
    /// Item `index` of the batch failed with `error`.
    pub fn new(index: usize, error: JobError) -> Self {
        ItemFailure { index, error }
    }
}

/// What a typed handler learns about the delivery besides the job itself.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobContext {
    /// Message id (stable across retries).
    pub id: MessageId,
    /// Queue name.
    pub queue: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Message headers.
    pub headers: Headers,
    /// When the job was first enqueued.
    pub first_enqueued_at: SystemTime,
    /// Fires when the worker starts shutting down (the grace period begins): a long
    /// handler can stop cleanly, return an error (retried later), or finish within the
    /// grace period. See [`JobContext::shutting_down`].
    pub shutdown: CancellationToken,
}

impl JobContext {
    /// Completes when the worker starts shutting down. Use it in `tokio::select!` beside
    /// the handler's work:
    ///
    /// ```
    /// # use queue_core::{JobContext, JobError};
    /// # async fn work() {}
    /// async fn long_job(ctx: JobContext) -> Result<(), JobError> {
    ///     tokio::select! {
    ///         _ = work() => Ok(()),
    ///         _ = ctx.shutting_down() => Err(JobError::retry("worker shutting down")),
    ///     }
    /// }
    /// ```
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await
    }
}

/// Worker settings. Build with [`Worker`]'s methods; [`Worker::start`] checks them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Jobs (or batches) run at once. Default 10.
    pub concurrency: usize,
    /// Lease asked for on receive and renewed for long jobs. Default 30 s.
    pub lease: Duration,
    /// Long-poll wait per receive; also the most an idle worker takes to notice shutdown.
    /// Default 5 s.
    pub poll_wait: Duration,
    /// Retry policy for jobs without their own. Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// A job running longer is aborted and counted as a retryable failure. Default none.
    pub job_timeout: Option<Duration>,
    /// On shutdown, how long in-flight jobs may take before they are returned to the queue.
    /// Default 30 s.
    pub shutdown_grace: Duration,
    /// How long acks wait to be batched with others. Default 10 ms.
    pub ack_linger: Duration,
    /// Messages per batch for batch handlers. Default the backend's max batch, at most 10.
    pub batch_size: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 10,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            job_timeout: None,
            shutdown_grace: Duration::from_secs(30),
            ack_linger: Duration::from_millis(10),
            batch_size: 10,
        }
    }
}

/// Counts of what a worker did. [`WorkerHandle::report`] reads them live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Deliveries received.
    pub received: u64,
    /// Handlers that succeeded (acked).
    pub succeeded: u64,
    /// Handler failures (errors, panics, timeouts), retried or not.
    pub failed: u64,
    /// Deliveries given back for a retry.
    pub retried: u64,
    /// Deliveries moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Deliveries skipped because their idempotency key had completed.
    pub duplicates_skipped: u64,
    /// Deliveries returned to the queue at shutdown without running to the end.
    pub returned: u64,
    /// Backend calls that failed (receive, ack, nack, extend, dead-letter).
    pub backend_errors: u64,
    /// The worker's own loop died (a panic: in a driver's `receive`, or a bug) and it
    /// stopped processing; [`WorkerHandle::last_error`] says why. An application should
    /// treat this like a crashed process: log, alert, start a new worker.
    pub crashed: bool,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    duplicates_skipped: AtomicU64,
    returned: AtomicU64,
    backend_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    crashed: std::sync::atomic::AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> WorkerReport {
        let r = |a: &AtomicU64| a.load(AtomicOrdering::Relaxed);
        WorkerReport {
            received: r(&self.received),
            succeeded: r(&self.succeeded),
            failed: r(&self.failed),
            retried: r(&self.retried),
            dead_lettered: r(&self.dead_lettered),
            duplicates_skipped: r(&self.duplicates_skipped),
            returned: r(&self.returned),
            backend_errors: r(&self.backend_errors),
            crashed: self.crashed.load(AtomicOrdering::Relaxed),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, AtomicOrdering::Relaxed);
}

struct Registered {
    run: JobFn,
    retry: Option<RetryPolicy>,
}

enum Mode {
    Jobs {
        jobs: HashMap<String, Registered>,
        raw: Option<RawFn>,
    },
    Batch(BatchFn),
}

/// A worker for one queue. Register handlers, tune, then [`start`](Worker::start) it.
///
/// ```
/// # use queue_core::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { id: u32 }
/// # impl Job for Resize { const NAME: &'static str = "resize"; }
/// # async fn run(backend: Backend) -> Result<()> {
/// let worker = backend
///     .queue("images")
///     .worker()
///     .handle(|job: Resize, ctx: JobContext| async move {
///         println!("resizing {} (attempt {})", job.id, ctx.attempt);
///         Ok(())
///     })
///     .concurrency(4)
///     .start()?;
/// // ... later
/// let report = worker.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Worker {
    queue: Queue,
    mode: Mode,
    config: WorkerConfig,
    idempotency: Option<(Arc<dyn IdempotencyStore>, Duration)>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Jobs { jobs, raw } => {
                let mut names: Vec<&str> = jobs.keys().map(String::as_str).collect();
                names.sort_unstable();
                format!(
                    "jobs {names:?}{}",
                    if raw.is_some() { " + raw" } else { "" }
                )
            }
            Mode::Batch(_) => "batch".to_string(),
        };
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("handlers", &mode)
            .field("config", &self.config)
            .field("idempotency", &self.idempotency.as_ref().map(|(_, r)| r))
            .finish()
    }
}

impl Worker {
    pub(crate) fn new(queue: Queue) -> Self {
        Worker {
            queue,
            mode: Mode::Jobs {
                jobs: HashMap::new(),
                raw: None,
            },
            config: WorkerConfig::default(),
            idempotency: None,
        }
    }

    /// Registers the handler for job type `J`.
    pub fn handle<J, F, Fut>(mut self, f: F) -> Self
    where
        J: Job,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let f = Arc::new(f);
        let run: JobFn = Arc::new(move |env, ctx| {
            let job = decode_data::<J>(env)?;
            let f = f.clone();
            Ok(Box::new(move || Box::pin(f(job, ctx)) as BoxFut<JobResult>) as Thunk)
        });
        let reg = Registered {
            run,
            retry: J::retry_policy(),
        };
        match &mut self.mode {
            Mode::Jobs { jobs, .. } => {
                jobs.insert(J::NAME.to_string(), reg);
            }
            Mode::Batch(_) => {
                self.mode = Mode::Jobs {
                    jobs: HashMap::from([(J::NAME.to_string(), reg)]),
                    raw: None,
                }
            }
        }
        self
    }

    /// Registers a handler for raw deliveries: messages that are not job envelopes, or whose
    /// job name has no typed handler. Without one, those are dead-lettered as malformed.
    pub fn handle_raw<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let f: RawFn = Arc::new(move |d| Box::pin(f(d)));
        match &mut self.mode {
            Mode::Jobs { raw, .. } => *raw = Some(f),
            Mode::Batch(_) => {
                self.mode = Mode::Jobs {
                    jobs: HashMap::new(),
                    raw: Some(f),
                }
            }
        }
        self
    }

    /// Uses one handler for whole batches of raw deliveries (up to
    /// [`batch_size`](Worker::batch_size)); it returns the items that failed, and each of
    /// those is retried or dead-lettered on its own. Replaces per-job handlers.
    pub fn handle_batch<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<ItemFailure>> + Send + 'static,
    {
        self.mode = Mode::Batch(Arc::new(move |b| Box::pin(f(b))));
        self
    }

    /// Jobs run at once (1 to 100,000).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }
    /// Lease per delivery (renewed automatically while a job runs, where the backend can).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }
    /// Long-poll wait per receive.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.config.poll_wait = wait;
        self
    }
    /// Default retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }
    /// Per-job timeout.
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.config.job_timeout = Some(timeout);
        self
    }
    /// Shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }
    /// Messages per batch for [`handle_batch`](Worker::handle_batch).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }
    /// How long acks wait to be batched.
    pub fn ack_linger(mut self, linger: Duration) -> Self {
        self.config.ack_linger = linger;
        self
    }
    /// Replaces the whole configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }
    /// Turns on idempotency: a delivery whose key (the [`headers::IDEMPOTENCY_KEY`] header,
    /// else the message id) completed within `retention` is acked without running again.
    pub fn idempotency(mut self, store: Arc<dyn IdempotencyStore>, retention: Duration) -> Self {
        self.idempotency = Some((store, retention));
        self
    }

    /// Checks the configuration against the backend and starts the worker on the current
    /// tokio runtime.
    ///
    /// A setting that cannot work is an [`QueueError::InvalidOption`] naming it, never a
    /// panic inside the worker's task: concurrency 0, a lease shorter than the backend's
    /// timer step or longer than its [`Capabilities::max_lease`], a poll wait over an
    /// hour, a job timeout of zero or over 30 days, a shutdown grace over a day, a batch
    /// size over the backend's batch limit, a retry policy with zero attempts.
    pub fn start(self) -> QResult<WorkerHandle> {
        let caps = self.queue.driver().capabilities();
        check_config(&self.config, &caps, matches!(self.mode, Mode::Batch(_)))?;
        if matches!(self.mode, Mode::Batch(_)) && self.idempotency.is_some() {
            return Err(QueueError::InvalidOption(
                "idempotency keys are not honoured by batch handlers: use per-job handlers, \
                 or deduplicate inside the batch handler"
                    .into(),
            ));
        }
        if let Mode::Jobs { jobs, .. } = &self.mode {
            for (name, reg) in jobs {
                if let Some(p) = reg.retry {
                    if p.max_attempts == 0 {
                        return Err(QueueError::InvalidOption(format!(
                            "job {name}: retry policy max_attempts must be at least 1"
                        )));
                    }
                }
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let inner = Arc::new(Inner {
            driver: self.queue.driver().clone(),
            shutdown: CancellationToken::new(),
            name: self.queue.name().to_string(),
            mode: self.mode,
            config: self.config,
            idempotency: self.idempotency,
            caps,
            counters: counters.clone(),
        });
        let watched = counters.clone();
        let join = tokio::spawn(async move {
            // The loop runs in its own task so that a panic in it is caught and reported
            // (WorkerReport::crashed, last_error) instead of leaving a silent dead worker.
            // Aborting this task drops the guard, which aborts the loop with it.
            let mut guard = AbortOnDrop(tokio::spawn(run(inner, stop_rx)));
            match (&mut guard.0).await {
                Ok(report) => report,
                Err(e) => {
                    let why = if e.is_panic() {
                        panic_message(e.into_panic())
                    } else {
                        "cancelled".to_string()
                    };
                    tracing::error!(error = %why, "worker loop died; the worker stopped");
                    watched.crashed.store(true, AtomicOrdering::Relaxed);
                    *watched.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("worker loop died: {why}"));
                    watched.snapshot()
                }
            }
        });
        Ok(WorkerHandle {
            stop: stop_tx,
            join,
            counters,
        })
    }

    /// Runs until `signal` completes (e.g. `tokio::signal::ctrl_c()`), then shuts down
    /// gracefully and returns the report.
    pub async fn run_until<F: Future>(self, signal: F) -> QResult<WorkerReport> {
        let handle = self.start()?;
        signal.await;
        Ok(handle.shutdown().await)
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn check_config(c: &WorkerConfig, caps: &Capabilities, batch_mode: bool) -> QResult<()> {
    let bad = |what: String| Err(QueueError::InvalidOption(what));
    if c.concurrency == 0 || c.concurrency > 100_000 {
        return bad(format!(
            "concurrency must be 1 to 100000, got {}",
            c.concurrency
        ));
    }
    if matches!(caps.lease, LeaseModel::PerMessage { .. })
        && (c.lease < caps.timer_granularity || c.lease > caps.max_lease)
    {
        return bad(format!(
            "lease must be {:?} to {:?} on this backend, got {:?}",
            caps.timer_granularity, caps.max_lease, c.lease
        ));
    }
    if c.poll_wait > HOUR {
        return bad(format!(
            "poll_wait must be at most 1h, got {:?}",
            c.poll_wait
        ));
    }
    if let Some(t) = c.job_timeout {
        if t.is_zero() || t > 30 * 24 * HOUR {
            return bad(format!(
                "job_timeout must be over 0 and at most 30 days, got {t:?}"
            ));
        }
    }
    if c.shutdown_grace > 24 * HOUR {
        return bad(format!(
            "shutdown_grace must be at most 24h, got {:?}",
            c.shutdown_grace
        ));
    }
    if c.ack_linger > Duration::from_secs(10) {
        return bad(format!(
            "ack_linger must be at most 10s, got {:?}",
            c.ack_linger
        ));
    }
    if batch_mode && (c.batch_size == 0 || c.batch_size > caps.max_batch) {
        return bad(format!(
            "batch_size must be 1 to {} (the backend's batch limit), got {}",
            caps.max_batch, c.batch_size
        ));
    }
    if c.retry.max_attempts == 0 {
        return bad("retry policy max_attempts must be at least 1".into());
    }
    Ok(())
}

/// A running worker. Dropping it stops the worker (as [`WorkerHandle::shutdown`] would,
/// without waiting): keep it for as long as the worker should run.
#[must_use = "dropping the handle stops the worker"]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<WorkerReport>,
    counters: Arc<Counters>,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// What the worker has done so far.
    pub fn report(&self) -> WorkerReport {
        self.counters.snapshot()
    }

    /// The last error a backend call returned (receive, ack, nack, extend, dead-letter,
    /// idempotency store), for diagnostics; `None` if every call succeeded.
    pub fn last_error(&self) -> Option<String> {
        self.counters
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Graceful shutdown: stop receiving, let in-flight jobs finish within the grace period,
    /// return the rest to the queue at once, flush acks, and report.
    pub async fn shutdown(self) -> WorkerReport {
        let _ = self.stop.send(true);
        match self.join.await {
            Ok(r) => r,
            Err(_) => self.counters.snapshot(),
        }
    }

    /// Kills the worker as a crash would: jobs are dropped mid-flight, nothing is acked,
    /// nacked or extended any more. Their leases run out and the backend redelivers them.
    pub fn abort(self) {
        self.join.abort();
    }
}

/// Counts a failed backend call, remembers it for [`WorkerHandle::last_error`] and logs
/// it with the queue and, where there is one, the message id.
fn backend_error(inner: &Inner, what: &str, id: Option<&MessageId>, e: &QueueError) {
    bump(&inner.counters.backend_errors);
    let text = format!("{what}: {e}");
    match id {
        Some(id) => tracing::warn!(queue = %inner.name, id = %id, error = %e, "{what}"),
        None => tracing::warn!(queue = %inner.name, error = %e, "{what}"),
    }
    *inner
        .counters
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(text);
}

struct Inner {
    driver: Arc<dyn Driver>,
    shutdown: CancellationToken,
    name: String,
    mode: Mode,
    config: WorkerConfig,
    idempotency: Option<(Arc<dyn IdempotencyStore>, Duration)>,
    caps: Capabilities,
    counters: Arc<Counters>,
}

/// Main loop. Dropping (aborting) this future drops every job task with it.
async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) -> WorkerReport {
    let batch_mode = matches!(inner.mode, Mode::Batch(_));
    let max_batch = inner.caps.max_batch.max(1);
    let slots = Arc::new(Semaphore::new(inner.config.concurrency));
    let (force_tx, force_rx) = watch::channel(false);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Receipt>();
    let mut aux = JoinSet::new();
    aux.spawn(acker(inner.clone(), ack_rx));
    let mut tasks = JoinSet::new();
    let mut errors_in_row = 0u32;
    // Per ordering key, the settle signal of the last delivery of that key started here.
    let mut lines: HashMap<String, oneshot::Receiver<bool>> = HashMap::new();

    'outer: while !*stop.borrow() {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let mut permits = vec![first];
        let want = if batch_mode {
            inner.config.batch_size.min(max_batch)
        } else {
            while permits.len() < max_batch {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            permits.len()
        };
        let opts = ReceiveOptions {
            max: want,
            wait: inner.config.poll_wait,
            lease: inner.config.lease,
        };
        // A receive in progress is allowed to finish (it is bounded by `poll_wait`), so that
        // messages the backend already leased to us are returned below, not left to expire.
        let got = inner.driver.receive(&inner.name, opts).await;
        while tasks.try_join_next().is_some() {}
        let deliveries = match got {
            Ok(d) => {
                errors_in_row = 0;
                d
            }
            Err(e) => {
                backend_error(&inner, "receive failed", None, &e);
                errors_in_row += 1;
                let pause = crate::retry::Backoff::exponential(
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                )
                .delay(errors_in_row);
                tracing::warn!(queue = %inner.name, error = %e, retry_in = ?pause, "receive failed");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue 'outer,
                    _ = stop.changed() => break 'outer,
                }
            }
        };
        inner
            .counters
            .received
            .fetch_add(deliveries.len() as u64, AtomicOrdering::Relaxed);
        if *stop.borrow() {
            for d in deliveries {
                give_back(&inner, &d).await;
            }
            break;
        }
        if deliveries.is_empty() {
            continue;
        }
        if batch_mode {
            let permit = permits.swap_remove(0);
            tasks.spawn(run_batch(
                inner.clone(),
                deliveries,
                permit,
                force_rx.clone(),
                ack_tx.clone(),
            ));
        } else {
            if lines.len() > 1024 {
                lines.retain(|_, rx| {
                    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
                });
            }
            for (d, permit) in deliveries.into_iter().zip(permits.drain(..)) {
                let turn = match &d.ordering_key {
                    Some(k) => {
                        let (done, rx) = oneshot::channel();
                        Turn {
                            // Wait only for a predecessor still running here. One that
                            // settled already (its own earlier attempt, given back, or a
                            // message the backend has since redelivered in order) must
                            // not hold this delivery: waiting on its old answer stalled
                            // the key for ever.
                            after: lines.insert(k.clone(), rx).and_then(|mut prev| {
                                match prev.try_recv() {
                                    Err(oneshot::error::TryRecvError::Empty) => Some(prev),
                                    _ => None,
                                }
                            }),
                            done: Some(done),
                        }
                    }
                    None => Turn::default(),
                };
                tasks.spawn(run_one(
                    inner.clone(),
                    d,
                    permit,
                    force_rx.clone(),
                    ack_tx.clone(),
                    turn,
                ));
            }
        }
    }

    // Graceful shutdown: tell handlers, wait for in-flight jobs up to the grace period,
    // then force the rest.
    inner.shutdown.cancel();
    let grace = inner.config.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let _ = force_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
    drop(ack_tx);
    while aux.join_next().await.is_some() {}
    if let Err(e) = inner.driver.stop_receiving(&inner.name).await {
        tracing::warn!(queue = %inner.name, error = %e, "stop_receiving failed");
    }
    inner.counters.snapshot()
}

/// Batches acks: waits up to `ack_linger` for more receipts, up to the backend's max batch.
async fn acker(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Receipt>) {
    let max = inner.caps.max_batch.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + inner.config.ack_linger;
        while batch.len() < max {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                _ => break,
            }
        }
        if let Err(e) = inner.driver.ack(&inner.name, &batch).await {
            backend_error(
                &inner,
                "ack failed; the messages will be redelivered",
                None,
                &e,
            );
        }
    }
}

/// Returns a delivery to the queue at once (shutdown).
async fn give_back(inner: &Inner, d: &Delivery) {
    bump(&inner.counters.returned);
    if let Err(e) = inner
        .driver
        .give_back(&inner.name, &d.receipt, Duration::ZERO)
        .await
    {
        backend_error(
            inner,
            "could not return message; it comes back when its lease ends",
            Some(&d.id),
            &e,
        );
    }
}

/// Why an attempt failed, as the worker sees it.
#[derive(Clone)]
struct Failure {
    error: String,
    permanent: bool,
    kind: DeadLetterKind,
    retry_after: Option<Duration>,
}

impl Failure {
    fn from_job(e: JobError) -> Self {
        Failure {
            kind: if e.permanent {
                DeadLetterKind::Permanent
            } else {
                DeadLetterKind::MaxAttempts
            },
            error: e.message,
            permanent: e.permanent,
            retry_after: e.retry_after,
        }
    }
    fn malformed(e: &DecodeError) -> Self {
        Failure {
            error: e.to_string(),
            permanent: true,
            kind: DeadLetterKind::Malformed,
            retry_after: None,
        }
    }
    fn retryable(error: String) -> Self {
        Failure {
            error,
            permanent: false,
            kind: DeadLetterKind::MaxAttempts,
            retry_after: None,
        }
    }
}

/// What a handler run ended as.
enum Ran {
    Done(Vec<(usize, Failure)>),
    /// Shutdown forced: return everything.
    Forced,
}

/// Runs `fut` with lease heartbeats for `receipts`, the job timeout, panic capture and
/// shutdown forcing. `Ok` carries the handler's output.
async fn supervise<T: Send + 'static>(
    inner: &Inner,
    receipts: &[&Receipt],
    fut: BoxFut<T>,
    mut force: watch::Receiver<bool>,
    job_timeout: Option<Duration>,
) -> Result<T, Option<Failure>> {
    let mut guard = AbortOnDrop(tokio::spawn(fut));
    let handle = &mut guard.0;
    let lease = inner.config.lease;
    let extend = matches!(inner.caps.lease, LeaseModel::PerMessage { extend: true });
    let beat = (lease / 3).max(inner.caps.timer_granularity);
    let now = tokio::time::Instant::now();
    let mut next_beat = now + beat;
    let timeout_at = job_timeout.map(|t| now + t);
    loop {
        tokio::select! {
            r = &mut *handle => {
                return r.map_err(|e| Some(Failure::retryable(if e.is_panic() {
                    format!("handler panicked: {}", panic_message(e.into_panic()))
                } else {
                    "handler task was cancelled".to_string()
                })));
            }
            _ = tokio::time::sleep_until(next_beat), if extend => {
                next_beat += beat;
                for r in receipts {
                    if let Err(e) = inner.driver.extend(&inner.name, r, lease).await {
                        backend_error(inner, "lease extension failed", None, &e);
                    }
                }
            }
            _ = tokio::time::sleep_until(timeout_at.unwrap_or_else(tokio::time::Instant::now)), if timeout_at.is_some() => {
                handle.abort();
                let t = job_timeout.unwrap_or_default();
                return Err(Some(Failure {
                    error: format!("job timed out after {t:?}"),
                    permanent: false,
                    kind: DeadLetterKind::Timeout,
                    retry_after: None,
                }));
            }
            _ = forced(&mut force) => {
                handle.abort();
                return Err(None);
            }
        }
    }
}

/// The text of a panic's payload.
fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// Aborts the handler task when its supervisor is dropped (worker aborted or crashed), so
/// no handler outlives its worker.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes once shutdown is forced; never, if the sender is gone without forcing.
async fn forced(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A delivery's place in its ordering key's line: it waits for its predecessor (received
/// earlier by this worker) to settle, and tells its successor when it has settled.
#[derive(Default)]
struct Turn {
    after: Option<oneshot::Receiver<bool>>,
    done: Option<oneshot::Sender<bool>>,
}

async fn run_one(
    inner: Arc<Inner>,
    d: Delivery,
    _permit: OwnedSemaphorePermit,
    force: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<Receipt>,
    turn: Turn,
) {
    let (job_name, prepared) = prepare(&inner, &d);
    let span = tracing::info_span!("job", queue = %inner.name, id = %d.id, job = %job_name, attempt = d.attempt);
    let settled = run_one_inner(&inner, &d, force, &acks, turn.after, job_name, prepared)
        .instrument(span)
        .await;
    if let Some(done) = turn.done {
        let _ = done.send(settled);
    }
}

/// Runs and settles one delivery; true when it was acked or dead-lettered (its successor
/// with the same ordering key may go), false when it went back to the queue.
async fn run_one_inner(
    inner: &Inner,
    d: &Delivery,
    force: watch::Receiver<bool>,
    acks: &mpsc::UnboundedSender<Receipt>,
    after: Option<oneshot::Receiver<bool>>,
    job_name: String,
    prepared: Prepared,
) -> bool {
    let started = Instant::now();
    record_wait(inner, d, &job_name);
    let (fut, policy) = match prepared {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable message, dead-lettering");
            return settle_failure(
                inner,
                d,
                Failure::malformed(&e),
                RetryPolicy::none(),
                &job_name,
            )
            .await;
        }
    };
    // Wait for this key's predecessor (still running here) before anything else, keeping
    // the lease alive meanwhile: the job timeout and the idempotency claim start only
    // when the handler can start. On a per-key backend (SQS FIFO), a successor must not
    // overtake a predecessor that went back to the queue: it goes back too, and the
    // backend redelivers both in order. On a per-partition backend retries leave the
    // partition anyway, so it proceeds.
    if let Some(after) = after {
        let strict = inner.caps.ordering == crate::Ordering::PerKey;
        let wait = async move { after.await.unwrap_or(false) };
        let go = match supervise(inner, &[&d.receipt], Box::pin(wait), force.clone(), None).await {
            Ok(settled) => settled || !strict,
            Err(_) => false, // shutdown forced while waiting
        };
        if !go {
            give_back(inner, d).await;
            return false;
        }
    }
    let key = match claim(inner, d).await {
        Claim::Run(key) => key,
        Claim::Skip => {
            bump(&inner.counters.duplicates_skipped);
            let _ = acks.send(d.receipt.clone());
            return true;
        }
        Claim::Later => {
            // Another worker is running this key: look again after a lease.
            let delay = clamp_delay(&inner.caps, inner.config.lease);
            if let Err(e) = inner.driver.give_back(&inner.name, &d.receipt, delay).await {
                backend_error(inner, "could not defer message", Some(&d.id), &e);
            }
            return false;
        }
    };
    let timeout = inner.config.job_timeout;
    let ran = match supervise(inner, &[&d.receipt], fut(), force, timeout).await {
        Ok(Ok(())) => Ran::Done(vec![]),
        Ok(Err(e)) => Ran::Done(vec![(0, Failure::from_job(e))]),
        Err(Some(f)) => Ran::Done(vec![(0, f)]),
        Err(None) => Ran::Forced,
    };
    metrics::histogram!("queue_job_duration_seconds", "queue" => inner.name.clone(), "job" => job_name.clone())
        .record(started.elapsed().as_secs_f64());
    match ran {
        Ran::Forced => {
            release(inner, key.as_deref()).await;
            give_back(inner, d).await;
            false
        }
        Ran::Done(mut failures) => match failures.pop() {
            None => {
                settle_success(inner, d, key.as_deref(), acks, &job_name).await;
                true
            }
            Some((_, f)) => {
                release(inner, key.as_deref()).await;
                settle_failure(inner, d, f, policy, &job_name).await
            }
        },
    }
}

async fn run_batch(
    inner: Arc<Inner>,
    batch: Vec<Delivery>,
    _permit: OwnedSemaphorePermit,
    force: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<Receipt>,
) {
    let Mode::Batch(handler) = &inner.mode else {
        return;
    };
    let span = tracing::info_span!("batch", queue = %inner.name, size = batch.len());
    async {
        for d in &batch {
            record_wait(&inner, d, "batch");
        }
        let started = Instant::now();
        let receipts: Vec<&Receipt> = batch.iter().map(|d| &d.receipt).collect();
        let timeout = inner.config.job_timeout;
        let ran = match supervise(&inner, &receipts, handler(batch.clone()), force, timeout).await {
            Ok(failures) => Ran::Done(
                failures
                    .into_iter()
                    .map(|f| (f.index, Failure::from_job(f.error)))
                    .collect(),
            ),
            Err(Some(f)) => Ran::Done(
                (0..batch.len())
                    .map(|i| (i, f.clone()))
                    .collect(),
            ),
            Err(None) => Ran::Forced,
        };
        metrics::histogram!("queue_job_duration_seconds", "queue" => inner.name.clone(), "job" => "batch")
            .record(started.elapsed().as_secs_f64());
        match ran {
            Ran::Forced => {
                for d in &batch {
                    give_back(&inner, d).await;
                }
            }
            Ran::Done(failures) => {
                let mut failed: HashMap<usize, Failure> = failures
                    .into_iter()
                    .filter(|(i, _)| *i < batch.len())
                    .collect();
                for (i, d) in batch.iter().enumerate() {
                    match failed.remove(&i) {
                        None => settle_success(&inner, d, None, &acks, "batch").await,
                        Some(f) => {
                            settle_failure(&inner, d, f, inner.config.retry, "batch").await;
                        }
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

type Prepared = Result<(Thunk, RetryPolicy), DecodeError>;

/// Finds the handler for a delivery and decodes its payload.
fn prepare(inner: &Inner, d: &Delivery) -> (String, Prepared) {
    let Mode::Jobs { jobs, raw } = &inner.mode else {
        return (
            "batch".into(),
            Err(DecodeError::NotAnEnvelope("batch mode".into())),
        );
    };
    let default = inner.config.retry;
    if let Some(why) = d.headers.get(headers::MALFORMED) {
        return (
            "malformed".into(),
            Err(DecodeError::Undecodable(format!(
                "driver could not decode this message: {why}"
            ))),
        );
    }
    let raw_run = |raw: &RawFn| {
        let (raw, d) = (raw.clone(), d.clone());
        Ok((Box::new(move || raw(d)) as Thunk, default))
    };
    if let (true, Some(raw)) = (jobs.is_empty(), raw) {
        // Only a raw handler: no envelope to decode.
        return ("raw".into(), raw_run(raw));
    }
    let env = match decode_envelope(&d.payload) {
        Ok(env) => env,
        Err(e) => {
            return match raw {
                Some(raw) => ("raw".into(), raw_run(raw)),
                None => ("malformed".into(), Err(e)),
            }
        }
    };
    let name = env.job.clone();
    match (jobs.get(&name), raw) {
        (Some(reg), _) => {
            let ctx = JobContext {
                id: d.id.clone(),
                queue: d.queue.clone(),
                attempt: d.attempt,
                headers: d.headers.clone(),
                first_enqueued_at: d.first_enqueued_at,
                shutdown: inner.shutdown.clone(),
            };
            let policy = reg.retry.unwrap_or(default);
            (name, (reg.run)(env, ctx).map(|f| (f, policy)))
        }
        // Metric labels come from registered names only: a name read from a payload must
        // not create a new time series.
        (None, Some(raw)) => ("raw".into(), raw_run(raw)),
        (None, None) => {
            let mut known: Vec<String> = jobs.keys().cloned().collect();
            known.sort();
            let e = DecodeError::UnknownJob {
                name: name.clone(),
                known,
            };
            ("unknown".into(), Err(e))
        }
    }
}

enum Claim {
    Run(Option<String>),
    Skip,
    Later,
}

async fn claim(inner: &Inner, d: &Delivery) -> Claim {
    let Some((store, _)) = &inner.idempotency else {
        return Claim::Run(None);
    };
    let key = idempotency_key(d);
    let hold = inner
        .config
        .job_timeout
        .unwrap_or(inner.config.lease)
        .saturating_mul(2);
    match store.begin(&key, hold).await {
        Ok(Begin::Started) => Claim::Run(Some(key)),
        Ok(Begin::AlreadyDone) => Claim::Skip,
        Ok(Begin::InProgress) => Claim::Later,
        Err(e) => {
            // Without the store we cannot promise exactly-once effects: try again later
            // rather than risk a duplicate effect.
            backend_error(inner, "idempotency store failed", Some(&d.id), &e);
            Claim::Later
        }
    }
}

fn idempotency_key(d: &Delivery) -> String {
    d.headers
        .get(headers::IDEMPOTENCY_KEY)
        .cloned()
        .unwrap_or_else(|| d.id.as_str().to_string())
}

async fn release(inner: &Inner, key: Option<&str>) {
    if let (Some((store, _)), Some(key)) = (&inner.idempotency, key) {
        if let Err(e) = store.release(key).await {
            backend_error(inner, "could not release idempotency key", None, &e);
        }
    }
}

async fn settle_success(
    inner: &Inner,
    d: &Delivery,
    key: Option<&str>,
    acks: &mpsc::UnboundedSender<Receipt>,
    job: &str,
) {
    if let (Some((store, retention)), Some(key)) = (&inner.idempotency, key) {
        if let Err(e) = store.complete(key, *retention).await {
            backend_error(inner, "could not record idempotency key", Some(&d.id), &e);
        }
    }
    bump(&inner.counters.succeeded);
    metrics::counter!("queue_jobs_processed_total", "queue" => inner.name.clone(), "job" => job.to_string()).increment(1);
    if acks.send(d.receipt.clone()).is_err() {
        // The acker is gone only if the worker is being torn down; ack directly.
        if let Err(e) = inner
            .driver
            .ack(&inner.name, std::slice::from_ref(&d.receipt))
            .await
        {
            backend_error(inner, "direct ack failed", Some(&d.id), &e);
        }
    }
}

/// Retries or dead-letters a failed delivery; true when it was dead-lettered.
async fn settle_failure(
    inner: &Inner,
    d: &Delivery,
    f: Failure,
    policy: RetryPolicy,
    job: &str,
) -> bool {
    bump(&inner.counters.failed);
    metrics::counter!("queue_jobs_failed_total", "queue" => inner.name.clone(), "job" => job.to_string()).increment(1);
    let mut policy = policy;
    if let Some(n) = d
        .headers
        .get(headers::MAX_ATTEMPTS)
        .and_then(|v| v.parse::<u32>().ok())
    {
        policy.max_attempts = n.max(1);
    }
    match policy.decide(d.attempt, f.permanent, f.retry_after) {
        Decision::Retry(delay) => {
            tracing::info!(error = %f.error, ?delay, "job failed, will retry");
            bump(&inner.counters.retried);
            metrics::counter!("queue_jobs_retried_total", "queue" => inner.name.clone(), "job" => job.to_string()).increment(1);
            let delay = clamp_delay(&inner.caps, delay);
            if let Err(e) = inner.driver.nack(&inner.name, &d.receipt, delay).await {
                backend_error(
                    inner,
                    "nack failed; the message comes back when its lease ends",
                    Some(&d.id),
                    &e,
                );
            }
            false
        }
        Decision::DeadLetter => {
            tracing::warn!(error = %f.error, reason = f.kind.as_str(), "dead-lettering job");
            let reason = DeadLetterReason::new(f.kind, f.error, d.attempt);
            match inner.driver.dead_letter(d, &reason).await {
                Ok(()) => {
                    bump(&inner.counters.dead_lettered);
                    metrics::counter!("queue_jobs_dead_lettered_total", "queue" => inner.name.clone(), "job" => job.to_string()).increment(1);
                    true
                }
                Err(e) => {
                    backend_error(
                        inner,
                        "dead-lettering failed; the message comes back when its lease ends",
                        Some(&d.id),
                        &e,
                    );
                    false
                }
            }
        }
    }
}

fn clamp_delay(caps: &Capabilities, delay: Duration) -> Duration {
    match caps.max_nack_delay {
        Some(max) => delay.min(max),
        None => Duration::ZERO,
    }
}

fn record_wait(inner: &Inner, d: &Delivery, job: &str) {
    if let Ok(waited) = SystemTime::now().duration_since(d.first_enqueued_at) {
        metrics::histogram!("queue_job_wait_seconds", "queue" => inner.name.clone(), "job" => job.to_string())
            .record(waited.as_secs_f64());
    }
}
