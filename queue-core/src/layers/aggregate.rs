//! Aggregation: jobs that share a group key handed to one handler call, in sets of up to
//! N, once a set reaches its minimum size or its oldest job has waited long enough
//! (Asynq's task aggregation, BullMQ Pro's batches with `minSize` and `timeout`). Each job
//! is still settled on its own: the handler returns the ones that failed, and each of
//! those is retried or dead-lettered by itself.
//!
//! An [`Aggregate`] turns a set handler into a batch handler for
//! [`Worker::handle_batch`](crate::Worker::handle_batch), so it works on every backend:
//!
//! ```
//! use std::time::Duration;
//! use queue_core::aggregate::Aggregate;
//! use queue_core::{Delivery, ItemFailure};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! let backend = queue_core::connect("memory://").await?;
//! backend.queue("emails").create().await?;
//! // One digest e-mail per user: up to 50 notifications, sent once 50 are waiting or
//! // when the first has waited a minute.
//! let digest = Aggregate::new(50)?
//!     .max_wait(Duration::from_secs(60))?
//!     .by_header("user");
//! let worker = backend.queue("emails").worker()
//!     .concurrency(8) // receives that may wait in sets at once
//!     .handle_batch(digest.handler(|user: String, notes: Vec<Delivery>| async move {
//!         println!("one e-mail to {user} with {} notifications", notes.len());
//!         Vec::<ItemFailure>::new() // all of them succeeded
//!     }))
//!     .start()?;
//! # worker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! How: each receive's deliveries wait, leased (their leases are extended), in their
//! group's set in the worker's memory; the call that completes a set (or the set's timer)
//! runs the handler, and each receive's batch call returns once all its deliveries are
//! settled. So:
//! - sets form within one worker process (a key's jobs spread over several workers form
//!   a set in each);
//! - the worker's [`concurrency`](crate::Worker::concurrency) bounds the receives that
//!   may wait at once: with 1, a set holds the only receive until its time is up;
//! - a job timeout ([`Worker::job_timeout`](crate::Worker::job_timeout)) covers the wait
//!   and the handler's run, so it must be longer than [`Aggregate::max_wait`] plus that;
//!   keep `max_wait` under the shutdown grace as well, or a shutdown gives the waiting
//!   jobs back (they come again). A job given back so leaves its set: it is never handed
//!   over by this worker after.
//! - The group key: a header, the ordering key, or a function of the delivery; a
//!   delivery without the header is grouped under `""`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{QueueError, Result};
use crate::message::Delivery;
use crate::{ItemFailure, JobError};

/// The largest set.
pub const MAX_SIZE: usize = 10_000;
/// The longest `max_wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

type KeyFn = Arc<dyn Fn(&Delivery) -> String + Send + Sync>;
type Outcome = Option<JobError>;
type SetFut = Pin<Box<dyn Future<Output = Vec<ItemFailure>> + Send>>;
type SetFn = Arc<dyn Fn(String, Vec<Delivery>) -> SetFut + Send + Sync>;

/// How jobs are grouped into sets, and when a set is handed over. See [`crate::aggregate`].
#[derive(Clone)]
pub struct Aggregate {
    max_size: usize,
    min_size: usize,
    max_wait: Duration,
    key: KeyFn,
}

impl std::fmt::Debug for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregate")
            .field("max_size", &self.max_size)
            .field("min_size", &self.min_size)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

fn invalid(what: String) -> QueueError {
    QueueError::InvalidOption(what)
}

impl Aggregate {
    /// Sets of at most `max_size` jobs (1 to [`MAX_SIZE`]), handed over when they are
    /// full or when their oldest job has waited one second; grouped by ordering key.
    pub fn new(max_size: usize) -> Result<Self> {
        if max_size == 0 || max_size > MAX_SIZE {
            return Err(invalid(format!(
                "an aggregate's size must be 1 to {MAX_SIZE}, got {max_size}"
            )));
        }
        Ok(Aggregate {
            max_size,
            min_size: max_size,
            max_wait: Duration::from_secs(1),
            key: Arc::new(|d: &Delivery| d.ordering_key.clone().unwrap_or_default()),
        })
    }

    /// Hand a set over as soon as it holds `n` jobs (1 to the maximum size; by default the
    /// maximum size itself).
    pub fn min_size(mut self, n: usize) -> Result<Self> {
        if n == 0 || n > self.max_size {
            return Err(invalid(format!(
                "an aggregate's minimum size must be 1 to its size {}, got {n}",
                self.max_size
            )));
        }
        self.min_size = n;
        Ok(self)
    }

    /// Hand a set over, whatever its size, once its oldest job has waited this long (1 ms
    /// to [`MAX_WAIT`]).
    pub fn max_wait(mut self, wait: Duration) -> Result<Self> {
        if wait < Duration::from_millis(1) || wait > MAX_WAIT {
            return Err(invalid(format!(
                "an aggregate's wait must be 1 ms to {MAX_WAIT:?}, got {wait:?}"
            )));
        }
        self.max_wait = wait;
        Ok(self)
    }

