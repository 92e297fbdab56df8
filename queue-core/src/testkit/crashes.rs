//! Crashes and shutdown: nothing lost when a worker stops or dies; duplicates have one
//! effect with the idempotency layer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{eventually_worker, probe, Harness, Probe};
use crate::{Driver, JobContext, JobError, SendOptions, WorkerHandle};

/// Shutdown mid-stream: in-flight jobs finish or go back at once; nothing is lost.
pub async fn graceful_shutdown_loses_nothing(h: &Harness) {
    let c = h.fresh("graceful_shutdown_loses_nothing").await;
    let n = 30u64;
    for i in 0..n {
        c.producer().enqueue(&probe(i)).await.expect("enqueue");
    }
    let done = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let slow = c.unit * 2;
    let make = |q: Arc<dyn Driver>, grace: Duration| {
        let done = done.clone();
        let started = started.clone();
        c.worker(q)
            .concurrency(4)
            .lease(c.unit * 200) // a message not returned would be stuck far past the test
            .shutdown_grace(grace)
            .handle(move |p: Probe, _ctx| {
                let done = done.clone();
                started.fetch_add(1, AO::SeqCst);
                async move {
                    tokio::time::sleep(slow).await;
                    done.lock().unwrap().insert(p.n);
                    Ok(())
                }
            })
    };
    let w = make(c.q.clone(), c.unit).start().expect("worker start");
    eventually_worker(&w, c.within(), "jobs started", |_| {
        started.load(AO::SeqCst) >= 4
    })
    .await;
    let first = w.shutdown().await;
    assert!(
        first.returned > 0,
        "a grace shorter than the jobs must return some: {first:?}"
    );
    if c.per_message_lease() && c.caps.exact_stats {
        let s = c.q.stats(&c.name).await.expect("stats");
        assert_eq!(s.in_flight, 0, "shutdown left messages leased: {s:?}");
    }
    let w2 = make(h.driver().await, c.unit * 10)
        .start()
        .expect("worker start");
    eventually_worker(
        &w2,
        c.within() * 2,
        "the rest processed by a second worker",
        |_| done.lock().unwrap().len() as u64 == n,
    )
    .await;
    w2.shutdown().await;
}

/// A worker killed mid-job loses nothing: its messages come back to another worker.
pub async fn crash_mid_job_loses_nothing(h: &Harness) {
    let c = h.fresh("crash_mid_job_loses_nothing").await;
    let n = 20u64;
    for i in 0..n {
        c.producer().enqueue(&probe(i)).await.expect("enqueue");
    }
    let held = Arc::new(AtomicUsize::new(0));
    let held2 = held.clone();
    let doomed = h.driver().await;
    let lease = c.unit * 3;
    let a = c
        .worker(doomed.clone())
        .concurrency(4)
        .lease(lease)
        .handle(move |_: Probe, _ctx| {
            held2.fetch_add(1, AO::SeqCst);
            std::future::pending::<Result<(), JobError>>()
        });
    // No heartbeat may keep the doomed worker's leases alive after the crash.
    let a: WorkerHandle = a.start().expect("worker start");
    eventually_worker(&a, c.within(), "the doomed worker holds jobs", |_| {
        held.load(AO::SeqCst) >= 4
    })
    .await;
    a.abort();
    drop(doomed);
    tokio::time::sleep(h.crash_settle).await;
    let done = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
    let done2 = done.clone();
    let b = c
        .worker(h.driver().await)
        .concurrency(8)
        .lease(lease)
        .handle(move |p: Probe, ctx: JobContext| {
            done2.lock().unwrap().insert(p.n, ctx.attempt);
            async { Ok(()) }
        })
        .start()
        .expect("worker start");
    eventually_worker(
        &b,
        c.within() * 2,
        "every job processed after the crash",
        |_| done.lock().unwrap().len() as u64 == n,
    )
    .await;
    b.shutdown().await;
    if c.per_message_lease() {
        let retried = done.lock().unwrap().values().filter(|a| **a >= 2).count();
        assert!(
            retried >= 4,
            "the crashed worker's jobs must come back as attempt 2+"
        );
    }
}

/// With the idempotency layer on, duplicate messages produce one effect per key.
pub async fn idempotent_effects(h: &Harness) {
    let c = h.fresh("idempotent_effects").await;
    let store = (h.store)().await;
    let effects = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
    let e2 = effects.clone();
    let w = c
        .worker(c.q.clone())
        .concurrency(4)
        .lease(c.unit * 3)
        .idempotency(store, Duration::from_secs(600))
        .handle(move |p: Probe, _ctx| {
            *e2.lock().unwrap().entry(p.n).or_default() += 1;
            async { Ok(()) }
        })
        .start()
        .expect("worker start");
    let keys = 5u64;
    let run = fastrand::u64(..);
    for round in 0..2 {
        for i in 0..keys {
            let opts = SendOptions::new().idempotency_key(format!("ct-{run}-{i}"));
            let _ = round;
            c.producer()
                .enqueue_with(&probe(i), opts)
                .await
                .expect("enqueue");
        }
    }
    // At least 10: a lease that ends before its ack lands (a slow server) redelivers,
    // and that redelivery is skipped too; what must hold exactly is one effect per key.
    eventually_worker(&w, c.within() * 2, "all 10 messages settled", |r| {
        r.succeeded + r.duplicates_skipped >= 2 * keys
    })
    .await;
    let report = w.shutdown().await;
    let effects = effects.lock().unwrap();
    for i in 0..keys {
        assert_eq!(
            effects.get(&i),
            Some(&1),
            "key {i} had {:?} effects",
            effects.get(&i)
        );
    }
    assert!(
        report.duplicates_skipped >= keys,
        "want the {keys} second sends skipped, got {}",
        report.duplicates_skipped
    );
}
