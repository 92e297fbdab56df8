//! What applications and operators do with a batch: open it, add to it, close it, read it;
//! and the worker's entries to settle a job or a callback of one.

use std::time::{Duration, SystemTime};

use crate::error::{QueueError, Result};
use crate::handle::Backend;
use crate::job::Job;
use crate::message::{headers, Message, MessageId};
use crate::producer::job_message;
use crate::store::{Store, Write, MAX_TTL};
use crate::SendOptions;

use super::record::{self, head_key, shard_key, Callback, Head, Settled, Shard};
use super::{CallbackState, Kind, DEFAULT_RETENTION, MAX_ID_LEN, MAX_SLOTS, SHARDS};

/// The longest description (bytes).
const MAX_DESCRIPTION: usize = 1024;

/// Opens a batch: its id, description, retention and callbacks
/// ([`Backend::new_batch`], [`Batch::child`]).
#[derive(Debug)]
#[must_use = "a batch is opened by BatchBuilder::open"]
pub struct BatchBuilder {
    backend: Backend,
    id: String,
    desc: Option<String>,
    retention: Duration,
    cbs: Vec<(Kind, String, Option<String>, Message)>,
    parent: Option<String>,
    mistakes: Vec<String>,
}

/// An open (or closed) batch: add jobs to it, close it, read it.
#[derive(Clone, Debug)]
pub struct Batch {
    backend: Backend,
    id: String,
}

/// A callback's state, as [`Backend::batch_status`] reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CallbackStatus {
    /// Which one.
    pub kind: Kind,
    /// Its queue.
    pub queue: String,
    /// Its job's name (`None` for a raw message).
    pub job: Option<String>,
    /// Its message id (job status and the dead-letter queue know it by it).
    pub id: MessageId,
    /// Where it stands.
    pub state: CallbackState,
    /// Why it failed.
    pub error: Option<String>,
}

/// A batch's counts and callbacks ([`Backend::batch_status`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BatchStatus {
    /// Its id.
    pub id: String,
    /// Its description, if it was given one.
    pub description: Option<String>,
    /// When it was opened.
    pub opened_at: SystemTime,
    /// Slots handed out: jobs added, and child batches opened.
    pub total: u32,
    /// Slots that succeeded.
    pub succeeded: u32,
    /// Slots that were dead-lettered (or whose child batch had a dead job or callback).
    pub dead: u32,
    /// Whether it is closed (takes no more jobs).
    pub closed: bool,
    /// Closed, and every slot settled: `on_complete` was due.
    pub complete: bool,
    /// Complete with no dead slot: `on_success` was due.
    pub success: bool,
    /// Its callbacks.
    pub callbacks: Vec<CallbackStatus>,
    /// The batch it is a child of.
    pub parent: Option<String>,
    /// The first dead slots' errors (a few per shard): `(slot, error)`.
    pub errors: Vec<(u32, String)>,
}

impl BatchStatus {
    /// Slots not settled yet.
    pub fn pending(&self) -> u32 {
        self.total.saturating_sub(self.succeeded + self.dead)
    }

