//! Dedup ids where the backend has none (Kafka, SQS standard queues): emulated once here,
//! over the shared store ([`crate::Backend::with_store`]), with the meaning native dedup has
//! everywhere: a message sent with a dedup id already sent to the same queue within the
//! window ([`EMULATED_WINDOW`], five minutes, as SQS FIFO's) is dropped, and its send
//! returns the original's id (the dedup id itself, see [`crate::Message::dedup_id`]).
//!
//! Each id is claimed before its message is sent: `dedup:<queue>:<id>` is inserted in the
//! store as *pending* (for [`PENDING_FOR`]), then, once the backend took the message, made
//! *sent* for the window. So:
//! - a send that fails gives the claim up (the caller's retry sends);
//! - a producer that dies between claim and send leaves a pending claim that ends after
//!   [`PENDING_FOR`]; a resend of the id waits for it meanwhile (it may be the first
//!   send's, finishing), then sends: a message is never dropped for a send that did not
//!   happen;
//! - a producer that dies after the send and before marking it sent leaves the claim
//!   pending: a resend after [`PENDING_FOR`] is delivered again (a duplicate, never a
//!   loss);
//! - the same id twice in one batch is sent once.
//!
//! Without a shared store the backend declares no dedup window, and a dedup id is refused
//! with [`QueueError::Unsupported`] as before. The cost: one store insert and one replace
//! per message with a dedup id (messages without one cost nothing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{QueueError, Result};
use crate::message::{Message, MessageId};
use crate::store::{self, Store};

/// The window of emulated dedup ids: five minutes, as SQS FIFO's.
pub const EMULATED_WINDOW: Duration = Duration::from_secs(300);

/// How long a claim waits for its send before it ends by itself.
pub const PENDING_FOR: Duration = Duration::from_secs(30);

const PENDING: &[u8] = b"pending:";
const SENT: &[u8] = b"sent:";

/// A claimed id, to confirm after the send or give up after a failure.
pub(crate) struct Claim {
    key: String,
    version: u64,
    id: MessageId,
}

/// What [`claim_all`] decided for each message of a batch, in order.
pub(crate) enum Slot {
    /// Send it (its dedup id, if any, is claimed).
    Send(Message),
    /// Do not send it: its id was sent already (or earlier in this batch).
    Duplicate(MessageId),
}

fn key_of(queue: &str, dedup_id: &str) -> Result<String> {
    let key = format!("dedup:{queue}:{dedup_id}");
    if key.len() > store::MAX_KEY_LEN {
        return Err(QueueError::InvalidOption(format!(
            "dedup id of {} bytes: with an emulated dedup window, ids are at most {} bytes",
            dedup_id.len(),
            store::MAX_KEY_LEN - queue.len() - 7
        )));
    }
    Ok(key)
}

/// Claims the dedup id of every message that has one; the messages keep their ids but
/// lose the dedup id itself (the driver cannot take it). Claims already made are given up
/// when a later one fails.
pub(crate) async fn claim_all(
    store: &Arc<dyn Store>,
    queue: &str,
    messages: Vec<Message>,
) -> Result<(Vec<Slot>, Vec<Claim>)> {
    let mut slots = Vec::with_capacity(messages.len());
    let mut claims = Vec::new();
    let mut in_batch: HashMap<String, MessageId> = HashMap::new();
    for mut m in messages {
        let Some(dd) = m.dedup_id.take() else {
            slots.push(Slot::Send(m));
            continue;
        };
        if let Some(first) = in_batch.get(&dd) {
            slots.push(Slot::Duplicate(first.clone()));
            continue;
        }
        match claim(store, queue, &dd, &m.id).await {
            Ok(Ok(c)) => {
                in_batch.insert(dd, m.id.clone());
                claims.push(c);
                slots.push(Slot::Send(m));
            }
            Ok(Err(original)) => slots.push(Slot::Duplicate(original)),
            Err(e) => {
                give_up(store, claims).await;
                return Err(e);
            }
        }
    }
    Ok((slots, claims))
}

/// Claims one id: `Ok(claim)` when this send is the first, `Err(original id)` when the id
/// was sent within the window.
async fn claim(
    store: &Arc<dyn Store>,
    queue: &str,
    dedup_id: &str,
    id: &MessageId,
) -> Result<std::result::Result<Claim, MessageId>> {
    let key = key_of(queue, dedup_id)?;
    let pending = [PENDING, id.as_str().as_bytes()].concat();
    let deadline = tokio::time::Instant::now() + PENDING_FOR + Duration::from_secs(1);
    loop {
        if let Some(version) = store.insert(&key, &pending, PENDING_FOR).await? {
            return Ok(Ok(Claim {
                key,
                version,
                id: id.clone(),
            }));
        }
        match store.get(&key).await? {
            Some(v) if v.value.starts_with(SENT) => {
                let original = String::from_utf8_lossy(&v.value[SENT.len()..]).into_owned();
                return Ok(Err(MessageId::new(original)));
            }
            // Another send of the id is under way: wait for it to land or give up.
            Some(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(_) => return Err(QueueError::Timeout(PENDING_FOR)),
            None => {} // ended in between: claim again
        }
    }
}

/// The backend took the messages: their ids are sent for the window. A failed write is
/// logged (the claim then ends after [`PENDING_FOR`], and a later resend is delivered
/// again: a duplicate, never a loss).
pub(crate) async fn confirm(store: &Arc<dyn Store>, claims: Vec<Claim>) {
    for c in claims {
        let sent = [SENT, c.id.as_str().as_bytes()].concat();
        if let Err(e) = store
            .replace(&c.key, c.version, &sent, EMULATED_WINDOW)
            .await
        {
            tracing::warn!(key = %c.key, error = %e, "could not mark a dedup id sent");
        }
    }
}

/// The send failed: the ids are free again.
pub(crate) async fn give_up(store: &Arc<dyn Store>, claims: Vec<Claim>) {
    for c in claims {
        if let Err(e) = store.delete(&c.key).await {
            tracing::warn!(key = %c.key, error = %e, "could not give a dedup claim up");
        }
    }
}
