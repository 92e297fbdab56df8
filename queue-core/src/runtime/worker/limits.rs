//! The worker's side of rate limits and per-key concurrency ([`crate::limit`]): taking
//! a slot (and a place) before a job runs, waiting for it or giving the job back until
//! it, honouring a slot reserved on an earlier delivery, and pausing a key when a handler
//! says the remote asked for it.

use super::*;
use crate::limit::{KeySlots, LimitKey, Limiter, RateLimit, Slot, BUSY_KEY_DELAY, WAIT_IN_PLACE};

/// The limits a worker was configured with.
#[derive(Clone, Debug, Default)]
pub(super) struct Settings {
    rate: Option<RateLimit>,
    rate_per_key: Option<(RateLimit, LimitKey)>,
    concurrency_per_key: Option<(u32, LimitKey)>,
}

impl Settings {
    pub(super) fn any(&self) -> bool {
        self.rate.is_some() || self.rate_per_key.is_some() || self.concurrency_per_key.is_some()
    }

    pub(super) fn check(&self) -> QResult<()> {
        if matches!(self.concurrency_per_key, Some((0, _))) {
            return Err(QueueError::InvalidOption(
                "concurrency_per_key must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A worker's limits, built when it starts.
pub(super) struct Limits {
    queue: Option<Limiter>,
    per_key: Option<(Limiter, LimitKey)>,
    conc: Option<(KeySlots, LimitKey)>,
    /// Places held now: job id → scope.
    held: Arc<Mutex<HashMap<String, String>>>,
    store: Arc<dyn crate::Store>,
}

/// What the limits decided for one delivery.
pub(super) enum Admit {
    /// Run it now, holding this place (if any) until the guard drops.
    Run(Option<Place>),
    /// It went back to the queue; nothing else to do.
    Deferred,
}

/// A held per-key concurrency place; dropping it gives the place back.
pub(super) struct Place {
    slots: KeySlots,
    scope: String,
    id: String,
    held: Arc<Mutex<HashMap<String, String>>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let slots = self.slots.clone();
        let (scope, id) = (
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.id),
        );
        tokio::spawn(async move {
            if let Err(e) = slots.release(&scope, &id).await {
                tracing::warn!(id, error = %e,
                    "could not give a per-key place back; it frees itself when its hold ends");
            }
        });
    }
}

impl Worker {
    /// At most `limit` jobs of this queue start per period, across every worker that
    /// shares the backend's store ([`crate::Backend::with_status`]; without one, across
    /// this process's workers). A job over the limit waits for its slot: it consumes no
    /// attempt and is never dead-lettered for it (see [`crate::limit`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.rate = Some(limit);
        self
    }

    /// At most `limit` jobs *per key* start per period, the key read from each delivery by
    /// `key` (a header, or a function of the delivery); deliveries without a key are
    /// limited only by [`Worker::rate_limit`], if set. Keys do not hold each other up: a
    /// key over its limit waits while the others run.
    pub fn rate_limit_per_key(mut self, limit: RateLimit, key: LimitKey) -> Self {
        self.limits.rate_per_key = Some((limit, key));
        self
    }

    /// At most `n` jobs *of one key* run at once, across every worker sharing the store
    /// (as for [`Worker::rate_limit`]). A job whose key is at its limit goes back to the
    /// queue for about [`crate::limit::BUSY_KEY_DELAY`] without counting an attempt, and
    /// the worker moves on: one key's backlog cannot take every slot (what this buys and
    /// costs is measured in docs/benchmarks.md). A place is held while its job runs,
    /// renewed every third of the lease, so a crashed worker's places free themselves
    /// within a lease. `n` of 0 is refused by [`Worker::start`].
    pub fn concurrency_per_key(mut self, n: u32, key: LimitKey) -> Self {
        self.limits.concurrency_per_key = Some((n, key));
        self
    }
}

impl Limits {
    pub(super) fn build(
        s: Settings,
        store: Option<Arc<dyn crate::Store>>,
        lease: Duration,
    ) -> Option<Self> {
        if !s.any() {
            return None;
        }
        let store = store.unwrap_or_else(crate::limit::local_store);
        let limiter = |limit| Limiter {
            limit,
            store: store.clone(),
        };
        let conc = s.concurrency_per_key.map(|(n, k)| {
            let slots = KeySlots {
                n,
                store: store.clone(),
                hold: lease,
            };
            (slots, k)
        });
        Some(Limits {
            queue: s.rate.map(limiter),
            per_key: s.rate_per_key.map(|(l, k)| (limiter(l), k)),
            conc,
            held: Arc::default(),
            store,
        })
    }
}

/// Renews the places this worker holds every third of the lease, until dropped.
pub(super) async fn renew_places(inner: Arc<Inner>) {
    let Some(Limits {
        conc: Some((slots, _)),
        held,
        ..
    }) = inner.limits.as_deref()
    else {
        return;
    };
    loop {
        tokio::time::sleep(slots.hold / 3).await;
        let now: Vec<(String, String)> = held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(i, s)| (i.clone(), s.clone()))
            .collect();
        for (id, scope) in now {
            if let Err(e) = slots.renew(&scope, &id).await {
                tracing::warn!(id, error = %e, "could not renew a per-key place");
            }
        }
    }
}

/// A per-key place for `d`: `Ok(Some(None))` when its key has no limit, `Ok(None)` when
/// the key is at its limit.
async fn place(inner: &Inner, limits: &Limits, d: &Delivery) -> QResult<Option<Option<Place>>> {
    let Some((slots, key)) = &limits.conc else {
        return Ok(Some(None));
    };
    let Some(k) = key.of(d) else {
        return Ok(Some(None));
    };
    let scope = format!("{}:{k}", inner.home);
    let id = d.id.as_str().to_string();
    if !slots.acquire(&scope, &id).await? {
        return Ok(None);
    }
    limits
        .held
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), scope.clone());
    Ok(Some(Some(Place {
        slots: slots.clone(),
        scope,
        id,
        held: limits.held.clone(),
    })))
}

