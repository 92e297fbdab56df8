//! Flows: jobs that wait for other jobs, and read their results (job dependencies,
//! BullMQ's flows, River's and Oban's workflows). Not to be confused with flow control
//! ([`crate::limit`]).
//!
//! A [`Flow`] is a graph of jobs, each on any queue of the backend: a job runs once every
//! job it depends on has settled, and reads their results through
//! [`JobContext::flow`](crate::JobContext::flow). A job may depend on several (a DAG,
//! which BullMQ's trees cannot say), and each dependency has its own [`OnFailure`]
//! policy. [`Backend::add_flow`] adds it in one call; [`Backend::flow_status`] reads each job's
//! state (`queuectl` and the dashboard show the same).
//!
//! ```
//! use queue_core::flow::{Flow, OnFailure};
//! use queue_core::{Job, JobContext, MemoryStore};
//! use std::sync::Arc;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { cents: u64 }
//! # impl Job for Charge { const NAME: &'static str = "charge"; }
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Email;
//! # impl Job for Email { const NAME: &'static str = "email"; }
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Ship;
//! # impl Job for Ship { const NAME: &'static str = "ship"; }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! // Flows keep their state in the shared store (here the in-memory one).
//! let backend = queue_core::connect("memory://").await?
//!     .with_store(Arc::new(MemoryStore::new()));
//! for q in ["payments", "mail", "shipping"] { backend.queue(q).create().await?; }
//!
//! // Charge, then e-mail and ship; ship only if the charge worked, the e-mail
//! // whatever became of it.
//! let mut flow = Flow::new();
//! let charge = flow.job("payments", &Charge { cents: 4200 })?;
//! let email = flow.job("mail", &Email)?;
//! let ship = flow.job("shipping", &Ship)?;
//! flow.depends_on(email, charge, OnFailure::Ignore);
//! flow.after(ship, &[charge]);
//! let id = backend.add_flow(flow).await?;
//!
//! let payments = backend.queue("payments").worker()
//!     .handle(|_: Charge, ctx: JobContext| async move {
//!         ctx.set_result(&"ch_123");
//!         Ok(())
//!     })
//!     .start()?;
//! let shipping = backend.queue("shipping").worker()
//!     .handle(|_: Ship, ctx: JobContext| async move {
//!         let flow = ctx.flow().expect("a flow's job");
//!         let charges: Vec<String> = flow.results().await?;
//!         assert_eq!(charges, ["ch_123"]);
//!         Ok(())
//!     })
//!     .start()?;
//! # let mail = backend.queue("mail").worker().handle(|_: Email, _| async { Ok(()) }).start()?;
//! # while !backend.flow_status(id.as_str()).await?.unwrap().is_finished() {
//! #     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! # }
//! # payments.shutdown().await; shipping.shutdown().await; mail.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # The model
//! - Each job of a flow is a node with a state: `waiting` (for its dependencies),
//!   `released` (about to be sent), `sent` (in its queue), `succeeded` or `failed`
//!   ([`NodeState`]). Failed means dead-lettered (retries spent, a permanent error, a
//!   dependency's failure under [`OnFailure::Fail`]) or cancelled: retries within a job
//!   are not failures of the flow.
//! - When a job settles, its worker records the outcome and advances the jobs that depend
//!   on it, *before* it acks the job. Each dependency is recorded once, by
//!   compare-and-set on the dependent's record, so a job whose last two dependencies
//!   finish at the same instant in two workers is released once. The worker that releases
//!   a job sends it.
//! - Policies, per dependency ([`OnFailure`]), applied when that dependency fails: `Fail`
//!   (the default) sends the dependent at once to be dead-lettered with the reason
//!   `dependency-failed`, and its own dependents follow their policies in turn; `Ignore`
//!   lets it run once the others have settled, without that result; `Continue` lets it run
//!   at once. A policy acts on a job still waiting: one already released (by a `Continue`
//!   dependency's failure) runs, whatever its other dependencies do after.
//! - Results: a job's [`JobContext::set_result`](crate::JobContext::set_result) value is
//!   kept in its node (with or without job status on); [`FlowContext::results`] and
//!   [`FlowContext::dependencies`] read them.
//! - Across queues: nodes may be on any queue of the backend. Across backends: not yet
//!   (a node names a queue, not a backend).
//!
//! - A job's worker reads its state in the flow before it runs it: one that has finished
//!   already (a duplicate delivery of a job that succeeded, a job of a cancelled flow) is
//!   acked without running, unless it was redriven from the dead-letter queue.
//! - [`Backend::cancel_flow`] fails every unfinished job with the error `cancelled`: those
//!   waiting are never sent, those queued are skipped, those running are asked to stop
//!   (with job status on).
//!
//! # What a crash does
//! - Adding: [`Backend::add_flow`] writes every node's record first, then sends the jobs
//!   with no dependencies, marking each `sent`. Nothing runs before the records exist. A
//!   crash while sending leaves some roots `released` and unsent: add the same flow again
//!   with the same id ([`Flow::with_id`], for instance the order's id) and the call sends
//!   what was not sent and returns the same id; a different flow under an existing id is
//!   refused ([`QueueError::InvalidFlow`]). A random id is known before the call too
//!   ([`Flow::id`]), so any flow can be resumed so, or cancelled.
//! - Settling: a worker that dies after a job ran but before its settlement was recorded
//!   has not acked it either, so the job is delivered again (at least once, as ever), and
//!   the settlement is done again: a dependency already recorded is not counted twice,
//!   and a dependent left `released` but unsent is sent by the repeat of the settlement
//!   that released it. So a crash costs at most a duplicate run of a job (make effects
//!   idempotent, as everywhere), and leaves no flow stuck (`tests/kill_flow.rs` in the
//!   examples SIGKILLs workers in the middle of forty flows). A duplicate can also send a
//!   dependent twice, when it repeats a settlement that is still sending it.
//! - A store that cannot be written when a job settles: the worker tries a few times, then
//!   gives the job back (it runs again later) rather than ack a job whose dependents would
//!   then never run. On SQS each give-back counts toward the queue's `maxReceiveCount`, so
//!   a store down for long enough lets SQS move the job to its dead-letter queue itself,
//!   unsettled: its flow then waits on it until it is redriven.
//! - A job that can never be sent (its queue was deleted, a dependency's failure grew it
//!   past the size limit) fails, and its dependents follow their policies.
//! - A worker whose backend has no shared store never runs a flow's job: it gives it back
//!   (logged and counted as a backend error) for a worker that has the store.
//!
//! Unique keys, idempotency keys and dedup ids are refused on a flow's jobs: each would let
//! a job be skipped or dropped while its flow counts it, and a flow's job runs once in
//! effect without them (its worker reads its state before it runs it).
//!
//! # Limits
//! At most [`MAX_NODES`] jobs per flow and [`MAX_DEPENDENCIES`] dependencies per job; a
//! flow's records live for its retention ([`Flow::retention`], default
//! [`DEFAULT_RETENTION`]) from when it was added. A job that finishes after that advances
//! nothing (logged). A redriven job that then succeeds records its success; what its
//! failure set going stays as it went. A job dead-lettered `dependency-failed` and then
//! redriven runs, with its dependencies' results as they are.

