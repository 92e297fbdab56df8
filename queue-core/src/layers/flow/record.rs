//! A flow's records in the store and the one state machine that advances them.
//!
//! Keys: `flow:{id}` holds the flow's size, a digest of its shape and when its records
//! expire; `flow:{id}:{n}` holds node
//! `n`: the message to send, its dependencies (each with its failure policy), its
//! dependents, and its state. Every change to a node is a compare-and-set of its record,
//! so two workers that settle two dependencies of one node at the same instant cannot
//! both release it: one of them wins the write that makes it `released`, and only that
//! one sends it.
//!
//! A node's state moves `waiting` → `released` → `sent` → `succeeded` | `failed`. A root
//! starts `released`. The worker that settles a node's job writes the outcome, advances
//! each dependent, and sends those it released, all *before* it acks (or dead-letters)
//! the job: a crash anywhere in between leaves the job unacked, so it is delivered again
//! and its settlement is done again. That repeat is harmless: a dependent records each
//! dependency once (by its position), and a dependent found `released` but not `sent` is
//! sent by whoever finds it so. So a crash can cost a duplicate run, never a stuck flow.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{QueueError, Result};
use crate::message::{headers, Headers, Message, MessageId};
use crate::store::{Store, Versioned, Write};

use super::{NodeState, OnFailure};

/// How many times a compare-and-set on one node is tried before the settlement gives up
/// (and its job is given back, to settle again later). Each lost round means another
/// dependency of the same node was recorded meanwhile, so this bounds a node's fan-in
/// contention, not its fan-in.
const CAS_TRIES: usize = 200;

pub(super) fn flow_key(flow: &str) -> String {
    format!("flow:{flow}")
}

pub(super) fn node_key(flow: &str, node: u32) -> String {
    format!("flow:{flow}:{node}")
}

/// The `flow:{id}` record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct FlowRec {
    /// Number of nodes.
    pub(super) n: u32,
    /// A digest of the flow's shape and messages: a second add with the same id and
    /// another flow is refused instead of resuming the wrong one.
    pub(super) shape: u64,
    /// When its records expire, milliseconds since the Unix epoch.
    pub(super) exp: u64,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    crate::message::unix_millis(std::time::SystemTime::now())
}

/// The time to live left before `exp` (Unix ms), at least 1 ms: every record of a flow
/// expires at the same instant, however often it is rewritten.
pub(crate) fn ttl_until(exp: u64) -> Duration {
    Duration::from_millis(exp.saturating_sub(now_ms()).max(1))
}

/// The longest reason a doomed node carries in its header (bytes): a chain of failures
/// does not nest its reasons, and a long error is cut.
pub(super) const MAX_REASON: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A message as stored until its node is sent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The payload, when it is UTF-8 (jobs' JSON envelopes always are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    /// The payload in hex otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    h: Headers,
    /// Delay, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pr: Option<u8>,
}

impl Stored {
    pub(crate) fn of(m: &Message) -> Self {
        let (p, x) = match std::str::from_utf8(&m.payload) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(hex(&m.payload))),
        };
        Stored {
            p,
            x,
            h: m.headers.clone(),
            d: m.delay.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            k: m.ordering_key.clone(),
            dd: m.dedup_id.clone(),
            pr: m.priority,
        }
    }

    pub(crate) fn message(&self, id: &str) -> Result<Message> {
        let payload: Vec<u8> = match (&self.p, &self.x) {
            (Some(p), _) => p.clone().into_bytes(),
            (None, Some(x)) => unhex(x).ok_or_else(|| corrupt("a payload is not hex"))?,
            (None, None) => Vec::new(),
        };
        let mut m = Message::new(payload).id(MessageId::new(id));
        m.headers = self.h.clone();
        m.delay = self.d.map(Duration::from_millis);
        m.ordering_key = self.k.clone();
        m.dedup_id = self.dd.clone();
        m.priority = self.pr;
        Ok(m)
    }
}

/// One node's record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct NodeRec {
    /// The peer backend its queue is on, if not the flow's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) b: Option<String>,
    /// Its queue.
    pub(super) q: String,
    /// Its message id.
    pub(super) id: String,
    /// Its job's name, when it is a typed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) job: Option<String>,
    pub(super) m: Stored,
    /// Its dependencies: node and policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) deps: Vec<(u32, OnFailure)>,
    /// The nodes that depend on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) next: Vec<u32>,
    pub(super) s: NodeState,
    /// Positions in `deps` of the dependencies that have settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) got: Vec<u32>,
    /// Dependencies (nodes) that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) failed: Vec<u32>,
    /// Why it is sent only to be dead-lettered (a dependency failed under
    /// [`OnFailure::Fail`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) doomed: Option<String>,
    /// Its handler's result, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    /// When the flow's records expire, milliseconds since the Unix epoch.
    pub(super) exp: u64,
}

