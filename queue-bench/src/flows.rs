//! `--flows N`: what a flow (`queue_core::flow`) costs per job. On each backend, with the
//! flows' state in the backend's own server where it has a store (Redis, PostgreSQL) and
//! in memory otherwise:
//! - plain: 2N independent no-op jobs, sent in batches of 100, until all are done;
//! - chains: N flows of two jobs (the second after the first), each added with one
//!   `add_flow`, eight adds at a time, until every second job is done;
//! - batch: one flow of 1,000 no-op jobs and a report that depends on each (`Ignore`:
//!   Sidekiq's `on_complete`), from the add to the report's end;
//! - a batch (`queue_core::batch`) of 10,000 no-op jobs, added 1,000 at a time, with an
//!   `on_complete` callback, from the open to the callback's end; beside 10,000 plain
//!   jobs sent the same way, its cost per job.
//!
//! The per-job cost of a flow is (chains - plain) / 2N: the store writes of adding the
//! records, the read before each run, the compare-and-set of each settlement and the
//! send of each released job.

use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::flow::{Flow, OnFailure};
use queue_core::{Backend, JobContext, Message};

use crate::{unique, url_for, Args};

#[derive(serde::Serialize, serde::Deserialize)]
struct Step;
impl queue_core::Job for Step {
    const NAME: &'static str = "step";
}

async fn backend(a: &Args, kind: &str) -> Result<Backend, String> {
    let url = url_for(a, kind)?;
    let store_url = match kind {
        "redis" | "postgres" => url.clone(),
        _ => "memory://".to_string(),
    };
    let store = crate::status::store_for(&store_url).await?.store().clone();
    Ok(queue_core::connect(&url)
        .await
        .map_err(|e| e.to_string())?
        .with_store(store))
}

