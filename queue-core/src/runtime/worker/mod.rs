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
//! | undecodable payload | dead-letter at once, reason `malformed` |
//! | a job name no handler here knows | given back (no attempt) for [`Worker::unknown_job_grace`], then dead-lettered `unknown-job` |
//! | its runs never ended [`Worker::crash_limit`] times (with job status) | dead-letter without running, reason `crashed` |
//! | idempotency key already completed | ack without running |
//! | shutdown grace ran out | given back with no delay: back in the queue at once |
//! | idempotency key held by another worker | given back until its claim can end (one lease) |
//! | over a rate limit ([`Worker::rate_limit`]) | waits for its slot, or given back until it (no attempt) |
//! | [`JobError::snooze`] | given back after its delay, no attempt spent (within [`Worker::snooze_limit`] of its first enqueue; past it, an ordinary retry) |
//! | [`JobError::rate_limited`] | with a rate limit: its key paused, given back until the pause ends (no attempt); without one: retried after the pause |
//!
//! An *attempt* is a delivery that reached its handler. A delivery given back without
//! running (the last three rows above, and a per-key successor whose predecessor went
//! back) costs no attempt on backends that declare
//! [`Capabilities::give_back_keeps_attempt`] (memory, Redis, Kafka, SQS standard queues,
//! which return a fresh copy carrying its attempt count); on SQS FIFO the receive count
//! grows anyway (a copy would lose its place in its group), and each give-back there uses
//! one receive of the margin between `max_attempts` and the queue's `maxReceiveCount`.
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

mod checks;
mod claims;
mod config;
mod dispatch;
mod flows;
mod handler;
mod leases;
mod lifecycle;
mod limits;
mod meters;
mod receive;
mod settle;
mod signal;

pub use config::WorkerConfig;

pub use signal::shutdown_signal;

use crate::flow::Outcome;
use crate::status::JobState;
use checks::*;
use claims::*;
use dispatch::*;
use handler::{BatchFn, BoxFut, JobFn, RawFn, Thunk};
pub use handler::{ItemFailure, JobContext, JobError, JobResult};
use lifecycle::Tracked;
use meters::{JobMeters, Meters};
use receive::*;
use settle::*;

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
    /// Jobs cancelled through their status: skipped before they ran, or stopped by
    /// their cancel signal (acked either way).
    pub cancelled: u64,
    /// Deliveries given back because no handler here knows their job name (see
    /// [`Worker::unknown_job_grace`]).
    pub unknown_job: u64,
    /// Deliveries held or given back for a rate limit (or a handler's
    /// [`JobError::rate_limited`]) before they ran.
    pub rate_limited: u64,
    /// Jobs that snoozed ([`JobError::snooze`]): back in the queue after their delay,
    /// without spending an attempt.
    pub snoozed: u64,
    /// Debounced or replaced jobs acked without running: a later send under their key
    /// superseded them (see [`crate::debounce`]).
    pub superseded: u64,
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
    cancelled: AtomicU64,
    rate_limited: AtomicU64,
    unknown_job: AtomicU64,
    snoozed: AtomicU64,
    superseded: AtomicU64,
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
            cancelled: r(&self.cancelled),
            rate_limited: r(&self.rate_limited),
            unknown_job: r(&self.unknown_job),
            snoozed: r(&self.snoozed),
            superseded: r(&self.superseded),
            backend_errors: r(&self.backend_errors),
            crashed: self.crashed.load(AtomicOrdering::Relaxed),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, AtomicOrdering::Relaxed);
}

#[derive(Clone)]
struct Registered {
    run: JobFn,
    retry: Option<RetryPolicy>,
}

