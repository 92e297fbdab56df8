//! `queue-bench`: one workload against every backend, each through the framework
//! (`Producer` + `Worker`) and, right beside it, through the raw client doing the same work.
//! Runs alternate (framework, raw, raw, framework, ...) so drift on a shared machine hits
//! both; each figure is the median of the runs, and the framework/raw ratio is the figure
//! that holds across machines.
//!
//! ```text
//! cargo run --release -p queue-bench -- --backends memory,redis,sqs,kafka --json bench.json --chart bench.svg
//! cargo run -p queue-bench -- --quick --backends memory
//! ```
//!
//! Raw baselines: tokio mpsc (memory); LPUSH / RPOP with a count (redis lists: no lease, no
//! ack); SendMessageBatch / ReceiveMessage / DeleteMessageBatch (sqs); FutureProducer and a
//! StreamConsumer committing every 100 records (kafka). Every message carries its send time
//! in its first 8 bytes; latency is measured from there to the handler's start.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use queue_core::{Delivery, Driver, Message};
use serde::Serialize;

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
}

impl Probe {
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
        while self.done.load(AO::SeqCst) < n {
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
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
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
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let t = Instant::now();
    let mut tasks = Vec::new();
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

/// The workload through the framework.
async fn framework(a: &Args, backend: &str) -> Result<Run, String> {
    let url = match backend {
        "memory" => "memory://".to_string(),
        "redis" => a.redis_url.clone(),
        "sqs" => a.sqs_url.clone(),
        "kafka" => a.kafka_url.clone(),
        other => return Err(format!("unknown backend {other}")),
    };
    let backend = queue_core::connect(&url).await.map_err(|e| e.to_string())?;
    let name = unique("bench");
    let queue = backend.queue(name.clone());
    queue.create().await.map_err(|e| e.to_string())?;
    queue.stats().await.map_err(|e| e.to_string())?;
    let before = backend.requests_made();
    let probe = Arc::new(Probe::default());
    let cost = Cost::parse(&a.handler)?;
    let rss = RssSampler::start();
    let p2 = probe.clone();
    let worker = queue
        .worker()
        .concurrency(a.consumers)
        .poll_wait(Duration::from_secs(1))
        .lease(Duration::from_secs(120))
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
    let send = produce(a, move |k| {
        let producer = producer.clone();
        async move {
            let msgs = (0..k).map(|_| Message::new(payload(size))).collect();
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

/// The same workload with the raw client.
async fn raw(a: &Args, backend: &str) -> Result<Run, String> {
    let probe = Arc::new(Probe::default());
    let cost = Cost::parse(&a.handler)?;
    let rss = RssSampler::start();
    let t0 = Instant::now();
    let size = a.payload;
    let (send, requests) = match backend {
        "memory" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..a.consumers {
                let (rx, probe) = (rx.clone(), probe.clone());
                tokio::spawn(async move {
                    loop {
                        let mut buf = Vec::new();
                        if rx.lock().await.recv_many(&mut buf, 10).await == 0 {
                            return;
                        }
                        for p in buf {
                            probe.record(&p);
                            cost.pay().await;
                        }
                    }
                });
            }
            let send = produce(a, move |k| {
                let tx = tx.clone();
                async move {
                    for _ in 0..k {
                        tx.send(payload(size)).await.map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            })
            .await?;
            (send, None)
        }
        "redis" => {
            let client = redis::Client::open(a.redis_url.as_str()).map_err(|e| e.to_string())?;
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let key = unique("bench-raw");
            let stop = Arc::new(AtomicBool::new(false));
            for _ in 0..a.consumers.min(4) {
                let (mut conn, key, probe, stop) =
                    (conn.clone(), key.clone(), probe.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(AO::Relaxed) {
                        let got: Option<Vec<Vec<u8>>> = redis::cmd("RPOP")
                            .arg(&key)
                            .arg(10)
                            .query_async(&mut conn)
                            .await
                            .unwrap_or(None);
                        match got {
                            Some(items) => {
                                for p in items {
                                    probe.record(&p);
                                    cost.pay().await;
                                }
                            }
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                });
            }
            let send = produce(a, move |k| {
                let (mut conn, key) = (conn.clone(), key.clone());
                async move {
                    let vals: Vec<Vec<u8>> = (0..k).map(|_| payload(size)).collect();
                    redis::cmd("LPUSH")
                        .arg(&key)
                        .arg(vals)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            probe.wait_for(a.messages, Duration::from_secs(900)).await?;
            stop.store(true, AO::Relaxed);
            (send, None)
        }
        "sqs" => {
            let q = queue_sqs::SqsQueue::connect(&a.sqs_url)
                .await
                .map_err(|e| e.to_string())?;
            let client = q.client().clone();
            let name = unique("bench-raw");
            let url = client
                .create_queue()
                .queue_name(&name)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .queue_url()
                .unwrap_or_default()
                .to_string();
            let requests = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            for _ in 0..a.consumers.div_ceil(10).max(1) {
                let (client, url, probe, stop, reqs) = (
                    client.clone(),
                    url.clone(),
                    probe.clone(),
                    stop.clone(),
                    requests.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(AO::Relaxed) {
                        reqs.fetch_add(1, AO::Relaxed);
                        let Ok(out) = client
                            .receive_message()
                            .queue_url(&url)
                            .max_number_of_messages(10)
                            .wait_time_seconds(1)
                            .send()
                            .await
                        else {
                            continue;
                        };
                        let mut del = Vec::new();
                        for (i, m) in out.messages().iter().enumerate() {
                            let body = m.body().unwrap_or_default();
                            let sent: u64 = body
                                .split(':')
                                .next()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            probe.record(&sent.to_le_bytes());
                            cost.pay().await;
                            if let Ok(e) =
                                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                                    .id(i.to_string())
                                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                                    .build()
                            {
                                del.push(e);
                            }
                        }
                        if !del.is_empty() {
                            reqs.fetch_add(1, AO::Relaxed);
                            let _ = client
                                .delete_message_batch()
                                .queue_url(&url)
                                .set_entries(Some(del))
                                .send()
                                .await;
                        }
                    }
                });
            }
            let (c2, u2, r2) = (client.clone(), url.clone(), requests.clone());
            let send = produce(a, move |k| {
                let (client, url, reqs) = (c2.clone(), u2.clone(), r2.clone());
                async move {
                    for chunk in (0..k).collect::<Vec<_>>().chunks(10) {
                        let entries = chunk
                            .iter()
                            .map(|i| {
                                let body = format!(
                                    "{}:{}",
                                    now_micros(),
                                    "x".repeat(size.saturating_sub(17))
                                );
                                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                                    .id(i.to_string())
                                    .message_body(body)
                                    .build()
                                    .map_err(|e| e.to_string())
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        reqs.fetch_add(1, AO::Relaxed);
                        client
                            .send_message_batch()
                            .queue_url(&url)
                            .set_entries(Some(entries))
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            })
            .await?;
            probe.wait_for(a.messages, Duration::from_secs(900)).await?;
            stop.store(true, AO::Relaxed);
            (send, Some(requests.load(AO::Relaxed)))
        }
        "kafka" => {
            use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
            use rdkafka::producer::{FutureProducer, FutureRecord};
            use rdkafka::Message as _;
            let bootstrap = a
                .kafka_url
                .trim_start_matches("kafka://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            // Topics come from the driver's create_queue (tansu creates none on first use).
            let topic = unique("bench-raw");
            let admin = queue_kafka::KafkaQueue::connect(&a.kafka_url)
                .await
                .map_err(|e| e.to_string())?;
            admin
                .create_queue(&topic)
                .await
                .map_err(|e| e.to_string())?;
            let producer: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "2")
                .create()
                .map_err(|e| e.to_string())?;
            let consumer: StreamConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", format!("raw-{topic}"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .create()
                .map_err(|e| e.to_string())?;
            consumer.subscribe(&[&topic]).map_err(|e| e.to_string())?;
            let stop = Arc::new(AtomicBool::new(false));
            let (p2, s2) = (probe.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !s2.load(AO::Relaxed) {
                    if let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
                    {
                        p2.record(m.payload().unwrap_or_default());
                        cost.pay().await;
                        n += 1;
                        if n.is_multiple_of(100) {
                            let _ = consumer.commit_message(&m, CommitMode::Async);
                        }
                    }
                }
            });
            let send = produce(a, move |k| {
                let (producer, topic) = (producer.clone(), topic.clone());
                async move {
                    let mut futs = Vec::new();
                    for _ in 0..k {
                        let p = payload(size);
                        let rec = FutureRecord::<(), _>::to(&topic).payload(&p);
                        futs.push(producer.send_result(rec).map_err(|(e, _)| e.to_string())?);
                    }
                    for f in futs {
                        f.await
                            .map_err(|e| e.to_string())?
                            .map_err(|(e, _)| e.to_string())?;
                    }
                    Ok(())
                }
            })
            .await?;
            probe.wait_for(a.messages, Duration::from_secs(900)).await?;
            stop.store(true, AO::Relaxed);
            (send, None)
        }
        other => return Err(format!("unknown backend {other}")),
    };
    probe.wait_for(a.messages, Duration::from_secs(900)).await?;
    let e2e = t0.elapsed();
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

/// A grouped bar chart of end-to-end throughput, framework beside raw, as plain SVG.
fn chart(rows: &[Row]) -> String {
    let (w, h, left, bottom) = (160 * rows.len().max(1) + 80, 360, 60.0, 300.0);
    let max = rows
        .iter()
        .flat_map(|r| [r.framework.e2e_per_sec, r.raw.e2e_per_sec])
        .fold(1.0, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">end-to-end throughput (msg/s): framework (blue) vs raw client (grey)</text>\n\
         <line x1=\"{left}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"black\"/>\n",
        w - 10
    );
    for (i, r) in rows.iter().enumerate() {
        let x = left + 20.0 + 160.0 * i as f64;
        for (j, (v, color)) in [
            (r.framework.e2e_per_sec, "#3b6fb6"),
            (r.raw.e2e_per_sec, "#999999"),
        ]
        .iter()
        .enumerate()
        {
            let bh = (v / max) * 250.0;
            let bx = x + 55.0 * j as f64;
            s += &format!(
                "<rect x=\"{bx:.0}\" y=\"{:.0}\" width=\"50\" height=\"{bh:.0}\" fill=\"{color}\"/>\
                 <text x=\"{bx:.0}\" y=\"{:.0}\">{v:.0}</text>\n",
                bottom - bh,
                bottom - bh - 4.0
            );
        }
        s += &format!(
            "<text x=\"{x:.0}\" y=\"{:.0}\">{} (ratio {:.2})</text>\n",
            bottom + 18.0,
            r.backend,
            r.e2e_ratio
        );
    }
    s + "</svg>\n"
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
        if let Err(e) = std::fs::write(path, chart(&rows)) {
            eprintln!("writing {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