mod record;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{QueueError, Result};
use crate::handle::Backend;
use crate::job::Job;
use crate::message::{headers, Message, MessageId};
use crate::producer::{job_message, SendOptions};
use crate::store::{Store, MAX_TTL};

pub(crate) use record::Outcome;
use record::{flow_key, node_key, FlowRec, NodeRec, Stored};

/// The error a cancelled flow's unfinished jobs carry ([`Backend::cancel_flow`]).
pub const CANCELLED: &str = "cancelled";

/// The most jobs one flow may hold.
pub const MAX_NODES: usize = 5_000;
/// The most dependencies one job of a flow may have. Each settling dependency rewrites its
/// dependent's record, which lists them all, so a job waiting on `n` costs its flow
/// writes that grow as `n²`: a thousand is about 15 MB of store writes in all.
pub const MAX_DEPENDENCIES: usize = 1_000;
/// How long a flow's records live by default: seven days from when it was added.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest flow id ([`Flow::with_id`]).
pub const MAX_ID_LEN: usize = 128;

/// What becomes of a job when one of its dependencies fails (is dead-lettered or
/// cancelled). BullMQ's `failParentOnFailure`, `ignoreDependencyOnFailure` and
/// `continueParentOnFailure`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OnFailure {
    /// It fails too, without running: it is dead-lettered with the reason
    /// `dependency-failed`, at once, and its own dependents follow their policies.
    #[default]
    Fail,
    /// It runs once its other dependencies have settled, without this one's result
    /// ([`Dependency::state`] says it failed).
    Ignore,
    /// It runs at once when this dependency fails, whatever its other dependencies are
    /// doing.
    Continue,
}

