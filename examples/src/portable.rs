//! One application, every backend: priorities, per-key order with a failing job, dedup
//! ids, a delay and retries, unchanged on whatever `QUEUE_URL` names. The application
//! states what it needs once, at start ([`queue::Backend::require`]); a backend that lacks
//! any of it is refused there, with every missing capability named, instead of failing at
//! the first send that needs it. `examples/tests/portable.rs` runs it on every backend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue::{Backoff, Job, JobContext, JobError, MemoryStore, Needs, RetryPolicy, SendOptions};
use serde::{Deserialize, Serialize};

/// The one job type: a named step, so the run's order can be read back.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Step {
    /// What the step is.
    pub name: String,
}

impl Job for Step {
    const NAME: &'static str = "portable_step";
}

/// What this application needs from a backend.
pub fn needs() -> Needs {
    Needs::new()
        .priority()
        .ordering_per_key()
        .dedup()
        .max_delay(Duration::from_secs(60))
}

/// One handler run: the step's name and its attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The step.
    pub name: String,
    /// Its attempt (2 for the retry of `a1`).
    pub attempt: u32,
}

/// What happened, in the order the one-slot worker ran things.
#[derive(Debug)]
pub struct Outcome {
    /// Every handler run, in order.
    pub runs: Vec<Run>,
    /// The id each of the two sends of the dedup id returned.
    pub dedup_ids: (String, String),
    /// How long after its send the delayed step started.
    pub delayed_by: Duration,
}

fn step(name: &str) -> Step {
    Step { name: name.into() }
}

/// Runs the application on `url`: `Err(QueueError::Unmet)` when the backend cannot give
/// what [`needs`] lists (nothing is sent then), else what ran.
pub async fn run(url: &str) -> queue::Result<Outcome> {
    // A shared store for the layers: here the dedup ids that Kafka and SQS standard queues
    // lack natively. In production, a Redis or PostgreSQL store shared by every process.
    let backend = queue::connect(url)
        .await?
        .with_store(Arc::new(MemoryStore::new()));
    backend.require(&needs())?;
    let name = crate::queue_name(&format!(
        "portable-{}-{:04x}",
        std::process::id(),
        fastrand_u16()
    ));
    let queue = backend.queue(name);
    queue.create().await?;
    let p = queue.producer();

    // Sent before the worker starts, so that its one slot sees them all waiting.
    for n in ["low-1", "low-2"] {
        p.enqueue_with(&step(n), SendOptions::new().priority(1))
            .await?;
    }
    p.enqueue_with(&step("urgent"), SendOptions::new().priority(9))
        .await?;
    for n in ["a1", "a2"] {
        p.enqueue_with(&step(n), SendOptions::new().ordering_key("account-a"))
            .await?;
    }
    p.enqueue_with(&step("b1"), SendOptions::new().ordering_key("account-b"))
        .await?;
    let first = p
        .enqueue_with(&step("invoice"), SendOptions::new().dedup_id("invoice-7"))
        .await?;
    let second = p
        .enqueue_with(&step("invoice"), SendOptions::new().dedup_id("invoice-7"))
        .await?;
    let sent_delayed = Instant::now();
    p.enqueue_with(
        &step("reminder"),
        SendOptions::new().delay(Duration::from_secs(2)),
    )
    .await?;

    let runs = Arc::new(Mutex::new(Vec::<Run>::new()));
    let delayed_by = Arc::new(Mutex::new(None));
    let (r, d) = (runs.clone(), delayed_by.clone());
    let worker = queue
        .worker()
        .concurrency(1)
        .lease(Duration::from_secs(10))
        .poll_wait(Duration::from_secs(1))
        .shutdown_grace(Duration::from_secs(5))
        .retry(RetryPolicy::new(
            3,
            Backoff::Fixed(Duration::from_millis(500)),
        ))
        .handle(move |s: Step, ctx: JobContext| {
            r.lock().unwrap().push(Run {
                name: s.name.clone(),
                attempt: ctx.attempt,
            });
            if s.name == "reminder" {
                *d.lock().unwrap() = Some(sent_delayed.elapsed());
            }
            async move {
                if s.name == "a1" && ctx.attempt == 1 {
                    // Fails once: its key waits for the retry; other keys do not.
                    return Err(JobError::retry("the payment provider timed out"));
                }
                Ok(())
            }
        })
        .start()?;
    // low-1, low-2, urgent, a1 twice, a2, b1, invoice, reminder.
    let want = 9;
    let deadline = Instant::now() + Duration::from_secs(90);
    while runs.lock().unwrap().len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
    crate::remove_queue(&queue).await?;
    let runs = runs.lock().unwrap().clone();
    let delayed_by = delayed_by.lock().unwrap().unwrap_or_default();
    Ok(Outcome {
        runs,
        dedup_ids: (first.into_string(), second.into_string()),
        delayed_by,
    })
}

fn fastrand_u16() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        & 0xffff) as u16
}
