//! Job status: what became of a job, by the id its producer got back.
//!
//! Turn it on with [`Backend::with_status`](crate::Backend::with_status); then every
//! producer of that backend records each job as `queued` when its send returns `Ok`, every
//! worker records its runs, and any process holding a [`JobStatuses`] over the same
//! [`Store`] reads the status or cancels the job. This is the state machine, the same for
//! every queue backend and every store:
//!
//! ```text
//!   queued ──► running ──► succeeded
//!     │  ▲        │ ├────► failed ──► running (the retry)     failed: an attempt failed,
//!     │  └────────┘ │        │                                        a retry is scheduled
//!     │  given back └────► dead ───► running (after a redrive)
//!     │  (shutdown) │
//!     └───────────► cancelled ◄──── failed (cancel while waiting for the retry)
//!       cancel      ▲
//!                   └── running, once the handler stops after its cancel signal
//! ```
//!
//! - `succeeded` and `cancelled` are final: a duplicate delivery of a succeeded job may
//!   still run (at-least-once; the idempotency layer is what skips it), but its record
//!   stays `succeeded`; a delivery of a cancelled job is acked without running.
//! - `dead` is final until an operator redrives the job: its next run makes it `running`.
//! - Cancelling a `queued` or `failed` job makes it `cancelled` at once. Cancelling a
//!   `running` job sets `cancel_requested`; the worker checks its running jobs every
//!   [`CANCEL_POLL`] and fires the job's [`JobContext::cancel`](crate::JobContext) token.
//!   When the handler then stops with an error the job becomes `cancelled` and is acked,
//!   not retried; a handler that finishes its work anyway makes it `succeeded`.
//!   Cancelling a finished job is [`QueueError::JobFinished`]; an unknown or expired id is
//!   [`QueueError::JobNotFound`].
//! - A status write that fails never fails the job: the send still returns its id, the
//!   job still runs and is settled; the failure is logged and counted
//!   (`queue_status_write_errors_total`, and the worker's `backend_errors`).
//! - Records expire by [`Retention`], per state, enforced by the store.
//!
//! Writes are compare-and-set on the record's version ([`Store::replace`]), so a cancel
//! racing a worker's start or finish is never lost and never overwrites a later state.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{QueueError, Result};
use crate::message::unix_millis;
use crate::store::{self, Store};

pub(crate) mod batch;
mod record;
use batch::Submitted;
use record::{End, StartArgs};

/// How often a worker asks the store whether one of its running jobs was cancelled.
pub const CANCEL_POLL: Duration = Duration::from_millis(500);

/// Where a job is in its life. See the [module docs](self) for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Sent, waiting for a worker (or given back to the queue at a worker's shutdown).
    Queued,
    /// A handler is running it.
    Running,
    /// An attempt failed; a retry is scheduled.
    Failed,
    /// Done: the handler succeeded.
    Succeeded,
    /// In the dead-letter queue (attempts used up, a permanent error, or malformed).
    Dead,
    /// Cancelled before it ran, or stopped by its cancel signal.
    Cancelled,
}

