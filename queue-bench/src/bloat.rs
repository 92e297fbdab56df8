//! `--pg-bloat SECS`: the PostgreSQL driver under a steady full-speed flow for SECS
//! seconds, with a transaction held open (`--hold SECS`, a REPEATABLE READ snapshot on
//! another connection) from a third of the way in: the known failure mode of SKIP LOCKED
//! queues, whose dead rows vacuum may not remove while an old snapshot could still see
//! them. Every 5 s it prints the throughput of the last interval, the table's and its
//! indexes' size, and the dead rows PostgreSQL counts.

use std::sync::atomic::{AtomicBool, Ordering as AO};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::Message;

use crate::{unique, Args};

/// Runs the measurement; `secs` in all, the snapshot held for `hold` seconds.
pub async fn run(a: &Args, secs: u64, hold: u64) -> std::process::ExitCode {
    match measure(a, secs, hold).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postgres bloat: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A plain connection to `--postgres-url`'s database (for the raw baseline and the
/// measurements the driver does not make).
pub(crate) async fn connect(a: &Args) -> Result<tokio_postgres::Client, String> {
    let url = url::Url::parse(&a.postgres_url).map_err(|e| e.to_string())?;
    let conninfo = format!(
        "host={} port={} user={} password={} dbname={}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432),
        url.username(),
        url.password().unwrap_or(""),
        url.path().trim_start_matches('/')
    );
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

async fn measure(a: &Args, secs: u64, hold: u64) -> Result<(), String> {
    let schema = "bench_bloat";
    let url = format!(
        "{}{}schema={schema}",
        a.postgres_url.split("?").next().unwrap_or_default(),
        "?"
    );
    let backend = queue_core::connect(&url).await.map_err(|e| e.to_string())?;
    let q = backend.queue(unique("bloat"));
    q.create().await.map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    // Producer: batches of 100, keeping the backlog under 5,000 so the flow is steady.
    let (p, s2) = (q.clone(), stop.clone());
    let producer = tokio::spawn(async move {
        while !s2.load(AO::Relaxed) {
            if p.stats().await.map(|s| s.ready).unwrap_or(0) > 5_000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let batch = (0..100).map(|_| Message::new(vec![7u8; 100])).collect();
            if let Err(e) = p.producer().send_batch(batch).await {
                eprintln!("send failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let worker = q
        .worker()
        .concurrency(a.consumers)
        .poll_wait(Duration::from_secs(1))
        .handle_raw(|_| async { Ok(()) })
        .start()
        .map_err(|e| e.to_string())?;
    let probe = connect(a).await?;
    let holder = connect(a).await?;
    let t0 = Instant::now();
    let hold_from = Duration::from_secs(secs / 3);
    let hold_until = hold_from + Duration::from_secs(hold);
    let mut held = false;
    let mut last = (0u64, Instant::now());
    println!(
        "postgres bloat: {secs} s of steady flow (concurrency {}), a snapshot held open from {} s to {} s",
        a.consumers,
        hold_from.as_secs(),
        hold_until.as_secs()
    );
    println!(
        "{:>5} {:<8} {:>10} {:>10} {:>10} {:>10}",
        "t s", "snapshot", "msg/s", "table MB", "index MB", "dead rows"
    );
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let e = t0.elapsed();
        if !held && e >= hold_from && e < hold_until {
            holder
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM {schema}.queues"
                ))
                .await
                .map_err(|e| e.to_string())?;
            held = true;
        } else if held && e >= hold_until {
            holder
                .batch_execute("COMMIT")
                .await
                .map_err(|e| e.to_string())?;
            held = false;
        }
        let done = worker.report().succeeded;
        let rate = (done - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (done, Instant::now());
        let row = probe
            .query_one(
                &format!(
                    "SELECT pg_relation_size('{schema}.messages')::float8 / 1048576,
                            pg_indexes_size('{schema}.messages')::float8 / 1048576,
                            coalesce((SELECT n_dead_tup FROM pg_stat_user_tables
                                      WHERE schemaname = '{schema}' AND relname = 'messages'), 0)"
                ),
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{:>5} {:<8} {:>10.0} {:>10.1} {:>10.1} {:>10}",
            e.as_secs(),
            if held { "held" } else { "-" },
            rate,
            row.get::<_, f64>(0),
            row.get::<_, f64>(1),
            row.get::<_, i64>(2)
        );
    }
    if held {
        let _ = holder.batch_execute("COMMIT").await;
    }
    stop.store(true, AO::Relaxed);
    let _ = producer.await;
    let r = worker.shutdown().await;
    println!("processed {} in {} s", r.succeeded, secs);
    let _ = q.delete().await;
    Ok(())
}