/// Where a job of a flow stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeState {
    /// Waiting for its dependencies.
    Waiting,
    /// Released to run (its dependencies have settled, or one's failure released it under
    /// [`OnFailure::Fail`] or [`OnFailure::Continue`]) and being sent.
    Released,
    /// In its queue (or running, or being retried).
    Sent,
    /// Its handler succeeded.
    Succeeded,
    /// Dead-lettered (its own failures, or a dependency's under [`OnFailure::Fail`]) or
    /// cancelled.
    Failed,
}

impl NodeState {
    /// `succeeded` or `failed`: nothing more will happen to it.
    pub fn is_finished(self) -> bool {
        matches!(self, NodeState::Succeeded | NodeState::Failed)
    }

    /// The state's name: `waiting`, `released`, `sent`, `succeeded`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Released => "released",
            NodeState::Sent => "sent",
            NodeState::Succeeded => "succeeded",
            NodeState::Failed => "failed",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's place in its [`Flow`], as [`Flow::job`] returned it. It belongs to that flow:
/// naming it in another is a mistake [`Backend::add_flow`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    index: u32,
    /// Which `Flow` made it (0 for those read back from the store).
    flow: u32,
}

impl NodeId {
    fn read(index: u32) -> Self {
        NodeId { index, flow: 0 }
    }

    /// Its index: the order in which it was added to the flow, from 0.
    pub fn index(self) -> u32 {
        self.index
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.index.fmt(f)
    }
}

/// A flow's id, as [`Backend::add_flow`] returned it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowId(String);

impl FlowId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Draft {
    queue: String,
    job: Option<String>,
    message: Message,
    deps: Vec<(u32, OnFailure)>,
}

/// A graph of jobs to add at once with [`Backend::add_flow`]. See the [module docs](self).
///
/// Mistakes (a dependency on a job not in this flow, on itself, twice on the same job, a
/// cycle, too many jobs) are reported by [`Backend::add_flow`] as
/// [`QueueError::InvalidFlow`], before anything is written or sent.
pub struct Flow {
    id: String,
    /// Tells this flow's [`NodeId`]s from another's (never 0).
    tag: u32,
    nodes: Vec<Draft>,
    retention: Duration,
    mistakes: Vec<String>,
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("id", &self.id)
            .field("jobs", &self.nodes.len())
            .field("retention", &self.retention)
            .finish()
    }
}

impl Default for Flow {
    fn default() -> Self {
        Self::new()
    }
}

impl Flow {
    /// An empty flow with a random id ([`Flow::id`]).
    pub fn new() -> Self {
        Flow {
            id: MessageId::random().into_string(),
            tag: fastrand::u32(1..),
            nodes: Vec::new(),
            retention: DEFAULT_RETENTION,
            mistakes: Vec::new(),
        }
    }

