//! Job status rules that need no server: retention under tokio's paused clock, a status
//! store that is down, oversized results, concurrent cancels, bad input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use queue_core::store::Versioned;
use queue_core::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Echo {
    text: String,
}
impl Job for Echo {
    const NAME: &'static str = "echo";
}

fn echo(s: &str) -> Echo {
    Echo { text: s.into() }
}

async fn setup(store: Arc<dyn Store>, retention: Retention) -> (Backend, Queue) {
    let statuses = JobStatuses::new(store).retention(retention).unwrap();
    let b = connect(&format!("memory://status-{}", fastrand::u64(..)))
        .await
        .unwrap()
        .with_status(statuses);
    let q = b.queue("q");
    q.create().await.unwrap();
    (b, q)
}

async fn until_state(b: &Backend, id: &MessageId, want: JobState) -> JobStatus {
    for _ in 0..2000 {
        if let Some(s) = b.job_status(id).await.unwrap() {
            if s.state == want {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {id} never became {want}: {:?}", b.job_status(id).await);
}

#[tokio::test(start_paused = true)]
async fn records_expire_per_state() {
    let mut r = Retention::default();
    r.succeeded = Duration::from_secs(60);
    r.unfinished = Duration::from_secs(3600);
    let (b, q) = setup(Arc::new(MemoryStore::new()), r).await;
    let done = q.enqueue(&echo("a")).await.unwrap();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(50))
        .handle(|_: Echo, _| async { Ok(()) })
        .start()
        .unwrap();
    until_state(&b, &done, JobState::Succeeded).await;
    w.shutdown().await;
    let waiting = q.enqueue(&echo("b")).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        b.job_status(&done).await.unwrap(),
        None,
        "a succeeded record is kept for its retention only"
    );
    assert!(
        b.job_status(&waiting).await.unwrap().is_some(),
        "a queued record is kept for the unfinished retention"
    );
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(b.job_status(&waiting).await.unwrap(), None);
}

#[tokio::test]
async fn bad_retention_and_limits_are_refused() {
    let s: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut r = Retention::default();
    r.dead = Duration::ZERO;
    let e = JobStatuses::new(s.clone()).retention(r).unwrap_err();
    assert!(e.to_string().contains("retention of dead"), "{e}");
    r.dead = Duration::from_secs(10 * 366 * 24 * 3600);
    assert!(JobStatuses::new(s.clone()).retention(r).is_err());
    assert!(JobStatuses::new(s.clone()).max_result_bytes(0).is_err());
    assert!(JobStatuses::new(s).max_result_bytes(17 << 20).is_err());
    assert!(Progress::new(101, None).is_err());
    assert!(Progress::new(5, Some("x".repeat(2000))).is_err());
    // Without a status store, status calls say so.
    let b = connect("memory://no-status").await.unwrap();
    let id = MessageId::random();
    assert!(matches!(
        b.job_status(&id).await,
        Err(QueueError::NoStatusStore)
    ));
    assert!(matches!(
        b.cancel_job(&id).await,
        Err(QueueError::NoStatusStore)
    ));
}

#[tokio::test]
async fn a_result_over_the_limit_is_not_kept_and_the_job_still_succeeds() {
    let statuses = JobStatuses::new(Arc::new(MemoryStore::new()))
        .max_result_bytes(100)
        .unwrap();
    let b = connect("memory://status-big")
        .await
        .unwrap()
        .with_status(statuses);
    let q = b.queue("q");
    q.create().await.unwrap();
    let big = q.enqueue(&echo(&"x".repeat(500))).await.unwrap();
    let small = q.enqueue(&echo("tiny")).await.unwrap();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(50))
        .handle_returning(|e: Echo, _| async move { Ok::<_, JobError>(e.text) })
        .start()
        .unwrap();
    let s = until_state(&b, &big, JobState::Succeeded).await;
    assert_eq!(s.result, None);
    let why = s.last_error.unwrap();
    assert!(why.contains("over the 100 byte limit"), "{why}");
    let s = until_state(&b, &small, JobState::Succeeded).await;
    assert_eq!(s.result, Some(serde_json::json!("tiny")));
    assert_eq!(s.progress, None);
    let r = w.shutdown().await;
    assert_eq!((r.succeeded, r.retried), (2, 0));
}

/// A store that fails every call, as one that is down does.
#[derive(Debug, Default)]
struct DownStore {
    calls: AtomicUsize,
}

#[async_trait]
impl Store for DownStore {
    async fn get(&self, _: &str) -> Result<Option<Versioned>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(QueueError::Timeout(Duration::from_secs(1)))
    }
    async fn insert(&self, _: &str, _: &[u8], _: Duration) -> Result<Option<u64>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(QueueError::Timeout(Duration::from_secs(1)))
    }
    async fn replace(&self, _: &str, _: u64, _: &[u8], _: Duration) -> Result<Option<u64>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(QueueError::Timeout(Duration::from_secs(1)))
    }
    async fn delete(&self, _: &str) -> Result<bool> {
        Err(QueueError::Timeout(Duration::from_secs(1)))
    }
}

