//! Flows ([`queue_core::flow`]) on the in-memory backend under tokio's paused clock: a
//! diamond runs each job once and in order with results passed on, two dependencies that
//! finish together release their dependent once, each failure policy, bad flows refused
//! with nothing sent, and an add cut short resumed by adding it again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::flow::{Flow, FlowStatus, NodeState, OnFailure};
use queue_core::testkit::store::Yielding;
use queue_core::*;
use tokio::time::Instant;

/// One step of a flow: records that it ran, sleeps, then succeeds (setting its name as
/// its result) or fails for good.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Step {
    name: String,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    fail: bool,
}
impl Job for Step {
    const NAME: &'static str = "step";
}

fn step(name: &str) -> Step {
    Step {
        name: name.into(),
        sleep_ms: 0,
        fail: false,
    }
}

/// What the handlers saw: each run's step name with its start and end, and what each
/// read of its dependencies' results.
#[derive(Default)]
struct Seen {
    runs: Mutex<Vec<(String, Instant, Instant)>>,
    results: Mutex<HashMap<String, Vec<String>>>,
}

impl Seen {
    fn count(&self, name: &str) -> usize {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == name)
            .count()
    }
    fn run(&self, name: &str) -> (Instant, Instant) {
        let runs = self.runs.lock().unwrap();
        let r = runs
            .iter()
            .find(|r| r.0 == name)
            .unwrap_or_else(|| panic!("{name} never ran"));
        (r.1, r.2)
    }
}

async fn backend(queues: &[&str]) -> Backend {
    let b = connect(&format!("memory://flow-{}", fastrand::u64(..)))
        .await
        .unwrap()
        .with_store(Arc::new(Yielding::new()));
    for q in queues {
        b.queue(*q).create().await.unwrap();
    }
    b
}

/// A worker on `queue` that runs steps, recording them in `seen`.
fn worker(b: &Backend, queue: &str, seen: &Arc<Seen>, concurrency: usize) -> WorkerHandle {
    let seen = seen.clone();
    b.queue(queue)
        .worker()
        .concurrency(concurrency)
        .poll_wait(Duration::from_millis(20))
        .retry(RetryPolicy::none())
        .handle(move |s: Step, ctx: JobContext| {
            let seen = seen.clone();
            async move {
                let start = Instant::now();
                if let Some(flow) = ctx.flow() {
                    let got: Vec<String> = flow.results().await.map_err(JobError::retry)?;
                    seen.results.lock().unwrap().insert(s.name.clone(), got);
                }
                tokio::time::sleep(Duration::from_millis(s.sleep_ms)).await;
                seen.runs
                    .lock()
                    .unwrap()
                    .push((s.name.clone(), start, Instant::now()));
                if s.fail {
                    return Err(JobError::permanent(format!("{} failed", s.name)));
                }
                ctx.set_result(&s.name);
                Ok(())
            }
        })
        .start()
        .unwrap()
}

