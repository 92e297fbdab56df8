//! Batches ([`queue_core::batch`]) on the in-memory backend under tokio's paused clock:
//! callbacks run once after the last job, even with jobs finishing together in two
//! workers; a dead job runs `on_complete` and holds `on_success` until it is redriven and
//! succeeds; an open batch waits for its close; nesting; duplicates counted once; a
//! settlement cut short finished by the job's next delivery; bad batches refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::batch::{BatchStatus, CallbackState, Kind};
use queue_core::testkit::store::Yielding;
use queue_core::*;
use tokio::time::Instant;

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Work {
    n: u32,
    #[serde(default)]
    sleep_ms: u64,
}
impl Job for Work {
    const NAME: &'static str = "work";
}

/// A callback: its name says which.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Done {
    name: String,
}
impl Job for Done {
    const NAME: &'static str = "done";
}

fn done(name: &str) -> Done {
    Done { name: name.into() }
}

fn works(n: u32) -> Vec<Work> {
    (0..n).map(|n| Work { n, sleep_ms: 0 }).collect()
}

/// A callback's run: its name, when, and the (succeeded, dead) counts it read.
type Run = (String, Instant, (u32, u32));

/// What the handlers saw: each job's number and when it ended; each callback's name,
/// when it ran and the batch's counts it read then.
#[derive(Default)]
struct Seen {
    jobs: Mutex<Vec<(u32, Instant)>>,
    callbacks: Mutex<Vec<Run>>,
}

impl Seen {
    fn callbacks(&self, name: &str) -> Vec<(Instant, (u32, u32))> {
        let c = self.callbacks.lock().unwrap();
        c.iter()
            .filter(|c| c.0 == name)
            .map(|c| (c.1, c.2))
            .collect()
    }
    fn last_job(&self) -> Instant {
        self.jobs.lock().unwrap().iter().map(|j| j.1).max().unwrap()
    }
}

async fn backend_with(store: Arc<Yielding>) -> Backend {
    let b = connect(&format!("memory://batch-{}", fastrand::u64(..)))
        .await
        .unwrap()
        .with_store(store);
    for q in ["jobs", "callbacks"] {
        b.queue(q).create().await.unwrap();
    }
    b
}

/// A store whose calls interleave (see [`Yielding`]).
fn store() -> Arc<Yielding> {
    Arc::new(Yielding::new())
}

async fn backend() -> Backend {
    backend_with(store()).await
}

/// A worker on "jobs": job `fail_n` (while `failing` holds) fails for good.
fn job_worker(
    b: &Backend,
    seen: &Arc<Seen>,
    concurrency: usize,
    fail_n: Option<(u32, Arc<AtomicBool>)>,
) -> WorkerHandle {
    let seen = seen.clone();
    b.queue("jobs")
        .worker()
        .concurrency(concurrency)
        .poll_wait(Duration::from_millis(20))
        .retry(RetryPolicy::none())
        .handle(move |w: Work, _ctx: JobContext| {
            let seen = seen.clone();
            let fail_n = fail_n.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(w.sleep_ms)).await;
                if let Some((n, failing)) = &fail_n {
                    if *n == w.n && failing.load(Ordering::SeqCst) {
                        return Err(JobError::permanent(format!("job {n} failed")));
                    }
                }
                seen.jobs.lock().unwrap().push((w.n, Instant::now()));
                Ok(())
            }
        })
        .start()
        .unwrap()
}

