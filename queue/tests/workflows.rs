//! Flows (job dependencies, `queue::flow`) on every backend, against the real servers
//! `scripts/services.sh` starts, with the flow's state in a Redis store (PostgreSQL's own
//! store for PostgreSQL): an order pipeline, charge, then e-mail and invoice side by side,
//! then ship with both results; and a failed charge whose dependents are dead-lettered
//! `dependency-failed` without running, while the e-mail (policy Ignore) still goes.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    story("memory://workflows", "memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    story(REDIS, REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    story(POSTGRES, POSTGRES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs() {
    story(
        "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566",
        REDIS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    story("kafka://127.0.0.1:9092", REDIS).await;
}
