//! Flows and batches across real crashes: worker processes are SIGKILLed again and again
//! while forty diamond flows and eight batches (each with a nested batch) run on Redis
//! (state in the same Redis). Kills land mid-job and mid-settlement; afterwards a last
//! worker runs to the end. Every flow finishes with every job succeeded, each dependent
//! having seen all its dependencies' results (the victim's handler refuses to succeed
//! otherwise); every batch completes with every slot succeeded and its callbacks (and its
//! child's) recorded as succeeded, having run; nothing is dead-lettered, nothing is stuck.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use examples::flow::Node;
use queue::flow::{Flow, NodeState};
use queue::testkit::unique;

const URL: &str = "redis://127.0.0.1:6379";

fn spawn(queue: &str, log: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow-worker"))
        .args([queue, "1500"])
        .env("QUEUE_URL", URL)
        .env("CALLBACK_LOG", log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start flow-worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("flow-worker ended early").unwrap();
    assert_eq!(first, "ready", "flow-worker did not start");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_leave_no_flow_or_batch_stuck() {
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
    // Eight batches of 30 jobs, each with a child batch of 10; a callback on each.
    let log = std::env::temp_dir().join(format!("{name}-callbacks.log"));
    let mut batches = Vec::new();
    for i in 0..8u32 {
        let callback = Node {
            n: 1_000 + i,
            deps: 0,
        };
        let batch = backend
            .new_batch()
            .on_complete(&name, &callback)
            .open()
            .await
            .unwrap();
        let jobs: Vec<Node> = (0..30).map(|n| Node { n, deps: 0 }).collect();
        batch.add(&name, &jobs).await.unwrap();
        let child = batch
            .child()
            .on_success(
                &name,
                &Node {
                    n: 2_000 + i,
                    deps: 0,
                },
            )
            .open()
            .await
            .unwrap();
        child.add(&name, &jobs[..10]).await.unwrap();
        child.close().await.unwrap();
        batch.close().await.unwrap();
        batches.push((batch.id().to_string(), child.id().to_string()));
    }

    // Two workers at a time, each killed after a while, six rounds.
    for round in 0..6u64 {
        let mut pair = [spawn(&name, &log), spawn(&name, &log)];
        tokio::time::sleep(Duration::from_millis(150 + 90 * round)).await;
        for child in &mut pair {
            child.kill().unwrap(); // SIGKILL: no ack, no settlement, no goodbye
            child.wait().unwrap();
        }
    }

    let mut last = spawn(&name, &log);
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
    let t0 = Instant::now();
    for (batch, child) in &batches {
        let s = loop {
            let s = backend
                .batch_status(batch)
                .await
                .unwrap()
                .expect("batch exists");
            if s.is_finished() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(90) {
                last.kill().ok();
                panic!("batch stuck: {s:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!((s.total, s.succeeded, s.dead), (31, 31, 0), "{s:#?}");
        assert!(s.success, "{s:#?}");
        let c = backend.batch_status(child).await.unwrap().unwrap();
        assert_eq!((c.total, c.succeeded), (10, 10), "{c:#?}");
        for st in [&s, &c] {
            use queue::batch::CallbackState::Succeeded;
            assert!(
                st.callbacks.iter().all(|cb| cb.state == Succeeded),
                "{st:#?}"
            );
        }
    }
    last.kill().unwrap();
    last.wait().unwrap();
    // Each callback ran (a SIGKILL between its handler's end and its record may run one
    // twice; its record says succeeded once, and a later copy is skipped).
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    for (batch, child) in &batches {
        for id in [batch, child] {
            let runs = logged
                .lines()
                .filter(|l| l.starts_with(&format!("{id} ")))
                .count();
            assert!(runs >= 1, "{id}'s callback never ran: {logged}");
        }
    }
    println!(
        "callback runs: {} for {} callbacks",
        logged.lines().count(),
        2 * batches.len()
    );
    let _ = std::fs::remove_file(&log);
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.dead, 0, "nothing dead-lettered: {stats:?}");
    q.delete().await.ok();
}
