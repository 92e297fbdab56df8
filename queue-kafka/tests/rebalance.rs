//! Two workers in one consumer group on a 3-partition topic; one leaves mid-run. Nothing is
//! lost across the rebalance, and each key's messages start in order (a rebalance may
//! replay from the last committed offset, never skip ahead).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::testkit::{eventually, key_order, unique, Probe};
use queue_core::{job_message, Backend, Driver, JobContext, SendOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_consumer_leaves_mid_run() {
    let name = unique("rebalance");
    let q: Arc<dyn Driver> = Arc::new(common::connect(common::URL).await);
    q.create_queue(&name).await.unwrap();
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5"];
    let per_key = 40u64;
    let mut msgs = Vec::new();
    for n in 0..per_key {
        for k in keys {
            let opts = SendOptions::new().ordering_key(k);
            msgs.push(job_message(&Probe { n, key: k.into() }, opts).unwrap());
        }
    }
    Backend::from_driver(q.clone())
        .queue(name.clone())
        .producer()
        .send_batch(msgs)
        .await
        .unwrap();

    let log = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let start = |q: Arc<dyn Driver>| {
        let log = log.clone();
        Backend::from_driver(q)
            .queue(name.clone())
            .worker()
            .concurrency(4)
            .poll_wait(Duration::from_millis(200))
            .handle(move |p: Probe, _ctx: JobContext| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push((p.key, p.n));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                }
            })
            .start()
            .unwrap()
    };
    // Both join (tansu may first give every partition to whichever joins first; the second
    // join rebalances them), both work, then `a` leaves mid-run and `b` must finish
    // everything `a` had not settled.
    let a = start(Arc::new(common::connect(common::URL).await));
    let b = start(Arc::new(common::connect(common::URL).await));
    eventually(Duration::from_secs(120), "both consumers working", || {
        a.report().succeeded > 0 && b.report().succeeded > 0
    })
    .await;
    let left = a.shutdown().await; // leaves the group: b takes over every partition
    eventually(
        Duration::from_secs(120),
        "the rest processed by the remaining consumer",
        || {
            let log = log.lock().unwrap();
            let mut firsts: HashMap<&str, u64> = HashMap::new();
            for (k, n) in log.iter() {
                let e = firsts.entry(k.as_str()).or_default();
                *e = (*e).max(n + 1);
            }
            firsts.values().all(|v| *v == per_key) && firsts.len() == keys.len()
        },
    )
    .await;
    let stayed = b.shutdown().await;
    assert!(
        left.succeeded > 0 && stayed.succeeded > 0,
        "both consumers worked: {left:?} {stayed:?}"
    );
    let log = log.lock().unwrap();
    for k in keys {
        key_order(&log, k, per_key);
    }
}

/// librdkafka keeps a partition's pause across a revoke and a later assign. A consumer that
/// went idle (every partition paused), lost partitions in a rebalance, and got them back
/// while it was receiving used to leave them paused for good: their messages were never
/// delivered. Found by queue-chaos's worker-crash run (jobs stuck after three kills).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_paused_while_idle_flow_when_assigned_again() {
    let name = unique("repause");
    let a: Arc<dyn Driver> = Arc::new(common::connect(common::URL).await);
    a.create_queue(&name).await.unwrap();
    let opts =
        queue_core::ReceiveOptions::new(10, Duration::from_millis(500), Duration::from_secs(30));
    // `a` joins and owns every partition, then idles: its keeper pauses them all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while a.receive(&name, opts.clone()).await.unwrap().is_empty() {
        let producer = Backend::from_driver(a.clone())
            .queue(name.clone())
            .producer();
        producer
            .send(queue_core::Message::new("join"))
            .await
            .unwrap();
        assert!(tokio::time::Instant::now() < deadline, "a never joined");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // `b` joins while `a` idles: `a` gets some partitions back (paused again, as idle).
    let b = Backend::from_driver(Arc::new(common::connect(common::URL).await))
        .queue(name.clone())
        .worker()
        .poll_wait(Duration::from_millis(200))
        .handle_raw(|_| async { Ok(()) })
        .start()
        .unwrap();
    let spread = |tag: &str| -> Vec<queue_core::Message> {
        (0..30)
            .map(|i| queue_core::Message::new(format!("{tag}{i}")).ordering_key(format!("key-{i}")))
            .collect()
    };
    Backend::from_driver(a.clone())
        .queue(name.clone())
        .producer()
        .send_batch(spread("for-b-"))
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "b joined and worked", || {
        b.report().received > 0
    })
    .await;
    // `a` receives again (resuming what it owns), then `b` leaves while `a` is receiving:
    // `a` gets every partition back, and must fetch from all of them.
    let got = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let g2 = got.clone();
    let a2 = a.clone();
    let n2 = name.clone();
    let receiving = tokio::spawn(async move {
        loop {
            for d in a2.receive(&n2, opts.clone()).await.unwrap_or_default() {
                g2.lock().unwrap().insert(d.id.to_string());
                let _ = a2.ack(&n2, &[d.receipt]).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.shutdown().await;
    // Keys spread over every partition.
    let msgs = spread("m");
    let ids = Backend::from_driver(a.clone())
        .queue(name.clone())
        .producer()
        .send_batch(msgs)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "a receives all 30, from every partition",
        || {
            let got = got.lock().unwrap();
            ids.iter().all(|id| got.contains(id.as_str()))
        },
    )
    .await;
    receiving.abort();
}
