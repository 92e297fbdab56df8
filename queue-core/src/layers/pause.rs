//! Pausing a queue for all its workers, in every process.
//!
//! The paused state is one record, `paused:<queue>`, in the shared [`Store`] the backend
//! was given with [`crate::Backend::with_status`] (the same store that holds job status:
//! Redis, PostgreSQL, or memory within one process). So it survives a worker restart, and
//! a `queuectl pause` from any machine reaches every worker that uses that store.
//!
//! A worker reads the record before its first receive and then every [`PAUSE_POLL`]. While
//! the queue is paused it starts no receive; deliveries that a receive already in progress
//! brings back are given back at once without counting an attempt, and jobs already
//! running finish. So workers stop taking jobs within a second of the pause. When the
//! store cannot be read the worker keeps the state it last read (and logs why).
//!
//! A worker whose backend has no store never pauses: pausing needs the store, and
//! [`crate::Queue::pause`] without one is [`QueueError::NoStatusStore`].

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::error::{QueueError, Result};
use crate::message::unix_millis;
use crate::store::{Store, MAX_TTL};

/// How often a worker reads its queue's paused state.
pub const PAUSE_POLL: Duration = Duration::from_millis(500);

fn key(queue: &str) -> String {
    format!("paused:{queue}")
}

/// Whether `queue` is paused in `store`.
pub(crate) async fn is_paused(store: &dyn Store, queue: &str) -> Result<bool> {
    Ok(store.get(&key(queue)).await?.is_some())
}

/// Pauses `queue`; `true` if it was running until now. The record lasts [`MAX_TTL`] (a
/// year), after which the queue runs again.
pub(crate) async fn pause(store: &dyn Store, queue: &str) -> Result<bool> {
    let record = serde_json::json!({ "paused_at_ms": unix_millis(SystemTime::now()) });
    let bytes = serde_json::to_vec(&record).map_err(|e| QueueError::backend("pause store", e))?;
    Ok(store.insert(&key(queue), &bytes, MAX_TTL).await?.is_some())
}

/// Resumes `queue`; `true` if it was paused.
pub(crate) async fn resume(store: &dyn Store, queue: &str) -> Result<bool> {
    store.delete(&key(queue)).await
}

/// Keeps `tx` at `queue`'s paused state, read every [`PAUSE_POLL`] until the receivers
/// are gone.
pub(crate) async fn watch(
    store: std::sync::Arc<dyn Store>,
    queue: String,
    tx: watch::Sender<bool>,
) {
    let mut failing = false;
    loop {
        match is_paused(&*store, &queue).await {
            Ok(p) => {
                failing = false;
                let changed = tx.send_if_modified(|old| std::mem::replace(old, p) != p);
                if changed {
                    tracing::info!(
                        queue,
                        paused = p,
                        "queue {}",
                        if p { "paused" } else { "resumed" }
                    );
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(queue, error = %e, "cannot read the paused state; keeping the last one");
            }
            Err(_) => {}
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(PAUSE_POLL).await;
    }
}
