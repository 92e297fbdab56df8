//! `queue-bench`: one workload against every backend, each through the framework
//! (`Producer` + `Worker`) and, right beside it, through the raw client doing the same work.
//! Runs alternate (framework, raw, raw, framework, ...) so drift on a shared machine hits
//! both; each figure is the median of the runs, and the framework/raw ratio is the figure
//! that holds across machines.
//!
//! ```text
//! cargo run --release -p queue-bench -- --backends memory,redis,sqs,kafka,postgres --json bench.json --chart bench.svg
//! cargo run -p queue-bench -- --quick --backends memory
//! cargo run --release -p queue-bench -- --backends redis --steady-rate 1000 --duration 30
//! cargo run --release -p queue-bench -- --backends memory,redis --in-flight 100000
//! ```
//!
//! Three modes:
//! - **throughput** (default): `--messages` sent as fast as `--producers` can, in batches
//!   of `--batch`; end-to-end rate and latency, framework beside raw.
//! - **steady rate** (`--steady-rate R --duration S`): open-loop arrivals, one message
//!   every 1/R s for S s, each sent on its own task whatever the previous send is doing;
//!   the figures to read are p50/p99 from enqueue to handler start, framework beside raw.
//! - any mode with `--status URL`: the framework side records job status in that store
//!   (`queue_core::status`), so its ratio to raw shows what job status costs.
//! - any mode with `--rate-limit N` or `--per-key-concurrency N` (messages spread over
//!   `--keys` tenants): the framework side runs with that limit active, so its ratio to
//!   raw shows what the limiter costs.
//! - **fairness** (`--fairness N`): N jobs of one tenant, then 10 of another; how long until
//!   the small tenant is done, with a plain worker and with per-key concurrency.
//! - **flows** (`--flows N`): N chains of two jobs as flows against 2N plain jobs, and a
//!   1,000-job batch to its report: what a flow costs per job (see `flows.rs`).
//! - **in flight** (`--in-flight N`): N jobs whose handlers all wait until the N-th has
//!   started (concurrency N); reports the worker's resident memory for N jobs in flight
//!   (framework only: the raw clients have no notion of a job in flight).
//!
//! Progress bars (indicatif) show on a terminal and stay quiet otherwise.
//!
//! Raw baselines: tokio mpsc (memory); LPUSH / RPOP with a count (redis lists: no lease, no
//! ack); SendMessageBatch / ReceiveMessage / DeleteMessageBatch (sqs); FutureProducer and a
//! StreamConsumer committing every 100 records (kafka). Every message carries its send time
//! in its first 8 bytes; latency is measured from there to the handler's start.

use raw::raw;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use queue_core::{Delivery, Message};
use serde::Serialize;

mod bloat;
mod chart;
mod fairness;
mod flows;
mod inflight;
mod raw;
mod status;

