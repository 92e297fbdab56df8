//! The `flow` story: an order pipeline as flows (`queue::flow`), and a batch with a
//! report (`queue::batch`). See `examples/flow.rs`.
//!
//! - Each order: charge the card; then e-mail the customer and write the invoice side by
//!   side; then ship, reading the invoice's number. The e-mail goes whatever became of
//!   the charge ([`OnFailure::Ignore`]); the invoice and the shipment only after a charge
//!   that worked (the default, [`OnFailure::Fail`]: dead-lettered `dependency-failed`
//!   without running).
//! - A batch of thumbnails with a report that runs once every thumbnail has finished,
//!   whether it worked or not (Sidekiq's `on_complete`): the batch's `on_complete`
//!   callback, which reads the batch's counts.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue::flow::{Flow, NodeState, OnFailure};
use queue::{Backend, Job, JobContext, JobError, MemoryStore, RetryPolicy};
use serde::{Deserialize, Serialize};

/// Charge an order's card.
#[derive(Serialize, Deserialize, Debug)]
pub struct Charge {
    /// The order.
    pub order: String,
    /// Amount, in cents.
    pub cents: u64,
    /// The card is declined.
    pub declined: bool,
}
impl Job for Charge {
    const NAME: &'static str = "charge";
}

/// E-mail the customer about an order.
#[derive(Serialize, Deserialize, Debug)]
pub struct Email {
    /// The order.
    pub order: String,
}
impl Job for Email {
    const NAME: &'static str = "email";
}

/// Write an order's invoice; its result is the invoice number.
#[derive(Serialize, Deserialize, Debug)]
pub struct Invoice {
    /// The order.
    pub order: String,
}
impl Job for Invoice {
    const NAME: &'static str = "invoice";
}

/// Ship an order, with its invoice.
#[derive(Serialize, Deserialize, Debug)]
pub struct Ship {
    /// The order.
    pub order: String,
}
impl Job for Ship {
    const NAME: &'static str = "ship";
}

/// Make one thumbnail (number 13 fails: a corrupt image).
#[derive(Serialize, Deserialize, Debug)]
pub struct Thumbnail {
    /// Which image.
    pub image: u32,
}
impl Job for Thumbnail {
    const NAME: &'static str = "thumbnail";
}

/// Report on a batch once every thumbnail has finished.
#[derive(Serialize, Deserialize, Debug)]
pub struct Report;
impl Job for Report {
    const NAME: &'static str = "report";
}

/// The job of every node of `tests/kill_flow.rs`'s flows, and of its victim process
/// `flow-worker`: node `n`, which has `deps` dependencies (one definition, so the test and
/// the worker it kills agree on the wire).
#[derive(Serialize, Deserialize, Debug)]
pub struct Node {
    /// Its node number.
    pub n: u32,
    /// How many dependencies' results it must see.
    pub deps: usize,
}
impl Job for Node {
    const NAME: &'static str = "node";
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// Each order with its jobs' states: charge, email, invoice, ship.
    pub orders: Vec<(String, Vec<NodeState>)>,
    /// What each shipment read as its invoice number.
    pub shipped_with: Vec<String>,
    /// Thumbnails made and failed, as the report counted them.
    pub report: (u32, u32),
    /// Report runs (1).
    pub report_runs: u32,
    /// From adding the batch to its report.
    pub batch_time: Duration,
}

