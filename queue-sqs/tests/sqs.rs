//! SQS behaviour beyond the conformance suite, against moto.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering as AO;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use queue_core::testkit::{eventually, unique};
use queue_core::{Backend, Delivery, Driver, Message, QueueError, ReceiveOptions};

fn opts(max: usize, wait: u64, lease: u64) -> ReceiveOptions {
    ReceiveOptions::new(max, Duration::from_secs(wait), Duration::from_secs(lease))
}

/// SQS's own redrive policy moves a message that keeps coming back unsettled to the DLQ
/// (moto moves it on the receive after the one that reached maxReceiveCount).
#[tokio::test]
async fn native_redrive_policy_moves_poison_message() {
    let q = common::connect(common::STANDARD).await;
    let name = unique("redrive");
    q.create_queue_with(&name, 2).await.unwrap();
    let id = Backend::new(common::connect(common::STANDARD).await)
        .queue(name.clone())
        .producer()
        .send(Message::new("poison"))
        .await
        .unwrap();
    let dlq = q.dead_letter_queue(&name);
    let mut receives = 0;
    let mut dead = Vec::new();
    while dead.is_empty() && receives < 6 {
        // Lease 1 s and never settle: a worker that crashes on this message every time.
        let got = q.receive(&name, opts(1, 2, 1)).await.unwrap();
        receives += got.len();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        dead = q.receive(&dlq, opts(1, 0, 30)).await.unwrap();
    }
    assert_eq!(dead.len(), 1, "the redrive policy never moved the message");
    assert_eq!(dead[0].id, id, "the dead letter keeps the framework id");
    assert_eq!(receives, 2, "delivered maxReceiveCount times before moving");
}

/// 1,000 messages through Producer and Worker cost at most 0.35 SQS requests each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_1000_within_request_budget() {
    let q = Arc::new(common::connect(common::STANDARD).await);
    let name = unique("budget");
    q.create_queue(&name).await.unwrap();
    q.stats(&name).await.unwrap(); // resolve and cache the queue URL before counting
    let before = q.requests().total();
    let n = 1000;
    let msgs: Vec<Message> = (0..n).map(|i| Message::new(format!("job {i}"))).collect();
    let backend = Backend::from(q.clone());
    backend
        .queue(name.clone())
        .producer()
        .send_batch(msgs)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let s2 = seen.clone();
    let w = backend
        .queue(name.clone())
        .worker()
        .concurrency(20)
        .poll_wait(Duration::from_secs(1))
        .handle_raw(move |d: Delivery| {
            s2.lock().unwrap().insert(d.id.into_string());
            async { Ok(()) }
        })
        .start()
        .unwrap();
    eventually(Duration::from_secs(120), "1,000 processed", || {
        w.report().succeeded == n as u64
    })
    .await;
    w.shutdown().await;
    let r = q.requests();
    let used = r.total() - before;
    let per = used as f64 / n as f64;
    eprintln!(
        "sqs requests for {n} messages: {used} ({per:.3}/message): send {}, receive {}, delete {}, change_visibility {}",
        r.send.load(AO::Relaxed),
        r.receive.load(AO::Relaxed),
        r.delete.load(AO::Relaxed),
        r.change_visibility.load(AO::Relaxed)
    );
    assert_eq!(seen.lock().unwrap().len(), n);
    assert!(per <= 0.35, "{per:.3} requests per message, budget 0.35");
}

/// Delays beyond SQS's 15 minutes hop: a message received before its due time is sent on
/// and not delivered early. (A 3-second due time stands in for a long delay here.)
#[tokio::test]
async fn early_messages_are_redelayed_not_delivered() {
    let q = common::connect(common::STANDARD).await;
    let name = unique("redelay");
    q.create_queue(&name).await.unwrap();
    let url = q
        .client()
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .unwrap();
    let due = queue_core::unix_millis(std::time::SystemTime::now() + Duration::from_secs(3));
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    q.client()
        .send_message()
        .queue_url(url.queue_url().unwrap())
        .message_body("later")
        .message_attributes("x-queue-id", attr("long-delay"))
        .message_attributes("x-queue-not-before", attr(&due.to_string()))
        .send()
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let early = q.receive(&name, opts(1, 1, 30)).await.unwrap();
    assert!(early.is_empty(), "delivered before its due time");
    let mut got = Vec::new();
    while got.is_empty() && t0.elapsed() < Duration::from_secs(20) {
        got = q.receive(&name, opts(1, 2, 30)).await.unwrap();
    }
    assert_eq!(got.len(), 1);
    assert!(
        t0.elapsed() >= Duration::from_millis(2500),
        "delivered after {:?}",
        t0.elapsed()
    );
    assert_eq!(got[0].id.as_str(), "long-delay");
    assert_eq!(
        got[0].attempt, 1,
        "a re-delayed message starts its attempts afresh"
    );
}

/// The queue's own MaximumMessageSize is read and enforced before any send request.
#[tokio::test]
async fn queue_size_limit_is_read_not_assumed() {
    let q = common::connect(common::STANDARD).await;
    let name = unique("small");
    q.client()
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .unwrap();
    let sends = q.requests().send.load(AO::Relaxed);
    let e = q
        .send(&name, vec![Message::new(vec![b'x'; 2000])])
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::Oversize { max: 1024, .. }), "{e}");
    assert_eq!(
        q.requests().send.load(AO::Relaxed),
        sends,
        "no request for a refused message"
    );
    q.send(&name, vec![Message::new(vec![b'x'; 500])])
        .await
        .expect("a small one fits");
}

