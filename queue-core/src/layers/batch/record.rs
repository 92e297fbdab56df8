//! A batch's records in the store and the one state machine that advances them.
//!
//! Keys: `batch:{id}` (the head) holds how many slots were handed out, whether the batch is
//! closed, a summary of each shard, the callbacks with their states and the parent's slot;
//! `batch:{id}:{s}` for `s` in `0..SHARDS` holds two bitmaps over the slots `i` with
//! `i % SHARDS == s`: which succeeded, which were dead-lettered. A job's settlement sets its
//! bit by compare-and-set on its shard, so a duplicate delivery sets nothing new and a batch
//! of any size costs one small write per job, spread over the shards instead of one hot
//! counter.
//!
//! The head learns of a shard only when that shard is complete (every slot of it settled,
//! which is known once the batch is closed), or when a complete shard's dead count moves
//! between zero and more: each report carries the shard's sequence number, and a stale
//! report is ignored. The report that completes the last shard also makes the callbacks
//! due, in the same compare-and-set: only one writer can make that change, so the callbacks
//! are sent once. Whoever made a callback due sends it, then marks it sent.
//!
//! Ordering that keeps this sound: a settlement writes its shard *then* reads the head; a
//! close writes the head (closed) *then* reads every shard. A shard's last settlement is
//! therefore seen by one of the two, whichever came second.
//!
//! Crashes: the worker settles a job before it acks it, so a crash anywhere in between
//! leaves the job to be delivered again; its second settlement finds its bit set, and
//! finishes the reporting and sending the first one began. A callback found due but not
//! sent by a repeated settlement is sent then (a duplicate at worst, which the callback's
//! worker skips once one of them has succeeded).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{QueueError, Result};
use crate::flow::{cut, now_ms, ttl_until, Stored};
use crate::message::{headers, Message};
use crate::store::Store;

use super::{CallbackState, Kind, SHARDS};

/// How many times a compare-and-set on one record is tried before the operation gives up.
const CAS_TRIES: usize = 400;

pub(super) fn head_key(batch: &str) -> String {
    format!("batch:{batch}")
}

pub(super) fn shard_key(batch: &str, shard: u32) -> String {
    format!("batch:{batch}:{shard}")
}

/// What the head knows of one shard, from its last report.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ShardSummary {
    /// The shard's sequence number when it reported.
    #[serde(default)]
    pub(super) seq: u64,
    /// Every slot of the shard has settled.
    #[serde(default)]
    pub(super) done: bool,
    /// Some slot of it is dead-lettered.
    #[serde(default)]
    pub(super) dead: bool,
}

/// A callback job, as kept until it is sent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Callback {
    pub(super) kind: Kind,
    pub(super) q: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) job: Option<String>,
    /// Its message id, fixed when the batch was opened.
    pub(super) id: String,
    pub(super) m: Stored,
    pub(super) s: CallbackState,
    /// When it became due, Unix ms.
    #[serde(default)]
    pub(super) due_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

impl Callback {
    pub(super) fn message(&self, batch: &str) -> Result<Message> {
        let mut m = self.m.message(&self.id)?;
        m.headers.insert(
            headers::BATCH_CALLBACK.into(),
            format!("{batch}/{}", self.kind.as_str()),
        );
        Ok(m)
    }
}

/// The `batch:{id}` record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    /// When its records expire, milliseconds since the Unix epoch.
    pub(super) exp: u64,
    /// When it was opened, Unix ms.
    pub(super) at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) desc: Option<String>,
    /// Slots handed out so far (jobs added and child batches opened).
    pub(super) n: u32,
    pub(super) closed: bool,
    /// Every slot has settled (and the batch is closed): `on_complete` is due.
    #[serde(default)]
    pub(super) complete: bool,
    /// Complete with no slot dead: `on_success` is due.
    #[serde(default)]
    pub(super) success: bool,
    pub(super) shards: Vec<ShardSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) cbs: Vec<Callback>,
    /// The parent batch and this batch's slot in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) parent: Option<(String, u32)>,
    /// How deep it is nested (0: no parent).
    #[serde(default)]
    pub(super) depth: u8,
    /// The outcome last settled in the parent's slot (true: succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) told: Option<bool>,
}