#[derive(Parser, Debug, Clone)]
#[command(about = "Benchmark queue backends side by side, each beside its raw client")]
struct Args {
    /// Backends to run, comma-separated: memory, redis, sqs, kafka.
    #[arg(long, value_delimiter = ',', default_value = "memory,redis,sqs,kafka")]
    backends: Vec<String>,
    /// Messages per run.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Payload size in bytes (at least 8).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Worker concurrency (raw: consumer tasks).
    #[arg(long, default_value_t = 16)]
    consumers: usize,
    /// Messages per send batch.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Handler cost: `none`, `sleep:MS` or `spin:US`.
    #[arg(long, default_value = "none")]
    handler: String,
    /// Runs per backend and mode (median reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Steady-rate mode: open-loop arrivals at this many messages per second (one per send).
    #[arg(long)]
    steady_rate: Option<u32>,
    /// Seconds of arrivals in steady-rate mode.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// In-flight mode: this many jobs held in flight at once; reports the worker's memory.
    #[arg(long)]
    in_flight: Option<usize>,
    /// Run only the framework side (for profiling it); ratios are then not computed.
    #[arg(long)]
    framework_only: bool,
    /// Smoke run: 500 messages, 1 run (finishes in well under a minute).
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw an SVG bar chart of end-to-end throughput here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Record every job's status in this store on the framework side (memory://,
    /// redis://…, postgres://…): the ratio to raw then includes job status.
    #[arg(long)]
    status: Option<String>,
    /// Framework side: a queue rate limit of this many jobs per second, with a burst of as
    /// many (set it above the workload's rate to measure what an active limiter costs).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Framework side: at most this many jobs of one key at once (messages carry one of
    /// `--keys` tenants in a header).
    #[arg(long)]
    per_key_concurrency: Option<u32>,
    /// Tenants the messages are spread over (with --per-key-concurrency).
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// PostgreSQL bloat mode: this many seconds of steady flow through the postgres
    /// driver, reporting throughput, table and index size and dead rows every 5 s.
    #[arg(long)]
    pg_bloat: Option<u64>,
    /// With --pg-bloat: hold a transaction's snapshot open this long, from a third of the
    /// way in.
    #[arg(long, default_value_t = 60)]
    hold: u64,
    /// Fairness mode: a backlog of this many jobs of one tenant, then 10 of another; how
    /// long until the small tenant's jobs are done, without and with per-key concurrency.
    #[arg(long)]
    fairness: Option<usize>,
    /// Flows mode: this many chains of two jobs against twice as many plain jobs, a flow
    /// of 1,000 jobs to its report, and a batch of 10,000 jobs to its `on_complete`
    /// against 10,000 plain jobs: what a flow and a batch cost per job.
    #[arg(long)]
    flows: Option<usize>,
    /// Shards of the fair run in fairness mode (2 to 256; big and small must not share one).
    #[arg(long, default_value_t = 8)]
    fair_shards: u16,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// SQS URL (moto on loopback by default).
    #[arg(
        long,
        default_value = "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566"
    )]
    sqs_url: String,
    /// Kafka URL (tansu on loopback by default).
    #[arg(long, default_value = "kafka://127.0.0.1:9092")]
    kafka_url: String,
    /// PostgreSQL URL (the test role and database on loopback by default).
    #[arg(
        long,
        default_value = "postgres://queue:queue@127.0.0.1:5432/queue_test?schema=bench"
    )]
    postgres_url: String,
}

#[derive(Clone, Copy, Debug)]
enum Cost {
    None,
    Sleep(Duration),
    Spin(Duration),
}

