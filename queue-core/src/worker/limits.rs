//! The worker's side of rate limits ([`crate::limit`]): taking a slot before a job runs,
//! waiting for it or giving the job back until it, honouring a slot reserved on an
//! earlier delivery, and pausing a key when a handler says the remote asked for it.

use super::*;
use crate::limit::{LimitKey, Limiter, RateLimit, Slot, WAIT_IN_PLACE};

/// A worker's limits, built when it starts.
pub(super) struct Limits {
    queue: Option<Limiter>,
    per_key: Option<(Limiter, LimitKey)>,
    store: Arc<dyn crate::Store>,
}

/// What the limits decided for one delivery.
pub(super) enum Admit {
    /// Run it now.
    Run,
    /// It went back to the queue until its slot; nothing else to do.
    Deferred,
}

impl Worker {
    /// At most `limit` jobs of this queue start per period, across every worker that
    /// shares the backend's store ([`crate::Backend::with_status`]; without one, across
    /// this process's workers). A job over the limit waits for its slot: it consumes no
    /// attempt and is never dead-lettered for it (see [`crate::limit`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.0 = Some(limit);
        self
    }

    /// At most `limit` jobs *per key* start per period, the key read from each delivery by
    /// `key` (a header, or a function of the delivery); deliveries without a key are
    /// limited only by [`Worker::rate_limit`], if set. Keys do not hold each other up: a
    /// key over its limit waits while the others run.
    pub fn rate_limit_per_key(mut self, limit: RateLimit, key: LimitKey) -> Self {
        self.limits.1 = Some((limit, key));
        self
    }
}

impl Limits {
    pub(super) fn build(
        queue: Option<RateLimit>,
        per_key: Option<(RateLimit, LimitKey)>,
        store: Option<Arc<dyn crate::Store>>,
    ) -> Option<Self> {
        if queue.is_none() && per_key.is_none() {
            return None;
        }
        let store = store.unwrap_or_else(crate::limit::local_store);
        let limiter = |limit| Limiter {
            limit,
            store: store.clone(),
        };
        Some(Limits {
            queue: queue.map(limiter),
            per_key: per_key.map(|(l, k)| (limiter(l), k)),
            store,
        })
    }
}

fn reservation(inner: &Inner, d: &Delivery) -> String {
    format!("rate-slot:{}:{}", inner.name, d.id)
}

/// Takes the delivery's slot(s); waits in place for a near one, gives the job back until
/// a far one. A store that fails lets the job run (logged): a limit is not worth a job.
pub(super) async fn admit(inner: &Inner, d: &Delivery) -> Admit {
    let Some(limits) = &inner.limits else {
        return Admit::Run;
    };
    let horizon = inner
        .caps
        .max_nack_delay
        .unwrap_or(WAIT_IN_PLACE)
        .min(Duration::from_secs(3600));
    let (wait, keyed) = match slot(inner, limits, d, horizon).await {
        Ok(w) => w,
        Err(e) => {
            backend_error(
                inner,
                "rate limit store failed; running the job unlimited",
                Some(&d.id),
                &e,
            );
            return Admit::Run;
        }
    };
    if wait.is_zero() {
        return Admit::Run;
    }
    bump(&inner.counters.rate_limited);
    // A job waiting in place holds a concurrency slot: fine for a queue's own limit
    // (every job of the queue waits alike), not for one key's, which would starve the
    // other keys; those go back to the queue unless the wait is a blink.
    let in_place = if keyed {
        IN_PLACE_KEYED
    } else {
        WAIT_IN_PLACE.min(inner.config.lease / 2)
    };
    if wait <= in_place {
        tokio::time::sleep(wait).await;
        return Admit::Run;
    }
    // Record the reservation so that whoever receives the job at its slot runs it
    // without taking another.
    let due = crate::limit::now_ms() + wait.as_millis() as u64;
    let ttl = wait + inner.config.lease * 2;
    if let Err(e) = limits
        .store
        .insert(&reservation(inner, d), due.to_string().as_bytes(), ttl)
        .await
    {
        tracing::warn!(id = %d.id, error = %e, "could not record a rate-limit slot; the job will take a new one");
    }
    if let Err(e) = inner.driver.give_back(d, wait).await {
        backend_error(
            inner,
            "could not defer a rate-limited job; it comes back when its lease ends",
            Some(&d.id),
            &e,
        );
    }
    Admit::Deferred
}

/// The longest a job waits in place for a per-key slot.
const IN_PLACE_KEYED: Duration = Duration::from_millis(10);

/// How long until the delivery may run (zero: now), and whether a key's limit (rather
/// than the queue's) decided it.
async fn slot(
    inner: &Inner,
    limits: &Limits,
    d: &Delivery,
    horizon: Duration,
) -> QResult<(Duration, bool)> {
    let held = reservation(inner, d);
    if let Some(v) = limits.store.get(&held).await? {
        let due: u64 = std::str::from_utf8(&v.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let now = crate::limit::now_ms();
        if due <= now {
            limits.store.delete(&held).await?;
            return Ok((Duration::ZERO, false));
        }
        return Ok((Duration::from_millis(due - now), true));
    }
    let mut wait = Duration::ZERO;
    let mut keyed = false;
    if let Some(l) = &limits.queue {
        if let Slot::In(w) = l.take(&inner.name, horizon).await? {
            wait = wait.max(w);
        }
    }
    if let Some((l, key)) = &limits.per_key {
        if let Some(k) = key.of(d) {
            if let Slot::In(w) = l.take(&format!("{}:{k}", inner.name), horizon).await? {
                keyed = w > wait;
                wait = wait.max(w);
            }
        }
    }
    Ok((wait, keyed))
}

/// A handler said the remote wants this key (or, without a key, the queue) left alone
/// for `pause`: push its next slot past the pause and give the job back until then,
/// without counting an attempt.
pub(super) async fn back_off(inner: &Inner, d: &Delivery, pause: Duration) {
    if let Some(limits) = &inner.limits {
        let keyed = limits
            .per_key
            .as_ref()
            .and_then(|(l, k)| Some((l, format!("{}:{}", inner.name, k.of(d)?))));
        let r = match (keyed, &limits.queue) {
            (Some((l, scope)), _) => l.pause(&scope, pause).await,
            (None, Some(l)) => l.pause(&inner.name, pause).await,
            (None, None) => Ok(()),
        };
        if let Err(e) = r {
            backend_error(
                inner,
                "could not record a rate-limit pause",
                Some(&d.id),
                &e,
            );
        }
    }
    bump(&inner.counters.rate_limited);
    let delay = clamp_delay(&inner.caps, pause);
    if let Err(e) = inner.driver.give_back(d, delay).await {
        backend_error(
            inner,
            "could not defer a rate-limited job; it comes back when its lease ends",
            Some(&d.id),
            &e,
        );
    }
}