impl Head {
    pub(super) fn new(exp: u64, desc: Option<String>, cbs: Vec<Callback>) -> Self {
        Head {
            exp,
            at: now_ms(),
            desc,
            n: 0,
            closed: false,
            complete: false,
            success: false,
            shards: vec![ShardSummary::default(); SHARDS as usize],
            cbs,
            parent: None,
            depth: 0,
            told: None,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        let h: Head =
            serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("a batch record: {e}")))?;
        if h.shards.len() != SHARDS as usize {
            return Err(corrupt("a batch record with the wrong number of shards"));
        }
        Ok(h)
    }

    /// Applies a shard's report; true when the head changed. Makes the batch complete (and
    /// successful) when this report finishes it, and the callbacks due with it.
    fn apply(&mut self, shard: u32, report: ShardSummary) -> bool {
        let Some(now) = self.shards.get_mut(shard as usize) else {
            return false;
        };
        // A stale report (an older sequence) is ignored; an equal one changes something
        // only when the close made its shard complete.
        if report.seq < now.seq
            || report.seq == now.seq && (now.done, now.dead) == (report.done, report.dead)
        {
            return false;
        }
        *now = report;
        self.advance();
        true
    }

    /// Moves `complete`, `success` and the callbacks on from what the shards say.
    fn advance(&mut self) {
        if !self.closed || !self.shards.iter().all(|s| s.done) {
            return;
        }
        self.complete = true;
        self.success = self.shards.iter().all(|s| !s.dead);
        for cb in &mut self.cbs {
            let due = match cb.kind {
                Kind::Complete => true,
                Kind::Success => self.success,
            };
            if due && cb.s == CallbackState::Pending {
                cb.s = CallbackState::Due;
                cb.due_at = now_ms();
            }
        }
    }

    /// The outcome to settle in the parent's slot, once the batch and every due callback
    /// have finished: succeeded when no slot is dead and no callback failed. `None` while
    /// something is still to finish.
    pub(super) fn outcome(&self) -> Option<bool> {
        if !self.complete {
            return None;
        }
        let mut ok = self.success;
        for cb in &self.cbs {
            match cb.s {
                CallbackState::Pending => {}
                CallbackState::Due | CallbackState::Sent => return None,
                CallbackState::Succeeded => {}
                CallbackState::Failed => ok = false,
            }
        }
        Some(ok)
    }

    pub(super) fn ttl(&self) -> Duration {
        ttl_until(self.exp)
    }
}

/// How many of the first `n` slots fall in `shard`.
pub(super) fn members(n: u32, shard: u32) -> u32 {
    n / SHARDS + u32::from(shard < n % SHARDS)
}

/// The `batch:{id}:{s}` record.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Shard {
    /// When it expires (its head's expiry), Unix ms.
    pub(super) exp: u64,
    /// Changes made to it so far.
    pub(super) seq: u64,
    /// Bit `j` of word `j / 64`: slot `j * SHARDS + s` succeeded.
    #[serde(default)]
    pub(super) ok: Vec<u64>,
    /// The same for dead-lettered slots. A slot is in one map or neither.
    #[serde(default)]
    pub(super) dead: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) errors: Vec<(u32, String)>,
}

/// The most dead slots whose reasons a shard keeps (the first ones).
const KEPT_ERRORS: usize = 8;

fn bit(map: &[u64], j: u32) -> bool {
    map.get((j / 64) as usize)
        .is_some_and(|w| w & (1 << (j % 64)) != 0)
}

fn set(map: &mut Vec<u64>, j: u32, on: bool) {
    let w = (j / 64) as usize;
    if map.len() <= w {
        if !on {
            return;
        }
        map.resize(w + 1, 0);
    }
    if on {
        map[w] |= 1 << (j % 64);
    } else {
        map[w] &= !(1 << (j % 64));
    }
}

/// Set bits among the first `limit`.
fn ones_below(map: &[u64], limit: u32) -> u32 {
    let full = (limit / 64) as usize;
    let mut n: u32 = map.iter().take(full).map(|w| w.count_ones()).sum();
    if let Some(w) = map.get(full) {
        let rest = limit % 64;
        if rest > 0 {
            n += (w & ((1u64 << rest) - 1)).count_ones();
        }
    }
    n
}

fn ones(map: &[u64]) -> u32 {
    map.iter().map(|w| w.count_ones()).sum()
}

impl Shard {
    pub(super) fn new(exp: u64) -> Self {
        Shard {
            exp,
            ..Shard::default()
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(super) fn ttl(&self) -> Duration {
        ttl_until(self.exp)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("a batch shard: {e}")))
    }

    pub(super) fn succeeded(&self) -> u32 {
        ones(&self.ok)
    }

    pub(super) fn dead_count(&self) -> u32 {
        ones(&self.dead)
    }

