//! The relay (queue_core::relay) between two in-memory queues, under tokio's paused
//! clock: a redriven message (carrying the framework's redrive headers) is forwarded,
//! not dead-lettered; the job's own max-attempts header does not cut the relay's
//! retries short while the target is down, and the lag is reported meanwhile; the
//! job's own headers travel, the source's bookkeeping does not.

use std::time::Duration;

use queue_core::relay::Relay;
use queue_core::{headers, Driver, JobError, Message, Queue, ReceiveOptions};

async fn queues(name: &str) -> (Queue, Queue) {
    let b = queue_core::connect(&format!("memory://{name}"))
        .await
        .unwrap();
    let (s, t) = (b.queue("outbox"), b.queue("target"));
    s.create().await.unwrap();
    (s, t)
}

/// What the target holds, with their headers.
async fn take(broker: &str, t: &Queue) -> Vec<(String, queue_core::Headers)> {
    let driver = queue_core::MemoryQueue::named(broker, queue_core::MemoryConfig::default());
    let got = driver
        .receive(
            t.name(),
            ReceiveOptions::new(100, Duration::from_millis(10), Duration::from_secs(60)),
        )
        .await
        .unwrap();
    got.into_iter()
        .map(|d| (String::from_utf8_lossy(&d.payload).to_string(), d.headers))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_redriven_message_is_forwarded() {
    const BROKER: &str = "relay-redrive";
    let (s, t) = queues(BROKER).await;
    t.create().await.unwrap();
    s.send(Message::new("once dead")).await.unwrap();
    // Dead-letter it, then redrive it: it now carries the redrive headers.
    let w = s
        .worker()
        .retry(queue_core::RetryPolicy::none())
        .handle_raw(|_| async { Err(JobError::permanent("not yet")) })
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.shutdown().await.dead_lettered, 1);
    assert_eq!(s.redrive(10).await.unwrap(), 1);
    let relay = Relay::new(s.clone(), t.clone()).start().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = relay.shutdown().await;
    assert_eq!((r.forwarded, r.dead_lettered), (1, 0), "{r:?}");
    let got = take(BROKER, &t).await;
    assert_eq!(got.len(), 1);
    assert!(
        !got[0].1.contains_key(headers::REDRIVEN_AT),
        "the source's bookkeeping travelled: {:?}",
        got[0].1
    );
}

#[tokio::test(start_paused = true)]
async fn a_down_target_is_retried_past_the_jobs_own_attempts_and_lag_grows() {
    const BROKER: &str = "relay-down";
    let (s, t) = queues(BROKER).await;
    // The job allows its final consumer one attempt; the target does not exist yet.
    let m = Message::new("to forward")
        .header(headers::MAX_ATTEMPTS, "1")
        .header("tenant", "acme");
    s.send(m).await.unwrap();
    let relay = Relay::new(s.clone(), t.clone())
        .lag_every(Duration::from_secs(1))
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let early = relay.report();
    assert!(early.retried >= 2, "{early:?}");
    assert_eq!(early.dead_lettered, 0, "{early:?}");
    // The lag is the failing batch's age (wall clock, which this paused test does not
    // advance): read while nothing was forwarded, not only after a success.
    assert!(
        early.lag.is_some(),
        "no lag while the target is down: {early:?}"
    );
    // The target appears: the message goes through on a later retry.
    t.create().await.unwrap();
    tokio::time::sleep(Duration::from_secs(90)).await;
    let r = relay.shutdown().await;
    assert_eq!((r.forwarded, r.dead_lettered), (1, 0), "{r:?}");
    let got = take(BROKER, &t).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(
        got[0].1.get(headers::MAX_ATTEMPTS).map(String::as_str),
        Some("1")
    );
}
