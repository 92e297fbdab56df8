//! What applications and operators do with a flow: add it, read it, cancel it; and the
//! worker's entry to settle one of its jobs.

use crate::error::{QueueError, Result};
use crate::handle::Backend;
use crate::message::{Message, MessageId};

use super::build::Flow;
use super::record::{self, flow_key, node_key, FlowRec, NodeRec, Outcome};
use super::{FlowId, NodeId, NodeState, OnFailure, CANCELLED, MAX_ID_LEN, MAX_NODES};

/// A job's state in its flow, as [`Backend::flow_status`] reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Its place in the flow.
    pub node: NodeId,
    /// The backend its queue is on, by name, in a flow across backends
    /// ([`Backend::with_peer`]).
    pub backend: Option<String>,
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
        backend: r.b,
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
        let mut queues: Vec<(Option<&str>, &str)> = recs
            .iter()
            .map(|r| (r.b.as_deref(), r.q.as_str()))
            .collect();
        queues.sort_unstable();
        queues.dedup();
        for (peer, q) in queues {
            let target = self.resolve(peer)?;
            match target.queue(q).stats().await {
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

pub(crate) type SendFut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// How the flow layer sends a node: through the queue's producer, so that job status
/// records it `queued` and the message is checked like any other.
pub(crate) fn sender(
    backend: &Backend,
) -> impl Fn(Option<String>, String, Option<String>, Message) -> SendFut + Send + Sync {
    let backend = backend.clone();
    move |peer: Option<String>, queue: String, job: Option<String>, m: Message| {
        let target = backend.resolve(peer.as_deref()).cloned();
        Box::pin(async move {
            target?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header("order-1/3"), Some(("order-1", 3)));
        assert_eq!(parse_header("a/b/12"), Some(("a/b", 12)));
        assert_eq!(parse_header("/3"), None);
        assert_eq!(parse_header("x/"), None);
        assert_eq!(parse_header("x"), None);
    }
}
