//! Rate limits: at most `count` jobs per `per`, for a whole queue or per key (a tenant, an
//! API account), enforced for every worker that shares the store.
//!
//! The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket kept as one
//! number: the *theoretical arrival time*, TAT) with reservations: each job takes the next
//! free slot, `per / count` after the previous one, and up to `burst` jobs may start at
//! once. A job whose slot is later than now waits for it: in place when the wait is short
//! (at most [`WAIT_IN_PLACE`] and half the lease), otherwise it is given back to the queue
//! with its slot as the delay and its reservation recorded, so it consumes no attempt, is
//! never dead-lettered for the limit, and runs at its slot on whichever worker receives
//! it. Reserving (instead of refusing) keeps a backlog of one key from being received and
//! given back over and over: each job is received at most twice.
//!
//! State lives in a [`Store`] under `rate:<scope>` (one record per key, compare-and-set),
//! so the limit holds across every process sharing that store: the backend's status store
//! when it has one ([`crate::Backend::with_status`], [`crate::Backend::with_store`]).
//! Without one, [`crate::Worker::start`] refuses limits: a limit kept in each process
//! silently lets N processes do N times the limit. [`crate::Worker::local_only`] accepts
//! that by name (one process, or the in-memory backend), and the limit is then kept in a
//! store shared by the workers of this process. Time is the wall clock as this process saw it at start plus
//! tokio's monotonic time since, so that tests can run on tokio's paused clock; processes
//! sharing a limit need clocks in step (NTP), as with every distributed limiter.
//!
//! Per-key concurrency ([`crate::Worker::concurrency_per_key`]) works the same way: at
//! most `n` jobs of one key run at once across every worker sharing the store; a job of a
//! key at its limit goes back to the queue for a moment ([`BUSY_KEY_DELAY`]) without
//! counting an attempt, so the worker moves on to other keys.
//!
//! A handler can pause its key: [`crate::JobError::rate_limited`] (an HTTP 429's
//! Retry-After) pushes the key's next slot past the pause, and gives the job back without
//! counting an attempt.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::error::{QueueError, Result};
use crate::message::{unix_millis, Delivery};
use crate::store::{self, MemoryStore, Store};

/// How long a job of a key at its concurrency limit stays back in the queue.
pub const BUSY_KEY_DELAY: Duration = Duration::from_millis(250);

/// The longest a job waits in place for its slot; longer waits give it back to the queue.
pub const WAIT_IN_PLACE: Duration = Duration::from_secs(2);

/// At most `count` jobs per `per`.
///
/// By default jobs are spaced evenly, one every `per / count`, so that no window of length
/// `per` ever holds more than `count` starts. [`RateLimit::burst`] lets up to `b` start at
/// once after a quiet spell, at the price of the strict window: right after a burst, one
/// window of `per` may hold up to `b + count - 1` starts (the long-run rate stays `count`
/// per `per`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    count: u32,
    per: Duration,
    burst: u32,
}

impl RateLimit {
    /// At most `count` jobs per `per`. A zero count, a period under 1 ms or over a year,
    /// or an interval between jobs under a microsecond is [`QueueError::InvalidOption`].
    pub fn new(count: u32, per: Duration) -> Result<Self> {
        if count == 0 {
            return Err(QueueError::InvalidOption(
                "a rate limit needs a count of at least 1".into(),
            ));
        }
        if per < Duration::from_millis(1) || per > store::MAX_TTL {
            return Err(QueueError::InvalidOption(format!(
                "a rate limit's period must be 1 ms to a year, got {per:?}"
            )));
        }
        if per / count < Duration::from_micros(1) {
            return Err(QueueError::InvalidOption(format!(
                "{count} per {per:?} is more than one job per microsecond"
            )));
        }
        Ok(RateLimit {
            count,
            per,
            burst: 1,
        })
    }

    /// At most `count` jobs per second.
    pub fn per_second(count: u32) -> Result<Self> {
        RateLimit::new(count, Duration::from_secs(1))
    }

    /// Up to `burst` jobs may start at once after a quiet spell (default 1: every job
    /// spaced evenly; see the type's docs for what a burst costs the window bound).
    pub fn burst(mut self, burst: u32) -> Result<Self> {
        if burst == 0 {
            return Err(QueueError::InvalidOption(
                "a burst must be at least 1".into(),
            ));
        }
        self.burst = burst;
        Ok(self)
    }

