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