    /// An empty flow with an id of your own (1 to [`MAX_ID_LEN`] letters, digits, `-`,
    /// `_` or `.`), such as an order's id: adding it again after a crash resumes it
    /// instead of starting a second one.
    pub fn with_id(id: impl Into<String>) -> Self {
        let id = id.into();
        let mut f = Flow::new();
        let ok = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            f.mistakes.push(format!(
                "flow id {id:?}: 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.'"
            ));
        }
        f.id = id;
        f
    }

    /// Its id: the one [`Backend::add_flow`] returns, known before the call so that a
    /// flow whose add failed halfway can be found ([`Backend::flow_status`]), cancelled,
    /// or resumed (added again under this id with [`Flow::with_id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How long its records live from when it is added (default [`DEFAULT_RETENTION`],
    /// 1 s to a year): all of them expire at that instant, and jobs that settle later
    /// advance nothing.
    pub fn retention(&mut self, ttl: Duration) -> &mut Self {
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            self.mistakes
                .push(format!("retention {ttl:?}: from 1 s to {MAX_TTL:?}"));
        }
        self.retention = ttl;
        self
    }

    /// Adds a typed job on `queue`; returns its place, to name it in dependencies.
    pub fn job<J: Job>(&mut self, queue: &str, job: &J) -> Result<NodeId> {
        self.job_with(queue, job, SendOptions::default())
    }

    /// Adds a typed job with send options (delay, ordering key, priority, ...).
    pub fn job_with<J: Job>(&mut self, queue: &str, job: &J, opts: SendOptions) -> Result<NodeId> {
        let m = job_message(job, opts)?;
        Ok(self.push(queue, Some(J::NAME.to_string()), m))
    }

    /// Adds a raw message on `queue` (for a raw handler).
    pub fn message(&mut self, queue: &str, message: Message) -> NodeId {
        self.push(queue, None, message)
    }

    fn push(&mut self, queue: &str, job: Option<String>, message: Message) -> NodeId {
        let n = self.nodes.len() as u32;
        self.nodes.push(Draft {
            queue: queue.to_string(),
            job,
            message,
            deps: Vec::new(),
        });
        NodeId {
            index: n,
            flow: self.tag,
        }
    }

    /// `node` runs after `dependency` has settled, under `on_failure`.
    pub fn depends_on(
        &mut self,
        node: NodeId,
        dependency: NodeId,
        on_failure: OnFailure,
    ) -> &mut Self {
        let n = self.nodes.len() as u32;
        if node.flow != self.tag || dependency.flow != self.tag {
            self.mistakes.push(format!(
                "job {node} depends on {dependency}: a job of another flow"
            ));
        } else if node.index >= n || dependency.index >= n {
            self.mistakes.push(format!(
                "job {node} depends on {dependency}: no such job in this flow"
            ));
        } else if node == dependency {
            self.mistakes.push(format!("job {node} depends on itself"));
        } else if self.nodes[node.index as usize]
            .deps
            .iter()
            .any(|(d, _)| *d == dependency.index)
        {
            self.mistakes
                .push(format!("job {node} depends on {dependency} twice"));
        } else {
            self.nodes[node.index as usize]
                .deps
                .push((dependency.index, on_failure));
        }
        self
    }

    /// `node` runs after each of `dependencies` succeeded; if one fails, it fails too
    /// ([`OnFailure::Fail`]).
    pub fn after(&mut self, node: NodeId, dependencies: &[NodeId]) -> &mut Self {
        for d in dependencies {
            self.depends_on(node, *d, OnFailure::Fail);
        }
        self
    }

    /// The number of jobs in it.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no jobs.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Checks the flow and lays out its records.
    fn plan(self, backend: &Backend) -> Result<(String, Vec<NodeRec>, u64, u64)> {
        let mut mistakes = self.mistakes;
        let n = self.nodes.len();
        if n == 0 {
            mistakes.push("the flow has no jobs".into());
        }
        if n > MAX_NODES {
            mistakes.push(format!(
                "{n} jobs in one flow, over the {MAX_NODES} allowed"
            ));
        }
        for (i, d) in self.nodes.iter().enumerate() {
            if d.deps.len() > MAX_DEPENDENCIES {
                mistakes.push(format!(
                    "job {i} has {} dependencies, over the {MAX_DEPENDENCIES} allowed",
                    d.deps.len()
                ));
            }
            for (h, why) in [
                (headers::UNIQUE, "unique jobs cannot be part of a flow"),
                (
                    headers::IDEMPOTENCY_KEY,
                    "idempotency keys are not for a flow's jobs (a completed key would skip a \
                     job, and with it its flow's bookkeeping): each runs once in effect anyway",
                ),
                (headers::FLOW, "the flow header is the framework's"),
                (headers::FLOW_FAILED, "the flow header is the framework's"),
            ] {
                if d.message.headers.contains_key(h) {
                    mistakes.push(format!("job {i}: {why}"));
                }
            }
            if d.message.dedup_id.is_some() {
                mistakes.push(format!(
                    "job {i}: dedup ids are not for a flow's jobs (a duplicate within the \
                     window would be dropped while its flow counts it sent)"
                ));
            }
        }
        if let Some(cycle) = find_cycle(&self.nodes) {
            let path: Vec<String> = cycle.iter().map(|c| c.to_string()).collect();
            mistakes.push(format!("a cycle: {}", path.join(" -> ")));
        }
        if !mistakes.is_empty() {
            return Err(QueueError::InvalidFlow(mistakes.join("; ")));
        }
        let id = self.id;
        let caps = backend.capabilities();
        let mut next: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, d) in self.nodes.iter().enumerate() {
            for (dep, _) in &d.deps {
                next[*dep as usize].push(i as u32);
            }
        }
        let exp = record::now_ms().saturating_add(self.retention.as_millis() as u64);
        let mut shape = Fnv::default();
        let mut recs = Vec::with_capacity(n);
        for (i, (d, next)) in self.nodes.into_iter().zip(next).enumerate() {
            // Checked as it will be sent: with its flow header, and, for a job with
            // dependencies, the longest reason a dependency's failure may give it.
            let mut probe = d.message.clone();
            probe
                .headers
                .insert(headers::FLOW.into(), format!("{id}/{i}"));
            if !d.deps.is_empty() {
                probe
                    .headers
                    .insert(headers::FLOW_FAILED.into(), "x".repeat(record::MAX_REASON));
            }
            crate::driver::validate(&caps, backend.kind(), &probe)
                .map_err(|e| QueueError::InvalidFlow(format!("job {i} on {}: {e}", d.queue)))?;
            shape.add(d.queue.as_bytes());
            shape.add(d.job.as_deref().unwrap_or("").as_bytes());
            shape.add(&d.message.payload);
            for (k, v) in &d.message.headers {
                shape.add(k.as_bytes());
                shape.add(v.as_bytes());
            }
            shape.add(
                &d.message
                    .delay
                    .unwrap_or_default()
                    .as_millis()
                    .to_le_bytes(),
            );
            shape.add(d.message.ordering_key.as_deref().unwrap_or("").as_bytes());
            shape.add(&[d.message.priority.map_or(0, |p| p.saturating_add(1))]);
            for (dep, p) in &d.deps {
                shape.add(&dep.to_le_bytes());
                shape.add(&[*p as u8]);
            }
            recs.push(NodeRec {
                q: d.queue,
                id: d.message.id.as_str().to_string(),
                job: d.job,
                m: Stored::of(&d.message),
                s: if d.deps.is_empty() {
                    NodeState::Released
                } else {
                    NodeState::Waiting
                },
                deps: d.deps,
                next,
                got: Vec::new(),
                failed: Vec::new(),
                doomed: None,
                result: None,
                error: None,
                exp,
            });
        }
        Ok((id, recs, shape.0, exp))
    }
}

