//! Every SQS request counted by kind: SQS bills by request.

use super::*;

/// How many SQS requests this driver instance made, by kind.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RequestCounts {
    /// `SendMessageBatch`.
    pub send: AtomicU64,
    /// `ReceiveMessage`.
    pub receive: AtomicU64,
    /// `DeleteMessageBatch`.
    pub delete: AtomicU64,
    /// `ChangeMessageVisibility`.
    pub change_visibility: AtomicU64,
    /// Everything else (queue management, attributes).
    pub other: AtomicU64,
}

impl RequestCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        [
            &self.send,
            &self.receive,
            &self.delete,
            &self.change_visibility,
            &self.other,
        ]
        .iter()
        .map(|a| a.load(AO::Relaxed))
        .sum()
    }
    pub(crate) fn count(&self, kind: &'static str) {
        let a = match kind {
            "send" => &self.send,
            "receive" => &self.receive,
            "delete" => &self.delete,
            "change_visibility" => &self.change_visibility,
            _ => &self.other,
        };
        a.fetch_add(1, AO::Relaxed);
        metrics::counter!("queue_sqs_requests_total", "kind" => kind).increment(1);
    }
}
