//! The worker's side of job status ([`crate::status`]): recording each run's start and
//! end, skipping cancelled jobs, and firing a running job's cancel signal when someone
//! cancels it. Every write here is best-effort: a status store that is down costs log
//! lines and a count, never a job.

use super::*;
use crate::status::{JobState, JobStatuses, Progress, Start, Written, CANCEL_POLL};

/// What one job's handler shares with the worker: where its status lives, and the result
/// it set.
pub(crate) struct Life {
    status: JobStatuses,
    id: String,
    result: Mutex<Option<std::result::Result<serde_json::Value, String>>>,
    /// The record as this run last wrote it: its end is then written without a read.
    written: Mutex<Option<Written>>,
}

impl fmt::Debug for Life {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Life").field("id", &self.id).finish()
    }
}

impl Life {
    pub(crate) async fn progress(&self, p: Progress) {
        match self.status.progress(&self.id, p).await {
            Ok(w) => *self.written.lock().unwrap_or_else(|p| p.into_inner()) = w,
            Err(e) => crate::status::write_failed("progress", &self.id, &e),
        }
    }

    pub(crate) fn set_result(&self, r: std::result::Result<serde_json::Value, String>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

/// A delivery's status bookkeeping, made when it is prepared.
pub(super) struct Tracked {
    pub(super) cancel: CancellationToken,
    pub(super) life: Option<Arc<Life>>,
    pub(super) job: Option<String>,
    /// Its flow, when it is a flow's job.
    pub(super) flow: Option<crate::flow::FlowContext>,
}

impl Tracked {
    pub(super) fn new(inner: &Inner, d: &Delivery, job: Option<&str>) -> Self {
        Tracked {
            // Without job status nothing cancels a job: every delivery shares the worker's
            // one token that never fires, so the hot path allocates none.
            cancel: match inner.status {
                Some(_) => CancellationToken::new(),
                None => inner.never_cancelled.clone(),
            },
            life: inner.status.as_ref().map(|s| {
                Arc::new(Life {
                    status: s.clone(),
                    id: d.id.as_str().to_string(),
                    result: Mutex::new(None),
                    written: Mutex::new(None),
                })
            }),
            job: job.map(str::to_string),
            flow: d
                .headers
                .get(headers::FLOW)
                .and_then(|h| crate::flow::FlowContext::for_delivery(&inner.backend, h)),
        }
    }
}

/// What recording a run's start decided.
pub(super) enum Started {
    Run,
    /// Cancelled before it ran: the caller acks it without running.
    Cancelled,
    /// Its runs never ended this many times: the caller dead-letters it `crashed`.
    Crashed(u32),
}

/// Records the start of a run and registers its cancel signal.
///
/// Without job status this is no work. With it, the store's future is boxed: every job's
/// task holds this step's state for as long as the job runs, and a kilobyte and a half of
/// status bookkeeping per job in flight is what a worker without status must not carry.
pub(super) async fn started(inner: &Inner, d: &Delivery, t: &Tracked) -> Started {
    match &inner.status {
        None => Started::Run,
        Some(status) => Box::pin(record_start(inner, status, d, t)).await,
    }
}

async fn record_start(inner: &Inner, status: &JobStatuses, d: &Delivery, t: &Tracked) -> Started {
    let id = d.id.as_str();
    match status
        .start(
            id,
            &d.queue,
            t.job.as_deref(),
            d.attempt,
            inner.config.crash_limit,
        )
        .await
    {
        Ok((Start::Cancelled, _)) => {
            tracing::info!("job was cancelled before it ran; acked without running");
            release_unique(status, d, |_| true).await;
            return Started::Cancelled;
        }
        Ok((Start::Crashed(n), _)) => {
            release_unique(status, d, |_| true).await;
            return Started::Crashed(n);
        }
        Ok((Start::Run, written)) => {
            if let Some(life) = &t.life {
                *life.written.lock().unwrap_or_else(|p| p.into_inner()) = written;
            }
            release_unique(status, d, |at_start| at_start).await
        }
        Err(e) => {
            crate::status::write_failed("running", id, &e);
            backend_error(inner, "job status write failed", Some(&d.id), &e);
        }
    }
    inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), t.cancel.clone());
    Started::Run
}

/// Records how a run ended and forgets its cancel signal (boxed, as [`started`]).
pub(super) async fn ended(
    inner: &Inner,
    d: &Delivery,
    t: &Tracked,
    state: JobState,
    error: Option<String>,
) {
    if let Some(status) = &inner.status {
        Box::pin(record_end(inner, status, d, t, state, error)).await
    }
}

async fn record_end(
    inner: &Inner,
    status: &JobStatuses,
    d: &Delivery,
    t: &Tracked,
    state: JobState,
    error: Option<String>,
) {
    let id = d.id.as_str();
    inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
    let result = match (&t.life, state) {
        (Some(life), JobState::Succeeded) => {
            life.result.lock().unwrap_or_else(|p| p.into_inner()).take()
        }
        _ => None,
    };
    let written = t
        .life
        .as_ref()
        .and_then(|l| l.written.lock().unwrap_or_else(|p| p.into_inner()).take());
    if let Err(e) = status.finish(id, state, error, result, written).await {
        crate::status::write_failed(state.as_str(), id, &e);
        backend_error(inner, "job status write failed", Some(&d.id), &e);
    }
    if state.is_finished() {
        release_unique(status, d, |_| true).await;
    }
}

/// Releases the job's unique key ([`crate::unique`]) if `when(released at start?)` says
/// this is the moment for its scope; a `For` key is left to expire.
async fn release_unique(status: &JobStatuses, d: &Delivery, when: impl Fn(bool) -> bool) {
    let Some(v) = d.headers.get(crate::headers::UNIQUE) else {
        return;
    };
    if crate::unique::released_at_start(v).is_some_and(when) {
        crate::unique::release(status.store(), v, d.id.as_str()).await;
    }
}

/// Every [`CANCEL_POLL`], asks the store about the running jobs (one read for all) and
/// fires the cancel signal of those someone cancelled. Runs until the worker's loop drops
/// it.
pub(super) async fn watch_cancels(inner: Arc<Inner>) {
    let Some(status) = inner.status.clone() else {
        return;
    };
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        let running: Vec<(String, CancellationToken)> = inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, t)| !t.is_cancelled())
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        // At most a few hundred ids per read, however many jobs run.
        for chunk in running.chunks(256) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            match status.cancel_requested(&ids).await {
                Ok(asked) => {
                    for ((id, token), asked) in chunk.iter().zip(asked) {
                        if asked {
                            tracing::info!(queue = %inner.name, id, "job cancelled: signalling its handler");
                            token.cancel();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %inner.name, error = %e, "could not read job status");
                    break; // the store is down: try again at the next tick
                }
            }
        }
    }
}
