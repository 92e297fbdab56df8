//! The worker process the harness starts, kills and restarts: a plain application worker
//! (`Queue::worker().handle_raw(..)`) that records each handler run in its ledger file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use queue::{Backoff, Delivery, RetryPolicy};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::ledger::LedgerWriter;

/// How a worker process works its queue.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Backend URL.
    #[arg(long)]
    pub url: String,
    /// Queue name.
    #[arg(long)]
    pub queue: String,
    /// Ledger file to append handler runs to.
    #[arg(long)]
    pub ledger: PathBuf,
    /// Jobs in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Lease (visibility timeout) in milliseconds: how soon a killed worker's jobs return.
    #[arg(long, default_value_t = 5000)]
    pub lease_ms: u64,
    /// Simulated work per job in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub work_ms: u64,
    /// Attempts before a job is dead-lettered (at most the backend's redrive limit: SQS's
    /// `maxReceiveCount`, 25 by default).
    #[arg(long, default_value_t = 10)]
    pub attempts: u32,
    /// Turn on the idempotency store: `backend` (the backend's own, Redis) or a `redis://`
    /// URL (for backends without one).
    #[arg(long)]
    pub idempotency: Option<String>,
    /// Typed jobs (`ChaosJob`) instead of raw deliveries: anything that is not such a job
    /// envelope is dead-lettered as malformed (the poison run).
    #[arg(long)]
    pub typed: bool,
    /// (for testing the harness) Ack every N-th job without recording it: a worker that
    /// loses jobs, which the harness must report as lost.
    #[arg(long, hide = true)]
    pub sabotage_every: Option<u64>,
}

impl WorkerArgs {
    /// The defaults for `queue` on `url`: concurrency 16, lease 5 s, 10 ms of work, 10
    /// attempts, no idempotency store, raw deliveries.
    pub fn new(url: &str, queue: &str) -> Self {
        WorkerArgs {
            url: url.to_string(),
            queue: queue.to_string(),
            ledger: PathBuf::new(),
            concurrency: 16,
            lease_ms: 5000,
            work_ms: 10,
            attempts: 10,
            idempotency: None,
            typed: false,
            sabotage_every: None,
        }
    }
}

/// The job the poison run sends through the framework.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ChaosJob {
    /// Its number.
    pub n: u64,
}

impl queue::Job for ChaosJob {
    const NAME: &'static str = "chaos";
}

/// The worker process's main: runs until killed.
pub async fn run(args: WorkerArgs) -> Result<(), String> {
    let backend = queue::connect(&args.url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let q = backend.queue(args.queue.clone());
    let ledger = Arc::new(LedgerWriter::open(&args.ledger).map_err(|e| e.to_string())?);
    let work = Duration::from_millis(args.work_ms);
    let sabotage = args.sabotage_every.filter(|n| *n > 0);
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut w = q
        .worker()
        .concurrency(args.concurrency)
        .poll_wait(Duration::from_millis(500))
        // Every job name these runs send is known: an unknown one is a hostile writer's
        // poison, dead-lettered (`unknown-job`) at once, not held for a newer worker.
        .unknown_job_grace(Duration::ZERO)
        // A job held by a killed worker costs an attempt each time: leave room for several
        // kills so that crashes alone do not dead-letter a job.
        .retry(RetryPolicy::new(
            args.attempts,
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2)),
        ));
    let run = move |id: String| {
        let ledger = ledger.clone();
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let drop_it = sabotage.is_some_and(|every| n.is_multiple_of(every));
        async move {
            if drop_it {
                return Ok(());
            }
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            ledger
                .record(&id)
                .map_err(|e| queue::JobError::retry(format!("ledger: {e}")))
        }
    };
    w = if args.typed {
        w.handle(move |_: ChaosJob, ctx: queue::JobContext| run(ctx.id.into_string()))
    } else {
        w.handle_raw(move |d: Delivery| run(d.id.into_string()))
    };
    if matches!(
        backend.capabilities().lease,
        queue::LeaseModel::PerMessage { .. }
    ) {
        w = w.lease(Duration::from_millis(args.lease_ms));
    }
    match args.idempotency.as_deref() {
        None => {}
        Some("backend") => {
            let store = backend
                .idempotency_store()
                .ok_or("this backend has no idempotency store; give a redis:// URL")?;
            w = w.idempotency(store, Duration::from_secs(3600));
        }
        Some(url) => {
            let store = queue::connect(url)
                .await
                .map_err(|e| format!("idempotency store: {e}"))?
                .idempotency_store()
                .ok_or("the idempotency URL's backend has no store")?;
            w = w.idempotency(store, Duration::from_secs(3600));
        }
    }
    let handle = w.start().map_err(|e| format!("start: {e}"))?;
    println!("ready");
    let mut last = None;
    let stats = args.ledger.with_extension("errors");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The backend errors this process met so far, for the harness to add up (it reads
        // the last figure even of a process it killed).
        let _ = std::fs::write(&stats, handle.report().backend_errors.to_string());
        let err = handle.last_error();
        if err.is_some() && err != last {
            eprintln!("worker error: {}", err.as_deref().unwrap_or(""));
            last = err;
        }
        if handle.report().crashed {
            return Err("the worker's loop crashed".into());
        }
    }
}

