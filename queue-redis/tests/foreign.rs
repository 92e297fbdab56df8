//! A message written by another client, with headers this driver cannot decode, does not
//! fail the receive: the worker dead-letters it as malformed and runs the rest.

mod common;

use std::time::Duration;

use queue_core::testkit::{eventually, unique};
use queue_core::{headers, Backend, Driver, Job, JobContext, ReceiveOptions};

#[derive(serde::Serialize, serde::Deserialize)]
struct Ping(u32);
impl Job for Ping {
    const NAME: &'static str = "ping";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_message_is_dead_lettered_and_the_batch_runs() {
    let url = "redis://127.0.0.1:6379";
    let q = common::connect(url).await;
    let name = unique("foreign");
    q.create_queue(&name).await.unwrap();
    // A raw writer: one stored message whose headers are not JSON, and one value that
    // is not in this driver's layout at all, pushed on the ready list beside a good job.
    let client = redis::Client::open(url).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = format!("q:{{{name}}}:");
    let mut bad_headers = b"1700000000000:9:foreign-110:{not json}".to_vec();
    bad_headers.extend_from_slice("\u{0}\u{1}binary".as_bytes());
    for value in [bad_headers, b"\xff\xfegarbage".to_vec()] {
        let seq: u64 = redis::cmd("INCR")
            .arg(format!("{prefix}seq"))
            .query_async(&mut raw)
            .await
            .unwrap();
        let () = redis::cmd("SET")
            .arg(format!("{prefix}m:{seq}"))
            .arg(value)
            .query_async(&mut raw)
            .await
            .unwrap();
        let () = redis::cmd("LPUSH")
            .arg(format!("{prefix}ready"))
            .arg(seq)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let backend = Backend::new(q);
    let queue = backend.queue(name.clone());
    queue.enqueue(&Ping(1)).await.unwrap();
    let w = queue
        .worker()
        .poll_wait(Duration::from_millis(200))
        .handle(|_: Ping, _ctx: JobContext| async { Ok(()) })
        .start()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "one success and two dead letters",
        || {
            let r = w.report();
            r.succeeded == 1 && r.dead_lettered == 2
        },
    )
    .await;
    let r = w.shutdown().await;
    assert_eq!(r.backend_errors, 0, "the receive must not fail: {r:?}");
    let dlq = common::connect(url).await;
    let dead = dlq
        .receive(
            &format!("{name}-dlq"),
            ReceiveOptions::new(10, Duration::from_secs(2), Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(
            d.headers.get(headers::DLQ_REASON).map(String::as_str),
            Some("malformed")
        );
    }
    let named = dead
        .iter()
        .find(|d| d.id.as_str() == "foreign-1")
        .expect("the message with a readable id keeps it");
    let error = &named.headers[headers::DLQ_ERROR];
    assert!(error.contains("headers are not a JSON object"), "{error}");
    assert_eq!(
        &named.payload[..],
        "\u{0}\u{1}binary".as_bytes(),
        "payload kept"
    );
    let garbage = dead
        .iter()
        .find(|d| d.id.as_str() != "foreign-1")
        .expect("the unreadable value");
    let error = &garbage.headers[headers::DLQ_ERROR];
    assert!(error.contains("not a message this driver wrote"), "{error}");
    assert_eq!(
        &garbage.payload[..],
        b"\xff\xfegarbage",
        "the whole stored value kept for inspection"
    );
}

/// An ack of no receipts is a no-op on a queue that exists and `UnknownQueue` on one that
/// does not (Redis refuses commands with no members, so the script must not send them).
#[tokio::test]
async fn empty_ack_is_a_no_op() {
    let q = common::connect("redis://127.0.0.1:6379").await;
    let name = unique("empty-ack");
    q.create_queue(&name).await.unwrap();
    q.ack(&name, &[]).await.expect("acking nothing succeeds");
    q.delete_queue(&name).await.unwrap();
    let err = q.ack(&name, &[]).await.expect_err("unknown queue");
    assert!(
        matches!(err, queue_core::QueueError::UnknownQueue(_)),
        "{err:?}"
    );
}
