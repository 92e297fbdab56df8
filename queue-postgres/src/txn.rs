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
//! With the `sqlx` feature, [`send_sqlx`] does the same on an sqlx connection or
//! transaction (`&mut *tx`).
//!
//! Decisions, written down:
//! - Dedup ids are refused ([`QueueError::Unsupported`]): the transaction is the
//!   deduplication (a retried transaction that committed once has its job; one that did
//!   not has none).
//! - Job status (`queued` records) is not written: the status store is not in the
//!   transaction, and a record for a job that rolled back would lie. Workers record
//!   `running` and what follows as usual.
//! - The transaction must be on the database (and server) the driver uses: one on another
//!   database, or on a copy of it elsewhere (a server with another system identifier),
//!   fails with [`QueueError::Schema`] and writes nothing. The checks before the insert
//!   (that database, the queue's existence, ids, keys and headers free of NUL characters)
//!   cannot fail as statements, so they leave the transaction usable; an insert that
//!   fails anyway (a lost connection, a deadlock on a key) fails the transaction, as any
//!   failed statement does.
//! - Keyed messages lock their keys until the transaction ends (see the crate docs), so
//!   that a key's jobs are numbered in commit order.

use queue_core::{Driver, Job, Message, MessageId, QueueError, Result, SendOptions};
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
    check(pg, &messages)?;
    let q = queue.to_string();
    let cols = columns(&messages);
    let schema = pg.schema();
    // Checked with statements that cannot fail, so that a wrong database or queue leaves
    // the caller's transaction usable.
    let here = client
        .query_one(IDENTITY, &[&format!(r#""{schema}".queues"#)])
        .await
        .map_err(map_err)?;
    let tables: bool = here.get(2);
    let identity = (here.get::<_, String>(0), here.get::<_, i64>(1));
    if !tables || identity != pg.identity() {
        return Err(elsewhere(schema, &identity.0));
    }
    let known: bool = client
        .query_one(
            &format!(r#"SELECT EXISTS (SELECT 1 FROM "{schema}".queues WHERE name = $1)"#),
            &[&q],
        )
        .await
        .map_err(map_err)?
        .get(0);
    if !known {
        return Err(QueueError::UnknownQueue(queue.to_string()));
    }
    client
        .execute(&send_sql(schema), &cols.params(&q))
        .await
        .map_err(|e| {
            let code = e.code().map(|c| c.code().to_string());
            classify(code.as_deref(), schema, queue).unwrap_or_else(|| map_err(e))
        })?;
    Ok(messages.into_iter().map(|m| m.id).collect())
}

/// This session's database, server and whether the schema's tables are there ($1 the
/// queues table's name).
const IDENTITY: &str = "SELECT current_database()::text, \
     (SELECT system_identifier FROM pg_control_system()), to_regclass($1) IS NOT NULL";

fn elsewhere(schema: &str, database: &str) -> QueueError {
    QueueError::Schema {
        backend: BACKEND,
        schema: schema.to_string(),
        reason: format!(
            "the transaction is on database {database:?}, not the queue driver's database \
             (or its schema has no queue tables): its jobs would never be read"
        ),
    }
}

/// Checks a transactional batch before anything is written.
fn check(pg: &PostgresQueue, messages: &[Message]) -> Result<()> {
    let caps = pg.capabilities();
    for m in messages {
        crate::sql::check_text(m)?;
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
    Ok(())
}

/// The typed error for a failed transactional insert's SQLSTATE, where it has one.
fn classify(code: Option<&str>, schema: &str, queue: &str) -> Option<QueueError> {
    match code? {
        // undefined_table
        "42P01" => Some(QueueError::Schema {
            backend: BACKEND,
            schema: schema.to_string(),
            reason: "no queue tables here: is the transaction on the driver's database?".into(),
        }),
        // foreign_key_violation: no such queue
        "23503" => Some(QueueError::UnknownQueue(queue.to_string())),
        _ => None,
    }
}

/// [`send`] on an sqlx connection or transaction (feature `sqlx`):
/// `txn::send_sqlx(&mut *tx, &pg, "emails", messages)`.
#[cfg(feature = "sqlx")]
pub async fn send_sqlx(
    conn: &mut sqlx::PgConnection,
    pg: &PostgresQueue,
    queue: &str,
    messages: Vec<Message>,
) -> Result<Vec<MessageId>> {
    check(pg, &messages)?;
    let c = columns(&messages);
    let schema = pg.schema();
    let sqlx_err = |e: sqlx::Error| match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            QueueError::Connection {
                backend: BACKEND,
                source: Box::new(e),
            }
        }
        e => QueueError::backend(BACKEND, e),
    };
    let (database, system, tables): (String, i64, bool) = sqlx::query_as(IDENTITY)
        .bind(format!(r#""{schema}".queues"#))
        .fetch_one(&mut *conn)
        .await
        .map_err(sqlx_err)?;
    if !tables || (database.clone(), system) != pg.identity() {
        return Err(elsewhere(schema, &database));
    }
    let (known,): (bool,) = sqlx::query_as(&format!(
        r#"SELECT EXISTS (SELECT 1 FROM "{schema}".queues WHERE name = $1)"#
    ))
    .bind(queue)
    .fetch_one(&mut *conn)
    .await
    .map_err(sqlx_err)?;
    if !known {
        return Err(QueueError::UnknownQueue(queue.to_string()));
    }
    sqlx::query(&send_sql(schema))
        .bind(queue)
        .bind(&c.ids)
        .bind(&c.payloads)
        .bind(&c.headers)
        .bind(&c.keys)
        .bind(&c.priorities)
        .bind(&c.delays)
        .bind(&c.enqueued)
        .execute(conn)
        .await
        .map_err(|e| {
            let code = e
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned());
            classify(code.as_deref(), schema, queue).unwrap_or_else(|| sqlx_err(e))
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