impl NodeRec {
    pub(super) fn decode(v: &Versioned) -> Result<Self> {
        serde_json::from_slice(&v.value).map_err(|e| corrupt(&format!("a node record: {e}")))
    }

    fn encode(&self) -> Vec<u8> {
        // A record of strings, numbers and JSON values always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn ttl(&self) -> Duration {
        ttl_until(self.exp)
    }

    /// The message that carries this node to its queue.
    pub(super) fn message(&self, flow: &str, node: u32) -> Result<Message> {
        let mut m = self.m.message(&self.id)?;
        m.headers
            .insert(headers::FLOW.into(), format!("{flow}/{node}"));
        if let Some(why) = &self.doomed {
            m.headers.insert(headers::FLOW_FAILED.into(), why.clone());
        }
        Ok(m)
    }
}

pub(super) fn encode_new(rec: &NodeRec) -> Vec<u8> {
    rec.encode()
}

fn corrupt(what: &str) -> QueueError {
    QueueError::InvalidFlow(format!(
        "flow record unreadable ({what}): written by a newer version, or by hand"
    ))
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads node `key`, lets `change` edit it, and writes it back if it changed, at the
/// version read; on a lost race, reads again. Returns the record as it stands after
/// (`None`: no such record, the flow expired or never was).
pub(super) async fn update(
    store: &dyn Store,
    key: &str,
    mut change: impl FnMut(&mut NodeRec) -> bool,
) -> Result<Option<(NodeRec, bool)>> {
    for _ in 0..CAS_TRIES {
        let Some(v) = store.get(key).await? else {
            return Ok(None);
        };
        let mut rec = NodeRec::decode(&v)?;
        if !change(&mut rec) {
            return Ok(Some((rec, false)));
        }
        if store
            .replace(key, v.version, &rec.encode(), rec.ttl())
            .await?
            .is_some()
        {
            return Ok(Some((rec, true)));
        }
        tokio::task::yield_now().await;
    }
    Err(QueueError::backend(
        "flow store",
        format!("flow node {key}: {CAS_TRIES} compare-and-set rounds lost in a row"),
    ))
}

/// How a node's job ended, as its flow records it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Its handler succeeded, with the result it set. `redriven`: this run came from the
    /// dead-letter queue, and its success replaces a recorded failure.
    Succeeded {
        result: Option<serde_json::Value>,
        redriven: bool,
    },
    Failed(String),
}

/// Whether a send's error will be the same however often it is tried: the node then
/// fails instead of holding up its dependency's settlement for ever.
fn permanent(e: &QueueError) -> bool {
    matches!(
        e,
        QueueError::Oversize { .. }
            | QueueError::UnknownQueue(_)
            | QueueError::InvalidOption(_)
            | QueueError::Unsupported { .. }
            | QueueError::InvalidFlow(_)
    )
}

/// Sends a node that is `released`, then marks it `sent`. `send` is the producer's send.
pub(super) async fn send_released<F, Fut>(
    store: &dyn Store,
    flow: &str,
    node: u32,
    rec: &NodeRec,
    send: &F,
) -> Result<()>
where
    F: Fn(Option<String>, String, Option<String>, Message) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let m = rec.message(flow, node)?;
    send(rec.b.clone(), rec.q.clone(), rec.job.clone(), m).await?;
    // Best effort: the node is in its queue whatever this write does. Left `released`, it
    // is sent again only by a repeat of the settlement that released it (a duplicate
    // delivery), never by this one's retries.
    let marked = update(store, &node_key(flow, node), |r| {
        if r.s == NodeState::Released {
            r.s = NodeState::Sent;
            true
        } else {
            false
        }
    })
    .await;
    if let Err(e) = marked {
        tracing::warn!(flow, node, error = %e, "flow node sent, but not marked sent");
    }
    Ok(())
}

