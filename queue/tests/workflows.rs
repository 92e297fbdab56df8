//! Flows (job dependencies, `queue::flow`) on every backend, against the real servers
//! `scripts/services.sh` starts, with the flow's state in a Redis store (PostgreSQL's own
//! store for PostgreSQL): an order pipeline, charge, then e-mail and invoice side by side,
//! then ship with both results; and a failed charge whose dependents are dead-lettered
//! `dependency-failed` without running, while the e-mail (policy Ignore) still goes.
//! And batches (`queue::batch`) on every backend: 200 thumbnails, one of which fails for
//! good, and a nested batch of 20 with its own callback; each callback runs once, the
//! child's before the parent's, and the counts add up. And debounce (`queue::debounce`):
//! of three jobs sent under one key, only the last runs, on every backend. And
//! aggregation (`queue::aggregate`): jobs handed over in sets of one key each.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue::flow::{Flow, FlowStatus, NodeState, OnFailure};
use queue::{Backend, DeadLetterKind, Job, JobContext, JobError, RetryPolicy};

const REDIS: &str = "redis://127.0.0.1:6379";
const POSTGRES: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";

#[derive(serde::Serialize, serde::Deserialize)]
struct Step {
    order: String,
    name: String,
    fail: bool,
}
impl Job for Step {
    const NAME: &'static str = "step";
}

fn step(order: &str, name: &str) -> Step {
    Step {
        order: order.into(),
        name: name.into(),
        fail: false,
    }
}

async fn backend(url: &str, store: &str) -> Backend {
    let store = queue::connect_store(store).await.unwrap_or_else(|e| {
        panic!("{store}: {e}. Start the test servers with scripts/services.sh")
    });
    queue::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}. Start the test servers with scripts/services.sh"))
        .with_store(store)
}

/// An order's flow: charge; e-mail (Ignore) and invoice (Fail) after it; ship after both.
fn order(queue: &str, id: &str, charge_fails: bool) -> Flow {
    let mut f = Flow::new();
    let charge = f
        .job(
            queue,
            &Step {
                fail: charge_fails,
                ..step(id, "charge")
            },
        )
        .unwrap();
    let email = f.job(queue, &step(id, "email")).unwrap();
    let invoice = f.job(queue, &step(id, "invoice")).unwrap();
    let ship = f.job(queue, &step(id, "ship")).unwrap();
    f.depends_on(email, charge, OnFailure::Ignore);
    f.after(invoice, &[charge]).after(ship, &[email, invoice]);
    f
}

