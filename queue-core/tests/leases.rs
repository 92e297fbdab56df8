//! How a worker keeps its running jobs' leases alive, on the in-memory driver under
//! tokio's paused clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::testkit::eventually;
use queue_core::{
    Backend, Delivery, Driver, Job, MemoryQueue, Message, QueueStats, Receipt, ReceiveOptions,
};
use tokio::time::Instant;

#[derive(serde::Serialize, serde::Deserialize)]
struct Sleep(u64);
impl Job for Sleep {
    const NAME: &'static str = "sleep";
}

/// The in-memory driver, recording when each lease extension was asked for.
struct Recording {
    inner: MemoryQueue,
    extends: Mutex<Vec<(Instant, Receipt)>>,
}

#[queue_core::driver::async_trait]
impl Driver for Recording {
    fn kind(&self) -> &'static str {
        "recording"
    }
    fn capabilities(&self) -> queue_core::Capabilities {
        self.inner.capabilities()
    }
    async fn create_queue(&self, q: &str) -> queue_core::Result<()> {
        self.inner.create_queue(q).await
    }
    async fn delete_queue(&self, q: &str) -> queue_core::Result<()> {
        self.inner.delete_queue(q).await
    }
    async fn purge(&self, q: &str) -> queue_core::Result<()> {
        self.inner.purge(q).await
    }
    async fn send(
        &self,
        q: &str,
        b: Vec<Message>,
    ) -> queue_core::Result<Vec<queue_core::MessageId>> {
        self.inner.send(q, b).await
    }
    async fn receive(&self, q: &str, o: ReceiveOptions) -> queue_core::Result<Vec<Delivery>> {
        self.inner.receive(q, o).await
    }
    async fn ack(&self, q: &str, r: &[Receipt]) -> queue_core::Result<()> {
        self.inner.ack(q, r).await
    }
    async fn nack(&self, q: &str, r: &Receipt, d: Duration) -> queue_core::Result<()> {
        self.inner.nack(q, r, d).await
    }
    async fn extend(&self, q: &str, r: &Receipt, d: Duration) -> queue_core::Result<()> {
        self.extends
            .lock()
            .unwrap()
            .push((Instant::now(), r.clone()));
        self.inner.extend(q, r, d).await
    }
    async fn stats(&self, q: &str) -> queue_core::Result<QueueStats> {
        self.inner.stats(q).await
    }
}

/// Jobs started one after another, a second apart, all running for two minutes with a
/// 30-second lease: every lease is extended before it lapses (each job runs once), and the
/// extensions come from one timer per worker, so they all happen at a few shared instants,
/// not at one instant per job (as a heartbeat per job would). A job that ends stops its
/// extensions, and none fails.
#[tokio::test(start_paused = true)]
async fn one_extender_keeps_every_running_lease() {
    let driver = Arc::new(Recording {
        inner: MemoryQueue::new(),
        extends: Mutex::default(),
    });
    let backend = Backend::from_driver(driver.clone());
    let queue = backend.queue("q");
    queue.create().await.unwrap();
    let producer = queue.producer();
    let runs = Arc::new(AtomicU32::new(0));
    let r2 = runs.clone();
    const JOBS: u32 = 12;
    let worker = queue
        .worker()
        .concurrency(JOBS as usize)
        .lease(Duration::from_secs(30))
        .poll_wait(Duration::from_millis(100))
        .handle(move |job: Sleep, _ctx| {
            r2.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_secs(job.0)).await;
                Ok(())
            }
        })
        .start()
        .unwrap();
    let t0 = Instant::now();
    for _ in 0..JOBS {
        producer.enqueue(&Sleep(120)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eventually(Duration::from_secs(600), "every job succeeded", || {
        worker.report().succeeded == u64::from(JOBS)
    })
    .await;
    let ended = Instant::now();
    // Long after: no extension of a finished job's lease.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let report = worker.shutdown().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        JOBS,
        "a job ran twice: its lease lapsed"
    );
    assert_eq!(report.backend_errors, 0, "{report:?}");
    let extends = driver.extends.lock().unwrap().clone();
    // Each job held its lease for 120 s: extended every 10 s, about 11 times.
    let mut per_receipt = std::collections::HashMap::new();
    for (_, r) in &extends {
        *per_receipt.entry(r.clone()).or_insert(0u32) += 1;
    }
    let counts: Vec<u32> = per_receipt.values().copied().collect();
    assert_eq!(counts.len(), JOBS as usize, "{counts:?}");
    assert!(
        counts.iter().all(|n| (10..=13).contains(n)),
        "extensions per job: {counts:?}"
    );
    assert!(extends.iter().all(|(at, _)| *at <= ended));
    // Twelve jobs started a second apart, but their extensions share their instants.
    let mut instants: Vec<Duration> = extends.iter().map(|(at, _)| *at - t0).collect();
    instants.dedup();
    assert!(
        instants.len() <= 16,
        "{} distinct extension instants for {JOBS} jobs: a timer per job? {instants:?}",
        instants.len()
    );
}