/// Runs jobs on `q` until `left` reaches zero; returns how long that took from `t0`.
async fn drain(
    q: &queue_core::Queue,
    a: &Args,
    left: Arc<AtomicUsize>,
    t0: Instant,
) -> Result<Duration, String> {
    let l2 = left.clone();
    let w = q
        .worker()
        .concurrency(a.consumers)
        .poll_wait(Duration::from_millis(200))
        .handle(move |_: Step, _ctx: JobContext| {
            l2.fetch_sub(1, AO::Relaxed);
            async { Ok(()) }
        })
        .handle_raw(|_| async { Ok(()) })
        .start()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while left.load(AO::Relaxed) > 0 {
        if Instant::now() > deadline {
            return Err(format!("{} jobs never ran", left.load(AO::Relaxed)));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t0.elapsed();
    w.shutdown().await;
    Ok(took)
}

async fn plain(a: &Args, kind: &str, n: usize) -> Result<Duration, String> {
    let b = backend(a, kind).await?;
    let q = b.queue(unique("flowbench"));
    q.create().await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < 2 * n {
        let k = (2 * n - sent).min(100);
        let msgs = (0..k)
            .map(|_| queue_core::job_message(&Step, Default::default()))
            .collect::<Result<Vec<Message>, _>>()
            .map_err(|e| e.to_string())?;
        q.producer()
            .send_batch(msgs)
            .await
            .map_err(|e| e.to_string())?;
        sent += k;
    }
    let took = drain(&q, a, Arc::new(AtomicUsize::new(2 * n)), t0).await;
    q.delete().await.ok();
    took
}

async fn chains(a: &Args, kind: &str, n: usize) -> Result<Duration, String> {
    let b = backend(a, kind).await?;
    let name = unique("flowbench");
    let q = b.queue(name.clone());
    q.create().await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let left = Arc::new(AtomicUsize::new(2 * n));
    let work = drain(&q, a, left.clone(), t0);
    let adds = async {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (b, name, next) = (b.clone(), name.clone(), next.clone());
            tasks.spawn(async move {
                while next.fetch_add(1, AO::Relaxed) < n {
                    let mut f = Flow::new();
                    let first = f.job(&name, &Step).map_err(|e| e.to_string())?;
                    let second = f.job(&name, &Step).map_err(|e| e.to_string())?;
                    f.after(second, &[first]);
                    b.add_flow(f).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok::<(), String>(())
    };
    let (took, added) = tokio::join!(work, adds);
    added?;
    q.delete().await.ok();
    took
}

async fn batch(a: &Args, kind: &str) -> Result<Duration, String> {
    let b = backend(a, kind).await?;
    let name = unique("flowbench");
    let q = b.queue(name.clone());
    q.create().await.map_err(|e| e.to_string())?;
    let mut f = Flow::new();
    let report = f.message(&name, Message::new("report"));
    for _ in 0..queue_core::flow::MAX_DEPENDENCIES {
        let j = f.job(&name, &Step).map_err(|e| e.to_string())?;
        f.depends_on(report, j, OnFailure::Ignore);
    }
    let t0 = Instant::now();
    b.add_flow(f).await.map_err(|e| e.to_string())?;
    // The jobs count down; the report is the raw handler's, counted by the queue's stats.
    let took = drain(
        &q,
        a,
        Arc::new(AtomicUsize::new(queue_core::flow::MAX_DEPENDENCIES)),
        t0,
    )
    .await?;
    report_ran(&q, t0, took).await
}

/// Runs the raw report left on `q` once the jobs are done; the time from `t0` to its end.
async fn report_ran(
    q: &queue_core::Queue,
    t0: Instant,
    took: Duration,
) -> Result<Duration, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let w = q
        .worker()
        .poll_wait(Duration::from_millis(50))
        .handle_raw(|_| async { Ok(()) })
        .start()
        .map_err(|e| e.to_string())?;
    while q.stats().await.map_err(|e| e.to_string())?.total() > 0 {
        if Instant::now() > deadline {
            return Err("the report never ran".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let to_report = t0.elapsed().max(took);
    w.shutdown().await;
    q.delete().await.ok();
    Ok(to_report)
}

/// Jobs in the big batch.
const BIG: usize = 10_000;

/// 10,000 jobs, added 1,000 at a time, to their end: in a batch with an `on_complete`
/// callback (to the callback's end) when `batched`, else plain.
async fn big(a: &Args, kind: &str, batched: bool) -> Result<Duration, String> {
    let b = backend(a, kind).await?;
    let name = unique("batchbench");
    let q = b.queue(name.clone());
    q.create().await.map_err(|e| e.to_string())?;
    let e = |e: queue_core::QueueError| e.to_string();
    let t0 = Instant::now();
    let jobs: Vec<Step> = (0..BIG).map(|_| Step).collect();
    if batched {
        let report = Message::new("report");
        let batch = b
            .new_batch()
            .on_message(queue_core::batch::Kind::Complete, &name, report)
            .open()
            .await
            .map_err(e)?;
        for chunk in jobs.chunks(1_000) {
            batch.add(&name, chunk).await.map_err(e)?;
        }
        batch.close().await.map_err(e)?;
    } else {
        let p = q.producer();
        for chunk in jobs.chunks(1_000) {
            let msgs = chunk
                .iter()
                .map(|j| queue_core::job_message(j, Default::default()))
                .collect::<queue_core::Result<Vec<_>>>()
                .map_err(e)?;
            p.send_batch(msgs).await.map_err(e)?;
        }
    }
    let took = drain(&q, a, Arc::new(AtomicUsize::new(BIG)), t0).await?;
    match batched {
        true => report_ran(&q, t0, took).await,
        false => {
            q.delete().await.ok();
            Ok(took)
        }
    }
}

/// The mode: each backend in `--backends`, plain then chains then the batch.
pub async fn run(a: &Args, n: usize) -> std::process::ExitCode {
    println!(
        "flows: {n} chains of two jobs against {} plain jobs, concurrency {}; a flow of {} jobs to its report; \
         a batch of {BIG} jobs to its on_complete against {BIG} plain jobs",
        2 * n,
        a.consumers,
        queue_core::flow::MAX_DEPENDENCIES
    );
    println!(
        "{:<9} {:>10} {:>10} {:>12} {:>16} {:>12} {:>11} {:>11} {:>15}",
        "backend",
        "plain s",
        "chains s",
        "plain job/s",
        "flow cost/job",
        "fan-in s",
        "10k plain s",
        "10k batch s",
        "batch cost/job"
    );
    for kind in &a.backends {
        let row = async {
            let p = plain(a, kind, n).await?;
            let c = chains(a, kind, n).await?;
            let bt = batch(a, kind).await?;
            let big_plain = big(a, kind, false).await?;
            let big_batch = big(a, kind, true).await?;
            Ok::<_, String>((p, c, bt, big_plain, big_batch))
        };
        match row.await {
            Ok((p, c, bt, bp, bb)) => {
                let jobs = (2 * n) as f64;
                let cost_us = (c.as_secs_f64() - p.as_secs_f64()) / jobs * 1e6;
                let batch_us = (bb.as_secs_f64() - bp.as_secs_f64()) / BIG as f64 * 1e6;
                println!(
                    "{kind:<9} {:>10.2} {:>10.2} {:>12.0} {:>13.0} µs {:>12.2} {:>11.2} {:>11.2} {:>12.0} µs",
                    p.as_secs_f64(),
                    c.as_secs_f64(),
                    jobs / p.as_secs_f64(),
                    cost_us,
                    bt.as_secs_f64(),
                    bp.as_secs_f64(),
                    bb.as_secs_f64(),
                    batch_us
                );
            }
            Err(e) => println!("{kind:<9} failed: {e}"),
        }
    }
    std::process::ExitCode::SUCCESS
}
