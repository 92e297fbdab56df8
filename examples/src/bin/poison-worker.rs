//! A worker whose handler kills its process on a poison job: the victim of
//! `tests/crash_loop.rs` and `tests/key_held_crash.rs`. Any payload `poison` aborts the
//! process (as a native crash or an out-of-memory kill would); a payload starting with
//! `fail-once` fails (retryable, again in 3 s) on its first attempt and prints
//! `failed <payload>`; any
//! other job succeeds and prints `done <payload>`.
//!
//! Usage: `poison-worker QUEUE_URL STATUS_URL QUEUE LEASE_MS`

use std::io::Write;
use std::time::Duration;

use queue::{Delivery, JobError, JobStatuses};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, status_url, queue, lease] = &args[..] else {
        eprintln!("usage: poison-worker QUEUE_URL STATUS_URL QUEUE LEASE_MS");
        return std::process::ExitCode::FAILURE;
    };
    let Ok(lease) = lease.parse::<u64>() else {
        eprintln!("poison-worker: LEASE_MS must be a number");
        return std::process::ExitCode::FAILURE;
    };
    let opened = async {
        let store = queue::connect_store(status_url).await?;
        let backend = queue::connect(url)
            .await?
            .with_status(JobStatuses::new(store));
        backend
            .queue(queue.clone())
            .worker()
            .concurrency(1)
            .lease(Duration::from_millis(lease))
            .poll_wait(Duration::from_millis(500))
            .handle_raw(|d: Delivery| async move {
                if d.payload.as_ref() == b"poison" {
                    std::process::abort();
                }
                let text = String::from_utf8_lossy(&d.payload).into_owned();
                if text.starts_with("fail-once") && d.attempt == 1 {
                    println!("failed {text}");
                    let _ = std::io::stdout().flush();
                    return Err(JobError::retry("the first attempt fails")
                        .retry_after(Duration::from_secs(3)));
                }
                println!("done {text}");
                let _ = std::io::stdout().flush();
                Ok(())
            })
            .start()
    };
    let _worker = match opened.await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("poison-worker: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    std::future::pending::<()>().await;
    std::process::ExitCode::SUCCESS
}
