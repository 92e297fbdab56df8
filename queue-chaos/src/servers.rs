//! Brokers the harness starts itself, on free loopback ports with their data in a scratch
//! directory, so that it can SIGKILL and restart them: Redis with AOF, a three-node Redis
//! Cluster, tansu (Kafka) with sqlite storage. A server refuses to start on a port
//! something already answers on, and each Redis is checked to serve its own data
//! directory (`CONFIG GET dir`), so a run never talks to another process's broker.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A loopback port nothing listens on now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Waits until `port` accepts connections.
pub async fn wait_open(port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nothing answers on 127.0.0.1:{port} after {within:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scratch directory, emptied.
pub fn scratch(name: &str) -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!("queue-chaos-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// A broker process the harness can kill and start again on the same data.
#[derive(Debug)]
pub struct Server {
    program: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
    child: Option<Child>,
}

impl Server {
    fn new(program: impl Into<PathBuf>, args: Vec<String>, dir: &Path, port: u16) -> Self {
        Server {
            program: program.into(),
            args,
            dir: dir.to_path_buf(),
            port,
            child: None,
        }
    }

    /// Starts it and waits until its port answers.
    pub async fn start(&mut self) -> Result<(), String> {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
            drop(s);
            return Err(format!("port {} is taken by another process", self.port));
        }
        let log = std::fs::File::create(self.dir.join("server.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "start {} (scripts/services.sh up installs it): {e}",
                    self.program.display()
                )
            })?;
        self.child = Some(child);
        wait_open(self.port, Duration::from_secs(60)).await
    }

    /// SIGKILL: no shutdown, no final fsync.
    pub async fn kill(&mut self) -> Result<(), String> {
        if let Some(mut c) = self.child.take() {
            c.kill().await.map_err(|e| format!("kill: {e}"))?;
        }
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Redis with AOF (`appendfsync always`) on a free port.
pub fn redis(dir: &Path, port: u16, extra: &[&str]) -> Server {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::new("redis-server", args, dir, port)
}

/// Checks that the Redis on `port` keeps its data in `dir` (it is ours, not another that
/// took the port).
pub async fn check_redis_is_ours(port: u16, dir: &Path) -> Result<(), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let (_, served): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let same = std::fs::canonicalize(&served).ok() == std::fs::canonicalize(dir).ok();
    if same {
        Ok(())
    } else {
        Err(format!(
            "port {port} is served by another Redis (dir {served})"
        ))
    }
}

/// A Redis Cluster of three masters (no replicas), each with AOF, on free ports.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts the nodes and joins them (`redis-cli --cluster create`).
    pub async fn start(root: &Path) -> Result<Self, String> {
        let mut nodes = Vec::new();
        for i in 0..3 {
            let dir = root.join(format!("node{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let port = free_port()?;
            let mut s = redis(
                &dir,
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            );
            s.start().await?;
            check_redis_is_ours(port, &dir).await?;
            nodes.push(s);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let c = Cluster { nodes };
        c.wait_ok(Duration::from_secs(30)).await?;
        Ok(c)
    }

    /// The cluster URL for the driver.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}?cluster=true", self.nodes[0].port)
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub async fn wait_ok(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        'outer: loop {
            for n in &self.nodes {
                let ok = async {
                    let client =
                        redis::Client::open(format!("redis://127.0.0.1:{}", n.port)).ok()?;
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    Some(info.contains("cluster_state:ok"))
                }
                .await
                .unwrap_or(false);
                if !ok {
                    if Instant::now() > deadline {
                        return Err(format!("cluster not ok after {within:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'outer;
                }
            }
            return Ok(());
        }
    }

    /// The index of the node that serves hash tag `tag` (where a queue's keys live).
    pub async fn node_for(&self, tag: &str) -> Result<usize, String> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.nodes[0].port))
            .map_err(|e| e.to_string())?;
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{tag}}}"))
            .query_async(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(addr) = f.get(1) else { continue };
            let port: Option<u16> = addr
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            let owns = f.iter().skip(8).any(|r| {
                let mut it = r.split('-');
                match (
                    it.next().and_then(|a| a.parse::<i64>().ok()),
                    it.next().and_then(|b| b.parse::<i64>().ok()),
                ) {
                    (Some(a), Some(b)) => a <= slot && slot <= b,
                    (Some(a), None) => a == slot,
                    _ => false,
                }
            });
            if owns {
                if let Some(i) = self.nodes.iter().position(|n| Some(n.port) == port) {
                    return Ok(i);
                }
            }
        }
        Err(format!("no node serves slot {slot}"))
    }
}

/// tansu (Kafka) with sqlite storage in `dir`, listening on `port` and advertising
/// `advertised` (a proxy's port, or `port`).
pub fn tansu(dir: &Path, port: u16, advertised: u16) -> Result<Server, String> {
    let bin = tansu_bin()?;
    // tansu reads a .env in its working directory.
    std::fs::write(dir.join(".env"), "").map_err(|e| e.to_string())?;
    let args = vec![
        "broker".to_string(),
        "--listener-url".into(),
        format!("tcp://127.0.0.1:{port}"),
        "--advertised-listener-url".into(),
        format!("tcp://127.0.0.1:{advertised}"),
        "--storage-engine".into(),
        "sqlite://tansu.db".into(),
    ];
    Ok(Server::new(bin, args, dir, port))
}

fn tansu_bin() -> Result<PathBuf, String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join("bin").join("tansu")));
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    Err("tansu is not installed (scripts/services.sh up builds it)".into())
}