async fn finished(b: &Backend, id: &str, within: Duration) -> FlowStatus {
    let t0 = Instant::now();
    loop {
        let s = b.flow_status(id).await.unwrap().expect("the flow exists");
        if s.is_finished() {
            return s;
        }
        assert!(t0.elapsed() < within, "flow never finished: {s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One handler run: order, step, the dependencies' results it read.
type Run = (String, String, Vec<String>);

async fn story(url: &str, store: &str) {
    let b = backend(url, store).await;
    let name = queue::testkit::unique("orders");
    let q = b.queue(name.clone());
    q.create().await.unwrap();
    let ran: Arc<Mutex<Vec<Run>>> = Arc::default();
    let seen = ran.clone();
    let w = q
        .worker()
        .concurrency(8)
        .poll_wait(Duration::from_millis(200))
        .retry(RetryPolicy::none())
        .handle(move |s: Step, ctx: JobContext| {
            let seen = seen.clone();
            async move {
                let got: Vec<String> = ctx
                    .flow()
                    .expect("a flow's job")
                    .results()
                    .await
                    .map_err(JobError::retry)?;
                seen.lock()
                    .unwrap()
                    .push((s.order.clone(), s.name.clone(), got));
                if s.fail {
                    return Err(JobError::permanent("card declined"));
                }
                ctx.set_result(&format!("{}:{}", s.order, s.name));
                Ok(())
            }
        })
        .start()
        .unwrap();
    let ok = b.add_flow(order(&name, "o1", false)).await.unwrap();
    let bad = b.add_flow(order(&name, "o2", true)).await.unwrap();
    let within = Duration::from_secs(60);
    let ok = finished(&b, ok.as_str(), within).await;
    let bad = finished(&b, bad.as_str(), within).await;
    let report = w.shutdown().await;

    let ran = ran.lock().unwrap().clone();
    let runs = |o: &str, n: &str| ran.iter().filter(|r| r.0 == o && r.1 == n).count();
    for n in ["charge", "email", "invoice", "ship"] {
        assert_eq!(runs("o1", n), 1, "{url}: o1 {n} ran once: {ran:?}");
    }
    let ship = ran.iter().find(|r| r.0 == "o1" && r.1 == "ship").unwrap();
    assert_eq!(ship.2, ["o1:email", "o1:invoice"], "{url}");
    assert_eq!(ok.count(NodeState::Succeeded), 4, "{url}: {ok:#?}");

    // The declined charge: the e-mail still goes (Ignore), the invoice and the shipment
    // are dead-lettered without running.
    assert_eq!(runs("o2", "charge"), 1, "{url}");
    assert_eq!(runs("o2", "email"), 1, "{url}");
    assert_eq!(
        runs("o2", "invoice") + runs("o2", "ship"),
        0,
        "{url}: {ran:?}"
    );
    let states: Vec<NodeState> = bad.nodes.iter().map(|n| n.state).collect();
    use NodeState::{Failed, Succeeded};
    assert_eq!(states, [Failed, Succeeded, Failed, Failed], "{url}");
    assert!(
        bad.nodes[2]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("dependency-failed") || e.contains("card declined")),
        "{url}: {bad:#?}"
    );
    // Where the backend can list its dead letters (Kafka cannot), each says why.
    if b.capabilities().can_peek(true) {
        let dead = q.dead_letters(10).await.unwrap();
        let because = |k| dead.iter().filter(|d| d.reason == Some(k)).count();
        assert_eq!(because(DeadLetterKind::Permanent), 1, "{url}: {dead:?}");
        assert_eq!(
            because(DeadLetterKind::DependencyFailed),
            2,
            "{url}: {dead:?}"
        );
    }
    assert_eq!(report.backend_errors, 0, "{url}: {report:?}");
    q.delete().await.ok();
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Thumb {
    n: u32,
}
impl Job for Thumb {
    const NAME: &'static str = "thumb";
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    name: String,
}
impl Job for Report {
    const NAME: &'static str = "report";
}

/// A callback's run: its name, when, and the batch's (succeeded, dead) counts then.
type Called = (String, Instant, (u32, u32));

async fn batch_story(url: &str, store: &str) {
    let b = backend(url, store).await;
    let jobs = b.queue(queue::testkit::unique("thumbs"));
    let reports = b.queue(queue::testkit::unique("reports"));
    jobs.create().await.unwrap();
    reports.create().await.unwrap();
    let ran: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = ran.clone();
    let w = jobs
        .worker()
        .concurrency(16)
        .poll_wait(Duration::from_millis(200))
        .retry(RetryPolicy::none())
        .handle(move |t: Thumb, _ctx: JobContext| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(t.n);
                match t.n {
                    7 => Err(JobError::permanent("corrupt image")),
                    _ => Ok(()),
                }
            }
        })
        .start()
        .unwrap();
    let called: Arc<Mutex<Vec<Called>>> = Arc::default();
    let (seen, backend) = (called.clone(), b.clone());
    let cw = reports
        .worker()
        .poll_wait(Duration::from_millis(200))
        .handle(move |r: Report, ctx: JobContext| {
            let (seen, backend) = (seen.clone(), backend.clone());
            async move {
                let s = backend
                    .batch_status(ctx.batch_id().expect("a callback"))
                    .await?
                    .expect("its batch");
                if r.name == "child" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let counts = (s.succeeded, s.dead);
                seen.lock().unwrap().push((r.name, Instant::now(), counts));
                Ok(())
            }
        })
        .start()
        .unwrap();

    let report = |name: &str| Report { name: name.into() };
    let parent = b
        .new_batch()
        .description("album")
        .on_complete(reports.name(), &report("complete"))
        .on_success(reports.name(), &report("success"))
        .open()
        .await
        .unwrap();
    let thumbs: Vec<Thumb> = (0..200).map(|n| Thumb { n }).collect();
    parent.add(jobs.name(), &thumbs[..100]).await.unwrap();
    let child = parent
        .child()
        .on_complete(reports.name(), &report("child"))
        .open()
        .await
        .unwrap();
    let nested: Vec<Thumb> = (1000..1020).map(|n| Thumb { n }).collect();
    child.add(jobs.name(), &nested).await.unwrap();
    child.close().await.unwrap();
    parent.add(jobs.name(), &thumbs[100..]).await.unwrap();
    parent.close().await.unwrap();

    let t0 = Instant::now();
    let s = loop {
        let s = b.batch_status(parent.id()).await.unwrap().unwrap();
        if s.is_finished() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{url}: never finished: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Time for a wrongly repeated callback to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = w.shutdown().await;
    cw.shutdown().await;

    assert_eq!(
        (s.total, s.succeeded, s.dead),
        (201, 200, 1),
        "{url}: {s:#?}"
    );
    assert!(s.errors[0].1.contains("corrupt image"), "{url}: {s:#?}");
    let ran = ran.lock().unwrap().clone();
    for n in (0..200).chain(1000..1020) {
        assert!(ran.contains(&n), "{url}: thumbnail {n} never ran");
    }
    let called = called.lock().unwrap().clone();
    let times = |n: &str| called.iter().filter(|c| c.0 == n).count();
    assert_eq!(times("child"), 1, "{url}: {called:?}");
    assert_eq!(times("complete"), 1, "{url}: {called:?}");
    assert_eq!(times("success"), 0, "{url}: a dead job, yet: {called:?}");
    let at = |n: &str| called.iter().find(|c| c.0 == n).unwrap();
    assert!(at("complete").1 >= at("child").1, "{url}: {called:?}");
    assert_eq!(at("complete").2, (200, 1), "{url}");
    assert_eq!(report.backend_errors, 0, "{url}: {report:?}");
    jobs.delete().await.ok();
    reports.delete().await.ok();
}

async fn debounce_story(url: &str, store: &str) {
    let b = backend(url, store).await;
    let q = b.queue(queue::testkit::unique("debounce"));
    q.create().await.unwrap();
    let ran: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = ran.clone();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(200))
        .handle(move |t: Thumb, _ctx: JobContext| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(t.n);
                Ok(())
            }
        })
        .start()
        .unwrap();
    let p = q.producer();
    for n in 1..=3 {
        p.debounce(&Thumb { n }, "album-7", Duration::from_secs(1))
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    while w.report().superseded < 2 || ran.lock().unwrap().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{url}: {:?}",
            w.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = w.shutdown().await;
    assert_eq!(*ran.lock().unwrap(), [3], "{url}: only the last runs");
    assert_eq!(report.superseded, 2, "{url}: {report:?}");
    q.delete().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    story("memory://workflows", "memory://").await;
    batch_story("memory://batches", "memory://").await;
    debounce_story("memory://debounce", "memory://").await;
}

