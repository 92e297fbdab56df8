//! The web dashboard: server-rendered HTML from axum (no JavaScript build step), with
//! Prometheus metrics at `/metrics`.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | every queue with its depths (ready, in flight, delayed, dead) and their net change per minute over the last five minutes; refreshes itself every 5 s |
//! | `GET /queues/{q}` | one queue: depths, its dead letters (reason, error, attempts, payload preview), redrive and purge forms |
//! | `POST /queues/{q}/redrive` | redrive, all or one reason, up to a limit; needs the confirmation box |
//! | `POST /queues/{q}/purge` | purge the queue or its dead-letter queue; needs the queue's name typed |
//! | `GET /jobs?id=ID` | a job's status (needs a status store) |
//! | `GET /metrics` | Prometheus: `queue_depth{queue,state}` gauges, read from the backend at each scrape |
//!
//! Depths come from the backend's own counts (approximate on SQS and Kafka). Throughput
//! is what the workers' own metrics say (export them with `queue::metrics`); the
//! dashboard shows how fast each queue grows or drains, which it can see from here.
//!
//! Safety: who may use it is a choice made when it is built ([`Access`]), never a default:
//! a token every request must carry (`Authorization: Bearer T`, or `?token=T` once, which
//! sets a cookie); loopback only (each request's peer address is checked, so the router
//! mounted in a server listening on the network still answers only local requests); or,
//! named as such, the application's own authentication in front of the router.
//! `queuectl serve` binds to loopback by default and refuses any other address without a
//! token. Every form carries a per-process token that a POST must return, so another web
//! page cannot make a browser purge a queue.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use queue::{Backend, DeadLetterKind, QueueError, QueueStats};
use serde::Deserialize;

use crate::error::CliError;

use crate::pages;

/// How often the dashboard samples depths for the trend, and how many samples it keeps.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES: usize = 60;
/// Dead letters listed on a queue's page.
const DEAD_LISTED: usize = 50;

/// Who may use the dashboard: chosen explicitly, since its pages can purge queues.
#[derive(Clone)]
#[non_exhaustive]
pub enum Access {
    /// Every request carries this token (at least 16 characters).
    Token(String),
    /// Only requests from a loopback address for a loopback name: each request's peer
    /// address is checked (serve the router with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; a request whose peer is
    /// unknown is refused), and its `Host` must be `localhost` or a loopback address (so
    /// that a web page whose name rebinds to 127.0.0.1 gets nothing). A reverse proxy on
    /// the same host makes every request local: use a token there.
    Loopback,
    /// No check here: the application authenticates every request before it reaches the
    /// router (its own middleware, or a proxy that does). Without that, anyone who can
    /// reach the server can purge queues.
    AuthenticatedInFront,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Token(_) => f.write_str("Token(<set>)"),
            Access::Loopback => f.write_str("Loopback"),
            Access::AuthenticatedInFront => f.write_str("AuthenticatedInFront"),
        }
    }
}

/// The dashboard's state: the backend, the queues it shows, and its tokens.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    queues: Vec<String>,
    access: Access,
    csrf: String,
    history: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
    prometheus: PrometheusRecorder,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("backend", &self.inner.backend)
            .field("queues", &self.inner.queues)
            .field("access", &self.inner.access)
            .finish()
    }
}

impl Dashboard {
    /// A dashboard of `queues` on `backend`, used by whom `access` says.
    pub fn new(backend: Backend, queues: Vec<String>, access: Access) -> Result<Self, CliError> {
        if queues.is_empty() {
            return Err(CliError::Usage("name at least one queue to show".into()));
        }
        if matches!(&access, Access::Token(t) if t.len() < 16) {
            return Err(CliError::Usage(
                "the dashboard token must be at least 16 characters".into(),
            ));
        }
        Ok(Dashboard {
            inner: Arc::new(Inner {
                backend,
                queues,
                access,
                csrf: uuid::Uuid::new_v4().simple().to_string(),
                history: Mutex::new(HashMap::new()),
                prometheus: PrometheusBuilder::new().build_recorder(),
            }),
        })
    }