    /// Whether slot `j` of this shard has settled, and how.
    pub(super) fn slot(&self, j: u32) -> Option<bool> {
        if bit(&self.ok, j) {
            Some(true)
        } else if bit(&self.dead, j) {
            Some(false)
        } else {
            None
        }
    }

    /// Records slot `j`'s outcome; true when that changed the shard. A success replaces a
    /// death (a job redriven from the dead-letter queue that then succeeds); a death never
    /// replaces a success.
    fn settle(&mut self, j: u32, ok: bool, error: Option<&str>) -> bool {
        match (self.slot(j), ok) {
            (Some(true), _) | (Some(false), false) => false,
            (_, true) => {
                set(&mut self.ok, j, true);
                set(&mut self.dead, j, false);
                self.errors.retain(|(k, _)| *k != j);
                self.seq += 1;
                true
            }
            (None, false) => {
                set(&mut self.dead, j, true);
                if self.errors.len() < KEPT_ERRORS {
                    let why = cut(error.unwrap_or("dead-lettered"), super::MAX_REASON);
                    self.errors.push((j, why));
                }
                self.seq += 1;
                true
            }
        }
    }

    /// This shard's report to a head that has handed out `n` slots.
    fn report(&self, n: u32, shard: u32) -> ShardSummary {
        // Only slots handed out count: a bit past them (a forged header, an old job of
        // an expired batch whose id was reused) cannot complete the shard.
        let m = members(n, shard);
        let dead = ones_below(&self.dead, m);
        ShardSummary {
            seq: self.seq,
            done: ones_below(&self.ok, m) + dead >= m,
            dead: dead > 0,
        }
    }
}

fn corrupt(what: &str) -> QueueError {
    QueueError::InvalidBatch(format!("unreadable store record: {what}"))
}

/// Reads `key`, lets `change` edit it, and writes it back by compare-and-set, again until
/// no other writer came between; returns the record as written (or as found, when
/// `change` said there was nothing to do) and whether it was written. `Ok(None)`: no such
/// record (unknown or expired).
pub(super) async fn update<T>(
    store: &dyn Store,
    key: &str,
    decode: impl Fn(&[u8]) -> Result<T>,
    encode: impl Fn(&T) -> Vec<u8>,
    ttl: impl Fn(&T) -> Duration,
    mut change: impl FnMut(&mut T) -> Result<bool>,
) -> Result<Option<(T, bool)>> {
    for _ in 0..CAS_TRIES {
        let Some(v) = store.get(key).await? else {
            return Ok(None);
        };
        let mut rec = decode(&v.value)?;
        if !change(&mut rec)? {
            return Ok(Some((rec, false)));
        }
        if store
            .replace(key, v.version, &encode(&rec), ttl(&rec))
            .await?
            .is_some()
        {
            return Ok(Some((rec, true)));
        }
        tokio::task::yield_now().await;
    }
    Err(QueueError::backend(
        "batch store",
        format!("batch record {key}: {CAS_TRIES} compare-and-set rounds lost in a row"),
    ))
}

pub(super) async fn update_head(
    store: &dyn Store,
    batch: &str,
    change: impl FnMut(&mut Head) -> Result<bool>,
) -> Result<Option<(Head, bool)>> {
    update(
        store,
        &head_key(batch),
        Head::decode,
        Head::encode,
        Head::ttl,
        change,
    )
    .await
}

/// A slot's outcome, as its batch records it.
#[derive(Debug, Clone)]
pub(crate) enum Settled {
    Succeeded,
    Dead(String),
}

/// How the batch layer sends a callback: `(queue, job name, message)`.
pub(super) type SendFn<'a> =
    &'a (dyn Fn(Option<String>, String, Option<String>, Message) -> SendFut + Sync);
pub(super) type SendFut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// The most levels of nesting a settlement follows up through parents.
const MAX_DEPTH: usize = super::MAX_DEPTH as usize;

/// Records slot `slot` of `batch` as `outcome`, and everything that follows: the shard's
/// report to the head, the callbacks it makes due, and the parent's slot when the batch
/// has finished. Idempotent: a repeat finishes what an interrupted first call began.
pub(super) async fn settle(
    store: &dyn Store,
    batch: &str,
    slot: u32,
    outcome: Settled,
    send: SendFn<'_>,
) -> Result<()> {
    let parent = settle_slot(store, batch, slot, &outcome, send).await?;
    tell(store, batch, parent, send).await
}

