//! Gathering the status writes of jobs that start and end at about the same time: one
//! [`Store::get_many`] and one [`Store::write_many`] per batch instead of a read and a
//! write per job.
//!
//! Each worker has a batcher of its own ([`JobStatuses::for_worker`]): a task on the
//! worker's runtime, started at its first write and ended with the worker. A request waits
//! while the batch before it is at the store, so batches grow with load and an idle
//! worker pays no wait: a lone start is one read and one write, as before. A record
//! appears once per batch (a second request for it goes in the next). An end whose record
//! this process wrote last (its start, or its progress) is written at that version without
//! a read. A write that lost (someone cancelled the job, a duplicate delivery ran it) is
//! done again on its own, reading first, exactly as a single write would be: the batch
//! changes how many round trips are made, never the state machine.
//!
//! A version this process wrote is trusted until the record changes; a record that
//! expired during a run (a retention shorter than the run) and was written again as many
//! times could be overwritten by the run's end: retentions are hours or days, runs are not.

use std::collections::HashSet;
use std::sync::Mutex;

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

/// A worker's batcher: the way to its task, started at the first request (and again if
/// the task is gone).
#[derive(Default)]
pub(crate) struct Batcher {
    tx: Mutex<Option<mpsc::UnboundedSender<Req>>>,
}

/// What [`Batcher::submit`] got.
pub(super) enum Submitted {
    Done(Done),
    /// No task took the request (there is no runtime to run one in): nothing was written,
    /// the caller writes on its own.
    NotTaken(Op),
}

impl Batcher {
    /// Hands `op` on `id`'s record to the batcher's task and waits for its outcome.
    pub(super) async fn submit(&self, core: &Arc<Core>, id: &str, op: Op) -> Submitted {
        let tx = {
            let mut slot = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        return Submitted::NotTaken(op);
                    };
                    let (tx, rx) = mpsc::unbounded_channel();
                    runtime.spawn(run(core.clone(), rx));
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        let req = Req {
            id: id.to_string(),
            op,
            reply,
        };
        if let Err(mpsc::error::SendError(req)) = tx.send(req) {
            return Submitted::NotTaken(req.op);
        }
        // Taken, then dropped unanswered (the task's runtime ended): it may have been
        // written, so it is not done again (a start done twice would count a crash).
        rx.await.map(Submitted::Done).unwrap_or_else(|_| {
            Submitted::Done(Done::Failed(QueueError::backend(
                "status store",
                "the status batcher stopped before it answered",
            )))
        })
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
    async fn run_batch(self: &Arc<Self>, reqs: Vec<Req>) {
        let keys: Vec<String> = reqs.iter().map(|r| key(&r.id)).collect();
        let mut failed: Vec<Option<QueueError>> = reqs.iter().map(|_| None).collect();
        // Reads: every start, and every end whose record this process did not write last.
        let reads: Vec<usize> = (0..reqs.len())
            .filter(|&i| !matches!(reqs[i].op, Op::Finish(_, Some(_))))
            .collect();
        let mut found: Vec<Option<Written>> = reqs.iter().map(|_| None).collect();
        if !reads.is_empty() {
            let refs: Vec<&str> = reads.iter().map(|&i| keys[i].as_str()).collect();
            let got = self.store.get_many(&refs).await.and_then(|got| {
                if got.len() == refs.len() {
                    Ok(got)
                } else {
                    Err(short_answer(refs.len(), got.len()))
                }
            });
            match got {
                Ok(got) => {
                    for (&i, v) in reads.iter().zip(got) {
                        match v.map(|v| decode(&reqs[i].id, &v.value).map(|r| (r, v.version))) {
                            Some(Ok(w)) => found[i] = Some(w),
                            Some(Err(e)) => failed[i] = Some(e),
                            None => {}
                        }
                    }
                }
                // The requests that needed the read fail with it; the others go on.
                Err(e) => spread(&mut failed, &reads, e),
            }
        }
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            if failed[i].is_some() {
                plans.push(None);
                continue;
            }
            let base = match &r.op {
                Op::Finish(_, Some(w)) => Some((**w).clone()),
                _ => found[i].take(),
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
            .map(
                |(i, v, ttl)| match plans[*i].as_ref().and_then(|p| p.expect) {
                    Some(version) => store::Write::replace(&keys[*i], version, v, *ttl),
                    None => store::Write::insert(&keys[*i], v, *ttl),
                },
            )
            .collect();
        let mut versions: Vec<Option<Option<u64>>> = reqs.iter().map(|_| None).collect();
        if !writes.is_empty() {
            let won = self.store.write_many(&writes).await.and_then(|won| {
                if won.len() == writes.len() {
                    Ok(won)
                } else {
                    Err(short_answer(writes.len(), won.len()))
                }
            });
            match won {
                Ok(won) => {
                    for ((i, _, _), v) in values.iter().zip(won) {
                        versions[*i] = Some(v);
                    }
                }
                // Some may have landed: not done again (a start twice counts a crash).
                Err(e) => {
                    let at: Vec<usize> = values.iter().map(|(i, _, _)| *i).collect();
                    spread(&mut failed, &at, e);
                }
            }
        }
        drop(writes);
        for (i, r) in reqs.into_iter().enumerate() {
            let done = match (failed[i].take(), versions[i], plans[i].take()) {
                (Some(e), _, _) => Done::Failed(e),
                // Lost to another writer: again on its own, reading first, beside the
                // batches that follow.
                (None, Some(None), _) => {
                    let core = self.clone();
                    tokio::spawn(async move {
                        let done = core.one(&r.id, &r.op).await;
                        let _ = r.reply.send(done);
                    });
                    continue;
                }
                (None, Some(Some(v)), Some(p)) => match p.start {
                    Some(Start::Run) => Done::Start(Start::Run, p.next.map(|n| (n, v))),
                    Some(s) => Done::Start(s, None),
                    None => Done::Finished,
                },
                // Nothing to write.
                (None, None, Some(p)) => match p.start {
                    Some(s) => Done::Start(s, None),
                    None => Done::Finished,
                },
                (None, _, None) => Done::Failed(QueueError::backend("status store", "no plan")),
            };
            let _ = r.reply.send(done);
        }
    }

    /// A request done on its own, as without batches.
    async fn one(&self, id: &str, op: &Op) -> Done {
        let out = match op {
            Op::Start(a) => self.start_one(id, a).await.map(|(s, w)| Done::Start(s, w)),
            Op::Finish(e, _) => self.finish_one(id, e).await.map(|()| Done::Finished),
        };
        out.unwrap_or_else(Done::Failed)
    }
}

/// Gives `e` to the first of the requests at `at`, and its text to the others.
fn spread(failed: &mut [Option<QueueError>], at: &[usize], e: QueueError) {
    let text = e.to_string();
    let mut e = Some(e);
    for &i in at {
        failed[i] = Some(
            e.take()
                .unwrap_or_else(|| QueueError::backend("status store", text.clone())),
        );
    }
}
