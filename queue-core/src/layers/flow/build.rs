//! Building a flow: the [`Flow`](crate::flow::Flow) builder, and the checks and layout of its records
//! before anything is written.

use std::fmt;
use std::time::Duration;

use crate::error::{QueueError, Result};
use crate::handle::Backend;
use crate::job::Job;
use crate::message::{headers, Message, MessageId};
use crate::producer::{job_message, SendOptions};
use crate::store::MAX_TTL;

use super::record::{self, NodeRec, Stored};
use super::{
    NodeId, NodeState, OnFailure, DEFAULT_RETENTION, MAX_DEPENDENCIES, MAX_ID_LEN, MAX_NODES,
};

struct Draft {
    /// The peer backend it goes to ([`Backend::with_peer`](crate::Backend::with_peer)),
    /// or the flow's own.
    peer: Option<String>,
    queue: String,
    job: Option<String>,
    message: Message,
    deps: Vec<(u32, OnFailure)>,
}

/// A graph of jobs to add at once with [`Backend::add_flow`](crate::Backend::add_flow). See the [module docs](crate::flow).
///
/// Mistakes (a dependency on a job not in this flow, on itself, twice on the same job, a
/// cycle, too many jobs) are reported by [`Backend::add_flow`](crate::Backend::add_flow) as
/// [`QueueError::InvalidFlow`](crate::QueueError::InvalidFlow), before anything is written or sent.
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
    /// An empty flow with a random id ([`Flow::id`](crate::flow::Flow::id)).
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

    /// Its id: the one [`Backend::add_flow`](crate::Backend::add_flow) returns, known before the call so that a
    /// flow whose add failed halfway can be found ([`Backend::flow_status`](crate::Backend::flow_status)), cancelled,
    /// or resumed (added again under this id with [`Flow::with_id`](crate::flow::Flow::with_id)).
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
        Ok(self.push(None, queue, Some(J::NAME.to_string()), m))
    }

    /// Adds a raw message on `queue` (for a raw handler).
    pub fn message(&mut self, queue: &str, message: Message) -> NodeId {
        self.push(None, queue, None, message)
    }

    /// Adds a typed job on `queue` of the peer backend `peer`
    /// ([`Backend::with_peer`](crate::Backend::with_peer)): one flow across backends.
    pub fn job_on<J: Job>(&mut self, peer: &str, queue: &str, job: &J) -> Result<NodeId> {
        let m = job_message(job, SendOptions::default())?;
        Ok(self.push(Some(peer), queue, Some(J::NAME.to_string()), m))
    }

    /// Adds a raw message on `queue` of the peer backend `peer`.
    pub fn message_on(&mut self, peer: &str, queue: &str, message: Message) -> NodeId {
        self.push(Some(peer), queue, None, message)
    }

    fn push(
        &mut self,
        peer: Option<&str>,
        queue: &str,
        job: Option<String>,
        message: Message,
    ) -> NodeId {
        let n = self.nodes.len() as u32;
        self.nodes.push(Draft {
            peer: peer.map(str::to_string),
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
    pub(super) fn plan(mut self, backend: &Backend) -> Result<(String, Vec<NodeRec>, u64, u64)> {
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
        if self.nodes.iter().any(|d| d.peer.is_some()) {
            let Some(own) = backend.name() else {
                return Err(QueueError::InvalidFlow(
                    "a flow across backends is added through a named backend \
                     (Backend::with_name), so that other processes know where its own jobs go"
                        .into(),
                ));
            };
            for d in &mut self.nodes {
                d.peer.get_or_insert_with(|| own.to_string());
            }
        }
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
            let target = backend
                .resolve(d.peer.as_deref())
                .map_err(|e| QueueError::InvalidFlow(format!("job {i}: {e}")))?;
            crate::driver::validate(&target.capabilities(), target.kind(), &probe)
                .map_err(|e| QueueError::InvalidFlow(format!("job {i} on {}: {e}", d.queue)))?;
            shape.add(d.peer.as_deref().unwrap_or("").as_bytes());
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
                b: d.peer,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(deps: &[u32]) -> Draft {
        Draft {
            peer: None,
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
}
