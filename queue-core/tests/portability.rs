//! An application states what it needs and is refused at start, and the in-memory backend
//! wearing a profile (`memory://?like=…`) refuses what that backend refuses: the same
//! application code, tested on memory, meets production's refusals in its tests.

use std::time::Duration;

use queue_core::{
    Backoff, Job, JobContext, Message, Needs, Profile, QueueError, RetryPolicy, SendOptions,
};

#[derive(serde::Serialize, serde::Deserialize)]
struct Ping;
impl Job for Ping {
    const NAME: &'static str = "ping";
}

fn hourly() -> RetryPolicy {
    RetryPolicy::new(
        10,
        Backoff::exponential(Duration::from_secs(60), Duration::from_secs(3600)),
    )
}

/// A job type with its own (hourly) retry policy.
#[derive(serde::Serialize, serde::Deserialize)]
struct Report;
impl Job for Report {
    const NAME: &'static str = "report";
    fn retry_policy() -> Option<RetryPolicy> {
        Some(hourly())
    }
}

async fn on(like: &str) -> queue_core::Queue {
    let b = queue_core::connect(&format!("memory://?like={like}"))
        .await
        .unwrap_or_else(|e| panic!("like={like}: {e}"));
    let q = b.queue("jobs");
    q.create().await.expect("create");
    q
}

fn unsupported<T: std::fmt::Debug>(r: queue_core::Result<T>, what: &str) {
    assert!(
        matches!(r, Err(QueueError::Unsupported { .. })),
        "{what}: want Unsupported, got {r:?}"
    );
}

#[tokio::test]
async fn each_profile_refuses_its_backends_refusals_at_send() {
    let q = on("redis").await;
    q.send(
        Message::new("x")
            .priority(5)
            .ordering_key("k")
            .dedup_id("d"),
    )
    .await
    .expect("redis has priorities, per-key order and dedup ids");
    let big = Message::new(vec![0u8; 1024 * 1024 + 1]);
    assert!(matches!(
        q.send(big).await,
        Err(QueueError::Oversize { .. })
    ));

    let q = on("sqs").await;
    unsupported(
        q.send(Message::new("x").dedup_id("d")).await,
        "dedup on sqs",
    );
    unsupported(
        q.send(Message::new("x").ordering_key("k")).await,
        "key on sqs",
    );
    let big = Message::new(vec![0u8; 1024 * 1024]);
    assert!(matches!(
        q.send(big).await,
        Err(QueueError::Oversize { .. })
    ));
    unsupported(q.peek(1).await, "peek at a main queue on sqs");
    q.dead_letter_queue()
        .peek(1)
        .await
        .expect("sqs peeks at DLQs");

    let q = on("sqs-fifo").await;
    unsupported(
        q.send(Message::new("x").delay(Duration::from_secs(1)))
            .await,
        "delay on fifo",
    );
    q.send(Message::new("x").ordering_key("k"))
        .await
        .expect("fifo keys");

    let q = on("kafka").await;
    let twenty_minutes = Duration::from_secs(20 * 60);
    unsupported(
        q.send(Message::new("x").delay(twenty_minutes)).await,
        "20 min on kafka",
    );
    unsupported(
        q.send(Message::new("x").dedup_id("d")).await,
        "dedup on kafka",
    );
    unsupported(q.purge().await, "purge on kafka");
    unsupported(q.peek(1).await, "peek on kafka");
    q.send(Message::new("x").ordering_key("k"))
        .await
        .expect("kafka keys");

    let q = on("postgres").await;
    q.send(
        Message::new("x")
            .priority(5)
            .ordering_key("k")
            .dedup_id("d"),
    )
    .await
    .expect("postgres has all three");
}

#[tokio::test]
async fn workers_are_refused_what_the_backend_cannot_hold() {
    let handler = |_: Ping, _: JobContext| async { Ok(()) };
    // The default retry policy starts on every backend (its 15-minute cap is Kafka's).
    for like in ["memory", "redis", "sqs", "sqs-fifo", "kafka", "postgres"] {
        on(like)
            .await
            .worker()
            .handle(handler)
            .start()
            .unwrap_or_else(|e| panic!("like={like}: the default worker refused: {e}"))
            .shutdown()
            .await;
    }
    // SQS: leases in whole seconds, and its own dead-lettering after 25 receives.
    let q = on("sqs").await;
    let r = q
        .worker()
        .lease(Duration::from_millis(500))
        .handle(handler)
        .start();
    assert!(
        matches!(r, Err(QueueError::InvalidOption(ref m)) if m.contains("lease")),
        "{r:?}"
    );
    let r = q
        .worker()
        .retry(RetryPolicy::new(26, Backoff::Fixed(Duration::from_secs(1))))
        .handle(handler)
        .start();
    assert!(
        matches!(r, Err(QueueError::InvalidOption(ref m)) if m.contains("25 receives")),
        "{r:?}"
    );

    // Kafka holds a retried message back 15 minutes at most: an hour's backoff is refused,
    // for the worker's policy and a job's own, unless the application accepts the cut.
    let q = on("kafka").await;
    let hourly = hourly();
    let r = q.worker().retry(hourly).handle(handler).start();
    match r {
        Err(QueueError::InvalidOption(m)) => {
            assert!(
                m.contains("3600s") && m.contains("900s") && m.contains("clamp_retry_delays"),
                "{m}"
            )
        }
        other => panic!("want the backoff refused, got {other:?}"),
    }
    let r = q
        .worker()
        .handle(|_: Report, _: JobContext| async { Ok(()) })
        .start();
    assert!(
        matches!(r, Err(QueueError::InvalidOption(ref m)) if m.contains("job report")),
        "{r:?}"
    );
    let w = q
        .worker()
        .retry(hourly)
        .clamp_retry_delays()
        .handle(handler)
        .start()
        .expect("the cut accepted by name");
    w.shutdown().await;
    // The same policy fits on memory itself (a year).
    let q = on("memory").await;
    q.worker()
        .retry(hourly)
        .handle(handler)
        .start()
        .expect("start")
        .shutdown()
        .await;
}