impl JobState {
    /// `succeeded`, `dead` and `cancelled`: nothing more happens unless an operator
    /// redrives a dead job.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// The state's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Failed => "failed",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A running job's progress, as its handler last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// What the job is doing, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The longest progress message kept (bytes); a longer one is an error.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;

impl Progress {
    /// `percent` (0 to 100) done, with an optional message of at most
    /// [`MAX_PROGRESS_MESSAGE`] bytes.
    pub fn new(percent: u8, message: Option<String>) -> Result<Self> {
        if percent > 100 {
            return Err(QueueError::InvalidOption(format!(
                "progress must be 0 to 100 percent, got {percent}"
            )));
        }
        if message
            .as_ref()
            .is_some_and(|m| m.len() > MAX_PROGRESS_MESSAGE)
        {
            return Err(QueueError::InvalidOption(format!(
                "a progress message must be at most {MAX_PROGRESS_MESSAGE} bytes"
            )));
        }
        Ok(Progress { percent, message })
    }
}

/// One job's record. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobStatus {
    /// The id [`Producer::send`](crate::Producer::send) returned.
    pub id: String,
    /// The queue it was sent to.
    pub queue: String,
    /// Its job name ([`Job::NAME`](crate::Job::NAME)), when sent as a typed job.
    #[serde(default)]
    pub job: Option<String>,
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far (1 while the first runs).
    pub attempt: u32,
    /// When its send returned (or, when the producer's write was missed, when a worker
    /// first saw it).
    pub enqueued_at: u64,
    /// When its latest attempt started.
    #[serde(default)]
    pub started_at: Option<u64>,
    /// When it reached `succeeded`, `dead` or `cancelled`.
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// The latest attempt's error, or why its result was not kept.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The latest progress its handler reported.
    #[serde(default)]
    pub progress: Option<Progress>,
    /// What its handler returned ([`JobContext::set_result`](crate::JobContext::set_result)).
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// Someone asked to cancel it while it ran.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Runs in a row that started and never ended: the process died (an abort, out of
    /// memory, a native crash, a kill) or the job was started again while it still ran
    /// (its lease ran out, or a Kafka rebalance moved its partition). A run that ends, in
    /// any state, resets it, and so does a redrive. At the worker's
    /// [`crash_limit`](crate::Worker::crash_limit) the job is dead-lettered `crashed`.
    #[serde(default)]
    pub crashes: u32,
}

impl JobStatus {
    fn new(id: &str, queue: &str, job: Option<&str>, state: JobState, now: u64) -> Self {
        JobStatus {
            id: id.to_string(),
            queue: queue.to_string(),
            job: job.map(str::to_string),
            state,
            attempt: 0,
            enqueued_at: now,
            started_at: None,
            finished_at: None,
            last_error: None,
            progress: None,
            result: None,
            cancel_requested: false,
            crashes: 0,
        }
    }
}

/// How long records are kept, per state; each write restarts its record's clock. Defaults:
/// unfinished (`queued`, `running`, `failed`) 7 days, `succeeded` 1 day, `dead` 7 days,
/// `cancelled` 1 day (BullMQ and Sidekiq keep finished jobs for similar spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// `queued`, `running` and `failed` records.
    pub unfinished: Duration,
    /// `succeeded` records.
    pub succeeded: Duration,
    /// `dead` records.
    pub dead: Duration,
    /// `cancelled` records.
    pub cancelled: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for Retention {
    fn default() -> Self {
        Retention {
            unfinished: 7 * DAY,
            succeeded: DAY,
            dead: 7 * DAY,
            cancelled: DAY,
        }
    }
}

impl Retention {
    /// How long a record in `state` is kept.
    pub fn for_state(&self, state: JobState) -> Duration {
        match state {
            JobState::Succeeded => self.succeeded,
            JobState::Dead => self.dead,
            JobState::Cancelled => self.cancelled,
            JobState::Queued | JobState::Running | JobState::Failed => self.unfinished,
        }
    }
}

/// What [`JobStatuses::cancel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job had not started (or was waiting for a retry): it is `cancelled` now and
    /// will not run.
    Cancelled,
    /// The job is running: its handler's cancel signal fires within about
    /// [`CANCEL_POLL`]; the state becomes `cancelled` when the handler stops.
    Requested,
}

/// The default limit on a stored result (bytes of JSON).
pub const DEFAULT_MAX_RESULT: usize = 64 * 1024;

/// Job status over a [`Store`]: read, cancel, and (for producers and workers of a backend
/// given it with [`Backend::with_status`](crate::Backend::with_status)) record.
///
/// Recording costs the store few round trips per job: a producer records a send batch's
/// `queued` records in one [`Store::write_many`]; the starts and ends of the jobs a
/// process runs at once are gathered into one [`Store::get_many`] and one
/// [`Store::write_many`] per batch; an end needs no read when nothing changed
/// the record since its start; the cancel watcher reads every running job's record in one
/// call per [`CANCEL_POLL`].
#[derive(Clone)]
pub struct JobStatuses {
    core: Arc<Core>,
    batcher: Arc<batch::Batcher>,
}

/// What every copy of a [`JobStatuses`] shares, and its batcher's task holds.
#[derive(Clone)]
struct Core {
    store: Arc<dyn Store>,
    retention: Retention,
    max_result: usize,
}