    /// The time between two jobs at the limit's pace.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

/// A function reading a delivery's rate-limit key.
pub type KeyFn = Arc<dyn Fn(&Delivery) -> Option<String> + Send + Sync>;

/// Where a per-key limit reads a delivery's key.
#[derive(Clone)]
#[non_exhaustive]
pub enum LimitKey {
    /// A header's value (a delivery without it is not limited by key).
    Header(String),
    /// Anything computed from the delivery (`None`: not limited by key).
    Fn(KeyFn),
}

impl std::fmt::Debug for LimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitKey::Header(h) => f.debug_tuple("Header").field(h).finish(),
            LimitKey::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl LimitKey {
    /// The key of `d`, if it has one.
    pub fn of(&self, d: &Delivery) -> Option<String> {
        match self {
            LimitKey::Header(h) => d.headers.get(h).cloned(),
            LimitKey::Fn(f) => f(d),
        }
    }
}

/// Milliseconds since the Unix epoch, on tokio's clock (see the module docs).
pub(crate) fn now_ms() -> u64 {
    static BASE: OnceLock<(u64, tokio::time::Instant)> = OnceLock::new();
    let (wall, mono) =
        BASE.get_or_init(|| (unix_millis(SystemTime::now()), tokio::time::Instant::now()));
    wall + mono.elapsed().as_millis() as u64
}

/// The store limits use when the backend has none: shared by this process's workers.
pub(crate) fn local_store() -> Arc<dyn Store> {
    static LOCAL: OnceLock<Arc<MemoryStore>> = OnceLock::new();
    LOCAL.get_or_init(|| Arc::new(MemoryStore::new())).clone()
}

/// What [`Limiter::take`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Run now.
    Now,
    /// The slot reserved for this job starts this long from now.
    In(Duration),
}

/// One limit over one scope (a queue, or a queue and a key), in a store.
#[derive(Clone, Debug)]
pub(crate) struct Limiter {
    pub(crate) limit: RateLimit,
    pub(crate) store: Arc<dyn Store>,
}

const CAS_TRIES: usize = 20;

impl Limiter {
    /// Takes the next slot of `scope`: now if one is free, else the next one (reserved).
    /// A reservation further out than `horizon` is not made: the answer is `In(horizon)`
    /// and the job must ask again then.
    pub(crate) async fn take(&self, scope: &str, horizon: Duration) -> Result<Slot> {
        let t = self.limit.interval().as_micros() as u64;
        let tau = t * u64::from(self.limit.burst - 1);
        self.update(scope, |tat, now| {
            let start = tat.max(now);
            let slot = start.saturating_sub(tau);
            if slot <= now {
                return (Some(start + t), Slot::Now);
            }
            let wait = Duration::from_micros(slot - now);
            if wait > horizon {
                return (None, Slot::In(horizon));
            }
            (Some(start + t), Slot::In(wait))
        })
        .await
    }

    /// Pushes `scope`'s next slot to at least `pause` from now (no burst right after).
    pub(crate) async fn pause(&self, scope: &str, pause: Duration) -> Result<()> {
        let p = pause.as_micros() as u64;
        let tau = self.limit.interval().as_micros() as u64 * u64::from(self.limit.burst - 1);
        self.update(scope, |tat, now| (Some(tat.max(now + p + tau)), ()))
            .await
    }

    /// Reads the TAT (µs), lets `f` decide, writes the new TAT by compare-and-set.
    async fn update<T>(&self, scope: &str, f: impl Fn(u64, u64) -> (Option<u64>, T)) -> Result<T> {
        let key = format!("rate:{scope}");
        for _ in 0..CAS_TRIES {
            let now = now_ms() * 1000;
            let cur = self.store.get(&key).await?;
            let tat = cur
                .as_ref()
                .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            let (next, out) = f(tat, now);
            let Some(next) = next else { return Ok(out) };
            let ttl = Duration::from_micros(next.saturating_sub(now))
                .max(Duration::from_millis(1))
                .min(store::MAX_TTL);
            let bytes = next.to_string().into_bytes();
            let written = match &cur {
                Some(v) => self.store.replace(&key, v.version, &bytes, ttl).await?,
                None => self.store.insert(&key, &bytes, ttl).await?,
            };
            if written.is_some() {
                return Ok(out);
            }
        }
        Err(QueueError::backend(
            "rate limit store",
            format!("{CAS_TRIES} writers raced for rate:{scope}; try again"),
        ))
    }
}

