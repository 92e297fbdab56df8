//! The worker's side of flows ([`crate::flow`]) and batches ([`crate::batch`]): a flow's
//! or a batch's job records how it ended, and advances what waits on it (a flow's
//! dependents, a batch's callbacks and parent), before it is acked or dead-lettered; a
//! job whose dependency failed is dead-lettered without running; a duplicate of a job
//! recorded as succeeded is acked unrun.

use super::*;
use crate::flow::Outcome;

/// How many times a settlement is tried in place before the job is given back.
const TRIES: u32 = 4;
/// How long a job whose settlement could not be recorded stays away before it comes back
/// to be run and settled again.
const GIVE_BACK: Duration = Duration::from_secs(5);

/// Whether `d` is a flow's or a batch's job (or a batch's callback).
pub(super) fn grouped(d: &Delivery) -> bool {
    [headers::FLOW, headers::BATCH, headers::BATCH_CALLBACK]
        .iter()
        .any(|h| d.headers.contains_key(*h))
}

/// Records a flow's or batch's job's outcome; true when recorded, or when `d` belongs to
/// neither. Boxed: only their jobs pay for this step's future.
pub(super) async fn recorded(
    inner: &Inner,
    d: &Delivery,
    outcome: impl FnOnce() -> Outcome,
) -> bool {
    match grouped(d) {
        false => true,
        true => Box::pin(record(inner, d, outcome())).await,
    }
}

/// Each settlement is idempotent, so a retry redoes them all.
async fn settle_all(inner: &Inner, d: &Delivery, outcome: &Outcome) -> crate::Result<()> {
    let b = &inner.backend;
    if let Some(h) = d.headers.get(headers::FLOW) {
        crate::flow::settle(b, h, outcome).await?;
    }
    let (ok, error) = match outcome {
        Outcome::Succeeded { .. } => (true, None),
        Outcome::Failed(why) => (false, Some(why.as_str())),
    };
    if let Some(h) = d.headers.get(headers::BATCH) {
        let settled = match error {
            None => crate::batch::Settled::Succeeded,
            Some(why) => crate::batch::Settled::Dead(why.to_string()),
        };
        crate::batch::settle(b, h, settled).await?;
    }
    if let Some(h) = d.headers.get(headers::BATCH_CALLBACK) {
        crate::batch::settle_callback(b, h, ok, error).await?;
    }
    Ok(())
}

async fn record(inner: &Inner, d: &Delivery, outcome: Outcome) -> bool {
    let mut pause = Duration::from_millis(50);
    for attempt in 1..=TRIES {
        match settle_all(inner, d, &outcome).await {
            Ok(()) => return true,
            Err(e) if attempt == TRIES => {
                backend_error(
                    inner,
                    "could not record a flow's or batch's job's outcome; it goes back to the queue, to run and settle again",
                    Some(&d.id),
                    &e,
                );
            }
            Err(e) => {
                tracing::info!(error = %e, attempt, "flow or batch settlement failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    false
}

/// Gives back a job whose flow or batch settlement could not be recorded (see
/// [`recorded`]).
pub(super) async fn give_back_unrecorded(inner: &Inner, d: &Delivery) {
    bump(&inner.counters.returned);
    give_back_after(inner, d, GIVE_BACK, "a flow's or batch's job").await;
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

/// What the flow or batch says of a job about to run.
pub(super) enum Before {
    Run,
    /// A flow's or batch's job, and this worker's backend has no shared store to record
    /// it in: it is given back, never run, for a worker that has one.
    NoStore,
    /// A duplicate of a job that succeeded, or a job of a cancelled flow: acked unrun.
    Finished {
        cancelled: bool,
    },
}

/// Reads the job's state in its flow or batch before it runs (one store read, their jobs
/// only). A job redriven from its dead-letter queue runs whatever its record says. A store
/// that cannot be read lets the job run: at least once, as ever.
pub(super) async fn before(inner: &Inner, d: &Delivery, t: &Tracked) -> Before {
    if !grouped(d) {
        return Before::Run;
    }
    let Some(store) = inner.backend.store() else {
        backend_error(
            inner,
            "a flow's or batch's job, and this worker's backend has no shared store to record \
             it in (Backend::with_store, the same store as the producer's): given back, not run",
            Some(&d.id),
            &QueueError::NoStatusStore,
        );
        return Before::NoStore;
    };
    if d.headers.contains_key(headers::REDRIVEN_AT) {
        return Before::Run;
    }
    let member = d.headers.get(headers::BATCH).map(String::as_str);
    let callback = d.headers.get(headers::BATCH_CALLBACK).map(String::as_str);
    if member.is_some() || callback.is_some() {
        match Box::pin(crate::batch::state_of(store.as_ref(), member, callback)).await {
            Ok(true) => return Before::Finished { cancelled: false },
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read this job's batch state; running it")
            }
        }
    }
    let Some(flow) = &t.flow else {
        return Before::Run;
    };
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
