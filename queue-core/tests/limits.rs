//! Rate limits on the in-memory backend under tokio's paused clock: per key, per queue
//! across two workers, a handler's back-off, and bad settings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::testkit::eventually_worker;
use queue_core::{
    Backend, JobError, JobStatuses, LimitKey, MemoryStore, Message, QueueError, RateLimit,
    WorkerHandle,
};
use tokio::time::Instant;

type Starts = Arc<Mutex<Vec<(String, Duration, u32)>>>;

/// A worker on `q` that records (tenant, time since `t0`, attempt) per run; `fail_first`
/// makes the first run of tenant `a` answer `rate_limited(5s)`.
fn recorder(
    q: &queue_core::Queue,
    t0: Instant,
    starts: &Starts,
    configure: impl FnOnce(queue_core::Worker) -> queue_core::Worker,
    fail_first: bool,
) -> WorkerHandle {
    let starts = starts.clone();
    let w = q.worker().concurrency(10).handle_raw(move |d| {
        let starts = starts.clone();
        async move {
            let tenant = d.headers.get("tenant").cloned().unwrap_or_default();
            let mut s = starts.lock().unwrap();
            let first_a = !s.iter().any(|(t, _, _)| t == "a");
            s.push((tenant.clone(), t0.elapsed(), d.attempt));
            if fail_first && first_a && tenant == "a" {
                return Err(JobError::rate_limited(Duration::from_secs(5)));
            }
            Ok(())
        }
    });
    configure(w).start().unwrap()
}

async fn send(q: &queue_core::Queue, tenant: &str, n: usize) {
    let msgs = (0..n)
        .map(|i| Message::new(format!("{tenant}{i}")).header("tenant", tenant))
        .collect();
    q.producer().send_batch(msgs).await.unwrap();
}

fn times(starts: &Starts, tenant: &str) -> Vec<Duration> {
    let mut t: Vec<Duration> = starts
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _, _)| k == tenant)
        .map(|(_, at, _)| *at)
        .collect();
    t.sort();
    t
}

