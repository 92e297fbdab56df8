//! The worker's side of flows ([`crate::flow`]): a flow's job records how it ended, and
//! advances the jobs that wait on it, before it is acked or dead-lettered; a job whose
//! dependency failed is dead-lettered without running.

use super::*;
use crate::flow::Outcome;

/// How many times a settlement is tried in place before the job is given back.
const TRIES: u32 = 4;
/// How long a job whose settlement could not be recorded stays away before it comes back
/// to be run and settled again.
const GIVE_BACK: Duration = Duration::from_secs(5);

/// Records a flow job's outcome; true when recorded, or when `d` is no flow's job. Boxed:
/// only flows' jobs pay for this step's future.
pub(super) async fn recorded(
    inner: &Inner,
    d: &Delivery,
    outcome: impl FnOnce() -> Outcome,
) -> bool {
    match d.headers.get(headers::FLOW) {
        None => true,
        Some(h) => Box::pin(record(inner, d, h, outcome())).await,
    }
}

async fn record(inner: &Inner, d: &Delivery, header: &str, outcome: Outcome) -> bool {
    let mut pause = Duration::from_millis(50);
    for attempt in 1..=TRIES {
        match crate::flow::settle(&inner.backend, header, &outcome).await {
            Ok(()) => return true,
            Err(e) if attempt == TRIES => {
                backend_error(
                    inner,
                    "could not record a flow job's outcome; it goes back to the queue, to run and settle again",
                    Some(&d.id),
                    &e,
                );
            }
            Err(e) => {
                tracing::info!(error = %e, attempt, "flow settlement failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    false
}

/// Gives back a job whose flow settlement could not be recorded (see [`recorded`]).
pub(super) async fn give_back_unrecorded(inner: &Inner, d: &Delivery) {
    bump(&inner.counters.returned);
    give_back_after(inner, d, GIVE_BACK, "a flow's job").await;
}

/// Why `d` is to be dead-lettered without running: a dependency of its flow failed. A
/// job redriven since runs.
pub(super) fn doomed(d: &Delivery) -> Option<&str> {
    if d.headers.contains_key(headers::REDRIVEN_AT) {
        return None;
    }
    d.headers.get(headers::FLOW_FAILED).map(String::as_str)
}

/// Dead-letters a doomed job (`dependency-failed`); true when it was.
pub(super) async fn dead_letter_doomed(
    inner: &Inner,
    d: &Delivery,
    why: &str,
    m: &JobMeters,
) -> bool {
    tracing::info!(
        reason = why,
        "a dependency of this flow job failed; dead-lettering it unrun"
    );
    let f = Failure {
        error: why.to_string(),
        permanent: true,
        kind: DeadLetterKind::DependencyFailed,
        retry_after: None,
        rate_limited: None,
        snooze: None,
    };
    Box::pin(settle_failure(inner, d, f, RetryPolicy::none(), m)).await
}

/// What the flow says of a job about to run.
pub(super) enum Before {
    Run,
    /// A flow's job, and this worker's backend has no shared store to record it in: it
    /// is given back, never run, for a worker that has one.
    NoStore,
    /// A duplicate of a job that succeeded, or a job of a cancelled flow: acked unrun.
    Finished {
        cancelled: bool,
    },
}

/// Reads the job's state in its flow before it runs (one store read, flows' jobs only).
/// A job redriven from its dead-letter queue runs whatever its record says. A store that
/// cannot be read lets the job run: at least once, as ever.
pub(super) async fn before(inner: &Inner, d: &Delivery, t: &Tracked) -> Before {
    let Some(flow) = &t.flow else {
        if d.headers.contains_key(headers::FLOW) && inner.backend.store().is_none() {
            backend_error(
                inner,
                "a flow's job, and this worker's backend has no shared store to record it in \
                 (Backend::with_store, the same store as the producer's): given back, not run",
                Some(&d.id),
                &QueueError::NoStatusStore,
            );
            return Before::NoStore;
        }
        return Before::Run;
    };
    if d.headers.contains_key(headers::REDRIVEN_AT) {
        return Before::Run;
    }
    match Box::pin(flow.state()).await {
        Ok(Some((crate::flow::NodeState::Succeeded, _))) => Before::Finished { cancelled: false },
        Ok(Some((crate::flow::NodeState::Failed, true))) => Before::Finished { cancelled: true },
        // Failed for its own reasons, yet back: its move to the dead-letter queue did not
        // land. It runs again, to succeed or be dead-lettered once more.
        Ok(_) => Before::Run,
        Err(e) => {
            tracing::warn!(error = %e, "could not read this job's flow state; running it");
            Before::Run
        }
    }
}
