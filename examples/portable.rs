//! One application, every backend: priorities, per-key order with a failing job, dedup
//! ids, a delay and retries. The same code runs on every backend that has what it needs,
//! and is refused at start, with every missing capability named, on those that do not.
//!
//! ```text
//! cargo run --example portable                                                  # embedded
//! QUEUE_URL=redis://127.0.0.1:6379 cargo run --example portable --features redis
//! QUEUE_URL=kafka://127.0.0.1:9092 cargo run --example portable --features kafka  # refused
//! QUEUE_URL='memory://app?like=sqs' cargo run --example portable   # what SQS would say
//! ```

use examples::portable;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://portable".to_string());
    match portable::run(&url).await {
        Ok(o) => {
            println!("backend {}: ran, in order:", queue::redact(&url));
            for r in &o.runs {
                println!("  {} (attempt {})", r.name, r.attempt);
            }
            println!(
                "the dedup id's two sends returned {} and {}; the delayed step started after {:?}",
                o.dedup_ids.0, o.dedup_ids.1, o.delayed_by
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e @ queue::QueueError::Unmet { .. }) => {
            println!("refused at start: {e}");
            std::process::ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("portable failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