fn reservation(inner: &Inner, d: &Delivery) -> String {
    format!("rate-slot:{}:{}", inner.home, d.id)
}

/// Takes the delivery's slot(s); waits in place for a near one, gives the job back until
/// a far one. A store that fails lets the job run (logged): a limit is not worth a job.
///
/// Without limits this is no work; with them the step's future is boxed, so that a job's
/// task does not carry its state while the job runs (see `lifecycle::started`).
pub(super) async fn admit(inner: &Inner, d: &Delivery) -> Admit {
    match &inner.limits {
        None => Admit::Run(None),
        Some(limits) => Box::pin(admit_limited(inner, limits, d)).await,
    }
}

async fn admit_limited(inner: &Inner, limits: &Limits, d: &Delivery) -> Admit {
    let place = match place(inner, limits, d).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            // The key is at its concurrency limit: step aside for a moment.
            bump(&inner.counters.rate_limited);
            let delay = clamp_delay(&inner.caps, BUSY_KEY_DELAY.mul_f64(0.5 + fastrand::f64()));
            if let Err(e) = inner.driver.give_back(d, delay).await {
                backend_error(
                    inner,
                    "could not defer a job of a busy key; it comes back when its lease ends",
                    Some(&d.id),
                    &e,
                );
            }
            return Admit::Deferred;
        }
        Err(e) => {
            backend_error(
                inner,
                "concurrency store failed; running the job unlimited",
                Some(&d.id),
                &e,
            );
            None
        }
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
            return Admit::Run(place);
        }
    };
    if wait.is_zero() {
        return Admit::Run(place);
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
        return Admit::Run(place);
    }
    drop(place);
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

/// How late a job may come back for its reserved slot and still take it: half the
/// shortest interval between two jobs of the limits in force.
fn late_ok(limits: &Limits) -> Duration {
    let a = limits.queue.as_ref().map(|l| l.limit.interval());
    let b = limits.per_key.as_ref().map(|(l, _)| l.limit.interval());
    a.into_iter().chain(b).min().unwrap_or_default() / 2
}

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
        if now < due {
            return Ok((Duration::from_millis(due - now), true));
        }
        limits.store.delete(&held).await?;
        // Back in time for its slot: run. Back late (a backend whose delays are coarse,
        // Kafka's delay topic): the slot is gone, and running now could crowd the slots
        // of others, so it takes a new one like any job.
        if now - due <= late_ok(limits).as_millis() as u64 {
            return Ok((Duration::ZERO, false));
        }
    }
    let mut wait = Duration::ZERO;
    let mut keyed = false;
    if let Some(l) = &limits.queue {
        if let Slot::In(w) = l.take(&inner.home, horizon).await? {
            wait = wait.max(w);
        }
    }
    if let Some((l, key)) = &limits.per_key {
        if let Some(k) = key.of(d) {
            if let Slot::In(w) = l.take(&format!("{}:{k}", inner.home), horizon).await? {
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
/// Whether a rate limit applies to `d` that [`back_off`] can pause: the queue's, or a
/// per-key one whose key `d` carries. (Per-key concurrency alone pauses nothing.)
pub(super) fn pauses(inner: &Inner, d: &Delivery) -> bool {
    inner.limits.as_deref().is_some_and(|l| {
        l.queue.is_some() || l.per_key.as_ref().is_some_and(|(_, k)| k.of(d).is_some())
    })
}

pub(super) async fn back_off(inner: &Inner, d: &Delivery, pause: Duration) {
    if let Some(limits) = &inner.limits {
        let keyed = limits
            .per_key
            .as_ref()
            .and_then(|(l, k)| Some((l, format!("{}:{}", inner.home, k.of(d)?))));
        let r = match (keyed, &limits.queue) {
            (Some((l, scope)), _) => l.pause(&scope, pause).await,
            (None, Some(l)) => l.pause(&inner.home, pause).await,
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
