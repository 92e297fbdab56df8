//! Flows: jobs that wait for other jobs, and read their results (job dependencies,
//! BullMQ's flows, River's and Oban's workflows). Not to be confused with flow control
//! ([`crate::limit`]).
//!
//! A [`Flow`](crate::flow::Flow) is a graph of jobs, each on any queue of the backend: a job runs once every
//! job it depends on has settled, and reads their results through
//! [`JobContext::flow`](crate::JobContext::flow). A job may depend on several (a DAG,
//! which BullMQ's trees cannot say), and each dependency has its own [`OnFailure`]
//! policy. [`Backend::add_flow`](crate::Backend::add_flow) adds it in one call; [`Backend::flow_status`](crate::Backend::flow_status) reads each job's
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
//!   kept in its node (with or without job status on); [`FlowContext::results`](crate::flow::FlowContext::results) and
//!   [`FlowContext::dependencies`](crate::flow::FlowContext::dependencies) read them.
//! - Across queues: nodes may be on any queue of the backend. Across backends:
//!   [`Flow::job_on`](crate::flow::Flow::job_on) puts a node on a peer backend's queue
//!   ([`Backend::with_peer`](crate::Backend::with_peer)). Each backend involved has a
//!   name ([`Backend::with_name`](crate::Backend::with_name)), every node records its
//!   backend's name, and every process that runs the flow's jobs knows the others by the
//!   same names and shares one store: a Kafka consumer's job can release a job on Redis.
//!   A worker asked to send to a name it does not know gives its own job back (retried
//!   later, logged) instead of failing the flow.
//!
//! - A job's worker reads its state in the flow before it runs it: one that has finished
//!   already (a duplicate delivery of a job that succeeded, a job of a cancelled flow) is
//!   acked without running, unless it was redriven from the dead-letter queue.
//! - [`Backend::cancel_flow`](crate::Backend::cancel_flow) fails every unfinished job with the error `cancelled`: those
//!   waiting are never sent, those queued are skipped, those running are asked to stop
//!   (with job status on).
//!
//! # What a crash does
//! - Adding: [`Backend::add_flow`](crate::Backend::add_flow) writes every node's record first, then sends the jobs
//!   with no dependencies, marking each `sent`. Nothing runs before the records exist. A
//!   crash while sending leaves some roots `released` and unsent: add the same flow again
//!   with the same id ([`Flow::with_id`](crate::flow::Flow::with_id), for instance the order's id) and the call sends
//!   what was not sent and returns the same id; a different flow under an existing id is
//!   refused ([`QueueError::InvalidFlow`](crate::QueueError::InvalidFlow)). A random id is known before the call too
//!   ([`Flow::id`](crate::flow::Flow::id)), so any flow can be resumed so, or cancelled.
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
//! flow's records live for its retention ([`Flow::retention`](crate::flow::Flow::retention), default
//! [`DEFAULT_RETENTION`]) from when it was added. A job that finishes after that advances
//! nothing (logged). A redriven job that then succeeds records its success; what its
//! failure set going stays as it went. A job dead-lettered `dependency-failed` and then
//! redriven runs, with its dependencies' results as they are.
mod build;
mod context;
mod ops;
mod record;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use build::Flow;
pub use context::{Dependency, FlowContext};
pub(crate) use ops::{parse_header, sender, settle};
pub use ops::{FlowStatus, NodeStatus};
pub(crate) use record::{cut, now_ms, ttl_until, Outcome, Stored};

/// The error a cancelled flow's unfinished jobs carry ([`Backend::cancel_flow`](crate::Backend::cancel_flow)).
pub const CANCELLED: &str = "cancelled";

/// The most jobs one flow may hold.
pub const MAX_NODES: usize = 5_000;
/// The most dependencies one job of a flow may have. Each settling dependency rewrites its
/// dependent's record, which lists them all, so a job waiting on `n` costs its flow
/// writes that grow as `n²`: a thousand is about 15 MB of store writes in all.
pub const MAX_DEPENDENCIES: usize = 1_000;
/// How long a flow's records live by default: seven days from when it was added.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest flow id ([`Flow::with_id`](crate::flow::Flow::with_id)).
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

/// A job's place in its [`Flow`](crate::flow::Flow), as [`Flow::job`](crate::flow::Flow::job) returned it. It belongs to that flow:
/// naming it in another is a mistake [`Backend::add_flow`](crate::Backend::add_flow) reports.
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

/// A flow's id, as [`Backend::add_flow`](crate::Backend::add_flow) returned it.
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
