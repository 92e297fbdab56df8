//! Dead letters: max attempts, permanent errors, malformed payloads, redrive, and the
//! first-enqueued time through all of them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{eventually_worker, probe, Harness, Probe};
use crate::{headers, DeadLetterKind, DeadLetterReason, JobContext, JobError, Message, QueueStats};

/// Runs one job whose handler always fails with `error()` until it is dead-lettered;
/// returns its id, how often the handler ran, the worker's report and the dead letter.
async fn dead_letter_one(
    c: &super::Ctx,
    error: fn() -> JobError,
) -> (
    crate::MessageId,
    usize,
    crate::WorkerReport,
    crate::Delivery,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let w = c
        .worker(c.q.clone())
        .handle(move |_: Probe, _ctx| {
            calls2.fetch_add(1, AO::SeqCst);
            async move { Err(error()) }
        })
        .start()
        .expect("worker start");
    let id = c.producer().enqueue(&probe(1)).await.expect("enqueue");
    eventually_worker(&w, c.within(), "job dead-lettered", |r| {
        r.dead_lettered == 1
    })
    .await;
    let report = w.shutdown().await;
    let mut dead = c.dlq_contents(1).await;
    (id, calls.load(AO::SeqCst), report, dead.remove(0))
}

/// After the last attempt the job is in the DLQ with reason headers.
pub async fn dlq_after_max_attempts(h: &Harness) {
    let c = h.fresh("dlq_after_max_attempts").await;
    let (id, calls, report, d) = dead_letter_one(&c, || JobError::retry("always fails")).await;
    assert_eq!(calls, 3, "handler must run max_attempts times");
    assert_eq!(report.retried, 2);
    assert_eq!(d.id, id, "dead letter keeps the message id");
    assert_eq!(
        d.headers.get(headers::DLQ_REASON).map(String::as_str),
        Some("max-attempts")
    );
    assert_eq!(
        d.headers.get(headers::DLQ_ATTEMPTS).map(String::as_str),
        Some("3")
    );
    assert_eq!(d.headers.get(headers::DLQ_SOURCE), Some(&c.name));
    let error = d
        .headers
        .get(headers::DLQ_ERROR)
        .cloned()
        .unwrap_or_default();
    assert!(
        error.contains("always fails"),
        "dead letter's error header: want the handler's error, got {error:?}"
    );
    assert!(d.headers.contains_key(headers::DLQ_AT));
    if c.caps.exact_stats {
        c.stats_eventually(QueueStats::new(0, 0, 0, 1)).await;
    }
}

/// A permanent failure goes to the DLQ on attempt 1.
pub async fn permanent_error_skips_retries(h: &Harness) {
    let c = h.fresh("permanent_error_skips_retries").await;
    let (_, calls, report, d) = dead_letter_one(&c, || JobError::permanent("bad input")).await;
    assert_eq!(calls, 1, "a permanent error must not be retried");
    assert_eq!(report.retried, 0);
    assert_eq!(
        d.headers.get(headers::DLQ_REASON).map(String::as_str),
        Some("permanent")
    );
    assert_eq!(
        d.headers.get(headers::DLQ_ATTEMPTS).map(String::as_str),
        Some("1")
    );
}