/// Empty and non-text payloads survive the trip (SQS bodies must be non-empty text).
#[tokio::test]
async fn empty_and_binary_payloads_round_trip() {
    let q = common::connect(common::STANDARD).await;
    let name = unique("payloads");
    q.create_queue(&name).await.unwrap();
    let payloads = [
        vec![],
        vec![0u8, 1, 2, 255],
        "plain text".as_bytes().to_vec(),
        "-".as_bytes().to_vec(),
    ];
    q.send(
        &name,
        payloads.iter().map(|p| Message::new(p.clone())).collect(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < payloads.len() {
        let batch = q.receive(&name, opts(10, 2, 30)).await.unwrap();
        assert!(!batch.is_empty(), "messages missing");
        got.extend(batch.into_iter().map(|d| d.payload));
    }
    got.sort();
    let mut want = payloads.to_vec();
    want.sort();
    assert_eq!(got, want);
}

/// A message from another writer whose framework attribute does not decode is delivered
/// marked malformed: the worker dead-letters it and the rest of the receive runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_message_is_dead_lettered_and_the_batch_runs() {
    let q = Arc::new(common::connect(common::STANDARD).await);
    let name = unique("foreign");
    q.create_queue(&name).await.unwrap();
    let url = q
        .client()
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    q.client()
        .send_message()
        .queue_url(&url)
        .message_body("from another writer")
        .message_attributes(
            "x-queue-headers",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("{not json")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let backend = Backend::from(q.clone());
    let queue = backend.queue(name.clone());
    queue.send(Message::new("good")).await.unwrap();
    let ok = Arc::new(Mutex::new(Vec::new()));
    let ok2 = ok.clone();
    let w = queue
        .worker()
        .poll_wait(Duration::from_secs(1))
        .handle_raw(move |d: Delivery| {
            ok2.lock().unwrap().push(d.payload);
            async { Ok(()) }
        })
        .start()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "one success and one dead letter",
        || {
            let r = w.report();
            r.succeeded == 1 && r.dead_lettered == 1
        },
    )
    .await;
    let r = w.shutdown().await;
    assert_eq!(r.backend_errors, 0, "the receive must not fail: {r:?}");
    assert_eq!(ok.lock().unwrap()[0], &b"good"[..]);
    let dead = q
        .receive(&q.dead_letter_queue(&name), opts(10, 2, 30))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0]
            .headers
            .get(queue_core::headers::DLQ_REASON)
            .map(String::as_str),
        Some("malformed")
    );
    assert_eq!(&dead[0].payload[..], b"from another writer");
}

/// On a standard queue a give-back (the handler never ran) sends a fresh copy carrying the
/// attempts so far: with `maxReceiveCount` 2, a message given back four times is still in
/// the queue at attempt 1, never moved to the DLQ by SQS, with its headers and first
/// enqueue time intact; a real failure afterwards counts from there.
#[tokio::test]
async fn give_backs_do_not_reach_the_redrive_limit() {
    let q = common::connect(common::STANDARD).await;
    let name = unique("giveback");
    q.create_queue_with(&name, 2).await.unwrap();
    let id = Backend::new(common::connect(common::STANDARD).await)
        .queue(name.clone())
        .producer()
        .send(Message::new("x").header("trace", "t1"))
        .await
        .unwrap();
    let mut enqueued = None;
    for round in 1..=4 {
        let got = q.receive(&name, opts(1, 5, 30)).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}: want the given-back message");
        let d = &got[0];
        assert_eq!(d.id, id, "round {round}: the copy keeps the id");
        assert_eq!(d.attempt, 1, "round {round}: a give-back costs no attempt");
        assert_eq!(d.headers.get("trace").map(String::as_str), Some("t1"));
        assert!(
            !d.headers.contains_key(queue_core::headers::ATTEMPTS_BEFORE),
            "the driver's own header is not shown to handlers"
        );
        let first = *enqueued.get_or_insert(queue_core::unix_millis(d.first_enqueued_at));
        assert_eq!(queue_core::unix_millis(d.first_enqueued_at), first);
        q.give_back(d, Duration::ZERO).await.unwrap();
    }
    let got = q.receive(&name, opts(1, 5, 30)).await.unwrap();
    q.nack(&name, &got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = q.receive(&name, opts(1, 5, 30)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].attempt, 2,
        "a nack after the give-backs: attempt 2"
    );
    let dead = q
        .receive(&q.dead_letter_queue(&name), opts(1, 0, 30))
        .await
        .unwrap();
    assert!(
        dead.is_empty(),
        "give-backs pushed the message into the DLQ"
    );
    q.delete_queue(&name).await.unwrap();
}

/// A retry policy allowing more attempts than the queue's `maxReceiveCount` is refused:
/// SQS would move the message to the DLQ (without a reason) before the worker's last
/// attempt.
#[tokio::test]
async fn worker_refuses_more_attempts_than_the_redrive_policy() {
    let backend = Backend::new(common::connect(common::STANDARD).await);
    let queue = backend.queue(unique("attempts"));
    let mut policy = queue_core::RetryPolicy::default();
    policy.max_attempts = 26;
    let err = queue
        .worker()
        .handle_raw(|_d: Delivery| async { Ok(()) })
        .retry(policy)
        .start()
        .expect_err("26 attempts against maxReceiveCount 25");
    assert!(
        matches!(&err, QueueError::InvalidOption(m) if m.contains("maxReceiveCount") && m.contains("26")),
        "{err}"
    );
    policy.max_attempts = 25;
    let worker = queue
        .worker()
        .handle_raw(|_d: Delivery| async { Ok(()) })
        .retry(policy)
        .poll_wait(Duration::from_secs(1))
        .start()
        .expect("25 attempts (the default) fit maxReceiveCount 25");
    worker.abort();
}