#[derive(Clone)]
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
#[must_use = "a worker does nothing until start() is called"]
pub struct Worker {
    queue: Queue,
    mode: Mode,
    config: WorkerConfig,
    idempotency: Option<(Arc<dyn IdempotencyStore>, Duration)>,
    limits: limits::Settings,
    fair: Option<crate::fair::Fairness>,
    /// The relay's worker: a message's own max-attempts header is for its final
    /// consumer, not for forwarding it.
    own_attempts_only: bool,
    /// Builder calls that cannot both hold (two handlers for one job, per-job and batch
    /// handlers, `config` after other settings): [`Worker::start`] refuses them by name.
    mistakes: Vec<String>,
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
            .field("limits", &self.limits)
            .field("fair", &self.fair)
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
            limits: limits::Settings::default(),
            fair: None,
            own_attempts_only: false,
            mistakes: Vec::new(),
        }
    }

    /// Retries by this worker's policies only, ignoring messages' max-attempts headers
    /// (the relay's worker: those are for the final consumer).
    pub(crate) fn own_attempts_only(mut self) -> Self {
        self.own_attempts_only = true;
        self
    }

    /// Reads every shard of the queue in turn, sharing this worker's slots between them,
    /// so that one key's backlog does not starve the others (see [`crate::fair`]). Pair it
    /// with a producer made [`fair`](crate::Producer::fair) with the same shard count.
    pub fn fair(mut self, fairness: crate::fair::Fairness) -> Self {
        self.fair = Some(fairness);
        self
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
                if jobs.insert(J::NAME.to_string(), reg).is_some() {
                    self.mistakes
                        .push(format!("two handlers for job {:?}", J::NAME));
                }
            }
            Mode::Batch(_) => self.mistakes.push(format!(
                "a handler for job {:?} and a batch handler (a worker has one or the other)",
                J::NAME
            )),
        }
        self
    }

    /// Registers the handler for job type `J` whose value is the job's result: with job
    /// status on, it is stored with the job's status when the handler succeeds (see
    /// [`JobContext::set_result`]; without job status the value is dropped).
    ///
    /// ```
    /// # use queue_core::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Sum { a: i64, b: i64 }
    /// # impl Job for Sum { const NAME: &'static str = "sum"; }
    /// # fn w(q: Queue) -> Worker {
    /// q.worker().handle_returning(|job: Sum, _ctx: JobContext| async move {
    ///     Ok::<_, JobError>(job.a + job.b)
    /// })
    /// # }
    /// ```
    pub fn handle_returning<J, O, F, Fut>(self, f: F) -> Self
    where
        J: Job,
        O: serde::Serialize + Send + 'static,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.handle(move |job: J, ctx: JobContext| {
            let f = f.clone();
            async move {
                let out = f(job, ctx.clone()).await?;
                ctx.set_result(&out);
                Ok(())
            }
        })
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
            Mode::Jobs { raw, .. } => {
                if raw.replace(f).is_some() {
                    self.mistakes.push("two raw handlers".into());
                }
            }
            Mode::Batch(_) => self
                .mistakes
                .push("a raw handler and a batch handler (a worker has one or the other)".into()),
        }
        self
    }

    /// Uses one handler for whole batches of raw deliveries (up to
    /// [`batch_size`](Worker::batch_size)); it returns the items that failed, and each of
    /// those is retried or dead-lettered on its own. A worker has either a batch handler or
    /// per-job handlers: registering both is refused by [`Worker::start`].
    pub fn handle_batch<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<ItemFailure>> + Send + 'static,
    {
        match &self.mode {
            Mode::Batch(_) => self.mistakes.push("two batch handlers".into()),
            Mode::Jobs { jobs, raw } if !jobs.is_empty() || raw.is_some() => self.mistakes.push(
                "per-job handlers and a batch handler (a worker has one or the other)".into(),
            ),
            Mode::Jobs { .. } => {}
        }
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
    /// Accepts retry policies whose waits exceed what the backend can hold a message back
    /// ([`Capabilities::max_nack_delay`]; Kafka: 15 minutes by default): each such wait is
    /// cut to the maximum (and logged). Without it, [`Worker::start`] refuses them.
    pub fn clamp_retry_delays(mut self) -> Self {
        self.config.clamp_retry_delays = true;
        self
    }
    /// Declares that this worker serves only the job types it registers, on a queue shared
    /// with workers that serve the others: unknown job types are given back for them,
    /// never dead-lettered. See [`WorkerConfig::shared_queue`].
    pub fn shared_queue(mut self) -> Self {
        self.config.shared_queue = true;
        self
    }
    /// After how many runs that never ended a job is dead-lettered `crashed` (0: never).
    /// See [`WorkerConfig::crash_limit`].
    pub fn crash_limit(mut self, n: u32) -> Self {
        self.config.crash_limit = n;
        self
    }
    /// Keeps rate limits and per-key concurrency in this process alone when the backend has
    /// no shared store: each process allows the whole limit (right for one process, or
    /// the in-memory backend). Without it, [`Worker::start`] refuses limits without a
    /// shared store. See [`WorkerConfig::local_only`].
    pub fn local_only(mut self) -> Self {
        self.config.local_only = true;
        self
    }
    /// How long a job no handler here knows is given back for another worker before it
    /// is dead-lettered as `unknown-job` (at most 30 days; zero: at once). See
    /// [`WorkerConfig::unknown_job_grace`].
    pub fn unknown_job_grace(mut self, grace: Duration) -> Self {
        self.config.unknown_job_grace = grace;
        self
    }
    /// How long after its first enqueue a job may still snooze without spending an
    /// attempt (at most 366 days). See [`WorkerConfig::snooze_limit`].
    pub fn snooze_limit(mut self, limit: Duration) -> Self {
        self.config.snooze_limit = limit;
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
    /// Replaces the whole configuration. Call it before the single settings
    /// ([`concurrency`](Worker::concurrency), [`lease`](Worker::lease), ...), which then
    /// adjust it: after one of them it would undo that setting, and [`Worker::start`]
    /// refuses the worker.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        if self.config != WorkerConfig::default() {
            self.mistakes.push(
                "config() after single settings, which it would undo: call config() first".into(),
            );
        }
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
    /// size over the backend's batch limit, an ack linger over 10 s, a retry policy with zero
    /// attempts or more attempts than the backend's native dead-lettering allows
    /// ([`Capabilities::max_receives`]), a retry policy waiting longer between attempts
    /// than the backend can hold a message back ([`Capabilities::max_nack_delay`]) unless
    /// [`Worker::clamp_retry_delays`] accepts the cut, no handler at all, two handlers for
    /// one job (or per-job and batch handlers, or `config` after single settings), a
    /// batch handler with idempotency (batch handlers do not honour idempotency keys), and
    /// rate limits or per-key concurrency on a backend without a shared store unless
    /// [`Worker::local_only`] accepts per-process limits. A wait a handler asks for at run
    /// time (`JobError::retry_after`) past that maximum is cut to it, with a log line.
    pub fn start(self) -> QResult<WorkerHandle> {
        if !self.mistakes.is_empty() {
            return Err(QueueError::InvalidOption(format!(
                "this worker's builder calls contradict each other: {}",
                self.mistakes.join("; ")
            )));
        }
        if matches!(&self.mode, Mode::Jobs { jobs, raw } if jobs.is_empty() && raw.is_none()) {
            return Err(QueueError::InvalidOption(
                "the worker has no handler: register one with handle, handle_returning, \
                 handle_raw or handle_batch before start (it would dead-letter every job)"
                    .into(),
            ));
        }
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
        if matches!(self.mode, Mode::Batch(_)) && self.limits.any() {
            return Err(QueueError::InvalidOption(
                "rate limits and per-key concurrency are not applied to batch handlers: use \
                 per-job handlers"
                    .into(),
            ));
        }
        self.limits.check()?;
        if self.config.shared_queue && caps.lease == crate::LeaseModel::Session {
            return Err(QueueError::InvalidOption(format!(
                "shared_queue: on {} a job given back stays with this worker's consumer \
                 (its partition's session), so it would never reach a worker that serves \
                 it: give each job type a queue of its own there",
                self.queue.driver().kind()
            )));
        }
        if self.limits.any() && self.queue.backend().store().is_none() && !self.config.local_only {
            return Err(QueueError::InvalidOption(
                "rate limits and per-key concurrency hold across workers only through a \
                 shared store, and this backend has none: give it one \
                 (Backend::with_store or Backend::with_status, e.g. a Redis or PostgreSQL \
                 store), or call Worker::local_only() to limit each process on its own"
                    .into(),
            ));
        }
        check_native_dlq(&self.config, &self.mode, &caps)?;
        check_retry_delays(&self.config, &self.mode, &caps, self.queue.driver().kind())?;
        let shards = self.fair.as_ref().map_or(1, |f| f.shards());
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let lease = self.config.lease;
        let names: Vec<String> = match &self.mode {
            Mode::Jobs { jobs, .. } => jobs.keys().cloned().collect(),
            Mode::Batch(_) => Vec::new(),
        };
        let home = self.queue.name().to_string();
        let limits =
            limits::Limits::build(self.limits, self.queue.backend().store().cloned(), lease)
                .map(Arc::new);
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let meters = Arc::new(Meters::new(&home, names.iter()));
        let shutdown = CancellationToken::new();
        let stopping = CancellationToken::new();
        let inners: Vec<Arc<Inner>> = (0..shards)
            .map(|i| {
                Arc::new(Inner {
                    meters: meters.clone(),
                    driver: self.queue.driver().clone(),
                    shutdown: shutdown.clone(),
                    stopping: stopping.clone(),
                    name: crate::fair::Fairness::shard_name(&home, i),
                    home: home.clone(),
                    primary: i == 0,
                    fair: shards > 1,
                    own_attempts_only: self.own_attempts_only,
                    mode: self.mode.clone(),
                    config: self.config.clone(),
                    idempotency: self.idempotency.clone(),
                    caps: caps.clone(),
                    counters: counters.clone(),
                    limits: limits.clone(),
                    status: self.queue.backend().status().map(|s| s.for_worker()),
                    running: Mutex::new(HashMap::new()),
                    never_cancelled: CancellationToken::new(),
                    leases: leases::Leases::default(),
                    backend: self.queue.backend().clone(),
                })
            })
            .collect();
        let watched = counters.clone();
        let join = tokio::spawn(async move {
            // Each loop runs in its own task so that a panic in it is caught and reported
            // (WorkerReport::crashed, last_error) instead of leaving a silent dead worker.
            // Aborting this task drops the set, which aborts the loops with it.
            let mut loops = JoinSet::new();
            for inner in inners {
                loops.spawn(run(inner, stop_rx.clone(), slots.clone()));
            }
            while let Some(done) = loops.join_next().await {
                let Err(e) = done else { continue };
                if watched.crashed.load(AtomicOrdering::Relaxed) {
                    continue; // a loop aborted below
                }
                let why = if e.is_panic() {
                    panic_message(e.into_panic())
                } else {
                    "cancelled".to_string()
                };
                tracing::error!(error = %why, "worker loop died; the worker stopped");
                watched.crashed.store(true, AtomicOrdering::Relaxed);
                *watched.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("worker loop died: {why}"));
                // A fair worker's other loops stop with it, as one loop would.
                loops.abort_all();
            }
            // The loops share one set of counters.
            watched.snapshot()
        });
        Ok(WorkerHandle {
            stop: stop_tx,
            stopping: stopping.drop_guard(),
            join,
            counters,
        })
    }

    /// Runs until `signal` completes (e.g. [`shutdown_signal()`]: SIGTERM or Ctrl-C), then shuts down
    /// gracefully and returns the report.
    pub async fn run_until<F: Future>(self, signal: F) -> QResult<WorkerReport> {
        let handle = self.start()?;
        signal.await;
        Ok(handle.shutdown().await)
    }
}