impl fmt::Debug for JobStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStatuses")
            .field("store", &self.core.store)
            .field("retention", &self.core.retention)
            .field("max_result", &self.core.max_result)
            .finish()
    }
}

/// How often a compare-and-set write is tried before it gives up (only a storm of writers
/// to one record could use them all: a record has one worker and rare cancels).
const CAS_TRIES: usize = 32;

/// What a worker does with a delivery, by its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    Run,
    /// Cancelled before it ran: ack without running.
    Cancelled,
    /// Its runs ended without settling this many times, the crash limit: recorded `dead`;
    /// dead-letter it `crashed` without running.
    Crashed(u32),
}

/// A record as this process last wrote it, and the version it got: an end can then be
/// written without reading the record first.
pub(crate) type Written = (JobStatus, u64);

/// The error a job dead-lettered `crashed` carries.
pub(crate) fn crashed_error(crashes: u32) -> String {
    format!(
        "{crashes} runs started and never ended (the process died in the handler, or the \
         lease ran out while it ran): dead-lettered so that it stops taking workers down"
    )
}

impl JobStatuses {
    /// Records in `store`, kept per [`Retention::default`], results up to
    /// [`DEFAULT_MAX_RESULT`] bytes.
    pub fn new(store: Arc<dyn Store>) -> Self {
        JobStatuses {
            core: Arc::new(Core {
                store,
                retention: Retention::default(),
                max_result: DEFAULT_MAX_RESULT,
            }),
            batcher: Arc::default(),
        }
    }

    /// Sets how long records are kept (each 1 ms to [`store::MAX_TTL`]).
    pub fn retention(mut self, retention: Retention) -> Result<Self> {
        for (what, d) in [
            ("unfinished", retention.unfinished),
            ("succeeded", retention.succeeded),
            ("dead", retention.dead),
            ("cancelled", retention.cancelled),
        ] {
            store::check("k", d)
                .map_err(|e| QueueError::InvalidOption(format!("retention of {what}: {e}")))?;
        }
        Arc::make_mut(&mut self.core).retention = retention;
        // A batcher already started works with the settings it started with.
        self.batcher = Arc::default();
        Ok(self)
    }

    /// Sets the largest result kept, in bytes of JSON (1 to 16 MiB). A larger result is
    /// not stored: the job still succeeds, and `last_error` says why the result is absent.
    pub fn max_result_bytes(mut self, n: usize) -> Result<Self> {
        if n == 0 || n > 16 << 20 {
            return Err(QueueError::InvalidOption(format!(
                "max_result_bytes must be 1 to 16 MiB, got {n}"
            )));
        }
        Arc::make_mut(&mut self.core).max_result = n;
        self.batcher = Arc::default();
        Ok(self)
    }

