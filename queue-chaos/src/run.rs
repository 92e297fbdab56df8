//! One fault run, whatever the fault: create a queue, start worker processes, send jobs at
//! a steady pace while the fault schedule runs, wait until every accepted job was processed
//! (or dead-lettered), then count.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue::{Delivery, Message};

use crate::ledger::{now_ms, Ledger};
use crate::report::Report;
use crate::worker::{WorkerArgs, Workers};

/// What one run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Backend name for the report (`redis`, `sqs`, `kafka`, ...).
    pub backend: String,
    /// The fault, described for the report.
    pub fault: String,
    /// URL the producer and the harness use.
    pub url: String,
    /// How the worker processes work (their URL may differ: through a proxy).
    pub worker: WorkerArgs,
    /// Worker processes.
    pub workers: usize,
    /// Jobs to send.
    pub jobs: usize,
    /// Spread the sends evenly over this long.
    pub send_over: Duration,
    /// After the last send, how long every accepted job may take to be processed.
    pub drain_timeout: Duration,
    /// The run fails when recovery took longer (seconds).
    pub recovery_limit: Option<f64>,
}

/// A fault the schedule caused: from `start` to `end` (Unix ms; equal for an instant fault
/// such as a kill).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When the fault began.
    pub start: u64,
    /// When it ended (the broker answered again, the proxy healed).
    pub end: u64,
}

/// What the run gives the fault schedule.
#[derive(Debug)]
pub struct Ctx {
    /// The worker processes.
    pub workers: Workers,
}

