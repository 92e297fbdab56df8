//! The producer: validates, chunks and sends.

use std::fmt;
use std::time::Duration;

use crate::error::{QueueError, Result};
use crate::fair::Fairness;
use crate::handle::Queue;
use crate::job::{encode, Job};
use crate::message::{headers, Message, MessageId};
use crate::unique::{Enqueued, Unique};

/// Per-send options for typed jobs (BullMQ's job options, mapped onto [`Message`]).
///
/// ```
/// use std::time::Duration;
/// let opts = queue_core::SendOptions::new()
///     .delay(Duration::from_secs(60))
///     .max_attempts(3)
///     .idempotency_key("order-42");
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SendOptions {
    /// Do not deliver before this much time has passed.
    pub delay: Option<Duration>,
    /// Per-key ordering (backends with [`crate::Ordering::PerKey`] or `PerPartition`).
    pub ordering_key: Option<String>,
    /// Backend-side deduplication id; it also becomes the job's id (see
    /// [`Message::dedup_id`]).
    pub dedup_id: Option<String>,
    /// Priority (backends that declare it).
    pub priority: Option<u8>,
    /// Consumer-side idempotency key (see [`crate::Worker::idempotency`]).
    pub idempotency_key: Option<String>,
    /// Overrides the retry policy's maximum attempts for this job (at least 1).
    pub max_attempts: Option<u32>,
    /// Extra headers.
    pub headers: crate::Headers,
}