/// A cycle among the nodes' dependencies, as a path of node indexes, if there is one.
fn find_cycle(nodes: &[Draft]) -> Option<Vec<u32>> {
    // Depth-first, iteratively (a flow may be a thousand deep): 0 unseen, 1 on the path,
    // 2 done.
    let mut mark = vec![0u8; nodes.len()];
    for start in 0..nodes.len() {
        if mark[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = 1;
        while let Some((at, i)) = path.last_mut() {
            let at = *at;
            match nodes[at].deps.get(*i) {
                Some((dep, _)) => {
                    *i += 1;
                    let dep = *dep as usize;
                    match mark.get(dep) {
                        Some(1) => {
                            let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                            let mut cycle: Vec<u32> =
                                path[from..].iter().map(|(n, _)| *n as u32).collect();
                            cycle.push(dep as u32);
                            return Some(cycle);
                        }
                        Some(0) => {
                            mark[dep] = 1;
                            path.push((dep, 0));
                        }
                        _ => {}
                    }
                }
                None => {
                    mark[at] = 2;
                    path.pop();
                }
            }
        }
    }
    None
}

/// FNV-1a, 64 bits: a digest that stays the same across Rust versions and processes.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(&[0xff]) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A job's state in its flow, as [`Backend::flow_status`] reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Its place in the flow.
    pub node: NodeId,
    /// Its queue.
    pub queue: String,
    /// Its job's name (`None` for a raw message).
    pub job: Option<String>,
    /// Its message id (job status, `queuectl job`, and the dead-letter queue know it by it).
    pub id: MessageId,
    /// Where it stands.
    pub state: NodeState,
    /// What it waits on, with each policy.
    pub dependencies: Vec<(NodeId, OnFailure)>,
    /// Its dependencies that failed so far.
    pub failed_dependencies: Vec<NodeId>,
    /// Its result, once it succeeded (when its handler set one).
    pub result: Option<serde_json::Value>,
    /// Why it failed; or, while it is sent only to be dead-lettered, why.
    pub error: Option<String>,
}

/// Every job of a flow with its state ([`Backend::flow_status`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FlowStatus {
    /// The flow's id.
    pub id: FlowId,
    /// Its jobs, in the order they were added.
    pub nodes: Vec<NodeStatus>,
}

impl FlowStatus {
    /// Whether every job has succeeded or failed.
    pub fn is_finished(&self) -> bool {
        self.nodes.iter().all(|n| n.state.is_finished())
    }

    /// How many jobs are in `state`.
    pub fn count(&self, state: NodeState) -> usize {
        self.nodes.iter().filter(|n| n.state == state).count()
    }
}

fn node_status(i: u32, r: NodeRec) -> NodeStatus {
    NodeStatus {
        node: NodeId::read(i),
        queue: r.q,
        job: r.job,
        id: MessageId::new(r.id),
        state: r.s,
        dependencies: r
            .deps
            .into_iter()
            .map(|(d, p)| (NodeId::read(d), p))
            .collect(),
        failed_dependencies: r.failed.into_iter().map(NodeId::read).collect(),
        result: r.result,
        error: r.error.or(r.doomed),
    }
}

