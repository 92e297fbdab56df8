//! A worker for flows' and batches' jobs, on Redis with their state in the same Redis: the
//! victim of `tests/kill_flow.rs`, which SIGKILLs it again and again while flows and
//! batches run. Each job sleeps a little (so kills land mid-job and mid-settlement alike);
//! a flow's job sets its node's number as its result, and one with dependencies checks
//! that it sees all their results; a batch's callback appends a line to `CALLBACK_LOG`
//! once its handler is done.
//!
//! Usage: `QUEUE_URL=redis://127.0.0.1:6379 CALLBACK_LOG=FILE flow-worker QUEUE LEASE_MS`

use std::time::Duration;

use examples::flow::Node;
use queue::{JobContext, JobError};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(queue), Some(lease)) = (args.next(), args.next().and_then(|v| v.parse::<u64>().ok()))
    else {
        eprintln!("usage: flow-worker QUEUE LEASE_MS");
        return std::process::ExitCode::FAILURE;
    };
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let backend = match connect(&url).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("flow-worker: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let worker = backend
        .queue(queue)
        .worker()
        .concurrency(16)
        .lease(Duration::from_millis(lease))
        .poll_wait(Duration::from_millis(200))
        .handle(|job: Node, ctx: JobContext| async move {
            let Some(flow) = ctx.flow() else {
                let batch = ctx
                    .batch_id()
                    .ok_or_else(|| JobError::permanent("neither a flow's job nor a batch's"))?;
                tokio::time::sleep(Duration::from_millis(fastrand_ms())).await;
                if ctx.headers.contains_key(queue::headers::BATCH_CALLBACK) {
                    log_callback(batch, job.n)?;
                }
                return Ok(());
            };
            let seen: Vec<u32> = flow.results().await.map_err(JobError::retry)?;
            if seen.len() != job.deps {
                return Err(JobError::permanent(format!(
                    "node {} saw {} results of its {} dependencies",
                    job.n,
                    seen.len(),
                    job.deps
                )));
            }
            tokio::time::sleep(Duration::from_millis(fastrand_ms())).await;
            ctx.set_result(&job.n);
            Ok(())
        })
        .start();
    let _worker = match worker {
        Ok(w) => w,
        Err(e) => {
            eprintln!("flow-worker: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("ready");
    std::future::pending::<()>().await;
    std::process::ExitCode::SUCCESS
}

/// Appends `batch n` to the file `CALLBACK_LOG` names.
fn log_callback(batch: &str, n: u32) -> Result<(), JobError> {
    use std::io::Write;
    let path = std::env::var("CALLBACK_LOG").map_err(|_| JobError::permanent("no CALLBACK_LOG"))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(JobError::retry)?;
    writeln!(f, "{batch} {n}").map_err(JobError::retry)
}

async fn connect(url: &str) -> queue::Result<queue::Backend> {
    let store = queue::connect_store(url).await?;
    Ok(queue::connect(url).await?.with_store(store))
}

/// 10 to 60 ms, from the clock's low bits (no random crate for one number).
fn fastrand_ms() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    10 + u64::from(nanos % 50)
}
