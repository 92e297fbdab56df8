//! Unique jobs across processes: four copies of this test binary, started as child
//! processes, each send the same unique key eight times at once through Redis (queue and
//! store); exactly one job is sent and every answer names it.

mod common;

use std::sync::Arc;

use queue_core::{Backend, Enqueued, JobStatuses, Message, Unique, UniqueScope};
use queue_redis::RedisStore;

const URL: &str = "redis://127.0.0.1:6379";
const CHILD: &str = "QUEUE_UNIQUE_CHILD_QUEUE";
const TEST: &str = "one_job_from_many_processes";

async fn backend() -> Backend {
    let driver = common::connect(URL).await;
    let store = Arc::new(RedisStore::new(&driver));
    Backend::new(driver).with_status(JobStatuses::new(store))
}

/// In a child: eight sends at once; prints one `RESULT new|dup <id>` line each.
async fn child(queue: String) {
    let q = backend().await.queue(queue);
    let sends: Vec<_> = (0..8)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move {
                let u = Unique::new("nightly-report", UniqueScope::UntilFinished).unwrap();
                q.producer()
                    .send_unique_batch(vec![(Message::new(format!("try {i}")), u)])
                    .await
                    .unwrap()
                    .remove(0)
            })
        })
        .collect();
    for s in sends {
        match s.await.unwrap() {
            Enqueued::New(id) => println!("RESULT new {id}"),
            Enqueued::Duplicate(id) => println!("RESULT dup {id}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_from_many_processes() {
    if let Ok(q) = std::env::var(CHILD) {
        return child(q).await;
    }
    let name = queue_core::testkit::unique("unique");
    let q = backend().await.queue(name.clone());
    q.create().await.unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            tokio::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
                .env(CHILD, &name)
                .output()
        })
        .collect();
    let mut results = Vec::new();
    for c in children {
        let out = c.await.expect("child runs");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // libtest may print "test … … " before the first line on the same line.
            if let Some(r) = line.find("RESULT ").map(|at| &line[at + 7..]) {
                let (kind, id) = r.split_once(' ').unwrap();
                results.push((kind.to_string(), id.to_string()));
            }
        }
    }
    assert_eq!(results.len(), 32, "{results:?}");
    let new: Vec<_> = results.iter().filter(|(k, _)| k == "new").collect();
    assert_eq!(
        new.len(),
        1,
        "one send of 32 from 4 processes wins: {results:?}"
    );
    assert!(
        results.iter().all(|(_, id)| *id == new[0].1),
        "every answer names it"
    );
    assert_eq!(q.stats().await.unwrap().ready, 1, "one job in the queue");
    q.delete().await.ok();
}
