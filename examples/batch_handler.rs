//! The serverless pattern: a handler takes a batch of up to 10 messages and reports the
//! items that failed (AWS Lambda's `batchItemFailures`); only those are retried, and one
//! that keeps failing ends in the dead-letter queue. The story is
//! `examples/src/batch_handler.rs`.
//!
//! ```text
//! cargo run --example batch_handler                                            # embedded
//! QUEUE_URL=sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566 cargo run --example batch_handler --features sqs
//! ```

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://batch".into());
    match examples::batch_handler::run(&url).await {
        Ok(o) => {
            println!("{o:?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("batch_handler failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