async fn finished(b: &Backend, id: &str) -> FlowStatus {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = b.flow_status(id).await.unwrap().expect("the flow exists");
        if s.is_finished() {
            return s;
        }
        assert!(Instant::now() < deadline, "flow never finished: {s:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A diamond: A, then B and C (on another queue) side by side, then D, which reads B's
/// and C's results. Two workers per queue. Each job runs once, after its dependencies,
/// and D sees both results in the order its dependencies were declared.
#[tokio::test(start_paused = true)]
async fn a_diamond_runs_each_job_once_after_its_dependencies() {
    let b = backend(&["one", "two"]).await;
    let seen = Arc::new(Seen::default());
    let mut flow = Flow::new();
    let a = flow.job("one", &step("a")).unwrap();
    let bb = flow
        .job(
            "one",
            &Step {
                sleep_ms: 30,
                ..step("b")
            },
        )
        .unwrap();
    let c = flow
        .job(
            "two",
            &Step {
                sleep_ms: 10,
                ..step("c")
            },
        )
        .unwrap();
    let d = flow.job("two", &step("d")).unwrap();
    flow.after(bb, &[a]).after(c, &[a]).after(d, &[bb, c]);
    let id = b.add_flow(flow).await.unwrap();
    // Only the root was sent.
    assert_eq!(b.queue("one").stats().await.unwrap().ready, 1);
    assert_eq!(b.queue("two").stats().await.unwrap().ready, 0);
    let workers = [
        worker(&b, "one", &seen, 4),
        worker(&b, "one", &seen, 4),
        worker(&b, "two", &seen, 4),
        worker(&b, "two", &seen, 4),
    ];
    let status = finished(&b, id.as_str()).await;
    for n in ["a", "b", "c", "d"] {
        assert_eq!(seen.count(n), 1, "{n} ran once");
    }
    assert!(seen.run("b").0 >= seen.run("a").1 && seen.run("c").0 >= seen.run("a").1);
    assert!(seen.run("d").0 >= seen.run("b").1 && seen.run("d").0 >= seen.run("c").1);
    assert_eq!(seen.results.lock().unwrap()["d"], ["b", "c"]);
    assert_eq!(status.count(NodeState::Succeeded), 4, "{status:#?}");
    assert_eq!(status.nodes[3].result, Some(serde_json::json!("d")));
    for w in workers {
        let r = w.shutdown().await;
        assert_eq!(r.backend_errors, 0, "{r:?}");
    }
}

/// Fifty flows of two children and a parent, the children of each finishing at the same
/// instant in two workers whose store reads and writes interleave: every parent runs
/// exactly once.
#[tokio::test(start_paused = true)]
async fn two_dependencies_finishing_together_release_their_dependent_once() {
    let b = backend(&["q"]).await;
    let seen = Arc::new(Seen::default());
    let mut ids = Vec::new();
    for i in 0..50 {
        let mut flow = Flow::new();
        let x = flow
            .job(
                "q",
                &Step {
                    sleep_ms: 100,
                    ..step(&format!("x{i}"))
                },
            )
            .unwrap();
        let y = flow
            .job(
                "q",
                &Step {
                    sleep_ms: 100,
                    ..step(&format!("y{i}"))
                },
            )
            .unwrap();
        let p = flow.job("q", &step(&format!("p{i}"))).unwrap();
        flow.after(p, &[x, y]);
        ids.push(b.add_flow(flow).await.unwrap());
    }
    let w1 = worker(&b, "q", &seen, 64);
    let w2 = worker(&b, "q", &seen, 64);
    for id in &ids {
        finished(&b, id.as_str()).await;
    }
    // Let any duplicate send surface.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..50 {
        assert_eq!(seen.count(&format!("p{i}")), 1, "parent {i} ran once");
        let mut got = seen.results.lock().unwrap()[&format!("p{i}")].clone();
        got.sort();
        assert_eq!(got, [format!("x{i}"), format!("y{i}")]);
    }
    assert_eq!(b.queue("q").stats().await.unwrap().total(), 0);
    w1.shutdown().await;
    w2.shutdown().await;
}

/// Each policy, in one flow: `x` fails for good, `y` succeeds, `z` takes a minute.
/// - `f` (after x, Fail) is dead-lettered `dependency-failed` without running, and `g`
///   (after f) follows it;
/// - `i` (after x, Ignore, and y) runs once both settled, seeing only y's result;
/// - `c` (after x, Continue, and z) runs as soon as x failed, before z is done.
#[tokio::test(start_paused = true)]
async fn each_failure_policy_does_what_it_says() {
    let b = backend(&["q"]).await;
    let seen = Arc::new(Seen::default());
    let mut flow = Flow::new();
    let x = flow
        .job(
            "q",
            &Step {
                fail: true,
                sleep_ms: 10,
                ..step("x")
            },
        )
        .unwrap();
    let y = flow
        .job(
            "q",
            &Step {
                sleep_ms: 20,
                ..step("y")
            },
        )
        .unwrap();
    let z = flow
        .job(
            "q",
            &Step {
                sleep_ms: 60_000,
                ..step("z")
            },
        )
        .unwrap();
    let f = flow.job("q", &step("f")).unwrap();
    let g = flow.job("q", &step("g")).unwrap();
    let i = flow.job("q", &step("i")).unwrap();
    let c = flow.job("q", &step("c")).unwrap();
    flow.after(f, &[x]).after(g, &[f]);
    flow.depends_on(i, x, OnFailure::Ignore).after(i, &[y]);
    flow.depends_on(c, x, OnFailure::Continue).after(c, &[z]);
    let id = b.add_flow(flow).await.unwrap();
    let w = worker(&b, "q", &seen, 8);
    let status = finished(&b, id.as_str()).await;
    let state = |n: u32| status.nodes[n as usize].state;
    assert_eq!(state(x.index()), NodeState::Failed);
    assert_eq!(state(f.index()), NodeState::Failed);
    assert_eq!(state(g.index()), NodeState::Failed);
    assert_eq!(seen.count("f") + seen.count("g"), 0, "f and g never ran");
    assert!(
        status.nodes[f.index() as usize]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("dependency-failed")),
        "{status:#?}"
    );
    let dead = b.queue("q").dead_letters(10).await.unwrap();
    let reasons: Vec<_> = dead.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == Some(DeadLetterKind::DependencyFailed))
            .count(),
        2,
        "{reasons:?}"
    );
    assert_eq!(state(i.index()), NodeState::Succeeded);
    assert_eq!(seen.results.lock().unwrap()["i"], ["y"]);
    assert!(seen.run("i").0 >= seen.run("y").1);
    assert_eq!(state(c.index()), NodeState::Succeeded);
    assert!(
        seen.run("c").0 < seen.run("z").1,
        "c ran at once after x failed, not after z"
    );
    assert_eq!(state(z.index()), NodeState::Succeeded);
    w.shutdown().await;
}

