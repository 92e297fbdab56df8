//! The producer handle: validates, chunks and sends.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{QueueError, Result};
use crate::job::{encode, Job};
use crate::message::{headers, Message, MessageId};
use crate::queue::{validate, Queue};

/// Per-send options for typed jobs (BullMQ's job options, mapped onto [`Message`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SendOptions {
    /// Do not deliver before this much time has passed.
    pub delay: Option<Duration>,
    /// Per-key ordering (backends with [`crate::Ordering::PerKey`] or `PerPartition`).
    pub ordering_key: Option<String>,
    /// Backend-side deduplication id.
    pub dedup_id: Option<String>,
    /// Priority (backends that declare it).
    pub priority: Option<u8>,
    /// Consumer-side idempotency key (see [`crate::Worker::idempotency`]).
    pub idempotency_key: Option<String>,
    /// Overrides the retry policy's maximum attempts for this job.
    pub max_attempts: Option<u32>,
    /// Extra headers.
    pub headers: crate::Headers,
}

/// Sends messages to one queue. Cheap to clone; share it across tasks.
///
/// Every message is checked against the backend's [`crate::Capabilities`] before anything
/// is sent: an oversized message or an option the backend cannot honour is a typed error,
/// and in a batch nothing is sent if any message fails the check.
#[derive(Clone)]
pub struct Producer {
    queue: Arc<dyn Queue>,
    name: String,
}

impl Producer {
    /// A producer for queue `name` on `queue`.
    pub fn new(queue: Arc<dyn Queue>, name: impl Into<String>) -> Self {
        Producer {
            queue,
            name: name.into(),
        }
    }

    /// The queue name.
    pub fn queue_name(&self) -> &str {
        &self.name
    }

    /// Enqueues a typed job.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<MessageId> {
        self.enqueue_with(job, SendOptions::default()).await
    }

    /// Enqueues a typed job with options.
    pub async fn enqueue_with<J: Job>(&self, job: &J, opts: SendOptions) -> Result<MessageId> {
        let m = job_message(job, opts)?;
        Ok(self.send_batch(vec![m]).await?.remove(0))
    }

    /// Sends one raw message.
    pub async fn send(&self, message: Message) -> Result<MessageId> {
        Ok(self.send_batch(vec![message]).await?.remove(0))
    }

    /// Sends many messages, in chunks of the backend's maximum batch. All are validated
    /// first. If a chunk fails, the error is returned and the chunks before it were sent
    /// (their ids are lost to the caller; resend with the same dedup ids where it matters).
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<MessageId>> {
        let caps = self.queue.capabilities();
        let backend = self.queue.backend();
        for m in &messages {
            validate(&caps, backend, m)?;
        }
        let mut ids = Vec::with_capacity(messages.len());
        let mut rest = messages;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(caps.max_batch.max(1)));
            ids.extend(self.queue.send(&self.name, rest).await?);
            rest = tail;
        }
        Ok(ids)
    }
}

/// Builds the raw message for a typed job.
pub fn job_message<J: Job>(job: &J, opts: SendOptions) -> Result<Message> {
    let payload = encode(job)
        .map_err(|e| QueueError::InvalidOption(format!("job does not serialize: {e}")))?;
    let mut m = Message::new(payload);
    m.headers = opts.headers;
    if let Some(k) = opts.idempotency_key {
        m.headers.insert(headers::IDEMPOTENCY_KEY.into(), k);
    }
    if let Some(n) = opts.max_attempts {
        if n == 0 {
            return Err(QueueError::InvalidOption(
                "max_attempts must be at least 1".into(),
            ));
        }
        m.headers
            .insert(headers::MAX_ATTEMPTS.into(), n.to_string());
    }
    m.delay = opts.delay;
    m.ordering_key = opts.ordering_key;
    m.dedup_id = opts.dedup_id;
    m.priority = opts.priority;
    Ok(m)
}
