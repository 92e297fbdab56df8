//! Gathering the status writes of jobs that start and end at about the same time: one
//! [`Store::get_many`] and one [`Store::write_many`] per batch instead of a read and a
//! write per job.
//!
//! Each [`JobStatuses`] (and its clones: every producer and worker of a backend) has one
//! batcher, a task started at its first write and ended when the last clone is dropped.
//! A request waits while the batch before it is at the store, so batches grow with load
//! and an idle process pays no wait: a lone start is one read and one write, as before.
//! A record appears once per batch (a second request for it goes in the next). An end
//! whose record this process wrote last (its start, or its progress) is written at that
//! version without a read. A write that lost (someone cancelled the job, a duplicate
//! delivery ran it) is done again on its own, reading first, exactly as a single write
//! would be: the batch changes how many round trips are made, never the state machine.

use std::collections::HashSet;
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use super::*;

/// What a request asks.
pub(crate) enum Op {
    Start(StartArgs),
    Finish(End, Option<Box<Written>>),
}

/// What became of it.
pub(crate) enum Done {
    Start(Start, Option<Written>),
    Finished,
    Failed(QueueError),
}

struct Req {
    id: String,
    op: Op,
    reply: oneshot::Sender<Done>,
}

/// The most requests one batch takes.
const MAX_BATCH: usize = 256;

/// A [`JobStatuses`]' batcher: the way to its task, started at the first request.
#[derive(Default)]
pub(crate) struct Batcher {
    tx: OnceLock<Option<mpsc::UnboundedSender<Req>>>,
}

impl Batcher {
    /// Hands `op` on `id`'s record to the batcher's task and waits for its outcome.
    /// `None`: no task took it (there is no runtime to run one in, or its runtime has
    /// ended); the caller then writes on its own.
    pub(super) async fn submit(&self, core: &Arc<Core>, id: &str, op: Op) -> Option<Done> {
        let tx = self
            .tx
            .get_or_init(|| {
                let runtime = tokio::runtime::Handle::try_current().ok()?;
                let (tx, rx) = mpsc::unbounded_channel();
                runtime.spawn(run(core.clone(), rx));
                Some(tx)
            })
            .as_ref()?;
        let (reply, rx) = oneshot::channel();
        tx.send(Req {
            id: id.to_string(),
            op,
            reply,
        })
        .ok()?;
        rx.await.ok()
    }
}

/// The batcher's task: takes what has queued up (at most [`MAX_BATCH`]), runs it as one
/// batch, and again, until every sender is gone.
async fn run(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<Req>) {
    let mut carry: Vec<Req> = Vec::new();
    loop {
        let mut reqs = std::mem::take(&mut carry);
        if reqs.is_empty() {
            match rx.recv().await {
                Some(r) => reqs.push(r),
                None => return,
            }
        }
        while reqs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(_) => break,
            }
        }
        // One request per record and batch: a second one waits for the next batch.
        let mut seen = HashSet::new();
        let (now, later): (Vec<Req>, Vec<Req>) =
            reqs.into_iter().partition(|r| seen.insert(r.id.clone()));
        carry = later;
        core.run_batch(now).await;
    }
}

/// One request's plan: the record to write (if any), at which version, and the start's
/// outcome.
struct Plan {
    start: Option<Start>,
    next: Option<JobStatus>,
    expect: Option<u64>,
}