/// Flows that cannot run are refused at the call, by name, and nothing is sent.
#[tokio::test]
async fn bad_flows_are_refused_with_nothing_sent() {
    let b = backend(&["q"]).await;
    let refused = |e: QueueError, what: &str| match e {
        QueueError::InvalidFlow(m) => assert!(m.contains(what), "{m:?} should say {what:?}"),
        other => panic!("expected InvalidFlow({what}), got {other:?}"),
    };
    let mut cyc = Flow::new();
    let (p, q, r) = (
        cyc.job("q", &step("p")).unwrap(),
        cyc.job("q", &step("q")).unwrap(),
        cyc.job("q", &step("r")).unwrap(),
    );
    cyc.after(q, &[p]).after(r, &[q]).after(p, &[r]);
    refused(b.add_flow(cyc).await.unwrap_err(), "cycle");

    let mut f = Flow::new();
    let only = f.job("q", &step("b")).unwrap();
    f.after(only, &[NodeId_of(&mut Flow::new())]);
    refused(b.add_flow(f).await.unwrap_err(), "another flow");

    let mut f = Flow::new();
    let a = f.job("q", &step("a")).unwrap();
    f.after(a, &[a]);
    refused(b.add_flow(f).await.unwrap_err(), "itself");

    let mut f = Flow::new();
    let (a, c) = (
        f.job("q", &step("a")).unwrap(),
        f.job("q", &step("c")).unwrap(),
    );
    f.after(c, &[a, a]);
    refused(b.add_flow(f).await.unwrap_err(), "twice");

    refused(b.add_flow(Flow::new()).await.unwrap_err(), "no jobs");
    let mut f = Flow::new();
    f.message("q", Message::new("x").header(headers::IDEMPOTENCY_KEY, "k"));
    refused(b.add_flow(f).await.unwrap_err(), "idempotency");
    let mut f = Flow::new();
    f.message("q", Message::new("x").dedup_id("d"));
    refused(b.add_flow(f).await.unwrap_err(), "dedup");
    let mut f = Flow::new();
    f.job("no-such-queue", &step("a")).unwrap();
    refused(b.add_flow(f).await.unwrap_err(), "does not exist");
    let mut big = Flow::new();
    for i in 0..=queue_core::flow::MAX_NODES {
        big.job("q", &step(&i.to_string())).unwrap();
    }
    refused(b.add_flow(big).await.unwrap_err(), "over the");
    refused(
        b.add_flow(Flow::with_id("a/b")).await.unwrap_err(),
        "flow id",
    );
    let mut f = Flow::new();
    f.retention(Duration::ZERO);
    f.job("q", &step("a")).unwrap();
    refused(b.add_flow(f).await.unwrap_err(), "retention");
    // A message the backend would refuse (over its size limit).
    let mut f = Flow::new();
    let max = b.capabilities().max_message_size;
    f.message("q", Message::new(vec![b'x'; max + 1]));
    f.message("q", Message::new("y"));
    assert!(matches!(
        b.add_flow(f).await,
        Err(QueueError::InvalidFlow(_))
    ));
    assert_eq!(
        b.queue("q").stats().await.unwrap().total(),
        0,
        "nothing was sent"
    );

    // No shared store: refused by name.
    let bare = connect("memory://flow-bare").await.unwrap();
    bare.queue("q").create().await.unwrap();
    let mut f = Flow::new();
    f.job("q", &step("a")).unwrap();
    assert!(matches!(
        bare.add_flow(f).await,
        Err(QueueError::NoStatusStore)
    ));
    assert_eq!(bare.queue("q").stats().await.unwrap().total(), 0);
}

