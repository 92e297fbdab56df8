//! The driver: the SDK client, its settings from the URL, and the [`Driver`]
//! implementation (the mapping is in the crate docs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AO};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use queue_core::driver::{
    receipt, receipt_str, Capabilities, Driver, LeaseModel, Ordering, Peek, ReceiveOptions,
};
use queue_core::options::UrlOptions;
use queue_core::{
    unix_millis, Delivery, Message, MessageId, Peeked, QueueError, QueueStats, Receipt, Result,
};

mod peek;
mod queues;
mod receive;
mod requests;

use crate::codec::{self, *};
use crate::BACKEND;
use queues::*;
pub use requests::RequestCounts;

/// SQS's longest per-message delay.
pub(crate) const MAX_SQS_DELAY: Duration = Duration::from_secs(900);
const MAX_VISIBILITY: u64 = 43_200;
const ATTR_RESERVE: usize = 1024;

/// Registers the `sqs://` scheme with [`queue_core::connect`].
pub fn register() {
    queue_core::register("sqs", |url| {
        Box::pin(
            async move { Ok(Arc::new(SqsQueue::connect(url.as_str()).await?) as Arc<dyn Driver>) },
        )
    });
}

/// Driver settings, read from the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqsConfig {
    /// AWS region (default: the provider chain's, else `us-east-1`).
    pub region: Option<String>,
    /// Endpoint override for SQS-compatible servers (`?endpoint=`).
    pub endpoint: Option<String>,
    /// Every queue is FIFO (`?fifo=true`).
    pub fifo: bool,
    /// `maxReceiveCount` of the redrive policy `create_queue` sets (`?max_receive_count=`).
    pub max_receive_count: u32,
    /// The queue's message size limit (`?max_message_size=`, 2 KiB to 1 MiB; default 1 MiB,
    /// SQS's maximum). The driver declares 1 KiB less (its own attributes take up to that)
    /// and checks each queue's own `MaximumMessageSize` on send as well.
    pub max_message_size: usize,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            region: None,
            endpoint: None,
            fifo: false,
            max_receive_count: 25,
            max_message_size: 1024 * 1024,
        }
    }
}

/// The SQS driver (see the crate docs for its mapping).
pub struct SqsQueue {
    client: Client,
    config: SqsConfig,
    queues: Arc<RwLock<HashMap<String, QueueInfo>>>,
    requests: Arc<RequestCounts>,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials live in the client and stay out of logs.
        f.debug_struct("SqsQueue")
            .field("config", &self.config)
            .field("requests", &self.requests.total())
            .finish_non_exhaustive()
    }
}

