//! Crash-loop protection across real process deaths, on Redis, SQS, Kafka and PostgreSQL:
//! a worker process whose handler aborts on a poison job is restarted until the poison is
//! dead-lettered `crashed` (after `crash_limit`, 3 by default, runs that never ended),
//! while every other job is processed. Job status lives in Redis for every backend (the
//! store need not be the queue's server). Without the protection the poison kills every
//! worker for ever on Kafka, and for 25 attempts elsewhere: the test fails at its spawn
//! budget.

use std::time::{Duration, Instant};

use queue::testkit::unique;
use queue::{DeadLetterKind, JobState, Message, MessageId};

mod common;
use common::Worker;

async fn crash_loop_on(url: &str) {
    let backend = common::backend_with_status(url).await;
    let name = unique("crashloop");
    let q = backend.queue(name.clone());
    q.create().await.unwrap();
    let mut good: Vec<MessageId> = Vec::new();
    for i in 0..4 {
        good.push(
            q.producer()
                .send(Message::new(format!("job {i}")))
                .await
                .unwrap(),
        );
    }
    let poison = q.producer().send(Message::new("poison")).await.unwrap();
    for i in 4..8 {
        good.push(
            q.producer()
                .send(Message::new(format!("job {i}")))
                .await
                .unwrap(),
        );
    }

    let mut aborted = 0;
    let mut settled = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    'spawns: for _ in 0..6 {
        let mut w = Worker::spawn(url, &name);
        loop {
            assert!(
                Instant::now() < deadline,
                "no end after 5 minutes, {aborted} aborts"
            );
            while w.lines.try_recv().is_ok() {}
            if let Some(status) = w.child.try_wait().unwrap() {
                assert!(!status.success(), "the worker exited on its own: {status}");
                aborted += 1;
                continue 'spawns;
            }
            let dead = backend.job_status(&poison).await.unwrap();
            if dead.as_ref().is_some_and(|s| s.state == JobState::Dead) {
                let mut all = true;
                for id in &good {
                    let s = backend.job_status(id).await.unwrap();
                    all &= s.is_some_and(|s| s.state == JobState::Succeeded);
                }
                // The record says `dead` as the worker sets the delivery aside, before
                // the move to the dead-letter queue: keep this worker running until the
                // move shows (where the backend lists dead letters), boundedly.
                if all && backend.capabilities().can_peek(true) {
                    for _ in 0..300 {
                        if !q.dead_letters(10).await.unwrap().is_empty() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                if all {
                    settled = true;
                    break 'spawns;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        settled,
        "the poison was not set aside after {aborted} aborts"
    );
    assert_eq!(
        aborted, 3,
        "crash_limit 3: three runs die, the fourth delivery is dead-lettered"
    );
    let s = backend.job_status(&poison).await.unwrap().unwrap();
    assert_eq!(s.crashes, 3, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("never ended")),
        "{s:?}"
    );
    // The dead letter says why, where the backend can list dead letters (Kafka cannot peek).
    if backend.capabilities().can_peek(true) {
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].reason, Some(DeadLetterKind::Crashed), "{dead:?}");
    }
    match q.delete().await {
        Ok(()) | Err(queue::QueueError::Unsupported { .. }) => {} // Kafka keeps its topics
        Err(e) => panic!("delete: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    crash_loop_on("redis://127.0.0.1:6379").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs() {
    crash_loop_on("sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    crash_loop_on("kafka://127.0.0.1:9092").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    crash_loop_on("postgres://queue:queue@127.0.0.1:5432/queue_test").await;
}