impl SendOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`SendOptions::delay`].
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
    /// Sets [`SendOptions::ordering_key`].
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
    /// Sets [`SendOptions::dedup_id`].
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }
    /// Sets [`SendOptions::priority`].
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Sets [`SendOptions::idempotency_key`].
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    /// Sets [`SendOptions::max_attempts`].
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// Sends messages to one queue. Cheap to clone; share it across tasks. Get one from
/// [`Queue::producer`].
///
/// Every message is checked against the backend's [`crate::Capabilities`] before anything
/// is sent: an oversized message or an option the backend cannot honour is a typed error,
/// and in a batch nothing is sent if any message fails the check.
#[derive(Clone)]
pub struct Producer {
    queue: Queue,
    fair: Option<Fairness>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.queue)
            .field("fair", &self.fair)
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(queue: Queue) -> Self {
        Producer { queue, fair: None }
    }

    /// Sends each message to its key's shard of the queue (see [`crate::fair`]); the
    /// queue's workers must be made [`fair`](crate::Worker::fair) with the same shard count.
    pub fn fair(mut self, fairness: Fairness) -> Self {
        self.fair = Some(fairness);
        self
    }

    /// The queue it sends to.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Enqueues a typed job; returns its id (the id the worker sees).
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<MessageId> {
        self.enqueue_with(job, SendOptions::default()).await
    }

    /// Enqueues a typed job with options.
    pub async fn enqueue_with<J: Job>(&self, job: &J, opts: SendOptions) -> Result<MessageId> {
        let m = job_message(job, opts)?;
        let mut ids = self.send_named(vec![m], Some(J::NAME)).await?;
        ids.pop()
            .ok_or_else(|| QueueError::backend(self.queue.backend().kind(), "send returned no id"))
    }

    /// Sends one raw message.
    pub async fn send(&self, message: Message) -> Result<MessageId> {
        self.send_batch(vec![message])
            .await?
            .pop()
            .ok_or_else(|| QueueError::backend(self.queue.backend().kind(), "send returned no id"))
    }

    /// Sends many messages, in chunks of the backend's maximum batch. All are validated
    /// first. If a chunk fails, the error is returned and the chunks before it were sent
    /// (their ids are lost to the caller; resend with the same dedup ids where it matters).
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<MessageId>> {
        self.send_named(messages, None).await
    }

    /// Enqueues a typed job unless its unique key is held (see [`crate::unique`]): returns
    /// [`Enqueued::New`] with its id, or [`Enqueued::Duplicate`] with the holder's id and
    /// nothing sent. Needs the backend's shared store ([`crate::Backend::with_status`]).
    pub async fn enqueue_unique<J: Job>(
        &self,
        job: &J,
        unique: Unique,
        opts: SendOptions,
    ) -> Result<Enqueued> {
        let m = job_message(job, opts)?;
        self.unique_named(vec![(m, unique)], Some(J::NAME))
            .await?
            .pop()
            .ok_or_else(|| QueueError::backend(self.queue.backend().kind(), "send returned no id"))
    }

    /// Debounces a typed job under `key` ([`crate::debounce`]): it runs `delay` after the
    /// last send under `key` on this queue, and the jobs sent before it under that key do
    /// not run. Needs the backend's shared store. Returns its id.
    pub async fn debounce<J: Job>(&self, job: &J, key: &str, delay: Duration) -> Result<MessageId> {
        let m = job_message(job, SendOptions::default())?;
        crate::debounce::send(self, m, Some(J::NAME), key, delay, false).await
    }

    /// Replaces the job pending under `key` with this one ([`crate::debounce`]): it runs
    /// when the pending one was due (after `delay` if none is pending), and the pending one
    /// does not run. Needs the backend's shared store. Returns its id.
    pub async fn replace_pending<J: Job>(
        &self,
        job: &J,
        key: &str,
        delay: Duration,
    ) -> Result<MessageId> {
        let m = job_message(job, SendOptions::default())?;
        crate::debounce::send(self, m, Some(J::NAME), key, delay, true).await
    }

    /// Sends many messages, each under its unique key: those whose key is free are sent
    /// (in one batch), the others are answered with their holder's id. A key repeated
    /// within the batch is sent once.
    pub async fn send_unique_batch(&self, batch: Vec<(Message, Unique)>) -> Result<Vec<Enqueued>> {
        self.unique_named(batch, None).await
    }

    async fn unique_named(
        &self,
        mut batch: Vec<(Message, Unique)>,
        job: Option<&str>,
    ) -> Result<Vec<Enqueued>> {
        let store = self
            .queue
            .backend()
            .store()
            .ok_or(QueueError::NoStatusStore)?
            .clone();
        let caps = self.queue.backend().capabilities();
        for (m, _) in &batch {
            crate::driver::validate(&caps, self.queue.backend().kind(), m)?;
        }
        let locked = crate::unique::lock(&store, self.queue.name(), &mut batch).await?;
        let mut out = Vec::with_capacity(batch.len());
        let mut send = Vec::new();
        for ((m, _), l) in batch.into_iter().zip(locked) {
            match l {
                Ok(()) => {
                    out.push(Enqueued::New(m.id.clone()));
                    send.push(m);
                }
                Err(holder) => out.push(Enqueued::Duplicate(holder)),
            }
        }
        if send.is_empty() {
            return Ok(out);
        }
        if let Err(e) = self.send_named(send.clone(), job).await {
            crate::unique::unlock_sent(&store, &send).await;
            return Err(e);
        }
        Ok(out)
    }

    /// Sends, then records each job as `queued` where job status is on. A failed status
    /// write is logged and counted, never an error: the job was sent.
    pub(crate) async fn send_named(
        &self,
        messages: Vec<Message>,
        job: Option<&str>,
    ) -> Result<Vec<MessageId>> {
        let sent: Vec<(MessageId, String)> = match &self.fair {
            None => {
                let ids = self.queue.send_checked(messages).await?;
                let name = self.queue.name();
                ids.into_iter().map(|id| (id, name.to_string())).collect()
            }
            Some(f) => self.send_fair(f, messages).await?,
        };
        if let Some(status) = self.queue.backend().status() {
            let records: Vec<(&str, &str)> = sent
                .iter()
                .map(|(id, queue)| (id.as_str(), queue.as_str()))
                .collect();
            if let Err(e) = status.queued(&records, job).await {
                for (id, _) in &records {
                    crate::status::write_failed("queued", id, &e);
                }
            }
        }
        Ok(sent.into_iter().map(|(id, _)| id).collect())
    }

    /// Sends each message to its shard: one batch per shard, all validated first, ids
    /// returned in the caller's order.
    async fn send_fair(
        &self,
        f: &Fairness,
        messages: Vec<Message>,
    ) -> Result<Vec<(MessageId, String)>> {
        let caps = self.queue.backend().capabilities();
        for m in &messages {
            crate::driver::validate(&caps, self.queue.backend().kind(), m)?;
        }
        let n = messages.len();
        let mut by_shard: Vec<(String, Vec<usize>, Vec<Message>)> = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            let q = f.route(self.queue.name(), &m);
            match by_shard.iter_mut().find(|(name, _, _)| *name == q) {
                Some((_, at, ms)) => {
                    at.push(i);
                    ms.push(m);
                }
                None => by_shard.push((q, vec![i], vec![m])),
            }
        }
        let mut out: Vec<Option<(MessageId, String)>> = vec![None; n];
        for (name, at, ms) in by_shard {
            let ids = self.queue.backend().queue(&name).send_checked(ms).await?;
            for (i, id) in at.into_iter().zip(ids) {
                out[i] = Some((id, name.clone()));
            }
        }
        out.into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    QueueError::backend(self.queue.backend().kind(), "send returned too few ids")
                })
            })
            .collect()
    }
}

impl Queue {
    /// A producer for this queue.
    pub fn producer(&self) -> Producer {
        Producer::new(self.clone())
    }

    /// Shortcut for `producer().enqueue(job)`.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<MessageId> {
        self.producer().enqueue(job).await
    }

    /// Shortcut for `producer().enqueue_with(job, opts)`.
    pub async fn enqueue_with<J: Job>(&self, job: &J, opts: SendOptions) -> Result<MessageId> {
        self.producer().enqueue_with(job, opts).await
    }

    /// Shortcut for `producer().send(message)`.
    pub async fn send(&self, message: Message) -> Result<MessageId> {
        self.producer().send(message).await
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
    if let Some(d) = opts.dedup_id {
        m = m.dedup_id(d);
    }
    m.priority = opts.priority;
    Ok(m)
}
