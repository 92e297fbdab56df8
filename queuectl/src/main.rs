//! `queuectl`: see the library's docs, or `queuectl --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    queuectl::main().await
}