    /// Complete, and every due callback has settled: nothing more will happen (unless a
    /// dead job is redriven).
    pub fn is_finished(&self) -> bool {
        self.complete
            && self
                .callbacks
                .iter()
                .all(|c| !matches!(c.state, CallbackState::Due | CallbackState::Sent))
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Backend {
    /// Starts a batch ([`crate::batch`]): set its callbacks, then
    /// [`open`](BatchBuilder::open) it.
    pub fn new_batch(&self) -> BatchBuilder {
        BatchBuilder {
            backend: self.clone(),
            id: MessageId::random().into_string(),
            desc: None,
            retention: DEFAULT_RETENTION,
            cbs: Vec::new(),
            parent: None,
            mistakes: Vec::new(),
        }
    }

    /// The batch `id`, opened earlier (by this process or another), to add to or close.
    /// Nothing is read: an unknown id shows at the first add or close.
    pub fn batch(&self, id: impl Into<String>) -> Batch {
        Batch {
            backend: self.clone(),
            id: id.into(),
        }
    }

    /// Batch `id`'s counts and callbacks; `Ok(None)` for an unknown or expired batch,
    /// [`QueueError::NoStatusStore`] without a shared store.
    pub async fn batch_status(&self, id: &str) -> Result<Option<BatchStatus>> {
        let store = self.store().ok_or(QueueError::NoStatusStore)?;
        if !valid_id(id) {
            return Ok(None);
        }
        let Some(head) = store.get(&head_key(id)).await? else {
            return Ok(None);
        };
        let head = Head::decode(&head.value)?;
        let keys: Vec<String> = (0..SHARDS).map(|s| shard_key(id, s)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (mut succeeded, mut dead, mut errors) = (0, 0, Vec::new());
        for (s, v) in store.get_many(&refs).await?.into_iter().enumerate() {
            let Some(v) = v else {
                return Ok(None); // expiring as we read
            };
            let shard = Shard::decode(&v.value)?;
            succeeded += shard.succeeded();
            dead += shard.dead_count();
            errors.extend(
                shard
                    .errors
                    .into_iter()
                    .map(|(j, e)| (j * SHARDS + s as u32, e)),
            );
        }
        errors.sort_unstable();
        Ok(Some(BatchStatus {
            id: id.to_string(),
            description: head.desc,
            opened_at: SystemTime::UNIX_EPOCH + Duration::from_millis(head.at),
            total: head.n,
            succeeded,
            dead,
            closed: head.closed,
            complete: head.complete,
            success: head.success,
            callbacks: head
                .cbs
                .into_iter()
                .map(|c| CallbackStatus {
                    kind: c.kind,
                    queue: c.q,
                    job: c.job,
                    id: MessageId::new(c.id),
                    state: c.s,
                    error: c.error,
                })
                .collect(),
            parent: head.parent.map(|(p, _)| p),
            errors,
        }))
    }
}

impl BatchBuilder {
    /// An id of your own (1 to [`MAX_ID_LEN`] letters, digits, `-`, `_` or `.`) instead of
    /// a random one. Opening a batch whose id is taken is refused.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        if !valid_id(&id) {
            self.mistakes.push(format!(
                "batch id {id:?}: 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.'"
            ));
        }
        self.id = id;
        self
    }

    /// A description, shown by `queuectl batch` and the dashboard.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        let text = text.into();
        if text.len() > MAX_DESCRIPTION {
            self.mistakes.push(format!(
                "a description of {} bytes: at most {MAX_DESCRIPTION}",
                text.len()
            ));
        }
        self.desc = Some(text);
        self
    }

