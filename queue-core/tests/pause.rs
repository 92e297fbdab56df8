//! Pause's time bound under tokio's paused clock: a running worker stops taking jobs
//! within a second of `Queue::pause` (also in the middle of a long poll), lets its running
//! job finish, and starts again within a second of `Queue::resume`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::{JobStatuses, MemoryStore, Message};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_pause_reaches_a_running_worker_within_a_second() {
    let b = queue_core::connect("memory://pause-bound")
        .await
        .unwrap()
        .with_status(JobStatuses::new(Arc::new(MemoryStore::new())));
    let q = b.queue("p");
    q.create().await.unwrap();
    let t0 = Instant::now();
    let started = Arc::new(Mutex::new(Vec::<(String, Duration)>::new()));
    let s2 = started.clone();
    let w = q
        .worker()
        .concurrency(2)
        // Long polls: the pause must reach the worker while one is in progress.
        .poll_wait(Duration::from_secs(5))
        .handle_raw(move |d| {
            let s = s2.clone();
            async move {
                let body = String::from_utf8_lossy(&d.payload).to_string();
                s.lock().unwrap().push((body.clone(), t0.elapsed()));
                if body == "long" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Ok(())
            }
        })
        .start()
        .unwrap();
    q.send(Message::new("long")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(started.lock().unwrap().len(), 1, "the first job runs");

    assert!(q.pause().await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..3 {
        q.send(Message::new("late")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let names: Vec<String> = started
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert_eq!(names, ["long"], "a job started a second after the pause");
    assert_eq!(
        w.report().succeeded,
        1,
        "the running job finished while paused"
    );
    assert_eq!(q.stats().await.unwrap().ready, 3);

    assert!(q.resume().await.unwrap());
    let resumed = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late: Vec<Duration> = started
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 == "late")
        .map(|s| s.1)
        .collect();
    assert_eq!(late.len(), 3, "every job runs after resume");
    for at in late {
        assert!(
            at <= resumed + Duration::from_secs(1),
            "a job started {:?} after resume",
            at - resumed
        );
    }
    w.shutdown().await;
}
