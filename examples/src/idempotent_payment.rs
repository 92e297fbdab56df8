//! The `idempotent_payment` story: every payment is delivered twice on purpose (the
//! producer retries after a "timeout" whose first send had in fact landed), and the
//! idempotency layer makes the charge happen once. See `examples/idempotent_payment.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::{IdempotencyStore, Job, JobContext, MemoryIdempotency, SendOptions};
use serde::{Deserialize, Serialize};

/// Charge a card.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Charge {
    /// The payment's own id: the idempotency key.
    pub payment: String,
    /// Cents.
    pub amount: u64,
}

impl Job for Charge {
    const NAME: &'static str = "charge";
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// Messages sent (two per payment).
    pub sent: u64,
    /// Charges made, per payment.
    pub charges: BTreeMap<String, u32>,
    /// Total charged, in cents.
    pub total: u64,
    /// Deliveries skipped as duplicates.
    pub duplicates_skipped: u64,
}

/// Ten payments, each sent twice with the same idempotency key.
pub async fn run(url: &str) -> Result<Outcome, Box<dyn std::error::Error>> {
    let backend = queue::connect(url).await?;
    let queue = backend.queue(crate::queue_name(&format!(
        "payments-{}",
        std::process::id()
    )));
    queue.create().await?;
    // The backend's own store where it has one (Redis: shared by every worker process),
    // else one in this process.
    let store: Arc<dyn IdempotencyStore> = backend
        .idempotency_store()
        .unwrap_or_else(|| Arc::new(MemoryIdempotency::new()));
    let run_id = std::process::id();
    let mut sent = 0;
    let mut expected = 0;
    for i in 0..10u64 {
        let charge = Charge {
            payment: format!("pay-{run_id}-{i}"),
            amount: 1_000 + i * 100,
        };
        expected += charge.amount;
        for _ in 0..2 {
            let opts = SendOptions::new().idempotency_key(charge.payment.clone());
            queue.enqueue_with(&charge, opts).await?;
            sent += 1;
        }
    }
    println!("sent {sent} messages for 10 payments ({expected} cents)");

    let ledger = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    let total = Arc::new(Mutex::new(0u64));
    let (ledger2, total2) = (ledger.clone(), total.clone());
    let worker = queue
        .worker()
        .concurrency(4)
        .poll_wait(Duration::from_millis(300))
        .idempotency(store, Duration::from_secs(24 * 3600))
        .handle(move |c: Charge, _ctx: JobContext| {
            let (ledger, total) = (ledger2.clone(), total2.clone());
            async move {
                // The effect: in a real service, the card network's charge call.
                *ledger.lock().unwrap().entry(c.payment.clone()).or_default() += 1;
                *total.lock().unwrap() += c.amount;
                println!("charged {} {} cents", c.payment, c.amount);
                Ok(())
            }
        })
        .start()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = worker.report();
        if r.succeeded + r.duplicates_skipped >= sent {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("payments did not settle: {r:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.shutdown().await;
    let total = *total.lock().unwrap();
    println!(
        "charged {total} cents of {expected}; {} duplicate deliveries skipped",
        report.duplicates_skipped
    );
    crate::remove_queue(&queue).await?;
    let charges = ledger.lock().unwrap().clone();
    Ok(Outcome {
        sent,
        charges,
        total,
        duplicates_skipped: report.duplicates_skipped,
    })
}