impl Cost {
    fn parse(s: &str) -> Result<Cost, String> {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("bad handler cost {s:?}"))
        };
        match s.split_once(':') {
            None if s == "none" => Ok(Cost::None),
            Some(("sleep", v)) => Ok(Cost::Sleep(Duration::from_millis(num(v)?))),
            Some(("spin", v)) => Ok(Cost::Spin(Duration::from_micros(num(v)?))),
            _ => Err(format!(
                "handler must be none, sleep:MS or spin:US, not {s:?}"
            )),
        }
    }
    async fn pay(self) {
        match self {
            Cost::None => {}
            Cost::Sleep(d) => tokio::time::sleep(d).await,
            Cost::Spin(d) => {
                let t = Instant::now();
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
struct Run {
    send_per_sec: f64,
    e2e_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests_per_message: Option<f64>,
    peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    backend: String,
    framework: Run,
    raw: Run,
    /// framework e2e throughput / raw e2e throughput.
    e2e_ratio: f64,
    /// framework send throughput / raw send throughput.
    send_ratio: f64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn payload(size: usize) -> Vec<u8> {
    let mut p = now_micros().to_le_bytes().to_vec();
    p.resize(size.max(8), b'x');
    p
}

/// Latency samples and the done count, shared by the handlers of one run.
#[derive(Default)]
struct Probe {
    lat_us: Mutex<Vec<u64>>,
    done: AtomicUsize,
    bar: Mutex<Option<ProgressBar>>,
}

/// A progress bar for one run (drawn only when stderr is a terminal).
fn progress(len: usize, label: String) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_prefix(label);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>22} {bar:30} {pos}/{len} {per_sec} {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

impl Probe {
    fn new(len: usize, label: String) -> Self {
        Probe {
            bar: Mutex::new(Some(progress(len, label))),
            ..Probe::default()
        }
    }
    fn record(&self, p: &[u8]) {
        if let Some(b) = p.get(..8) {
            let sent = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            self.lat_us
                .lock()
                .unwrap()
                .push(now_micros().saturating_sub(sent));
        }
        self.done.fetch_add(1, AO::SeqCst);
    }
    async fn wait_for(&self, n: usize, limit: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            let done = self.done.load(AO::SeqCst);
            if let Some(bar) = &*self.bar.lock().unwrap() {
                bar.set_position(done as u64);
            }
            if done >= n {
                break;
            }
            if t.elapsed() > limit {
                return Err(format!(
                    "only {} of {n} handled within {limit:?}",
                    self.done.load(AO::SeqCst)
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

/// Samples this process's resident memory while a run lasts.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    base: u64,
}

fn rss_kb() -> u64 {
    proc_status_kb("VmRSS:")
}

/// The process's peak resident memory so far (Linux's VmHWM), in KB.
fn peak_rss_kb() -> u64 {
    proc_status_kb("VmHWM:")
}

/// A `/proc/self/status` figure in KB (0 where there is none).
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl RssSampler {
    fn start() -> Self {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let base = rss_kb();
        let (s, p) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !s.load(AO::Relaxed) {
                p.fetch_max(rss_kb(), AO::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssSampler { stop, peak, base }
    }
    fn finish(self) -> f64 {
        self.stop.store(true, AO::Relaxed);
        self.peak.load(AO::Relaxed).saturating_sub(self.base) as f64 / 1024.0
    }
}

fn summarize(
    a: &Args,
    send: Duration,
    e2e: Duration,
    probe: &Probe,
    requests: Option<u64>,
    rss: f64,
) -> Run {
    if let Some(bar) = probe.bar.lock().unwrap().take() {
        bar.finish_and_clear();
    }
    let mut lat = probe.lat_us.lock().unwrap().clone();
    lat.sort_unstable();
    let q = |f: f64| {
        lat.get(((lat.len() as f64 - 1.0) * f) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Run {
        send_per_sec: a.messages as f64 / send.as_secs_f64(),
        e2e_per_sec: a.messages as f64 / e2e.as_secs_f64(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: q(1.0),
        requests_per_message: requests.map(|r| r as f64 / a.messages as f64),
        peak_rss_mb: rss,
    }
}

/// Splits `n` messages over `producers` and sends each share in batches with `send`.
async fn produce<F, Fut>(a: &Args, send: F) -> Result<Duration, String>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let t = Instant::now();
    let mut tasks = Vec::new();
    if let Some(rate) = a.steady_rate {
        // Open loop: each arrival is its own task, so a slow send never delays the next.
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..a.messages {
            tick.tick().await;
            tasks.push(tokio::spawn(send(1)));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        return Ok(t.elapsed());
    }
    for p in 0..a.producers {
        let share = a.messages / a.producers + usize::from(p < a.messages % a.producers);
        let (batch, send) = (a.batch.max(1), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut left = share;
            while left > 0 {
                let k = left.min(batch);
                send(k).await?;
                left -= k;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(t.elapsed())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        now_micros() % 1_000_000_000
    )
}

/// The URL of a backend by its bench name.
fn url_for(a: &Args, backend: &str) -> Result<String, String> {
    Ok(match backend {
        "memory" => "memory://".to_string(),
        "redis" => a.redis_url.clone(),
        "sqs" => a.sqs_url.clone(),
        "kafka" => a.kafka_url.clone(),
        "postgres" => a.postgres_url.clone(),
        other => return Err(format!("unknown backend {other}")),
    })
}

/// The workload through the framework.
async fn framework(a: &Args, kind: &str) -> Result<Run, String> {
    let mut backend = queue_core::connect(&url_for(a, kind)?)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(url) = &a.status {
        backend = backend.with_status(status::store_for(url).await?);
    }
    let name = unique("bench");
    let queue = backend.queue(name.clone());
    queue.create().await.map_err(|e| e.to_string())?;
    queue.stats().await.map_err(|e| e.to_string())?;
    let before = backend.requests_made();
    let probe = Arc::new(Probe::new(a.messages, format!("{kind} framework")));
    let cost = Cost::parse(&a.handler)?;
    let rss = RssSampler::start();
    let p2 = probe.clone();
    let mut worker = queue
        .worker()
        .concurrency(a.consumers)
        .poll_wait(Duration::from_secs(1))
        .lease(Duration::from_secs(120));
    if let Some(n) = a.rate_limit {
        // A burst of a second's worth: the limiter is consulted for every job (its cost
        // is what this measures) without pacing jobs tokio's 1 ms timer cannot resolve.
        let limit = queue_core::RateLimit::per_second(n)
            .and_then(|l| l.burst(n))
            .map_err(|e| e.to_string())?;
        worker = worker.rate_limit(limit);
    }
    if let Some(n) = a.per_key_concurrency {
        worker = worker.concurrency_per_key(n, queue_core::LimitKey::Header("tenant".into()));
    }
    if backend.store().is_none() {
        // One process without `--status`: its limits are kept in it (what is measured).
        worker = worker.local_only();
    }
    let worker = worker
        .handle_raw(move |d: Delivery| {
            p2.record(&d.payload);
            async move {
                cost.pay().await;
                Ok(())
            }
        })
        .start()
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let producer = queue.producer();
    let size = a.payload;
    let keys = a.keys.max(1);
    let sent = Arc::new(AtomicUsize::new(0));
    let send = produce(a, move |k| {
        let producer = producer.clone();
        let sent = sent.clone();
        async move {
            let msgs = (0..k)
                .map(|_| {
                    let t = sent.fetch_add(1, AO::Relaxed) % keys;
                    Message::new(payload(size)).header("tenant", format!("t{t}"))
                })
                .collect();
            producer
                .send_batch(msgs)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    probe.wait_for(a.messages, Duration::from_secs(900)).await?;
    let e2e = t0.elapsed();
    worker.shutdown().await;
    let requests = backend.requests_made().map(|n| n - before.unwrap_or(0));
    let _ = queue.delete().await;
    Ok(summarize(a, send, e2e, &probe, requests, rss.finish()))
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|x, y| x.e2e_per_sec.total_cmp(&y.e2e_per_sec));
    runs.swap_remove(runs.len() / 2)
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<8} {:<9} {:>11} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "backend",
        "mode",
        "send msg/s",
        "e2e msg/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "req/msg",
        "peak MB"
    );
    for r in rows {
        for (mode, run) in [("framework", &r.framework), ("raw", &r.raw)] {
            println!(
                "{:<8} {:<9} {:>11.0} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8.1}",
                r.backend,
                mode,
                run.send_per_sec,
                run.e2e_per_sec,
                run.p50_ms,
                run.p99_ms,
                run.max_ms,
                run.requests_per_message
                    .map_or("-".into(), |v| format!("{v:.3}")),
                run.peak_rss_mb
            );
        }
        println!(
            "{:<8} {:<9} {:>11.2} {:>11.2}",
            r.backend, "ratio", r.send_ratio, r.e2e_ratio
        );
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut a = Args::parse();
    if a.quick {
        a.messages = 500;
        a.runs = 1;
    }
    a.producers = a.producers.max(1);
    if let Err(e) = Cost::parse(&a.handler) {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    queue_redis::register();
    queue_sqs::register();
    queue_kafka::register();
    queue_postgres::register();
    if let Some(n) = a.in_flight {
        if n == 0 || n > 100_000 {
            eprintln!("--in-flight must be 1 to 100000 (the worker's concurrency limit)");
            return std::process::ExitCode::FAILURE;
        }
        return in_flight_mode(&a, n).await;
    }
    if let Some(n) = a.fairness {
        return fairness::run(&a, n).await;
    }
    if let Some(n) = a.flows {
        if n == 0 || n > 1_000_000 {
            eprintln!("--flows must be 1 to 1000000");
            return std::process::ExitCode::FAILURE;
        }
        return flows::run(&a, n).await;
    }
    if let Some(secs) = a.pg_bloat {
        if !(15..=24 * 3600).contains(&secs) {
            eprintln!("--pg-bloat must be 15 s to a day");
            return std::process::ExitCode::FAILURE;
        }
        return bloat::run(&a, secs, a.hold).await;
    }
    if let Some(rate) = a.steady_rate {
        if rate == 0 || a.duration == 0 {
            eprintln!("--steady-rate and --duration must be above 0");
            return std::process::ExitCode::FAILURE;
        }
        a.messages = (u64::from(rate) * a.duration) as usize;
        a.batch = 1;
        println!(
            "steady rate: {rate} msg/s for {} s, open loop, one message per send; read p50/p99 (enqueue to handler start)",
            a.duration
        );
    }
    println!(
        "workload: {} messages of {} bytes, {} producers, concurrency {}, batch {}, handler {}, {} run(s)",
        a.messages, a.payload, a.producers, a.consumers, a.batch, a.handler, a.runs
    );
    let mut rows = Vec::new();
    for backend in a.backends.clone() {
        let (mut fw, mut rw) = (Vec::new(), Vec::new());
        for run in 0..a.runs {
            // Alternate the order so that drift hits both modes alike.
            for framework_first in [run % 2 == 0, run % 2 != 0] {
                if a.framework_only && !framework_first {
                    continue;
                }
                let r = if framework_first {
                    framework(&a, &backend).await.map(|r| fw.push(r))
                } else {
                    raw(&a, &backend).await.map(|r| rw.push(r))
                };
                if let Err(e) = r {
                    eprintln!("{backend}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        if a.framework_only {
            let r = median(fw);
            println!(
                "{backend}: framework only: e2e {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
                r.e2e_per_sec, r.p50_ms, r.p99_ms
            );
            continue;
        }
        let (framework, raw) = (median(fw), median(rw));
        rows.push(Row {
            e2e_ratio: framework.e2e_per_sec / raw.e2e_per_sec,
            send_ratio: framework.send_per_sec / raw.send_per_sec,
            backend,
            framework,
            raw,
        });
    }
    print_table(&rows);
    if let Some(path) = &a.json {
        let json = serde_json::json!({ "workload": format!("{a:?}"), "results": rows });
        if let Err(e) = std::fs::write(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        ) {
            eprintln!("writing {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    if let Some(path) = &a.chart {
        if let Err(e) = chart::draw(&rows, path) {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}

/// In-flight mode: one measurement per backend, printed and optionally written as JSON.
async fn in_flight_mode(a: &Args, n: usize) -> std::process::ExitCode {
    println!(
        "in flight: {n} jobs of {} bytes held in flight at once (concurrency {n})",
        a.payload
    );
    let mut out = Vec::new();
    for backend in &a.backends {
        match inflight::run(a, backend, n).await {
            Ok(r) => {
                println!(
                    "{:<8} {:>8} jobs in flight: worker {:>7.1} MB, {:>5.2} KB per job, process peak {:>7.1} MB, all started after {:.1} s",
                    r.backend, r.jobs, r.worker_mb, r.kb_per_job, r.process_peak_mb, r.all_started_after_s
                );
                out.push(r);
            }
            Err(e) => {
                eprintln!("{backend}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &a.json {
        let json = serde_json::json!({ "in_flight": out });
        if let Err(e) = std::fs::write(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        ) {
            eprintln!("writing {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
