//! The `long_job` story: a job that runs longer than its lease, reports progress, and can
//! be cancelled. See `examples/long_job.rs`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use queue::{Job, JobContext, JobError, JobState, JobStatuses, MemoryStore};
use serde::{Deserialize, Serialize};

/// Re-encode one video, in `steps` steps of `step_ms` each.
#[derive(Serialize, Deserialize, Debug)]
pub struct Encode {
    /// Which video.
    pub video: String,
    /// Steps of work.
    pub steps: u32,
    /// Milliseconds per step.
    pub step_ms: u64,
}

impl Job for Encode {
    const NAME: &'static str = "encode";
}

/// The story's timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The worker's lease (shorter than a job).
    pub lease: Duration,
    /// Steps per job.
    pub steps: u32,
    /// Time per step.
    pub step: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        // A 6-second job on a 2-second lease: without heartbeats it would be redelivered
        // twice while it runs.
        Timing {
            lease: Duration::from_secs(2),
            steps: 6,
            step: Duration::from_secs(1),
        }
    }
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// The state the job left to finish ended in (`succeeded`).
    pub finished: JobState,
    /// Its attempt count (1: never redelivered while it ran).
    pub attempts: u32,
    /// Handler runs of that job (1: the heartbeats kept its lease).
    pub runs: u32,
    /// Progress values seen while it ran.
    pub progress_seen: Vec<u8>,
    /// The state of the job cancelled halfway (`cancelled`).
    pub cancelled: JobState,
}

/// Runs the story on the backend at `url`.
pub async fn run(url: &str, t: Timing) -> Result<Outcome, Box<dyn std::error::Error>> {
    let statuses = JobStatuses::new(Arc::new(MemoryStore::new()));
    let backend = queue::connect(url).await?.with_status(statuses);
    let queue = backend.queue(crate::queue_name(&format!(
        "long-job-{}",
        std::process::id()
    )));
    queue.create().await?;
    let runs = Arc::new(AtomicU32::new(0));
    let runs2 = runs.clone();
    let worker = queue
        .worker()
        .lease(t.lease)
        .poll_wait(Duration::from_millis(500))
        .handle(move |job: Encode, ctx: JobContext| {
            if job.video == "keeper.mp4" {
                runs2.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                for i in 1..=job.steps {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(job.step_ms)) => {}
                        _ = ctx.cancelled() => {
                            println!("{}: cancelled at step {i}, cleaning up", job.video);
                            return Err(JobError::permanent("cancelled"));
                        }
                    }
                    let pct = (i * 100 / job.steps) as u8;
                    ctx.progress(pct, Some(&format!("step {i} of {}", job.steps)))
                        .await?;
                }
                Ok(())
            }
        })
        .start()?;

    let step_ms = t.step.as_millis() as u64;
    let keeper = queue
        .enqueue(&Encode {
            video: "keeper.mp4".into(),
            steps: t.steps,
            step_ms,
        })
        .await?;
    let doomed = queue
        .enqueue(&Encode {
            video: "doomed.mp4".into(),
            steps: t.steps,
            step_ms,
        })
        .await?;
    println!(
        "two {}-step jobs on a {:?} lease: {keeper} and {doomed}",
        t.steps, t.lease
    );

    let mut progress_seen = Vec::new();
    let mut cancel_sent = false;
    let deadline =
        tokio::time::Instant::now() + t.step * (t.steps + 4) * 3 + Duration::from_secs(30);
    let finished = loop {
        let s = backend.job_status(&keeper).await?.ok_or("status missing")?;
        if let Some(p) = &s.progress {
            if progress_seen.last() != Some(&p.percent) {
                println!(
                    "{keeper}: {:>3}% {}",
                    p.percent,
                    p.message.clone().unwrap_or_default()
                );
                progress_seen.push(p.percent);
            }
        }
        // Cancel the other one halfway through, as a user clicking "cancel" would.
        if !cancel_sent && progress_seen.last().is_some_and(|p| *p >= 50) {
            println!(
                "{doomed}: cancel -> {:?}",
                backend.cancel_job(&doomed).await?
            );
            cancel_sent = true;
        }
        if s.state.is_finished() {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the long job did not finish: {s:?}").into());
        }
        tokio::time::sleep(t.step / 4).await;
    };
    let cancelled = loop {
        let s = backend.job_status(&doomed).await?.ok_or("status missing")?;
        if s.state.is_finished() || tokio::time::Instant::now() > deadline {
            break s.state;
        }
        tokio::time::sleep(t.step / 4).await;
    };
    let report = worker.shutdown().await;
    println!(
        "{keeper}: {} after attempt {} ({} run); {doomed}: {cancelled}; worker: {report:?}",
        finished.state,
        finished.attempt,
        runs.load(Ordering::SeqCst)
    );
    crate::remove_queue(&queue).await?;
    Ok(Outcome {
        finished: finished.state,
        attempts: finished.attempt,
        runs: runs.load(Ordering::SeqCst),
        progress_seen,
        cancelled,
    })
}
