//! Duplicates on purpose, one effect: each payment is sent twice with the same
//! idempotency key, and the worker charges it once. The story is
//! `examples/src/idempotent_payment.rs`.
//!
//! ```text
//! cargo run --example idempotent_payment                                        # embedded
//! QUEUE_URL=redis://127.0.0.1:6379 cargo run --example idempotent_payment --features redis
//! ```

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://payments".into());
    match examples::idempotent_payment::run(&url).await {
        Ok(o) => {
            println!("{o:?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idempotent_payment failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
