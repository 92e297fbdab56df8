//! Settling a delivery exactly one way: ack, retry (nack with backoff), dead-letter with
//! a typed reason, or give back without counting an attempt.

use super::*;

/// Returns a delivery to the queue at once (shutdown).
pub(super) async fn give_back(inner: &Inner, d: &Delivery) {
    bump(&inner.counters.returned);
    if let Err(e) = inner.driver.give_back(d, Duration::ZERO).await {
        backend_error(
            inner,
            "could not return message; it comes back when its lease ends",
            Some(&d.id),
            &e,
        );
    }
}

/// Whether `d`, whose job no handler here knows, has waited past the worker's grace (from
/// its first enqueue). Where a give-back spends an attempt (SQS FIFO), the grace also ends
/// at the retry policy's last attempt, so that the job is dead-lettered with its reason
/// before the backend's own receive limit moves it without one, and a newer worker that
/// gets it still has an attempt to run it with.
pub(super) fn unknown_too_long(inner: &Inner, d: &Delivery) -> bool {
    let age = SystemTime::now()
        .duration_since(d.first_enqueued_at)
        .unwrap_or_default();
    let spent = !inner.caps.give_back_keeps_attempt
        && d.attempt.saturating_add(1) >= inner.config.retry.max_attempts;
    (age >= inner.config.unknown_job_grace && !inner.config.shared_queue) || spent
}

/// Gives back a delivery whose job no handler here knows, without an attempt, for a
/// worker that knows it: after a delay that grows with its age (a second at first, for a
/// deploy under way; at most five minutes), and never past the end of the grace.
pub(super) async fn give_back_unknown(inner: &Inner, d: &Delivery) {
    bump(&inner.counters.unknown_job);
    let age = SystemTime::now()
        .duration_since(d.first_enqueued_at)
        .unwrap_or_default();
    let delay = if inner.config.shared_queue {
        // Other workers on this queue serve it: back soon, for one of them to take.
        Duration::from_secs(1)
    } else {
        let left = inner.config.unknown_job_grace.saturating_sub(age);
        age.clamp(Duration::from_secs(1), Duration::from_secs(300))
            .min(left + Duration::from_millis(1))
    };
    give_back_after(inner, d, delay, "a job no handler here knows").await;
}

/// Why an attempt failed, as the worker sees it.
#[derive(Clone)]
pub(super) struct Failure {
    pub(super) error: String,
    pub(super) permanent: bool,
    pub(super) kind: DeadLetterKind,
    pub(super) retry_after: Option<Duration>,
    /// The handler's [`JobError::rate_limited`] pause.
    pub(super) rate_limited: Option<Duration>,
    /// The handler's [`JobError::snooze`] delay.
    pub(super) snooze: Option<Duration>,
}

impl Failure {
    pub(super) fn from_job(e: JobError) -> Self {
        Failure {
            kind: if e.permanent {
                DeadLetterKind::Permanent
            } else {
                DeadLetterKind::MaxAttempts
            },
            error: e.message,
            permanent: e.permanent,
            retry_after: e.retry_after,
            rate_limited: e.rate_limited,
            snooze: e.snooze,
        }
    }
    pub(super) fn malformed(e: &DecodeError) -> Self {
        let kind = match e {
            DecodeError::UnknownJob { .. } => DeadLetterKind::UnknownJob,
            _ => DeadLetterKind::Malformed,
        };
        Failure {
            error: e.to_string(),
            permanent: true,
            kind,
            retry_after: None,
            rate_limited: None,
            snooze: None,
        }
    }
    pub(super) fn retryable(error: String) -> Self {
        Failure {
            error,
            permanent: false,
            kind: DeadLetterKind::MaxAttempts,
            retry_after: None,
            rate_limited: None,
            snooze: None,
        }
    }
}

pub(super) async fn settle_success(
    inner: &Inner,
    d: &Delivery,
    key: Option<&str>,
    acks: &mpsc::UnboundedSender<Receipt>,
    m: &JobMeters,
) {
    if let (Some((store, retention)), Some(key)) = (&inner.idempotency, key) {
        if let Err(e) = store.complete(key, *retention).await {
            backend_error(inner, "could not record idempotency key", Some(&d.id), &e);
        }
    }
    bump(&inner.counters.succeeded);
    m.processed.increment(1);
    if acks.send(d.receipt.clone()).is_err() {
        // The acker is gone only if the worker is being torn down; ack directly.
        if let Err(e) = inner
            .driver
            .ack(&inner.name, std::slice::from_ref(&d.receipt))
            .await
        {
            backend_error(inner, "direct ack failed", Some(&d.id), &e);
        }
    }
}

