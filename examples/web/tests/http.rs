//! Drives the `web` example's service as a user would: over real HTTP on loopback.

mod common;

use common::{http, location, memory_config, start, until_state};
use example_web::{Config, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_answers_202_with_a_location_that_tracks_the_job_to_its_result() {
    let (addr, _stop) = start(memory_config()).await;
    let (code, headers, body) = http(
        addr,
        "POST",
        "/reports",
        Some(r#"{"kind":"sales","rows":500}"#),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let loc = location(&headers);
    assert_eq!(loc, format!("/jobs/{}", body["id"].as_str().unwrap()));
    assert_eq!(body["status_url"], loc.as_str());
    let (code, _, first) = http(addr, "GET", &loc, None).await;
    assert_eq!(code, 200);
    assert!(
        ["queued", "running"].contains(&first["state"].as_str().unwrap()),
        "{first}"
    );
    let running = until_state(addr, &loc, "running").await;
    assert_eq!(running["attempt"], 1);
    let done = until_state(addr, &loc, "succeeded").await;
    assert_eq!(done["job"], "report");
    assert_eq!(done["result"]["rows"], 500);
    assert_eq!(
        done["result"]["download"],
        format!("/downloads/{}.csv", body["id"].as_str().unwrap())
    );
    assert_eq!(done["progress"]["percent"], 100);
    assert!(done["finished_at"].as_u64().unwrap() >= done["enqueued_at"].as_u64().unwrap());
    // A finished job cannot be cancelled.
    let (code, _, e) = http(addr, "DELETE", &loc, None).await;
    assert_eq!(code, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("already finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cancels_a_running_job_and_one_that_has_not_started() {
    let (addr, _stop) = start(memory_config()).await;
    // Four long reports fill the worker's four slots; the fifth waits in the queue.
    let mut locs = Vec::new();
    for _ in 0..5 {
        let (code, headers, b) = http(
            addr,
            "POST",
            "/reports",
            Some(r#"{"kind":"big","rows":600000}"#),
        )
        .await;
        assert_eq!(code, 202, "{b}");
        locs.push(location(&headers));
    }
    for l in &locs[..4] {
        until_state(addr, l, "running").await;
    }
    let (code, _, s) = http(addr, "GET", &locs[4], None).await;
    assert_eq!((code, s["state"].as_str()), (200, Some("queued")), "{s}");
    let (code, _, b) = http(addr, "DELETE", &locs[4], None).await;
    assert_eq!(
        (code, b["outcome"].as_str()),
        (200, Some("cancelled")),
        "{b}"
    );
    let (code, _, b) = http(addr, "DELETE", &locs[0], None).await;
    assert_eq!(
        (code, b["outcome"].as_str()),
        (202, Some("cancel_requested")),
        "{b}"
    );
    let s = until_state(addr, &locs[0], "cancelled").await;
    assert_eq!(s["last_error"], "cancelled by request");
    for l in &locs[1..4] {
        http(addr, "DELETE", l, None).await;
        until_state(addr, l, "cancelled").await;
    }
    until_state(addr, &locs[4], "cancelled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_a_json_error() {
    let (addr, _stop) = start(memory_config()).await;
    for (body, says) in [
        ("{not json", "Failed to parse"),
        (r#"{"kind":"sales"}"#, "rows"),
        (r#"{"kind":"sales","rows":0}"#, "rows must be"),
        (r#"{"kind":"","rows":5}"#, "kind must be"),
        (r#"{"kind":"sales","rows":-1}"#, "rows"),
    ] {
        let (code, _, e) = http(addr, "POST", "/reports", Some(body)).await;
        assert_eq!(code, 400, "{body}: {e}");
        assert!(
            e["error"].as_str().unwrap().contains(says),
            "{body}: want an error saying {says:?}, got {e}"
        );
    }
    let (code, _, e) = http(addr, "GET", "/jobs/0123456789abcdef", None).await;
    assert_eq!(code, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("no job"));
    let (code, _, e) = http(addr, "DELETE", "/jobs/0123456789abcdef", None).await;
    assert_eq!(code, 404, "{e}");
    let (code, _, e) = http(addr, "GET", "/jobs/not%20an%20id", None).await;
    assert_eq!(code, 400, "{e}");
}

#[test]
fn separate_processes_need_shared_servers() {
    let e = Config::from_args(["--role".to_string(), "api".to_string()]).unwrap_err();
    assert!(e.contains("shared queue"), "{e}");
    let e = Config::from_args(["--bogus".to_string()]).unwrap_err();
    assert!(e.contains("unknown argument"), "{e}");
    assert_eq!(
        Config::from_args(["--role".into(), "all".into()])
            .unwrap()
            .role,
        Role::All
    );
}
