//! Idempotency: exactly-once *effects* over at-least-once delivery.
//!
//! The worker asks the store to [`begin`](IdempotencyStore::begin) a key before running a
//! handler. A key that already completed within the retention window is acked without
//! running; a key another worker is running right now is given back to the queue to try
//! later; otherwise the handler runs, and the key is marked complete before the ack (so a
//! crash between the two means the redelivery is skipped, not run twice).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;

use crate::error::Result;

/// What [`IdempotencyStore::begin`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Begin {
    /// Nobody has this key: the caller now holds it for `lease` and should run the job.
    Started,
    /// The key completed earlier: skip the job.
    AlreadyDone,
    /// Another worker holds the key right now: try again later.
    InProgress,
}

/// Where completed idempotency keys are remembered. Implementations: [`MemoryIdempotency`]
/// here, a Redis one in `queue-redis`.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for `lease` unless it is held or done.
    async fn begin(&self, key: &str, lease: Duration) -> Result<Begin>;
    /// Marks `key` done for `retention`.
    async fn complete(&self, key: &str, retention: Duration) -> Result<()>;
    /// Releases a claim after a failure, so that a retry can run.
    async fn release(&self, key: &str) -> Result<()>;
}

/// `now + d`, saturating about a century ahead instead of overflowing.
fn until(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[derive(Clone, Copy, Debug)]
enum State {
    Running(Instant),
    Done(Instant),
}

/// An in-process idempotency store. Effects are exactly-once among workers in one process.
#[derive(Default, Debug)]
pub struct MemoryIdempotency {
    keys: Mutex<HashMap<String, State>>,
}

impl MemoryIdempotency {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn begin(&self, key: &str, lease: Duration) -> Result<Begin> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() > 10_000 {
            keys.retain(|_, s| match s {
                State::Running(until) | State::Done(until) => *until > now,
            });
        }
        let found = match keys.get(key) {
            Some(State::Done(until)) if *until > now => Begin::AlreadyDone,
            Some(State::Running(until)) if *until > now => Begin::InProgress,
            _ => Begin::Started,
        };
        if found == Begin::Started {
            keys.insert(key.to_string(), State::Running(until(now, lease)));
        }
        Ok(found)
    }

    async fn complete(&self, key: &str, retention: Duration) -> Result<()> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.insert(
            key.to_string(),
            State::Done(until(Instant::now(), retention)),
        );
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<()> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(keys.get(key), Some(State::Running(_))) {
            keys.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claim_complete_release() {
        let s = MemoryIdempotency::new();
        let l = Duration::from_secs(60);
        assert_eq!(s.begin("a", l).await.unwrap(), Begin::Started);
        assert_eq!(s.begin("a", l).await.unwrap(), Begin::InProgress);
        s.release("a").await.unwrap();
        assert_eq!(s.begin("a", l).await.unwrap(), Begin::Started);
        s.complete("a", l).await.unwrap();
        assert_eq!(s.begin("a", l).await.unwrap(), Begin::AlreadyDone);
        s.release("a").await.unwrap(); // does not forget a completed key
        assert_eq!(s.begin("a", l).await.unwrap(), Begin::AlreadyDone);
    }

    #[tokio::test]
    async fn expiry() {
        let s = MemoryIdempotency::new();
        assert_eq!(s.begin("a", Duration::ZERO).await.unwrap(), Begin::Started);
        assert_eq!(
            s.begin("a", Duration::from_secs(1)).await.unwrap(),
            Begin::Started
        );
        s.complete("a", Duration::ZERO).await.unwrap();
        assert_eq!(
            s.begin("a", Duration::from_secs(1)).await.unwrap(),
            Begin::Started
        );
    }
}
