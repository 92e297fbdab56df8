//! The transactional outbox end to end, against the real servers `scripts/services.sh`
//! starts: jobs enqueued in PostgreSQL transactions (one rolled back) are relayed to
//! Redis, SQS FIFO and Kafka by a relay that is killed mid-batch and two that take over
//! at once; every committed job arrives, in order per key (a resend may repeat a
//! message, never reorder it), the rolled-back one never does, and the relay reports its
//! lag.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::postgres::{txn, PostgresQueue};
use queue::relay::Relay;
use queue::{Backend, Message};
use tokio_postgres::NoTls;

const PG: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test?schema=relay";
const APP: &str = "host=127.0.0.1 port=5432 user=queue password=queue dbname=queue_test";
const KEYS: usize = 5;
const PER_KEY: usize = 20;

async fn outbox() -> (Backend, Arc<PostgresQueue>) {
    let pg = Arc::new(PostgresQueue::connect(PG).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {PG}: {e}. Start the test servers with scripts/services.sh")
    }));
    (Backend::from(pg.clone()), pg)
}

/// Enqueues every key's jobs in four committed transactions, and one more job in a
/// transaction that rolls back.
async fn enqueue(pg: &PostgresQueue, queue: &str) {
    let (mut client, conn) = tokio_postgres::connect(APP, NoTls).await.unwrap();
    tokio::spawn(conn);
    let all: Vec<Message> = (0..PER_KEY)
        .flat_map(|i| {
            (0..KEYS).map(move |k| Message::new(format!("k{k}:{i}")).ordering_key(format!("k{k}")))
        })
        .collect();
    for chunk in all.chunks(all.len() / 4) {
        let tx = client.transaction().await.unwrap();
        txn::send(&tx, pg, queue, chunk.to_vec()).await.unwrap();
        tx.commit().await.unwrap();
    }
    let tx = client.transaction().await.unwrap();
    txn::send(
        &tx,
        pg,
        queue,
        vec![Message::new("rolled back").ordering_key("k0")],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
}

async fn relay_to(target_url: &str, keyless_target: bool) {
    let (pgb, pg) = outbox().await;
    let source = pgb.queue(queue::testkit::unique("outbox"));
    source.create().await.unwrap();
    let target_backend = queue::connect(target_url).await.unwrap();
    let target = target_backend.queue(queue::testkit::unique("relayed"));
    target.create().await.unwrap();
    enqueue(&pg, source.name()).await;
    assert_eq!(source.stats().await.unwrap().ready as usize, KEYS * PER_KEY);

    // The target's consumer: what arrives, in the order its handlers ran.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    // Without keys on the target, order holds for a consumer taking one job at a time.
    let consumer = target
        .worker()
        .concurrency(if keyless_target { 1 } else { 4 })
        .poll_wait(Duration::from_secs(1))
        .handle_raw(move |d| {
            let seen = s2.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&d.payload).to_string());
                Ok(())
            }
        })
        .start()
        .unwrap();

    // The first relay dies mid-way, a batch leased and maybe sent but not acked.
    let relay = |source: queue::Queue| {
        let r = Relay::new(source, target.clone())
            .batch_size(10)
            .lease(Duration::from_secs(3))
            .lag_every(Duration::from_millis(100));
        if keyless_target {
            r.without_ordering_keys()
        } else {
            r
        }
    };
    let first = relay(source.clone()).start().unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while first.report().forwarded < 30 {
        assert!(
            tokio::time::Instant::now() < until,
            "{target_url}: the first relay stalled: {:?}, {:?}",
            first.report(),
            source.stats().await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lag = first.report().lag;
    first.abort();
    // Two relays take over at once (each with its own connection, as two processes would).
    let (pgb2, _) = outbox().await;
    let relays: Vec<_> = [pgb.clone(), pgb2]
        .into_iter()
        .map(|b| relay(b.queue(source.name())).start().unwrap())
        .collect();
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let distinct: std::collections::HashSet<String> =
            seen.lock().unwrap().iter().cloned().collect();
        if distinct.len() >= KEYS * PER_KEY {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{target_url}: {} of {} arrived",
            distinct.len(),
            KEYS * PER_KEY
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // anything more on its way
    let mut forwarded = 0;
    let mut last_lag = None;
    for r in relays {
        let rep = r.shutdown().await;
        forwarded += rep.forwarded;
        last_lag = rep.lag.or(last_lag);
        assert_eq!(rep.dead_lettered, 0, "{target_url}: {rep:?}");
    }
    consumer.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|s| s == "rolled back"),
        "{target_url}: a rolled-back job arrived"
    );
    for k in 0..KEYS {
        let mut of_key: Vec<usize> = seen
            .iter()
            .filter_map(|s| s.strip_prefix(&format!("k{k}:")))
            .map(|i| i.parse().unwrap())
            .collect();
        // A resend after the crash repeats a message right after itself, never later.
        of_key.dedup();
        assert_eq!(
            of_key,
            (0..PER_KEY).collect::<Vec<_>>(),
            "{target_url}: key k{k} in order, each once: {seen:?}"
        );
    }
    let dups = seen.len() - KEYS * PER_KEY;
    eprintln!(
        "{target_url}: {} arrived ({dups} resent after the crash), the takeover relays forwarded {forwarded}, lag at the crash {lag:?}, at the end {last_lag:?}",
        seen.len()
    );
    assert!(
        lag.is_some_and(|l| l > Duration::ZERO),
        "{target_url}: the lag was read: {lag:?}"
    );
    assert_eq!(
        last_lag,
        Some(Duration::ZERO),
        "{target_url}: nothing waits at the end"
    );
    let s = source.stats().await.unwrap();
    assert_eq!(
        (s.ready, s.in_flight, s.dead),
        (0, 0, 0),
        "{target_url}: the outbox is empty"
    );
    source.delete().await.ok();
    target.delete().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_to_redis() {
    // Redis orders by key (a key's next message waits for its head): the relay keeps
    // the keys, and each key's messages arrive in order.
    relay_to("redis://127.0.0.1:6379", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_to_sqs_fifo() {
    relay_to(
        "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566&fifo=true",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_to_kafka() {
    relay_to("kafka://127.0.0.1:9092", false).await;
}
