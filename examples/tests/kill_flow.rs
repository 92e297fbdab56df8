//! Flows across real crashes: worker processes are SIGKILLed again and again while forty
//! diamond flows run on Redis (state in the same Redis). Kills land mid-job and
//! mid-settlement; afterwards a last worker runs to the end. Every flow finishes with
//! every job succeeded, each dependent having seen all its dependencies' results (the
//! victim's handler refuses to succeed otherwise), nothing is dead-lettered, nothing is
//! left in the queue.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use examples::flow::Node;
use queue::flow::{Flow, NodeState};
use queue::testkit::unique;

const URL: &str = "redis://127.0.0.1:6379";

fn spawn(queue: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow-worker"))
        .args([queue, "1500"])
        .env("QUEUE_URL", URL)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start flow-worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("flow-worker ended early").unwrap();
    assert_eq!(first, "ready", "flow-worker did not start");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_leave_no_flow_stuck() {
    let store = queue::connect_store(URL).await.unwrap_or_else(|e| {
        panic!("Redis at {URL} is not reachable ({e}); run scripts/services.sh")
    });
    let backend = queue::connect(URL).await.unwrap().with_store(store);
    let name = unique("kill-flow");
    let q = backend.queue(name.clone());
    q.create().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..40 {
        // 0, then 1 and 2, then 3 after both.
        let mut f = Flow::new();
        let a = f.job(&name, &Node { n: 0, deps: 0 }).unwrap();
        let b = f.job(&name, &Node { n: 1, deps: 1 }).unwrap();
        let c = f.job(&name, &Node { n: 2, deps: 1 }).unwrap();
        let d = f.job(&name, &Node { n: 3, deps: 2 }).unwrap();
        f.after(b, &[a]).after(c, &[a]).after(d, &[b, c]);
        ids.push(backend.add_flow(f).await.unwrap());
    }

    // Two workers at a time, each killed after a while, six rounds.
    for round in 0..6u64 {
        let mut pair = [spawn(&name), spawn(&name)];
        tokio::time::sleep(Duration::from_millis(150 + 90 * round)).await;
        for child in &mut pair {
            child.kill().unwrap(); // SIGKILL: no ack, no settlement, no goodbye
            child.wait().unwrap();
        }
    }

    let mut last = spawn(&name);
    let t0 = Instant::now();
    let mut unfinished = ids.clone();
    while !unfinished.is_empty() {
        let mut still = Vec::new();
        for id in unfinished {
            let s = backend
                .flow_status(id.as_str())
                .await
                .unwrap()
                .expect("flow exists");
            if !s.is_finished() {
                still.push(id);
            } else {
                assert_eq!(s.count(NodeState::Succeeded), 4, "{s:#?}");
            }
        }
        unfinished = still;
        if t0.elapsed() > Duration::from_secs(90) {
            last.kill().ok();
            let s = backend.flow_status(unfinished[0].as_str()).await.unwrap();
            panic!("{} flows stuck, for instance {s:#?}", unfinished.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last.kill().unwrap();
    last.wait().unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.dead, 0, "nothing dead-lettered: {stats:?}");
    q.delete().await.ok();
}
