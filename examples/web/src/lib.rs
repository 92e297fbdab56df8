//! The `web` example's service: the HTTP 202 Accepted pattern over a queue.
//!
//! - `POST /reports` with `{"kind": "sales", "rows": 2000}` enqueues a report job and
//!   answers `202 Accepted` at once, with `Location: /jobs/{id}`;
//! - `GET /jobs/{id}` answers the job's status as JSON (state, attempt, progress, result,
//!   last error, times);
//! - `DELETE /jobs/{id}` cancels it: `200` when it had not started (it never will), `202`
//!   when it is running (its handler stops within about a second), `409` when it already
//!   finished;
//! - bad requests get `400` with a JSON error, unknown ids `404`, a status store that is
//!   down `503`.
//!
//! The report job takes `rows` milliseconds, in ten steps, reporting progress after each
//! and stopping when cancelled. `examples/web/web.rs` is the binary; this library is what
//! it runs, so that the tests drive the same service over real HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use queue::{Backend, CancelOutcome, Job, JobContext, JobError, MessageId, Queue, QueueError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The job: build a report of `rows` rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// What report.
    pub kind: String,
    /// How many rows (1 to 600,000; the job takes that many milliseconds).
    pub rows: u32,
}

impl Job for Report {
    const NAME: &'static str = "report";
}

/// What a finished report job stores as its result.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportResult {
    /// The report's kind.
    pub kind: String,
    /// Rows written.
    pub rows: u32,
    /// Where the report would be downloaded.
    pub download: String,
}

/// The worker for report jobs: ten steps, progress after each, stops when cancelled or
/// when the worker shuts down (then it is retried later).
pub fn worker(queue: &Queue) -> queue::Worker {
    queue
        .worker()
        .concurrency(4)
        .poll_wait(Duration::from_millis(500))
        .handle_returning(|job: Report, ctx: JobContext| async move {
            let step = Duration::from_millis(u64::from(job.rows) / 10);
            for i in 1..=10u8 {
                tokio::select! {
                    _ = tokio::time::sleep(step) => {}
                    _ = ctx.cancelled() => return Err(JobError::permanent("cancelled by request")),
                    _ = ctx.shutting_down() => return Err(JobError::retry("worker shutting down")),
                }
                ctx.progress(
                    i * 10,
                    Some(&format!(
                        "{} of {} rows",
                        job.rows / 10 * u32::from(i),
                        job.rows
                    )),
                )
                .await?;
            }
            Ok::<_, JobError>(ReportResult {
                download: format!("/downloads/{}.csv", ctx.id),
                kind: job.kind,
                rows: job.rows,
            })
        })
}

/// The HTTP side: a backend with job status on, and the queue it sends to.
#[derive(Clone, Debug)]
pub struct App {
    backend: Backend,
    queue: Queue,
}

impl App {
    /// Reports go to `queue` of `backend`, which must have job status on
    /// ([`Backend::with_status`]).
    pub fn new(backend: Backend, queue: &str) -> Result<Self, QueueError> {
        if backend.status().is_none() {
            return Err(QueueError::NoStatusStore);
        }
        let queue = backend.queue(queue);
        Ok(App { backend, queue })
    }

    /// The queue reports go to.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/reports", post(create_report))
            .route("/jobs/{id}", get(job_status).delete(cancel_job))
            .with_state(self)
    }
}

/// A JSON error with its status code.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// The status code for a queue or store error.
fn failure(e: QueueError) -> Response {
    match e {
        QueueError::JobNotFound(id) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        e @ QueueError::JobFinished { .. } => error(StatusCode::CONFLICT, e),
        e @ (QueueError::InvalidOption(_) | QueueError::Oversize { .. }) => {
            error(StatusCode::BAD_REQUEST, e)
        }
        e => {
            tracing::warn!(error = %e, "backend unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

async fn create_report(
    State(app): State<App>,
    body: Result<Json<Report>, JsonRejection>,
) -> Response {
    let Json(report) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if report.kind.trim().is_empty() || report.kind.len() > 64 {
        return error(StatusCode::BAD_REQUEST, "kind must be 1 to 64 characters");
    }
    if report.rows == 0 || report.rows > 600_000 {
        return error(StatusCode::BAD_REQUEST, "rows must be 1 to 600000");
    }
    match app.queue.enqueue(&report).await {
        Ok(id) => {
            let location = format!("/jobs/{id}");
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location.clone())],
                Json(json!({ "id": id.as_str(), "status_url": location })),
            )
                .into_response()
        }
        Err(e) => failure(e),
    }
}

/// A job id from a path, or `None` when it cannot be one (answered with 400).
fn job_id(id: &str) -> Option<MessageId> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then(|| MessageId::new(id))
}

