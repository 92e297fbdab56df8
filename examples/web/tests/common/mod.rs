//! Shared by the web example's tests: a plain HTTP/1.1 client (what curl sends) and a
//! way to start the service on a free port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use example_web::{run, Config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request; returns the status, the headers (lower-cased names) and the JSON body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
    };
    (status, headers, json)
}

/// Starts the example with `config` on a free port; returns its address and its stopper.
pub async fn start(mut config: Config) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    config.listen = "127.0.0.1:0".parse().unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        run(
            config,
            move |addr| {
                let _ = ready_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
        .expect("the example runs");
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("the service listens within 30 s")
        .unwrap();
    (addr, stop_tx)
}

pub fn memory_config() -> Config {
    let mut c = Config::from_args(Vec::new()).unwrap();
    c.queue_url = format!("memory://web-{}", fastrand::u64(..));
    c.status_url = "memory://".into();
    c
}

/// Polls `GET location` until its state is `want`; returns the last status.
pub async fn until_state(addr: SocketAddr, location: &str, want: &str) -> Value {
    for _ in 0..600 {
        let (code, _, s) = http(addr, "GET", location, None).await;
        assert_eq!(code, 200, "{s}");
        if s["state"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{location} never became {want}");
}

pub fn location(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .expect("a Location header")
}