impl Core {
    async fn run_batch(&self, reqs: Vec<Req>) {
        let keys: Vec<String> = reqs.iter().map(|r| key(&r.id)).collect();
        // Reads: every start, and every end whose record this process did not write last.
        let reads: Vec<usize> = (0..reqs.len())
            .filter(|&i| !matches!(reqs[i].op, Op::Finish(_, Some(_))))
            .collect();
        let mut found: Vec<Option<Result<Option<Written>>>> = reqs.iter().map(|_| None).collect();
        if !reads.is_empty() {
            let refs: Vec<&str> = reads.iter().map(|&i| keys[i].as_str()).collect();
            match self.store.get_many(&refs).await {
                Ok(got) => {
                    for (&i, v) in reads.iter().zip(got) {
                        found[i] = Some(match v {
                            Some(v) => decode(&reqs[i].id, &v.value).map(|r| Some((r, v.version))),
                            None => Ok(None),
                        });
                    }
                }
                Err(e) => return fail_all(reqs, &e),
            }
        }
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(reqs.len());
        let mut failed: Vec<Option<QueueError>> = reqs.iter().map(|_| None).collect();
        for (i, r) in reqs.iter().enumerate() {
            let base = match (&r.op, found[i].take()) {
                (Op::Finish(_, Some(w)), _) => Some((**w).clone()),
                (_, Some(Ok(b))) => b,
                (_, Some(Err(e))) => {
                    failed[i] = Some(e);
                    plans.push(None);
                    continue;
                }
                (_, None) => None,
            };
            let expect = base.as_ref().map(|b| b.1);
            let rec = base.map(|b| b.0);
            plans.push(Some(match &r.op {
                Op::Start(a) => {
                    let (start, next) = Self::start_change(&r.id, a, rec);
                    Plan {
                        start: Some(start),
                        next,
                        expect,
                    }
                }
                Op::Finish(e, _) => Plan {
                    start: None,
                    next: Self::end_change(e, rec),
                    expect,
                },
            }));
        }
        // The writes, in one call.
        let mut values: Vec<(usize, Vec<u8>, Duration)> = Vec::new();
        for (i, p) in plans.iter().enumerate() {
            let Some(next) = p.as_ref().and_then(|p| p.next.as_ref()) else {
                continue;
            };
            let ttl = self.retention.for_state(next.state);
            match store::check(&keys[i], ttl).and_then(|()| encode(next)) {
                Ok(v) => values.push((i, v, ttl)),
                Err(e) => failed[i] = Some(e),
            }
        }
        let writes: Vec<store::Write<'_>> = values
            .iter()
            .map(|(i, v, ttl)| {
                let expect = plans[*i].as_ref().and_then(|p| p.expect);
                match expect {
                    Some(version) => store::Write::replace(&keys[*i], version, v, *ttl),
                    None => store::Write::insert(&keys[*i], v, *ttl),
                }
            })
            .collect();
        let mut versions: Vec<Option<Option<u64>>> = reqs.iter().map(|_| None).collect();
        if !writes.is_empty() {
            match self.store.write_many(&writes).await {
                Ok(won) => {
                    for ((i, _, _), v) in values.iter().zip(won) {
                        versions[*i] = Some(v);
                    }
                }
                Err(e) => return fail_all(reqs, &e),
            }
        }
        drop(writes);
        for (i, r) in reqs.into_iter().enumerate() {
            let done = if let Some(e) = failed[i].take() {
                Done::Failed(e)
            } else {
                let plan = plans[i].take();
                match (versions[i], plan) {
                    // Lost to another writer: again on its own, reading first.
                    (Some(None), _) => self.one(&r).await,
                    (Some(Some(v)), Some(p)) => match p.start {
                        Some(Start::Run) => Done::Start(Start::Run, p.next.map(|n| (n, v))),
                        Some(s) => Done::Start(s, None),
                        None => Done::Finished,
                    },
                    // Nothing to write.
                    (None, Some(p)) => match p.start {
                        Some(s) => Done::Start(s, None),
                        None => Done::Finished,
                    },
                    (_, None) => Done::Failed(QueueError::backend("status store", "no plan")),
                }
            };
            let _ = r.reply.send(done);
        }
    }

    /// A request done on its own, as without batches.
    async fn one(&self, r: &Req) -> Done {
        let out = match &r.op {
            Op::Start(a) => self
                .start_one(&r.id, a)
                .await
                .map(|(s, w)| Done::Start(s, w)),
            Op::Finish(e, _) => self.finish_one(&r.id, e).await.map(|()| Done::Finished),
        };
        out.unwrap_or_else(Done::Failed)
    }
}

/// Every request of a batch whose store call failed gets the error.
fn fail_all(reqs: Vec<Req>, e: &QueueError) {
    for r in reqs {
        let _ = r.reply.send(Done::Failed(QueueError::backend(
            "status store",
            e.to_string(),
        )));
    }
}