impl Backend {
    /// Adds a flow: checks it, writes its records to the shared store, and sends the jobs
    /// that depend on none; returns its id. See [`crate::flow`] for what a crash midway
    /// does and how adding it again resumes it.
    ///
    /// [`QueueError::InvalidFlow`] for a flow that cannot run (a cycle, a dependency on a
    /// job not in it, too large, a message the backend would refuse), with nothing
    /// written; [`QueueError::NoStatusStore`] without a shared store
    /// ([`Backend::with_store`]).
    pub async fn add_flow(&self, flow: Flow) -> Result<FlowId> {
        let store = self.store().ok_or(QueueError::NoStatusStore)?.clone();
        let (id, mut recs, shape, exp) = flow.plan(self)?;
        // Each queue must exist: a job whose queue is missing could never be sent.
        let mut queues: Vec<&str> = recs.iter().map(|r| r.q.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            match self.queue(q).stats().await {
                Ok(_) => {}
                Err(QueueError::UnknownQueue(_)) => {
                    return Err(QueueError::InvalidFlow(format!(
                        "queue {q:?} does not exist (create it with Queue::create)"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        let head = FlowRec {
            n: recs.len() as u32,
            shape,
            exp,
        };
        let head_bytes = serde_json::to_vec(&head).unwrap_or_default();
        let fresh = store
            .insert(&flow_key(&id), &head_bytes, record::ttl_until(exp))
            .await?
            .is_some();
        if !fresh {
            let found = match store.get(&flow_key(&id)).await? {
                Some(v) => serde_json::from_slice::<FlowRec>(&v.value).ok(),
                None => None,
            };
            match found {
                // A resume: the records expire when the first add said.
                Some(h) if (h.n, h.shape) == (head.n, head.shape) => {
                    for r in &mut recs {
                        r.exp = h.exp;
                    }
                }
                _ => {
                    return Err(QueueError::InvalidFlow(format!(
                        "a different flow already has the id {id:?}"
                    )))
                }
            }
        }
        let entries: Vec<(String, Vec<u8>)> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| (node_key(&id, i as u32), record::encode_new(r)))
            .collect();
        let ttl = record::ttl_until(recs.first().map_or(exp, |r| r.exp));
        let new = record::insert_all(store.as_ref(), &entries, ttl).await?;
        if fresh && new.iter().any(|n| !n) {
            return Err(QueueError::InvalidFlow(format!(
                "records of an earlier flow with the id {id:?} are still in the store"
            )));
        }
        // The roots, as the store holds them (on a resume: as the first add left them).
        let roots: Vec<u32> = (0..recs.len() as u32)
            .filter(|i| recs[*i as usize].deps.is_empty())
            .collect();
        let keys: Vec<String> = roots.iter().map(|i| node_key(&id, *i)).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let send = sender(self);
        for chunk in roots.chunks(256).zip(key_refs.chunks(256)) {
            let found = store.get_many(chunk.1).await?;
            for (i, v) in chunk.0.iter().zip(found) {
                let Some(v) = v else {
                    return Err(QueueError::InvalidFlow(format!(
                        "flow {id:?} expired while it was being added"
                    )));
                };
                let rec = NodeRec::decode(&v)?;
                if rec.s == NodeState::Released {
                    record::send_released(store.as_ref(), &id, *i, &rec, &send).await?;
                }
            }
        }
        Ok(FlowId(id))
    }

    /// Cancels flow `id`: every job of it that has not finished becomes `failed` with the
    /// error `cancelled`. A job still waiting is never sent; one in its queue is skipped
    /// when a worker takes it (acked unrun: its worker reads its state first); one running
    /// now is asked to stop through job status ([`Backend::cancel_job`]: its
    /// [`JobContext::cancelled`](crate::JobContext::cancelled) fires) where job status is
    /// on, and otherwise runs to its end, advancing nothing. Returns how many jobs it
    /// cancelled (0 for a flow already finished); `Ok(None)` for an unknown or expired
    /// flow.
    pub async fn cancel_flow(&self, id: &str) -> Result<Option<usize>> {
        let Some(status) = self.flow_status(id).await? else {
            return Ok(None);
        };
        let store = self.store().ok_or(QueueError::NoStatusStore)?;
        let mut cancelled = 0;
        for n in status.nodes.iter().filter(|n| !n.state.is_finished()) {
            let mut was = None;
            let changed = record::update(store.as_ref(), &node_key(id, n.node.index), |r| {
                was = Some(r.s);
                if r.s.is_finished() {
                    return false;
                }
                r.s = NodeState::Failed;
                r.error = Some(CANCELLED.into());
                true
            })
            .await?;
            if matches!(changed, Some((_, true))) {
                cancelled += 1;
                if was == Some(NodeState::Sent) && self.status().is_some() {
                    // Running, or waiting in its queue: ask it to stop.
                    match self.cancel_job(&n.id).await {
                        Ok(_)
                        | Err(QueueError::JobNotFound(_) | QueueError::JobFinished { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(Some(cancelled))
    }

    /// Every job of flow `id` with its state; `Ok(None)` for an unknown or expired flow,
    /// [`QueueError::NoStatusStore`] without a shared store.
    pub async fn flow_status(&self, id: &str) -> Result<Option<FlowStatus>> {
        let store = self.store().ok_or(QueueError::NoStatusStore)?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Ok(None);
        }
        let Some(head) = store.get(&flow_key(id)).await? else {
            return Ok(None);
        };
        let head: FlowRec = serde_json::from_slice(&head.value)
            .map_err(|e| QueueError::InvalidFlow(format!("flow {id:?}: unreadable record: {e}")))?;
        if head.n as usize > MAX_NODES {
            return Err(QueueError::InvalidFlow(format!(
                "flow {id:?}: its record says {} jobs, over the {MAX_NODES} a flow may hold",
                head.n
            )));
        }
        let keys: Vec<String> = (0..head.n).map(|i| node_key(id, i)).collect();
        let mut nodes = Vec::with_capacity(keys.len());
        for (c, chunk) in keys.chunks(256).enumerate() {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for (j, v) in store.get_many(&refs).await?.into_iter().enumerate() {
                let i = (c * 256 + j) as u32;
                match v {
                    Some(v) => nodes.push(node_status(i, NodeRec::decode(&v)?)),
                    None => return Ok(None), // expiring as we read
                }
            }
        }
        Ok(Some(FlowStatus {
            id: FlowId(id.to_string()),
            nodes,
        }))
    }
}

type SendFut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// How the flow layer sends a node: through the queue's producer, so that job status
/// records it `queued` and the message is checked like any other.
fn sender(backend: &Backend) -> impl Fn(String, Option<String>, Message) -> SendFut {
    let backend = backend.clone();
    move |queue: String, job: Option<String>, m: Message| {
        let backend = backend.clone();
        Box::pin(async move {
            backend
                .queue(queue)
                .producer()
                .send_named(vec![m], job.as_deref())
                .await
                .map(|_| ())
        })
    }
}

/// The flow and node a delivery's [`headers::FLOW`] names.
pub(crate) fn parse_header(v: &str) -> Option<(&str, u32)> {
    let (flow, node) = v.rsplit_once('/')?;
    let node = node.parse().ok()?;
    (!flow.is_empty() && flow.len() <= MAX_ID_LEN).then_some((flow, node))
}

/// Records how a flow's job ended and advances its dependents (the worker calls it before
/// it acks or dead-letters the job).
pub(crate) async fn settle(backend: &Backend, header: &str, outcome: &Outcome) -> Result<()> {
    let Some((flow, node)) = parse_header(header) else {
        tracing::warn!(
            header,
            "a flow header that names no flow; nothing to advance"
        );
        return Ok(());
    };
    let store = backend.store().ok_or(QueueError::NoStatusStore)?;
    record::settle(store.as_ref(), flow, node, outcome, &sender(backend)).await
}

/// What a job of a flow shares with the worker: where its flow lives and the result it
/// set.
pub(crate) struct FlowRun {
    store: Arc<dyn Store>,
    flow: String,
    node: u32,
    result: Mutex<Option<serde_json::Value>>,
}

impl FlowRun {
    pub(crate) fn take_result(&self) -> Option<serde_json::Value> {
        self.result.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn set_result(&self, v: serde_json::Value) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }
}

/// A running job's view of its flow: [`JobContext::flow`](crate::JobContext::flow).
#[derive(Clone)]
pub struct FlowContext(Arc<FlowRun>);

impl fmt::Debug for FlowContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowContext")
            .field("flow", &self.0.flow)
            .field("node", &self.0.node)
            .finish()
    }
}

/// One dependency of a running job, as [`FlowContext::dependencies`] reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Dependency {
    /// Its place in the flow.
    pub node: NodeId,
    /// Its job's name (`None` for a raw message).
    pub job: Option<String>,
    /// Its queue.
    pub queue: String,
    /// Its message id.
    pub id: MessageId,
    /// Where it stands: `succeeded` or `failed`, unless the policy
    /// [`OnFailure::Continue`] let this job run before it settled.
    pub state: NodeState,
    /// Its result, when it succeeded and set one.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
}

impl FlowContext {
    pub(crate) fn for_delivery(backend: &Backend, header: &str) -> Option<Self> {
        let (flow, node) = parse_header(header)?;
        Some(FlowContext(Arc::new(FlowRun {
            store: backend.store()?.clone(),
            flow: flow.to_string(),
            node,
            result: Mutex::new(None),
        })))
    }

    pub(crate) fn run(&self) -> &FlowRun {
        &self.0
    }

    /// This job's state in its flow, and whether it was cancelled (`None`: the flow is
    /// gone).
    pub(crate) async fn state(&self) -> Result<Option<(NodeState, bool)>> {
        match self
            .0
            .store
            .get(&node_key(&self.0.flow, self.0.node))
            .await?
        {
            Some(v) => {
                let r = NodeRec::decode(&v)?;
                Ok(Some((r.s, r.error.as_deref() == Some(CANCELLED))))
            }
            None => Ok(None),
        }
    }

    /// The flow's id.
    pub fn id(&self) -> &str {
        &self.0.flow
    }

    /// This job's place in it.
    pub fn node(&self) -> NodeId {
        NodeId::read(self.0.node)
    }

    /// This job's dependencies, in the order they were declared, each with its state and
    /// result (one read of the store).
    pub async fn dependencies(&self) -> Result<Vec<Dependency>> {
        let store = &self.0.store;
        let me = store
            .get(&node_key(&self.0.flow, self.0.node))
            .await?
            .ok_or_else(|| {
                QueueError::InvalidFlow(format!("flow {:?} is gone (expired?)", self.0.flow))
            })?;
        let me = NodeRec::decode(&me)?;
        let keys: Vec<String> = me
            .deps
            .iter()
            .map(|(d, _)| node_key(&self.0.flow, *d))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut out = Vec::with_capacity(keys.len());
        for ((d, _), v) in me.deps.iter().zip(store.get_many(&refs).await?) {
            let Some(v) = v else {
                return Err(QueueError::InvalidFlow(format!(
                    "flow {:?}: the record of job {d} is gone (expired?)",
                    self.0.flow
                )));
            };
            let r = NodeRec::decode(&v)?;
            out.push(Dependency {
                node: NodeId::read(*d),
                job: r.job,
                queue: r.q,
                id: MessageId::new(r.id),
                state: r.s,
                result: r.result,
                error: r.error,
            });
        }
        Ok(out)
    }

    /// The results of the dependencies that succeeded and set one, in declaration order,
    /// each decoded as `T` (BullMQ's `getChildrenValues`). A result that does not decode
    /// as `T` is [`QueueError::InvalidFlow`] naming its job: read
    /// [`dependencies`](FlowContext::dependencies) when they differ in type.
    pub async fn results<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for d in self.dependencies().await? {
            if let (NodeState::Succeeded, Some(v)) = (d.state, d.result) {
                out.push(serde_json::from_value(v).map_err(|e| {
                    QueueError::InvalidFlow(format!(
                        "the result of job {} ({}) does not decode: {e}",
                        d.node,
                        d.job.as_deref().unwrap_or("raw message")
                    ))
                })?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(deps: &[u32]) -> Draft {
        Draft {
            queue: "q".into(),
            job: None,
            message: Message::new("x"),
            deps: deps.iter().map(|d| (*d, OnFailure::Fail)).collect(),
        }
    }

    #[test]
    fn cycles_are_found_and_dags_pass() {
        // A diamond is no cycle.
        let dag = [draft(&[]), draft(&[0]), draft(&[0]), draft(&[1, 2])];
        assert_eq!(find_cycle(&dag), None);
        let cyc = [draft(&[2]), draft(&[0]), draft(&[1])];
        let c = find_cycle(&cyc).expect("a cycle");
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
        // A long chain does not overflow anything.
        let chain: Vec<Draft> = (0..1000u32)
            .map(|i| if i == 0 { draft(&[]) } else { draft(&[i - 1]) })
            .collect();
        assert_eq!(find_cycle(&chain), None);
    }

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header("order-1/3"), Some(("order-1", 3)));
        assert_eq!(parse_header("a/b/12"), Some(("a/b", 12)));
        assert_eq!(parse_header("/3"), None);
        assert_eq!(parse_header("x/"), None);
        assert_eq!(parse_header("x"), None);
    }
}
