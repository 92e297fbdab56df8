//! Waiting for the process to be asked to stop.

/// Completes when the process is asked to stop: `SIGTERM` (what Kubernetes, systemd and
/// `docker stop` send) or `SIGINT` (Ctrl-C). Hand it to [`Worker::run_until`](crate::Worker::run_until)
/// or await it before [`WorkerHandle::shutdown`](crate::WorkerHandle::shutdown):
///
/// ```no_run
/// # async fn f(queue: queue_core::Queue) -> queue_core::Result<()> {
/// let worker = queue.worker().handle_raw(|_d| async { Ok(()) }).start()?;
/// queue_core::shutdown_signal().await;
/// let report = worker.shutdown().await; // running jobs finish within `shutdown_grace`
/// # let _ = report; Ok(()) }
/// ```
///
/// A signal whose handler cannot be installed (rare: no signal support) is logged and
/// never fires; the other still does.
///
/// # Deploying
///
/// The platform's grace period must outlast the worker's
/// [`shutdown_grace`](crate::Worker::shutdown_grace) (30 s by default), or the platform kills
/// the process while jobs still run: on Kubernetes, set `terminationGracePeriodSeconds`
/// (30 s by default too) a few seconds above `shutdown_grace`, plus whatever a `preStop`
/// hook takes. Jobs still running when the grace ends are given back at once, not lost.
/// A process killed before that loses nothing either: its jobs come back when their
/// leases run out (on Kafka, when the group moves the partitions), and, with job status,
/// each such run counts toward the job's [`crash_limit`](crate::Worker::crash_limit).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