impl Queue {
    /// A worker for this queue: register handlers, tune it, then `start()` it.
    pub fn worker(&self) -> Worker {
        Worker::new(self.clone())
    }
}

/// A running worker. Dropping it stops the worker (as [`WorkerHandle::shutdown`] would,
/// without waiting): keep it for as long as the worker should run.
#[must_use = "dropping the handle stops the worker"]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    /// Fires (when shutting down, or dropped) to cut short the loops' long polls.
    stopping: tokio_util::sync::DropGuard,
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
        // Ends a long poll in progress at once (ReceiveOptions::cancel).
        drop(self.stopping);
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
    /// Fired when shutdown begins: cuts short a receive's wait ([`ReceiveOptions::cancel`]).
    stopping: CancellationToken,
    /// The queue this loop receives from: the worker's queue, or one of its fair shards.
    name: String,
    /// The worker's queue: what pause, rate limits and metrics are kept under.
    home: String,
    /// The first of a fair worker's loops (the only loop of any other worker): runs the
    /// tasks the loops share.
    primary: bool,
    /// One of a fair worker's loops: it polls without waiting while its shard is busy,
    /// and waits for the next message without a slot once it is empty.
    fair: bool,
    /// Ignore messages' max-attempts headers (the relay's worker).
    own_attempts_only: bool,
    mode: Mode,
    config: WorkerConfig,
    idempotency: Option<(Arc<dyn IdempotencyStore>, Duration)>,
    caps: Capabilities,
    counters: Arc<Counters>,
    meters: Arc<Meters>,
    /// Job status, when the backend records it.
    status: Option<crate::status::JobStatuses>,
    /// Rate limits, when set.
    limits: Option<Arc<limits::Limits>>,
    /// Cancel signals of the jobs running now, by id (only with job status on).
    running: Mutex<HashMap<String, CancellationToken>>,
    /// The cancel signal of every job when job status is off: never fired.
    never_cancelled: CancellationToken,
    /// The running jobs' leases, extended by this loop's one extender.
    leases: leases::Leases,
    /// The backend, for the layers that send (a flow's worker sends the jobs it releases).
    backend: crate::Backend,
}