/// One set handed over: its key and its jobs' numbers.
type Set = (String, Vec<String>);

/// Twelve jobs of two users, sets of up to three by user: every job in one set, no set
/// mixes users or exceeds three.
async fn aggregate_story(url: &str) {
    let b = queue::connect(url).await.unwrap();
    let q = b.queue(queue::testkit::unique("digest"));
    q.create().await.unwrap();
    let sets: Arc<Mutex<Vec<Set>>> = Arc::default();
    let seen = sets.clone();
    let agg = queue::aggregate::Aggregate::new(3)
        .unwrap()
        .max_wait(Duration::from_millis(500))
        .unwrap()
        .by_header("user");
    let w = q
        .worker()
        .concurrency(8)
        .batch_size(2)
        .poll_wait(Duration::from_millis(200))
        .handle_batch(agg.handler(move |user: String, set: Vec<queue::Delivery>| {
            let seen = seen.clone();
            async move {
                let ids = set.iter().map(|d| d.headers["n"].clone()).collect();
                seen.lock().unwrap().push((user, ids));
                Vec::<queue::ItemFailure>::new()
            }
        }))
        .start()
        .unwrap();
    for n in 0..12 {
        let user = ["ann", "bob"][n % 2];
        let m = queue::Message::new("note")
            .header("user", user)
            .header("n", n.to_string());
        q.send(m).await.unwrap();
    }
    let t0 = Instant::now();
    while w.report().succeeded < 12 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{url}: {:?}",
            w.report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.shutdown().await;
    let sets = sets.lock().unwrap().clone();
    let mut all: Vec<u32> = Vec::new();
    for (user, ids) in &sets {
        assert!(!ids.is_empty() && ids.len() <= 3, "{url}: {sets:?}");
        for id in ids {
            let n: u32 = id.parse().unwrap();
            assert_eq!(["ann", "bob"][n as usize % 2], user, "{url}: {sets:?}");
            all.push(n);
        }
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..12).collect::<Vec<_>>(),
        "{url}: each job in one set: {sets:?}"
    );
    q.delete().await.ok();
}