/// Settles each parent in turn, up the nesting, and marks each child told.
pub(super) async fn tell(
    store: &dyn Store,
    batch: &str,
    mut parent: Option<Tell>,
    send: SendFn<'_>,
) -> Result<()> {
    let mut child = batch.to_string();
    for _ in 0..MAX_DEPTH {
        let Some(t) = parent else {
            return Ok(());
        };
        let outcome = match t.ok {
            true => Settled::Succeeded,
            false => Settled::Dead(
                "a job of this child batch, or one of its callbacks, was dead-lettered".into(),
            ),
        };
        parent = settle_slot(store, &t.parent, t.slot, &outcome, send).await?;
        update_head(store, &child, |h| {
            // A stale tell (the outcome moved on meanwhile) records nothing.
            Ok(match h.told != Some(t.ok) && h.outcome() == Some(t.ok) {
                false => false,
                true => {
                    h.told = Some(t.ok);
                    true
                }
            })
        })
        .await?;
        child = t.parent;
    }
    tracing::warn!(
        batch,
        "batches nested deeper than {MAX_DEPTH}; the outer ones are not advanced"
    );
    Ok(())
}

/// A finished child batch's outcome, for its slot in its parent.
#[derive(Debug, Clone)]
pub(super) struct Tell {
    parent: String,
    slot: u32,
    ok: bool,
}

/// One level of [`settle`]: the shard, then [`advance`].
async fn settle_slot(
    store: &dyn Store,
    batch: &str,
    slot: u32,
    outcome: &Settled,
    send: SendFn<'_>,
) -> Result<Option<Tell>> {
    let shard = slot % SHARDS;
    let j = slot / SHARDS;
    let (ok, error) = match outcome {
        Settled::Succeeded => (true, None),
        Settled::Dead(why) => (false, Some(why.as_str())),
    };
    let Some((rec, changed)) = update(
        store,
        &shard_key(batch, shard),
        Shard::decode,
        Shard::encode,
        Shard::ttl,
        |s| Ok(s.settle(j, ok, error)),
    )
    .await?
    else {
        tracing::warn!(
            batch,
            slot,
            "a batch job whose batch is unknown or expired; nothing to advance"
        );
        return Ok(None);
    };
    // A repeat (nothing changed) is a delivery whose first settlement may have been cut
    // short: it sends what it finds due.
    advance(store, batch, Some((shard, rec)), !changed, send).await
}

/// Reports `shard` (when given) to the head, sends the callbacks this call made due (and,
/// with `resend`, those due for longer than [`RESEND_AFTER_MS`], whose sender died), and
/// returns the parent's slot to settle when the batch has finished with an outcome its
/// parent was not told yet. A repeat (`resend`) that finds a callback due but not yet
/// stale is an error: its job goes back and looks again later, until the callback is sent.
pub(super) async fn advance(
    store: &dyn Store,
    batch: &str,
    shard: Option<(u32, Shard)>,
    resend: bool,
    send: SendFn<'_>,
) -> Result<Option<Tell>> {
    let Some(v) = store.get(&head_key(batch)).await? else {
        return Ok(None);
    };
    let mut head = Head::decode(&v.value)?;
    let mut made_due = Vec::new();
    if let Some((s, rec)) = &shard {
        if !head.closed {
            // The close reads every shard after it closes the batch.
            return Ok(None);
        }
        let report = rec.report(head.n, *s);
        let summary = head.shards[*s as usize];
        if report.done && (!summary.done || summary.dead != report.dead) {
            let mut made = Vec::new();
            if let Some((h, _)) = update_head(store, batch, |h| {
                let before = states(h);
                let changed = h.apply(*s, report);
                made = became_due(&before, h);
                Ok(changed)
            })
            .await?
            {
                made_due = made;
                head = h;
            }
        }
    }
    let waiting = send_due(store, batch, &mut head, &made_due, send).await?;
    if resend && waiting > 0 {
        return Err(QueueError::backend(
            "batch",
            format!(
                "a callback of batch {batch:?} is due and not marked sent yet; looking again later"
            ),
        ));
    }
    Ok(tell_parent(&head))
}