/// At most `n` jobs of one key running at once, across every worker sharing the store:
/// one record per key, `conc:<scope>`, holding the running jobs' ids and until when each
/// holds its place (renewed while it runs, so a crashed worker's place frees itself).
#[derive(Clone, Debug)]
pub(crate) struct KeySlots {
    pub(crate) n: u32,
    pub(crate) store: Arc<dyn Store>,
    /// How long a place is held without renewal.
    pub(crate) hold: Duration,
}

impl KeySlots {
    /// Takes a place for job `id` under `scope`; `false` when all `n` are taken.
    pub(crate) async fn acquire(&self, scope: &str, id: &str) -> Result<bool> {
        self.edit(scope, |holders, now| {
            if holders.len() >= self.n as usize && !holders.contains_key(id) {
                return None;
            }
            holders.insert(id.to_string(), now + self.hold.as_millis() as u64);
            Some(())
        })
        .await
        .map(|r| r.is_some())
    }

    /// Renews job `id`'s place under `scope`.
    pub(crate) async fn renew(&self, scope: &str, id: &str) -> Result<()> {
        self.edit(scope, |holders, now| {
            holders.insert(id.to_string(), now + self.hold.as_millis() as u64);
            Some(())
        })
        .await
        .map(|_| ())
    }

    /// Gives job `id`'s place back.
    pub(crate) async fn release(&self, scope: &str, id: &str) -> Result<()> {
        self.edit(scope, |holders, _| holders.remove(id).map(|_| ()))
            .await
            .map(|_| ())
    }

    /// Reads the holders (dropping expired ones), lets `f` change them (`None`: no write),
    /// writes them back by compare-and-set.
    async fn edit(
        &self,
        scope: &str,
        f: impl Fn(&mut std::collections::BTreeMap<String, u64>, u64) -> Option<()>,
    ) -> Result<Option<()>> {
        let key = format!("conc:{scope}");
        for _ in 0..CAS_TRIES {
            let now = now_ms();
            let cur = self.store.get(&key).await?;
            let mut holders: std::collections::BTreeMap<String, u64> = cur
                .as_ref()
                .and_then(|v| serde_json::from_slice(&v.value).ok())
                .unwrap_or_default();
            holders.retain(|_, until| *until > now);
            if f(&mut holders, now).is_none() {
                return Ok(None);
            }
            let bytes = serde_json::to_vec(&holders)
                .map_err(|e| QueueError::backend("concurrency store", e))?;
            let ttl = self.hold.max(Duration::from_millis(1));
            let written = match &cur {
                Some(v) => self.store.replace(&key, v.version, &bytes, ttl).await?,
                None => self.store.insert(&key, &bytes, ttl).await?,
            };
            if written.is_some() {
                return Ok(Some(()));
            }
        }
        Err(QueueError::backend(
            "concurrency store",
            format!("{CAS_TRIES} writers raced for conc:{scope}; try again"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_limits_are_refused() {
        assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(RateLimit::new(1, Duration::ZERO).is_err());
        assert!(RateLimit::new(1, Duration::from_secs(400 * 86_400)).is_err());
        assert!(RateLimit::new(u32::MAX, Duration::from_millis(1)).is_err());
        assert!(RateLimit::per_second(5).unwrap().burst(0).is_err());
        assert_eq!(
            RateLimit::per_second(4).unwrap().interval(),
            Duration::from_millis(250)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_reserved_one_interval_apart_after_the_burst() {
        let l = Limiter {
            limit: RateLimit::per_second(4).unwrap().burst(2).unwrap(),
            store: Arc::new(MemoryStore::new()),
        };
        let h = Duration::from_secs(60);
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(l.take("q", h).await.unwrap());
        }
        let ms = |n| Slot::In(Duration::from_millis(n));
        assert_eq!(got, [Slot::Now, Slot::Now, ms(250), ms(500), ms(750)]);
        assert_eq!(
            l.take("other", h).await.unwrap(),
            Slot::Now,
            "scopes are apart"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            l.take("q", h).await.unwrap(),
            Slot::Now,
            "the bucket drained"
        );
        l.pause("q", Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            l.take("q", Duration::from_secs(3)).await.unwrap(),
            Slot::In(Duration::from_secs(3)),
            "past the horizon: nothing reserved, ask again then"
        );
        assert_eq!(
            l.take("q", h).await.unwrap(),
            ms(10_000),
            "a paused key's next slot is when the pause ends"
        );
    }
}
