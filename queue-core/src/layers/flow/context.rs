//! A running job's view of its flow: its dependencies' states and results, and where the
//! result it sets goes.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use crate::error::{QueueError, Result};
use crate::handle::Backend;
use crate::message::MessageId;
use crate::store::Store;

use super::record::{node_key, NodeRec};
use super::{parse_header, NodeId, NodeState, CANCELLED};

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

/// One dependency of a running job, as [`FlowContext::dependencies`](crate::flow::FlowContext::dependencies) reads it.
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
    /// [`OnFailure::Continue`](crate::flow::OnFailure::Continue) let this job run before it settled.
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
    /// as `T` is [`QueueError::InvalidFlow`](crate::QueueError::InvalidFlow) naming its job: read
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
