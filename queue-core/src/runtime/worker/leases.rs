//! Keeping running jobs' leases alive: one extender per receive loop, not a timer per job.
//!
//! A job whose handler does not finish in its first poll registers its receipts here (a
//! [`Held`] guard, dropped when the job ends); one task extends every registered lease
//! each third of the lease. BullMQ renews its locks the same way, from one timer per
//! worker. With 100,000 jobs in flight that is one timer instead of 100,000, and each
//! job's task is smaller by one timer entry.
//!
//! A lease is extended for the first time at most a third of the lease after its job
//! registered (as with the former per-job heartbeat), then every third of the lease while
//! the job runs. A failed extension is logged and counted as a backend error, as before;
//! the job keeps running (its settlement then meets a stale receipt, which the backend
//! refuses, and the message is delivered again). A job that ended while its extension was
//! on the way has a spent receipt: that refusal is not counted.

use super::*;

/// The receipts of the jobs running now that need their leases extended.
#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<u64, Vec<Receipt>>>,
    next: AtomicU64,
}

/// A job's registration; dropping it stops the extensions of its leases.
pub(super) struct Held<'a> {
    leases: &'a Leases,
    id: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.leases.lock().remove(&self.id);
    }
}

/// How many extensions one tick keeps in flight at once (each on its own task).
const PARALLEL: usize = 32;

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Receipt>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `receipts` until the returned guard is dropped.
    pub(super) fn hold<'a>(&'a self, receipts: &[&Receipt]) -> Held<'a> {
        let id = self.next.fetch_add(1, AtomicOrdering::Relaxed);
        let owned = receipts.iter().map(|r| (*r).clone()).collect();
        self.lock().insert(id, owned);
        Held { leases: self, id }
    }

    /// Every registered receipt with its registration, at this instant.
    fn snapshot(&self) -> Vec<(u64, Receipt)> {
        let held = self.lock();
        held.iter()
            .flat_map(|(id, rs)| rs.iter().map(move |r| (*id, r.clone())))
            .collect()
    }

    /// Whether registration `id` is still held (its job still running).
    fn holds(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }
}

/// The interval between two extensions of a lease: a third of it, never under the
/// backend's timer granularity.
pub(super) fn beat(inner: &Inner) -> Duration {
    (inner.config.lease / 3).max(inner.caps.timer_granularity)
}

/// Whether this loop's leases can be extended at all (per-message leases that extend).
pub(super) fn extendable(inner: &Inner) -> bool {
    matches!(inner.caps.lease, LeaseModel::PerMessage { extend: true })
}

/// The extender of one receive loop: every [`beat`], extends each registered lease by a
/// whole lease. Runs until aborted with its loop.
pub(super) async fn extend_leases(inner: Arc<Inner>) {
    let beat = beat(&inner);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    // A tick that came late (a busy runtime) is not made up for with a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let receipts = inner.leases.snapshot();
        if receipts.is_empty() {
            continue;
        }
        let per = receipts.len().div_ceil(PARALLEL);
        let mut calls = JoinSet::new();
        let mut rest = receipts;
        while !rest.is_empty() {
            let part = rest.split_off(rest.len().saturating_sub(per));
            let inner = inner.clone();
            calls.spawn(async move {
                for (id, r) in &part {
                    // A job that ended since the snapshot is settled: its receipt is
                    // spent, and refusing to extend it is no error.
                    if !inner.leases.holds(*id) {
                        continue;
                    }
                    let extended = inner.driver.extend(&inner.name, r, inner.config.lease);
                    if let Err(e) = extended.await {
                        if inner.leases.holds(*id) {
                            backend_error(&inner, "lease extension failed", None, &e);
                        }
                    }
                }
            });
        }
        while calls.join_next().await.is_some() {}
    }
}
