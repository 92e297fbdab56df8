//! The driver vacuums its own table.
//!
//! Every acked message leaves a dead row, every lease update another. Until vacuum
//! removes them, each receive walks past them at the head of the queue's index, and
//! throughput falls (measured: from 8,500 to 3,000 msg/s within 30 s with no vacuum,
//! docs/benchmarks.md). Autovacuum's defaults wait for a fifth of the table to be dead,
//! and some servers run with it off; so the driver runs `VACUUM` on `<schema>.messages`
//! itself: as soon as it has settled (acked, dead-lettered, purged) 20,000 rows since
//! the last time (at most once a second), and at least every `vacuum_interval` (default
//! 30 s, `0s` turns it all off) in which it settled any. It does so on a connection of
//! its own (so its statements do not wait behind it), under a session advisory lock that
//! lets one process vacuum a schema at a time. Before each vacuum it deletes expired dedup
//! marks (up to 10,000), which nothing else removes.
//!
//! What it cannot fix: rows that a transaction open elsewhere may still see (a long
//! report, a session idle in a transaction) are not removable by any vacuum until that
//! transaction ends. The table grows and receives slow down meanwhile; set
//! `idle_in_transaction_session_timeout` and watch the oldest `backend_xmin`.

use std::sync::atomic::Ordering as AO;
use std::sync::Weak;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::driver::Shared;

/// Names the vacuum locks across processes (with the schema's hash).
const LOCK: i32 = 725_301_041;

/// Rows settled that call for a vacuum before the interval is up.
const ROWS: u64 = 20_000;

/// Runs until the driver is dropped.
pub(crate) async fn run(shared: Weak<Shared>, every: Duration) {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(s) = shared.upgrade() else { return };
        let settled = s.settled.load(AO::Relaxed);
        if settled < ROWS && (settled == 0 || last.elapsed() < every) {
            continue;
        }
        s.settled.fetch_sub(settled, AO::Relaxed);
        last = tokio::time::Instant::now();
        let (pg, schema) = (s.pg.clone(), s.settings.schema.clone());
        drop(s);
        let started = tokio::time::Instant::now();
        match vacuum(&pg, &schema).await {
            Ok(true) => tracing::debug!(schema, took = ?started.elapsed(), "postgres: vacuumed"),
            Ok(false) => {} // another process is at it
            Err(e) => tracing::warn!(schema, error = %e, "postgres: vacuum failed"),
        }
    }
}

async fn vacuum(pg: &tokio_postgres::Config, schema: &str) -> Result<bool, tokio_postgres::Error> {
    let (client, conn) = pg.connect(NoTls).await?;
    let conn = tokio::spawn(conn);
    let got: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&LOCK, &schema],
        )
        .await?
        .get(0);
    if got {
        client
            .batch_execute(&format!(
                r#"DELETE FROM "{schema}".dedup WHERE ctid = ANY (ARRAY(
                       SELECT ctid FROM "{schema}".dedup WHERE expires_at <= now() LIMIT 10000))"#
            ))
            .await?;
        // A statement of its own: VACUUM cannot run in the implicit transaction of a
        // multi-statement query.
        client
            .batch_execute(&format!(r#"VACUUM "{schema}".messages"#))
            .await?;
    }
    drop(client); // the session lock ends with the session
    let _ = conn.await;
    Ok(got)
}