impl SqsQueue {
    /// Connects with `sqs://[KEY:SECRET@][REGION][?endpoint=URL&fifo=true&max_receive_count=N&max_message_size=N]`.
    /// Without `KEY:SECRET`, credentials come from the standard AWS provider chain.
    pub async fn connect(url: &str) -> Result<Self> {
        let parsed =
            url::Url::parse(url).map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
        if parsed.scheme() != "sqs" {
            return Err(QueueError::invalid_url(url, "scheme must be sqs"));
        }
        let mut config = SqsConfig {
            region: parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .map(str::to_string),
            ..SqsConfig::default()
        };
        let mut o = UrlOptions::new(&parsed);
        if let Some(v) = o.string("endpoint")? {
            let e = url::Url::parse(&v).map_err(|e| o.error(format!("endpoint={v:?}: {e}")))?;
            if !matches!(e.scheme(), "http" | "https") {
                return Err(o.error(format!("endpoint={v:?}: must be an http(s) URL")));
            }
            config.endpoint = Some(v.trim_end_matches('/').to_string());
        }
        config.fifo = o.bool("fifo")?.unwrap_or(false);
        if let Some(n) = o.integer("max_receive_count", 1, 1000)? {
            config.max_receive_count = n as u32;
        }
        // The driver keeps 1 KiB of each message for its own attributes, so the smallest
        // size that leaves room for a payload is 2 KiB.
        if let Some(n) = o.size_within("max_message_size", 2048, 1024 * 1024)? {
            config.max_message_size = n;
        }
        o.finish()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(r) = &config.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        if !parsed.username().is_empty() {
            let secret = parsed.password().unwrap_or_default();
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                decode(parsed.username()),
                decode(secret),
                None,
                None,
                "queue-sqs-url",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_sqs::config::Builder::from(&shared);
        if shared.region().is_none() {
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        Ok(SqsQueue {
            client: Client::from_conf(builder.build()),
            config,
            queues: Arc::new(RwLock::new(HashMap::new())),
            requests: Arc::default(),
        })
    }

    /// The request counts of this instance.
    pub fn requests(&self) -> Arc<RequestCounts> {
        self.requests.clone()
    }

    /// The underlying SDK client, for what this driver does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates `queue` and its DLQ with a redrive policy moving a message to the DLQ after
    /// `max_receive_count` receives (SQS's own poison-message guard, beside the worker's
    /// dead-lettering). Idempotent.
    pub async fn create_queue_with(&self, queue: &str, max_receive_count: u32) -> Result<()> {
        let dlq = self.physical(&self.dead_letter_queue(queue))?;
        let dlq_url = self.create_one(&dlq, None).await?;
        self.requests.count("other");
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(map_sdk)?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| QueueError::backend(BACKEND, "CreateQueue returned no QueueArn"))?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": max_receive_count.to_string(),
        });
        self.create_one(&self.physical(queue)?, Some(policy.to_string()))
            .await?;
        Ok(())
    }

    /// Sends entries (at most 10, within the request size), retrying server-side failures.
    async fn send_entries(
        &self,
        url: &str,
        mut entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<()> {
        for attempt in 1..=3 {
            self.requests.count("send");
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(map_sdk)?;
            if out.failed().is_empty() {
                return Ok(());
            }
            let retry: Vec<&str> = out
                .failed()
                .iter()
                .filter(|f| !f.sender_fault())
                .map(|f| f.id())
                .collect();
            if retry.len() < out.failed().len() || attempt == 3 {
                return Err(QueueError::PartialBatch {
                    failed: out
                        .failed()
                        .iter()
                        .map(|f| {
                            (
                                f.id().parse().unwrap_or(0),
                                format!("{}: {}", f.code(), f.message().unwrap_or_default()),
                            )
                        })
                        .collect(),
                });
            }
            entries.retain(|e| retry.contains(&e.id()));
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        Ok(())
    }

    async fn delete(&self, url: &str, receipts: &[Receipt]) -> Result<()> {
        let mut failed = Vec::new();
        for (c, chunk) in receipts.chunks(10).enumerate() {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt_str(r))
                        .build()
                        .map_err(|e| QueueError::backend(BACKEND, e))
                })
                .collect::<Result<Vec<_>>>()?;
            self.requests.count("delete");
            let out = self
                .client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(map_sdk)?;
            for f in out.failed() {
                let i = c * 10 + f.id().parse::<usize>().unwrap_or(0);
                failed.push((
                    i,
                    format!("{}: {}", f.code(), f.message().unwrap_or_default()),
                ));
            }
        }
        match (failed.len(), receipts.len()) {
            (0, _) => Ok(()),
            (_, 1) => Err(QueueError::ReceiptExpired),
            _ => Err(QueueError::PartialBatch { failed }),
        }
    }

    async fn change_visibility(&self, queue: &str, receipt: &Receipt, d: Duration) -> Result<()> {
        let info = self.info(queue).await?;
        let secs = visibility(d)?;
        self.requests.count("change_visibility");
        self.client
            .change_message_visibility()
            .queue_url(&info.url)
            .receipt_handle(receipt_str(receipt))
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(map_sdk)?;
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<(u64, u64, u64)> {
        let info = self.info(queue).await?;
        self.requests.count("other");
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&info.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(map_sdk)?;
        let get = |k: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

/// A visibility timeout in whole seconds, or an error past SQS's 12 hours.
fn visibility(d: Duration) -> Result<i32> {
    let secs = secs_ceil(d);
    if secs > MAX_VISIBILITY {
        return Err(QueueError::InvalidOption(format!(
            "SQS leases and nack delays are at most 12h, got {d:?}"
        )));
    }
    Ok(secs as i32)
}

/// `d` in whole seconds, rounded up (SQS counts delays and timeouts in seconds).
pub(crate) fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Maps an SDK error onto the core's typed errors.
fn map_sdk<E, R>(e: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().unwrap_or_default().to_string();
    match &e {
        SdkError::DispatchFailure(_) => QueueError::connection(BACKEND, e),
        SdkError::TimeoutError(_) => QueueError::Timeout(Duration::from_secs(30)),
        _ if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") => {
            QueueError::UnknownQueue(String::new())
        }
        _ if [
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "UnrecognizedClientException",
            "InvalidSecurity",
            "MissingAuthenticationToken",
        ]
        .iter()
        .any(|c| code.contains(c)) =>
        {
            QueueError::Auth {
                backend: BACKEND,
                source: Box::new(e),
            }
        }
        _ if code.contains("ReceiptHandleIsInvalid") || code.contains("MessageNotInflight") => {
            QueueError::ReceiptExpired
        }
        _ => QueueError::backend(BACKEND, e),
    }
}

#[async_trait]
impl Driver for SqsQueue {
    fn kind(&self) -> &'static str {
        BACKEND
    }

    fn requests_made(&self) -> Option<u64> {
        Some(self.requests.total())
    }

    fn capabilities(&self) -> Capabilities {
        let fifo = self.config.fifo;
        Capabilities::baseline()
            // What SQS counts beyond payload and headers (the id, encoding and due-time
            // attributes, the headers' JSON quoting) stays within this reserve.
            .with_max_message_size(self.config.max_message_size - ATTR_RESERVE)
            .with_purge(true)
            .with_max_batch(10)
            .with_max_delay((!fifo).then_some(Duration::from_secs(365 * 24 * 3600)))
            // SQS counts 12 hours from the receive, not from the nack: 11 hours leaves
            // an hour for the handler that ran before it.
            .with_max_nack_delay(Some(Duration::from_secs(MAX_VISIBILITY - 3600)))
            .with_native_dlq(true)
            .with_peek(Peek::DeadLetterQueues)
            .with_ordering(if fifo {
                Ordering::PerKey
            } else {
                Ordering::None
            })
            .with_dedup_window(fifo.then_some(Duration::from_secs(300)))
            .with_lease(LeaseModel::per_message(true))
            .with_max_lease(Duration::from_secs(MAX_VISIBILITY))
            .with_timer_granularity(Duration::from_secs(1))
            .with_give_back_keeps_attempt(!fifo)
            .with_max_receives(Some(self.config.max_receive_count))
            // MessageGroupId and MessageDeduplicationId: 128 printable ASCII characters
            // (emulated dedup ids on standard queues keep the same rule, for portability).
            .with_max_key_len(Some(128))
            .with_key_chars(queue_core::driver::KeyChars::PrintableAscii)
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        self.create_queue_with(queue, self.config.max_receive_count)
            .await
    }

    fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{}-dlq", queue.strip_suffix(".fifo").unwrap_or(queue))
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        for q in [queue.to_string(), self.dead_letter_queue(queue)] {
            let info = match self.info(&q).await {
                Ok(i) => i,
                Err(QueueError::UnknownQueue(_)) => continue,
                Err(e) => return Err(e),
            };
            self.requests.count("other");
            match self.client.delete_queue().queue_url(&info.url).send().await {
                Ok(_) => {}
                Err(e) => match map_sdk(e) {
                    QueueError::UnknownQueue(_) => {}
                    other => return Err(other),
                },
            }
            self.queues
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&q);
        }
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        let info = self.info(queue).await?;
        self.requests.count("other");
        self.client
            .purge_queue()
            .queue_url(&info.url)
            .send()
            .await
            .map_err(|e| match map_sdk(e) {
                QueueError::UnknownQueue(_) => QueueError::UnknownQueue(queue.to_string()),
                other => other,
            })?;
        Ok(())
    }

    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        let info = self.info(queue).await?;
        let ids: Vec<MessageId> = batch.iter().map(|m| m.id.clone()).collect();
        // Build every entry first: an oversized one fails the call before any request.
        let mut entries = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            let (e, size) = entry(i, m, self.config.fifo)?;
            if size > info.max_size {
                return Err(QueueError::Oversize {
                    size,
                    max: info.max_size,
                    backend: BACKEND,
                });
            }
            entries.push((e, size));
        }
        let mut chunk = Vec::new();
        let mut chunk_size = 0;
        for (e, size) in entries {
            if chunk.len() == 10 || chunk_size + size > info.max_size {
                self.send_entries(&info.url, std::mem::take(&mut chunk))
                    .await?;
                chunk_size = 0;
            }
            chunk.push(e);
            chunk_size += size;
        }
        if !chunk.is_empty() {
            self.send_entries(&info.url, chunk).await?;
        }
        Ok(ids)
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        let info = self.info(queue).await?;
        let lease = visibility(opts.lease)?;
        if !(1..=10).contains(&opts.max) {
            return Err(QueueError::InvalidOption(format!(
                "SQS receives 1 to 10 messages a call, asked for {}",
                opts.max
            )));
        }
        let max = opts.max as i32;
        let deadline = tokio::time::Instant::now()
            .checked_add(opts.wait)
            .ok_or_else(|| QueueError::InvalidOption(format!("wait {:?} too long", opts.wait)))?;
        loop {
            if opts.cancel.is_cancelled() {
                return Ok(Vec::new());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.requests.count("receive");
            let call = self
                .client
                .receive_message()
                .queue_url(&info.url)
                .max_number_of_messages(max)
                .wait_time_seconds(secs_ceil(left).min(20) as i32)
                .visibility_timeout(lease)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send();
            // The long poll runs as a task of its own, so that a cancelled receive can
            // stop waiting without dropping the request: SQS may already have leased
            // messages to it, and a dropped connection would hide them for the whole
            // visibility timeout. Those arrive after the receive returned and are given
            // back at once.
            let mut poll = tokio::spawn(call);
            let out = tokio::select! {
                r = &mut poll => r,
                _ = opts.cancel.cancelled() => {
                    tokio::spawn(self.detached().give_back_late(queue.to_string(), poll));
                    return Ok(Vec::new());
                }
            };
            let out = out
                .map_err(|e| QueueError::backend("sqs", e))?
                .map_err(map_sdk)?;
            let mut got = Vec::new();
            for m in out.messages.unwrap_or_default() {
                if !self.config.fifo && self.redelay_if_early(&info, &m).await? {
                    continue;
                }
                got.push(codec::decode(queue, m.into()));
            }
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
        }
    }

    /// Dead-letter queues only: a look is a `ReceiveMessage` with a visibility timeout of
    /// 0, which leaves each message visible but counts a receive. On a main queue that
    /// count drives the redrive policy and the attempt count, so a main queue is refused
    /// ([`QueueError::Unsupported`]); a dead-letter queue has no policy, and a redrive sends
    /// fresh copies. Standard queues return a sample per call: up to 50 short polls are
    /// made, until one brings nothing new.
    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>> {
        self.peek_dead_letters(queue, max).await
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        let info = self.info(queue).await?;
        self.delete(&info.url, receipts).await
    }

    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.change_visibility(queue, receipt, delay).await
    }

    /// Standard queues: a fresh copy carrying the attempts made so far
    /// ([`headers::ATTEMPTS_BEFORE`](queue_core::headers::ATTEMPTS_BEFORE)) is sent, then
    /// the received one deleted, so neither the attempt count nor the redrive policy's
    /// receive count grows for a delivery whose handler never ran. (A crash in between
    /// leaves both: a duplicate, never a loss.) FIFO queues change the visibility instead:
    /// a copy would lose its place in its group, so there a give-back counts a receive.
    async fn give_back(&self, d: &Delivery, delay: Duration) -> Result<()> {
        if self.config.fifo {
            return self.change_visibility(&d.queue, &d.receipt, delay).await;
        }
        let mut headers = d.headers.clone();
        headers.insert(
            queue_core::headers::ATTEMPTS_BEFORE.into(),
            d.attempt.saturating_sub(1).to_string(),
        );
        headers.insert(
            queue_core::headers::FIRST_ENQUEUED_AT.into(),
            queue_core::unix_millis(d.first_enqueued_at).to_string(),
        );
        let mut copy = Message::new(d.payload.clone()).id(d.id.clone());
        copy.headers = headers;
        copy.delay = (!delay.is_zero()).then_some(delay);
        self.send(&d.queue, vec![copy]).await?;
        self.ack(&d.queue, std::slice::from_ref(&d.receipt)).await
    }

    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<()> {
        self.change_visibility(queue, receipt, lease).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let (ready, in_flight, delayed) = self.depth(queue).await?;
        let (a, b, c) = self.depth(&self.dead_letter_queue(queue)).await?;
        Ok(QueueStats::new(ready, in_flight, delayed, a + b + c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `sqs_message` fuzz target: a receive count of 0 made attempt 0.
    #[test]
    fn a_receive_count_of_zero_still_means_attempt_one() {
        let m = aws_sdk_sqs::types::Message::builder()
            .body("x")
            .set_attributes(Some(HashMap::from([(
                MessageSystemAttributeName::ApproximateReceiveCount,
                "0".to_string(),
            )])))
            .build();
        let d = codec::decode("q", m.into());
        assert_eq!(d.attempt, 1);
    }

    #[test]
    fn body_characters() {
        assert!("héllo\tworld\n✓".chars().all(sqs_text_char));
        assert!(!"\u{0}".chars().all(sqs_text_char));
        assert!(!"\u{FFFE}".chars().all(sqs_text_char));
    }

    #[test]
    fn fifo_copies_are_not_duplicates_of_their_original() {
        let m = Message::new("x");
        let original = fifo_dedup_id(&m);
        assert_eq!(original, m.id.as_str());
        let dead = m
            .clone()
            .header(queue_core::headers::DLQ_AT, "1700000000000");
        let back = m
            .clone()
            .header(queue_core::headers::REDRIVEN_AT, "1700000000500");
        assert_ne!(fifo_dedup_id(&dead), original);
        assert_ne!(fifo_dedup_id(&back), original);
        assert_ne!(fifo_dedup_id(&back), fifo_dedup_id(&dead));
        let long = Message::new("x")
            .id("é".repeat(100))
            .header(queue_core::headers::DLQ_AT, "1");
        assert!(fifo_dedup_id(&long).len() <= 128);
        assert_eq!(
            fifo_dedup_id(&Message::new("x").dedup_id("order-1")),
            "order-1"
        );
    }

    #[test]
    fn rounding() {
        assert_eq!(secs_ceil(Duration::from_millis(1)), 1);
        assert_eq!(secs_ceil(Duration::from_secs(2)), 2);
        assert_eq!(secs_ceil(Duration::ZERO), 0);
    }

    #[tokio::test]
    async fn bad_urls_are_typed() {
        for url in [
            "sqs://r?endpoint=ftp://x",
            "sqs://r?fifo=true&nope=1",
            "sqs://r?max_receive_count=x",
            "sqs://r?max_receive_count=0",
            "sqs://r?max_receive_count=1001",
            "sqs://r?max_message_size=2MiB",
            "sqs://r?max_message_size=512",
        ] {
            let e = SqsQueue::connect(url).await.expect_err(url);
            assert!(matches!(e, QueueError::InvalidUrl { .. }), "{url}: {e}");
        }
    }
}
