//! At-least-once across a real crash: a worker *process* is killed with SIGKILL while it
//! holds jobs; every job still gets processed, the held ones as a later attempt.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::testkit::{eventually, unique};
use queue::{Delivery, Message};

const URL: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_loses_nothing() {
    let backend = queue::connect(URL).await.unwrap_or_else(|e| {
        panic!("Redis at {URL} is not reachable ({e}); run scripts/services.sh")
    });
    let name = unique("kill");
    let q = backend.queue(name.clone());
    q.create().await.unwrap();
    let ids: Vec<String> = q
        .producer()
        .send_batch((0..20).map(|i| Message::new(format!("job {i}"))).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.into_string())
        .collect();

    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-worker"))
        .args([name.as_str(), "1500"])
        .env("QUEUE_URL", URL)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start crash-worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut held = Vec::new();
    while held.len() < 4 {
        let line = lines.next().expect("crash-worker ended early").unwrap();
        if let Some(id) = line.strip_prefix("holding ") {
            held.push(id.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL: no ack, no nack, no goodbye
    child.wait().unwrap();

    let done = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let d2 = done.clone();
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(500))
        .handle_raw(move |d: Delivery| {
            d2.lock().unwrap().insert(d.id.into_string(), d.attempt);
            async { Ok(()) }
        })
        .start()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "every job processed after the kill",
        || done.lock().unwrap().len() == ids.len(),
    )
    .await;
    w.shutdown().await;
    let done = done.lock().unwrap();
    for id in &ids {
        assert!(done.contains_key(id), "job {id} lost");
    }
    for id in &held {
        assert!(
            done[id] >= 2,
            "job {id} was held by the killed worker, so attempt must be 2+"
        );
    }
}
