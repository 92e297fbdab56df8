//! Two workers on one driver instance share the queue's consumer session: one stopping
//! must not end it under the other (whose acks would then all fail as stale).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::testkit::{eventually, unique, Probe};
use queue_core::{Backend, Driver, JobContext};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_worker_stopping_leaves_the_other_its_session() {
    let name = unique("sessions");
    let q: Arc<dyn Driver> = Arc::new(common::connect(common::URL).await);
    q.create_queue(&name).await.unwrap();
    let backend = Backend::from_driver(q.clone());
    let queue = backend.queue(name.clone());
    let n = 12u64;
    for i in 0..n {
        queue
            .enqueue(&Probe {
                n: i,
                key: String::new(),
            })
            .await
            .unwrap();
    }
    let done = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
    let start = || {
        let done = done.clone();
        queue
            .worker()
            .concurrency(2)
            .poll_wait(Duration::from_millis(200))
            .handle(move |p: Probe, _ctx: JobContext| {
                let done = done.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    *done.lock().unwrap().entry(p.n).or_default() += 1;
                    Ok(())
                }
            })
            .start()
            .unwrap()
    };
    let a = start();
    let b = start();
    eventually(Duration::from_secs(90), "jobs under way", || {
        done.lock().unwrap().len() >= 2
    })
    .await;
    a.shutdown().await;
    eventually(Duration::from_secs(90), "every job processed", || {
        done.lock().unwrap().len() as u64 == n
    })
    .await;
    let r = b.shutdown().await;
    assert_eq!(
        r.backend_errors, 0,
        "the remaining worker's acks must not fail after the other stopped: {r:?}"
    );
    let dups: Vec<_> = done
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(dups.is_empty(), "jobs processed twice: {dups:?}");
}