/// A worker on "callbacks" that records each callback with the counts it reads.
fn callback_worker(b: &Backend, seen: &Arc<Seen>) -> WorkerHandle {
    let seen = seen.clone();
    let backend = b.clone();
    b.queue("callbacks")
        .worker()
        .concurrency(4)
        .poll_wait(Duration::from_millis(20))
        .handle(move |d: Done, ctx: JobContext| {
            let seen = seen.clone();
            let backend = backend.clone();
            async move {
                if d.name.starts_with("child") {
                    // A slow callback: whatever waits on it must wait.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let id = ctx.batch_id().expect("a callback knows its batch");
                let s = backend.batch_status(id).await?.expect("its batch");
                seen.callbacks.lock().unwrap().push((
                    d.name,
                    Instant::now(),
                    (s.succeeded, s.dead),
                ));
                Ok(())
            }
        })
        .start()
        .unwrap()
}

async fn finished(b: &Backend, id: &str) -> BatchStatus {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = b.batch_status(id).await.unwrap().expect("the batch exists");
        if s.is_finished() {
            return s;
        }
        assert!(Instant::now() < deadline, "batch never finished: {s:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn callback_state(s: &BatchStatus, kind: Kind) -> CallbackState {
    s.callbacks.iter().find(|c| c.kind == kind).unwrap().state
}

/// 300 jobs over two workers of 8, with the store yielding inside every call: both
/// callbacks run once, after the last job, and read the final counts.
#[tokio::test(start_paused = true)]
async fn callbacks_run_once_after_the_last_job() {
    let b = backend().await;
    let seen = Arc::new(Seen::default());
    let batch = b
        .new_batch()
        .description("three hundred")
        .on_success("callbacks", &done("success"))
        .on_complete("callbacks", &done("complete"))
        .open()
        .await
        .unwrap();
    let jobs: Vec<Work> = (0..300)
        .map(|n| Work {
            n,
            sleep_ms: u64::from(n % 7),
        })
        .collect();
    batch.add("jobs", &jobs).await.unwrap();
    batch.close().await.unwrap();
    let w1 = job_worker(&b, &seen, 8, None);
    let w2 = job_worker(&b, &seen, 8, None);
    let cb = callback_worker(&b, &seen);
    let s = finished(&b, batch.id()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        (s.total, s.succeeded, s.dead, s.pending()),
        (300, 300, 0, 0)
    );
    assert!(s.closed && s.complete && s.success);
    assert_eq!(s.description.as_deref(), Some("three hundred"));
    for name in ["success", "complete"] {
        let runs = seen.callbacks(name);
        assert_eq!(runs.len(), 1, "{name} ran {} times", runs.len());
        assert!(
            runs[0].0 >= seen.last_job(),
            "{name} ran before the last job"
        );
        assert_eq!(runs[0].1, (300, 0));
    }
    assert_eq!(callback_state(&s, Kind::Success), CallbackState::Succeeded);
    assert_eq!(seen.jobs.lock().unwrap().len(), 300);
    for w in [w1, w2, cb] {
        w.shutdown().await;
    }
}

/// One dead job: `on_complete` runs with the counts, `on_success` does not; redriven
/// from the dead-letter queue, the job succeeds, and `on_success` runs then, once.
#[tokio::test(start_paused = true)]
async fn a_dead_job_holds_on_success_until_it_is_redriven() {
    let b = backend().await;
    let seen = Arc::new(Seen::default());
    let failing = Arc::new(AtomicBool::new(true));
    let batch = b
        .new_batch()
        .on_success("callbacks", &done("success"))
        .on_complete("callbacks", &done("complete"))
        .open()
        .await
        .unwrap();
    batch.add("jobs", &works(10)).await.unwrap();
    batch.close().await.unwrap();
    let w = job_worker(&b, &seen, 4, Some((3, failing.clone())));
    let cb = callback_worker(&b, &seen);
    let s = finished(&b, batch.id()).await;
    assert_eq!((s.succeeded, s.dead), (9, 1));
    assert!(s.complete && !s.success);
    assert_eq!(s.errors.len(), 1);
    assert!(s.errors[0].1.contains("job 3 failed"), "{:?}", s.errors);
    assert_eq!(seen.callbacks("complete").len(), 1);
    assert_eq!(seen.callbacks("complete")[0].1, (9, 1));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(seen.callbacks("success").is_empty());
    assert_eq!(callback_state(&s, Kind::Success), CallbackState::Pending);

    failing.store(false, Ordering::SeqCst);
    assert_eq!(b.queue("jobs").redrive(10).await.unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.callbacks("success").is_empty() {
        assert!(Instant::now() < deadline, "on_success never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = b.batch_status(batch.id()).await.unwrap().unwrap();
    assert_eq!((s.succeeded, s.dead), (10, 0));
    assert!(s.success && s.errors.is_empty());
    assert_eq!(seen.callbacks("success").len(), 1);
    assert_eq!(seen.callbacks("complete").len(), 1);
    w.shutdown().await;
    cb.shutdown().await;
}

/// Jobs that all finish while the batch is open send nothing; the close sends the
/// callback at once; an add after the close is refused. An empty batch completes at its
/// close.
#[tokio::test(start_paused = true)]
async fn an_open_batch_waits_for_its_close() {
    let b = backend().await;
    let seen = Arc::new(Seen::default());
    let w = job_worker(&b, &seen, 4, None);
    let cb = callback_worker(&b, &seen);
    let batch = b
        .new_batch()
        .on_complete("callbacks", &done("complete"))
        .open()
        .await
        .unwrap();
    batch.add("jobs", &works(5)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    batch.add("jobs", &works(5)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(seen.jobs.lock().unwrap().len(), 10);
    assert!(
        seen.callbacks("complete").is_empty(),
        "sent before the close"
    );
    let s = batch.status().await.unwrap().unwrap();
    assert_eq!(
        (s.total, s.succeeded, s.closed, s.complete),
        (10, 10, false, false)
    );

    batch.close().await.unwrap();
    batch.close().await.unwrap(); // idempotent
    finished(&b, batch.id()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(seen.callbacks("complete").len(), 1);
    let refused = batch.add("jobs", &works(1)).await.unwrap_err();
    assert!(matches!(refused, QueueError::InvalidBatch(_)), "{refused}");
    assert_eq!(
        b.queue("jobs").stats().await.unwrap().ready,
        0,
        "nothing sent"
    );

    let empty = b
        .new_batch()
        .on_complete("callbacks", &done("empty"))
        .on_success("callbacks", &done("empty-success"))
        .open()
        .await
        .unwrap();
    empty.close().await.unwrap();
    let s = finished(&b, empty.id()).await;
    assert!(s.complete && s.success && s.total == 0);
    assert_eq!(seen.callbacks("empty").len(), 1);
    assert_eq!(seen.callbacks("empty-success").len(), 1);
    w.shutdown().await;
    cb.shutdown().await;
}

/// A parent with two jobs and a child batch of three jobs: the child's callback runs
/// after its jobs, the parent's after the child's callback, each once; a child whose job
/// dies makes its slot in the parent dead.
#[tokio::test(start_paused = true)]
async fn a_nested_batch_settles_its_parent_after_its_callbacks() {
    let b = backend().await;
    let seen = Arc::new(Seen::default());
    let failing = Arc::new(AtomicBool::new(true));
    let w = job_worker(&b, &seen, 4, Some((102, failing)));
    let cb = callback_worker(&b, &seen);
    let parent = b
        .new_batch()
        .on_complete("callbacks", &done("parent"))
        .on_success("callbacks", &done("parent-success"))
        .open()
        .await
        .unwrap();
    parent.add("jobs", &works(2)).await.unwrap();
    let child = parent
        .child()
        .on_complete("callbacks", &done("child"))
        .open()
        .await
        .unwrap();
    let grandchild_jobs: Vec<Work> = (100..103).map(|n| Work { n, sleep_ms: 50 }).collect();
    child.add("jobs", &grandchild_jobs).await.unwrap();
    parent.close().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        seen.callbacks("parent").is_empty(),
        "the parent completed before its child was closed"
    );
    child.close().await.unwrap();
    let s = finished(&b, parent.id()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = b.batch_status(child.id()).await.unwrap().unwrap();
    assert_eq!(c.parent.as_deref(), Some(parent.id()));
    assert_eq!((c.succeeded, c.dead), (2, 1));
    assert_eq!((s.total, s.succeeded, s.dead), (3, 2, 1));
    let (child_at, parent_at) = (seen.callbacks("child"), seen.callbacks("parent"));
    assert_eq!((child_at.len(), parent_at.len()), (1, 1));
    assert!(
        parent_at[0].0 >= child_at[0].0,
        "the parent's callback ran first"
    );
    assert!(seen.callbacks("parent-success").is_empty());
    w.shutdown().await;
    cb.shutdown().await;
}

/// A second delivery of a job that succeeded is acked unrun and counted once.
#[tokio::test(start_paused = true)]
async fn a_duplicate_of_a_finished_job_counts_once() {
    let b = backend().await;
    let seen = Arc::new(Seen::default());
    let batch = b.new_batch().open().await.unwrap();
    let ids = batch.add("jobs", &works(3)).await.unwrap();
    let w = job_worker(&b, &seen, 2, None);
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(10), "three acked", |r| {
        r.succeeded == 3
    })
    .await;
    let again = job_message(&Work { n: 0, sleep_ms: 0 }, SendOptions::default())
        .unwrap()
        .id(ids[0].clone())
        .header(headers::BATCH, format!("{}/0", batch.id()));
    b.queue("jobs").producer().send(again).await.unwrap();
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(10), "skipped", |r| {
        r.duplicates_skipped == 1
    })
    .await;
    let s = batch.status().await.unwrap().unwrap();
    assert_eq!((s.total, s.succeeded), (3, 3));
    assert_eq!(seen.jobs.lock().unwrap().len(), 3);
    w.shutdown().await;
}

/// The last job's settlement writes its shard, then every write of the batch's head is
/// refused (four tries, then the job goes back): the callback is not sent. The job's next
/// delivery is acked unrun (its slot is recorded) and finishes the settlement: the
/// callback runs once.
#[tokio::test(start_paused = true)]
async fn a_settlement_cut_short_is_finished_by_the_next_delivery() {
    let store = store();
    let b = backend_with(store.clone()).await;
    let seen = Arc::new(Seen::default());
    let batch = b
        .new_batch()
        .on_complete("callbacks", &done("complete"))
        .open()
        .await
        .unwrap();
    batch.add("jobs", &works(1)).await.unwrap();
    batch.close().await.unwrap();
    // Four head writes refused: the worker's four tries.
    store.refuse_replaces(4, |k| {
        k.starts_with("batch:") && k.matches(':').count() == 1
    });
    let w = job_worker(&b, &seen, 1, None);
    let cb = callback_worker(&b, &seen);
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(10), "given back", |r| {
        r.returned == 1
    })
    .await;
    assert!(seen.callbacks("complete").is_empty());
    finished(&b, batch.id()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(seen.callbacks("complete").len(), 1);
    assert_eq!(seen.jobs.lock().unwrap().len(), 1, "the job ran again");
    assert_eq!(w.report().duplicates_skipped, 1);
    w.shutdown().await;
    cb.shutdown().await;
}

#[tokio::test]
async fn bad_batches_are_refused_with_nothing_written() {
    let b = backend().await;
    let bare = connect("memory://batch-bare").await.unwrap();
    assert!(matches!(
        bare.new_batch().open().await,
        Err(QueueError::NoStatusStore)
    ));
    let refused = |r: Result<queue_core::batch::Batch>| match r {
        Err(QueueError::InvalidBatch(why)) => why,
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("accepted"),
    };
    let why = refused(b.new_batch().id("no spaces").open().await);
    assert!(why.contains("batch id"), "{why}");
    let why = refused(
        b.new_batch()
            .on_success("callbacks", &done("a"))
            .on_success("callbacks", &done("b"))
            .open()
            .await,
    );
    assert!(why.contains("two success callbacks"), "{why}");
    let why = refused(
        b.new_batch()
            .on_complete("nowhere", &done("a"))
            .open()
            .await,
    );
    assert!(why.contains("does not exist"), "{why}");
    let why = refused(
        b.new_batch()
            .retention(Duration::from_millis(10))
            .open()
            .await,
    );
    assert!(why.contains("retention"), "{why}");
    let why = refused(b.new_batch().description("x".repeat(2000)).open().await);
    assert!(why.contains("description"), "{why}");
    let too_big = Message::new(vec![b'x'; 2 << 20]);
    let why = refused(
        b.new_batch()
            .on_message(Kind::Complete, "callbacks", too_big)
            .open()
            .await,
    );
    assert!(why.contains("complete callback"), "{why}");
    assert!(b.batch_status("no-spaces").await.unwrap().is_none());

    b.new_batch().id("taken").open().await.unwrap();
    let why = refused(b.new_batch().id("taken").open().await);
    assert!(why.contains("taken"), "{why}");

    let ghost = b.batch("ghost");
    assert!(matches!(
        ghost.add("jobs", &works(1)).await,
        Err(QueueError::InvalidBatch(_))
    ));
    assert!(matches!(
        ghost.close().await,
        Err(QueueError::InvalidBatch(_))
    ));
    assert!(b.batch_status("ghost").await.unwrap().is_none());
    assert_eq!(b.queue("jobs").stats().await.unwrap().ready, 0);
    assert_eq!(b.queue("callbacks").stats().await.unwrap().ready, 0);
}

/// Three jobs under one idempotency key: the first runs, the other two are skipped as
/// its duplicates, and count as succeeded, so the batch completes.
#[tokio::test(start_paused = true)]
async fn jobs_skipped_by_their_idempotency_key_count_as_succeeded() {
    let b = backend().await;
    let seen = Arc::new(Seen::default());
    let batch = b
        .new_batch()
        .on_complete("callbacks", &done("complete"))
        .open()
        .await
        .unwrap();
    let opts = SendOptions::new().idempotency_key("charge-7");
    batch.add_with("jobs", &works(3), opts).await.unwrap();
    batch.close().await.unwrap();
    let ran = seen.clone();
    let w = b
        .queue("jobs")
        .worker()
        .poll_wait(Duration::from_millis(20))
        .idempotency(
            Arc::new(queue_core::idempotency::MemoryIdempotency::new()),
            Duration::from_secs(3600),
        )
        .handle(move |w: Work, _ctx: JobContext| {
            let ran = ran.clone();
            async move {
                ran.jobs.lock().unwrap().push((w.n, Instant::now()));
                Ok(())
            }
        })
        .start()
        .unwrap();
    let cb = callback_worker(&b, &seen);
    let s = finished(&b, batch.id()).await;
    assert_eq!((s.succeeded, s.dead), (3, 0), "{s:#?}");
    assert_eq!(seen.jobs.lock().unwrap().len(), 1);
    assert_eq!(seen.callbacks("complete").len(), 1);
    w.shutdown().await;
    cb.shutdown().await;
}

/// A forged job naming a slot the batch never handed out settles nothing that counts:
/// the batch's one real job, still waiting, keeps it from completing.
#[tokio::test(start_paused = true)]
async fn a_slot_never_handed_out_does_not_complete_a_batch() {
    let b = backend().await;
    b.queue("parked").create().await.unwrap();
    let seen = Arc::new(Seen::default());
    let batch = b
        .new_batch()
        .on_complete("callbacks", &done("complete"))
        .open()
        .await
        .unwrap();
    batch.add("parked", &works(1)).await.unwrap(); // slot 0, shard 0: nobody runs it
    batch.close().await.unwrap();
    // Slot 32 is in shard 0 too.
    let forged = job_message(&Work { n: 9, sleep_ms: 0 }, SendOptions::default())
        .unwrap()
        .header(headers::BATCH, format!("{}/32", batch.id()));
    b.queue("jobs").producer().send(forged).await.unwrap();
    let w = job_worker(&b, &seen, 2, None);
    let cb = callback_worker(&b, &seen);
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(10), "ran", |r| {
        r.succeeded == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = batch.status().await.unwrap().unwrap();
    assert!(!s.complete, "{s:#?}");
    assert!(seen.callbacks("complete").is_empty());
    w.shutdown().await;
    cb.shutdown().await;
}
