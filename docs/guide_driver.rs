//! The driver that `docs/writing-a-driver.md` walks through, complete and compiled: every
//! code block of the guide is an excerpt of this file (a test checks it), and
//! `queue-core/tests/guide_driver.rs` runs the whole conformance kit against it.
//!
//! Its "client" is the in-memory driver, standing in for your backend's client library,
//! so the file shows where each primitive maps without needing a server. Replace each
//! `self.client` call with your client's.

use std::sync::Arc;
use std::time::Duration;

use queue_core::driver::{
    async_trait, receipt, receipt_str, Capabilities, ConnectFuture, Driver, LeaseModel, Ordering,
    ReceiveOptions, Url,
};
use queue_core::options::UrlOptions;
use queue_core::{
    Delivery, MemoryConfig, MemoryQueue, Message, MessageId, QueueError, QueueStats, Receipt,
    Result,
};

const BACKEND: &str = "mybackend";

/// The driver.
pub struct MyDriver {
    client: MemoryQueue,
    max_message_size: usize,
    dedup_window: Duration,
}

impl MyDriver {
    /// Opens `mybackend://NAME[?max_message_size=SIZE]`.
    pub async fn open(url: Url) -> Result<MyDriver> {
        let mut o = UrlOptions::new(&url);
        let max_message_size = o
            .size_within("max_message_size", 1, 16 << 20)? // 65536, 256KiB, 1MiB
            .unwrap_or(1 << 20);
        let dedup_window = o
            .duration_within(
                "dedup_window",
                Duration::from_millis(1),
                Duration::from_secs(3600),
            )?
            .unwrap_or(Duration::from_secs(300));
        o.finish()?; // an option nobody asked for is an error
        let broker = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| o_error(&url, "missing the broker name"))?;
        // Connect with your client here; fail now, typed, if the server does not answer.
        let mut config = MemoryConfig::default();
        config.dedup_window = dedup_window;
        let client = MemoryQueue::named(broker, config);
        Ok(MyDriver {
            client,
            max_message_size,
            dedup_window,
        })
    }
}

fn o_error(url: &Url, reason: &str) -> QueueError {
    QueueError::invalid_url(url.as_str(), reason)
}

/// Registers `mybackend://` with `queue_core::connect`.
pub fn register() {
    fn connector(url: Url) -> ConnectFuture {
        Box::pin(async move { Ok(Arc::new(MyDriver::open(url).await?) as Arc<dyn Driver>) })
    }
    queue_core::register("mybackend", connector);
}

/// This driver's receipts wrap the client's: `my:` and the client's own text. Anything
/// else was not issued here.
fn my_receipt(inner: &Receipt) -> Receipt {
    receipt(format!("my:{}", receipt_str(inner)))
}

fn client_receipt(r: &Receipt) -> Result<Receipt> {
    receipt_str(r)
        .strip_prefix("my:")
        .map(receipt)
        .ok_or_else(|| QueueError::invalid_receipt(BACKEND, "not a mybackend receipt"))
}

fn rewrap(mut d: Delivery) -> Delivery {
    d.receipt = my_receipt(&d.receipt);
    d
}

#[async_trait]
impl Driver for MyDriver {
    fn kind(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::baseline()
            .with_max_message_size(self.max_message_size)
            .with_max_batch(100)
            .with_max_delay(Some(Duration::from_secs(3600)))
            .with_max_nack_delay(Some(Duration::from_secs(3600)))
            .with_ordering(Ordering::PerKey)
            .with_priority(true)
            .with_dedup_window(Some(self.dedup_window))
            .with_lease(LeaseModel::per_message(true))
            .with_exact_stats(true)
            .with_timer_granularity(Duration::from_millis(1))
            .with_stale_receipts_refused(true)
            .with_purge(true)
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        self.client.create_queue(queue).await // the queue and its DLQ, idempotently
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.client.delete_queue(queue).await // a missing queue is Ok
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        self.client.purge(queue).await // UnknownQueue if missing
    }

    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        // One round trip. Store m.id, m.payload, m.headers, m.delay, m.ordering_key,
        // m.dedup_id and m.priority; return the ids in order.
        self.client.send(queue, batch).await
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        // Long-poll on the backend (a blocking call, a notification), never a loop of
        // short sleeps; stop waiting when opts.cancel fires; return at most opts.max.
        let got = self.client.receive(queue, opts).await?;
        Ok(got.into_iter().map(rewrap).collect())
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        let inner = receipts
            .iter()
            .map(client_receipt)
            .collect::<Result<Vec<_>>>()?;
        // The client reports stale receipts by index (QueueError::stale_receipts).
        self.client.ack(queue, &inner).await
    }

    async fn nack(&self, queue: &str, r: &Receipt, delay: Duration) -> Result<()> {
        self.client.nack(queue, &client_receipt(r)?, delay).await
    }

    async fn extend(&self, queue: &str, r: &Receipt, lease: Duration) -> Result<()> {
        self.client.extend(queue, &client_receipt(r)?, lease).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let s = self.client.stats(queue).await?;
        Ok(QueueStats::new(s.ready, s.in_flight, s.delayed, s.dead))
    }
}