/// Runs `plan` with `fault` as the schedule; `fault` returns the windows it caused.
pub async fn run<F, Fut>(plan: Plan, fault: F) -> Result<Report, String>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<(Ctx, Vec<Window>), String>>,
{
    let began = Instant::now();
    let backend = connect_retrying(&plan.url).await?;
    let q = backend.queue(plan.worker.queue.clone());
    q.create().await.map_err(|e| format!("create queue: {e}"))?;
    let dir = std::env::temp_dir().join(format!(
        "queue-chaos-{}-{}",
        plan.worker.queue,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let workers = Workers::start(plan.worker.clone(), &dir, plan.workers).await?;
    tracing::info!(backend = %plan.backend, fault = %plan.fault, "workers up; sending");

    let producer = tokio::spawn(produce(q.clone(), plan.jobs, plan.send_over));
    let (ctx, windows) = fault(Ctx { workers }).await?;
    let mut workers = ctx.workers;
    let sent = producer.await.map_err(|e| format!("producer: {e}"))?;
    tracing::info!(
        accepted = sent.ok.len(),
        errors = sent.errors,
        "sends done; draining"
    );

    let mut ledger = Ledger::new(&dir);
    let deadline = Instant::now() + plan.drain_timeout;
    let mut notes = Vec::new();
    loop {
        ledger.refresh().map_err(|e| e.to_string())?;
        let done = ledger.processed_of(&sent.ok);
        if done == sent.ok.len() || Instant::now() > deadline {
            break;
        }
        for e in workers.exited() {
            notes.push(e);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A last look for late duplicates (a redelivery already under way).
    tokio::time::sleep(Duration::from_secs(1)).await;
    ledger.refresh().map_err(|e| e.to_string())?;
    let kills = workers.kills;
    let errors = worker_errors(&dir);
    workers.stop().await;

    let missing: Vec<&String> = sent
        .ok
        .iter()
        .filter(|id| !ledger.runs.contains_key(*id))
        .collect();
    let dead: HashMap<String, String> = if missing.is_empty() {
        HashMap::new()
    } else {
        dead_letters(&q).await.into_iter().collect()
    };
    let lost: Vec<&&String> = missing
        .iter()
        .filter(|id| !dead.contains_key(**id))
        .collect();
    if !lost.is_empty() {
        notes.push(format!(
            "lost (first 5): {:?}",
            lost.iter().take(5).collect::<Vec<_>>()
        ));
    }
    for (id, reason) in dead.iter().take(3) {
        notes.push(format!("dead-lettered {id}: {reason}"));
    }
    let ok: HashSet<&String> = sent.ok.iter().collect();
    let extra = ledger.runs.keys().filter(|id| !ok.contains(id)).count();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = q.delete().await;
    Ok(Report {
        backend: plan.backend,
        fault: plan.fault,
        sent: sent.ok.len() as u64,
        send_errors: sent.errors,
        processed: (sent.ok.len() - missing.len()) as u64,
        dead_lettered: dead.len() as u64,
        lost: lost.len() as u64,
        duplicated: ledger.repeats(),
        extra: extra as u64,
        kills: kills as u64,
        worker_errors: errors,
        recovery_limit: plan.recovery_limit,
        throughput_ratio: None,
        recovery_s: recovery(&ledger.per_second, &windows),
        seconds: began.elapsed().as_secs_f64(),
        notes,
    })
}

/// The backend errors every worker process counted (its last figure).
pub fn worker_errors(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("errors"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .sum()
}

/// Connects, retrying for up to 30 s (a server the harness just started may not answer yet).
pub async fn connect_retrying(url: &str) -> Result<queue::Backend, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match queue::connect(url).await {
            Ok(b) => return Ok(b),
            Err(e) if Instant::now() > deadline => return Err(format!("connect {url}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What the producer got back.
#[derive(Debug, Default)]
pub struct Sent {
    /// Ids whose send returned Ok.
    pub ok: Vec<String>,
    /// Sends that returned an error (the batch was sent again until it returned Ok).
    pub errors: u64,
}

/// Sends `jobs` jobs with ids `<queue>-<n>` (unique across runs: the idempotency store
/// outlives a run, and would skip a later run's `job-0` as done), in batches of 10 spread evenly over `over`. A batch
/// whose send fails is sent again (same ids) until it returns Ok, for up to two minutes.
pub async fn produce(q: queue::Queue, jobs: usize, over: Duration) -> Sent {
    let p = q.producer();
    let batches = jobs.div_ceil(10).max(1);
    let step = over / batches as u32;
    let start = tokio::time::Instant::now();
    let mut sent = Sent::default();
    for b in 0..batches {
        tokio::time::sleep_until(start + step * b as u32).await;
        let ids: Vec<String> = (b * 10..((b + 1) * 10).min(jobs))
            .map(|n| format!("{}-{n}", q.name()))
            .collect();
        let give_up = Instant::now() + Duration::from_secs(120);
        loop {
            let batch = ids
                .iter()
                .map(|id| Message::new(format!("payload of {id}")).id(id.as_str()))
                .collect();
            match p.send_batch(batch).await {
                Ok(_) => {
                    sent.ok.extend(ids);
                    break;
                }
                Err(e) => {
                    sent.errors += 1;
                    tracing::debug!("send failed, sending again: {e}");
                    if Instant::now() > give_up {
                        tracing::warn!("a batch failed for two minutes; dropped: {e}");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    sent
}

/// Reads the dead-letter queue: every dead letter's message id and `x-queue-dlq-reason`
/// (a list: foreign messages may share an id).
pub async fn dead_letters(q: &queue::Queue) -> Vec<(String, String)> {
    let found = Arc::new(Mutex::new(Vec::new()));
    let f2 = found.clone();
    let w = q
        .dead_letter_queue()
        .worker()
        .poll_wait(Duration::from_millis(500))
        .handle_raw(move |d: Delivery| {
            let reason = d
                .headers
                .get(queue::headers::DLQ_REASON)
                .map(|r| r.to_string())
                .unwrap_or_else(|| "(no reason: moved by the broker)".into());
            f2.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((d.id.into_string(), reason));
            async { Ok(()) }
        })
        .start();
    let Ok(w) = w else {
        return Vec::new();
    };
    // Until nothing new arrived for 5 s (a Kafka consumer takes seconds to join).
    let mut seen = 0;
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = found.lock().unwrap_or_else(|p| p.into_inner()).len();
        if n != seen {
            seen = n;
            quiet = Instant::now();
        }
    }
    w.shutdown().await;
    let out = found.lock().unwrap_or_else(|p| p.into_inner()).clone();
    out
}

/// Seconds from the end of each fault until the processing rate was back to half the rate
/// before the first fault (the slowest window counts); 0 with no fault. A window after
/// which no more work came counts as recovered when its work ran out.
pub fn recovery(per_second: &HashMap<u64, u64>, windows: &[Window]) -> f64 {
    let Some(first) = windows.iter().map(|w| w.start).min() else {
        return 0.0;
    };
    let first_s = first / 1000;
    let mut before: Vec<u64> = per_second
        .iter()
        .filter(|(s, _)| **s < first_s)
        .map(|(_, n)| *n)
        .collect();
    before.sort_unstable();
    let baseline = before.get(before.len() / 2).copied().unwrap_or(1).max(1);
    let last_s = per_second.keys().max().copied().unwrap_or(0);
    let mut worst = 0.0f64;
    for w in windows {
        let end_s = w.end / 1000;
        let back =
            (end_s..=last_s).find(|s| per_second.get(s).copied().unwrap_or(0) * 2 >= baseline);
        let secs = match back {
            Some(s) => (s.saturating_sub(end_s)) as f64,
            None => (last_s.saturating_sub(end_s)) as f64,
        };
        worst = worst.max(secs);
    }
    worst
}

/// A unique queue name for one run.
pub fn queue_name(kind: &str) -> String {
    format!(
        "chaos-{kind}-{}-{}",
        std::process::id(),
        now_ms() % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_the_slowest_return_to_half_the_rate() {
        let mut ps = HashMap::new();
        for s in 100..110 {
            ps.insert(s, 100);
        }
        // Fault from 110 to 112: nothing until 115, then back.
        for s in 115..120 {
            ps.insert(s, 90);
        }
        let w = Window {
            start: 110_000,
            end: 112_500,
        };
        assert_eq!(recovery(&ps, &[w]), 3.0);
        assert_eq!(recovery(&ps, &[]), 0.0);
        // A half-rate second does count as back.
        ps.insert(113, 50);
        assert_eq!(recovery(&ps, &[w]), 1.0);
    }
}
