//! The workers' metrics, scraped over HTTP from `queue::prometheus::install` while a
//! worker runs real jobs (feature `prometheus`). One test: a process has one recorder.

use std::time::Duration;

use queue::{JobContext, JobError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(serde::Serialize, serde::Deserialize)]
struct Charge {
    n: u32,
}
impl queue::Job for Charge {
    const NAME: &'static str = "charge";
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("exporter listens");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_are_scraped() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    queue::prometheus::install(port).expect("installed");
    let other = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let again = queue::prometheus::install(other);
    assert!(
        matches!(again, Err(queue::QueueError::InvalidOption(_))),
        "{again:?}"
    );

    let backend = queue::connect("memory://prom").await.unwrap();
    let q = backend.queue("payments");
    q.create().await.unwrap();
    for n in 0..5 {
        q.enqueue(&Charge { n }).await.unwrap();
    }
    let w = q
        .worker()
        .handle(|c: Charge, _: JobContext| async move {
            if c.n == 4 {
                Err(JobError::permanent("declined"))
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap();
    queue::testkit::eventually_worker(&w, Duration::from_secs(10), "5 jobs", |r| {
        r.succeeded == 4 && r.dead_lettered == 1
    })
    .await;
    w.shutdown().await;
    let body = scrape(port).await;
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body}"
    );
    let line = |name: &str| {
        body.lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains(r#"queue="payments""#)
                    && l.contains(r#"job="charge""#)
            })
            .unwrap_or_else(|| panic!("no {name} for payments in:\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(line("queue_jobs_processed_total"), "4");
    assert_eq!(line("queue_jobs_dead_lettered_total"), "1");
    assert_eq!(line("queue_job_duration_seconds_count"), "5");
    assert!(
        body.contains(r#"queue_job_duration_seconds_bucket{"#),
        "durations are histograms with buckets"
    );
}