    /// Groups by the value of header `name`.
    pub fn by_header(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.key = Arc::new(move |d: &Delivery| d.headers.get(&name).cloned().unwrap_or_default());
        self
    }

    /// Groups by a function of the delivery.
    pub fn by(mut self, key: impl Fn(&Delivery) -> String + Send + Sync + 'static) -> Self {
        self.key = Arc::new(key);
        self
    }

    /// The batch handler for [`Worker::handle_batch`](crate::Worker::handle_batch) that
    /// calls `f` with each set's key and deliveries; `f` returns the ones that failed (by
    /// their index in the set).
    pub fn handler<F, Fut>(
        self,
        f: F,
    ) -> impl Fn(Vec<Delivery>) -> Pin<Box<dyn Future<Output = Vec<ItemFailure>> + Send>>
           + Send
           + Sync
           + 'static
    where
        F: Fn(String, Vec<Delivery>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<ItemFailure>> + Send + 'static,
    {
        let f: SetFn = Arc::new(move |k, ds| Box::pin(f(k, ds)));
        let sets = Arc::new(Sets {
            rule: self,
            f,
            groups: Mutex::new(HashMap::new()),
        });
        move |batch: Vec<Delivery>| {
            let sets = sets.clone();
            Box::pin(async move { sets.take(batch).await })
        }
    }
}

/// A group's set being gathered.
struct Group {
    items: Vec<(Delivery, oneshot::Sender<Outcome>)>,
    /// Which gathering this is: a timer hands over only the one it was started for.
    generation: u64,
}

struct Sets {
    rule: Aggregate,
    f: SetFn,
    groups: Mutex<HashMap<String, Group>>,
}

impl Sets {
    /// Adds a receive's deliveries to their sets; returns once each is settled.
    async fn take(self: Arc<Self>, batch: Vec<Delivery>) -> Vec<ItemFailure> {
        let mut waits = Vec::with_capacity(batch.len());
        let mut ready = Vec::new();
        let mut timers = Vec::new();
        {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            for d in batch {
                let key = (self.rule.key)(&d);
                let (tx, rx) = oneshot::channel();
                waits.push(rx);
                let g = groups.entry(key.clone()).or_insert_with(|| Group {
                    items: Vec::new(),
                    generation: fastrand::u64(..),
                });
                // Jobs whose receive gave up waiting (a job timeout, a forced shutdown) were
                // given back: they leave the set.
                g.items.retain(|(_, tx)| !tx.is_closed());
                if g.items.is_empty() {
                    g.generation = g.generation.wrapping_add(1);
                    timers.push((key.clone(), g.generation));
                }
                g.items.push((d, tx));
                while g.items.len() >= self.rule.min_size {
                    let n = g.items.len().min(self.rule.max_size);
                    ready.push((key.clone(), g.items.drain(..n).collect::<Vec<_>>()));
                }
                if g.items.is_empty() {
                    // Its timer, if any, finds no group and does nothing.
                    groups.remove(&key);
                }
            }
        }
        for (key, items) in ready {
            tokio::spawn(run(self.f.clone(), key, items));
        }
        for (key, generation) in timers {
            let sets = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(sets.rule.max_wait).await;
                let items = {
                    let mut groups = sets.groups.lock().unwrap_or_else(|p| p.into_inner());
                    match groups.get_mut(&key) {
                        Some(g) if g.generation == generation && !g.items.is_empty() => {
                            let items: Vec<_> = g.items.drain(..).collect();
                            groups.remove(&key);
                            items
                        }
                        _ => return,
                    }
                };
                let mut items = items;
                while !items.is_empty() {
                    let rest = items.split_off(items.len().min(sets.rule.max_size));
                    tokio::spawn(run(sets.f.clone(), key.clone(), items));
                    items = rest;
                }
            });
        }
        let mut failures = Vec::new();
        for (i, rx) in waits.into_iter().enumerate() {
            match rx.await {
                Ok(None) => {}
                Ok(Some(e)) => failures.push(ItemFailure::new(i, e)),
                Err(_) => failures.push(ItemFailure::new(
                    i,
                    JobError::retry("the aggregate's handler panicked"),
                )),
            }
        }
        failures
    }
}

/// Runs the handler on one set and tells each job's receive how it went.
async fn run(f: SetFn, key: String, items: Vec<(Delivery, oneshot::Sender<Outcome>)>) {
    // A job whose receive gave up waiting was given back: it is not handed over.
    let (deliveries, senders): (Vec<Delivery>, Vec<_>) =
        items.into_iter().filter(|(_, tx)| !tx.is_closed()).unzip();
    if deliveries.is_empty() {
        return;
    }
    let n = deliveries.len();
    let mut failed: HashMap<usize, JobError> = f(key, deliveries)
        .await
        .into_iter()
        .filter(|x| x.index < n)
        .map(|x| (x.index, x.error))
        .collect();
    for (i, tx) in senders.into_iter().enumerate() {
        let _ = tx.send(failed.remove(&i));
    }
}