    /// How long its records live from when it is opened (default [`DEFAULT_RETENTION`],
    /// 1 s to a year).
    pub fn retention(mut self, ttl: Duration) -> Self {
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            self.mistakes
                .push(format!("retention {ttl:?}: from 1 s to {MAX_TTL:?}"));
        }
        self.retention = ttl;
        self
    }

    /// The job to send on `queue` when every job of the batch has succeeded.
    pub fn on_success<J: Job>(self, queue: &str, job: &J) -> Self {
        self.callback(Kind::Success, queue, job)
    }

    /// The job to send on `queue` when every job of the batch has finished, succeeded or
    /// dead.
    pub fn on_complete<J: Job>(self, queue: &str, job: &J) -> Self {
        self.callback(Kind::Complete, queue, job)
    }

    /// A raw message as a callback (for a raw handler), with send options of its own.
    pub fn on_message(mut self, kind: Kind, queue: &str, message: Message) -> Self {
        self.push(kind, queue, None, message);
        self
    }

    fn callback<J: Job>(mut self, kind: Kind, queue: &str, job: &J) -> Self {
        match job_message(job, SendOptions::default()) {
            Ok(m) => self.push(kind, queue, Some(J::NAME.to_string()), m),
            Err(e) => self.mistakes.push(format!("{kind} callback: {e}")),
        }
        self
    }

    fn push(&mut self, kind: Kind, queue: &str, job: Option<String>, m: Message) {
        if self.cbs.iter().any(|c| c.0 == kind) {
            self.mistakes.push(format!("two {kind} callbacks"));
        }
        self.cbs.push((kind, queue.to_string(), job, m));
    }

    /// Checks it, writes its records to the shared store, and returns it open.
    ///
    /// [`QueueError::InvalidBatch`] for a mistake (a bad id or retention, two callbacks of
    /// one kind, a callback the backend would refuse or whose queue does not exist, an id
    /// taken, a closed parent), with nothing written; [`QueueError::NoStatusStore`] without
    /// a shared store ([`Backend::with_store`]).
    pub async fn open(self) -> Result<Batch> {
        let store = self
            .backend
            .store()
            .ok_or(QueueError::NoStatusStore)?
            .clone();
        if !self.mistakes.is_empty() {
            return Err(QueueError::InvalidBatch(self.mistakes.join("; ")));
        }
        let exp = crate::flow::now_ms()
            .saturating_add(self.retention.as_millis().min(u64::MAX as u128) as u64);
        let caps = self.backend.capabilities();
        let mut cbs = Vec::with_capacity(self.cbs.len());
        for (kind, q, job, m) in self.cbs {
            let cb = Callback {
                kind,
                q,
                job,
                id: m.id.as_str().to_string(),
                m: crate::flow::Stored::of(&m),
                s: CallbackState::Pending,
                due_at: 0,
                error: None,
            };
            let checked = cb.message(&self.id)?;
            crate::driver::validate(&caps, self.backend.kind(), &checked)
                .map_err(|e| QueueError::InvalidBatch(format!("{kind} callback: {e}")))?;
            queue_exists(&self.backend, &cb.q).await?;
            cbs.push(cb);
        }
        let mut head = Head::new(exp, self.desc, cbs);
        if let Some(parent) = &self.parent {
            let (slot, depth) = self
                .backend
                .batch(parent.clone())
                .allocate_for(1, true)
                .await?;
            head.parent = Some((parent.clone(), slot));
            head.depth = depth + 1;
        }
        let ttl = head.ttl();
        let shards: Vec<Vec<u8>> = (0..SHARDS).map(|_| Shard::new(exp).encode()).collect();
        let shard_keys: Vec<String> = (0..SHARDS).map(|s| shard_key(&self.id, s)).collect();
        let head_bytes = head.encode();
        let hk = head_key(&self.id);
        let mut writes: Vec<Write<'_>> = shard_keys
            .iter()
            .zip(&shards)
            .map(|(k, v)| Write::insert(k, v, ttl))
            .collect();
        writes.push(Write::insert(&hk, &head_bytes, ttl));
        let written = store.write_many(&writes).await;
        let fresh = matches!(&written, Ok(w) if w.iter().all(Option::is_some));
        if !fresh {
            if let Some((parent, slot)) = &head.parent {
                // The slot taken in the parent is settled, so the parent can still finish.
                let why = Settled::Dead("its child batch could not be opened".into());
                if let Err(e) =
                    record::settle(store.as_ref(), parent, *slot, why, &sender(&self.backend)).await
                {
                    tracing::warn!(parent, slot, error = %e, "could not settle the slot of a child batch that failed to open; the parent stays incomplete");
                }
            }
            written?;
            return Err(QueueError::InvalidBatch(format!(
                "the id {:?} is taken by another batch",
                self.id
            )));
        }
        Ok(Batch {
            backend: self.backend,
            id: self.id,
        })
    }
}

async fn queue_exists(backend: &Backend, q: &str) -> Result<()> {
    match backend.queue(q).stats().await {
        Ok(_) => Ok(()),
        Err(QueueError::UnknownQueue(_)) => Err(QueueError::InvalidBatch(format!(
            "queue {q:?} does not exist (create it with Queue::create)"
        ))),
        Err(e) => Err(e),
    }
}

fn sender(
    backend: &Backend,
) -> impl Fn(Option<String>, String, Option<String>, Message) -> record::SendFut + Send + Sync {
    crate::flow::sender(backend)
}

impl Batch {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds typed jobs on `queue`; returns their ids. Refused
    /// ([`QueueError::InvalidBatch`]) once the batch is closed. See [`crate::batch`] for
    /// what a failed send does to the batch.
    pub async fn add<J: Job>(&self, queue: &str, jobs: &[J]) -> Result<Vec<MessageId>> {
        self.add_with(queue, jobs, SendOptions::default()).await
    }

