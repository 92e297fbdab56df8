//! The `queuectl` binary, as an operator runs it, against the real servers that
//! `scripts/services.sh` starts: Redis, SQS (moto) and Kafka (tansu). Each backend gets the
//! same story (send, stats, peek, dead letters, redrive by reason, purge, pause, job
//! status) and the tool must say what that backend cannot do with exit code 3.

use std::time::Duration;

mod common;

use queue::{Backend, JobStatuses};
use serde_json::Value;

const REDIS: &str = "redis://127.0.0.1:6379";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn queuectl(url: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_queuectl"))
        .args(args)
        .env("QUEUE_URL", url)
        .env("STATUS_URL", REDIS)
        .env_remove("QUEUECTL_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("queuectl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok_json(url: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let r = queuectl(url, &a).await;
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
}

/// Polls `stats` until the queue shows `want` (ready, dead); SQS and Kafka count lazily.
async fn stats_become(url: &str, q: &str, want: (u64, u64)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = ok_json(url, &["stats", q]).await;
        let got = (
            s[0]["ready"].as_u64().unwrap(),
            s[0]["dead"].as_u64().unwrap(),
        );
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{q}: want {want:?}, got {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

struct Can {
    peek_main: bool,
    peek_dlq: bool,
    purge: bool,
}

async fn story(url: &str, can: Can) {
    let store = queue::connect_store(REDIS).await.expect("redis store");
    let backend: Backend = queue::connect(url)
        .await
        .expect("backend up")
        .with_status(JobStatuses::new(store));
    let name = queue::testkit::unique("ctl");
    let q = backend.queue(name.clone());
    q.create().await.expect("create");
    let n = name.as_str();

    let mut ids = Vec::new();
    for i in 1..=3 {
        let j = format!(r#"{{"n":{i}}}"#);
        let sent = ok_json(url, &["send", n, "--json", &j, "--job", "charge"]).await;
        ids.push(sent["id"].as_str().expect("id").to_string());
    }
    stats_become(url, n, (3, 0)).await;
    let queued = ok_json(url, &["job", &ids[0]]).await;
    assert_eq!(queued["state"], "queued", "{queued}");

    let peek = queuectl(url, &["peek", n, "-o", "json"]).await;
    if can.peek_main {
        assert_eq!(peek.code, 0, "{}", peek.stderr);
        let v: Value = serde_json::from_str(&peek.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    } else {
        assert_eq!(peek.code, 3, "peek must be refused: {}", peek.stderr);
        assert!(peek.stderr.contains("cannot show"), "{}", peek.stderr);
    }

    common::work_charges(&q, 2, 1).await;
    stats_become(url, n, (0, 2)).await;
    assert_eq!(ok_json(url, &["job", &ids[2]]).await["state"], "succeeded");
    assert_eq!(ok_json(url, &["job", &ids[0]]).await["state"], "dead");

    let list = queuectl(url, &["dlq", "list", n, "-o", "json"]).await;
    if can.peek_dlq {
        assert_eq!(list.code, 0, "{}", list.stderr);
        let v: Value = serde_json::from_str(&list.stdout).unwrap();
        let mut got: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().into(),
                    m["reason"].as_str().unwrap().into(),
                )
            })
            .collect();
        got.sort_by_key(|(id, _)| ids.iter().position(|i| i == id));
        assert_eq!(
            got,
            [
                (ids[0].clone(), "permanent".into()),
                (ids[1].clone(), "max-attempts".into())
            ]
        );
        let show = queuectl(url, &["dlq", "show", n, &ids[1]]).await;
        assert_eq!(show.code, 0, "{}", show.stderr);
        assert!(show.stdout.contains("bank timed out"), "{}", show.stdout);
        assert_eq!(queuectl(url, &["dlq", "show", n, "nope"]).await.code, 4);
    } else {
        assert_eq!(list.code, 3, "dlq list must be refused: {}", list.stderr);
    }

    let r = ok_json(url, &["redrive", n, "--reason", "permanent"]).await;
    assert_eq!(r["redriven"], 1, "{r}");
    stats_become(url, n, (1, 1)).await;

    let refused = queuectl(url, &["purge", n]).await;
    assert_eq!(refused.code, 5, "purge without --yes: {}", refused.stderr);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    stats_become(url, n, (1, 1)).await;
    let purge = queuectl(url, &["purge", n, "--yes"]).await;
    if can.purge {
        assert_eq!(purge.code, 0, "{}", purge.stderr);
        stats_become(url, n, (0, 1)).await;
    } else {
        assert_eq!(purge.code, 3, "purge must be refused: {}", purge.stderr);
    }

    let p = ok_json(url, &["pause", n]).await;
    assert_eq!(
        (p["paused"].as_bool(), p["changed"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(
        q.is_paused().await.unwrap(),
        "workers sharing the store see the pause"
    );
    assert_eq!(ok_json(url, &["resume", n]).await["changed"], true);
    assert!(!q.is_paused().await.unwrap());
    assert_eq!(queuectl(url, &["job", "no-such-job"]).await.code, 4);
    assert_eq!(queuectl(url, &["stats", "no-such-queue-x"]).await.code, 4);

    // A flow, job by job, then cancelled.
    let mut f = queue::flow::Flow::new();
    let first = f.message(n, queue::Message::new("first"));
    let second = f.message(n, queue::Message::new("second"));
    f.after(second, &[first]);
    let id = backend.add_flow(f).await.unwrap();
    let shown = ok_json(url, &["flow", id.as_str()]).await;
    assert_eq!(shown["jobs"][0]["state"], "sent", "{shown}");
    assert_eq!(shown["jobs"][1]["state"], "waiting", "{shown}");
    assert_eq!(shown["jobs"][1]["after"][0]["node"], 0, "{shown}");
    let text = queuectl(url, &["flow", id.as_str()]).await;
    assert!(text.stdout.contains("waiting"), "{}", text.stdout);
    let cancelled = ok_json(url, &["flow", id.as_str(), "--cancel"]).await;
    assert_eq!(cancelled["finished"], true, "{cancelled}");
    assert_eq!(cancelled["jobs"][1]["error"], "cancelled", "{cancelled}");
    assert_eq!(queuectl(url, &["flow", "no-such-flow"]).await.code, 4);

    // A batch: its counts while open, then closed from the command line.
    let batch = backend
        .new_batch()
        .description("cli")
        .on_message(queue::batch::Kind::Complete, n, queue::Message::new("done"))
        .open()
        .await
        .unwrap();
    let two = vec![queue::Message::new("a"), queue::Message::new("b")];
    batch.add_messages(n, two).await.unwrap();
    let shown = ok_json(url, &["batch", batch.id()]).await;
    assert_eq!(shown["total"], 2, "{shown}");
    assert_eq!(shown["pending"], 2, "{shown}");
    assert_eq!(shown["closed"], false, "{shown}");
    assert_eq!(shown["callbacks"][0]["state"], "pending", "{shown}");
    let closed = ok_json(url, &["batch", batch.id(), "--close"]).await;
    assert_eq!(closed["closed"], true, "{closed}");
    assert_eq!(closed["complete"], false, "{closed}");
    let text = queuectl(url, &["batch", batch.id()]).await;
    assert!(text.stdout.contains("closed, running"), "{}", text.stdout);
    assert!(text.stdout.contains("cli"), "{}", text.stdout);
    assert!(batch
        .add_messages(n, vec![queue::Message::new("c")])
        .await
        .is_err());
    assert_eq!(queuectl(url, &["batch", "no-such-batch"]).await.code, 4);
    assert_eq!(
        queuectl(url, &["batch", "no-such-batch", "--close"])
            .await
            .code,
        4
    );
    q.delete().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    story(
        REDIS,
        Can {
            peek_main: true,
            peek_dlq: true,
            purge: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs() {
    story(
        "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566",
        Can {
            peek_main: false,
            peek_dlq: true,
            purge: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    story(
        "kafka://127.0.0.1:9092",
        Can {
            peek_main: false,
            peek_dlq: false,
            purge: false,
        },
    )
    .await;
}

/// A backend that is down and a malformed URL: clear messages and exit codes, no panic.
#[tokio::test]
async fn unreachable_and_malformed() {
    let down = queuectl("redis://127.0.0.1:1", &["stats", "q"]).await;
    assert_eq!(down.code, 1, "{}", down.stderr);
    assert!(
        down.stderr.contains("is the server running"),
        "{}",
        down.stderr
    );
    let bad = queuectl("redis://127.0.0.1:6379?nonsense=1", &["stats", "q"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let none = tokio::process::Command::new(env!("CARGO_BIN_EXE_queuectl"))
        .args(["stats", "q"])
        .env_remove("QUEUE_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("QUEUE_URL"));
    let open = tokio::process::Command::new(env!("CARGO_BIN_EXE_queuectl"))
        .args(["serve", "q", "--listen", "0.0.0.0:0"])
        .env("QUEUE_URL", REDIS)
        .env_remove("QUEUECTL_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(
        open.status.code(),
        Some(2),
        "a dashboard open to the network without a token"
    );
    assert!(String::from_utf8_lossy(&open.stderr).contains("--token"));
}
