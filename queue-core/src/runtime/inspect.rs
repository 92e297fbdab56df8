//! What operators look at and move: a queue's next messages ([`Queue::peek`]), its dead
//! letters with their reasons ([`Queue::dead_letters`]), a redrive of some of them
//! ([`Queue::redrive_matching`]), and pausing a queue ([`crate::pause`]).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::driver::{redriven_copy, DeadLetterKind, ReceiveOptions};
use crate::error::{QueueError, Result};
use crate::handle::Queue;
use crate::message::{from_unix_millis, headers, Message, Peeked, Receipt};

/// A dead letter as an operator reads it: the message and why it is there, from the
/// headers the worker wrote when it dead-lettered it ([`headers::DLQ_REASON`] and the
/// rest). A message put in the dead-letter queue by the backend itself (SQS's redrive
/// policy after too many receives) carries no reason: `reason` is `None`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The message, as peeked.
    pub message: Peeked,
    /// Why it was dead-lettered, when the worker recorded it.
    pub reason: Option<DeadLetterKind>,
    /// The last error's message.
    pub error: Option<String>,
    /// Attempts made before it was dead-lettered.
    pub attempts: Option<u32>,
    /// The queue it came from.
    pub source: Option<String>,
    /// When it was dead-lettered.
    pub dead_at: Option<SystemTime>,
}

impl DeadLetter {
    /// Reads the reason headers of a peeked dead letter.
    pub fn from_peeked(message: Peeked) -> Self {
        let h = &message.headers;
        DeadLetter {
            reason: h.get(headers::DLQ_REASON).and_then(|r| r.parse().ok()),
            error: h.get(headers::DLQ_ERROR).cloned(),
            attempts: h.get(headers::DLQ_ATTEMPTS).and_then(|a| a.parse().ok()),
            source: h.get(headers::DLQ_SOURCE).cloned(),
            dead_at: h
                .get(headers::DLQ_AT)
                .and_then(|t| t.parse().ok())
                .map(from_unix_millis),
            message,
        }
    }
}

/// The most dead letters [`Queue::redrive_matching`] holds aside while it looks for
/// matching ones; past this it stops, and a second run continues.
pub const MAX_HELD: usize = 100_000;

impl Queue {
    /// Up to `max` of the queue's ready messages, next in line first, without taking them
    /// (no lease, no attempt). Backends declare which queues they can peek
    /// ([`crate::Capabilities::peek`]); elsewhere this is [`QueueError::Unsupported`].
    pub async fn peek(&self, max: usize) -> Result<Vec<Peeked>> {
        self.driver().peek(self.name(), max).await
    }

    /// Up to `max` of the queue's dead letters, oldest first, with their reasons, without
    /// taking them.
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .dead_letter_queue()
            .peek(max)
            .await?
            .into_iter()
            .map(DeadLetter::from_peeked)
            .collect())
    }

    /// Moves up to `limit` dead letters back into this queue, like [`Queue::redrive`], but
    /// only those whose reason is `reason` (all of them for `None`), calling `progress`
    /// with the running count after every batch. Returns how many moved.
    ///
    /// Works on every backend, peek or not: it leases dead letters one batch at a time,
    /// sends the matching ones back (then acks them, so a crash duplicates, never loses),
    /// and holds the others leased until it has seen every dead letter (a receive comes
    /// back empty, or brings only ones it saw already), then gives them back at once
    /// without counting an attempt. Their order in the dead-letter queue may change.
    pub async fn redrive_matching(
        &self,
        limit: usize,
        reason: Option<DeadLetterKind>,
        mut progress: impl FnMut(usize) + Send,
    ) -> Result<usize> {
        let driver = self.driver();
        let caps = driver.capabilities();
        let batch = caps.max_batch.max(1);
        if reason.is_none() {
            let mut moved = 0;
            while moved < limit {
                let want = batch.max(100).min(limit - moved);
                let n = driver.redrive(self.name(), want).await?;
                moved += n;
                progress(moved);
                if n < want {
                    break;
                }
            }
            return Ok(moved);
        }
        let dlq = driver.dead_letter_queue(self.name());
        let lease = Duration::from_secs(300).min(caps.max_lease);
        let mut seen = HashSet::new();
        let mut held = Vec::new();
        let mut moved = 0;
        let result = async {
            while moved < limit && held.len() < MAX_HELD {
                let opts = ReceiveOptions::new(
                    batch.min(limit - moved),
                    caps.timer_granularity.max(Duration::from_secs(1)),
                    lease,
                );
                let got = driver.receive(&dlq, opts).await?;
                if got.is_empty() {
                    break;
                }
                let mut fresh = false;
                let mut back: Vec<Message> = Vec::new();
                let mut acks: Vec<Receipt> = Vec::new();
                for d in got {
                    fresh |= seen.insert(d.id.clone());
                    let kind = d
                        .headers
                        .get(headers::DLQ_REASON)
                        .and_then(|r| r.parse().ok());
                    if kind == reason {
                        acks.push(d.receipt.clone());
                        back.push(redriven_copy(d));
                    } else {
                        held.push(d);
                    }
                }
                if !back.is_empty() {
                    moved += back.len();
                    driver.send(self.name(), back).await?;
                    driver.ack(&dlq, &acks).await?;
                    progress(moved);
                }
                if !fresh {
                    break;
                }
            }
            Ok::<_, QueueError>(())
        }
        .await;
        for d in &held {
            if let Err(e) = driver.give_back(d, Duration::ZERO).await {
                tracing::warn!(queue = %dlq, id = %d.id, error = %e,
                    "could not give a dead letter back; it returns when its lease ends");
            }
        }
        result.map(|()| moved)
    }

    /// Pauses the queue for every worker that shares this backend's store (see
    /// [`crate::pause`]); `true` if it was running until now. Without a store
    /// ([`crate::Backend::with_status`]) this is [`QueueError::NoStatusStore`].
    pub async fn pause(&self) -> Result<bool> {
        crate::pause::pause(&**self.shared_store()?, self.name()).await
    }

    /// Resumes a paused queue; `true` if it was paused.
    pub async fn resume(&self) -> Result<bool> {
        crate::pause::resume(&**self.shared_store()?, self.name()).await
    }

    /// Whether the queue is paused.
    pub async fn is_paused(&self) -> Result<bool> {
        crate::pause::is_paused(&**self.shared_store()?, self.name()).await
    }

    fn shared_store(&self) -> Result<&std::sync::Arc<dyn crate::store::Store>> {
        self.backend().store().ok_or(QueueError::NoStatusStore)
    }
}