/// A node of another flow, with an index this flow does not have either.
#[allow(non_snake_case)]
fn NodeId_of(f: &mut Flow) -> queue_core::flow::NodeId {
    for i in 0..5 {
        f.job("q", &step(&i.to_string())).unwrap();
    }
    f.job("q", &step("last")).unwrap()
}

/// A driver whose sends to queue "b" fail while `down` is set.
struct Flaky {
    inner: MemoryQueue,
    down: AtomicBool,
}

#[queue_core::driver::async_trait]
impl Driver for Flaky {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create_queue(&self, q: &str) -> Result<()> {
        self.inner.create_queue(q).await
    }
    async fn delete_queue(&self, q: &str) -> Result<()> {
        self.inner.delete_queue(q).await
    }
    async fn purge(&self, q: &str) -> Result<()> {
        self.inner.purge(q).await
    }
    async fn send(&self, q: &str, b: Vec<Message>) -> Result<Vec<MessageId>> {
        if q == "b" && self.down.load(Ordering::SeqCst) {
            return Err(QueueError::backend("memory", "queue b is down"));
        }
        self.inner.send(q, b).await
    }
    async fn receive(&self, q: &str, o: ReceiveOptions) -> Result<Vec<Delivery>> {
        self.inner.receive(q, o).await
    }
    async fn ack(&self, q: &str, r: &[Receipt]) -> Result<()> {
        self.inner.ack(q, r).await
    }
    async fn nack(&self, q: &str, r: &Receipt, d: Duration) -> Result<()> {
        self.inner.nack(q, r, d).await
    }
    async fn extend(&self, q: &str, r: &Receipt, d: Duration) -> Result<()> {
        self.inner.extend(q, r, d).await
    }
    async fn stats(&self, q: &str) -> Result<QueueStats> {
        self.inner.stats(q).await
    }
}

/// An add cut short after one of its two roots was sent (the second queue is down) is
/// resumed by adding the same flow again under its id: the missing root is sent, the one
/// already sent is not sent twice, and the flow runs to its end. A different flow under
/// that id is refused.
#[tokio::test(start_paused = true)]
async fn adding_again_under_the_same_id_resumes_a_cut_short_add() {
    let driver = Arc::new(Flaky {
        inner: MemoryQueue::new(),
        down: AtomicBool::new(true),
    });
    let b = Backend::from_driver(driver.clone()).with_store(Arc::new(MemoryStore::new()));
    for q in ["a", "b"] {
        b.queue(q).create().await.unwrap();
    }
    let order = |with: &str| {
        let mut f = Flow::with_id("order-7");
        let x = f.job("a", &step("x")).unwrap();
        let y = f.job("b", &step("y")).unwrap();
        let z = f.job("a", &step(with)).unwrap();
        f.after(z, &[x, y]);
        f
    };
    assert!(b.add_flow(order("z")).await.is_err(), "queue b is down");
    assert_eq!(b.queue("a").stats().await.unwrap().ready, 1);
    let waiting = b.flow_status("order-7").await.unwrap().unwrap();
    assert_eq!(waiting.nodes[1].state, NodeState::Released, "{waiting:#?}");

    driver.down.store(false, Ordering::SeqCst);
    let id = b.add_flow(order("z")).await.unwrap();
    assert_eq!(id.as_str(), "order-7");
    assert_eq!(
        b.queue("a").stats().await.unwrap().ready,
        1,
        "x not sent twice"
    );
    assert_eq!(b.queue("b").stats().await.unwrap().ready, 1, "y sent now");
    // Once more: nothing left to send.
    b.add_flow(order("z")).await.unwrap();
    assert_eq!(b.queue("a").stats().await.unwrap().ready, 1);
    assert_eq!(b.queue("b").stats().await.unwrap().ready, 1);
    match b.add_flow(order("other")).await {
        Err(QueueError::InvalidFlow(m)) => assert!(m.contains("different flow"), "{m}"),
        other => panic!("a different flow under the same id: {other:?}"),
    }

    let seen = Arc::new(Seen::default());
    let wa = worker(&b, "a", &seen, 2);
    let wb = worker(&b, "b", &seen, 2);
    let status = finished(&b, "order-7").await;
    assert_eq!(status.count(NodeState::Succeeded), 3);
    for n in ["x", "y", "z"] {
        assert_eq!(seen.count(n), 1, "{n}");
    }
    wa.shutdown().await;
    wb.shutdown().await;
}