/// One flow across two backends sharing a Redis store: charge on Redis, then the e-mail
/// on SQS, then the shipment on Redis again, reading both results. Each backend is named,
/// and knows the other by its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_across_backends() {
    let redis = backend(REDIS, REDIS).await.with_name("redis").unwrap();
    let sqs = backend(SQS, REDIS).await.with_name("sqs").unwrap();
    let (redis, sqs) = (
        redis.clone().with_peer("sqs", sqs.clone()).unwrap(),
        sqs.with_peer("redis", redis).unwrap(),
    );
    let (orders, mail) = (
        queue::testkit::unique("x-orders"),
        queue::testkit::unique("x-mail"),
    );
    redis.queue(orders.clone()).create().await.unwrap();
    sqs.queue(mail.clone()).create().await.unwrap();
    let ran: Arc<Mutex<Vec<Run>>> = Arc::default();
    let worker = |b: &Backend, q: &str| {
        let seen = ran.clone();
        b.queue(q.to_string())
            .worker()
            .poll_wait(Duration::from_millis(200))
            .handle(move |s: Step, ctx: JobContext| {
                let seen = seen.clone();
                async move {
                    let got: Vec<String> = ctx.flow().expect("a flow's job").results().await?;
                    seen.lock().unwrap().push((s.order, s.name.clone(), got));
                    ctx.set_result(&format!("{}@{}", s.name, ctx.queue));
                    Ok(())
                }
            })
            .start()
            .unwrap()
    };
    let (w1, w2) = (worker(&redis, &orders), worker(&sqs, &mail));
    let make = || {
        let mut f = Flow::new();
        let charge = f.job(&orders, &step("x", "charge")).unwrap();
        let email = f.job_on("sqs", &mail, &step("x", "email")).unwrap();
        let ship = f.job(&orders, &step("x", "ship")).unwrap();
        f.after(email, &[charge]).after(ship, &[charge, email]);
        f
    };
    let unnamed = backend(REDIS, REDIS)
        .await
        .with_peer("sqs", sqs.clone())
        .unwrap();
    let refused = unnamed.add_flow(make()).await;
    assert!(
        matches!(refused, Err(queue::QueueError::InvalidFlow(_))),
        "an unnamed backend cannot add a flow across backends: {refused:?}"
    );
    let id = redis.add_flow(make()).await.unwrap();
    let s = finished(&redis, id.as_str(), Duration::from_secs(60)).await;
    w1.shutdown().await;
    w2.shutdown().await;
    assert_eq!(s.count(NodeState::Succeeded), 3, "{s:#?}");
    assert_eq!(s.nodes[1].backend.as_deref(), Some("sqs"));
    assert_eq!(s.nodes[0].backend.as_deref(), Some("redis"));
    let ran = ran.lock().unwrap().clone();
    let shipped = ran.iter().find(|r| r.1 == "ship").expect("ship ran");
    assert_eq!(
        shipped.2,
        [format!("charge@{orders}"), format!("email@{mail}")],
        "{ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_everywhere() {
    aggregate_story("memory://aggregate").await;
    aggregate_story(REDIS).await;
    aggregate_story(POSTGRES).await;
    aggregate_story(SQS).await;
    aggregate_story("kafka://127.0.0.1:9092").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_everywhere() {
    debounce_story(REDIS, REDIS).await;
    debounce_story(POSTGRES, POSTGRES).await;
    debounce_story(SQS, REDIS).await;
    debounce_story("kafka://127.0.0.1:9092", REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    story(REDIS, REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_batch() {
    batch_story(REDIS, REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    story(POSTGRES, POSTGRES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batch() {
    batch_story(POSTGRES, POSTGRES).await;
}

const SQS: &str = "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs() {
    story(SQS, REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batch() {
    batch_story(SQS, REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    story("kafka://127.0.0.1:9092", REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_batch() {
    batch_story("kafka://127.0.0.1:9092", REDIS).await;
}