/// Records how node `node`'s job ended, advances its dependents, and sends those it
/// released (see the module docs). Safe to repeat.
pub(super) async fn settle<F, Fut>(
    store: &dyn Store,
    flow: &str,
    node: u32,
    outcome: &Outcome,
    send: &F,
) -> Result<()>
where
    F: Fn(Option<String>, String, Option<String>, Message) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let key = node_key(flow, node);
    let written = update(store, &key, |r| match (&r.s, outcome) {
        (NodeState::Succeeded, _) | (NodeState::Failed, Outcome::Failed(_)) => false,
        // A late success of a job recorded failed (an earlier attempt that outlived its
        // lease while a later one was dead-lettered) does not undo the failure; a
        // redriven job's success is recorded. Either way its dependents stay as its
        // failure left them.
        (
            NodeState::Failed,
            Outcome::Succeeded {
                redriven: false, ..
            },
        ) => false,
        (_, Outcome::Succeeded { result, .. }) => {
            r.s = NodeState::Succeeded;
            r.result = result.clone();
            r.error = None;
            true
        }
        (_, Outcome::Failed(e)) => {
            r.s = NodeState::Failed;
            r.error = Some(e.clone());
            true
        }
    })
    .await?;
    let Some((rec, _)) = written else {
        tracing::warn!(
            flow,
            node,
            "flow record gone (expired?): its dependents are not advanced"
        );
        return Ok(());
    };
    // The outcome to propagate is the first one recorded (a redrive's later success does
    // not undo what its failure set going).
    let failed = match rec.s {
        NodeState::Failed => Some(rec.error.clone().unwrap_or_default()),
        _ => None,
    };
    for &next in &rec.next {
        let nkey = node_key(flow, next);
        let mut released_now = false;
        let advanced = update(store, &nkey, |n| {
            released_now = false;
            let Some(pos) = n.deps.iter().position(|(d, _)| *d == node) else {
                return false;
            };
            let pos = pos as u32;
            if n.got.contains(&pos) {
                return false;
            }
            n.got.push(pos);
            let mut release = n.got.len() == n.deps.len();
            if let Some(e) = &failed {
                n.failed.push(node);
                match n.deps[pos as usize].1 {
                    OnFailure::Fail if n.s == NodeState::Waiting => {
                        // The root cause, cut: a chain of dependency failures does not
                        // nest its reasons in the header.
                        let cause = match &rec.doomed {
                            Some(d) => d.split_once("failed: ").map_or(d.as_str(), |x| x.1),
                            None => e.as_str(),
                        };
                        n.doomed = Some(cut(
                            &format!(
                                "dependency {node} ({}) failed: {cause}",
                                rec.job.as_deref().unwrap_or("raw message")
                            ),
                            MAX_REASON,
                        ));
                        release = true;
                    }
                    OnFailure::Continue => release = true,
                    _ => {}
                }
            }
            if release && n.s == NodeState::Waiting {
                n.s = NodeState::Released;
                released_now = true;
            }
            true
        })
        .await?;
        match advanced {
            // Released by this write; or found released by a repeat of this settlement
            // (this dependency was recorded already): the first did not live to send
            // it. A dependent released by another dependency's settlement is that
            // one's to send (it may be sending it right now).
            Some((n, changed)) if released_now || (!changed && n.s == NodeState::Released) => {
                if let Err(e) = send_released(store, flow, next, &n, send).await {
                    if !permanent(&e) {
                        return Err(e);
                    }
                    // It can never be sent (its queue is gone, it grew past the size
                    // limit): it fails, and its dependents follow their policies.
                    tracing::warn!(flow, node = next, error = %e, "flow node cannot be sent; failing it");
                    let failed = Outcome::Failed(format!("could not be sent: {e}"));
                    Box::pin(settle(store, flow, next, &failed, send)).await?;
                }
            }
            Some(_) => {}
            None => tracing::warn!(flow, node = next, "flow node record gone (expired?)"),
        }
    }
    Ok(())
}

