//! A worker that takes jobs and never finishes them: the victim of `tests/kill_worker.rs`,
//! which SIGKILLs it mid-job. Prints `holding <id>` for each job it starts.
//!
//! Usage: `QUEUE_URL=redis://127.0.0.1:6379 crash-worker QUEUE LEASE_MS`

use std::io::Write;
use std::time::Duration;

use queue::Delivery;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(queue), Some(lease)) = (args.next(), args.next().and_then(|v| v.parse::<u64>().ok()))
    else {
        eprintln!("usage: crash-worker QUEUE LEASE_MS");
        return std::process::ExitCode::FAILURE;
    };
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let q = match queue::connect(&url).await {
        Ok(q) => q,
        Err(e) => {
            eprintln!("crash-worker: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let worker = q
        .queue(queue)
        .worker()
        .concurrency(4)
        .lease(Duration::from_millis(lease))
        .poll_wait(Duration::from_millis(500))
        .handle_raw(|d: Delivery| async move {
            println!("holding {}", d.id);
            let _ = std::io::stdout().flush();
            std::future::pending::<queue::JobResult>().await
        })
        .start();
    let _worker = match worker {
        Ok(w) => w,
        Err(e) => {
            eprintln!("crash-worker: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    std::future::pending::<()>().await;
    std::process::ExitCode::SUCCESS
}
