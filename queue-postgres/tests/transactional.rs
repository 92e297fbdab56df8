//! Transactional enqueue (queue_postgres::txn) against the real server: a job sent in
//! the application's transaction is delivered if and only if the transaction commits,
//! also when the process dies (child processes killed before and after the commit), and
//! bad input is a typed error that writes nothing.

use std::time::Duration;

use queue_core::testkit::unique;
use queue_core::{Driver, Message, QueueError, ReceiveOptions};
use queue_postgres::{txn, PostgresQueue};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::NoTls;

const URL: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test?schema=txn";
const APP: &str = "host=127.0.0.1 port=5432 user=queue password=queue dbname=queue_test";
const CHILD: &str = "QUEUE_PG_TXN_CHILD";

async fn driver(url: &str) -> PostgresQueue {
    PostgresQueue::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {url}: {e}. Start the test servers with scripts/services.sh")
    })
}

/// The application's own connection.
async fn app(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .expect("application connection");
    tokio::spawn(conn);
    client
}

/// The payloads `q` delivers within `wait`, acked.
async fn drain(pg: &PostgresQueue, q: &str, wait: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < until {
        let got = pg
            .receive(
                q,
                ReceiveOptions::new(100, Duration::from_millis(200), Duration::from_secs(30)),
            )
            .await
            .unwrap();
        for d in &got {
            out.push(String::from_utf8_lossy(&d.payload).to_string());
        }
        let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
        pg.ack(q, &receipts).await.unwrap();
    }
    out
}

async fn orders_table(client: &tokio_postgres::Client) -> String {
    let table = format!("txn_orders_{}", unique("t").replace('-', "_"));
    client
        .batch_execute(&format!("CREATE TABLE {table} (id bigint PRIMARY KEY)"))
        .await
        .unwrap();
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_delivers_and_rollback_never_does() {
    // A long fallback poll: only the commit's notification can wake the worker in time.
    let pg = driver(&format!("{URL}&poll_interval=60s")).await;
    let q = unique("txn");
    pg.create_queue(&q).await.unwrap();
    let mut client = app(APP).await;
    let table = orders_table(&client).await;

    let tx = client.transaction().await.unwrap();
    tx.execute(&format!("INSERT INTO {table} VALUES (1)"), &[])
        .await
        .unwrap();
    let ids = txn::send(&tx, &pg, &q, vec![Message::new("order 1")])
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    // Not visible before the commit.
    let early = pg
        .receive(
            &q,
            ReceiveOptions::new(10, Duration::from_millis(300), Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(
        early.is_empty(),
        "a job was delivered before its transaction committed"
    );
    // A worker long-polls while the transaction commits.
    let pg2 = driver(&format!("{URL}&poll_interval=60s")).await;
    let q2 = q.clone();
    let waiting = tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        let got = pg2
            .receive(
                &q2,
                ReceiveOptions::new(10, Duration::from_secs(20), Duration::from_secs(30)),
            )
            .await
            .unwrap();
        let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
        pg2.ack(&q2, &receipts).await.unwrap();
        (got.len(), t0.elapsed(), got.first().map(|d| d.id.clone()))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let committed = tokio::time::Instant::now();
    tx.commit().await.unwrap();
    let (n, _, id) = waiting.await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(id.as_ref(), ids.first());
    assert!(
        committed.elapsed() < Duration::from_secs(5),
        "the commit's notification did not wake the long poll"
    );

    let tx = client.transaction().await.unwrap();
    tx.execute(&format!("INSERT INTO {table} VALUES (2)"), &[])
        .await
        .unwrap();
    txn::send(&tx, &pg, &q, vec![Message::new("order 2")])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        drain(&pg, &q, Duration::from_secs(1)).await,
        Vec::<String>::new()
    );
    let orders: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1, "order 1 committed, order 2 rolled back");
    let s = pg.stats(&q).await.unwrap();
    assert_eq!((s.ready, s.in_flight, s.delayed), (0, 0, 0));
    pg.delete_queue(&q).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_typed_and_writes_nothing() {
    let pg = driver(URL).await;
    let q = unique("txn-bad");
    pg.create_queue(&q).await.unwrap();
    let mut client = app(APP).await;
    let tx = client.transaction().await.unwrap();
    let e = txn::send(&tx, &pg, "no-such-queue", vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::UnknownQueue(_)), "{e}");
    let e = txn::send(&tx, &pg, &q, vec![Message::new("x").header("h", "a\0b")])
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::InvalidOption(_)), "{e}");
    let e = txn::send(&tx, &pg, &q, vec![Message::new("x").dedup_id("d")])
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::Unsupported { .. }), "{e}");
    let big = Message::new(vec![0u8; 2 * 1024 * 1024]);
    let e = txn::send(&tx, &pg, &q, vec![big]).await.unwrap_err();
    assert!(matches!(e, QueueError::Oversize { .. }), "{e}");
    // None of those failed the application's transaction: it goes on and commits.
    txn::send(&tx, &pg, &q, vec![Message::new("ok")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(pg.stats(&q).await.unwrap().ready, 1);
    pg.purge(&q).await.unwrap();
    // A transaction on another database (where the queue's tables are not).
    let other = app("host=127.0.0.1 port=5432 user=queue password=queue dbname=postgres").await;
    let e = txn::send(&other, &pg, &q, vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::Schema { .. }), "{e}");
    assert_eq!(pg.stats(&q).await.unwrap().ready, 0, "nothing was written");
    pg.delete_queue(&q).await.unwrap();
}

