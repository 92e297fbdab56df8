//! The worker's settings, their defaults and why.

use std::time::Duration;

use crate::retry::RetryPolicy;

/// Worker settings. Build with [`Worker`](crate::Worker)'s methods; [`Worker::start`](crate::Worker::start) checks them.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Jobs (or batches) run at once. Default 10.
    pub concurrency: usize,
    /// Lease asked for on receive and renewed for long jobs. Default 30 s.
    pub lease: Duration,
    /// Long-poll wait per receive (cut short by shutdown).
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
    /// Messages per batch for batch handlers (at most the backend's batch limit). Default 10.
    pub batch_size: usize,
    /// How long a delivery whose job name no handler of this worker knows is given back
    /// (without spending an attempt, with a growing delay) for another worker that knows
    /// it, before it is dead-lettered with the reason `unknown-job`. Default one hour: a
    /// rolling deploy's newer producers may send a job type before any newer worker is up.
    /// Zero dead-letters such a job at once. A raw handler, where there is one, takes
    /// these deliveries instead. The grace counts from the job's first enqueue (a job older
    /// than it, a backlog or a redriven dead letter, gets none). Where a give-back spends
    /// an attempt (SQS FIFO) it also ends at the retry policy's last attempt. A keyed job
    /// holds its key meanwhile, as a retry does.
    pub unknown_job_grace: Duration,
    /// Whether retry policies may ask for longer waits than the backend holds a retried
    /// message back ([`Capabilities::max_nack_delay`](crate::Capabilities::max_nack_delay)), each wait then cut to that
    /// maximum. Default `false`: [`Worker::start`](crate::Worker::start) refuses such a policy.
    pub clamp_retry_delays: bool,
    /// Whether rate limits and per-key concurrency may be kept in this process alone when
    /// the backend has no shared store ([`Backend::with_store`](crate::Backend::with_store)
    /// or [`with_status`](crate::Backend::with_status)): each process then allows the
    /// whole limit. Default `false`: [`Worker::start`](crate::Worker::start) refuses such limits, since a limit
    /// that is silently per process lets N processes do N times the limit.
    pub local_only: bool,
    /// After how many runs of a job that started and never ended (the process died in the
    /// handler: an abort, out of memory, a native crash, a kill; or the lease ran out while
    /// it ran) it is dead-lettered `crashed` instead of run again. Default 3, as BullMQ's
    /// `maxStalledCount` is 1 and Sidekiq Pro's poison-pill check 3; 0 turns it off. Counted
    /// in the job's status record, so it needs job status
    /// ([`Backend::with_status`](crate::Backend::with_status)), and then holds on every
    /// backend, Kafka included (where a crash otherwise redelivers a record for ever: it
    /// carries no delivery count). Without job status a crash counts as an attempt on the
    /// backends that count deliveries (memory, Redis, SQS, PostgreSQL), so a crash loop
    /// ends at the retry policy's last attempt.
    pub crash_limit: u32,
    /// This worker serves only the job types it registers, on a queue it shares with
    /// workers that serve the others: a job type it does not know is given back (without
    /// an attempt, for a second) for as long as it takes, never dead-lettered
    /// `unknown-job` (where a give-back spends an attempt, SQS FIFO, it still ends at the
    /// retry policy's last attempt). A job type that no worker serves then circulates:
    /// watch [`WorkerReport::unknown_job`](crate::WorkerReport::unknown_job). Default `false`: the queue is this worker's,
    /// and [`unknown_job_grace`](Self::unknown_job_grace) bounds the wait.
    pub shared_queue: bool,
    /// How long after its first enqueue a job may still [snooze](crate::JobError::snooze)
    /// without spending an attempt. Default 7 days. Past it a snooze is an ordinary retry
    /// after the snooze's delay (it spends an attempt, so a job that snoozes for ever ends
    /// in the dead-letter queue): said in the log, never silent. Zero: every snooze spends
    /// an attempt.
    pub snooze_limit: Duration,
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
            clamp_retry_delays: false,
            local_only: false,
            crash_limit: 3,
            shared_queue: false,
            unknown_job_grace: Duration::from_secs(3600),
            snooze_limit: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
