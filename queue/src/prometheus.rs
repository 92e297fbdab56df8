//! Prometheus for worker processes (feature `prometheus`): one call serves every metric
//! the workers record on `http://LISTEN/metrics`.
//!
//! The worker records, per queue and job name: `queue_jobs_processed_total`,
//! `queue_jobs_failed_total`, `queue_jobs_retried_total`,
//! `queue_jobs_dead_lettered_total`, and the histograms `queue_job_duration_seconds`
//! (handler time) and `queue_job_wait_seconds` (first enqueue to start); plus
//! `queue_status_write_errors_total` when a status store fails. Queue depths are the
//! operator's side: `queuectl serve` exports `queue_depth{queue,state}`.
//!
//! Call [`install`] once, before starting workers, in a process that has no other
//! `metrics` recorder (an application with its own exporter already sees these metrics
//! through it).

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::{QueueError, Result};

/// Histogram buckets, in seconds: 1 ms to 10 minutes.
pub const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// Installs the process's `metrics` recorder and serves it as Prometheus text on
/// `http://listen/metrics` from a task on the current tokio runtime. A second call, or a
/// process with a recorder already, is [`QueueError::InvalidOption`]; an address that
/// cannot be bound is [`QueueError::Connection`].
pub fn install(listen: SocketAddr) -> Result<()> {
    // Bind first, so that a taken port is a clear error rather than a log line from the
    // exporter's task.
    std::net::TcpListener::bind(listen).map_err(|e| QueueError::Connection {
        backend: "prometheus",
        source: Box::new(e),
    })?;
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(BUCKETS)
        .map_err(|e| QueueError::InvalidOption(format!("prometheus buckets: {e}")))?
        .install()
        .map_err(|e| {
            QueueError::InvalidOption(format!("cannot install the prometheus exporter: {e}"))
        })
}
