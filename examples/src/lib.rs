//! Helpers shared by the runnable examples in this folder (`quickstart.rs`, ...).
//!
//! The examples pick their backend from `QUEUE_URL` through `queue::connect`, which knows
//! the schemes of the drivers this package was built with (features `redis`, `sqs`,
//! `kafka`).

/// A queue name valid on every backend: letters, digits, `-` and `_` (SQS's rule; the SQS
/// driver adds `.fifo` itself in FIFO mode).
pub fn queue_name(base: &str) -> String {
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}
