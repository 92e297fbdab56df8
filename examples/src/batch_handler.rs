//! The `batch_handler` story: the serverless pattern (AWS Lambda's `batchItemFailures`).
//! One handler call takes a batch; it reports which items failed, and only those are
//! retried. See `examples/batch_handler.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::{Backoff, Delivery, ItemFailure, JobError, Message, RetryPolicy};

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// Handler calls (batches).
    pub batches: u32,
    /// Per order number, how often it was handled.
    pub runs: BTreeMap<u32, u32>,
    /// Orders that ended in the dead-letter queue.
    pub dead: Vec<u32>,
}

/// Orders 0..20: order 3 fails once (a timeout), order 7 always (a bad card).
pub async fn run(url: &str) -> Result<Outcome, Box<dyn std::error::Error>> {
    let backend = queue::connect(url).await?;
    let queue = backend.queue(crate::queue_name(&format!("batch-{}", std::process::id())));
    queue.create().await?;
    let orders: Vec<Message> = (0..20u32)
        .map(|n| Message::new(format!("order {n}")))
        .collect();
    queue.producer().send_batch(orders).await?;

    let runs = Arc::new(Mutex::new(BTreeMap::<u32, u32>::new()));
    let batches = Arc::new(Mutex::new(0u32));
    let (runs2, batches2) = (runs.clone(), batches.clone());
    let worker = queue
        .worker()
        .batch_size(10)
        .poll_wait(Duration::from_millis(300))
        .retry(RetryPolicy::new(
            3,
            Backoff::Fixed(Duration::from_millis(200)),
        ))
        .handle_batch(move |batch: Vec<Delivery>| {
            let (runs, batches) = (runs2.clone(), batches2.clone());
            async move {
                *batches.lock().unwrap() += 1;
                let mut failures = Vec::new();
                let mut line = Vec::new();
                for (i, d) in batch.iter().enumerate() {
                    let n: u32 = std::str::from_utf8(&d.payload)
                        .ok()
                        .and_then(|s| s.strip_prefix("order "))
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u32::MAX);
                    *runs.lock().unwrap().entry(n).or_default() += 1;
                    match n {
                        3 if d.attempt == 1 => {
                            failures.push(ItemFailure::new(i, JobError::retry("gateway timeout")))
                        }
                        7 => failures.push(ItemFailure::new(i, JobError::retry("card declined"))),
                        u32::MAX => {
                            failures.push(ItemFailure::new(i, JobError::permanent("not an order")))
                        }
                        _ => {}
                    }
                    line.push(format!("{n}#{}", d.attempt));
                }
                println!(
                    "batch of {}: {}  -> {} failed",
                    batch.len(),
                    line.join(" "),
                    failures.len()
                );
                failures
            }
        })
        .start()?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = worker.report();
        if r.succeeded == 19 && r.dead_lettered == 1 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the batch did not settle: {r:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.shutdown().await;
    println!("worker: {report:?}");
    // The dead-letter queue is a queue: a raw worker on it reads what ended there.
    let found = Arc::new(Mutex::new(Vec::<(u32, String)>::new()));
    let found2 = found.clone();
    let reader = queue
        .dead_letter_queue()
        .worker()
        .poll_wait(Duration::from_millis(200))
        .handle_raw(move |d: Delivery| {
            let found = found2.clone();
            async move {
                let n = std::str::from_utf8(&d.payload)
                    .ok()
                    .and_then(|s| s.strip_prefix("order "))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::MAX);
                let why = d
                    .headers
                    .get(queue::headers::DLQ_ERROR)
                    .cloned()
                    .unwrap_or_default();
                found.lock().unwrap().push((n, why));
                Ok(())
            }
        })
        .start()?;
    while found.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.shutdown().await;
    let mut dead = Vec::new();
    for (n, why) in found.lock().unwrap().iter() {
        println!("dead letter: order {n} ({why})");
        dead.push(*n);
    }
    crate::remove_queue(&queue).await?;
    let runs = runs.lock().unwrap().clone();
    let batches = *batches.lock().unwrap();
    Ok(Outcome {
        batches,
        runs,
        dead,
    })
}
