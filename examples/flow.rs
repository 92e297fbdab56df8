//! Flows and batches: an order pipeline as a flow (charge, then e-mail and invoice side
//! by side, then ship with the invoice's number; a declined card stops the invoice and
//! the shipment but not the e-mail) and a batch of 1,000 thumbnails whose `on_complete`
//! report runs once all have finished. The story is `examples/src/flow.rs`.
//!
//! ```text
//! cargo run --example flow                                            # embedded
//! QUEUE_URL=redis://127.0.0.1:6379 cargo run --example flow --features redis
//! ```

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://flow".into());
    match examples::flow::run(&url, 1_000).await {
        Ok(o) => {
            println!("{o:#?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flow failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