/// Retries or dead-letters a failed delivery; true when it was dead-lettered.
pub(super) async fn settle_failure(
    inner: &Inner,
    d: &Delivery,
    f: Failure,
    policy: RetryPolicy,
    m: &JobMeters,
) -> bool {
    bump(&inner.counters.failed);
    m.failed.increment(1);
    let mut policy = policy;
    if let Some(n) = d
        .headers
        .get(headers::MAX_ATTEMPTS)
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|_| !inner.own_attempts_only)
    {
        policy.max_attempts = n.max(1);
    }
    match policy.decide(d.attempt, f.permanent, f.retry_after) {
        Decision::Retry(delay) => {
            tracing::info!(error = %f.error, ?delay, "job failed, will retry");
            bump(&inner.counters.retried);
            m.retried.increment(1);
            let delay = clamp_delay(&inner.caps, delay);
            if let Err(e) = inner.driver.nack(&inner.name, &d.receipt, delay).await {
                backend_error(
                    inner,
                    "nack failed; the message comes back when its lease ends",
                    Some(&d.id),
                    &e,
                );
            }
            false
        }
        Decision::DeadLetter => {
            // A flow's job: its failure is recorded and its dependents advanced first.
            let why = || Outcome::Failed(format!("{}: {}", f.kind, f.error));
            if !flows::recorded(inner, d, why).await {
                flows::give_back_unrecorded(inner, d).await;
                return false;
            }
            tracing::warn!(error = %f.error, reason = f.kind.as_str(), "dead-lettering job");
            let reason = DeadLetterReason::new(f.kind, f.error, d.attempt);
            match inner.driver.dead_letter(d, &reason).await {
                Ok(()) => {
                    bump(&inner.counters.dead_lettered);
                    m.dead_lettered.increment(1);
                    true
                }
                Err(e) => {
                    backend_error(
                        inner,
                        "dead-lettering failed; the message comes back when its lease ends",
                        Some(&d.id),
                        &e,
                    );
                    false
                }
            }
        }
    }
}

/// Whether `d` may still snooze without spending an attempt ([`JobError::snooze`]).
pub(super) fn may_snooze(inner: &Inner, d: &Delivery) -> bool {
    let age = SystemTime::now()
        .duration_since(d.first_enqueued_at)
        .unwrap_or_default();
    age < inner.config.snooze_limit
}

/// Gives a snoozed job back for `delay`, without an attempt.
pub(super) async fn snooze(inner: &Inner, d: &Delivery, delay: Duration) {
    bump(&inner.counters.snoozed);
    tracing::info!(?delay, "job snoozed");
    give_back_after(inner, d, delay, "a snoozed job").await;
}

/// Gives `d` back for `delay` (cut to what the backend holds, said in the log) without
/// an attempt; a failure is logged and counted: `d` then comes back when its lease ends.
pub(super) async fn give_back_after(inner: &Inner, d: &Delivery, delay: Duration, what: &str) {
    if let Err(e) = inner
        .driver
        .give_back(d, clamp_delay(&inner.caps, delay))
        .await
    {
        backend_error(
            inner,
            &format!("could not give back {what}; it comes back when its lease ends"),
            Some(&d.id),
            &e,
        );
    }
}

pub(super) fn clamp_delay(caps: &Capabilities, delay: Duration) -> Duration {
    let capped = match caps.max_nack_delay {
        Some(max) => delay.min(max),
        None => Duration::ZERO,
    };
    if capped < delay {
        // Said, not silent: the backend cannot hold a message back longer.
        tracing::info!(
            asked = ?delay,
            honoured = ?capped,
            "retry delay capped at the backend's max_nack_delay"
        );
    }
    capped
}

pub(super) fn record_wait(d: &Delivery, m: &JobMeters) {
    if let Ok(waited) = SystemTime::now().duration_since(d.first_enqueued_at) {
        m.wait.record(waited.as_secs_f64());
    }
}
