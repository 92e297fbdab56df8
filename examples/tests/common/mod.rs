//! Shared by the tests that kill worker processes: the `poison-worker` child.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// Where job status lives for every backend (the store need not be the queue's server).
pub const STATUS: &str = "redis://127.0.0.1:6379";

/// A `poison-worker` child process; killed (SIGKILL) when dropped.
pub struct Worker {
    pub child: Child,
    /// What it prints, line by line.
    pub lines: mpsc::Receiver<String>,
}

impl Worker {
    /// Starts one on `queue` of `url`, with job status in [`STATUS`].
    pub fn spawn(url: &str, queue: &str) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_poison-worker"))
            .args([url, STATUS, queue, "2000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start poison-worker");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker { child, lines }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `url`'s backend with job status in [`STATUS`], or a failure that says how to start the
/// servers.
pub async fn backend_with_status(url: &str) -> queue::Backend {
    let store = queue::connect_store(STATUS).await.unwrap_or_else(|e| {
        panic!("Redis at {STATUS} is not reachable ({e}); run scripts/services.sh")
    });
    queue::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url} is not reachable ({e}); run scripts/services.sh"))
        .with_status(queue::JobStatuses::new(store))
}
