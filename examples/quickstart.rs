//! Quickstart: a producer enqueues jobs, a worker processes them, one job fails for good
//! and lands in the dead-letter queue, one fails twice and succeeds on its third attempt.
//!
//! ```text
//! cargo run --example quickstart                                   # embedded, no server
//! QUEUE_URL=redis://127.0.0.1:6379 cargo run --example quickstart --features redis
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue::{headers, Backoff, Delivery, Job, JobContext, JobError, RetryPolicy};
use serde::{Deserialize, Serialize};

/// The job: send one e-mail.
#[derive(Serialize, Deserialize, Debug)]
struct SendEmail {
    to: String,
    subject: String,
}

impl Job for SendEmail {
    const NAME: &'static str = "send_email";
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://quickstart".to_string());
    let backend = queue::connect(&url).await?;
    // A fresh queue per run, so that counts are this run's own on a shared server.
    let name = examples::queue_name(&format!("quickstart-{}", std::process::id()));
    let queue = backend.queue(name.clone());
    queue.create().await?;
    println!(
        "backend: {} ({}), queue: {name}",
        backend.kind(),
        queue::redact(&url)
    );

    // The request path: enqueue and answer at once (HTTP 202 Accepted).
    let producer = queue.producer();
    for to in [
        "ada@example.com",
        "flaky@example.com",
        "bounce@invalid",
        "grace@example.com",
        "linus@example.com",
    ] {
        let id = producer
            .enqueue(&SendEmail {
                to: to.into(),
                subject: "Welcome!".into(),
            })
            .await?;
        println!("enqueued  {id}  send_email to {to}");
    }

    // The worker: retries with exponential backoff, dead-letters what keeps failing.
    let flaky_failures = Arc::new(AtomicU32::new(0));
    let flaky = flaky_failures.clone();
    let worker = queue
        .worker()
        .concurrency(4)
        .poll_wait(Duration::from_secs(1))
        .retry(RetryPolicy::new(
            4,
            Backoff::exponential(Duration::from_millis(200), Duration::from_secs(2)),
        ))
        .handle(move |job: SendEmail, ctx: JobContext| {
            let flaky = flaky.clone();
            async move {
                match job.to.as_str() {
                    "bounce@invalid" => {
                        println!(
                            "attempt {}  {}: invalid address, giving up",
                            ctx.attempt, job.to
                        );
                        Err(JobError::permanent("mailbox does not exist"))
                    }
                    "flaky@example.com" if ctx.attempt < 3 => {
                        flaky.fetch_add(1, Ordering::SeqCst);
                        println!(
                            "attempt {}  {}: SMTP timeout, will retry",
                            ctx.attempt, job.to
                        );
                        Err(JobError::retry("SMTP timeout"))
                    }
                    _ => {
                        println!(
                            "attempt {}  {}: sent \"{}\"",
                            ctx.attempt, job.to, job.subject
                        );
                        Ok(())
                    }
                }
            }
        })
        .start()?;

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = worker.report();
        if r.succeeded == 4 && r.dead_lettered == 1 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("jobs did not settle within 120 s: {r:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.shutdown().await;

    println!();
    println!("processed:     {}", report.succeeded);
    println!("retried:       {}", report.retried);
    println!("dead-lettered: {}", report.dead_lettered);

    // Dead letters are a queue of their own: a worker on it reads them (here it prints
    // and acks them, which removes them; `queue.redrive(n)` would move them home).
    let dead = queue.dead_letter_queue();
    let seen = Arc::new(AtomicU32::new(0));
    let seen2 = seen.clone();
    let reader = dead
        .worker()
        .poll_wait(Duration::from_millis(200))
        .handle_raw(move |d: Delivery| {
            seen2.fetch_add(1, Ordering::SeqCst);
            let h = |k: &str| d.headers.get(k).cloned().unwrap_or_else(|| "?".into());
            println!(
                "in the DLQ:    {} after {} attempt(s), reason {}: {}",
                d.id,
                h(headers::DLQ_ATTEMPTS),
                h(headers::DLQ_REASON),
                h(headers::DLQ_ERROR),
            );
            async { Ok(()) }
        })
        .start()?;
    let until = Instant::now() + Duration::from_secs(10);
    while seen.load(Ordering::SeqCst) < 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.shutdown().await;
    let stats = queue.stats().await?;
    println!(
        "queue stats:   ready {}, in flight {}, delayed {}, dead {}",
        stats.ready, stats.in_flight, stats.delayed, stats.dead
    );
    queue.delete().await?;
    Ok(())
}
