//! Aggregation ([`queue_core::aggregate`]) on the in-memory backend under tokio's paused
//! clock: sets by size, by wait, by minimum size; keys never mixed; each job settled on
//! its own; bad settings refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::aggregate::Aggregate;
use queue_core::*;
use tokio::time::Instant;

/// One handler call: its key, the payloads in it, when.
type Call = (String, Vec<String>, Instant);

async fn setup(
    agg: Aggregate,
    fail: Option<&'static str>,
) -> (Queue, Arc<Mutex<Vec<Call>>>, WorkerHandle) {
    let b = connect(&format!("memory://aggregate-{}", fastrand::u64(..)))
        .await
        .unwrap();
    let q = b.queue("q");
    q.create().await.unwrap();
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let seen = calls.clone();
    let w = q
        .worker()
        .concurrency(8)
        .batch_size(4)
        .poll_wait(Duration::from_millis(20))
        .retry(RetryPolicy::none())
        .handle_batch(agg.handler(move |key: String, set: Vec<Delivery>| {
            let seen = seen.clone();
            async move {
                let payloads: Vec<String> = set
                    .iter()
                    .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
                    .collect();
                let failures = payloads
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| Some(p.as_str()) == fail)
                    .map(|(i, _)| ItemFailure::new(i, JobError::permanent("bad item")))
                    .collect();
                seen.lock().unwrap().push((key, payloads, Instant::now()));
                failures
            }
        }))
        .start()
        .unwrap();
    (q, calls, w)
}

async fn send(q: &Queue, user: &str, what: &str) {
    q.send(Message::new(what.to_string()).header("user", user))
        .await
        .unwrap();
}

async fn settled(w: &WorkerHandle, n: u64) {
    queue_core::testkit::eventually_worker(w, Duration::from_secs(120), "all settled", |r| {
        r.succeeded + r.dead_lettered >= n
    })
    .await;
}

/// Ten jobs of one user, sets of five: two calls of five, long before the wait is up;
/// another user's three jobs form their own set, handed over when their wait ends.
#[tokio::test(start_paused = true)]
async fn full_sets_go_at_once_and_the_rest_after_the_wait() {
    let agg = Aggregate::new(5)
        .unwrap()
        .max_wait(Duration::from_secs(10))
        .unwrap()
        .by_header("user");
    let (q, calls, w) = setup(agg, None).await;
    let t0 = Instant::now();
    for i in 0..10 {
        send(&q, "ann", &format!("ann-{i}")).await;
    }
    for i in 0..3 {
        send(&q, "bob", &format!("bob-{i}")).await;
    }
    settled(&w, 13).await;
    let calls = calls.lock().unwrap().clone();
    let ann: Vec<_> = calls.iter().filter(|c| c.0 == "ann").collect();
    let bob: Vec<_> = calls.iter().filter(|c| c.0 == "bob").collect();
    assert_eq!(ann.len(), 2, "{calls:?}");
    for c in &ann {
        assert_eq!(c.1.len(), 5, "{calls:?}");
        assert!(c.1.iter().all(|p| p.starts_with("ann-")), "{calls:?}");
        assert!(
            c.2 < t0 + Duration::from_secs(2),
            "a full set waited: {calls:?}"
        );
    }
    assert_eq!(bob.len(), 1, "{calls:?}");
    assert_eq!(bob[0].1.len(), 3, "{calls:?}");
    assert!(
        bob[0].2 >= t0 + Duration::from_secs(10),
        "handed over early: {calls:?}"
    );
    assert!(bob[0].2 < t0 + Duration::from_secs(12), "{calls:?}");
    w.shutdown().await;
}

/// With a minimum size of two, two jobs go at once though the set could hold five.
#[tokio::test(start_paused = true)]
async fn a_set_goes_at_its_minimum_size() {
    let agg = Aggregate::new(5)
        .unwrap()
        .min_size(2)
        .unwrap()
        .max_wait(Duration::from_secs(60))
        .unwrap()
        .by_header("user");
    let (q, calls, w) = setup(agg, None).await;
    let t0 = Instant::now();
    send(&q, "ann", "a").await;
    send(&q, "ann", "b").await;
    settled(&w, 2).await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1.len(), 2);
    assert!(calls[0].2 < t0 + Duration::from_secs(5), "{calls:?}");
    w.shutdown().await;
}

/// The handler fails one job of a set: that one is dead-lettered (no retries here), the
/// others are acked.
#[tokio::test(start_paused = true)]
async fn each_job_of_a_set_is_settled_on_its_own() {
    let agg = Aggregate::new(3)
        .unwrap()
        .max_wait(Duration::from_millis(500))
        .unwrap()
        .by_header("user");
    let (q, _calls, w) = setup(agg, Some("b")).await;
    for what in ["a", "b", "c"] {
        send(&q, "ann", what).await;
    }
    settled(&w, 3).await;
    let r = w.shutdown().await;
    assert_eq!((r.succeeded, r.dead_lettered), (2, 1), "{r:?}");
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].message.payload[..], b"b");
}

#[test]
fn bad_settings_are_refused() {
    assert!(Aggregate::new(0).is_err());
    assert!(Aggregate::new(10_001).is_err());
    assert!(Aggregate::new(5).unwrap().min_size(6).is_err());
    assert!(Aggregate::new(5).unwrap().min_size(0).is_err());
    assert!(Aggregate::new(5).unwrap().max_wait(Duration::ZERO).is_err());
    assert!(Aggregate::new(5)
        .unwrap()
        .max_wait(Duration::from_secs(2 * 24 * 3600))
        .is_err());
}
