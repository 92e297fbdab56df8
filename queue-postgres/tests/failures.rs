//! The PostgreSQL driver's failure modes against the real server, each a typed error
//! that loses nothing: a schema written by a newer driver, a table dropped while in use,
//! connections killed by the server (the next calls reconnect, the listener too).

use std::time::Duration;

use queue_core::testkit::unique;
use queue_core::{Driver, Message, QueueError, ReceiveOptions};
use queue_postgres::PostgresQueue;
use tokio_postgres::NoTls;

const BASE: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";
const APP: &str = "host=127.0.0.1 port=5432 user=queue password=queue dbname=queue_test";

async fn app() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(APP, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable: {e}. Start the test servers with scripts/services.sh"
            )
        });
    tokio::spawn(conn);
    client
}

/// A fresh schema name, dropped by the returned guard's owner at the end.
fn schema() -> String {
    unique("s").replace('-', "_").to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_version_is_refused() {
    let s = schema();
    let url = format!("{BASE}?schema={s}");
    drop(PostgresQueue::connect(&url).await.unwrap());
    let client = app().await;
    client
        .batch_execute(&format!(
            "INSERT INTO {s}.schema_version (version) VALUES (99)"
        ))
        .await
        .unwrap();
    let e = PostgresQueue::connect(&url).await.unwrap_err();
    assert!(
        matches!(&e, QueueError::Schema { reason, .. } if reason.contains("version 99")),
        "{e}"
    );
    client
        .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_is_a_schema_error() {
    let s = schema();
    let url = format!("{BASE}?schema={s}");
    let pg = PostgresQueue::connect(&url).await.unwrap();
    pg.create_queue("q").await.unwrap();
    let client = app().await;
    client
        .batch_execute(&format!("DROP TABLE {s}.messages"))
        .await
        .unwrap();
    let e = pg.send("q", vec![Message::new("x")]).await.unwrap_err();
    assert!(matches!(e, QueueError::Schema { .. }), "{e}");
    let e = pg.stats("q").await.unwrap_err();
    assert!(matches!(e, QueueError::Schema { .. }), "{e}");
    // A new connection does not recreate it empty under a version that says it is whole.
    let e = PostgresQueue::connect(&url).await.unwrap_err();
    assert!(
        matches!(&e, QueueError::Schema { reason, .. } if reason.contains("messages is missing")),
        "{e}"
    );
    client
        .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
    // Dropping the schema starts afresh.
    let pg = PostgresQueue::connect(&url).await.unwrap();
    pg.create_queue("q").await.unwrap();
    assert_eq!(pg.stats("q").await.unwrap().ready, 0);
    client
        .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_reconnect_and_lose_nothing() {
    let name = unique("lost");
    let url = format!("{BASE}?schema=failures&application_name={name}&poll_interval=60s");
    let pg = PostgresQueue::connect(&url).await.unwrap();
    let q = unique("q");
    pg.create_queue(&q).await.unwrap();
    pg.send(&q, vec![Message::new("before")]).await.unwrap();
    let client = app().await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the listener is connected
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        killed, 2,
        "the driver's statement and listening connections"
    );
    // The first call may see the dead connection (a typed Connection error); the next
    // ones reconnect.
    let mut stats = None;
    for _ in 0..3 {
        match pg.stats(&q).await {
            Ok(s) => {
                stats = Some(s);
                break;
            }
            Err(e) => assert!(matches!(e, QueueError::Connection { .. }), "{e}"),
        }
    }
    assert_eq!(stats.expect("reconnected").ready, 1, "nothing lost");
    let got = pg
        .receive(
            &q,
            ReceiveOptions::new(10, Duration::from_secs(1), Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    pg.ack(&q, &[got[0].receipt.clone()]).await.unwrap();
    // The listener is back (it retries every second): a long poll is woken by a send
    // from another driver well before the 60 s fallback poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = PostgresQueue::connect(&format!("{BASE}?schema=failures"))
        .await
        .unwrap();
    let q2 = q.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        other.send(&q2, vec![Message::new("after")]).await.unwrap();
    });
    let t0 = tokio::time::Instant::now();
    let got = pg
        .receive(
            &q,
            ReceiveOptions::new(10, Duration::from_secs(20), Duration::from_secs(30)),
        )
        .await
        .unwrap();
    sender.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "woken after {:?}",
        t0.elapsed()
    );
    pg.ack(&q, &[got[0].receipt.clone()]).await.unwrap();
    pg.delete_queue(&q).await.unwrap();
}
