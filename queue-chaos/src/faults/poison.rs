//! Poison and hostile input: a queue preloaded with healthy jobs and, among them, 1 %
//! hostile messages written by the backend's raw client ([`super::hostile`]). Worker
//! process drains it (concurrency 8, 1 ms of work per job); the run passes when every healthy job was processed, every poison
//! message is in the dead-letter queue with a reason, no worker died, and the healthy
//! throughput is at least 0.8x that of the same drain without poison (two drains in a row
//! on a 2-core machine differ by about a tenth with nothing wrong).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use queue::{job_message, SendOptions};

use super::hostile::{Raw, KINDS};
use crate::ledger::Ledger;
use crate::report::Report;
use crate::run::{connect_retrying, dead_letters, queue_name};
use crate::worker::{ChaosJob, WorkerArgs, Workers};

/// Sizes of a poison run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Healthy jobs.
    pub jobs: usize,
    /// Poison per hundred healthy jobs.
    pub percent: f64,
}

struct Drain {
    rate: f64,
    processed: usize,
    poison_sent: u64,
    refused: u64,
    dead: Vec<(String, String)>,
    notes: Vec<String>,
    duplicated: u64,
    errors: u64,
}

async fn drain(backend: &str, url: &str, jobs: usize, poison: u64) -> Result<Drain, String> {
    let b = connect_retrying(url).await?;
    let name = queue_name("poison");
    let q = b.queue(name.clone());
    q.create().await.map_err(|e| format!("create: {e}"))?;
    let limit = b.capabilities().max_message_size;
    let mut raw = Raw::connect(backend, url, &name).await?;
    let p = q.producer();
    let every = if poison == 0 {
        usize::MAX
    } else {
        (jobs / poison as usize).max(1)
    };
    let (mut poison_sent, mut refused, mut written) = (0u64, 0u64, 0u64);
    let mut ids = Vec::with_capacity(jobs);
    let mut batch = Vec::new();
    for n in 0..jobs {
        let id = format!("job-{n}");
        let m = job_message(&ChaosJob { n: n as u64 }, SendOptions::new())
            .map_err(|e| e.to_string())?
            .id(id.as_str());
        batch.push(m);
        ids.push(id);
        if batch.len() == 100 || n + 1 == jobs {
            p.send_batch(std::mem::take(&mut batch))
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        if (n + 1) % every == 0 && written < poison {
            if raw.write(written, limit).await? {
                poison_sent += 1;
            } else {
                refused += 1;
            }
            written += 1;
        }
    }
    let dir = std::env::temp_dir().join(format!("queue-chaos-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let args = WorkerArgs {
        concurrency: 8,
        lease_ms: 30_000,
        // A millisecond of work per job: the figure is the worker's pipeline with a
        // handler that does something, not a spin over empty handlers (where a drain of
        // a few thousand jobs lasts a few milliseconds and measures only start-up).
        work_ms: 1,
        attempts: 3,
        typed: true,
        ..WorkerArgs::new(url, &name)
    };
    // One worker process: a second one joining mid-drain (a Kafka rebalance) would
    // measure the group's join, not the poison.
    let mut workers = Workers::start(args, &dir, 1).await?;
    let mut ledger = Ledger::new(&dir);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut notes = Vec::new();
    loop {
        ledger.refresh().map_err(|e| e.to_string())?;
        if ledger.processed_of(&ids) == jobs || Instant::now() > deadline {
            break;
        }
        notes.extend(workers.exited());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Poison settles with the healthy jobs around it; give the last ones a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    notes.extend(workers.exited());
    let errors = crate::run::worker_errors(&dir);
    workers.stop().await;
    ledger.refresh().map_err(|e| e.to_string())?;
    let processed = ledger.processed_of(&ids);
    let rate = match ledger.span {
        Some((a, b)) if b > a => processed as f64 * 1000.0 / (b - a) as f64,
        _ => 0.0,
    };
    let dead = if poison > 0 {
        dead_letters(&q).await
    } else {
        Default::default()
    };
    let _ = q.delete().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Drain {
        rate,
        processed,
        poison_sent,
        refused,
        dead,
        notes,
        duplicated: ledger.repeats(),
        errors,
    })
}

/// A clean drain, then the same drain with `percent` % poison; reports the second.
///
/// Kafka runs on a tansu of its own (a free port, a scratch directory): megabyte records
/// and hostile headers are not left behind in the shared broker other tests use.
pub async fn poison(backend: &str, url: &str, sizes: Sizes) -> Result<Report, String> {
    let began = Instant::now();
    let mut own = None;
    let own_url;
    let url = if backend == "kafka" {
        let dir = crate::servers::scratch("tansu-poison")?;
        let port = crate::servers::free_port()?;
        let mut s = crate::servers::tansu(&dir, port, port)?;
        s.start().await?;
        own = Some(s);
        own_url = format!("kafka://127.0.0.1:{port}");
        own_url.as_str()
    } else {
        url
    };
    let report = poison_on(backend, url, sizes, began).await;
    if let Some(mut s) = own {
        let _ = s.kill().await;
        let _ = std::fs::remove_dir_all(s.dir());
    }
    report
}

async fn poison_on(
    backend: &str,
    url: &str,
    sizes: Sizes,
    began: Instant,
) -> Result<Report, String> {
    let n_poison = ((sizes.jobs as f64 * sizes.percent / 100.0).round() as u64).max(KINDS + 1);
    let clean = drain(backend, url, sizes.jobs, 0).await?;
    tracing::info!(rate = clean.rate, "clean drain");
    let dirty = drain(backend, url, sizes.jobs, n_poison).await?;
    tracing::info!(
        rate = dirty.rate,
        dead = dirty.dead.len(),
        "drain with poison"
    );
    let healthy: HashSet<String> = (0..sizes.jobs).map(|n| format!("job-{n}")).collect();
    let mut notes = dirty.notes;
    let healthy_dead = dirty
        .dead
        .iter()
        .filter(|(id, _)| healthy.contains(id))
        .count();
    if healthy_dead > 0 {
        notes.push(format!("{healthy_dead} healthy jobs were dead-lettered"));
    }
    let no_reason = dirty
        .dead
        .iter()
        .filter(|(_, r)| r.starts_with("(no reason"))
        .count();
    if no_reason > 0 {
        notes.push(format!("{no_reason} dead letters without a reason"));
    }
    let mut reasons: Vec<&String> = dirty.dead.iter().map(|(_, r)| r).collect();
    reasons.sort();
    reasons.dedup();
    for r in reasons.iter().take(8) {
        notes.push(format!("dead-letter reason: {r}"));
    }
    if dirty.refused > 0 {
        notes.push(format!(
            "{} oversized raw writes refused by the broker itself",
            dirty.refused
        ));
    }
    let ratio = if clean.rate > 0.0 {
        dirty.rate / clean.rate
    } else {
        0.0
    };
    notes.push(format!(
        "healthy throughput: clean {:.0}/s, with poison {:.0}/s, ratio {ratio:.2}",
        clean.rate, dirty.rate
    ));
    let poison_dead = (dirty.dead.len() - healthy_dead) as u64;
    let lost_poison = dirty.poison_sent.saturating_sub(poison_dead);
    if lost_poison > 0 {
        notes.push(format!(
            "{lost_poison} of {} poison messages not in the dead-letter queue",
            dirty.poison_sent
        ));
    }
    let lost_healthy = (sizes.jobs - dirty.processed) as u64;
    Ok(Report {
        backend: backend.into(),
        fault: format!(
            "{}% poison: {} raw messages of {KINDS} kinds",
            sizes.percent, dirty.poison_sent
        ),
        sent: sizes.jobs as u64 + dirty.poison_sent,
        send_errors: 0,
        processed: dirty.processed as u64,
        dead_lettered: poison_dead,
        lost: lost_healthy + lost_poison + healthy_dead as u64 + no_reason as u64,
        duplicated: dirty.duplicated,
        extra: 0,
        kills: 0,
        worker_errors: dirty.errors,
        recovery_s: 0.0,
        recovery_limit: None,
        // Two drains of a debug build, one after the other on a 2-core machine, differ by
        // about a tenth with nothing wrong (0.85 and 0.87 seen when a neighbour had the
        // CPU), so 0.8: poison that costs the healthy jobs real time (a backoff, a
        // reconnect per bad message) lands far below it.
        throughput_ratio: Some((ratio, 0.8)),
        seconds: began.elapsed().as_secs_f64(),
        notes,
    })
}
