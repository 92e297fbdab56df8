//! `queue-chaos`: fault tests for every backend, against real servers on loopback.
//!
//! Each run sends jobs with fixed ids (`<queue>-<n>`) at a steady pace to worker *processes*
//! while a fault happens, waits until every job whose send returned `Ok` was processed,
//! and reports per backend: sent, processed, dead-lettered, **lost** (must be 0),
//! duplicated (handler runs beyond the first) and how long recovery took. It exits with
//! status 1 when anything was lost.
//!
//! ```text
//! cargo run --release -p queue-chaos -- crash --backends redis,sqs,kafka
//! cargo run --release -p queue-chaos -- crash --backends redis --jobs 100000 --idempotency
//! ```
//!
//! Servers: Redis on 6379, moto (SQS) on 4566, tansu (Kafka) on 9092, as
//! `scripts/services.sh up` starts them; faults that restart a broker start their own on a
//! free port. See docs/reliability.md for the method and the figures.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod faults;
mod ledger;
mod proxy;
mod report;
mod run;
mod servers;
mod worker;

use report::Report;
use run::{queue_name, Plan};
use worker::WorkerArgs;

#[derive(Parser, Debug)]
#[command(about = "Fault tests for every queue backend: nothing accepted may be lost")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Also write the reports as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Redis URL.
    #[arg(long, global = true, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// SQS URL (moto).
    #[arg(
        long,
        global = true,
        default_value = "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566"
    )]
    sqs_url: String,
    /// Kafka URL (tansu).
    #[arg(long, global = true, default_value = "kafka://127.0.0.1:9092")]
    kafka_url: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Worker processes SIGKILLed and restarted under load.
    Crash {
        /// Backends: redis, sqs, kafka.
        #[arg(long, value_delimiter = ',', default_value = "redis,sqs,kafka")]
        backends: Vec<String>,
        /// Jobs per backend (default: redis 100000, sqs 3000, kafka 10000).
        #[arg(long)]
        jobs: Option<usize>,
        /// Worker processes.
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// SIGKILLs per run.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Seconds between kills (default: 3; kafka 8, so that the group settles between).
        #[arg(long)]
        interval: Option<f64>,
        /// Simulated work per job, in milliseconds.
        #[arg(long, default_value_t = 10)]
        work_ms: u64,
        /// Turn the idempotency store on (Redis's; for SQS and Kafka, one on --redis-url):
        /// `duplicated` then counts repeated effects.
        #[arg(long)]
        idempotency: bool,
        /// (for testing the harness) Workers ack every N-th job without running it.
        #[arg(long, hide = true)]
        sabotage_every: Option<u64>,
        /// Seconds every accepted job may take to be processed after the last send.
        #[arg(long, default_value_t = 180.0)]
        drain_timeout: f64,
    },
    /// The broker SIGKILLed and restarted under load (its own broker on a free port).
    Restart {
        /// Brokers: redis (AOF), cluster (one node of three), kafka (tansu). Not sqs:
        /// moto keeps no state across a restart.
        #[arg(long, value_delimiter = ',', default_value = "redis,cluster,kafka")]
        backends: Vec<String>,
        /// Jobs per run (default: redis and cluster 30000, kafka 5000).
        #[arg(long)]
        jobs: Option<usize>,
        /// Restarts per run.
        #[arg(long, default_value_t = 2)]
        restarts: usize,
        /// Seconds between restarts.
        #[arg(long, default_value_t = 6.0)]
        interval: f64,
        /// Seconds the broker stays down.
        #[arg(long, default_value_t = 3.0)]
        down: f64,
    },
    /// Network faults through a fault proxy: latency, resets, a blackhole, a slow close.
    Network {
        /// Backends: redis, sqs, kafka (its own tansu, advertising the proxy).
        #[arg(long, value_delimiter = ',', default_value = "redis,sqs,kafka")]
        backends: Vec<String>,
        /// Jobs per run (default: redis 30000, sqs 2000, kafka 5000).
        #[arg(long)]
        jobs: Option<usize>,
        /// Seconds of healthy traffic before, between and after the faults.
        #[arg(long, default_value_t = 5.0)]
        gap: f64,
        /// Seconds the latency and the blackhole last.
        #[arg(long, default_value_t = 6.0)]
        fault: f64,
    },
    /// Hostile messages from raw clients (1 %) among healthy jobs: every one dead-lettered
    /// with its reason, healthy throughput at least 0.8x a clean drain.
    Poison {
        /// Backends: redis, sqs, kafka.
        #[arg(long, value_delimiter = ',', default_value = "redis,sqs,kafka")]
        backends: Vec<String>,
        /// Healthy jobs per run (default: redis 50000, sqs 1000, kafka 5000: moto and tansu
        /// slow down badly with many unread messages).
        #[arg(long)]
        jobs: Option<usize>,
        /// Poison per hundred healthy jobs (at least one of each kind is sent).
        #[arg(long, default_value_t = 1.0)]
        percent: f64,
    },
    /// (internal) One worker process.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // QUEUE_CHAOS_DEBUG=1: trace logs (with `?debug=cgrp,fetch` on the Kafka URL,
        // librdkafka's own) from the harness and every worker process.
        .with_max_level(if std::env::var_os("QUEUE_CHAOS_DEBUG").is_some() {
            tracing::Level::TRACE
        } else {
            tracing::Level::INFO
        })
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async move {
        match main_async(cli).await {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("queue-chaos: {e}");
                2
            }
        }
    });
    std::process::exit(code);
}

