//! The transactional outbox: an order and its confirmation e-mail job are written in one
//! PostgreSQL transaction, so a rolled-back order never sends an e-mail and a committed
//! one always does; a relay forwards the outbox to the queue the workers read (here the
//! embedded backend, or any `QUEUE_URL`).
//!
//! ```text
//! ./scripts/services.sh up   # PostgreSQL with the test role and database
//! cargo run --example outbox --features postgres
//! QUEUE_URL=redis://127.0.0.1:6379 cargo run --example outbox --features postgres,redis
//! ```

use std::time::Duration;

use queue::postgres::{txn, PostgresQueue};
use queue::relay::Relay;
use queue::Message;

const PG: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test?schema=outbox_example";
const APP: &str = "host=127.0.0.1 port=5432 user=queue password=queue dbname=queue_test";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pg_url = std::env::var("PG_URL").unwrap_or_else(|_| PG.into());
    let pg = std::sync::Arc::new(PostgresQueue::connect(&pg_url).await?);
    let outbox = queue::Backend::from(pg.clone()).queue("emails-outbox");
    outbox.create().await?;
    let target_url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://outbox".into());
    let emails = queue::connect(&target_url).await?.queue("emails");
    emails.create().await?;

    // The application's own connection and tables.
    let (mut client, conn) = tokio_postgres::connect(APP, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS outbox_example_orders (id bigint PRIMARY KEY)")
        .await?;
    for (id, commit) in [(1i64, true), (2, false), (3, true)] {
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO outbox_example_orders (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&id],
        )
        .await?;
        let job = Message::new(format!("confirm order {id}")).ordering_key(format!("order-{id}"));
        txn::send(&tx, &pg, outbox.name(), vec![job]).await?;
        if commit {
            tx.commit().await?;
        } else {
            tx.rollback().await?; // the order and its e-mail are gone together
        }
    }

    let relay = Relay::new(outbox.clone(), emails.clone())
        .without_ordering_keys() // SQS standard queues do not order by key
        .start()?;
    let worker = emails
        .worker()
        .handle_raw(|d| async move {
            println!("sending: {}", String::from_utf8_lossy(&d.payload));
            Ok(())
        })
        .start()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = relay.shutdown().await;
    let w = worker.shutdown().await;
    println!(
        "relayed {}, sent {} (order 2 rolled back: no e-mail)",
        r.forwarded, w.succeeded
    );
    Ok(())
}
