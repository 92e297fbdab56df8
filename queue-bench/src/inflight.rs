//! In-flight mode: the worker's memory with many jobs running at once.
//!
//! N messages are sent first; then a worker with concurrency N starts, and every handler
//! waits until the N-th has started. The figure is the bench process's resident memory at
//! that point minus what it was just before the worker started (so the stored messages of
//! the in-memory backend are not counted), divided by N for the cost per job in flight.
//! Beside it, the whole process's peak resident memory (VmHWM: the producer that sent the
//! N messages, the worker, the runtime, and for the in-memory backend the stored messages),
//! which is the figure to hold against a budget. It is the peak since the process started:
//! measure one backend per run (`--backends redis`) for a figure of that backend alone.

use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::{Delivery, Message};

use crate::{payload, peak_rss_kb, progress, rss_kb, unique, url_for, Args};

/// One in-flight measurement.
#[derive(Debug, serde::Serialize)]
pub(crate) struct InFlight {
    pub(crate) backend: String,
    pub(crate) jobs: usize,
    pub(crate) worker_mb: f64,
    pub(crate) kb_per_job: f64,
    pub(crate) process_peak_mb: f64,
    pub(crate) all_started_after_s: f64,
}

pub(crate) async fn run(a: &Args, kind: &str, n: usize) -> Result<InFlight, String> {
    let backend = queue_core::connect(&url_for(a, kind)?)
        .await
        .map_err(|e| e.to_string())?;
    let queue = backend.queue(unique("bench-inflight"));
    queue.create().await.map_err(|e| e.to_string())?;
    let chunk = backend.capabilities().max_batch.clamp(1, 100);
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk);
        let msgs = (0..k).map(|_| Message::new(payload(a.payload))).collect();
        queue
            .producer()
            .send_batch(msgs)
            .await
            .map_err(|e| e.to_string())?;
        left -= k;
    }
    let base = rss_kb();
    let started = Arc::new(AtomicUsize::new(0));
    let (release, held) = tokio::sync::watch::channel(false);
    let s2 = started.clone();
    let t0 = Instant::now();
    let worker = queue
        .worker()
        .concurrency(n)
        .lease(Duration::from_secs(600))
        .poll_wait(Duration::from_secs(1))
        .handle_raw(move |_d: Delivery| {
            s2.fetch_add(1, AO::SeqCst);
            let mut held = held.clone();
            async move {
                let _ = held.wait_for(|go| *go).await;
                Ok(())
            }
        })
        .start()
        .map_err(|e| e.to_string())?;
    let bar = progress(n, format!("{kind} in flight"));
    let mut peak = 0;
    let result = loop {
        let now = started.load(AO::SeqCst);
        bar.set_position(now as u64);
        peak = peak.max(rss_kb());
        if now >= n {
            // Let the last receives settle, then read memory once more.
            tokio::time::sleep(Duration::from_millis(200)).await;
            peak = peak.max(rss_kb());
            break Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(300) {
            break Err(format!("only {now} of {n} jobs started within 300 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    bar.finish_and_clear();
    let _ = release.send(true);
    let report = worker.shutdown().await;
    let _ = queue.delete().await;
    let took = result?;
    if report.succeeded < n as u64 {
        return Err(format!(
            "{} of {n} in-flight jobs finished",
            report.succeeded
        ));
    }
    let kb = peak.saturating_sub(base) as f64;
    Ok(InFlight {
        backend: kind.to_string(),
        jobs: n,
        worker_mb: kb / 1024.0,
        kb_per_job: kb / n as f64,
        process_peak_mb: peak_rss_kb() as f64 / 1024.0,
        all_started_after_s: took.as_secs_f64(),
    })
}