    fn knows(&self, q: &str) -> bool {
        self.inner.queues.iter().any(|x| x == q)
    }

    async fn all_stats(&self) -> Vec<(String, Result<QueueStats, QueueError>)> {
        let mut out = Vec::new();
        for q in &self.inner.queues {
            out.push((q.clone(), self.inner.backend.queue(q.clone()).stats().await));
        }
        out
    }

    /// Net change of a queue's total per minute over the samples kept.
    fn trend(&self, q: &str) -> Option<f64> {
        let h = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        let s = h.get(q)?;
        let (t0, v0) = s.front()?;
        let (t1, v1) = s.back()?;
        let mins = t1.duration_since(*t0).as_secs_f64() / 60.0;
        (mins > 0.0).then(|| (*v1 as f64 - *v0 as f64) / mins)
    }

    fn record(&self, q: &str, total: u64) {
        let mut h = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        let s = h.entry(q.to_string()).or_default();
        s.push_back((Instant::now(), total));
        while s.len() > SAMPLES {
            s.pop_front();
        }
    }

    /// Samples every queue's depth every 5 s, for the trend.
    pub async fn sample_forever(self) {
        loop {
            for (q, s) in self.all_stats().await {
                if let Ok(s) = s {
                    self.record(&q, s.total());
                }
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    }
}

/// The dashboard's routes, for serving it inside an application of your own, guarded as
/// the dashboard's [`Access`] says.
pub fn router(dash: Dashboard) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/queues/{queue}", get(queue_page))
        .route("/queues/{queue}/redrive", post(redrive))
        .route("/queues/{queue}/purge", post(purge))
        .route("/jobs", get(job_page))
        .route("/flows", get(flow_page))
        .route("/batches", get(batch_page))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(dash.clone(), auth))
        .with_state(dash)
}

