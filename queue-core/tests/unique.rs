//! Unique jobs on the in-memory backend with a memory store, on tokio's paused clock:
//! each scope's release point, bulk sends, concurrent senders, and bad keys.

use std::sync::Arc;
use std::time::Duration;

use queue_core::testkit::eventually_worker;
use queue_core::{
    Backend, Enqueued, Job, JobContext, JobError, JobStatuses, MemoryStore, Message, Queue,
    QueueError, RetryPolicy, SendOptions, Unique, UniqueScope,
};
use tokio::sync::Semaphore;

#[derive(serde::Serialize, serde::Deserialize)]
struct Sync {
    account: u32,
}
impl Job for Sync {
    const NAME: &'static str = "sync";
}

async fn queue(name: &str) -> Queue {
    let store = Arc::new(MemoryStore::new());
    let b: Backend = queue_core::connect(&format!("memory://{name}"))
        .await
        .unwrap()
        .with_status(JobStatuses::new(store));
    let q = b.queue("sync");
    q.create().await.unwrap();
    q
}

async fn send(q: &Queue, scope: UniqueScope) -> Enqueued {
    q.producer()
        .enqueue_unique(
            &Sync { account: 7 },
            Unique::new("account-7", scope).unwrap(),
            SendOptions::new(),
        )
        .await
        .unwrap()
}

fn is_new(e: &Enqueued) -> bool {
    matches!(e, Enqueued::New(_))
}

/// A worker whose handler waits for a permit per run; the first run fails when `fail_once`.
fn gated(q: &Queue, gate: &Arc<Semaphore>, fail_once: bool) -> queue_core::WorkerHandle {
    let gate = gate.clone();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    q.worker()
        .retry(RetryPolicy::new(
            3,
            queue_core::Backoff::Fixed(Duration::from_millis(10)),
        ))
        .handle(move |_: Sync, _: JobContext| {
            let gate = gate.clone();
            let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                gate.acquire().await.unwrap().forget();
                if fail_once && n == 0 {
                    return Err(JobError::retry("flaky"));
                }
                Ok(())
            }
        })
        .start()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn while_queued_frees_the_key_when_the_job_starts() {
    let q = queue("uniq-queued").await;
    let first = send(&q, UniqueScope::WhileQueued).await;
    assert!(is_new(&first));
    assert_eq!(
        send(&q, UniqueScope::WhileQueued).await,
        Enqueued::Duplicate(first.id().clone())
    );
    assert_eq!(
        q.stats().await.unwrap().ready,
        1,
        "the duplicate was not sent"
    );
    let gate = Arc::new(Semaphore::new(0));
    let w = gated(&q, &gate, false);
    eventually_worker(&w, Duration::from_secs(5), "the job started", |r| {
        r.received == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = send(&q, UniqueScope::WhileQueued).await;
    assert!(
        is_new(&second),
        "running is not queued: a new job is accepted"
    );
    gate.add_permits(2);
    eventually_worker(&w, Duration::from_secs(5), "both ran", |r| r.succeeded == 2).await;
    w.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn until_finished_holds_through_running_and_retries() {
    let q = queue("uniq-finished").await;
    let first = send(&q, UniqueScope::UntilFinished).await;
    let gate = Arc::new(Semaphore::new(0));
    let w = gated(&q, &gate, true);
    eventually_worker(&w, Duration::from_secs(5), "the job started", |r| {
        r.received == 1
    })
    .await;
    assert_eq!(
        send(&q, UniqueScope::UntilFinished).await,
        Enqueued::Duplicate(first.id().clone())
    );
    gate.add_permits(1); // first attempt fails: a retry is scheduled
    eventually_worker(&w, Duration::from_secs(5), "retried", |r| r.retried == 1).await;
    assert_eq!(
        send(&q, UniqueScope::UntilFinished).await,
        Enqueued::Duplicate(first.id().clone()),
        "a job between retries still holds its key"
    );
    gate.add_permits(1);
    eventually_worker(&w, Duration::from_secs(5), "succeeded", |r| {
        r.succeeded == 1
    })
    .await;
    assert!(
        is_new(&send(&q, UniqueScope::UntilFinished).await),
        "finished: the key is free"
    );
    gate.add_permits(1);
    eventually_worker(&w, Duration::from_secs(5), "the new one ran", |r| {
        r.succeeded == 2
    })
    .await;
    w.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_period_holds_the_key_whatever_the_job_does() {
    let q = queue("uniq-period").await;
    let scope = UniqueScope::For(Duration::from_secs(10));
    let first = send(&q, scope).await;
    let gate = Arc::new(Semaphore::new(5));
    let w = gated(&q, &gate, false);
    eventually_worker(&w, Duration::from_secs(5), "done", |r| r.succeeded == 1).await;
    assert_eq!(
        send(&q, scope).await,
        Enqueued::Duplicate(first.id().clone()),
        "done, but within 10 s"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(is_new(&send(&q, scope).await), "after 10 s the key is free");
    w.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_bulk_send_takes_each_key_once() {
    let q = queue("uniq-bulk").await;
    let u = |k: &str| Unique::new(k, UniqueScope::WhileQueued).unwrap();
    let out = q
        .producer()
        .send_unique_batch(vec![
            (Message::new("x1"), u("x")),
            (Message::new("y1"), u("y")),
            (Message::new("x2"), u("x")),
        ])
        .await
        .unwrap();
    assert!(is_new(&out[0]) && is_new(&out[1]), "{out:?}");
    assert_eq!(out[2], Enqueued::Duplicate(out[0].id().clone()));
    assert_eq!(q.stats().await.unwrap().ready, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_of_one_key_make_one_job() {
    let q = queue("uniq-race").await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { send(&q, UniqueScope::UntilFinished).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    let new: Vec<_> = out.iter().filter(|e| is_new(e)).collect();
    assert_eq!(new.len(), 1, "{out:?}");
    assert!(
        out.iter().all(|e| e.id() == new[0].id()),
        "every answer names the one job"
    );
    assert_eq!(q.stats().await.unwrap().ready, 1);
}

#[tokio::test]
async fn bad_keys_and_missing_stores_are_refused() {
    for bad in [
        Unique::new("", UniqueScope::WhileQueued),
        Unique::new("k".repeat(513), UniqueScope::WhileQueued),
        Unique::new("k", UniqueScope::For(Duration::ZERO)),
        Unique::new("k", UniqueScope::For(Duration::from_secs(400 * 86_400))),
    ] {
        assert!(matches!(bad, Err(QueueError::InvalidOption(_))), "{bad:?}");
    }
    let b = queue_core::connect("memory://uniq-nostore").await.unwrap();
    let q = b.queue("q");
    q.create().await.unwrap();
    let r = q
        .producer()
        .enqueue_unique(
            &Sync { account: 1 },
            Unique::new("k", UniqueScope::WhileQueued).unwrap(),
            SendOptions::new(),
        )
        .await;
    assert!(matches!(r, Err(QueueError::NoStatusStore)), "{r:?}");
    // A message the backend refuses takes no lock.
    let q = queue("uniq-oversize").await;
    let big = Message::new(vec![0u8; 2 * 1024 * 1024]);
    let u = Unique::new("k", UniqueScope::WhileQueued).unwrap();
    assert!(q
        .producer()
        .send_unique_batch(vec![(big, u.clone())])
        .await
        .is_err());
    let ok = q
        .producer()
        .send_unique_batch(vec![(Message::new("small"), u)])
        .await
        .unwrap();
    assert!(is_new(&ok[0]), "the refused send left the key free");
}
