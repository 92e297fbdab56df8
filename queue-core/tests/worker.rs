//! Worker behaviour beyond the conformance cases, on the in-memory driver.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::testkit::eventually;
use queue_core::{
    headers, Backend, Backoff, Delivery, Driver, ItemFailure, Job, JobContext, JobError,
    MemoryQueue, Message, Producer, ReceiveOptions, RetryPolicy, SendOptions, Worker,
};

#[derive(serde::Serialize, serde::Deserialize)]
struct Task(u32);
impl Job for Task {
    const NAME: &'static str = "task";
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Picky;
impl Job for Picky {
    const NAME: &'static str = "picky";
    fn retry_policy() -> Option<RetryPolicy> {
        Some(RetryPolicy::new(2, Backoff::Fixed(Duration::ZERO)))
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn setup() -> (Arc<dyn Driver>, Producer) {
    let q: Arc<dyn Driver> = Arc::new(MemoryQueue::new());
    q.create_queue("q").await.unwrap();
    (q.clone(), Backend::from_driver(q).queue("q").producer())
}

fn fast(q: &Arc<dyn Driver>) -> Worker {
    Backend::from_driver(q.clone())
        .queue("q")
        .worker()
        .poll_wait(Duration::from_millis(50))
        .retry(RetryPolicy::new(
            3,
            Backoff::Fixed(Duration::from_millis(10)),
        ))
}

async fn dead(q: &Arc<dyn Driver>, n: usize) -> Vec<Delivery> {
    let opts = ReceiveOptions::new(100, Duration::from_millis(200), Duration::from_secs(60));
    let got = q.receive("q-dlq", opts).await.unwrap();
    assert_eq!(got.len(), n);
    got
}

#[tokio::test]
async fn panics_are_caught_and_retried_then_dead_lettered() {
    let (q, p) = setup().await;
    let w = fast(&q)
        .handle(|_: Task, _ctx| async { panic!("kaboom") })
        .start()
        .unwrap();
    p.enqueue(&Task(1)).await.unwrap();
    eventually(WAIT, "dead-lettered", || w.report().dead_lettered == 1).await;
    let r = w.shutdown().await;
    assert_eq!((r.failed, r.retried), (3, 2));
    let d = dead(&q, 1).await;
    assert!(d[0].headers[headers::DLQ_ERROR].contains("handler panicked: kaboom"));
}

#[tokio::test]
async fn timeouts_abort_the_job_and_count_as_failures() {
    let (q, p) = setup().await;
    let w = fast(&q)
        .job_timeout(Duration::from_millis(30))
        .handle(|_: Task, _ctx| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .start()
        .unwrap();
    p.enqueue(&Task(1)).await.unwrap();
    eventually(WAIT, "dead-lettered", || w.report().dead_lettered == 1).await;
    w.shutdown().await;
    assert!(dead(&q, 1).await[0].headers[headers::DLQ_ERROR].contains("timed out"));
}

#[tokio::test]
async fn per_job_and_per_message_attempt_overrides() {
    let (q, p) = setup().await;
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let c3 = calls.clone();
    let w = fast(&q)
        .handle(move |_: Picky, _ctx| {
            c2.fetch_add(1, Ordering::SeqCst);
            async { Err(JobError::retry("no")) }
        })
        .handle(move |_: Task, _ctx| {
            c3.fetch_add(100, Ordering::SeqCst);
            async { Err(JobError::retry("no")) }
        })
        .start()
        .unwrap();
    p.enqueue(&Picky).await.unwrap(); // job type says 2 attempts
    p.enqueue_with(&Task(1), SendOptions::new().max_attempts(1))
        .await
        .unwrap(); // message says 1
    eventually(WAIT, "both dead-lettered", || w.report().dead_lettered == 2).await;
    w.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2 + 100);
}

#[tokio::test]
async fn retry_after_overrides_backoff() {
    let (q, p) = setup().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let w = fast(&q)
        .handle(move |_: Task, ctx: JobContext| {
            s2.lock().unwrap().push(std::time::Instant::now());
            async move {
                if ctx.attempt == 1 {
                    Err(JobError::retry("429").retry_after(Duration::from_millis(300)))
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .unwrap();
    p.enqueue(&Task(1)).await.unwrap();
    eventually(WAIT, "succeeded", || w.report().succeeded == 1).await;
    w.shutdown().await;
    let seen = seen.lock().unwrap();
    assert!(seen[1] - seen[0] >= Duration::from_millis(300));
}

#[tokio::test]
async fn long_jobs_keep_their_lease() {
    let (q, p) = setup().await;
    let runs = Arc::new(AtomicU32::new(0));
    let r2 = runs.clone();
    // Lease 60 ms, job 400 ms: without heartbeats another slot would get the message.
    let w = fast(&q)
        .concurrency(4)
        .lease(Duration::from_millis(60))
        .handle(move |_: Task, _ctx| {
            r2.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(())
            }
        })
        .start()
        .unwrap();
    p.enqueue(&Task(1)).await.unwrap();
    eventually(WAIT, "succeeded", || w.report().succeeded == 1).await;
    let r = w.shutdown().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the job ran twice: its lease lapsed"
    );
    assert_eq!(r.backend_errors, 0);
}

#[tokio::test]
async fn batch_handler_fails_items_individually() {
    let (q, p) = setup().await;
    let w = fast(&q)
        .batch_size(10)
        .handle_batch(|batch: Vec<Delivery>| async move {
            batch
                .iter()
                .enumerate()
                .filter(|(_, d)| d.payload[..] == b"bad"[..])
                .map(|(index, _)| ItemFailure::new(index, JobError::permanent("bad item")))
                .collect()
        })
        .start()
        .unwrap();
    let msgs = vec![
        Message::new("ok"),
        Message::new("bad"),
        Message::new("ok"),
        Message::new("bad"),
    ];
    p.send_batch(msgs).await.unwrap();
    eventually(WAIT, "settled", || {
        let r = w.report();
        r.succeeded == 2 && r.dead_lettered == 2
    })
    .await;
    w.shutdown().await;
    assert_eq!(q.stats("q").await.unwrap().dead, 2);
}

#[tokio::test]
async fn raw_handler_takes_foreign_payloads() {
    let (q, p) = setup().await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let w = fast(&q)
        .handle_raw(move |d: Delivery| {
            g2.lock().unwrap().push(d.payload);
            async { Ok(()) }
        })
        .start()
        .unwrap();
    p.send(Message::new("not json at all")).await.unwrap();
    eventually(WAIT, "succeeded", || w.report().succeeded == 1).await;
    w.shutdown().await;
    assert_eq!(got.lock().unwrap()[0], &b"not json at all"[..]);
}

#[tokio::test]
async fn shutdown_returns_unstarted_and_unfinished_work_at_once() {
    let (q, p) = setup().await;
    for i in 0..6 {
        p.enqueue(&Task(i)).await.unwrap();
    }
    let started = Arc::new(AtomicU32::new(0));
    let s2 = started.clone();
    let w = fast(&q)
        .concurrency(2)
        .lease(Duration::from_secs(3600))
        .shutdown_grace(Duration::from_millis(50))
        .handle(move |_: Task, _ctx| {
            s2.fetch_add(1, Ordering::SeqCst);
            std::future::pending()
        })
        .start()
        .unwrap();
    eventually(WAIT, "two started", || started.load(Ordering::SeqCst) == 2).await;
    let r = w.shutdown().await;
    assert_eq!(r.returned, 2);
    let s = q.stats("q").await.unwrap();
    assert_eq!((s.ready, s.in_flight), (6, 0), "{s:?}");
}

#[tokio::test]
async fn memory_priority_and_per_key_order() {
    let (q, p) = setup().await;
    p.send_batch(vec![
        Message::new("low").priority(1),
        Message::new("high").priority(9),
        Message::new("k1").ordering_key("k"),
        Message::new("k2").ordering_key("k"),
    ])
    .await
    .unwrap();
    let opts = ReceiveOptions::new(10, Duration::ZERO, Duration::from_secs(60));
    let got = q.receive("q", opts.clone()).await.unwrap();
    let payloads: Vec<&[u8]> = got.iter().map(|d| &d.payload[..]).collect();
    // k2 waits until k1 is settled.
    assert_eq!(payloads, vec![&b"high"[..], b"low", b"k1"]);
    let k1 = got.iter().find(|d| d.payload[..] == b"k1"[..]).unwrap();
    q.ack("q", std::slice::from_ref(&k1.receipt)).await.unwrap();
    let got = q.receive("q", opts).await.unwrap();
    assert_eq!(got[0].payload, &b"k2"[..]);
}

#[tokio::test]
async fn stale_receipts_are_typed_errors() {
    let (q, p) = setup().await;
    p.send(Message::new("x")).await.unwrap();
    let opts = ReceiveOptions::new(1, Duration::ZERO, Duration::from_millis(1));
    let first = q.receive("q", opts.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = q.receive("q", opts).await.unwrap();
    assert_eq!(second[0].attempt, 2);
    let e = q
        .ack("q", std::slice::from_ref(&first[0].receipt))
        .await
        .unwrap_err();
    assert!(matches!(e, queue_core::QueueError::ReceiptExpired), "{e}");
    let e = q
        .ack("q", &[queue_core::driver::receipt("garbage")])
        .await
        .unwrap_err();
    assert!(
        matches!(e, queue_core::QueueError::InvalidReceipt { .. }),
        "{e}"
    );
}

#[tokio::test]
async fn handlers_see_shutdown_and_stop_cleanly() {
    let (q, p) = setup().await;
    let started = Arc::new(AtomicU32::new(0));
    let s2 = started.clone();
    let w = fast(&q)
        .shutdown_grace(Duration::from_secs(3600))
        .handle(move |_: Task, ctx: JobContext| {
            s2.fetch_add(1, Ordering::SeqCst);
            async move {
                // A long job that stops when the worker shuts down.
                ctx.shutting_down().await;
                Ok(())
            }
        })
        .start()
        .unwrap();
    p.enqueue(&Task(1)).await.unwrap();
    eventually(WAIT, "the job started", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    let r = tokio::time::timeout(Duration::from_secs(10), w.shutdown())
        .await
        .expect("shutdown must not wait out the hour of grace: the handler saw the signal");
    assert_eq!(r.succeeded, 1, "{r:?}");
    assert_eq!(q.stats("q").await.unwrap().total(), 0);
}

/// A job deferred again and again (its idempotency key held elsewhere) and then failing
/// once is retried, not dead-lettered: deferrals are not attempts. Paused clock.
#[tokio::test(start_paused = true)]
async fn deferrals_are_not_attempts() {
    let (q, p) = setup().await;
    let store = Arc::new(queue_core::MemoryIdempotency::new());
    // Another worker holds the key for a while: this one defers the job each lease.
    use queue_core::IdempotencyStore;
    store
        .begin("order-7", Duration::from_secs(30))
        .await
        .unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    let w = fast(&q)
        .lease(Duration::from_secs(1))
        .retry(RetryPolicy::new(
            2,
            Backoff::Fixed(Duration::from_millis(10)),
        ))
        .idempotency(store, Duration::from_secs(600))
        .handle(move |_: Task, ctx: JobContext| {
            a2.lock().unwrap().push(ctx.attempt);
            let first = ctx.attempt == 1;
            async move {
                if first {
                    Err(JobError::retry("flaky once"))
                } else {
                    Ok(())
                }
            }
        })
        .start()
        .unwrap();
    p.enqueue_with(&Task(7), SendOptions::new().idempotency_key("order-7"))
        .await
        .unwrap();
    eventually(Duration::from_secs(120), "the job settled", || {
        let r = w.report();
        r.succeeded + r.dead_lettered == 1
    })
    .await;
    let r = w.shutdown().await;
    assert_eq!(
        (r.succeeded, r.dead_lettered),
        (1, 0),
        "deferrals must not use up attempts: {r:?}, handler saw attempts {:?}",
        attempts.lock().unwrap()
    );
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2]);
}

/// A driver whose receive panics (a bug): the worker must say it died, not sit silent.
struct PanickyDriver(MemoryQueue);

#[queue_core::driver::async_trait]
impl Driver for PanickyDriver {
    fn kind(&self) -> &'static str {
        "panicky"
    }
    fn capabilities(&self) -> queue_core::Capabilities {
        self.0.capabilities()
    }
    async fn create_queue(&self, q: &str) -> queue_core::Result<()> {
        self.0.create_queue(q).await
    }
    async fn delete_queue(&self, q: &str) -> queue_core::Result<()> {
        self.0.delete_queue(q).await
    }
    async fn purge(&self, q: &str) -> queue_core::Result<()> {
        self.0.purge(q).await
    }
    async fn send(
        &self,
        q: &str,
        b: Vec<Message>,
    ) -> queue_core::Result<Vec<queue_core::MessageId>> {
        self.0.send(q, b).await
    }
    async fn receive(&self, _: &str, _: ReceiveOptions) -> queue_core::Result<Vec<Delivery>> {
        panic!("driver bug in receive")
    }
    async fn ack(&self, q: &str, r: &[queue_core::Receipt]) -> queue_core::Result<()> {
        self.0.ack(q, r).await
    }
    async fn nack(&self, q: &str, r: &queue_core::Receipt, d: Duration) -> queue_core::Result<()> {
        self.0.nack(q, r, d).await
    }
    async fn extend(
        &self,
        q: &str,
        r: &queue_core::Receipt,
        d: Duration,
    ) -> queue_core::Result<()> {
        self.0.extend(q, r, d).await
    }
    async fn stats(&self, q: &str) -> queue_core::Result<queue_core::QueueStats> {
        self.0.stats(q).await
    }
}

#[tokio::test]
async fn a_worker_whose_loop_dies_says_so() {
    let queue = Backend::new(PanickyDriver(MemoryQueue::new())).queue("q");
    queue.create().await.unwrap();
    let w = queue
        .worker()
        .handle(|_: Task, _ctx| async { Ok(()) })
        .start()
        .unwrap();
    eventually(WAIT, "the worker reports its crash", || w.report().crashed).await;
    let err = w.last_error().unwrap_or_default();
    assert!(err.contains("driver bug in receive"), "{err}");
    let r = w.shutdown().await;
    assert!(r.crashed, "shutdown must return the crash: {r:?}");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_at_start() {
    let (q, _p) = setup().await;
    let bad = [
        fast(&q).concurrency(0),
        fast(&q).lease(Duration::MAX),
        fast(&q).poll_wait(Duration::MAX),
        fast(&q).job_timeout(Duration::ZERO),
        fast(&q).shutdown_grace(Duration::MAX),
        fast(&q).retry(RetryPolicy::new(0, Backoff::Fixed(Duration::ZERO))),
        fast(&q)
            .handle_batch(|_b: Vec<Delivery>| async { Vec::new() })
            .batch_size(0),
        fast(&q)
            .handle_batch(|_b: Vec<Delivery>| async { Vec::new() })
            .idempotency(
                Arc::new(queue_core::MemoryIdempotency::new()),
                Duration::from_secs(60),
            ),
    ];
    for w in bad {
        let shown = format!("{w:?}");
        match w.start() {
            Err(queue_core::QueueError::InvalidOption(why)) => assert!(!why.is_empty()),
            Err(e) => panic!("{shown}: want InvalidOption, got {e}"),
            Ok(h) => panic!("{shown}: want InvalidOption, got a running worker {h:?}"),
        }
    }
}

/// Builder calls that contradict each other, or a worker without a handler, are refused
/// at start with the mistake named, instead of a worker that dead-letters every job or
/// silently drops a handler.
#[tokio::test]
async fn builder_mistakes_are_refused_at_start() {
    use queue_core::{Delivery, ItemFailure, WorkerConfig};
    let b = queue_core::connect("memory://").await.unwrap();
    let q = b.queue("builder");
    q.create().await.unwrap();
    let refused = |r: queue_core::Result<queue_core::WorkerHandle>, what: &str| match r {
        Err(queue_core::QueueError::InvalidOption(m)) => {
            assert!(m.contains(what), "want {what:?} in: {m}")
        }
        Err(e) => panic!("want InvalidOption naming {what:?}, got {e}"),
        Ok(_) => panic!("want {what:?} refused, the worker started"),
    };
    refused(q.worker().start(), "no handler");
    let job = |_: Task, _: JobContext| async { Ok(()) };
    refused(
        q.worker().handle(job).handle(job).start(),
        "two handlers for job \"task\"",
    );
    let batch = |_: Vec<Delivery>| async { Vec::<ItemFailure>::new() };
    refused(
        q.worker().handle(job).handle_batch(batch).start(),
        "per-job handlers and a batch handler",
    );
    refused(
        q.worker().handle_batch(batch).handle(job).start(),
        "and a batch handler",
    );
    refused(
        q.worker().handle_batch(batch).handle_batch(batch).start(),
        "two batch handlers",
    );
    let raw = |_: Delivery| async { Ok(()) };
    refused(
        q.worker().handle_raw(raw).handle_raw(raw).start(),
        "two raw handlers",
    );
    refused(
        q.worker()
            .concurrency(3)
            .config(WorkerConfig::default())
            .handle(job)
            .start(),
        "config() after single settings",
    );
    // The right order is fine: config first, then settings that adjust it.
    q.worker()
        .config(WorkerConfig::default())
        .concurrency(3)
        .handle(job)
        .handle_raw(raw)
        .start()
        .expect("a well-built worker starts")
        .shutdown()
        .await;
}

/// Sends one `Task`, waits until `w` dead-letters it, and stops `w`.
async fn one_job_until_dead(w: queue_core::WorkerHandle, p: &Producer) -> queue_core::WorkerReport {
    p.enqueue(&Task(1)).await.unwrap();
    eventually(WAIT * 6, "dead-lettered after 3 attempts", || {
        w.report().dead_lettered == 1
    })
    .await;
    w.shutdown().await
}

/// `JobError::rate_limited` with no rate limit configured has nothing to pause: the job is
/// retried after the pause it asked for, spending attempts, and dead-lettered after the
/// last (0.2 gave it back for ever, never spending one). Paused clock.
#[tokio::test(start_paused = true)]
async fn rate_limited_without_a_limiter_is_a_bounded_retry() {
    let (q, p) = setup().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let w = fast(&q)
        .handle(move |_: Task, ctx: JobContext| {
            s2.lock()
                .unwrap()
                .push((ctx.attempt, tokio::time::Instant::now()));
            async { Err(JobError::rate_limited(Duration::from_secs(7))) }
        })
        .start()
        .unwrap();
    let r = one_job_until_dead(w, &p).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{r:?}"
    );
    assert!(
        seen[1].1 - seen[0].1 >= Duration::from_secs(7),
        "retried after the pause asked for, not the policy's 10 ms: {seen:?}"
    );
    assert_eq!(r.rate_limited, 0, "{r:?}");
    dead(&q, 1).await;
}

/// A worker that declares it shares its queue with workers of other job types gives back
/// the jobs it does not know for as long as it takes (here with no grace at all), while
/// one that does not declare it dead-letters them at the end of its grace. Paused clock.
#[tokio::test(start_paused = true)]
async fn a_shared_queue_worker_leaves_other_job_types_to_their_workers() {
    let (q, p) = setup().await;
    let tasks = fast(&q)
        .shared_queue()
        .unknown_job_grace(Duration::ZERO)
        .handle(|_: Task, _ctx| async { Ok(()) })
        .start()
        .unwrap();
    p.enqueue(&Picky).await.unwrap();
    p.enqueue(&Task(1)).await.unwrap();
    eventually(
        WAIT,
        "the other job type given back, again and again",
        || tasks.report().unknown_job >= 3,
    )
    .await;
    assert_eq!(tasks.report().dead_lettered, 0, "{:?}", tasks.report());
    assert_eq!(tasks.report().succeeded, 1, "{:?}", tasks.report());
    // (Stopped first: on the paused clock the first worker would win every race for it.)
    tasks.shutdown().await;
    let pickies = fast(&q)
        .shared_queue()
        .handle(|_: Picky, _ctx| async { Ok(()) })
        .start()
        .unwrap();
    eventually(WAIT, "the Picky job run by its own worker", || {
        pickies.report().succeeded == 1
    })
    .await;
    pickies.shutdown().await;
    dead(&q, 0).await;
    // Without the declaration, the same grace of zero dead-letters it at once.
    p.enqueue(&Picky).await.unwrap();
    let alone = fast(&q)
        .unknown_job_grace(Duration::ZERO)
        .handle(|_: Task, _ctx| async { Ok(()) })
        .start()
        .unwrap();
    eventually(WAIT, "dead-lettered unknown-job", || {
        alone.report().dead_lettered == 1
    })
    .await;
    alone.shutdown().await;
}

/// Per-key concurrency alone pauses nothing either: a rate-limited answer there is a
/// bounded retry too (it gave the job back for ever when any limit was set). Paused clock.
#[tokio::test(start_paused = true)]
async fn rate_limited_under_per_key_concurrency_alone_is_a_bounded_retry() {
    let (q, p) = setup().await;
    let w = fast(&q)
        .concurrency_per_key(2, queue_core::LimitKey::Header("tenant".into()))
        .local_only()
        .handle(|_: Task, _ctx: JobContext| async {
            Err(JobError::rate_limited(Duration::from_secs(1)))
        })
        .start()
        .unwrap();
    let r = one_job_until_dead(w, &p).await;
    assert_eq!((r.failed, r.rate_limited), (3, 0), "{r:?}");
    dead(&q, 1).await;
}

/// A job that snoozes three times, ten seconds each, then succeeds: it runs four times,
/// every run its first attempt, ten seconds apart, and the report counts the snoozes.
/// Past the worker's snooze_limit a snooze is a retry that spends an attempt, so a job
/// that snoozes for ever ends in the dead-letter queue.
#[tokio::test(start_paused = true)]
async fn snooze_comes_back_later_without_spending_an_attempt() {
    let backend = queue_core::connect("memory://snooze").await.unwrap();
    let q = backend.queue("snooze");
    q.create().await.unwrap();
    q.producer().send(Message::new("patient")).await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let seen = runs.clone();
    let t0 = tokio::time::Instant::now();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(50))
        .handle_raw(move |d: Delivery| {
            let seen = seen.clone();
            async move {
                let mut runs = seen.lock().unwrap();
                runs.push((t0.elapsed().as_secs(), d.attempt));
                if runs.len() <= 3 {
                    return Err(JobError::snooze(Duration::from_secs(10)));
                }
                Ok(())
            }
        })
        .start()
        .unwrap();
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(120), "it succeeds", |r| {
        r.succeeded == 1
    })
    .await;
    let r = w.shutdown().await;
    assert_eq!(r.snoozed, 3, "{r:?}");
    assert_eq!(r.retried, 0, "{r:?}");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.iter().map(|r| r.1).collect::<Vec<_>>(), [1, 1, 1, 1]);
    for pair in runs.windows(2) {
        assert!((10..=12).contains(&(pair[1].0 - pair[0].0)), "{runs:?}");
    }

    // Past the limit (zero here: the limit counts in wall-clock time from the first
    // enqueue, which the paused clock does not move), with two attempts: each snooze
    // spends one, and the job is dead-lettered.
    q.producer().send(Message::new("never")).await.unwrap();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(50))
        .snooze_limit(Duration::ZERO)
        .retry(RetryPolicy::new(2, Backoff::Fixed(Duration::from_secs(1))))
        .handle_raw(|_| async { Err(JobError::snooze(Duration::from_secs(10))) })
        .start()
        .unwrap();
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(300), "dead-lettered", |r| {
        r.dead_lettered == 1
    })
    .await;
    let r = w.shutdown().await;
    assert_eq!((r.snoozed, r.retried), (0, 1), "{r:?}");
    assert_eq!(q.stats().await.unwrap().dead, 1);
}
