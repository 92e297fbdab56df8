//! The HTTP 202 Accepted pattern: `POST /reports` answers at once with the job's id and a
//! `Location` to poll; a worker builds the report meanwhile; `GET /jobs/{id}` tells how
//! far it got; `DELETE /jobs/{id}` cancels it. The service is `examples/web/src/lib.rs`.
//!
//! ```text
//! cargo run --example web                       # embedded queue and status, one process
//! curl -si -X POST localhost:3000/reports -H 'content-type: application/json' \
//!      -d '{"kind":"sales","rows":5000}'        # 202 Accepted, Location: /jobs/<id>
//! curl -s localhost:3000/jobs/<id>              # {"state":"running","progress":{"percent":30,…},…}
//! curl -si -X DELETE localhost:3000/jobs/<id>   # 202 cancel_requested (or 200, 409)
//!
//! # producer and worker as separate processes, over Redis (queue and status):
//! QUEUE_URL=redis://127.0.0.1:6379 STATUS_URL=redis://127.0.0.1:6379 \
//!   cargo run --example web --features redis -- --role worker &
//! QUEUE_URL=redis://127.0.0.1:6379 STATUS_URL=redis://127.0.0.1:6379 \
//!   cargo run --example web --features redis -- --role api
//! ```

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match example_web::Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("web: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let role = config.role;
    // SIGTERM (a deploy) or Ctrl-C: running jobs finish within `shutdown_grace`.
    let shutdown = queue::shutdown_signal();
    let ready = move |addr| match role {
        example_web::Role::Worker => println!("web: worker running (Ctrl-C or SIGTERM stops it)"),
        _ => println!("web: listening on http://{addr} (Ctrl-C or SIGTERM stops it)"),
    };
    match example_web::run(config, ready, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
