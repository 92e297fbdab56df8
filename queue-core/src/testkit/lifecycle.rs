//! Job status on this backend: the transitions a worker records, results, progress, and
//! cancellation before and during a run. The store is the harness's
//! ([`Harness::status_store`](super::Harness::status_store); memory by default), so a
//! driver crate may run these with its own store too.

use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::Arc;

use tokio::sync::Notify;

use super::{eventually_worker, probe, Ctx, Harness, Probe};
use crate::status::{CancelOutcome, JobState, JobStatuses};
use crate::{Backend, JobContext, JobError, MessageId, QueueError, RetryPolicy};

async fn status_backend(h: &Harness, c: &Ctx) -> Backend {
    let store = (h.status_store)().await;
    Backend::from_driver(c.q.clone()).with_status(JobStatuses::new(store))
}

async fn state_becomes(c: &Ctx, b: &Backend, id: &MessageId, want: JobState) -> crate::JobStatus {
    let deadline = tokio::time::Instant::now() + c.within();
    loop {
        let got = b.job_status(id).await.expect("job_status");
        if let Some(s) = &got {
            if s.state == want {
                return s.clone();
            }
        }
        if tokio::time::Instant::now() > deadline {
            panic!("job {id}: want state {want}, got {got:?}");
        }
        tokio::time::sleep(c.unit / 4).await;
    }
}

/// queued → running (with progress) → succeeded with its result; and a failing job:
/// failed (retry scheduled, with its error) → dead after its last attempt.
pub async fn status_lifecycle(h: &Harness) {
    let c = h.fresh("status_lifecycle").await;
    let b = status_backend(h, &c).await;
    let q = b.queue(c.name.clone());
    let ok = q.enqueue(&probe(1)).await.expect("enqueue");
    let bad = q.enqueue(&probe(2)).await.expect("enqueue");
    let s = b
        .job_status(&ok)
        .await
        .expect("status")
        .expect("a record at once");
    assert_eq!(
        (s.state, s.attempt, s.job.as_deref(), s.queue.as_str()),
        (
            JobState::Queued,
            0,
            Some("conformance_probe"),
            c.name.as_str()
        ),
        "a sent job is queued under the id its send returned: {s:?}"
    );
    let go = Arc::new(Notify::new());
    let go2 = go.clone();
    let w = c
        .worker_for(b.clone())
        .retry(RetryPolicy::new(2, crate::Backoff::Fixed(c.unit / 2)))
        .handle_returning(move |p: Probe, ctx: JobContext| {
            let go = go2.clone();
            async move {
                if p.n == 2 {
                    return Err(JobError::retry(format!("boom {}", ctx.attempt)));
                }
                ctx.progress(40, Some("halfway")).await.expect("progress");
                go.notified().await;
                Ok(serde_json::json!({ "sum": 42 }))
            }
        });
    let w = super::start(w);
    let running = state_becomes(&c, &b, &ok, JobState::Running).await;
    assert_eq!(running.attempt, 1);
    assert!(running.started_at.is_some());
    // Progress lands while it runs.
    let deadline = tokio::time::Instant::now() + c.within();
    loop {
        let s = b.job_status(&ok).await.unwrap().unwrap();
        if let Some(p) = s.progress {
            assert_eq!((p.percent, p.message.as_deref()), (40, Some("halfway")));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "progress never recorded"
        );
        tokio::time::sleep(c.unit / 4).await;
    }
    go.notify_one();
    let done = state_becomes(&c, &b, &ok, JobState::Succeeded).await;
    assert_eq!(
        done.result,
        Some(serde_json::json!({ "sum": 42 })),
        "{done:?}"
    );
    assert!(done.finished_at.is_some());
    let dead = state_becomes(&c, &b, &bad, JobState::Dead).await;
    assert_eq!(
        (dead.attempt, dead.last_error.as_deref()),
        (2, Some("boom 2")),
        "dead after its last attempt, with its error: {dead:?}"
    );
    w.shutdown().await;
    // Unknown ids are None; cancelling a finished job is a typed error.
    assert_eq!(b.job_status(&MessageId::random()).await.unwrap(), None);
    match b.cancel_job(&ok).await {
        Err(QueueError::JobFinished { state, .. }) => assert_eq!(state, JobState::Succeeded),
        other => panic!("cancel of a succeeded job: want JobFinished, got {other:?}"),
    }
    match b.cancel_job(&MessageId::random()).await {
        Err(QueueError::JobNotFound(_)) => {}
        other => panic!("cancel of an unknown job: want JobNotFound, got {other:?}"),
    }
}

/// Cancelled before it runs: the worker acks it without running. Cancelled while it
/// runs: the handler's signal fires, the job ends `cancelled` and is not retried.
pub async fn status_cancel(h: &Harness) {
    let c = h.fresh("status_cancel").await;
    let b = status_backend(h, &c).await;
    let q = b.queue(c.name.clone());
    let skipped = q.enqueue(&probe(1)).await.expect("enqueue");
    assert_eq!(
        b.cancel_job(&skipped).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    match b.cancel_job(&skipped).await {
        Err(QueueError::JobFinished { state, .. }) => assert_eq!(state, JobState::Cancelled),
        other => panic!("a second cancel: want JobFinished, got {other:?}"),
    }
    let long = q.enqueue(&probe(2)).await.expect("enqueue");
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    let w = c
        .worker_for(b.clone())
        .handle(move |p: Probe, ctx: JobContext| {
            runs2.fetch_add(1, AO::SeqCst);
            async move {
                assert_eq!(p.n, 2, "the cancelled job must not run");
                ctx.cancelled().await;
                Err(JobError::retry("stopped: cancelled"))
            }
        });
    let w = super::start(w);
    state_becomes(&c, &b, &long, JobState::Running).await;
    assert_eq!(
        b.cancel_job(&long).await.expect("cancel"),
        CancelOutcome::Requested
    );
    let s = state_becomes(&c, &b, &long, JobState::Cancelled).await;
    assert_eq!(s.last_error.as_deref(), Some("stopped: cancelled"));
    eventually_worker(&w, c.within(), "both cancellations counted", |r| {
        r.cancelled == 2
    })
    .await;
    let r = w.shutdown().await;
    assert_eq!(
        (runs.load(AO::SeqCst), r.retried, r.dead_lettered),
        (1, 0, 0),
        "one run, nothing retried or dead-lettered: {r:?}"
    );
    c.stats_eventually(crate::QueueStats::default()).await;
}
