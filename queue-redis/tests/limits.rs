//! A rate limit shared by two workers on two driver instances (two connections, as two
//! processes would have), enforced through a RedisStore on the real server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_core::testkit::unique;
use queue_core::{Backend, JobStatuses, Message, RateLimit};
use queue_redis::RedisStore;

const URL: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_limit_through_redis() {
    let name = unique("limit");
    let starts = Arc::new(Mutex::new(Vec::<(Duration, u32)>::new()));
    let t0 = Instant::now();
    let limit = RateLimit::per_second(10).unwrap();
    let mut workers = Vec::new();
    let mut first = None;
    for _ in 0..2 {
        let driver = common::connect(URL).await;
        let store = Arc::new(RedisStore::new(&driver));
        let b = Backend::new(driver).with_status(JobStatuses::new(store));
        let q = b.queue(name.clone());
        q.create().await.unwrap();
        first.get_or_insert(q.clone());
        let starts = starts.clone();
        let w = q
            .worker()
            .concurrency(8)
            .rate_limit(limit)
            .handle_raw(move |d| {
                starts.lock().unwrap().push((t0.elapsed(), d.attempt));
                async { Ok(()) }
            })
            .start()
            .unwrap();
        workers.push(w);
    }
    let q = first.unwrap();
    let msgs = (0..30).map(|i| Message::new(format!("m{i}"))).collect();
    q.producer().send_batch(msgs).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts.lock().unwrap().len() < 30 {
        assert!(Instant::now() < deadline, "30 jobs never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in workers {
        w.shutdown().await;
    }
    let mut t: Vec<Duration> = starts.lock().unwrap().iter().map(|(t, _)| *t).collect();
    t.sort();
    // 10 per second with an exact window: slots 100 ms apart, shared by both workers. A
    // start may come late for its slot (timer jitter, a process busy elsewhere), which can
    // put 11 starts in some second, but never early: the i-th start is at least i x 100 ms
    // after the run began (a few ms of jitter allowed). And no slower than the pace.
    for (i, s) in t.iter().enumerate() {
        let slot = Duration::from_millis(100) * i as u32;
        assert!(
            *s + Duration::from_millis(20) >= slot,
            "start {i} at {s:?}, before its slot at {slot:?}: {t:?}"
        );
    }
    assert!(t[29] - t[0] <= Duration::from_millis(3_600), "{t:?}");
    assert!(
        starts.lock().unwrap().iter().all(|(_, a)| *a == 1),
        "no attempt spent waiting"
    );
    q.delete().await.ok();
}
