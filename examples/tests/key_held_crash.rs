//! A key held for a retry survives a worker process's death (SIGKILL), on Redis and Kafka:
//! a worker process runs A1 of key `acct`, which fails and waits for its retry, holding
//! A2 behind it; the process is killed during that wait. A worker started afterwards
//! runs A1 again and only then A2: the hold is neither lost (A2 first) nor turned into a
//! loss (A1 or A2 never run). On Redis the hold lives in the server (A1 delayed at the
//! head of its key's line); on Kafka in the dead consumer's memory, with the partition's
//! commits kept behind A1, so the next consumer replays from A1.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue::testkit::unique;
use queue::{Delivery, Message};

mod common;
use common::Worker;

async fn key_held_across_a_crash(url: &str, settle: Duration) {
    let backend = common::backend_with_status(url).await;
    let name = unique("keyheld");
    let q = backend.queue(name.clone());
    q.create().await.unwrap();
    let p = q.producer();
    p.send(Message::new("fail-once A1").ordering_key("acct"))
        .await
        .unwrap();
    p.send(Message::new("A2").ordering_key("acct"))
        .await
        .unwrap();

    // The victim: A1 fails on its first attempt; kill it as soon as it says so, while A1
    // waits for its retry (due 3 s later: the worker asks for that delay).
    let mut victim = Worker::spawn(url, &name);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before_kill = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "A1 never failed: {before_kill:?}"
        );
        match victim.lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line == "failed fail-once A1" => break,
            Ok(line) => before_kill.push(line),
            Err(_) => {}
        }
    }
    // The handler prints before it returns its error: give the worker time to nack (the
    // retry is due 3 s later), so that the kill lands while the key is held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.child.kill().expect("SIGKILL the worker");
    victim.child.wait().unwrap();
    while let Ok(line) = victim.lines.try_recv() {
        before_kill.push(line);
    }
    assert!(
        !before_kill.iter().any(|l| l == "done A2"),
        "A2 ran while A1 waited for its retry: {before_kill:?}"
    );
    // Kafka: the dead consumer's group session must end before the survivor joins (the
    // test broker, tansu, does not rebalance when a member of a formed generation expires).
    tokio::time::sleep(settle).await;

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let survivor = q
        .worker()
        .concurrency(4)
        .poll_wait(Duration::from_millis(500))
        .handle_raw(move |d: Delivery| {
            s.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&d.payload).into_owned());
            async { Ok(()) }
        })
        .start()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !seen.lock().unwrap().iter().any(|s| s == "A2") {
        assert!(
            Instant::now() < deadline,
            "A2 never ran after the crash: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    survivor.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("fail-once A1"),
        "A1's retry must run before A2: {seen:?}"
    );
    match q.delete().await {
        Ok(()) | Err(queue::QueueError::Unsupported { .. }) => {} // Kafka keeps its topics
        Err(e) => panic!("delete: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    key_held_across_a_crash("redis://127.0.0.1:6379", Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    key_held_across_a_crash("kafka://127.0.0.1:9092", Duration::from_secs(8)).await;
}
