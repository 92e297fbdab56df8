//! Unique jobs: one job per key at a time, whatever the backend, however many producers.
//!
//! A unique send first takes a lock in the shared [`Store`] (the backend's status store,
//! [`crate::Backend::with_status`]): `unique:<queue>:<key>`, inserted only if absent, its
//! value the new job's id. If the lock is held, nothing is sent and the answer is
//! [`Enqueued::Duplicate`] with the holder's id; otherwise the job is sent and carries the
//! lock's name in [`crate::headers::UNIQUE`], so that the worker releases it:
//!
//! | scope | released |
//! |---|---|
//! | [`UniqueScope::WhileQueued`] | when a worker starts the job |
//! | [`UniqueScope::UntilFinished`] | when the job succeeds, is dead-lettered or cancelled (not between retries) |
//! | [`UniqueScope::For`] | when its time is up, whatever the job does |
//!
//! Concurrent sends of one key from any number of processes make one job: the store's
//! insert-if-absent decides. This is not the backend's `dedup_id` (SQS FIFO, Redis,
//! memory), which drops a *resend of the same message* within a window: a unique key
//! names a piece of work, and its scope says for how long a second one is refused.
//!
//! Failure modes, said plainly: a send that fails releases the lock; a producer that
//! crashes between taking the lock and sending leaves the lock until
//! [`Unique::hold_at_most`] (default 24 hours) ends, and the queued scopes are held at most
//! that long too, so a job that waits in the queue longer loses its uniqueness.
//! Releasing reads the lock and deletes it if it still names the job, two steps: a lock
//! that expired and was taken again in between by a new job may be released early.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{QueueError, Result};
use crate::message::{headers, Message, MessageId};
use crate::store::{self, Store};

/// The longest unique key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// How long a unique key refuses a second job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UniqueScope {
    /// While the job waits in the queue (released when a worker starts it).
    WhileQueued,
    /// While it is queued or running, retries included (released when it finishes).
    UntilFinished,
    /// For this long after the send, whatever happens to the job.
    For(Duration),
}

/// A unique key and its scope, checked when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unique {
    key: String,
    scope: UniqueScope,
    hold_at_most: Duration,
}

impl Unique {
    /// A unique `key` (1 to [`MAX_KEY_BYTES`] bytes) held for `scope`. An empty or oversized
    /// key, or a `For` period under 1 ms or over a year, is [`QueueError::InvalidOption`].
    pub fn new(key: impl Into<String>, scope: UniqueScope) -> Result<Self> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(QueueError::InvalidOption(format!(
                "a unique key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
                key.len()
            )));
        }
        if let UniqueScope::For(d) = scope {
            check_period(d)?;
        }
        Ok(Unique {
            key,
            scope,
            hold_at_most: Duration::from_secs(24 * 3600),
        })
    }

    /// The longest a `WhileQueued` or `UntilFinished` lock is held (default 24 hours): the
    /// bound on a lock left by a producer that crashed before sending.
    pub fn hold_at_most(mut self, d: Duration) -> Result<Self> {
        check_period(d)?;
        self.hold_at_most = d;
        Ok(self)
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The scope.
    pub fn scope(&self) -> UniqueScope {
        self.scope
    }

    fn ttl(&self) -> Duration {
        match self.scope {
            UniqueScope::For(d) => d,
            _ => self.hold_at_most,
        }
    }
}

fn check_period(d: Duration) -> Result<()> {
    if d < Duration::from_millis(1) || d > store::MAX_TTL {
        return Err(QueueError::InvalidOption(format!(
            "a unique period must be 1 ms to a year, got {d:?}"
        )));
    }
    Ok(())
}

/// What a unique send did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// The job was sent, with this id.
    New(MessageId),
    /// The key is held: nothing was sent; this is the holder's id.
    Duplicate(MessageId),
}

impl Enqueued {
    /// The id of the job that holds the key: the new one, or the one already there.
    pub fn id(&self) -> &MessageId {
        match self {
            Enqueued::New(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

fn lock_name(queue: &str, key: &str) -> String {
    format!("unique:{queue}:{key}")
}

/// The header value: `<scope>:<lock name>`.
fn header_value(scope: UniqueScope, lock: &str) -> String {
    let s = match scope {
        UniqueScope::WhileQueued => "queued",
        UniqueScope::UntilFinished => "finished",
        UniqueScope::For(_) => "ttl",
    };
    format!("{s}:{lock}")
}

/// Whether a [`headers::UNIQUE`] value is one the framework writes.
pub(crate) fn valid_header(v: &str) -> bool {
    v.split_once(':').is_some_and(|(s, lock)| {
        matches!(s, "queued" | "finished" | "ttl") && lock.starts_with("unique:")
    })
}

/// Takes the locks of `batch` (in order; a key repeated in the batch counts once), and
/// returns which messages to send: `Ok(id)` for a lock taken (the message gets its
/// header), `Err(holder)` for a duplicate.
pub(crate) async fn lock(
    store: &Arc<dyn Store>,
    queue: &str,
    batch: &mut [(Message, Unique)],
) -> Result<Vec<std::result::Result<(), MessageId>>> {
    let mut out = Vec::with_capacity(batch.len());
    for (m, u) in batch.iter_mut() {
        let name = lock_name(queue, &u.key);
        let mut tries = 0;
        let r = loop {
            tries += 1;
            if store
                .insert(&name, m.id.as_str().as_bytes(), u.ttl())
                .await?
                .is_some()
            {
                m.headers
                    .insert(headers::UNIQUE.into(), header_value(u.scope, &name));
                break Ok(());
            }
            match store.get(&name).await? {
                Some(v) => {
                    break Err(MessageId::new(
                        String::from_utf8_lossy(&v.value).into_owned(),
                    ))
                }
                // Expired between the two calls: try to take it again.
                None if tries < 3 => continue,
                None => {
                    return Err(QueueError::backend(
                        "unique store",
                        format!("lock {name} kept changing; try again"),
                    ))
                }
            }
        };
        out.push(r);
    }
    Ok(out)
}

/// Releases the locks a failed send took.
pub(crate) async fn unlock_sent(store: &Arc<dyn Store>, msgs: &[Message]) {
    for m in msgs {
        if let Some(v) = m.headers.get(headers::UNIQUE) {
            release(store, v, m.id.as_str()).await;
        }
    }
}

/// Releases the lock named in header value `v` if it still names job `id`.
pub(crate) async fn release(store: &Arc<dyn Store>, v: &str, id: &str) {
    let Some((_, lock)) = v.split_once(':') else {
        return;
    };
    let r = async {
        if let Some(cur) = store.get(lock).await? {
            if cur.value == id.as_bytes() {
                store.delete(lock).await?;
            }
        }
        Ok::<_, QueueError>(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(lock, id, error = %e, "could not release a unique key; it expires by itself");
    }
}

/// Whether header value `v` is released when the job starts (`true`) or when it
/// finishes (`false`); `None` for a lock left to expire.
pub(crate) fn released_at_start(v: &str) -> Option<bool> {
    match v.split_once(':')?.0 {
        "queued" => Some(true),
        "finished" => Some(false),
        _ => None,
    }
}
