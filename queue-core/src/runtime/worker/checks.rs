//! The checks `Worker::start` makes before it starts anything: the settings against the
//! backend's capabilities, and the retry policies against what the backend can hold.

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

pub(super) fn check_config(c: &WorkerConfig, caps: &Capabilities, batch_mode: bool) -> QResult<()> {
    let bad = |what: String| Err(QueueError::InvalidOption(what));
    if c.concurrency == 0 || c.concurrency > 100_000 {
        return bad(format!(
            "concurrency must be 1 to 100000, got {}",
            c.concurrency
        ));
    }
    if matches!(caps.lease, LeaseModel::PerMessage { .. })
        && (c.lease < caps.timer_granularity || c.lease > caps.max_lease)
    {
        return bad(format!(
            "lease must be {:?} to {:?} on this backend, got {:?}",
            caps.timer_granularity, caps.max_lease, c.lease
        ));
    }
    if c.poll_wait < Duration::from_millis(10) || c.poll_wait > HOUR {
        return bad(format!(
            "poll_wait must be 10ms to 1h (an empty receive would spin), got {:?}",
            c.poll_wait
        ));
    }
    if let Some(t) = c.job_timeout {
        if t.is_zero() || t > 30 * 24 * HOUR {
            return bad(format!(
                "job_timeout must be over 0 and at most 30 days, got {t:?}"
            ));
        }
    }
    if c.snooze_limit > 366 * 24 * HOUR {
        return bad(format!(
            "snooze_limit must be at most 366 days, got {:?}",
            c.snooze_limit
        ));
    }
    if c.unknown_job_grace > 30 * 24 * HOUR {
        return bad(format!(
            "unknown_job_grace must be at most 30 days, got {:?}",
            c.unknown_job_grace
        ));
    }
    if c.shutdown_grace > 24 * HOUR {
        return bad(format!(
            "shutdown_grace must be at most 24h, got {:?}",
            c.shutdown_grace
        ));
    }
    if c.ack_linger > Duration::from_secs(10) {
        return bad(format!(
            "ack_linger must be at most 10s, got {:?}",
            c.ack_linger
        ));
    }
    if batch_mode && (c.batch_size == 0 || c.batch_size > caps.max_batch) {
        return bad(format!(
            "batch_size must be 1 to {} (the backend's batch limit), got {}",
            caps.max_batch, c.batch_size
        ));
    }
    if c.retry.max_attempts == 0 {
        return bad("retry policy max_attempts must be at least 1".into());
    }
    Ok(())
}

/// Where the backend dead-letters by itself after a number of receives (SQS's redrive
/// policy), no retry policy may allow more attempts: the native move would pre-empt the
/// worker's own dead-lettering, and its dead letters carry no reason. (A per-message
/// [`headers::MAX_ATTEMPTS`] above the limit cannot be checked here: the native move
/// applies to it.)
pub(super) fn check_native_dlq(c: &WorkerConfig, mode: &Mode, caps: &Capabilities) -> QResult<()> {
    let (true, Some(limit)) = (caps.native_dlq, caps.max_receives) else {
        return Ok(());
    };
    for (what, p) in policies(c, mode) {
        let attempts = p.max_attempts;
        if attempts > limit {
            return Err(QueueError::InvalidOption(format!(
                "{what} allows {attempts} attempts, but this backend moves a message to its \
                 dead-letter queue by itself after {limit} receives (SQS: the queue's \
                 maxReceiveCount, `?max_receive_count=`): lower max_attempts or raise the limit"
            )));
        }
    }
    Ok(())
}

/// The worker's retry policy and each job's own, named for error messages.
fn policies(c: &WorkerConfig, mode: &Mode) -> Vec<(String, RetryPolicy)> {
    let mut out = vec![("the worker's retry policy".to_string(), c.retry)];
    if let Mode::Jobs { jobs, .. } = mode {
        for (name, reg) in jobs {
            if let Some(p) = reg.retry {
                out.push((format!("job {name}'s retry policy"), p));
            }
        }
    }
    out
}

/// No retry policy may wait longer between attempts than the backend can hold a message
/// back, unless the application accepted the cut ([`Worker::clamp_retry_delays`]).
pub(super) fn check_retry_delays(
    c: &WorkerConfig,
    mode: &Mode,
    caps: &Capabilities,
    backend: &str,
) -> QResult<()> {
    if c.clamp_retry_delays {
        return Ok(());
    }
    let max = caps.max_nack_delay.unwrap_or(Duration::ZERO);
    for (what, p) in policies(c, mode) {
        let longest = p.longest_delay();
        if longest > max {
            return Err(QueueError::InvalidOption(format!(
                "{what} waits up to {longest:?} between attempts, but {backend} holds a \
                 retried message back at most {max:?}: lower the backoff (or its cap), or call \
                 Worker::clamp_retry_delays() to accept waits cut to {max:?}"
            )));
        }
    }
    Ok(())
}