/// Serves `dash` on `listen` until Ctrl-C. Anything but a loopback address needs a token.
pub async fn serve(dash: Dashboard, listen: SocketAddr) -> Result<(), CliError> {
    if !listen.ip().is_loopback() && !matches!(dash.inner.access, Access::Token(_)) {
        return Err(CliError::Usage(format!(
            "the dashboard would be open to the network on {listen}: pass --token (or set \
             QUEUECTL_TOKEN), or listen on 127.0.0.1"
        )));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    eprintln!("queuectl: dashboard on http://{addr}/");
    tokio::spawn(dash.clone().sample_forever());
    let app = router(dash).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(queue::shutdown_signal())
        .await
        .map_err(|e| CliError::Usage(format!("the dashboard stopped: {e}")))
}

const COOKIE: &str = "queuectl_token";

async fn auth(State(d): State<Dashboard>, req: Request, next: Next) -> Response {
    let want = match &d.inner.access {
        Access::Token(t) => t.clone(),
        Access::AuthenticatedInFront => return next.run(req).await,
        Access::Loopback => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            // The Host too: a page on another site whose name it rebinds to 127.0.0.1
            // reaches a loopback listener from the browser, with its own name as Host.
            if !local_host(req.headers()) {
                return (
                    StatusCode::FORBIDDEN,
                    "queuectl: this dashboard answers requests for localhost only\n",
                )
                    .into_response();
            }
            return match peer {
                Some(ip) if ip.is_loopback() => next.run(req).await,
                Some(_) => (
                    StatusCode::FORBIDDEN,
                    "queuectl: this dashboard answers loopback requests only\n",
                )
                    .into_response(),
                None => (
                    StatusCode::FORBIDDEN,
                    "queuectl: this dashboard answers loopback requests only, and this \
                     server does not say where requests come from: serve the router with \
                     into_make_service_with_connect_info::<SocketAddr>(), or give it a token\n",
                )
                    .into_response(),
            };
        }
    };
    let h = req.headers();
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = cookie(h, COOKIE);
    let query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    let ok = |t: &str| constant_eq(t.as_bytes(), want.as_bytes());
    if bearer.is_some_and(ok) || cookie.as_deref().is_some_and(ok) {
        return next.run(req).await;
    }
    if query.as_deref().is_some_and(ok) {
        let mut res = next.run(req).await;
        if let Ok(v) = format!("{COOKIE}={want}; HttpOnly; SameSite=Strict; Path=/").parse() {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
        return res;
    }
    (
        StatusCode::UNAUTHORIZED,
        "queuectl: this dashboard needs its token (Authorization: Bearer, or ?token=)\n",
    )
        .into_response()
}

/// Whether the request's Host names this machine's loopback: `localhost`, a loopback
/// address, with or without a port.
fn local_host(h: &HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::to_string)
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct Flash {
    msg: Option<String>,
}

async fn overview(State(d): State<Dashboard>) -> Response {
    let rows: Vec<pages::Row> = d
        .all_stats()
        .await
        .into_iter()
        .map(|(q, s)| {
            if let Ok(s) = &s {
                d.record(&q, s.total());
            }
            let trend = d.trend(&q);
            pages::Row {
                queue: q,
                stats: s.map_err(|e| e.to_string()),
                trend,
            }
        })
        .collect();
    pages::overview(d.inner.backend.kind(), &rows).into_response()
}

async fn queue_page(
    State(d): State<Dashboard>,
    Path(q): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    if !d.knows(&q) {
        return not_found(&q);
    }
    let queue = d.inner.backend.queue(q.clone());
    let stats = queue.stats().await.map_err(|e| e.to_string());
    let dead = match queue.dead_letters(DEAD_LISTED).await {
        Ok(v) => Ok(v),
        Err(QueueError::Unsupported { .. }) => Err(None),
        Err(e) => Err(Some(e.to_string())),
    };
    pages::queue(pages::QueueView {
        backend: d.inner.backend.kind(),
        queue: &q,
        stats,
        dead,
        csrf: &d.inner.csrf,
        flash: flash.msg.as_deref(),
    })
    .into_response()
}

#[derive(Deserialize)]
struct RedriveForm {
    csrf: String,
    reason: String,
    limit: Option<String>,
    confirm: Option<String>,
}

async fn redrive(
    State(d): State<Dashboard>,
    Path(q): Path<String>,
    Form(f): Form<RedriveForm>,
) -> Response {
    if !d.knows(&q) {
        return not_found(&q);
    }
    if let Some(refused) = forged(&d, &f.csrf) {
        return refused;
    }
    if f.confirm.as_deref() != Some("yes") {
        return flash(&q, "Nothing redriven: tick the confirmation box first.");
    }
    let reason: Option<DeadLetterKind> = match f.reason.as_str() {
        "" | "all" => None,
        r => match r.parse() {
            Ok(k) => Some(k),
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        },
    };
    let limit = match f.limit.as_deref().map(str::trim) {
        None | Some("") => usize::MAX,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("limit must be a positive whole number, got {l:?}\n"),
                )
                    .into_response()
            }
        },
    };
    match d
        .inner
        .backend
        .queue(q.clone())
        .redrive_matching(limit, reason, |_| {})
        .await
    {
        Ok(n) => flash(&q, &format!("Redrove {n} dead letter(s).")),
        Err(e) => flash(&q, &format!("Redrive failed: {e}")),
    }
}

#[derive(Deserialize)]
struct PurgeForm {
    csrf: String,
    target: String,
    confirm: String,
}