/// Applies every shard's report at once (a close), sends what is due, and returns the
/// parent's slot to settle if the batch has finished.
pub(super) async fn close(
    store: &dyn Store,
    batch: &str,
    send: SendFn<'_>,
) -> Result<Option<Tell>> {
    let Some((head, _)) = update_head(store, batch, |h| {
        Ok(match h.closed {
            true => false,
            false => {
                h.closed = true;
                true
            }
        })
    })
    .await?
    else {
        return Err(QueueError::InvalidBatch(format!(
            "no batch {batch:?} (unknown, or expired)"
        )));
    };
    let keys: Vec<String> = (0..SHARDS).map(|s| shard_key(batch, s)).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut reports = Vec::with_capacity(SHARDS as usize);
    for (s, v) in store.get_many(&refs).await?.into_iter().enumerate() {
        let Some(v) = v else {
            return Err(QueueError::InvalidBatch(format!(
                "batch {batch:?} expired while it was being closed"
            )));
        };
        reports.push((s as u32, Shard::decode(&v.value)?.report(head.n, s as u32)));
    }
    let mut made = Vec::new();
    let Some((mut head, _)) = update_head(store, batch, |h| {
        let before = states(h);
        let mut changed = false;
        for (s, r) in &reports {
            if r.done {
                changed |= h.apply(*s, *r);
            }
        }
        made = became_due(&before, h);
        Ok(changed)
    })
    .await?
    else {
        return Ok(None);
    };
    if send_due(store, batch, &mut head, &made, send).await? > 0 {
        return Err(QueueError::backend(
            "batch",
            format!(
                "a callback of batch {batch:?} is due and being sent by another call; if that \
                 one died, close the batch again in {} s",
                RESEND_AFTER_MS / 1000
            ),
        ));
    }
    Ok(tell_parent(&head))
}

/// How long a callback may stay due (made due, not yet marked sent) before a repeat
/// settlement or close sends it again: its first sender is taken for dead by then.
pub(super) const RESEND_AFTER_MS: u64 = 30_000;

fn states(h: &Head) -> Vec<CallbackState> {
    h.cbs.iter().map(|c| c.s).collect()
}

/// The callbacks that a write moved from pending to due.
fn became_due(before: &[CallbackState], h: &Head) -> Vec<Kind> {
    h.cbs
        .iter()
        .zip(before)
        .filter(|(c, b)| **b == CallbackState::Pending && c.s == CallbackState::Due)
        .map(|(c, _)| c.kind)
        .collect()
}

/// Sends the due callbacks this call made due (`mine`) and those due for longer than
/// [`RESEND_AFTER_MS`], marking each sent; returns how many it left due (another call is
/// sending them).
async fn send_due(
    store: &dyn Store,
    batch: &str,
    head: &mut Head,
    mine: &[Kind],
    send: SendFn<'_>,
) -> Result<usize> {
    let now = now_ms();
    let (due, left): (Vec<Callback>, Vec<Callback>) = head
        .cbs
        .iter()
        .filter(|c| c.s == CallbackState::Due)
        .cloned()
        .partition(|c| mine.contains(&c.kind) || now.saturating_sub(c.due_at) >= RESEND_AFTER_MS);
    for cb in due {
        send(None, cb.q.clone(), cb.job.clone(), cb.message(batch)?).await?;
        if let Some((h, _)) = update_head(store, batch, |h| {
            Ok(match h.cbs.iter_mut().find(|c| c.kind == cb.kind) {
                Some(c) if c.s == CallbackState::Due => {
                    c.s = CallbackState::Sent;
                    true
                }
                _ => false,
            })
        })
        .await?
        {
            *head = h;
        }
    }
    Ok(left.len())
}

/// Records how callback `kind` of `batch` ended (its worker calls it before it acks or
/// dead-letters the callback job), and tells the parent when that finishes the batch.
pub(super) async fn settle_callback(
    store: &dyn Store,
    batch: &str,
    kind: Kind,
    ok: bool,
    error: Option<&str>,
    send: SendFn<'_>,
) -> Result<()> {
    let Some((head, _)) = update_head(store, batch, |h| {
        let Some(c) = h.cbs.iter_mut().find(|c| c.kind == kind) else {
            return Ok(false);
        };
        let to = match ok {
            true => CallbackState::Succeeded,
            false => CallbackState::Failed,
        };
        // A success is final; a failure may be followed by a redriven success.
        if c.s == to || c.s == CallbackState::Succeeded {
            return Ok(false);
        }
        c.s = to;
        c.error = error.map(|e| cut(e, super::MAX_REASON));
        Ok(true)
    })
    .await?
    else {
        tracing::warn!(batch, "a batch callback whose batch is unknown or expired");
        return Ok(());
    };
    tell(store, batch, tell_parent(&head), send).await
}

/// The parent's slot to settle, when this batch has finished with an outcome its parent
/// was not told yet.
fn tell_parent(head: &Head) -> Option<Tell> {
    let (parent, slot) = head.parent.clone()?;
    let ok = head.outcome()?;
    (head.told != Some(ok)).then_some(Tell { parent, slot, ok })
}
