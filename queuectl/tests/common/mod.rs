//! Helpers shared by the dashboard tests: a served dashboard and a small HTTP client.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Serves `dash` on a free loopback port; returns its address.
pub async fn serve(dash: queuectl::dashboard::Dashboard) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app =
            queuectl::dashboard::router(dash).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.unwrap()
    });
    addr
}

/// Serves `dash` as an application might mount it: without the peer addresses
/// (`axum::serve(listener, router)`).
pub async fn serve_without_peer(dash: queuectl::dashboard::Dashboard) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, queuectl::dashboard::router(dash))
            .await
            .unwrap()
    });
    addr
}

/// An answer: status, headers we look at, body text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub cookie: Option<String>,
    pub body: String,
}

/// Sends one request; `form` makes it a POST with a urlencoded body.
pub async fn http(
    addr: SocketAddr,
    path: &str,
    form: Option<&[(&str, &str)]>,
    extra: &[(&str, &str)],
) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().uri(format!("http://{addr}{path}"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let body = match form {
        Some(f) => {
            req = req
                .method("POST")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            let pairs: Vec<String> = f
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        percent_encoding::utf8_percent_encode(
                            v,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    )
                })
                .collect();
            pairs.join("&")
        }
        None => String::new(),
    };
    let res = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .expect("request");
    let status = res.status();
    let h = |n| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (location, cookie) = (h(header::LOCATION), h(header::SET_COOKIE));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        location,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The per-process form token a page carries.
pub fn csrf(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a form token") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// The job every queuectl test sends.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Charge {
    pub n: u32,
}
impl queue::Job for Charge {
    const NAME: &'static str = "charge";
}

/// Works `q` until `dead` jobs are dead-lettered and `ok` succeeded, with one attempt per
/// job: `n` 1 fails for good ("card declined"), 2 runs out of attempts ("bank timed
/// out"), 5 fails for good with markup in its error, the rest succeed.
pub async fn work_charges(q: &queue::Queue, dead: u64, ok: u64) {
    use queue::{JobContext, JobError};
    let w = q
        .worker()
        .poll_wait(std::time::Duration::from_secs(1))
        .retry(queue::RetryPolicy::new(
            1,
            queue::Backoff::Fixed(std::time::Duration::ZERO),
        ))
        .handle(|c: Charge, _: JobContext| async move {
            match c.n {
                1 => Err(JobError::permanent("card declined")),
                2 => Err(JobError::retry("bank timed out")),
                5 => Err(JobError::permanent("<script>alert(1)</script> declined")),
                _ => Ok(()),
            }
        })
        .start()
        .expect("worker starts");
    queue::testkit::eventually_worker(
        &w,
        std::time::Duration::from_secs(60),
        "jobs settled",
        |r| r.dead_lettered == dead && r.succeeded == ok,
    )
    .await;
    w.shutdown().await;
}
