//! Priorities emulated as tier topics ([`queue_core::tiers`]) over Kafka (tansu): the
//! kit's cases that go through the wrapper's paths on a session-lease backend (one
//! consumer per tier, each joining its group; the long poll over every tier; retries
//! held in their tier; dead letters and stats over every tier).

mod common;

fn harness() -> queue_core::testkit::Harness {
    common::harness().priority_tiers(4)
}

// `priority_honoured` is not among them: it receives right after sending, before the
// tiers' consumers have joined their groups, when only the first tier to join answers
// (a limit stated in queue_core::tiers); the test below checks priorities once they have.
queue_core::conformance_cases!(harness;
    round_trip receive_respects_max shutdown_cuts_long_poll nack_redelivers_after_delay
    dlq_after_max_attempts stats_agree);

/// Once every tier's consumer is in its group, the higher tiers are served first, no
/// priority last: the kit's `priority_honoured`, after a first receive
/// that waits on every tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn priority_holds_once_the_tiers_consumers_joined() {
    use std::sync::Arc;
    use std::time::Duration;

    use queue_core::driver::ReceiveOptions;
    use queue_core::tiers::PriorityTiers;
    use queue_core::{Driver, Message};

    let inner = Arc::new(common::connect(common::URL).await) as Arc<dyn Driver>;
    let t = PriorityTiers::new(inner, 4).unwrap();
    let q = queue_core::testkit::unique("tiers-kafka");
    t.create_queue(&q).await.unwrap();
    let lease = Duration::from_secs(60);
    // Joins every tier's consumer group (the long poll is one per tier).
    let first = t
        .receive(&q, ReceiveOptions::new(1, Duration::from_secs(8), lease))
        .await
        .unwrap();
    assert!(first.is_empty());
    for i in 0..3 {
        t.send(&q, vec![Message::new(format!("low-{i}")).priority(1)])
            .await
            .unwrap();
    }
    for m in [
        Message::new("none"),
        Message::new("high").priority(3),
        Message::new("mid").priority(2),
    ] {
        t.send(&q, vec![m]).await.unwrap();
    }
    // Everything is sent before the first receive, as in the kit's case.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut order = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while order.len() < 6 && tokio::time::Instant::now() < deadline {
        for d in t
            .receive(&q, ReceiveOptions::new(1, Duration::from_secs(5), lease))
            .await
            .unwrap()
        {
            order.push(String::from_utf8_lossy(&d.payload).into_owned());
            t.ack(&q, std::slice::from_ref(&d.receipt)).await.unwrap();
        }
    }
    // Unkeyed records spread over partitions, so within a tier there is no order; and a
    // receive reads each tier without waiting before it waits on them all, so a record
    // librdkafka has not fetched yet can be passed by the next tier's (stated in
    // queue_core::tiers). What holds: the higher tiers before the low one, no priority last.
    let rank = |s: &str| match s {
        "high" | "mid" => 2,
        "none" => 0,
        _ => 1,
    };
    let ranks: Vec<u8> = order.iter().map(|s| rank(s)).collect();
    assert_eq!(ranks, [2, 2, 1, 1, 1, 0], "{order:?}");
    t.stop_receiving(&q).await.unwrap();
}
