//! The worker's metrics, registered once per job name when the worker starts.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `queue_jobs_processed_total` | counter | queue, job |
//! | `queue_jobs_failed_total` | counter | queue, job |
//! | `queue_jobs_retried_total` | counter | queue, job |
//! | `queue_jobs_dead_lettered_total` | counter | queue, job |
//! | `queue_job_duration_seconds` | histogram | queue, job |
//! | `queue_job_wait_seconds` (first enqueue to handler start) | histogram | queue, job |
//!
//! `job` is a registered job name, or one of `raw`, `batch`, `malformed`, `unknown`: a name
//! read from a payload never creates a time series. Handles are made when the worker
//! starts (a map lookup and label allocations per job were a fifth of the worker's cost),
//! so install the `metrics` recorder before starting workers: handles made before a
//! recorder exists record nothing, as the `metrics` crate documents.

use metrics::{Counter, Histogram, Label};

/// The metric handles of one job label.
pub(super) struct JobMeters {
    pub(super) job: String,
    pub(super) processed: Counter,
    pub(super) failed: Counter,
    pub(super) retried: Counter,
    pub(super) dead_lettered: Counter,
    pub(super) duration: Histogram,
    pub(super) wait: Histogram,
}

impl JobMeters {
    pub(super) fn new(queue: &str, job: &str) -> Self {
        let labels = || {
            vec![
                Label::new("queue", queue.to_string()),
                Label::new("job", job.to_string()),
            ]
        };
        JobMeters {
            job: job.to_string(),
            processed: metrics::counter!("queue_jobs_processed_total", labels()),
            failed: metrics::counter!("queue_jobs_failed_total", labels()),
            retried: metrics::counter!("queue_jobs_retried_total", labels()),
            dead_lettered: metrics::counter!("queue_jobs_dead_lettered_total", labels()),
            duration: metrics::histogram!("queue_job_duration_seconds", labels()),
            wait: metrics::histogram!("queue_job_wait_seconds", labels()),
        }
    }
}

/// Handles for every label a worker can use.
pub(super) struct Meters {
    pub(super) jobs: std::collections::HashMap<String, JobMeters>,
    pub(super) raw: JobMeters,
    pub(super) batch: JobMeters,
    pub(super) malformed: JobMeters,
    pub(super) unknown: JobMeters,
}

impl Meters {
    pub(super) fn new<'a>(queue: &str, names: impl Iterator<Item = &'a String>) -> Self {
        Meters {
            jobs: names
                .map(|n| (n.clone(), JobMeters::new(queue, n)))
                .collect(),
            raw: JobMeters::new(queue, "raw"),
            batch: JobMeters::new(queue, "batch"),
            malformed: JobMeters::new(queue, "malformed"),
            unknown: JobMeters::new(queue, "unknown"),
        }
    }
}