async fn purge(
    State(d): State<Dashboard>,
    Path(q): Path<String>,
    Form(f): Form<PurgeForm>,
) -> Response {
    if !d.knows(&q) {
        return not_found(&q);
    }
    if let Some(refused) = forged(&d, &f.csrf) {
        return refused;
    }
    if f.confirm.trim() != q {
        return flash(&q, "Nothing purged: type the queue's name to confirm.");
    }
    let queue = d.inner.backend.queue(q.clone());
    let (target, what) = match f.target.as_str() {
        "dlq" => (queue.dead_letter_queue(), "its dead-letter queue"),
        "queue" => (queue, "the queue"),
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown purge target {other:?}\n"),
            )
                .into_response()
        }
    };
    match target.purge().await {
        Ok(()) => flash(&q, &format!("Purged {what}.")),
        Err(e) => flash(&q, &format!("Purge failed: {e}")),
    }
}

/// `?id=` of the job, flow and batch pages.
#[derive(Deserialize)]
struct IdQuery {
    id: Option<String>,
}

/// A lookup page: nothing asked (no id), found, not found (404), or the store's error.
async fn lookup<T, F>(
    q: IdQuery,
    find: impl FnOnce(String) -> F,
    page: impl FnOnce(&str, Option<Result<Option<T>, String>>) -> maud::Markup,
) -> Response
where
    F: std::future::Future<Output = queue::Result<Option<T>>>,
{
    let id = q.id.unwrap_or_default().trim().to_string();
    let found = match id.is_empty() {
        true => None,
        false => Some(find(id.clone()).await.map_err(|e| e.to_string())),
    };
    let status = match &found {
        Some(Ok(None)) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    (status, page(&id, found)).into_response()
}

async fn job_page(State(d): State<Dashboard>, Query(q): Query<IdQuery>) -> Response {
    let backend = &d.inner.backend;
    lookup(
        q,
        |id| async move { backend.job_status(&queue::MessageId::new(id)).await },
        pages::job,
    )
    .await
}

async fn flow_page(State(d): State<Dashboard>, Query(q): Query<IdQuery>) -> Response {
    let backend = &d.inner.backend;
    lookup(
        q,
        |id| async move { backend.flow_status(&id).await },
        pages::flow,
    )
    .await
}

async fn batch_page(State(d): State<Dashboard>, Query(q): Query<IdQuery>) -> Response {
    let backend = &d.inner.backend;
    lookup(
        q,
        |id| async move { backend.batch_status(&id).await },
        pages::batch,
    )
    .await
}

async fn metrics_text(State(d): State<Dashboard>) -> Response {
    let stats = d.all_stats().await;
    metrics::with_local_recorder(&d.inner.prometheus, || {
        for (q, s) in &stats {
            let up = if s.is_ok() { 1.0 } else { 0.0 };
            metrics::gauge!("queue_stats_up", "queue" => q.clone()).set(up);
            if let Ok(s) = s {
                for (state, v) in [
                    ("ready", s.ready),
                    ("in_flight", s.in_flight),
                    ("delayed", s.delayed),
                    ("dead", s.dead),
                ] {
                    metrics::gauge!("queue_depth", "queue" => q.clone(), "state" => state)
                        .set(v as f64);
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        d.inner.prometheus.handle().render(),
    )
        .into_response()
}

/// A POST whose form token is not this process's: refused, nothing done.
fn forged(d: &Dashboard, csrf: &str) -> Option<Response> {
    (!constant_eq(csrf.as_bytes(), d.inner.csrf.as_bytes())).then(|| {
        (
            StatusCode::FORBIDDEN,
            "form token missing or stale: reload the page\n",
        )
            .into_response()
    })
}

fn flash(q: &str, msg: &str) -> Response {
    let mut url = url_path(q);
    url.push_str("?msg=");
    url.push_str(&encode(msg));
    Redirect::to(&url).into_response()
}

fn not_found(q: &str) -> Response {
    (StatusCode::NOT_FOUND, pages::not_found(q)).into_response()
}

/// `/queues/<q>` with `q` percent-encoded.
pub(crate) fn url_path(q: &str) -> String {
    format!("/queues/{}", encode(q))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
