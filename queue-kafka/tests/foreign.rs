//! Records another writer put on a queue's topic, with this driver's header names and
//! hostile values, are delivered malformed (the worker dead-letters them with why) and
//! never hold back the records behind them.

mod common;

use std::time::Duration;

use queue_core::{headers, Driver, ReceiveOptions};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_headers_are_malformed_and_hold_nothing_back() {
    let q = common::connect(common::URL).await;
    let name = queue_core::testkit::unique("foreign");
    q.create_queue(&name).await.unwrap();
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .create()
        .unwrap();
    let hostile: [(&str, &[u8]); 3] = [
        // a due time in the year 584 million: it must not pause the partition
        ("x-queue-not-before", b"18446744073709551615"),
        ("x-queue-attempt", b"abc"),
        ("x-queue-attempt", b"99999999999999999999"),
    ];
    for (i, (k, v)) in hostile.iter().enumerate() {
        let key = format!("same-partition-{i}");
        let h = OwnedHeaders::new().insert(Header {
            key: k,
            value: Some(*v),
        });
        raw.send(
            FutureRecord::to(&name)
                .key("one-key")
                .payload(key.as_bytes())
                .headers(h),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    // A healthy record behind them, on the same partition (same key).
    raw.send(
        FutureRecord::to(&name).key("one-key").payload("healthy"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < 4 && tokio::time::Instant::now() < deadline {
        let opts = ReceiveOptions::new(10, Duration::from_secs(1), Duration::from_secs(30));
        for d in q.receive(&name, opts.clone()).await.unwrap() {
            q.ack(&name, std::slice::from_ref(&d.receipt))
                .await
                .unwrap();
            got.push(d);
        }
    }
    assert_eq!(got.len(), 4, "every record delivered, none held back");
    for d in &got[..3] {
        let why = d.headers.get(headers::MALFORMED);
        assert!(why.is_some(), "{:?} must be malformed", d.payload);
    }
    assert!(got[0].headers[headers::MALFORMED].contains("due time"));
    assert!(got[1].headers[headers::MALFORMED].contains("x-queue-attempt"));
    assert_eq!(&got[3].payload[..], b"healthy");
    assert!(!got[3].headers.contains_key(headers::MALFORMED));
}