fn bad_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "a job id is 1 to 128 letters, digits or '-'",
    )
}

async fn job_status(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Some(id) = job_id(&id) else {
        return bad_id();
    };
    match app.backend.job_status(&id).await {
        Ok(Some(status)) => Json(status).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => failure(e),
    }
}

async fn cancel_job(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Some(id) = job_id(&id) else {
        return bad_id();
    };
    match app.backend.cancel_job(&id).await {
        Ok(CancelOutcome::Cancelled) => {
            Json(json!({ "id": id.as_str(), "outcome": "cancelled" })).into_response()
        }
        Ok(_) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id.as_str(), "outcome": "cancel_requested" })),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

/// Which parts of the example this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The HTTP service and a worker (the default).
    All,
    /// Only the HTTP service.
    Api,
    /// Only the worker.
    Worker,
}

/// The example's settings, from the command line and the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `QUEUE_URL` (default `memory://web`).
    pub queue_url: String,
    /// `STATUS_URL` (default `memory://`; separate processes need `redis://` or
    /// `postgres://`).
    pub status_url: String,
    /// `--role all|api|worker`.
    pub role: Role,
    /// `--listen ADDR` (default 127.0.0.1:3000).
    pub listen: SocketAddr,
    /// The queue's name (`--queue`, default `reports`).
    pub queue: String,
}

impl Config {
    /// Parses `args` (without the program name) and reads the environment.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut c = Config {
            queue_url: std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://web".into()),
            status_url: std::env::var("STATUS_URL").unwrap_or_else(|_| "memory://".into()),
            role: Role::All,
            listen: ([127, 0, 0, 1], 3000).into(),
            queue: "reports".into(),
        };
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            let mut value = || args.next().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--role" => {
                    c.role = match value()?.as_str() {
                        "all" => Role::All,
                        "api" => Role::Api,
                        "worker" => Role::Worker,
                        other => return Err(format!("--role {other}: want all, api or worker")),
                    }
                }
                "--listen" => {
                    let v = value()?;
                    c.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?
                }
                "--queue" => c.queue = value()?,
                other => {
                    return Err(format!(
                        "unknown argument {other}; usage: web [--role all|api|worker] [--listen ADDR] [--queue NAME]"
                    ))
                }
            }
        }
        if c.role != Role::All
            && (c.queue_url.starts_with("memory:") || c.status_url.starts_with("memory:"))
        {
            return Err(
                "--role api|worker runs in separate processes, which need a shared queue \
                        and status store: set QUEUE_URL and STATUS_URL to a server (redis://, \
                        postgres:// for status)"
                    .into(),
            );
        }
        Ok(c)
    }
}

/// Connects, creates the queue, and runs this process's role until `shutdown` completes;
/// calls `ready` with the bound address once the service listens.
pub async fn run(
    config: Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = queue::connect_store(&config.status_url).await?;
    let backend = queue::connect(&config.queue_url)
        .await?
        .with_status(queue::JobStatuses::new(store));
    let app = App::new(backend, &config.queue)?;
    app.queue().create().await?;
    let worker = match config.role {
        Role::All | Role::Worker => Some(worker(app.queue()).start()?),
        Role::Api => None,
    };
    if config.role == Role::Worker {
        ready(config.listen);
        shutdown.await;
    } else {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        ready(listener.local_addr()?);
        axum::serve(listener, app.router())
            .with_graceful_shutdown(shutdown)
            .await?;
    }
    if let Some(w) = worker {
        let r = w.shutdown().await;
        tracing::info!(?r, "worker stopped");
    }
    Ok(())
}
