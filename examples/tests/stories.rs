//! The example stories, run as their `main`s run them, on the embedded backend and (with
//! the package's `redis`, `sqs` and `kafka` features, as `scripts/test.sh` builds it) on
//! each server that `scripts/services.sh` starts.

use std::time::Duration;

use examples::{batch_handler, flow, idempotent_payment, long_job};
use queue::JobState;

fn timing() -> long_job::Timing {
    // Longer than the lease, with a lease every backend can hold (SQS: whole seconds).
    long_job::Timing {
        lease: Duration::from_secs(2),
        steps: 6,
        step: Duration::from_millis(700),
    }
}

async fn long_job_story(url: &str) {
    let o = long_job::run(url, timing()).await.expect("long_job runs");
    assert_eq!(o.finished, JobState::Succeeded, "{o:?}");
    assert_eq!(
        (o.attempts, o.runs),
        (1, 1),
        "heartbeats keep a job longer than its lease from being redelivered: {o:?}"
    );
    assert!(
        o.progress_seen.len() >= 3,
        "progress seen while it ran: {o:?}"
    );
    assert!(o.progress_seen.windows(2).all(|w| w[0] < w[1]), "{o:?}");
    assert_eq!(o.progress_seen.last(), Some(&100));
    assert_eq!(o.cancelled, JobState::Cancelled, "{o:?}");
}

async fn batch_story(url: &str) {
    let o = batch_handler::run(url).await.expect("batch_handler runs");
    assert_eq!(o.dead, vec![7], "{o:?}");
    for (n, runs) in &o.runs {
        let want = match n {
            3 => 2, // failed once, retried alone
            7 => 3, // every attempt failed
            _ => 1, // never rerun because a neighbour in its batch failed
        };
        assert_eq!(*runs, want, "order {n}: {o:?}");
    }
    assert_eq!(o.runs.len(), 20);
}

async fn payment_story(url: &str) {
    let o = idempotent_payment::run(url)
        .await
        .expect("idempotent_payment runs");
    assert_eq!(o.sent, 20);
    assert_eq!(o.charges.len(), 10, "{o:?}");
    assert!(
        o.charges.values().all(|n| *n == 1),
        "each payment charged once: {o:?}"
    );
    assert_eq!(o.total, (0..10).map(|i| 1_000 + i * 100).sum::<u64>());
    assert_eq!(o.duplicates_skipped, 10);
}

/// The order pipeline and the thumbnail batch (see `examples/src/flow.rs`).
async fn flow_story(url: &str, thumbnails: u32) {
    use queue::flow::NodeState::{Failed, Succeeded};
    let o = flow::run(url, thumbnails).await.expect("flow runs");
    assert_eq!(o.orders[0].1, [Succeeded; 4], "{url}: {o:?}");
    assert_eq!(
        o.orders[1].1,
        [Failed, Succeeded, Failed, Failed],
        "{url}: {o:?}"
    );
    assert_eq!(o.shipped_with, ["INV-order-1"], "{url}");
    assert_eq!(o.report, (thumbnails - 1, 1), "{url}");
    assert_eq!(o.report_runs, 1, "{url}");
    println!(
        "{url}: {thumbnails} thumbnails to their report in {:?}",
        o.batch_time
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_on_memory() {
    flow_story("memory://flow-test", 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_job_on_memory() {
    long_job_story("memory://long-job-test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handler_on_memory() {
    batch_story("memory://batch-test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_payment_on_memory() {
    payment_story("memory://payment-test").await;
}

#[cfg(feature = "redis")]
mod redis {
    const URL: &str = "redis://127.0.0.1:6379";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flow_on_redis() {
        super::flow_story(URL, 100).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_job_on_redis() {
        super::long_job_story(URL).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_handler_on_redis() {
        super::batch_story(URL).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotent_payment_on_redis() {
        super::payment_story(URL).await;
    }
}

#[cfg(feature = "sqs")]
mod sqs {
    const URL: &str = "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flow_on_sqs() {
        super::flow_story(URL, 100).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_job_on_sqs() {
        super::long_job_story(URL).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_handler_on_sqs() {
        super::batch_story(URL).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotent_payment_on_sqs() {
        super::payment_story(URL).await;
    }
}

#[cfg(feature = "kafka")]
mod kafka {
    const URL: &str = "kafka://127.0.0.1:9092";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flow_on_kafka() {
        super::flow_story(URL, 100).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_job_on_kafka() {
        super::long_job_story(URL).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_handler_on_kafka() {
        super::batch_story(URL).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotent_payment_on_kafka() {
        super::payment_story(URL).await;
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    const URL: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flow_on_postgres() {
        super::flow_story(URL, 100).await;
    }
}