/// Redrive moves dead letters back; they are processed, without the dead-letter headers.
pub async fn redrive_returns_messages(h: &Harness) {
    let c = h.fresh("redrive_returns_messages").await;
    let fail = Arc::new(AtomicBool::new(true));
    let clean = Arc::new(AtomicUsize::new(0));
    let (f2, c2) = (fail.clone(), clean.clone());
    let w = c
        .worker(c.q.clone())
        .handle(move |_: Probe, ctx: JobContext| {
            let fail = f2.load(AO::SeqCst);
            if !fail && !ctx.headers.contains_key(headers::DLQ_REASON) && ctx.attempt == 1 {
                c2.fetch_add(1, AO::SeqCst);
            }
            async move {
                if fail {
                    Err(JobError::permanent("not yet"))
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .expect("worker start");
    for i in 0..3 {
        c.producer().enqueue(&probe(i)).await.expect("enqueue");
    }
    eventually_worker(&w, c.within(), "3 dead letters", |r| r.dead_lettered == 3).await;
    fail.store(false, AO::SeqCst);
    let moved = c.q.redrive(&c.name, 10).await.expect("redrive");
    assert_eq!(moved, 3, "redrive should move all 3");
    eventually_worker(&w, c.within(), "redriven jobs processed", |r| {
        r.succeeded == 3
    })
    .await;
    w.shutdown().await;
    assert_eq!(
        clean.load(AO::SeqCst),
        3,
        "redriven messages must be fresh (attempt 1, no DLQ headers)"
    );
    if c.caps.exact_stats {
        c.stats_eventually(QueueStats::default()).await;
    }
}

/// Garbage bytes, unknown job names and malformed data go to the DLQ with the reason;
/// valid jobs around them are processed.
pub async fn malformed_payload_dead_lettered(h: &Harness) {
    let c = h.fresh("malformed_payload_dead_lettered").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let w = c
        .worker(c.q.clone())
        // No grace for unknown jobs here (`unknown_job_waits_for_its_worker` has one).
        .unknown_job_grace(Duration::ZERO)
        .handle(move |_: Probe, _ctx| {
            calls2.fetch_add(1, AO::SeqCst);
            async { Ok(()) }
        })
        .start()
        .expect("worker start");
    let p = c.producer();
    p.send(Message::new(vec![0xff, 0x00, 0xfe]))
        .await
        .expect("send garbage");
    p.send(Message::new(r#"{"job":"no_such_job","v":1,"data":{}}"#))
        .await
        .expect("send");
    p.send(Message::new(
        r#"{"job":"conformance_probe","v":1,"data":{"n":"NaN"}}"#,
    ))
    .await
    .expect("send");
    p.send(Message::new(
        r#"{"job":"conformance_probe","v":99,"data":{"n":1,"key":""}}"#,
    ))
    .await
    .expect("send");
    p.enqueue(&probe(7)).await.expect("enqueue");
    eventually_worker(&w, c.within(), "4 dead letters and 1 success", |r| {
        r.dead_lettered == 4 && r.succeeded == 1
    })
    .await;
    let report = w.shutdown().await;
    assert_eq!(report.retried, 0, "malformed messages must not be retried");
    assert_eq!(calls.load(AO::SeqCst), 1);
    let dead = c.dlq_contents(4).await;
    let mut errors = Vec::new();
    for d in &dead {
        let unknown = d.payload.starts_with(b"{\"job\":\"no_such_job\"");
        assert_eq!(
            d.headers.get(headers::DLQ_REASON).map(String::as_str),
            Some(if unknown { "unknown-job" } else { "malformed" })
        );
        errors.push(
            d.headers
                .get(headers::DLQ_ERROR)
                .cloned()
                .unwrap_or_default(),
        );
    }
    let all = errors.join(" | ");
    assert!(all.contains("not a job envelope"), "{all}");
    assert!(all.contains("no handler for job \"no_such_job\""), "{all}");
    assert!(all.contains("malformed data"), "{all}");
    assert!(all.contains("version 99"), "{all}");
}

/// `first_enqueued_at` is the first send's time through a retry, dead-lettering and
/// redrive, on every hop.
pub async fn first_enqueued_kept(h: &Harness) {
    let c = h.fresh("first_enqueued_kept").await;
    c.send_n(1).await;
    let lease = c.unit * 50;
    let first = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(first.len(), 1);
    let t0 = first[0].first_enqueued_at;
    // Each hop waits long enough that a driver resetting the time would be caught.
    let gap = c.unit * 2 + c.caps.timer_granularity * 2;
    let tolerance = c.caps.timer_granularity + Duration::from_millis(5);
    let same = |what: &str, t: std::time::SystemTime| {
        let diff = t.duration_since(t0).unwrap_or_else(|e| e.duration());
        assert!(
            diff <= tolerance,
            "first_enqueued_at after {what}: want {t0:?} (the first send), got {t:?}"
        );
    };
    tokio::time::sleep(gap).await;
    c.q.nack(&c.name, &first[0].receipt, Duration::ZERO)
        .await
        .expect("nack");
    let retried = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(retried.len(), 1, "want the nacked message back");
    same("a retry", retried[0].first_enqueued_at);
    if !c.per_message_lease() {
        // Session leases: reading the dead letter back here would hold it in this
        // session; the retry hop is what such a backend stores itself.
        c.ack(&retried[0]).await;
        return;
    }
    tokio::time::sleep(gap).await;
    let reason = DeadLetterReason::new(DeadLetterKind::MaxAttempts, "gave up", 2);
    c.q.dead_letter(&retried[0], &reason)
        .await
        .expect("dead_letter");
    let dead = c.dlq_contents(1).await;
    same("dead-lettering", dead[0].first_enqueued_at);
    let dlq = c.q.dead_letter_queue(&c.name);
    c.q.nack(&dlq, &dead[0].receipt, Duration::ZERO)
        .await
        .expect("give the dead letter back");
    tokio::time::sleep(gap).await;
    let moved = c.q.redrive(&c.name, 10).await.expect("redrive");
    assert_eq!(moved, 1, "want 1 message redriven");
    let back = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(back.len(), 1, "want the redriven message");
    same("redrive", back[0].first_enqueued_at);
    assert_eq!(back[0].attempt, 1, "a redriven message: want attempt 1");
    c.ack(&back[0]).await;
}

/// Where `native_dlq` is declared, the backend moves a message that keeps coming back
/// unsettled (a worker crashing on it every time) to the dead-letter queue by itself,
/// keeping its id. The backend's own threshold must be at most 25 deliveries here (SQS's
/// default `max_receive_count` is 25; its kit runs with 10).
pub async fn native_dlq_moves_poison(h: &Harness) {
    let c = h.fresh("native_dlq_moves_poison").await;
    if !c.caps.native_dlq {
        return; // the core's dead-lettering is what the other cases check
    }
    let id = c
        .producer()
        .send(Message::new("poison"))
        .await
        .expect("send");
    let dlq = c.q.dead_letter_queue(&c.name);
    let lease = c.unit;
    let mut deliveries = 0;
    let mut dead = Vec::new();
    while dead.is_empty() && deliveries <= 25 {
        // Lease it and never settle it.
        let got =
            c.q.receive(&c.name, c.opts(1, c.unit * 2, lease))
                .await
                .expect("receive");
        deliveries += got.len();
        tokio::time::sleep(lease + c.caps.timer_granularity).await;
        dead =
            c.q.receive(&dlq, c.opts(1, Duration::ZERO, c.unit * 50))
                .await
                .expect("receive from the DLQ");
    }
    assert_eq!(
        dead.len(),
        1,
        "want the backend to move the poison message to its DLQ by itself, it did not after {deliveries} deliveries"
    );
    assert_eq!(
        dead[0].id, id,
        "the natively moved dead letter: want the same id"
    );
}

/// A job type newer than this worker (a rolling deploy: the producer is new, this worker
/// is old) is given back without spending an attempt, not dead-lettered, while the
/// worker's grace lasts, and a worker that knows it runs it; past the grace, with no such
/// worker, it is dead-lettered with the reason `unknown-job`.
pub async fn unknown_job_waits_for_its_worker(h: &Harness) {
    let c = h.fresh("unknown_job_waits_for_its_worker").await;
    let newer = r#"{"job":"conformance_newer","v":1,"data":{}}"#;
    // Where a give-back spends an attempt (SQS FIFO) the grace also ends at the policy's
    // last attempt: allow as many as the backend's own receive limit does.
    let budget = c.caps.max_receives.unwrap_or(10).min(10);
    let old = c
        .worker(h.driver().await)
        .unknown_job_grace(c.within() * 3)
        .retry(crate::RetryPolicy::new(
            budget,
            crate::Backoff::Fixed(c.unit / 2),
        ))
        .handle(|_: Probe, _ctx| async { Ok(()) })
        .start()
        .expect("old worker start");
    c.producer()
        .send(Message::new(newer))
        .await
        .expect("send the newer job");
    eventually_worker(
        &old,
        c.within(),
        "the old worker gives the newer job back",
        |r| r.unknown_job >= 1,
    )
    .await;
    // The deploy goes on: the old worker stops, a new one that knows the job starts (on
    // a session backend, Kafka, the old worker's partitions move to the new one).
    let old_report = old.shutdown().await;
    tokio::time::sleep(h.crash_settle).await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let new = c
        .worker(h.driver().await)
        .handle_raw(move |d| {
            seen.lock().unwrap().push(d.attempt);
            async { Ok(()) }
        })
        .start()
        .expect("new worker start");
    eventually_worker(
        &new,
        c.within() * 2,
        "the new worker runs the newer job",
        |r| r.succeeded >= 1,
    )
    .await;
    let new_report = new.shutdown().await;
    assert_eq!(
        old_report.dead_lettered, 0,
        "want the newer job given back during the grace, not dead-lettered: {old_report:?}"
    );
    assert_eq!(new_report.dead_lettered, 0, "{new_report:?}");
    if c.caps.give_back_keeps_attempt {
        assert_eq!(
            *attempts.lock().unwrap(),
            [1],
            "want the newer job run once, at attempt 1 (a give-back spends no attempt)"
        );
    }
    // Past the grace, and no worker knows it: dead-lettered, with the reason.
    let old = c
        .worker(c.q.clone())
        .unknown_job_grace(c.unit * 3)
        .handle(|_: Probe, _ctx| async { Ok(()) })
        .start()
        .expect("old worker start");
    c.producer()
        .send(Message::new(newer))
        .await
        .expect("send the newer job");
    eventually_worker(
        &old,
        c.within() * 2,
        "the unknown job dead-lettered after its grace",
        |r| r.dead_lettered >= 1,
    )
    .await;
    old.shutdown().await;
    let dead = c.dlq_contents(1).await;
    assert_eq!(
        dead[0].headers.get(headers::DLQ_REASON).map(String::as_str),
        Some("unknown-job")
    );
}