    /// Adds typed jobs with send options (delay, ordering key, priority, ...).
    pub async fn add_with<J: Job>(
        &self,
        queue: &str,
        jobs: &[J],
        opts: SendOptions,
    ) -> Result<Vec<MessageId>> {
        let messages = jobs
            .iter()
            .map(|j| job_message(j, opts.clone()))
            .collect::<Result<Vec<_>>>()?;
        self.add_named(queue, messages, Some(J::NAME)).await
    }

    /// Adds raw messages on `queue` (for a raw handler).
    pub async fn add_messages(
        &self,
        queue: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<MessageId>> {
        self.add_named(queue, messages, None).await
    }

    async fn add_named(
        &self,
        queue: &str,
        mut messages: Vec<Message>,
        job: Option<&str>,
    ) -> Result<Vec<MessageId>> {
        let store = self
            .backend
            .store()
            .ok_or(QueueError::NoStatusStore)?
            .clone();
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // Checked with the longest header they will carry, before any slot is taken.
        let caps = self.backend.capabilities();
        let widest = format!("{}/{}", self.id, MAX_SLOTS - 1);
        if messages.iter().any(|m| m.dedup_id.is_some()) {
            return Err(QueueError::InvalidBatch(
                "a batch's job cannot carry a dedup id: a send the backend drops as a \
                 duplicate would leave its slot pending for ever"
                    .into(),
            ));
        }
        for m in &mut messages {
            m.headers.insert(headers::BATCH.into(), widest.clone());
            crate::driver::validate(&caps, self.backend.kind(), m)?;
        }
        let n = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let (first, _) = self.allocate(n).await?;
        for (i, m) in messages.iter_mut().enumerate() {
            m.headers.insert(
                headers::BATCH.into(),
                format!("{}/{}", self.id, first + i as u32),
            );
        }
        let sent = self
            .backend
            .queue(queue)
            .producer()
            .send_named(messages, job)
            .await;
        if let Err(e) = &sent {
            // Their slots die with the send's error, so the batch can still complete; a
            // job of them that was sent after all and succeeds replaces that.
            let send = sender(&self.backend);
            for slot in first..first + n {
                let why = Settled::Dead(format!("not sent: {e}"));
                if let Err(e2) = record::settle(store.as_ref(), &self.id, slot, why, &send).await {
                    tracing::warn!(batch = self.id, slot, error = %e2, "could not record an unsent batch job");
                }
            }
        }
        sent
    }

    /// Takes `n` slots (`child`: for a child batch); the first one's index, and this
    /// batch's depth.
    async fn allocate(&self, n: u32) -> Result<(u32, u8)> {
        self.allocate_for(n, false).await
    }

    async fn allocate_for(&self, n: u32, child: bool) -> Result<(u32, u8)> {
        let store = self.backend.store().ok_or(QueueError::NoStatusStore)?;
        let mut first = 0;
        let found = record::update_head(store.as_ref(), &self.id, |h| {
            if child && h.depth + 1 > super::MAX_DEPTH {
                return Err(QueueError::InvalidBatch(format!(
                    "batch {:?} is nested {} deep: a child would pass the {} levels a batch may have",
                    self.id,
                    h.depth,
                    super::MAX_DEPTH
                )));
            }
            if h.closed {
                return Err(QueueError::InvalidBatch(format!(
                    "batch {:?} is closed: it takes no more jobs",
                    self.id
                )));
            }
            match h.n.checked_add(n).filter(|t| *t <= MAX_SLOTS) {
                Some(t) => {
                    first = h.n;
                    h.n = t;
                    Ok(true)
                }
                None => Err(QueueError::InvalidBatch(format!(
                    "batch {:?}: {} slots and {n} more is over the {MAX_SLOTS} a batch may hold",
                    self.id, h.n
                ))),
            }
        })
        .await?;
        match found {
            Some((h, _)) => Ok((first, h.depth)),
            None => Err(QueueError::InvalidBatch(format!(
                "no batch {:?} (unknown, or expired)",
                self.id
            ))),
        }
    }

    /// A batch nested in this one: it takes one slot here, which settles when the child
    /// has finished (see [`crate::batch`]). Set its callbacks, then open it.
    pub fn child(&self) -> BatchBuilder {
        let mut b = self.backend.new_batch();
        b.parent = Some(self.id.clone());
        b
    }

    /// Closes the batch: it takes no more jobs, and its callbacks are sent once every job
    /// has settled (at once, if they all have). Idempotent: call it again after an error.
    pub async fn close(&self) -> Result<()> {
        let store = self.backend.store().ok_or(QueueError::NoStatusStore)?;
        let send = sender(&self.backend);
        let parent = record::close(store.as_ref(), &self.id, &send).await?;
        record::tell(store.as_ref(), &self.id, parent, &send).await
    }

    /// Its counts and callbacks ([`Backend::batch_status`]).
    pub async fn status(&self) -> Result<Option<BatchStatus>> {
        self.backend.batch_status(&self.id).await
    }
}

/// The batch and slot (or callback) a delivery's [`headers::BATCH`] (or
/// [`headers::BATCH_CALLBACK`]) names.
pub(crate) fn parse_header(v: &str) -> Option<(&str, &str)> {
    let (batch, tail) = v.rsplit_once('/')?;
    (valid_id(batch) && !tail.is_empty()).then_some((batch, tail))
}

/// Whether `v` is a well-formed value of batch header `k` ([`headers::BATCH`]: a batch id
/// and a slot; [`headers::BATCH_CALLBACK`]: a batch id and a callback's kind).
pub(crate) fn valid_header(k: &str, v: &str) -> bool {
    match parse_header(v) {
        Some((_, slot)) if k == headers::BATCH => slot.parse::<u32>().is_ok_and(|s| s < MAX_SLOTS),
        Some((_, kind)) if k == headers::BATCH_CALLBACK => Kind::parse(kind).is_some(),
        _ => false,
    }
}

/// Records how a batch's job ended (the worker calls it before it acks or dead-letters the
/// job).
pub(crate) async fn settle(backend: &Backend, header: &str, outcome: Settled) -> Result<()> {
    let Some((batch, slot)) = parse_header(header)
        .and_then(|(b, s)| Some((b, s.parse::<u32>().ok()?)))
        .filter(|(_, s)| *s < MAX_SLOTS)
    else {
        tracing::warn!(
            header,
            "a batch header that names no batch; nothing to advance"
        );
        return Ok(());
    };
    let store = backend.store().ok_or(QueueError::NoStatusStore)?;
    record::settle(store.as_ref(), batch, slot, outcome, &sender(backend)).await
}

/// Records how a batch's callback ended.
pub(crate) async fn settle_callback(
    backend: &Backend,
    header: &str,
    ok: bool,
    error: Option<&str>,
) -> Result<()> {
    let Some((batch, kind)) = parse_header(header).and_then(|(b, k)| Some((b, Kind::parse(k)?)))
    else {
        tracing::warn!(
            header,
            "a batch callback header that names no batch; nothing to advance"
        );
        return Ok(());
    };
    let store = backend.store().ok_or(QueueError::NoStatusStore)?;
    record::settle_callback(store.as_ref(), batch, kind, ok, error, &sender(backend)).await
}

/// Whether the job or callback a delivery's batch headers name has succeeded already (a
/// duplicate, to be acked unrun): one store read.
pub(crate) async fn state_of(
    store: &dyn Store,
    member: Option<&str>,
    callback: Option<&str>,
) -> Result<bool> {
    if let Some((batch, slot)) = member
        .and_then(parse_header)
        .and_then(|(b, s)| Some((b, s.parse::<u32>().ok()?)))
    {
        if let Some(v) = store.get(&shard_key(batch, slot % SHARDS)).await? {
            return Ok(Shard::decode(&v.value)?.slot(slot / SHARDS) == Some(true));
        }
        return Ok(false);
    }
    if let Some((batch, kind)) = callback
        .and_then(parse_header)
        .and_then(|(b, k)| Some((b, Kind::parse(k)?)))
    {
        if let Some(v) = store.get(&head_key(batch)).await? {
            let h = Head::decode(&v.value)?;
            return Ok(h
                .cbs
                .iter()
                .any(|c| c.kind == kind && c.s == CallbackState::Succeeded));
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header("b-1/3"), Some(("b-1", "3")));
        assert_eq!(parse_header("b/success"), Some(("b", "success")));
        assert_eq!(parse_header("/3"), None);
        assert_eq!(parse_header("x/"), None);
        assert_eq!(parse_header("a b/3"), None);
    }
}