/// No window of `per` holds more than `count` starts.
fn within_limit(t: &[Duration], count: usize, per: Duration) {
    for (i, start) in t.iter().enumerate() {
        let n = t[i..].iter().take_while(|x| **x < *start + per).count();
        assert!(
            n <= count,
            "{n} starts within {per:?} from {start:?}: {t:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_busy_key_waits_its_turn_and_the_others_do_not() {
    let backend = queue_core::connect("memory://limits-key").await.unwrap();
    let q = backend.queue("emails");
    q.create().await.unwrap();
    send(&q, "a", 20).await;
    send(&q, "b", 3).await;
    let t0 = Instant::now();
    let starts = Starts::default();
    let limit = RateLimit::per_second(5).unwrap();
    let w = recorder(
        &q,
        t0,
        &starts,
        // One process, and the in-memory backend: limits in this process are everyone's.
        |w| {
            w.rate_limit_per_key(limit, LimitKey::Header("tenant".into()))
                .local_only()
        },
        false,
    );
    eventually_worker(&w, Duration::from_secs(30), "23 jobs", |r| {
        r.succeeded == 23
    })
    .await;
    let r = w.shutdown().await;
    let (a, b) = (times(&starts, "a"), times(&starts, "b"));
    assert_eq!((a.len(), b.len()), (20, 3), "every job ran once");
    assert!(
        b[2] <= Duration::from_millis(450),
        "b runs at its own pace from the start, not behind a's backlog: {b:?}"
    );
    within_limit(&a, 5, Duration::from_secs(1));
    assert!(
        a[19] <= Duration::from_millis(3_900),
        "a runs at its pace (one per 200 ms), no slower: {a:?}"
    );
    assert!(
        starts.lock().unwrap().iter().all(|(_, _, att)| *att == 1),
        "waiting for a slot is no attempt"
    );
    assert_eq!((r.retried, r.dead_lettered), (0, 0), "{r:?}");
    assert!(r.rate_limited >= 15, "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn a_queue_limit_holds_across_workers_sharing_the_store() {
    let store = Arc::new(MemoryStore::new());
    let backend: Backend = queue_core::connect("memory://limits-queue")
        .await
        .unwrap()
        .with_status(JobStatuses::new(store));
    let q = backend.queue("reports");
    q.create().await.unwrap();
    send(&q, "x", 12).await;
    let t0 = Instant::now();
    let starts = Starts::default();
    let limit = RateLimit::per_second(4).unwrap().burst(1).unwrap();
    let w1 = recorder(&q, t0, &starts, |w| w.rate_limit(limit), false);
    let w2 = recorder(&q, t0, &starts, |w| w.rate_limit(limit), false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts.lock().unwrap().len() < 12 {
        assert!(Instant::now() < deadline, "12 jobs never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w1.shutdown().await;
    w2.shutdown().await;
    let t = times(&starts, "x");
    for pair in t.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(249),
            "burst 1 at 4/s: a start every 250 ms across both workers: {t:?}"
        );
    }
    assert!(t[11] <= Duration::from_millis(2_900), "{t:?}");
}

#[tokio::test(start_paused = true)]
async fn a_handler_pauses_its_key_without_spending_an_attempt() {
    let backend = queue_core::connect("memory://limits-backoff")
        .await
        .unwrap();
    let q = backend.queue("api");
    q.create().await.unwrap();
    send(&q, "a", 1).await;
    let t0 = Instant::now();
    let starts = Starts::default();
    let limit = RateLimit::per_second(100).unwrap();
    let w = recorder(
        &q,
        t0,
        &starts,
        |w| {
            w.rate_limit_per_key(limit, LimitKey::Header("tenant".into()))
                .local_only()
        },
        true,
    );
    // The first job of a answers "back off for 5 s"; then more of a, and some of b.
    eventually_worker(&w, Duration::from_secs(5), "a's first run", |r| {
        r.rate_limited == 1
    })
    .await;
    let paused_at = times(&starts, "a")[0];
    send(&q, "a", 2).await;
    send(&q, "b", 2).await;
    eventually_worker(&w, Duration::from_secs(30), "5 jobs", |r| r.succeeded == 5).await;
    let r = w.shutdown().await;
    let a = times(&starts, "a");
    assert_eq!(a.len(), 4, "three jobs of a, the first one twice: {a:?}");
    assert!(
        a[1..]
            .iter()
            .all(|t| *t >= paused_at + Duration::from_secs(5)),
        "nothing of a starts while it is paused: {a:?}"
    );
    assert!(
        a[3] <= paused_at + Duration::from_millis(5_100),
        "and it resumes when the pause ends: {a:?}"
    );
    let b = times(&starts, "b");
    assert!(
        b[1] < paused_at + Duration::from_secs(1),
        "b is not paused: {b:?}"
    );
    assert!(
        starts.lock().unwrap().iter().all(|(_, _, att)| *att == 1),
        "no attempt spent"
    );
    assert_eq!((r.retried, r.dead_lettered), (0, 0), "{r:?}");
}

#[tokio::test]
async fn bad_limits_are_refused_at_configuration() {
    assert!(matches!(
        RateLimit::new(0, Duration::from_secs(1)),
        Err(QueueError::InvalidOption(_))
    ));
    assert!(RateLimit::new(1, Duration::ZERO).is_err());
    let backend = queue_core::connect("memory://limits-bad").await.unwrap();
    let q = backend.queue("b");
    let batch = q
        .worker()
        .rate_limit(RateLimit::per_second(1).unwrap())
        .handle_batch(|_d| async { Vec::new() })
        .start();
    assert!(
        matches!(batch, Err(QueueError::InvalidOption(_))),
        "{batch:?}"
    );
}

/// Runs `jobs` (tenant, count) through `workers` workers on one backend with at most `n`
/// running per tenant; each job takes one second. Returns the most jobs of each tenant
/// seen running at once, and when each tenant's last job finished.
async fn run_per_key(
    name: &str,
    n: u32,
    workers: usize,
    jobs: &[(&str, usize)],
) -> Vec<(String, usize, Duration)> {
    let store = Arc::new(MemoryStore::new());
    let backend: Backend = queue_core::connect(&format!("memory://{name}"))
        .await
        .unwrap()
        .with_status(JobStatuses::new(store));
    let q = backend.queue("jobs");
    q.create().await.unwrap();
    for (tenant, count) in jobs {
        send(&q, tenant, *count).await;
    }
    let total: usize = jobs.iter().map(|(_, c)| c).sum();
    let state = Arc::new(Mutex::new(std::collections::HashMap::<
        String,
        (usize, usize, Duration),
    >::new()));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let state = state.clone();
        let w = q
            .worker()
            .concurrency(8)
            .lease(Duration::from_secs(5))
            .concurrency_per_key(n, LimitKey::Header("tenant".into()))
            .handle_raw(move |d| {
                let state = state.clone();
                async move {
                    let t = d.headers.get("tenant").cloned().unwrap_or_default();
                    assert_eq!(d.attempt, 1, "stepping aside is no attempt");
                    {
                        let mut s = state.lock().unwrap();
                        let e = s.entry(t.clone()).or_default();
                        e.0 += 1;
                        e.1 = e.1.max(e.0);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let mut s = state.lock().unwrap();
                    let e = s.get_mut(&t).unwrap();
                    e.0 -= 1;
                    e.2 = t0.elapsed();
                    Ok(())
                }
            })
            .start()
            .unwrap();
        handles.push(w);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: u64 = {
            let mut n = 0;
            for h in &handles {
                n += h.report().succeeded;
            }
            n
        };
        if done as usize == total {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {total} done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for h in handles {
        let r = h.shutdown().await;
        assert_eq!((r.retried, r.dead_lettered), (0, 0), "{r:?}");
    }
    let s = state.lock().unwrap();
    let mut out: Vec<_> = s.iter().map(|(k, v)| (k.clone(), v.1, v.2)).collect();
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn a_key_runs_at_most_n_at_once_and_others_pass_it() {
    let out = run_per_key("conc-one", 2, 1, &[("a", 10), ("b", 2)]).await;
    let (a, b) = (&out[0], &out[1]);
    assert_eq!(a.1, 2, "at most 2 of a at once: {out:?}");
    assert!(
        a.2 >= Duration::from_secs(5),
        "10 one-second jobs, 2 at a time: {out:?}"
    );
    assert!(
        b.2 <= Duration::from_millis(2_500),
        "b is not stuck behind a's backlog: {out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_per_key_limit_holds_across_workers() {
    let out = run_per_key("conc-two", 3, 3, &[("a", 12)]).await;
    assert_eq!(
        out[0].1, 3,
        "three workers, still at most 3 of a at once: {out:?}"
    );
}

/// A limit that would silently hold per process (N processes doing N times the limit) is
/// refused at start without a shared store, and accepted by name with `local_only()`.
#[tokio::test]
async fn limits_without_a_shared_store_are_refused_unless_local_only() {
    let backend = queue_core::connect("memory://limits-local").await.unwrap();
    let q = backend.queue("q");
    q.create().await.unwrap();
    let limit = RateLimit::per_second(5).unwrap();
    for r in [
        q.worker()
            .rate_limit(limit)
            .handle_raw(|_| async { Ok(()) })
            .start(),
        q.worker()
            .rate_limit_per_key(limit, LimitKey::Header("t".into()))
            .handle_raw(|_| async { Ok(()) })
            .start(),
        q.worker()
            .concurrency_per_key(2, LimitKey::Header("t".into()))
            .handle_raw(|_| async { Ok(()) })
            .start(),
    ] {
        match r {
            Err(QueueError::InvalidOption(m)) => {
                assert!(
                    m.contains("shared store") && m.contains("local_only"),
                    "{m}"
                )
            }
            other => panic!("want the limit refused without a store, got {other:?}"),
        }
    }
    q.worker()
        .rate_limit(limit)
        .local_only()
        .handle_raw(|_| async { Ok(()) })
        .start()
        .expect("per-process limits accepted by name")
        .shutdown()
        .await;
    let shared = backend.with_store(std::sync::Arc::new(queue_core::MemoryStore::new()));
    shared
        .queue("q")
        .worker()
        .rate_limit(limit)
        .handle_raw(|_| async { Ok(()) })
        .start()
        .expect("limits with a shared store")
        .shutdown()
        .await;
}

#[tokio::test]
async fn zero_per_key_concurrency_is_refused() {
    let backend = queue_core::connect("memory://conc-zero").await.unwrap();
    let r = backend
        .queue("q")
        .worker()
        .concurrency_per_key(0, LimitKey::Header("t".into()))
        .handle_raw(|_| async { Ok(()) })
        .start();
    assert!(matches!(r, Err(QueueError::InvalidOption(_))), "{r:?}");
}