/// A flow cancelled while its first job runs: that job's cancel signal fires (job status
/// is on), the jobs after it are never sent, and every unfinished job reads `failed`,
/// `cancelled`.
#[tokio::test(start_paused = true)]
async fn cancelling_a_flow_stops_what_has_not_finished() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = connect(&format!("memory://flow-{}", fastrand::u64(..)))
        .await
        .unwrap()
        .with_status(JobStatuses::new(store));
    b.queue("q").create().await.unwrap();
    let ran = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = ran.clone();
    let w = b
        .queue("q")
        .worker()
        .poll_wait(Duration::from_millis(20))
        .handle(move |s: Step, ctx: JobContext| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(s.name.clone());
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(s.sleep_ms)) => Ok(()),
                    _ = ctx.cancelled() => Err(JobError::permanent("stopped")),
                }
            }
        })
        .start()
        .unwrap();
    let mut f = Flow::new();
    let a = f
        .job(
            "q",
            &Step {
                sleep_ms: 600_000,
                ..step("a")
            },
        )
        .unwrap();
    let bb = f.job("q", &step("b")).unwrap();
    let c = f.job("q", &step("c")).unwrap();
    f.after(bb, &[a]).after(c, &[bb]);
    let running = b.add_flow(f).await.unwrap();
    queue_core::testkit::eventually(Duration::from_secs(10), "a runs", || {
        ran.lock().unwrap().contains(&"a".to_string())
    })
    .await;

    assert_eq!(b.cancel_flow(running.as_str()).await.unwrap(), Some(3));
    assert_eq!(b.cancel_flow(running.as_str()).await.unwrap(), Some(0));
    assert_eq!(b.cancel_flow("no-such-flow").await.unwrap(), None);
    let s = finished(&b, running.as_str()).await;
    assert!(
        s.nodes.iter().all(|n| n.state == NodeState::Failed
            && n.error.as_deref() == Some(queue_core::flow::CANCELLED)),
        "{s:#?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(*ran.lock().unwrap(), ["a"], "b and c were never sent");
    let r = w.shutdown().await;
    assert_eq!(r.cancelled, 1, "a stopped by its signal: {r:?}");
    assert_eq!(b.queue("q").stats().await.unwrap().total(), 0);
}

/// Without job status, a cancelled flow's job already in its queue is skipped when a
/// worker takes it: the worker reads its state in the flow first.
#[tokio::test(start_paused = true)]
async fn a_cancelled_flows_queued_job_is_skipped_without_job_status() {
    let b = backend(&["q"]).await;
    let mut f = Flow::new();
    f.job("q", &step("queued")).unwrap();
    let id = b.add_flow(f).await.unwrap();
    assert_eq!(b.cancel_flow(id.as_str()).await.unwrap(), Some(1));
    let w = b
        .queue("q")
        .worker()
        .poll_wait(Duration::from_millis(20))
        .handle(|s: Step, _| async move { Err(JobError::permanent(format!("{} ran", s.name))) })
        .start()
        .unwrap();
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(10), "skipped", |r| {
        r.cancelled == 1
    })
    .await;
    let r = w.shutdown().await;
    assert_eq!((r.succeeded, r.failed), (0, 0), "{r:?}");
    assert_eq!(b.queue("q").stats().await.unwrap().total(), 0);
}

/// A second delivery of a flow's job that already succeeded (a duplicate: a resend, a
/// lease that ended) is acked without running, and sends nothing again.
#[tokio::test(start_paused = true)]
async fn a_duplicate_of_a_finished_job_is_not_run_again() {
    let b = backend(&["q"]).await;
    let seen = Arc::new(Seen::default());
    let mut f = Flow::new();
    let a = f.job("q", &step("a")).unwrap();
    let next = f.job("q", &step("b")).unwrap();
    f.after(next, &[a]);
    let id = b.add_flow(f).await.unwrap();
    let w = worker(&b, "q", &seen, 4);
    let s = finished(&b, id.as_str()).await;
    let first = &s.nodes[0];
    let again = job_message(&step("a"), SendOptions::default())
        .unwrap()
        .id(first.id.clone())
        .header(headers::FLOW, format!("{id}/0"));
    b.queue("q").producer().send(again).await.unwrap();
    queue_core::testkit::eventually_worker(&w, Duration::from_secs(10), "skipped", |r| {
        r.duplicates_skipped == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((seen.count("a"), seen.count("b")), (1, 1));
    w.shutdown().await;
}
