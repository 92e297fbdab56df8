//! # queuectl
//!
//! The operator's tool for the queue framework, the same on every backend: `queuectl
//! stats`, `peek`, `dlq list|show`, `redrive`, `purge`, `send`, `pause`, `resume`, `job`,
//! and `serve`, a web dashboard with Prometheus metrics. Run `queuectl --help`.
//!
//! The backend is `--url` (or `QUEUE_URL`); job status and the paused state come from the
//! store your workers use (`--status-url` or `STATUS_URL`).
//!
//! What a backend cannot do, the tool says and exits with code 3: peeking a Kafka topic
//! or an SQS main queue (a look would count a receive), purging a Kafka topic.
//!
//! The library side serves applications that want the dashboard inside their own
//! process (the in-memory backend, say): [`dashboard::Dashboard`] and
//! [`dashboard::router`].
#![warn(missing_docs, missing_debug_implementations)]

pub mod cli;
pub mod dashboard;
mod error;
mod output;
mod pages;

pub use error::CliError;
pub use output::Output;

/// Parses the process's arguments, runs the command, and returns its exit code.
pub async fn main() -> std::process::ExitCode {
    use clap::Parser;
    let cli = cli::Cli::parse();
    let mut stdout = std::io::stdout();
    match cli::run(cli, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queuectl: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
