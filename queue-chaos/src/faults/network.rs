//! Network faults: the fault proxy between every client (producer and workers) and the
//! broker, and on it, one after another with healthy traffic between: latency, a reset of
//! every connection, a blackhole, a slow close. The run passes when nothing is lost and
//! processing is back within 10 s of each fault's end.
//!
//! Redis and SQS (moto) are proxied as they run; Kafka runs its own tansu that advertises
//! the proxy's port, because a Kafka client connects to the address the broker advertises,
//! not the one it bootstrapped from. Redis Cluster is not proxied (its nodes advertise
//! their own addresses the same way, one proxy per node would be needed).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::ledger::now_ms;
use crate::proxy::{Flow, Proxy};
use crate::report::Report;
use crate::run::{queue_name, run, Ctx, Plan, Window};
use crate::servers::{self, free_port, scratch};
use crate::worker::WorkerArgs;

/// Sizes of a network-fault run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Jobs sent.
    pub jobs: usize,
    /// Healthy traffic before, between and after the faults.
    pub gap: Duration,
    /// How long the latency and the blackhole last.
    pub fault: Duration,
}

/// The `host:port` in `url` right after `marker` (`://` for the URL itself, `endpoint=http://` for SQS's).
fn authority(url: &str, marker: &str) -> Result<String, String> {
    let at = url
        .find(marker)
        .ok_or_else(|| format!("no {marker:?} in {url}"))?
        + marker.len();
    let rest = &url[at..];
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find(['/', '?', '&']).unwrap_or(rest.len());
    Ok(rest[..end].to_string())
}

fn resolve(a: &str) -> Result<SocketAddr, String> {
    a.to_socket_addrs()
        .map_err(|e| format!("{a}: {e}"))?
        .next()
        .ok_or_else(|| format!("{a}: no address"))
}

/// Runs the fault sequence against `backend` (`redis`, `sqs` or `kafka`); `url` is the
/// backend's usual URL (Kafka's is not used: the run starts its own tansu).
pub async fn network(backend: &str, url: &str, sizes: Sizes) -> Result<Report, String> {
    let mut tansu = None;
    let (proxy, proxied_url) = match backend {
        "redis" => {
            let a = authority(url, "://")?;
            let p = Proxy::start(resolve(&a)?, 0).await?;
            let u = url.replacen(&a, &format!("127.0.0.1:{}", p.port), 1);
            (p, u)
        }
        "sqs" => {
            let a = authority(url, "endpoint=http://")?;
            let p = Proxy::start(resolve(&a)?, 0).await?;
            let u = url.replacen(
                &format!("http://{a}"),
                &format!("http://127.0.0.1:{}", p.port),
                1,
            );
            (p, u)
        }
        "kafka" => {
            let dir = scratch("tansu-net")?;
            let port = free_port()?;
            let proxy_port = free_port()?;
            let mut s = servers::tansu(&dir, port, proxy_port)?;
            s.start().await?;
            tansu = Some(s);
            let p = Proxy::start(resolve(&format!("127.0.0.1:{port}"))?, proxy_port).await?;
            let u = format!("kafka://127.0.0.1:{}", p.port);
            (p, u)
        }
        o => return Err(format!("unknown backend {o:?}: redis, sqs or kafka")),
    };
    let proxy = Arc::new(proxy);
    let plan = Plan {
        backend: backend.into(),
        fault: format!(
            "proxy: latency 200 ms {0} s, reset, blackhole {0} s, slow close 3 s",
            sizes.fault.as_secs()
        ),
        url: proxied_url.clone(),
        worker: WorkerArgs {
            lease_ms: 10_000,
            work_ms: 5,
            ..WorkerArgs::new(&proxied_url, &queue_name("net"))
        },
        workers: 2,
        jobs: sizes.jobs,
        send_over: sizes.gap * 5 + sizes.fault * 2,
        drain_timeout: Duration::from_secs(180),
        recovery_limit: Some(10.0),
    };
    let p = proxy.clone();
    let report = run(plan, move |ctx: Ctx| async move {
        let mut windows = Vec::new();
        let mut window = |start: u64| {
            windows.push(Window {
                start,
                end: now_ms(),
            })
        };
        tokio::time::sleep(sizes.gap).await;
        tracing::info!("fault: latency 200 ms");
        let start = now_ms();
        p.set_flow(Flow::Latency(Duration::from_millis(200)));
        tokio::time::sleep(sizes.fault).await;
        p.set_flow(Flow::Pass);
        window(start);

        tokio::time::sleep(sizes.gap).await;
        tracing::info!("fault: reset every connection");
        let start = now_ms();
        p.reset_all();
        window(start);

        tokio::time::sleep(sizes.gap).await;
        tracing::info!("fault: blackhole");
        let start = now_ms();
        p.set_flow(Flow::Hold);
        tokio::time::sleep(sizes.fault).await;
        p.set_flow(Flow::Pass);
        window(start);

        tokio::time::sleep(sizes.gap).await;
        tracing::info!("fault: slow close");
        let start = now_ms();
        p.slow_close_all(Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(3)).await;
        window(start);
        Ok((ctx, windows))
    })
    .await;
    if let Some(mut s) = tansu {
        let _ = s.kill().await;
        let _ = std::fs::remove_dir_all(s.dir());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_authority_to_proxy() {
        assert_eq!(
            authority("redis://127.0.0.1:6379", "://").unwrap(),
            "127.0.0.1:6379"
        );
        assert_eq!(
            authority("redis://:pw@localhost:6379/0?x=1", "://").unwrap(),
            "localhost:6379"
        );
        assert_eq!(
            authority(
                "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566&fifo=true",
                "endpoint=http://"
            )
            .unwrap(),
            "127.0.0.1:4566"
        );
        assert!(authority("sqs://us-east-1", "endpoint=http://").is_err());
    }
}
