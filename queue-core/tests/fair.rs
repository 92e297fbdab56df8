//! Fair sharing between keys (queue_core::fair) on the in-memory backend under tokio's
//! paused clock: a small tenant behind a big tenant's backlog finishes early with a fair
//! producer and worker, and last without; the worker's slots stay its concurrency; pause
//! stops every shard.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::{Backend, Fairness, JobStatuses, MemoryStore, Message, Queue};
use tokio::time::Instant;

const BIG: usize = 200;
const SMALL: usize = 5;
const SLOTS: usize = 4;

async fn backend(name: &str) -> Backend {
    queue_core::connect(&format!("memory://{name}"))
        .await
        .unwrap()
}

async fn send(q: &Queue, fair: Option<&Fairness>) {
    let p = match fair {
        Some(f) => q.producer().fair(f.clone()),
        None => q.producer(),
    };
    let mut msgs: Vec<Message> = (0..BIG)
        .map(|i| Message::new(format!("big{i}")).header("tenant", "big"))
        .collect();
    msgs.extend((0..SMALL).map(|i| Message::new(format!("small{i}")).header("tenant", "small")));
    let ids = p.send_batch(msgs).await.unwrap();
    assert_eq!(ids.len(), BIG + SMALL);
}

/// Runs every job (10 ms each) and returns the tenants in the order they finished and
/// the most jobs seen running at once.
async fn drain(q: &Queue, fair: Option<&Fairness>) -> (Vec<String>, usize) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(Mutex::new((0usize, 0usize)));
    let (d2, r2) = (done.clone(), running.clone());
    let mut w = q.worker().concurrency(SLOTS);
    if let Some(f) = fair {
        w = w.fair(f.clone());
    }
    let w = w
        .handle_raw(move |d| {
            let (done, running) = (d2.clone(), r2.clone());
            async move {
                {
                    let mut r = running.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.lock().unwrap().0 -= 1;
                let t = d.headers.get("tenant").cloned().unwrap_or_default();
                done.lock().unwrap().push(t);
                Ok(())
            }
        })
        .start()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.lock().unwrap().len() < BIG + SMALL {
        assert!(Instant::now() < deadline, "jobs not all done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = w.shutdown().await;
    assert_eq!(report.succeeded as usize, BIG + SMALL);
    let done = done.lock().unwrap().clone();
    let max = running.lock().unwrap().1;
    (done, max)
}

/// How many big jobs finished before the last small one.
fn big_before_small(done: &[String]) -> usize {
    let last_small = done.iter().rposition(|t| t == "small").expect("small ran");
    done[..last_small].iter().filter(|t| *t == "big").count()
}

#[tokio::test(start_paused = true)]
async fn a_small_tenant_is_not_stuck_behind_a_backlog() {
    let fair = Fairness::by_header(4, "tenant").unwrap();
    assert_ne!(fair.shard_of("big"), fair.shard_of("small"));

    let b = backend("fair-backlog").await;
    let plain = b.queue("plain");
    plain.create().await.unwrap();
    send(&plain, None).await;
    let (done, max) = drain(&plain, None).await;
    assert_eq!(
        big_before_small(&done),
        BIG,
        "the plain FIFO case: small waits for all"
    );
    assert!(max <= SLOTS);

    let q = b.queue("fair");
    fair.create(&q).await.unwrap();
    send(&q, Some(&fair)).await;
    // The big backlog sits on its own shard; the queue itself (shard 0) holds small's.
    let depth = |i: u16| {
        let q = q.backend().queue(Fairness::shard_name("fair", i));
        async move { q.stats().await.unwrap().ready }
    };
    assert_eq!(depth(fair.shard_of("big")).await, BIG as u64);
    assert_eq!(depth(fair.shard_of("small")).await, SMALL as u64);
    let (done, max) = drain(&q, Some(&fair)).await;
    // Turns alternate between the two busy shards: small's 5 jobs finish within about
    // 5 turns of big's, not behind its 200.
    let before = big_before_small(&done);
    assert!(
        before <= 2 * SMALL + SLOTS,
        "{before} big jobs ran first: {done:?}"
    );
    assert!(max <= SLOTS, "{max} jobs ran at once on {SLOTS} slots");
    assert!(max >= 2, "the shards did not run side by side");
}

#[tokio::test(start_paused = true)]
async fn fair_batches_keep_the_callers_order_of_ids() {
    let b = backend("fair-ids")
        .await
        .with_status(JobStatuses::new(Arc::new(MemoryStore::default())));
    let fair = Fairness::by_header(8, "tenant").unwrap();
    let q = b.queue("ids");
    fair.create(&q).await.unwrap();
    let msgs: Vec<Message> = (0..40)
        .map(|i| Message::new(format!("{i}")).header("tenant", format!("t{}", i % 7)))
        .collect();
    let sent: Vec<_> = msgs.iter().map(|m| m.id.clone()).collect();
    let ids = q
        .producer()
        .fair(fair.clone())
        .send_batch(msgs)
        .await
        .unwrap();
    assert_eq!(ids, sent);
    // Each job's status names the shard it went to.
    let st = b.job_status(&ids[1]).await.unwrap().unwrap();
    assert_eq!(st.queue, Fairness::shard_name("ids", fair.shard_of("t1")));
    let mut total = 0;
    for s in fair.queues(&q) {
        total += s.stats().await.unwrap().ready;
    }
    assert_eq!(total, 40);
}

#[tokio::test(start_paused = true)]
async fn pausing_the_queue_pauses_every_shard() {
    let b = backend("fair-paused")
        .await
        .with_status(JobStatuses::new(Arc::new(MemoryStore::default())));
    let fair = Fairness::by_header(4, "tenant").unwrap();
    let q = b.queue("paused");
    fair.create(&q).await.unwrap();
    q.pause().await.unwrap();
    send(&q, Some(&fair)).await;
    let ran = Arc::new(Mutex::new(0usize));
    let r2 = ran.clone();
    let w = q
        .worker()
        .concurrency(SLOTS)
        .fair(fair.clone())
        .handle_raw(move |_| {
            let r = r2.clone();
            async move {
                *r.lock().unwrap() += 1;
                Ok(())
            }
        })
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        *ran.lock().unwrap(),
        0,
        "a shard ran while its queue was paused"
    );
    q.resume().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while *ran.lock().unwrap() < BIG + SMALL {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_shards_leave_every_slot_to_a_busy_one() {
    let b = backend("fair-idle").await;
    let fair = Fairness::by_header(8, "tenant").unwrap();
    let q = b.queue("idle");
    fair.create(&q).await.unwrap();
    let msgs: Vec<Message> = (0..80)
        .map(|i| Message::new(format!("{i}")).header("tenant", "big"))
        .collect();
    q.producer()
        .fair(fair.clone())
        .send_batch(msgs)
        .await
        .unwrap();
    let running = Arc::new(Mutex::new((0usize, 0usize, 0usize)));
    let r2 = running.clone();
    let t0 = Instant::now();
    let w = q
        .worker()
        .concurrency(8)
        .fair(fair)
        .handle_raw(move |_| {
            let r = r2.clone();
            async move {
                {
                    let mut r = r.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                let mut r = r.lock().unwrap();
                r.0 -= 1;
                r.2 += 1;
                Ok(())
            }
        })
        .start()
        .unwrap();
    while running.lock().unwrap().2 < 80 {
        assert!(t0.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed();
    w.shutdown().await;
    let max = running.lock().unwrap().1;
    // 80 jobs of 10 ms on 8 slots: 100 ms when the seven idle shards hold none.
    assert_eq!(
        max, 8,
        "the busy shard ran at most {max} at once on 8 slots"
    );
    assert!(took < Duration::from_millis(300), "took {took:?}");
}