async fn main_async(cli: Cli) -> Result<bool, String> {
    let mut reports: Vec<Report> = Vec::new();
    match &cli.command {
        Cmd::Worker(args) => {
            worker::run(args.clone()).await?;
            return Ok(true);
        }
        Cmd::Crash {
            backends,
            jobs,
            workers,
            kills,
            interval,
            work_ms,
            idempotency,
            sabotage_every,
            drain_timeout,
        } => {
            for b in backends {
                let url = backend_url(&cli, b)?;
                let (default_jobs, default_interval) = match b.as_str() {
                    "redis" => (100_000, 3.0),
                    "sqs" => (3_000, 3.0),
                    _ => (10_000, 8.0),
                };
                let interval = secs(interval.unwrap_or(default_interval), "--interval")?;
                let idem = idempotency.then(|| {
                    if b == "redis" {
                        "backend".to_string()
                    } else {
                        cli.redis_url.clone()
                    }
                });
                let plan = Plan {
                    backend: b.clone(),
                    fault: format!(
                        "{kills} SIGKILLs of {workers} workers{}",
                        if *idempotency { ", idempotency on" } else { "" }
                    ),
                    url: url.clone(),
                    worker: WorkerArgs {
                        work_ms: *work_ms,
                        idempotency: idem,
                        sabotage_every: *sabotage_every,
                        ..WorkerArgs::new(&url, &queue_name("crash"))
                    },
                    workers: *workers,
                    jobs: jobs.unwrap_or(default_jobs),
                    send_over: interval * (*kills as u32),
                    drain_timeout: secs(*drain_timeout, "--drain-timeout")?,
                    recovery_limit: None,
                };
                let r = faults::crash::crash(plan, *kills, interval).await?;
                keep(&mut reports, r);
            }
        }
        Cmd::Restart {
            backends,
            jobs,
            restarts,
            interval,
            down,
        } => {
            for b in backends {
                let broker = faults::restart::Broker::parse(b)?;
                let sizes = faults::restart::Sizes {
                    jobs: jobs.unwrap_or(if broker == faults::restart::Broker::Kafka {
                        5_000
                    } else {
                        30_000
                    }),
                    restarts: *restarts,
                    interval: secs(*interval, "--interval")?,
                    down: secs(*down, "--down")?,
                    work_ms: 5,
                };
                let r = faults::restart::restart(broker, sizes).await?;
                keep(&mut reports, r);
            }
        }
        Cmd::Network {
            backends,
            jobs,
            gap,
            fault,
        } => {
            for b in backends {
                let url = backend_url(&cli, b)?;
                let sizes = faults::network::Sizes {
                    jobs: jobs.unwrap_or(match b.as_str() {
                        "redis" => 30_000,
                        "sqs" => 2_000,
                        _ => 5_000,
                    }),
                    gap: secs(*gap, "--gap")?,
                    fault: secs(*fault, "--fault")?,
                };
                let r = faults::network::network(b, &url, sizes).await?;
                keep(&mut reports, r);
            }
        }
        Cmd::Poison {
            backends,
            jobs,
            percent,
        } => {
            for b in backends {
                let url = backend_url(&cli, b)?;
                let sizes = faults::poison::Sizes {
                    jobs: jobs.unwrap_or(match b.as_str() {
                        "redis" => 50_000,
                        "sqs" => 1_000,
                        _ => 5_000,
                    }),
                    percent: *percent,
                };
                let r = faults::poison::poison(b, &url, sizes).await?;
                keep(&mut reports, r);
            }
        }
    }
    println!("{}", report::table(&reports));
    for r in &reports {
        for n in &r.notes {
            println!("{} / {}: {n}", r.backend, r.fault);
        }
    }
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(reports.iter().all(Report::passed))
}

/// Shows one run's row as soon as it ends (a long session shows progress) and keeps it.
fn keep(reports: &mut Vec<Report>, r: Report) {
    eprintln!("{}", report::table(std::slice::from_ref(&r)));
    reports.push(r);
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("{what}: {e}"))
}

fn backend_url(cli: &Cli, backend: &str) -> Result<String, String> {
    match backend {
        "redis" => Ok(cli.redis_url.clone()),
        "sqs" => Ok(cli.sqs_url.clone()),
        "kafka" => Ok(cli.kafka_url.clone()),
        other => Err(format!("unknown backend {other:?}: redis, sqs or kafka")),
    }
}