/// In a child: one transaction with an order and its job; `commit` says whether it
/// commits before the parent kills this process.
async fn child(spec: String) {
    let mut parts = spec.splitn(3, ':');
    let (mode, queue, table) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
    );
    let pg = driver(URL).await;
    let mut client = app(APP).await;
    let tx = client.transaction().await.unwrap();
    tx.execute(&format!("INSERT INTO {table} VALUES (7)"), &[])
        .await
        .unwrap();
    txn::send(&tx, &pg, &queue, vec![Message::new("order 7")])
        .await
        .unwrap();
    if mode == "commit" {
        tx.commit().await.unwrap();
        println!("COMMITTED");
    } else {
        println!("READY");
        // Keep the transaction open until the parent kills the process.
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(tx);
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Runs a child in `mode`, waits for its line, kills it (SIGKILL).
async fn run_and_kill(mode: &str, queue: &str, table: &str) {
    let mut c = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_process_loses_nothing_and_sends_nothing",
            "--nocapture",
        ])
        .env(CHILD, format!("{mode}:{queue}:{table}"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let want = if mode == "commit" {
        "COMMITTED"
    } else {
        "READY"
    };
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.trim() == want {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "child {mode} never said {want}");
    c.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_loses_nothing_and_sends_nothing() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(spec).await;
    }
    let pg = driver(URL).await;
    let client = app(APP).await;

    // Killed with the transaction open: neither the order nor its job exists.
    let q = unique("txn-kill");
    pg.create_queue(&q).await.unwrap();
    let table = orders_table(&client).await;
    run_and_kill("open", &q, &table).await;
    assert_eq!(
        drain(&pg, &q, Duration::from_secs(2)).await,
        Vec::<String>::new()
    );
    let orders: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 0);

    // Killed right after the commit: both exist, and the job is delivered once.
    let table = orders_table(&client).await;
    run_and_kill("commit", &q, &table).await;
    assert_eq!(drain(&pg, &q, Duration::from_secs(2)).await, ["order 7"]);
    let orders: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
    pg.delete_queue(&q).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_jobs_are_delivered_in_commit_order() {
    let pg = std::sync::Arc::new(driver(URL).await);
    let q = unique("txn-order");
    pg.create_queue(&q).await.unwrap();
    let mut a = app(APP).await;
    let first = a.transaction().await.unwrap();
    txn::send(
        &first,
        &pg,
        &q,
        vec![Message::new("first").ordering_key("k")],
    )
    .await
    .unwrap();
    // A second transaction sends to the same key and commits while the first is open.
    let (pg2, q2) = (pg.clone(), q.clone());
    let second = tokio::spawn(async move {
        let mut b = app(APP).await;
        let tx = b.transaction().await.unwrap();
        txn::send(
            &tx,
            &pg2,
            &q2,
            vec![Message::new("second").ordering_key("k")],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = pg
        .receive(
            &q,
            ReceiveOptions::new(10, Duration::from_millis(200), Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(
        early.is_empty(),
        "the key's later job was delivered before the earlier transaction committed"
    );
    first.commit().await.unwrap();
    second.await.unwrap();
    assert_eq!(
        drain(&pg, &q, Duration::from_secs(2)).await,
        ["first", "second"]
    );
    pg.delete_queue(&q).await.unwrap();
}
