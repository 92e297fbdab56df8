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
