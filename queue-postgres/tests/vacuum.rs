//! The driver vacuums its own table (see `vacuum.rs`): after settling messages it runs
//! `VACUUM` within `vacuum_interval` and deletes expired dedup marks, and does neither
//! with `vacuum_interval=0s`. PostgreSQL
//! counts manual vacuums apart from autovacuum's (`vacuum_count`), so the server's own
//! autovacuum cannot make this pass or fail.

use std::time::Duration;

use queue_core::testkit::unique;
use queue_core::{Driver, Message, ReceiveOptions};
use queue_postgres::PostgresQueue;
use tokio_postgres::NoTls;

const BASE: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";
const APP: &str = "host=127.0.0.1 port=5432 user=queue password=queue dbname=queue_test";

async fn vacuums(client: &tokio_postgres::Client, schema: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce((SELECT vacuum_count FROM pg_stat_user_tables
                              WHERE schemaname = $1 AND relname = 'messages'), 0)",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0)
}

/// Sends, takes and acks 10 messages; returns the driver.
async fn settle(url: &str) -> PostgresQueue {
    let pg = PostgresQueue::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable: {e}. Start the test servers with scripts/services.sh")
    });
    pg.create_queue("q").await.unwrap();
    let msgs = (0..10)
        .map(|i| Message::new(format!("{i}")).dedup_id(format!("d{i}")))
        .collect();
    pg.send("q", msgs).await.unwrap();
    let got = pg
        .receive(
            "q",
            ReceiveOptions::new(10, Duration::from_secs(1), Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    pg.ack("q", &receipts).await.unwrap();
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_vacuums_what_it_settled_and_not_when_off() {
    let (client, conn) = tokio_postgres::connect(APP, NoTls).await.unwrap();
    tokio::spawn(conn);
    let on = unique("vac").replace('-', "_");
    let off = unique("novac").replace('-', "_");
    // Dedup marks that expire at once: only the driver's vacuum deletes them.
    let _a = settle(&format!(
        "{BASE}?schema={on}&vacuum_interval=1s&dedup_window=1ms"
    ))
    .await;
    let _b = settle(&format!(
        "{BASE}?schema={off}&vacuum_interval=0s&dedup_window=1ms"
    ))
    .await;
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    while vacuums(&client, &on).await == 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "no vacuum of {on}.messages"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        vacuums(&client, &off).await,
        0,
        "vacuum_interval=0s vacuumed"
    );
    for s in [on, off] {
        client
            .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
            .await
            .unwrap();
    }
}
