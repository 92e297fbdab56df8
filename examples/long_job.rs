//! A job longer than its lease: heartbeats keep it leased (it is never redelivered while
//! it runs), it reports progress that a reader polls from its status, and a second one
//! is cancelled halfway. The story is `examples/src/long_job.rs`.
//!
//! ```text
//! cargo run --example long_job                                            # embedded
//! QUEUE_URL=redis://127.0.0.1:6379 cargo run --example long_job --features redis
//! ```

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://long-job".into());
    match examples::long_job::run(&url, Default::default()).await {
        Ok(o) => {
            println!("{o:?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("long_job failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
