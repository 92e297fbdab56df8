//! What operators do: peek without taking, read dead letters with their reasons, redrive
//! by reason, pause and resume a queue for its workers.

use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::Arc;

use super::{eventually, Harness, Probe};
use crate::status::JobStatuses;
use crate::{Backend, DeadLetterKind, DeadLetterReason, JobContext, Peek, QueueError, QueueStats};

fn is_unsupported<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) {
    match r {
        Err(QueueError::Unsupported { .. }) => {}
        other => panic!("{what}: the backend does not declare it, want Unsupported, got {other:?}"),
    }
}

/// Peeking lists the next ready messages in order and changes nothing: no lease, no
/// attempt, stats as before. A backend that cannot peek its queues says so.
pub async fn peek_leaves_messages(h: &Harness) {
    let c = h.fresh("peek_leaves_messages").await;
    let ids = c.send_n(3).await;
    let q = c.queue();
    if c.caps.peek != Peek::All {
        is_unsupported(q.peek(10).await, "peek on a main queue");
        return;
    }
    c.stats_eventually(QueueStats::new(3, 0, 0, 0)).await;
    let two = q.peek(2).await.expect("peek");
    let got: Vec<String> = two.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(got, ids[..2], "peek(2): the first two in line");
    assert_eq!(
        (two[0].payload.as_ref(), two[0].deliveries),
        (b"m0".as_ref(), 0),
        "payload as sent, never delivered"
    );
    assert_eq!(q.peek(10).await.expect("peek").len(), 3);
    c.stats_eventually(QueueStats::new(3, 0, 0, 0)).await;
    let all = c.collect(&c.q, 3, c.within(), c.unit * 20).await;
    assert!(
        all.iter().all(|d| d.attempt == 1),
        "a peek counts no attempt: {:?}",
        all.iter().map(|d| d.attempt).collect::<Vec<_>>()
    );
    for d in &all {
        c.ack(d).await;
    }
}

/// Dead letters are listed with their reason, error and attempts (where the backend can
/// peek its dead-letter queues), and a redrive by reason moves only the matching ones.
pub async fn dead_letters_by_reason(h: &Harness) {
    let c = h.fresh("dead_letters_by_reason").await;
    let ids = c.send_n(3).await;
    let got = c.collect(&c.q, 3, c.within(), c.unit * 50).await;
    assert_eq!(got.len(), 3, "three deliveries");
    let kinds = [
        DeadLetterKind::Permanent,
        DeadLetterKind::Malformed,
        DeadLetterKind::Permanent,
    ];
    for d in &got {
        let i = ids
            .iter()
            .position(|id| *id == d.id.to_string())
            .expect("sent id");
        let reason = DeadLetterReason::new(kinds[i], format!("error {i}"), 1);
        c.q.dead_letter(d, &reason).await.expect("dead_letter");
    }
    c.stats_eventually(QueueStats::new(0, 0, 0, 3)).await;
    let q = c.queue();
    if c.caps.can_peek(true) {
        let mut dead = q.dead_letters(10).await.expect("dead_letters");
        dead.sort_by_key(|d| ids.iter().position(|id| *id == d.message.id.to_string()));
        let seen: Vec<_> = dead
            .iter()
            .map(|d| {
                (
                    d.message.id.to_string(),
                    d.reason,
                    d.error.clone(),
                    d.attempts,
                )
            })
            .collect();
        let want: Vec<_> = (0..3)
            .map(|i| {
                (
                    ids[i].clone(),
                    Some(kinds[i]),
                    Some(format!("error {i}")),
                    Some(1),
                )
            })
            .collect();
        assert_eq!(seen, want, "dead letters with their reasons");
        assert_eq!(dead[1].source.as_deref(), Some(c.name.as_str()));
        c.stats_eventually(QueueStats::new(0, 0, 0, 3)).await;
    } else {
        is_unsupported(q.dead_letters(10).await, "peek on a dead-letter queue");
    }
    let mut steps = Vec::new();
    let moved = q
        .redrive_matching(10, Some(DeadLetterKind::Permanent), |n| steps.push(n))
        .await
        .expect("redrive by reason");
    assert_eq!(moved, 2, "the two permanent ones move");
    assert_eq!(steps.last(), Some(&2), "progress reported: {steps:?}");
    let back = c.collect(&c.q, 2, c.within(), c.unit * 50).await;
    let mut back_ids: Vec<String> = back.iter().map(|d| d.id.to_string()).collect();
    back_ids.sort();
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(back_ids, want, "only the matching dead letters came back");
    for d in &back {
        c.ack(d).await;
    }
    c.stats_eventually(QueueStats::new(0, 0, 0, 1)).await;
    // The one held aside was given back; a backend may take a moment to show it again
    // (Kafka re-reads it from its offset), so look until the case's time is up.
    let deadline = tokio::time::Instant::now() + c.within();
    let mut rest = 0;
    while rest == 0 && tokio::time::Instant::now() < deadline {
        rest += q
            .redrive_matching(10, None, |_| {})
            .await
            .expect("redrive all");
    }
    assert_eq!(
        rest, 1,
        "the malformed one is still there and moves with no filter"
    );
}

/// A paused queue starts no job in any worker sharing the store, a worker started while
/// it is paused stays idle (the state survives restarts), and resume lets the jobs run.
pub async fn pause_stops_workers(h: &Harness) {
    let c = h.fresh("pause_stops_workers").await;
    let store = (h.status_store)().await;
    let b = Backend::from_driver(c.q.clone()).with_status(JobStatuses::new(store));
    let q = b.queue(c.name.clone());
    assert!(!q.is_paused().await.expect("is_paused"));
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = |b: Backend| {
        let runs = runs.clone();
        super::start(c.worker_for(b).handle(move |_: Probe, _: JobContext| {
            runs.fetch_add(1, AO::SeqCst);
            async { Ok(()) }
        }))
    };
    let w1 = worker(b.clone());
    q.enqueue(&super::probe(1)).await.expect("enqueue");
    eventually(c.within(), "the first job runs", || {
        runs.load(AO::SeqCst) == 1
    })
    .await;
    assert!(q.pause().await.expect("pause"), "pause of a running queue");
    assert!(
        !q.pause().await.expect("pause"),
        "a second pause changes nothing"
    );
    assert!(q.is_paused().await.expect("is_paused"));
    // Workers read the state every PAUSE_POLL; a receive in progress may still end.
    tokio::time::sleep(crate::pause::PAUSE_POLL * 2 + c.unit * 3).await;
    w1.shutdown().await;
    let w2 = worker(b.clone());
    for n in 2..4 {
        q.enqueue(&super::probe(n)).await.expect("enqueue");
    }
    let w3 = worker(b.clone());
    tokio::time::sleep(crate::pause::PAUSE_POLL * 2 + c.unit * 10).await;
    assert_eq!(
        runs.load(AO::SeqCst),
        1,
        "no job starts while the queue is paused"
    );
    assert!(q.resume().await.expect("resume"));
    assert!(
        !q.resume().await.expect("resume"),
        "a second resume changes nothing"
    );
    eventually(c.within(), "both jobs run after resume", || {
        runs.load(AO::SeqCst) == 3
    })
    .await;
    w2.shutdown().await;
    w3.shutdown().await;
    c.stats_eventually(QueueStats::default()).await;
}
