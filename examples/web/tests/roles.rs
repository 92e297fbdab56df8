//! `--role api` and `--role worker` as separate services sharing a Redis queue and a
//! PostgreSQL status store: the API answers for jobs another service runs, and cancels
//! them there.

mod common;

use common::{http, location, start, until_state};
use example_web::{Config, Role};

const REDIS: &str = "redis://127.0.0.1:6379";
const POSTGRES: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_as_separate_services() {
    let mut api = Config::from_args(Vec::new()).unwrap();
    api.queue_url = REDIS.into();
    api.status_url = POSTGRES.into();
    api.queue = format!("web-roles-{}", fastrand::u32(..));
    let mut worker = api.clone();
    api.role = Role::Api;
    worker.role = Role::Worker;
    let (addr, _stop_api) = start(api).await;
    let (code, headers, _) =
        http(addr, "POST", "/reports", Some(r#"{"kind":"a","rows":200}"#)).await;
    assert_eq!(code, 202);
    let loc = location(&headers);
    // Nobody runs it yet.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, _, s) = http(addr, "GET", &loc, None).await;
    assert_eq!(s["state"], "queued", "{s}");
    let (_, _stop_worker) = start(worker).await;
    let done = until_state(addr, &loc, "succeeded").await;
    assert_eq!(done["result"]["rows"], 200);
    // A long one, cancelled through the API while the other service runs it.
    let (_, headers, _) = http(
        addr,
        "POST",
        "/reports",
        Some(r#"{"kind":"b","rows":600000}"#),
    )
    .await;
    let loc = location(&headers);
    until_state(addr, &loc, "running").await;
    let (code, _, _) = http(addr, "DELETE", &loc, None).await;
    assert_eq!(code, 202);
    until_state(addr, &loc, "cancelled").await;
}
