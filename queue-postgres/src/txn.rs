//! Transactional enqueue: a job sent inside the application's own transaction exists
//! only if that transaction commits.
//!
//! ```no_run
//! # async fn f(client: &mut tokio_postgres::Client, pg: &queue_postgres::PostgresQueue)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use queue_core::Message;
//! let tx = client.transaction().await?;
//! tx.execute("INSERT INTO orders (id) VALUES ($1)", &[&42i64]).await?;
//! queue_postgres::txn::send(&tx, pg, "emails", vec![Message::new("order 42 confirmed")]).await?;
//! tx.commit().await?; // the e-mail job exists now, and only now; a rollback drops it
//! # Ok(()) }
//! ```
//!
//! The rows go into the same tables the driver reads, through the application's
//! connection: workers see them at commit (the insert trigger's `NOTIFY` is delivered
//! then), and never if the transaction rolls back or its connection dies first. Messages
//! are checked against the driver's capabilities before anything is written, like any
//! send.
//!
//! Decisions, written down:
//! - Dedup ids are refused ([`QueueError::Unsupported`]): the transaction is the
//!   deduplication (a retried transaction that committed once has its job; one that did
//!   not has none).
//! - Job status (`queued` records) is not written: the status store is not in the
//!   transaction, and a record for a job that rolled back would lie. Workers record
//!   `running` and what follows as usual.
//! - The transaction must be on the database (and see the schema) the driver uses: one
//!   on another database fails with [`QueueError::Schema`] and writes nothing.

use queue_core::{Driver, Job, Message, MessageId, QueueError, Result, SendOptions};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use crate::sql::{columns, send_sql};
use crate::{map_err, PostgresQueue, BACKEND};

/// Sends `messages` to `queue` as part of `client`'s transaction (or, given a plain
/// client, at once). Returns their ids in order.
pub async fn send<C: GenericClient>(
    client: &C,
    pg: &PostgresQueue,
    queue: &str,
    messages: Vec<Message>,
) -> Result<Vec<MessageId>> {
    let caps = pg.capabilities();
    for m in &messages {
        if m.dedup_id.is_some() {
            return Err(QueueError::unsupported(
                BACKEND,
                "dedup ids in a transactional send (the transaction is the deduplication)",
            ));
        }
        queue_core::driver::validate(&caps, BACKEND, m)?;
    }
    if messages.len() > caps.max_batch {
        return Err(QueueError::InvalidOption(format!(
            "a transactional send takes at most {} messages, got {}",
            caps.max_batch,
            messages.len()
        )));
    }
    let q = queue.to_string();
    let cols = columns(&messages);
    let schema = pg.schema();
    client
        .execute(&send_sql(schema), &cols.params(&q))
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::UNDEFINED_TABLE => QueueError::Schema {
                backend: BACKEND,
                schema: schema.to_string(),
                reason: "no queue tables here: is the transaction on the driver's database?".into(),
            },
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                QueueError::UnknownQueue(queue.to_string())
            }
            _ => map_err(e),
        })?;
    Ok(messages.into_iter().map(|m| m.id).collect())
}

/// Enqueues a typed job as part of `client`'s transaction; returns its id.
pub async fn enqueue<C: GenericClient, J: Job>(
    client: &C,
    pg: &PostgresQueue,
    queue: &str,
    job: &J,
    opts: SendOptions,
) -> Result<MessageId> {
    let m = queue_core::job_message(job, opts)?;
    send(client, pg, queue, vec![m])
        .await?
        .pop()
        .ok_or_else(|| QueueError::backend(BACKEND, "send returned no id"))
}