/// Writes new records (insert if absent), in chunks; returns whether each was new.
pub(super) async fn insert_all(
    store: &dyn Store,
    entries: &[(String, Vec<u8>)],
    ttl: Duration,
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(256) {
        let writes: Vec<Write<'_>> = chunk
            .iter()
            .map(|(k, v)| Write::insert(k, v, ttl))
            .collect();
        out.extend(
            store
                .write_many(&writes)
                .await?
                .into_iter()
                .map(|v| v.is_some()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::Mutex;

    fn rec(s: NodeState, deps: &[u32], next: &[u32]) -> NodeRec {
        NodeRec {
            b: None,
            q: "q".into(),
            id: MessageId::random().into_string(),
            job: None,
            m: Stored::of(&Message::new("x")),
            deps: deps.iter().map(|d| (*d, OnFailure::Fail)).collect(),
            next: next.to_vec(),
            s,
            got: Vec::new(),
            failed: Vec::new(),
            doomed: None,
            result: None,
            error: None,
            exp: now_ms() + 60_000,
        }
    }

    /// Nodes 0 and 2, sent, both dependencies of node 1.
    fn two_into_one() -> [NodeRec; 3] {
        [
            rec(NodeState::Sent, &[], &[1]),
            rec(NodeState::Waiting, &[0, 2], &[]),
            rec(NodeState::Sent, &[], &[1]),
        ]
    }

    async fn state(store: &MemoryStore, node: u32) -> NodeRec {
        NodeRec::decode(&store.get(&node_key("f", node)).await.unwrap().unwrap()).unwrap()
    }

    /// A settlement repeated (its job delivered again after a crash) counts its
    /// dependency once, and one cut short after it released its dependent but before it
    /// sent it is finished by the repeat: the dependent is sent once.
    #[tokio::test]
    async fn a_repeated_settlement_counts_once_and_finishes_a_cut_short_one() {
        let store = MemoryStore::new();
        put(&store, &two_into_one()).await;
        let sent = Mutex::new(Vec::new());
        let ok = |_: Option<String>, q: String, _: Option<String>, m: Message| {
            sent.lock().unwrap().push((q, m));
            async { Ok(()) }
        };
        let crash = |_: Option<String>, _: String, _: Option<String>, _: Message| async {
            Err(QueueError::backend("memory", "the process died here"))
        };
        let done = Outcome::Succeeded {
            result: Some(serde_json::json!(1)),
            redriven: false,
        };
        for _ in 0..2 {
            settle(&store, "f", 0, &done, &ok).await.unwrap();
            let one = state(&store, 1).await;
            assert_eq!(
                (one.s, one.got.len()),
                (NodeState::Waiting, 1),
                "counted once"
            );
        }
        assert!(settle(&store, "f", 2, &done, &crash).await.is_err());
        assert_eq!(state(&store, 1).await.s, NodeState::Released);
        assert!(sent.lock().unwrap().is_empty());
        settle(&store, "f", 2, &done, &ok).await.unwrap();
        settle(&store, "f", 2, &done, &ok).await.unwrap();
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "the dependent is sent once");
        assert_eq!(sent[0].1.headers[headers::FLOW], "f/1");
        assert_eq!(state(&store, 1).await.s, NodeState::Sent);
        assert_eq!(state(&store, 0).await.result, Some(serde_json::json!(1)));
    }

    /// Two dependencies fail (policy `Fail`): the first releases the dependent (to be
    /// dead-lettered) and is cut short before it sends it; the second's settlement finds
    /// it released and leaves it to the first, whose repeat sends it, once.
    #[tokio::test]
    async fn a_dependent_released_by_another_settlement_is_not_sent_twice() {
        let store = MemoryStore::new();
        put(&store, &two_into_one()).await;
        let sent = Mutex::new(Vec::new());
        let ok = |_: Option<String>, _: String, _: Option<String>, m: Message| {
            sent.lock().unwrap().push(m);
            async { Ok(()) }
        };
        let crash = |_: Option<String>, _: String, _: Option<String>, _: Message| async {
            Err(QueueError::backend("memory", "the process died here"))
        };
        let failed = Outcome::Failed("boom".into());
        assert!(settle(&store, "f", 0, &failed, &crash).await.is_err());
        settle(&store, "f", 2, &failed, &ok).await.unwrap();
        assert!(sent.lock().unwrap().is_empty(), "not the second's to send");
        settle(&store, "f", 0, &failed, &ok).await.unwrap();
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].headers[headers::FLOW_FAILED].contains("boom"));
        let one = state(&store, 1).await;
        assert_eq!((one.s, one.failed.len()), (NodeState::Sent, 2));
    }

    #[test]
    fn payloads_round_trip_text_and_binary() {
        for payload in [&b"{\"job\":\"x\"}"[..], b"\xff\x00\x10", b""] {
            let mut m = Message::new(payload.to_vec());
            m.delay = Some(Duration::from_millis(1500));
            m.priority = Some(3);
            let back = Stored::of(&m).message(m.id.as_str()).unwrap();
            assert_eq!(&back.payload[..], payload);
            assert_eq!(back.id, m.id);
            assert_eq!(back.delay, m.delay);
            assert_eq!(back.priority, Some(3));
        }
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }

    async fn put(store: &MemoryStore, recs: &[NodeRec]) {
        for (i, r) in recs.iter().enumerate() {
            store
                .insert(
                    &node_key("f", i as u32),
                    &r.encode(),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
        }
    }

    /// A dependent that can never be sent (its queue is gone) fails, and its own dependent
    /// follows its policy: the settlement of its dependency ends instead of failing for
    /// ever.
    #[tokio::test]
    async fn a_dependent_that_cannot_be_sent_fails_and_its_dependents_follow() {
        let store = MemoryStore::new();
        let mut gone = rec(NodeState::Waiting, &[0], &[2]);
        gone.q = "gone".into();
        put(
            &store,
            &[
                rec(NodeState::Sent, &[], &[1]),
                gone,
                rec(NodeState::Waiting, &[1], &[]),
            ],
        )
        .await;
        let sent = Mutex::new(Vec::new());
        let send = |_: Option<String>, q: String, _: Option<String>, m: Message| {
            let r = if q == "gone" {
                Err(QueueError::UnknownQueue(q))
            } else {
                sent.lock().unwrap().push(m);
                Ok(())
            };
            async move { r }
        };
        let ok = Outcome::Succeeded {
            result: None,
            redriven: false,
        };
        settle(&store, "f", 0, &ok, &send).await.unwrap();
        let one = state(&store, 1).await;
        assert_eq!(one.s, NodeState::Failed);
        assert!(one
            .error
            .as_deref()
            .unwrap_or("")
            .contains("could not be sent"));
        // Its dependent (policy Fail) is sent to be dead-lettered.
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].headers.contains_key(headers::FLOW_FAILED));
    }

    /// A success that arrives after the job was recorded failed does not undo the failure
    /// (an earlier attempt that outlived its lease); a redriven run's success does.
    #[tokio::test]
    async fn only_a_redriven_success_replaces_a_failure() {
        let store = MemoryStore::new();
        put(&store, &[rec(NodeState::Sent, &[], &[])]).await;
        let none = |_: Option<String>, _: String, _: Option<String>, _: Message| async { Ok(()) };
        settle(&store, "f", 0, &Outcome::Failed("boom".into()), &none)
            .await
            .unwrap();
        let late = Outcome::Succeeded {
            result: None,
            redriven: false,
        };
        settle(&store, "f", 0, &late, &none).await.unwrap();
        assert_eq!(state(&store, 0).await.s, NodeState::Failed);
        let redriven = Outcome::Succeeded {
            result: None,
            redriven: true,
        };
        settle(&store, "f", 0, &redriven, &none).await.unwrap();
        assert_eq!(state(&store, 0).await.s, NodeState::Succeeded);
    }

    /// Down a chain of `Fail` dependencies, each doomed job's reason names its own
    /// dependency and the root cause once, within the header's bound.
    #[tokio::test]
    async fn a_chain_of_failures_does_not_nest_its_reasons() {
        let store = MemoryStore::new();
        put(
            &store,
            &[
                rec(NodeState::Sent, &[], &[1]),
                rec(NodeState::Waiting, &[0], &[2]),
                rec(NodeState::Waiting, &[1], &[]),
            ],
        )
        .await;
        let sent = Mutex::new(Vec::new());
        let send = |_: Option<String>, _: String, _: Option<String>, m: Message| {
            sent.lock().unwrap().push(m);
            async { Ok(()) }
        };
        let long = format!("permanent: {}", "x".repeat(1000));
        settle(&store, "f", 0, &Outcome::Failed(long), &send)
            .await
            .unwrap();
        let why1 = state(&store, 1).await.doomed.unwrap();
        // Node 1's job is dead-lettered as the worker would record it.
        let dead = Outcome::Failed(format!("dependency-failed: {why1}"));
        settle(&store, "f", 1, &dead, &send).await.unwrap();
        let why2 = state(&store, 2).await.doomed.unwrap();
        assert!(
            why2.starts_with("dependency 1 (raw message) failed: permanent: xx"),
            "{why2}"
        );
        assert!(why2.len() <= MAX_REASON);
        assert_eq!(why2.matches("failed:").count(), 1, "{why2}");
        assert_eq!(sent.lock().unwrap().len(), 2);
    }
}