/// Runs the story on the backend at `url`, with `thumbnails` images in the batch.
pub async fn run(url: &str, thumbnails: u32) -> Result<Outcome, Box<dyn std::error::Error>> {
    // One process here, so an in-memory store will do; workers in several processes share
    // a Redis or PostgreSQL store (`queue::connect_store`).
    let backend = queue::connect(url)
        .await?
        .with_store(Arc::new(MemoryStore::new()));
    let name = |q: &str| crate::queue_name(&format!("flow-{q}-{}", std::process::id()));
    let (orders, images) = (backend.queue(name("orders")), backend.queue(name("images")));
    orders.create().await?;
    images.create().await?;
    let shipped_with = Arc::new(std::sync::Mutex::new(Vec::new()));
    let report = Arc::new(std::sync::Mutex::new((0, 0)));
    let report_runs = Arc::new(AtomicU32::new(0));
    let workers = [
        order_worker(&backend, orders.name(), shipped_with.clone())?,
        image_worker(&backend, images.name(), report.clone(), report_runs.clone())?,
    ];

    let mut ids = Vec::new();
    for (order, declined) in [("order-1", false), ("order-2", true)] {
        let q = orders.name();
        let mut f = Flow::with_id(order.to_string() + &format!("-{}", std::process::id()));
        let charge = f.job(
            q,
            &Charge {
                order: order.into(),
                cents: 4_200,
                declined,
            },
        )?;
        let email = f.job(
            q,
            &Email {
                order: order.into(),
            },
        )?;
        let invoice = f.job(
            q,
            &Invoice {
                order: order.into(),
            },
        )?;
        let ship = f.job(
            q,
            &Ship {
                order: order.into(),
            },
        )?;
        f.depends_on(email, charge, OnFailure::Ignore);
        f.after(invoice, &[charge]).after(ship, &[invoice]);
        ids.push((order.to_string(), backend.add_flow(f).await?));
    }

    let started = Instant::now();
    let batch = backend
        .new_batch()
        .description("album thumbnails")
        .on_complete(images.name(), &Report)
        .open()
        .await?;
    let all: Vec<Thumbnail> = (0..thumbnails).map(|image| Thumbnail { image }).collect();
    batch.add(images.name(), &all).await?;
    batch.close().await?;
    until_batch_finished(&backend, batch.id()).await?;
    let batch_time = started.elapsed();

    let mut out = Vec::new();
    for (order, id) in ids {
        let s = until_finished(&backend, id.as_str()).await?;
        out.push((order, s.nodes.iter().map(|n| n.state).collect()));
    }
    for w in workers {
        w.shutdown().await;
    }
    crate::remove_queue(&orders).await?;
    crate::remove_queue(&images).await?;
    let shipped_with = shipped_with
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let report = *report.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Outcome {
        orders: out,
        shipped_with,
        report,
        report_runs: report_runs.load(Ordering::SeqCst),
        batch_time,
    })
}

async fn until_finished(
    backend: &Backend,
    id: &str,
) -> Result<queue::flow::FlowStatus, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    loop {
        match backend.flow_status(id).await? {
            Some(s) if s.is_finished() => return Ok(s),
            _ if t0.elapsed() > Duration::from_secs(120) => {
                return Err(format!("flow {id} did not finish in two minutes").into())
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn until_batch_finished(
    backend: &Backend,
    id: &str,
) -> Result<queue::batch::BatchStatus, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    loop {
        match backend.batch_status(id).await? {
            Some(s) if s.is_finished() => return Ok(s),
            _ if t0.elapsed() > Duration::from_secs(120) => {
                return Err(format!("batch {id} did not finish in two minutes").into())
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn order_worker(
    backend: &Backend,
    queue: &str,
    shipped_with: Arc<std::sync::Mutex<Vec<String>>>,
) -> queue::Result<queue::WorkerHandle> {
    backend
        .queue(queue)
        .worker()
        .concurrency(8)
        .poll_wait(Duration::from_millis(200))
        .retry(RetryPolicy::none())
        .handle(|c: Charge, ctx: JobContext| async move {
            if c.declined {
                return Err(JobError::permanent("card declined"));
            }
            ctx.set_result(&format!("ch_{}_{}", c.order, c.cents));
            Ok(())
        })
        .handle(|e: Email, _ctx: JobContext| async move {
            println!("mail: about {}", e.order);
            Ok(())
        })
        .handle(|i: Invoice, ctx: JobContext| async move {
            ctx.set_result(&format!("INV-{}", i.order));
            Ok(())
        })
        .handle(move |s: Ship, ctx: JobContext| {
            let shipped_with = shipped_with.clone();
            async move {
                let flow = ctx
                    .flow()
                    .ok_or_else(|| JobError::permanent("not in a flow"))?;
                let invoices: Vec<String> = flow.results().await.map_err(JobError::retry)?;
                println!("ship: {} with invoice {invoices:?}", s.order);
                shipped_with
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(invoices);
                Ok(())
            }
        })
        .start()
}

fn image_worker(
    backend: &Backend,
    queue: &str,
    report: Arc<std::sync::Mutex<(u32, u32)>>,
    runs: Arc<AtomicU32>,
) -> queue::Result<queue::WorkerHandle> {
    let b = backend.clone();
    backend
        .queue(queue)
        .worker()
        .concurrency(32)
        .poll_wait(Duration::from_millis(200))
        .retry(RetryPolicy::none())
        .handle(|t: Thumbnail, _ctx: JobContext| async move {
            if t.image == 13 {
                return Err(JobError::permanent("corrupt image"));
            }
            Ok(())
        })
        .handle(move |_: Report, ctx: JobContext| {
            let (report, runs, b) = (report.clone(), runs.clone(), b.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let id = ctx
                    .batch_id()
                    .ok_or_else(|| JobError::permanent("not a batch's callback"))?;
                let s = b
                    .batch_status(id)
                    .await?
                    .ok_or_else(|| JobError::permanent("its batch expired"))?;
                println!("report: {} thumbnails made, {} failed", s.succeeded, s.dead);
                *report.lock().unwrap_or_else(|p| p.into_inner()) = (s.succeeded, s.dead);
                Ok(())
            }
        })
        .start()
}
