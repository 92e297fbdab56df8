//! Broker restarts under load: the broker process is SIGKILLed and started again on the
//! same data while producers send and workers work. Nothing in the application restarts:
//! the producer's failed sends are sent again, the workers reconnect by themselves.
//!
//! - **Redis** with AOF `appendfsync always`: every write acknowledged before the kill is
//!   on disk, so every send that returned `Ok` survives.
//! - **Redis Cluster**, three masters without replicas: the node that holds the queue's
//!   hash slot is killed; the cluster answers CLUSTERDOWN for that slot until the node is
//!   back with its AOF and `nodes.conf`.
//! - **Kafka** (tansu with sqlite storage): records and committed offsets are in the
//!   sqlite file; the consumer group forms again after the restart.
//! - **SQS**: not tested. moto keeps no state across a restart; against AWS, durability is
//!   SQS's own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::ledger::now_ms;
use crate::report::Report;
use crate::run::{queue_name, run, Ctx, Plan, Window};
use crate::servers::{self, check_redis_is_ours, free_port, scratch, Cluster, Server};
use crate::worker::WorkerArgs;

/// Which broker to restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// A standalone Redis with AOF.
    Redis,
    /// One node of a three-master Redis Cluster.
    Cluster,
    /// tansu.
    Kafka,
}

impl Broker {
    /// Parses `redis`, `cluster` or `kafka`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "redis" => Ok(Broker::Redis),
            "cluster" | "redis-cluster" => Ok(Broker::Cluster),
            "kafka" => Ok(Broker::Kafka),
            "sqs" => Err("sqs: moto keeps no state across a restart, so there is nothing to test (against AWS, durability is SQS's)".into()),
            o => Err(format!("unknown broker {o:?}: redis, cluster or kafka")),
        }
    }
}

/// Sizes of a restart run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Jobs sent.
    pub jobs: usize,
    /// Restarts.
    pub restarts: usize,
    /// Seconds between restarts (and before the first).
    pub interval: Duration,
    /// How long the broker stays down.
    pub down: Duration,
    /// Simulated work per job.
    pub work_ms: u64,
}

/// Starts its own broker, runs the load, and restarts the broker `sizes.restarts` times.
pub async fn restart(broker: Broker, sizes: Sizes) -> Result<Report, String> {
    let queue = queue_name("restart");
    let (servers, victim, url, label) = match broker {
        Broker::Redis => {
            let dir = scratch("redis")?;
            let port = free_port()?;
            let mut s = servers::redis(&dir, port, &[]);
            s.start().await?;
            check_redis_is_ours(port, &dir).await?;
            (vec![s], 0, format!("redis://127.0.0.1:{port}"), "redis")
        }
        Broker::Cluster => {
            let c = Cluster::start(&scratch("cluster")?).await?;
            let victim = c.node_for(&queue).await?;
            let url = c.url();
            (c.nodes, victim, url, "redis cluster")
        }
        Broker::Kafka => {
            let dir = scratch("tansu")?;
            let port = free_port()?;
            let mut s = servers::tansu(&dir, port, port)?;
            s.start().await?;
            (vec![s], 0, format!("kafka://127.0.0.1:{port}"), "kafka")
        }
    };
    let servers = Arc::new(Mutex::new(servers));
    let plan = Plan {
        backend: label.into(),
        fault: format!(
            "broker SIGKILLed {}x, down {} s each",
            sizes.restarts,
            sizes.down.as_secs()
        ),
        url: url.clone(),
        worker: WorkerArgs {
            work_ms: sizes.work_ms,
            ..WorkerArgs::new(&url, &queue)
        },
        workers: 2,
        jobs: sizes.jobs,
        send_over: sizes.interval * (sizes.restarts as u32 + 1),
        drain_timeout: Duration::from_secs(180),
        recovery_limit: None,
    };
    let s2 = servers.clone();
    let report = run(plan, move |ctx: Ctx| async move {
        let mut windows = Vec::new();
        for _ in 0..sizes.restarts {
            tokio::time::sleep(sizes.interval).await;
            let mut servers = s2.lock().await;
            let s: &mut Server = &mut servers[victim];
            let start = now_ms();
            tracing::info!(port = s.port, "SIGKILL the broker");
            s.kill().await?;
            tokio::time::sleep(sizes.down).await;
            s.start().await?;
            tracing::info!(port = s.port, "broker back");
            windows.push(Window {
                start,
                end: now_ms(),
            });
        }
        Ok((ctx, windows))
    })
    .await;
    for s in servers.lock().await.iter_mut() {
        let _ = s.kill().await;
        let _ = std::fs::remove_dir_all(s.dir());
    }
    report
}
