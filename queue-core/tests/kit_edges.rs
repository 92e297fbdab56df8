//! The kit's own arithmetic at the edges a correct driver may declare: a driver that
//! declares `Duration::MAX` for its delays, retry delays and leases (and caps them
//! internally, as docs/writing-a-driver.md advises) passes the cases that exercise those
//! limits, instead of the kit overflowing on `max + 1`.

use std::sync::Arc;
use std::time::Duration;

use queue_core::driver::{async_trait, Capabilities, Driver, ReceiveOptions};
use queue_core::testkit::{run_case, unique, Harness};
use queue_core::{
    Delivery, MemoryConfig, MemoryQueue, Message, MessageId, QueueStats, Receipt, Result,
};

/// The in-memory driver, declaring no upper bound on any duration.
struct Unbounded(MemoryQueue);

#[async_trait]
impl Driver for Unbounded {
    fn kind(&self) -> &'static str {
        "unbounded"
    }
    fn capabilities(&self) -> Capabilities {
        self.0
            .capabilities()
            .with_max_delay(Some(Duration::MAX))
            .with_max_nack_delay(Some(Duration::MAX))
            .with_max_lease(Duration::MAX)
    }
    async fn create_queue(&self, queue: &str) -> Result<()> {
        self.0.create_queue(queue).await
    }
    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.0.delete_queue(queue).await
    }
    async fn purge(&self, queue: &str) -> Result<()> {
        self.0.purge(queue).await
    }
    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        self.0.send(queue, batch).await
    }
    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        self.0.receive(queue, opts).await
    }
    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        self.0.ack(queue, receipts).await
    }
    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.0.nack(queue, receipt, delay).await
    }
    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<()> {
        self.0.extend(queue, receipt, lease).await
    }
    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.0.stats(queue).await
    }
}

fn harness() -> Harness {
    let broker = unique("unbounded");
    Harness::new(move || {
        let broker = broker.clone();
        async move {
            let q = MemoryQueue::named(&broker, MemoryConfig::default());
            Ok(Arc::new(Unbounded(q)) as Arc<dyn Driver>)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_declared_unbounded() {
    let h = harness();
    for case in [
        "limits_at_edge",
        "ordering_refused",
        "delayed_send_not_early",
    ] {
        run_case(&h, case).await;
    }
}
