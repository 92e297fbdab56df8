//! The portable application (`examples/src/portable.rs`) on every backend the test servers
//! run: where the backend has what it needs, the same observable behaviour; where it does
//! not, a refusal at start naming exactly what is missing, and nothing sent.

use std::time::Duration;

use examples::portable::{self, Outcome, Run};
use queue::{Need, QueueError};

fn position(o: &Outcome, name: &str, attempt: u32) -> usize {
    o.runs
        .iter()
        .position(|r| {
            *r == Run {
                name: name.into(),
                attempt,
            }
        })
        .unwrap_or_else(|| panic!("{name} (attempt {attempt}) never ran: {:?}", o.runs))
}

/// What must hold wherever the application runs.
fn check(url: &str, o: &Outcome) {
    let names: Vec<&str> = o.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(o.runs.len(), 9, "{url}: want 9 runs, got {names:?}");
    // Priorities: the urgent step first, then the low ones, before anything unprioritized.
    assert_eq!(names[..3], ["urgent", "low-1", "low-2"], "{url}: {names:?}");
    // Per-key order across a retry: a1, its retry, then a2; b1 does not wait for a1.
    let (a1, a1_again, a2) = (
        position(o, "a1", 1),
        position(o, "a1", 2),
        position(o, "a2", 1),
    );
    assert!(a1 < a1_again && a1_again < a2, "{url}: {names:?}");
    assert!(
        position(o, "b1", 1) < a1_again,
        "{url}: b1 waited for a's retry: {names:?}"
    );
    // The dedup id: sent twice, run once, both sends answered with one id.
    assert_eq!(
        names.iter().filter(|n| **n == "invoice").count(),
        1,
        "{url}"
    );
    assert_eq!(o.dedup_ids.0, o.dedup_ids.1, "{url}");
    // The delay: not before its 2 s.
    assert!(
        o.delayed_by >= Duration::from_millis(1900),
        "{url}: {:?}",
        o.delayed_by
    );
}

/// The refusal names exactly these needs.
fn refused(url: &str, r: queue::Result<Outcome>, want: &[Need]) {
    match r {
        Err(QueueError::Unmet { unmet, .. }) => {
            let got: Vec<Need> = unmet.iter().map(|u| u.need).collect();
            assert_eq!(got, want, "{url}");
        }
        Err(e) => panic!("{url}: want a refusal at start, got {e}"),
        Ok(o) => panic!("{url}: want a refusal at start, it ran: {:?}", o.runs),
    }
}

async fn runs_on(url: &str) {
    let o = portable::run(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}. Start the servers with scripts/services.sh"));
    check(url, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    runs_on("memory://portable-test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_profiles_say_what_production_would() {
    runs_on("memory://portable-redis?like=redis").await;
    runs_on("memory://portable-pg?like=postgres").await;
    let delay = Need::Delay(Duration::from_secs(60));
    refused(
        "like=sqs",
        portable::run("memory://portable-sqs?like=sqs").await,
        &[Need::Priority, Need::OrderingPerKey],
    );
    refused(
        "like=sqs-fifo",
        portable::run("memory://portable-fifo?like=sqs-fifo").await,
        &[Need::Priority, delay],
    );
    refused(
        "like=kafka",
        portable::run("memory://portable-kafka?like=kafka").await,
        &[Need::Priority],
    );
}

#[cfg(all(
    feature = "redis",
    feature = "sqs",
    feature = "kafka",
    feature = "postgres"
))]
mod servers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_standalone_and_cluster() {
        runs_on("redis://127.0.0.1:6379").await;
        runs_on("redis://127.0.0.1:7001?cluster=true&seed=127.0.0.1:7002").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        runs_on("postgres://queue:queue@127.0.0.1:5432/queue_test?schema=portable").await;
    }

    const SQS: &str = "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqs_standard_and_fifo_are_refused_at_start() {
        refused(
            SQS,
            portable::run(SQS).await,
            &[Need::Priority, Need::OrderingPerKey],
        );
        let fifo = format!("{SQS}&fifo=true");
        refused(
            &fifo,
            portable::run(&fifo).await,
            &[Need::Priority, Need::Delay(Duration::from_secs(60))],
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_is_refused_at_start() {
        let url = "kafka://127.0.0.1:9092";
        refused(url, portable::run(url).await, &[Need::Priority]);
    }
}
