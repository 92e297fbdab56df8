//! Survives a Redis restart: a Redis with AOF (`appendfsync always`) is killed with
//! SIGKILL and started again on the same data; the same driver instance reconnects by
//! itself and every message whose send returned Ok is still delivered.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use queue_core::{Backend, Driver, Message, ReceiveOptions};
use tokio::process::{Child, Command};

/// A port nothing listens on now (the test's own server takes it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start(dir: &PathBuf, port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed (scripts/services.sh installs it)")
}

async fn until_ok<T, F: std::future::Future<Output = queue_core::Result<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("{what}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: still failing after 30 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_aof_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("queue-redis-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");

    let mut server = start(&dir, port);
    let q = until_ok("first connect", || queue_redis::RedisQueue::connect(&url)).await;
    // It must be our own server (our data directory), not another that took the port.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (_, served): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        std::fs::canonicalize(&served).unwrap(),
        std::fs::canonicalize(&dir).unwrap(),
        "port {port} is served by another Redis"
    );
    let name = "restart";
    q.create_queue(name).await.unwrap();
    let producer = Backend::new(q).queue(name).producer();
    let mut sent = HashSet::new();
    for _ in 0..4 {
        let batch: Vec<Message> = (0..50).map(|i| Message::new(format!("m{i}"))).collect();
        for id in producer
            .send_batch(batch)
            .await
            .expect("send before restart")
        {
            sent.insert(id.into_string());
        }
    }
    // The same instance the producer uses, for receiving.
    let q = queue_redis::RedisQueue::connect(&url)
        .await
        .expect("second connection");
    let lease = Duration::from_secs(1);
    let held = q
        .receive(name, ReceiveOptions::new(20, Duration::from_secs(1), lease))
        .await
        .unwrap();
    assert_eq!(held.len(), 20, "20 messages leased and never acked");

    server.kill().await.unwrap();
    let during = producer.send(Message::new("during the outage")).await;
    assert!(
        during.is_err(),
        "a send while Redis is down must not return Ok"
    );
    let e = during.unwrap_err();
    assert!(e.is_transient(), "outage should be a connection error: {e}");

    let _server = start(&dir, port);
    until_ok("stats after restart", || q.stats(name)).await;
    let after = until_ok("send after restart", || {
        producer.send(Message::new("after"))
    })
    .await;
    sent.insert(after.into_string());

    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < sent.len() && tokio::time::Instant::now() < deadline {
        let opts = ReceiveOptions::new(100, Duration::from_secs(1), Duration::from_secs(30));
        let batch = q
            .receive(name, opts.clone())
            .await
            .expect("receive after restart");
        let receipts: Vec<_> = batch.iter().map(|d| d.receipt.clone()).collect();
        got.extend(batch.into_iter().map(|d| d.id.into_string()));
        if !receipts.is_empty() {
            q.ack(name, &receipts).await.unwrap();
        }
    }
    let lost: Vec<_> = sent.difference(&got).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged sends lost across the restart",
        lost.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