#[tokio::test]
async fn require_names_every_missing_need_on_the_worn_profile() {
    let needs = Needs::new()
        .priority()
        .ordering_per_key()
        .dedup()
        .max_delay(Duration::from_secs(2 * 3600));
    for (like, missing) in [
        ("memory", 0),
        ("postgres", 0),
        ("redis", 0),
        ("sqs", 3),
        ("sqs-fifo", 2),
        ("kafka", 3),
    ] {
        let b = queue_core::connect(&format!("memory://?like={like}"))
            .await
            .unwrap();
        match b.require(&needs) {
            Ok(()) => assert_eq!(missing, 0, "like={like}: want {missing} missing"),
            Err(QueueError::Unmet { backend, unmet }) => {
                assert_eq!(unmet.len(), missing, "like={like}: {unmet:?}");
                assert!(backend.contains(like), "{backend}");
            }
            Err(e) => panic!("like={like}: {e}"),
        }
    }
    let e = queue_core::connect("memory://?like=kafka")
        .await
        .unwrap()
        .require(&needs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory (like kafka) cannot give"), "{e}");
    assert!(
        e.contains("priorities (on memory, redis, postgres; on sqs with Backend::with_priorities)"),
        "{e}"
    );
}

#[tokio::test]
async fn bad_profiles_and_options_are_typed() {
    for url in [
        "memory://?like=rabbitmq",
        "memory://?like=",
        "memory://?like=redis&like=kafka",
        "memory://?like=redis&max_message_size=0",
    ] {
        let r = queue_core::connect(url).await;
        assert!(
            matches!(r, Err(QueueError::InvalidUrl { .. })),
            "{url}: {:?}",
            r.err()
        );
    }
    let e = queue_core::connect("memory://?like=rabbitmq")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("sqs-fifo"), "the error lists the profiles: {e}");
    // URL options override the profile's sizes.
    let b = queue_core::connect("memory://?like=sqs&max_message_size=2KiB")
        .await
        .unwrap();
    assert_eq!(b.capabilities().max_message_size, 2048);
    assert_eq!(
        b.capabilities().max_batch,
        Profile::Sqs.capabilities().max_batch
    );
}

#[tokio::test]
async fn sqs_fifo_give_backs_cost_an_attempt_like_the_real_one() {
    use queue_core::driver::{Driver, ReceiveOptions};
    for (profile, want) in [(Profile::SqsFifo, 2), (Profile::Sqs, 1)] {
        let q = queue_core::MemoryQueue::with_config(queue_core::MemoryConfig::like(profile));
        q.create_queue("q").await.unwrap();
        let m = queue_core::job_message(&Ping, SendOptions::new()).unwrap();
        q.send("q", vec![m]).await.unwrap();
        let opts = ReceiveOptions::new(1, Duration::from_secs(1), Duration::from_secs(30));
        let d = q.receive("q", opts.clone()).await.unwrap().remove(0);
        q.give_back(&d, Duration::ZERO).await.unwrap();
        let again = q.receive("q", opts).await.unwrap().remove(0);
        assert_eq!(again.attempt, want, "{profile}");
    }
}

/// Dedup ids on a backend without them (Kafka, SQS standard): refused without a shared
/// store, emulated through it (see `queue_core::dedup`), with `require` agreeing.
#[tokio::test]
async fn dedup_ids_are_emulated_through_a_shared_store() {
    let plain = queue_core::connect("memory://?like=kafka").await.unwrap();
    assert!(matches!(
        plain.require(&Needs::new().dedup()),
        Err(QueueError::Unmet { .. })
    ));
    let with_store = plain
        .clone()
        .with_store(std::sync::Arc::new(queue_core::MemoryStore::new()));
    with_store
        .require(&Needs::new().dedup())
        .expect("emulated with a store");
    let q = with_store.queue("orders");
    q.create().await.unwrap();
    let first = q.send(Message::new("a").dedup_id("order-1")).await.unwrap();
    let again = q.send(Message::new("b").dedup_id("order-1")).await.unwrap();
    assert_eq!(first, again, "the duplicate answers with the original's id");
    assert_eq!(q.stats().await.unwrap().ready, 1, "and is not sent");
    // Without the store the same queue refuses the id, as before.
    let r = plain
        .queue("orders")
        .send(Message::new("c").dedup_id("order-2"))
        .await;
    assert!(matches!(r, Err(QueueError::Unsupported { .. })), "{r:?}");
    // A failed send gives its claim up: the retry is sent.
    q.delete().await.ok(); // kafka's profile refuses deletes: the queue stays
    let gone = with_store.queue("never-created");
    let r = gone.send(Message::new("d").dedup_id("order-3")).await;
    assert!(matches!(r, Err(QueueError::UnknownQueue(_))), "{r:?}");
    gone.create().await.unwrap();
    gone.send(Message::new("d").dedup_id("order-3"))
        .await
        .unwrap();
    assert_eq!(
        gone.stats().await.unwrap().ready,
        1,
        "the retry after a failure is sent"
    );
}
