//! What handlers see and return: the job context, job errors, batch item failures.

use super::*;

pub(super) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A decoded job, ready to run once the idempotency claim allows it.
pub(super) type Thunk = Box<dyn FnOnce() -> BoxFut<JobResult> + Send>;
pub(super) type JobFn =
    Arc<dyn Fn(RawEnvelope, JobContext) -> Result<Thunk, DecodeError> + Send + Sync>;
pub(super) type RawFn = Arc<dyn Fn(Delivery) -> BoxFut<JobResult> + Send + Sync>;
pub(super) type BatchFn = Arc<dyn Fn(Vec<Delivery>) -> BoxFut<Vec<ItemFailure>> + Send + Sync>;

/// What a handler returns.
pub type JobResult = Result<(), JobError>;

/// A handler's failure: retryable (the default) or permanent.
///
/// Any `std::error::Error` converts into a retryable `JobError` with `?`; use
/// [`JobError::permanent`] for failures a retry cannot fix (bad input, a deleted account).
pub struct JobError {
    pub(super) message: String,
    pub(super) permanent: bool,
    pub(super) retry_after: Option<Duration>,
    pub(super) rate_limited: Option<Duration>,
    pub(super) snooze: Option<Duration>,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retry(e: impl fmt::Display) -> Self {
        JobError {
            message: e.to_string(),
            permanent: false,
            retry_after: None,
            rate_limited: None,
            snooze: None,
        }
    }
    /// A failure no retry can fix: the job goes straight to the dead-letter queue.
    pub fn permanent(e: impl fmt::Display) -> Self {
        JobError {
            message: e.to_string(),
            permanent: true,
            retry_after: None,
            rate_limited: None,
            snooze: None,
        }
    }
    /// The remote service asked to be left alone for `pause` (an HTTP 429 with
    /// Retry-After): with a per-key rate limit the job's key pauses for that long (with a
    /// queue limit, the queue), and the job goes back to the queue until then *without
    /// counting an attempt*. See [`crate::limit`]. A worker with no rate limit has nothing
    /// to pause: there the job is retried after `pause` like any failure
    /// ([`JobError::retry_after`]), spending an attempt, so that a remote that always
    /// answers 429 ends in the dead-letter queue instead of looping for ever.
    pub fn rate_limited(pause: Duration) -> Self {
        JobError {
            message: format!("rate limited for {pause:?}"),
            permanent: false,
            retry_after: None,
            rate_limited: Some(pause),
            snooze: None,
        }
    }
    /// Not now: the job goes back to the queue and comes back after `delay` *without
    /// spending an attempt* (Oban's and River's snooze): for a job that waits on something
    /// outside (a file still uploading, a payment not yet settled) and is not failing.
    /// The worker counts it ([`WorkerReport::snoozed`](crate::WorkerReport::snoozed));
    /// a job snoozes so for at most [`Worker::snooze_limit`](crate::Worker::snooze_limit)
    /// after its first enqueue (7 days by default), and past it a snooze is an ordinary
    /// retry after `delay`, so a job that snoozes for ever still ends in the dead-letter
    /// queue. The delay is bounded by what the backend can hold a message back (Kafka:
    /// 15 minutes), cut to it with a log line. On SQS FIFO each snooze counts toward the
    /// queue's `maxReceiveCount`, as every give-back there does.
    pub fn snooze(delay: Duration) -> Self {
        JobError {
            message: format!("snoozed for {delay:?}"),
            permanent: false,
            retry_after: None,
            rate_limited: None,
            snooze: Some(delay),
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
    /// Fires when someone cancels this job through its status
    /// ([`Backend::cancel_job`](crate::Backend::cancel_job)); only with job status on. A
    /// handler that stops with an error after it fired makes the job `cancelled` (acked,
    /// not retried). See [`JobContext::cancelled`].
    pub cancel: CancellationToken,
    pub(super) life: Option<Arc<lifecycle::Life>>,
    pub(super) flow: Option<crate::flow::FlowContext>,
}

impl JobContext {
    /// A context for calling a handler directly in a unit test: enqueued now, no headers,
    /// a shutdown signal that never fires unless you cancel it.
    pub fn new(id: MessageId, queue: impl Into<String>, attempt: u32) -> Self {
        JobContext {
            id,
            queue: queue.into(),
            attempt,
            headers: Headers::new(),
            first_enqueued_at: SystemTime::now(),
            shutdown: CancellationToken::new(),
            cancel: CancellationToken::new(),
            life: None,
            flow: None,
        }
    }

    /// The flow this job belongs to, if it is one of a [`crate::flow::Flow`]'s jobs: its
    /// dependencies' states and results.
    pub fn flow(&self) -> Option<&crate::flow::FlowContext> {
        self.flow.as_ref()
    }

    /// The id of the batch this job belongs to, or whose callback it is (see
    /// [`crate::batch`]); [`Backend::batch_status`](crate::Backend::batch_status) reads its
    /// counts.
    pub fn batch_id(&self) -> Option<&str> {
        self.headers
            .get(crate::message::headers::BATCH)
            .or_else(|| self.headers.get(crate::message::headers::BATCH_CALLBACK))
            .and_then(|h| crate::batch::parse_header(h))
            .map(|(id, _)| id)
    }

    /// Completes when someone cancels this job (never, without job status on):
    ///
    /// ```
    /// # use queue_core::{JobContext, JobError};
    /// # async fn work() {}
    /// async fn export(ctx: JobContext) -> Result<(), JobError> {
    ///     tokio::select! {
    ///         _ = work() => Ok(()),
    ///         _ = ctx.cancelled() => Err(JobError::permanent("cancelled")),
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Reports progress: `percent` (0 to 100) and what the job is doing. Readers see it in
    /// the job's status. Without job status on this does nothing. A bad value is an
    /// [`QueueError::InvalidOption`]; a store that cannot be written is logged and counted,
    /// not returned: progress never fails a job.
    pub async fn progress(&self, percent: u8, message: Option<&str>) -> QResult<()> {
        let p = crate::status::Progress::new(percent, message.map(str::to_string))?;
        if let Some(life) = &self.life {
            life.progress(p).await;
        }
        Ok(())
    }

    /// Keeps `value` as the job's result, stored with its status when the handler succeeds
    /// (the last call wins), and, for a flow's job, in its flow for the jobs that depend
    /// on it ([`crate::flow::FlowContext::results`]). Without job status and outside a
    /// flow this does nothing. A value that does not serialize, or whose JSON is over the
    /// status store's limit, is not stored; the job's `last_error` says why, and the job
    /// still succeeds.
    pub fn set_result<T: serde::Serialize + ?Sized>(&self, value: &T) {
        if self.life.is_none() && self.flow.is_none() {
            return;
        }
        let v = serde_json::to_value(value).map_err(|e| format!("result does not serialize: {e}"));
        if let (Some(flow), Ok(v)) = (&self.flow, &v) {
            flow.run().set_result(v.clone());
        }
        if let Some(life) = &self.life {
            life.set_result(v);
        }
    }

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