#[tokio::test]
async fn a_status_store_that_is_down_costs_no_job() {
    let down = Arc::new(DownStore::default());
    let (_b, q) = setup(down.clone(), Retention::default()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        // The send succeeds although its status write fails.
        ids.push(q.enqueue(&echo(&i.to_string())).await.expect("send"));
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let ran2 = ran.clone();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(50))
        .handle(move |_: Echo, ctx: JobContext| {
            let ran = ran2.clone();
            async move {
                ctx.progress(50, None)
                    .await
                    .expect("progress never fails a job");
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()
        .unwrap();
    for _ in 0..2000 {
        if w.report().succeeded == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = w.shutdown().await;
    assert_eq!((r.succeeded, ran.load(Ordering::SeqCst)), (5, 5), "{r:?}");
    assert!(r.backend_errors >= 5, "status failures are counted: {r:?}");
    assert!(down.calls.load(Ordering::SeqCst) >= 10);
    assert_eq!(q.stats().await.unwrap().total(), 0, "every job acked");
}

#[tokio::test]
async fn concurrent_cancels_of_one_queued_job_cancel_it_once() {
    let (b, q) = setup(Arc::new(MemoryStore::new()), Retention::default()).await;
    let id = q.enqueue(&echo("c")).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (b, id) = (b.clone(), id.clone());
        tasks.spawn(async move { b.cancel_job(&id).await });
    }
    let (mut cancelled, mut finished) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(CancelOutcome::Cancelled) => cancelled += 1,
            Err(QueueError::JobFinished { state, .. }) => {
                assert_eq!(state, JobState::Cancelled);
                finished += 1
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((cancelled, finished), (1, 7));
}

#[tokio::test]
async fn a_job_that_ignores_its_cancel_signal_succeeds() {
    let (b, q) = setup(Arc::new(MemoryStore::new()), Retention::default()).await;
    let id = q.enqueue(&echo("stubborn")).await.unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let gate2 = gate.clone();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(50))
        .handle(move |_: Echo, _ctx| {
            let gate = gate2.clone();
            async move {
                gate.notified().await;
                Ok(())
            }
        })
        .start()
        .unwrap();
    until_state(&b, &id, JobState::Running).await;
    assert_eq!(b.cancel_job(&id).await.unwrap(), CancelOutcome::Requested);
    assert_eq!(
        b.cancel_job(&id).await.unwrap(),
        CancelOutcome::Requested,
        "a second cancel of a running job is the same request"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    gate.notify_one();
    let s = until_state(&b, &id, JobState::Succeeded).await;
    assert!(s.cancel_requested);
    w.shutdown().await;
}

/// A memory store that counts its calls (a batch call counts once).
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    calls: AtomicUsize,
}

#[async_trait]
impl Store for Counting {
    async fn get(&self, k: &str) -> Result<Option<Versioned>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get(k).await
    }
    async fn insert(&self, k: &str, v: &[u8], ttl: Duration) -> Result<Option<u64>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.insert(k, v, ttl).await
    }
    async fn replace(&self, k: &str, n: u64, v: &[u8], ttl: Duration) -> Result<Option<u64>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.replace(k, n, v, ttl).await
    }
    async fn delete(&self, k: &str) -> Result<bool> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(k).await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Versioned>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get_many(keys).await
    }
    async fn write_many(&self, w: &[queue_core::store::Write<'_>]) -> Result<Vec<Option<u64>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.write_many(w).await
    }
}

/// Job status costs the store few calls per job when jobs run together: a send batch's
/// `queued` records in one call, a receive's starts in one read and one write, ends
/// gathered likewise and written without a read. With the batcher bypassed (each write on
/// its own) this run's worker made 802 calls.
#[tokio::test(start_paused = true)]
async fn status_writes_are_batched() {
    let store = Arc::new(Counting::default());
    let (b, q) = setup(store.clone(), Retention::default()).await;
    let mut ids = Vec::new();
    for chunk in 0..4 {
        let batch = (0..50)
            .map(|i| job_message(&echo(&format!("{chunk}-{i}")), SendOptions::default()).unwrap())
            .collect();
        ids.extend(q.producer().send_batch(batch).await.unwrap());
    }
    let queued = store.calls.load(Ordering::SeqCst);
    assert_eq!(queued, 4, "one status call per send batch");
    let w = q
        .worker()
        .concurrency(50)
        .poll_wait(Duration::from_millis(50))
        .handle(|_: Echo, _| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        })
        .start()
        .unwrap();
    for _ in 0..2000 {
        if w.report().succeeded == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = w.shutdown().await;
    assert_eq!(r.succeeded, 200, "{r:?}");
    let worker_calls = store.calls.load(Ordering::SeqCst) - queued;
    for id in &ids {
        let s = b.job_status(id).await.unwrap().expect("record");
        assert_eq!((s.state, s.attempt), (JobState::Succeeded, 1), "{s:?}");
    }
    println!("status calls: {queued} for the sends, {worker_calls} for the worker");
    assert!(
        worker_calls <= 100,
        "the worker made {worker_calls} status calls for 200 jobs (at most half a call per job)"
    );
}
