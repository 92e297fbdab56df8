//! Debounce and replace: of the jobs sent under one key, only the last runs (BullMQ's
//! deduplication modes `extend` and `replace`, Sidekiq Enterprise's debounced jobs).
//! Throttling, the third mode, is [`crate::unique`]: while a job holds its key, a second
//! is dropped ([`UniqueScope::UntilFinished`](crate::unique::UniqueScope::UntilFinished),
//! or for a time with [`UniqueScope::For`](crate::unique::UniqueScope::For)).
//!
//! - [`Producer::debounce`](crate::Producer::debounce)`(job, key, delay)`: the job runs
//!   `delay` after the *last* send under `key`; each new send pushes the run back and
//!   replaces the data (a search index refreshed once typing stops).
//! - [`Producer::replace_pending`](crate::Producer::replace_pending)`(job, key, delay)`:
//!   the job replaces the pending one's data, and keeps its schedule; with none pending, it
//!   runs after `delay` (a settings sync that sends the latest settings at the time first
//!   planned).
//!
//! How, on every backend: each send under a key takes the next number in the key's
//! record in the shared store (`debounce:<queue>:<key>`: the last number, its job's id and
//! when it is due) and carries it in [`crate::headers::DEBOUNCE`]. Every job is sent with
//! its delay; a worker that receives one whose number is behind the record's acks it
//! without running it ([`WorkerReport::superseded`](crate::WorkerReport::superseded); job
//! status: `cancelled`, "superseded"). So the queue may hold the replaced jobs until
//! their time comes, and what runs is the last one.
//!
//! Order of a send: the job is sent, then the record moves to it. A producer that dies in
//! between leaves the record on the previous job, which then runs, and so does the new
//! one: a duplicate, never a loss. A send that fails leaves the record as it was. Two
//! producers sending under one key at the same instant may take the same number: both
//! jobs run. The record lives for the delay plus [`HOLD`]; a key not used for that long
//! starts afresh. Cost: one store read and one compare-and-set per send, one read per run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{QueueError, Result};
use crate::flow::now_ms;
use crate::message::{headers, Message, MessageId};
use crate::store::{Store, MAX_TTL};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// How long a key's record outlives its last job's due time.
pub const HOLD: Duration = Duration::from_secs(24 * 3600);

#[derive(Serialize, Deserialize, Debug)]
struct Rec {
    /// The last send's number.
    seq: u64,
    /// Its job's id.
    id: String,
    /// When it is due, Unix ms.
    due: u64,
}

fn record_key(scope: &str) -> String {
    format!("debounce:{scope}")
}

/// The header: `<number>/<queue>:<key>`.
fn parse(v: &str) -> Option<(u64, &str)> {
    let (seq, scope) = v.split_once('/')?;
    Some((seq.parse().ok()?, scope)).filter(|(_, s)| !s.is_empty())
}

/// Whether `v` is a well-formed [`headers::DEBOUNCE`] value.
pub(crate) fn valid_header(v: &str) -> bool {
    parse(v).is_some()
}

/// Sends `m` under `key` on `producer`'s queue. `keep_schedule`: replace mode (a pending
/// job's due time is kept).
pub(crate) async fn send(
    producer: &crate::Producer,
    mut m: Message,
    job: Option<&str>,
    key: &str,
    delay: Duration,
    keep_schedule: bool,
) -> Result<MessageId> {
    let backend = producer.queue().backend();
    let store = backend.store().ok_or(QueueError::NoStatusStore)?.clone();
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(QueueError::InvalidOption(format!(
            "a debounce key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    let ttl = delay
        .checked_add(HOLD)
        .filter(|t| *t <= MAX_TTL)
        .ok_or_else(|| {
            QueueError::InvalidOption(format!("a debounce delay of {delay:?} is over a year"))
        })?;
    let scope = format!("{}:{key}", producer.queue().name());
    let rk = record_key(&scope);
    let now = now_ms();
    let found = match store.get(&rk).await? {
        Some(v) => serde_json::from_slice::<Rec>(&v.value).ok(),
        None => None,
    };
    let delay = match &found {
        Some(r) if keep_schedule && r.due > now => Duration::from_millis(r.due - now),
        _ => delay,
    };
    let seq = found.as_ref().map_or(0, |r| r.seq) + 1;
    m.delay = (!delay.is_zero()).then_some(delay);
    m.headers
        .insert(headers::DEBOUNCE.into(), format!("{seq}/{scope}"));
    let id = m.id.clone();
    producer.send_named(vec![m], job).await?;
    let rec = Rec {
        seq,
        id: id.as_str().to_string(),
        due: now.saturating_add(delay.as_millis().min(u128::from(u64::MAX)) as u64),
    };
    let bytes = serde_json::to_vec(&rec).unwrap_or_default();
    // Move the record to this job, unless a later send got there first.
    for _ in 0..100 {
        let written = match store.get(&rk).await? {
            None => store.insert(&rk, &bytes, ttl).await?,
            Some(v) => match serde_json::from_slice::<Rec>(&v.value) {
                Ok(r) if r.seq >= seq => return Ok(id),
                _ => store.replace(&rk, v.version, &bytes, ttl).await?,
            },
        };
        if written.is_some() {
            return Ok(id);
        }
        tokio::task::yield_now().await;
    }
    Err(QueueError::backend(
        "debounce store",
        format!("{rk}: 100 compare-and-set rounds lost in a row (the job {id} was sent)"),
    ))
}

/// Whether a delivery carrying [`headers::DEBOUNCE`] `v` was superseded by a later send
/// under its key (one store read).
pub(crate) async fn superseded(store: &dyn Store, v: &str) -> Result<bool> {
    let Some((seq, scope)) = parse(v) else {
        return Ok(false);
    };
    Ok(match store.get(&record_key(scope)).await? {
        Some(v) => serde_json::from_slice::<Rec>(&v.value).is_ok_and(|r| r.seq > seq),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(parse("3/q:user-1"), Some((3, "q:user-1")));
        assert_eq!(parse("3/q:a/b"), Some((3, "q:a/b")));
        assert_eq!(parse("x/q:a"), None);
        assert_eq!(parse("3/"), None);
        assert_eq!(parse("3"), None);
    }
}