/// A set of worker processes on one queue, each with its own ledger file in one directory.
#[derive(Debug)]
pub struct Workers {
    args: WorkerArgs,
    dir: PathBuf,
    children: Vec<Child>,
    started: usize,
    /// Worker processes killed with SIGKILL so far.
    pub kills: usize,
}

impl Workers {
    /// Starts `n` worker processes and waits until each says it is ready.
    pub async fn start(args: WorkerArgs, dir: &Path, n: usize) -> Result<Self, String> {
        let mut w = Workers {
            args,
            dir: dir.to_path_buf(),
            children: Vec::new(),
            started: 0,
            kills: 0,
        };
        for _ in 0..n {
            let c = w.spawn().await?;
            w.children.push(c);
        }
        Ok(w)
    }

    async fn spawn(&mut self) -> Result<Child, String> {
        self.started += 1;
        let mut a = self.args.clone();
        a.ledger = self.dir.join(format!("worker-{}.ledger", self.started));
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker")
            .args(["--url", &a.url, "--queue", &a.queue])
            .arg("--ledger")
            .arg(&a.ledger)
            .args(["--concurrency", &a.concurrency.to_string()])
            .args(["--lease-ms", &a.lease_ms.to_string()])
            .args(["--work-ms", &a.work_ms.to_string()])
            .args(["--attempts", &a.attempts.to_string()]);
        if let Some(i) = &a.idempotency {
            cmd.args(["--idempotency", i]);
        }
        if a.typed {
            cmd.arg("--typed");
        }
        if let Some(n) = a.sabotage_every {
            cmd.args(["--sabotage-every", &n.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start a worker process: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        match ready {
            Ok(Ok(Some(l))) if l == "ready" => Ok(child),
            other => Err(format!("worker process did not start: {other:?}")),
        }
    }

    /// SIGKILLs one worker process (chosen at random) and starts a replacement.
    pub async fn kill_and_replace(&mut self) -> Result<(), String> {
        if self.children.is_empty() {
            return Err("no worker to kill".into());
        }
        let i = fastrand::usize(..self.children.len());
        let mut victim = self.children.swap_remove(i);
        victim.kill().await.map_err(|e| format!("kill: {e}"))?;
        self.kills += 1;
        let c = self.spawn().await?;
        self.children.push(c);
        Ok(())
    }

    /// Worker processes that exited by themselves (a crash the harness did not cause).
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|c| match c.try_wait() {
                Ok(Some(status)) => Some(format!("worker exited by itself: {status}")),
                _ => None,
            })
            .collect()
    }

    /// Kills every worker process.
    pub async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.kill().await;
        }
    }
}