    /// A copy for one worker, with a batcher of its own, on the worker's runtime.
    pub(crate) fn for_worker(&self) -> Self {
        JobStatuses {
            core: self.core.clone(),
            batcher: Arc::default(),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.core.store
    }

    /// The job's record, or `None` for an unknown or expired id.
    pub async fn get(&self, id: &str) -> Result<Option<JobStatus>> {
        Ok(self.core.read(id).await?.map(|(s, _)| s))
    }

    /// Cancels a job from any process. See [`CancelOutcome`]; a finished job is
    /// [`QueueError::JobFinished`], an unknown one [`QueueError::JobNotFound`].
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome> {
        let mut outcome = Err(QueueError::JobNotFound(id.to_string()));
        self.core
            .update(id, |rec| {
                outcome = Err(QueueError::JobNotFound(id.to_string()));
                let mut rec = rec?;
                let (result, write) = match rec.state {
                    JobState::Queued | JobState::Failed => {
                        rec.state = JobState::Cancelled;
                        rec.finished_at = Some(now());
                        (Ok(CancelOutcome::Cancelled), true)
                    }
                    JobState::Running => {
                        let first = !rec.cancel_requested;
                        rec.cancel_requested = true;
                        (Ok(CancelOutcome::Requested), first)
                    }
                    state => (
                        Err(QueueError::JobFinished {
                            id: id.to_string(),
                            state,
                        }),
                        false,
                    ),
                };
                outcome = result;
                write.then_some(rec)
            })
            .await?;
        outcome
    }

    /// Records sent jobs as `queued` (each `(id, queue)`), unless a worker already wrote
    /// a job's record: one store call for the whole send.
    pub(crate) async fn queued(&self, sent: &[(&str, &str)], job: Option<&str>) -> Result<()> {
        let at = now();
        let ttl = self.core.retention.for_state(JobState::Queued);
        let keys: Vec<String> = sent.iter().map(|(id, _)| key(id)).collect();
        let values = sent
            .iter()
            .map(|(id, queue)| encode(&JobStatus::new(id, queue, job, JobState::Queued, at)))
            .collect::<Result<Vec<_>>>()?;
        let mut writes = Vec::with_capacity(sent.len());
        for ((k, v), (id, _)) in keys.iter().zip(&values).zip(sent) {
            // An id too long for a key is not recorded; the others are.
            match store::check(k, ttl) {
                Ok(()) => writes.push(store::Write::insert(k, v, ttl)),
                Err(e) => write_failed("queued", id, &e),
            }
        }
        // One id twice in a send (a caller's own ids) would name one key twice.
        if store::check_distinct(keys.iter().map(String::as_str)).is_err() {
            for w in &writes {
                if let Err(e) = self.core.store.insert(w.key, w.value, ttl).await {
                    write_failed("queued", w.key.trim_start_matches("status:"), &e);
                }
            }
            return Ok(());
        }
        self.core.store.write_many(&writes).await.map(|_| ())
    }

    /// Records the start of an attempt; says to skip a cancelled job, or to dead-letter
    /// one whose runs ended without settling `crash_limit` times (0: never). Returns the
    /// record as written, for [`finish`](Self::finish).
    ///
    /// A record still `running` when a run starts is a run that never ended: the process
    /// died in it, or its lease ran out while it still ran. Counting those here costs no
    /// write of its own (this one is made anyway), and works on every backend, Kafka
    /// included, whose redelivery after a crash carries no count.
    pub(crate) async fn start(
        &self,
        id: &str,
        queue: &str,
        job: Option<&str>,
        attempt: u32,
        crash_limit: u32,
    ) -> Result<(Start, Option<Written>)> {
        let args = StartArgs::new(queue, job, attempt, crash_limit);
        match self
            .batcher
            .submit(&self.core, id, batch::Op::Start(args))
            .await
        {
            Submitted::Done(batch::Done::Start(start, written)) => Ok((start, written)),
            Submitted::Done(batch::Done::Failed(e)) => Err(e),
            Submitted::Done(batch::Done::Finished) => Err(QueueError::backend(
                "status store",
                "a start answered as an end",
            )),
            // No batcher (no runtime to run it in): on our own.
            Submitted::NotTaken(batch::Op::Start(args)) => self.core.start_one(id, &args).await,
            Submitted::NotTaken(_) => Err(QueueError::backend(
                "status store",
                "a start given back as an end",
            )),
        }
    }

    /// Whether someone asked to cancel each of these running jobs: one read for all.
    pub(crate) async fn cancel_requested(&self, ids: &[&str]) -> Result<Vec<bool>> {
        let keys: Vec<String> = ids.iter().map(|id| key(id)).collect();
        for k in &keys {
            store::check(k, Duration::from_secs(1))?;
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = self.core.store.get_many(&refs).await?;
        if got.len() != ids.len() {
            return Err(short_answer(ids.len(), got.len()));
        }
        Ok(got
            .into_iter()
            .zip(ids)
            .map(
                |(v, id)| match v.map(|v| decode(id, &v.value)).transpose() {
                    Ok(r) => r.is_some_and(|r| r.cancel_requested && r.state == JobState::Running),
                    Err(e) => {
                        tracing::warn!(id, error = %e, "could not read job status");
                        false
                    }
                },
            )
            .collect())
    }

    /// Records a running job's progress; returns the record as written.
    pub(crate) async fn progress(&self, id: &str, p: Progress) -> Result<Option<Written>> {
        let (rec, version) = self
            .core
            .update(id, |rec| {
                let mut rec = rec.filter(|r| r.state == JobState::Running)?;
                rec.progress = Some(p.clone());
                Some(rec)
            })
            .await?;
        Ok(rec.zip(version))
    }

    /// Records how an attempt ended. `written`: the record as this process last wrote it
    /// (from [`start`](Self::start)); when the store still holds that version, the end is
    /// one write with no read.
    pub(crate) async fn finish(
        &self,
        id: &str,
        state: JobState,
        error: Option<String>,
        result: Option<std::result::Result<serde_json::Value, String>>,
        written: Option<Written>,
    ) -> Result<()> {
        let end = self.core.end(state, error, result, id);
        match self
            .batcher
            .submit(
                &self.core,
                id,
                batch::Op::Finish(end, written.map(Box::new)),
            )
            .await
        {
            Submitted::Done(batch::Done::Finished) => Ok(()),
            Submitted::Done(batch::Done::Failed(e)) => Err(e),
            Submitted::Done(batch::Done::Start(..)) => Err(QueueError::backend(
                "status store",
                "an end answered as a start",
            )),
            Submitted::NotTaken(batch::Op::Finish(end, _)) => self.core.finish_one(id, &end).await,
            Submitted::NotTaken(_) => Err(QueueError::backend(
                "status store",
                "an end given back as a start",
            )),
        }
    }
}

/// A store's batch call answered for fewer (or more) entries than it was asked about.
fn short_answer(asked: usize, got: usize) -> QueueError {
    QueueError::backend(
        "status store",
        format!("a batch call about {asked} entries answered for {got}"),
    )
}

fn decode(id: &str, bytes: &[u8]) -> Result<JobStatus> {
    serde_json::from_slice(bytes).map_err(|e| {
        QueueError::backend(
            "status store",
            format!("record of job {id:?} unreadable: {e}"),
        )
    })
}

fn key(id: &str) -> String {
    format!("status:{id}")
}

fn now() -> u64 {
    unix_millis(SystemTime::now())
}

fn encode(rec: &JobStatus) -> Result<Vec<u8>> {
    serde_json::to_vec(rec).map_err(|e| QueueError::backend("status store", e))
}

/// Logs and counts a status write that failed; the job goes on regardless.
pub(crate) fn write_failed(what: &str, id: &str, e: &QueueError) {
    metrics::counter!("queue_status_write_errors_total").increment(1);
    tracing::warn!(id, error = %e, "job status: {what} not recorded");
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(s: &JobStatuses) -> Start {
        s.start("j", "q", Some("job"), 1, 3).await.expect("start").0
    }

    /// Runs in a row that never ended count; one that ends resets the count, and so does
    /// a redrive of the job `crashed` dead-lettered (it runs again, not dead at once).
    #[tokio::test]
    async fn crashes_count_runs_in_a_row_that_never_ended() {
        let s = JobStatuses::new(Arc::new(crate::MemoryStore::new()));
        s.queued(&[("j", "q")], Some("job")).await.unwrap();
        assert!(matches!(start(&s).await, Start::Run));
        assert!(matches!(start(&s).await, Start::Run)); // the first never ended: 1
        s.finish("j", JobState::Failed, Some("boom".into()), None, None)
            .await
            .unwrap();
        assert_eq!(s.get("j").await.unwrap().unwrap().crashes, 0, "a run ended");
        for _ in 0..3 {
            assert!(matches!(start(&s).await, Start::Run));
        }
        assert!(matches!(start(&s).await, Start::Crashed(3)));
        let dead = s.get("j").await.unwrap().unwrap();
        assert_eq!((dead.state, dead.crashes), (JobState::Dead, 3), "{dead:?}");
        // Redriven: it starts afresh.
        assert!(matches!(start(&s).await, Start::Run));
        assert_eq!(s.get("j").await.unwrap().unwrap().crashes, 0);
        // Limit 0: never.
        for _ in 0..5 {
            let r = s.start("j", "q", Some("job"), 1, 0).await.unwrap();
            assert!(matches!(r.0, Start::Run));
        }
    }
}
