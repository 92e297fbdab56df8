//! # queue-postgres
//!
//! PostgreSQL for [`queue_core`], in tables of a schema the URL chooses:
//!
//! - [`PostgresQueue`], a queue driver (`postgres://` URLs): receive with
//!   `FOR UPDATE SKIP LOCKED`, leases as visibility timestamps, long polls woken by
//!   `LISTEN`/`NOTIFY`, and [transactional enqueue](crate::txn): a job sent inside the
//!   application's own transaction exists only if that transaction commits.
//! - [`PostgresStore`], the store the layers above the queue share state through (job
//!   status: [`queue_core::status`]). Any queue backend can use it: Redis, SQS or Kafka
//!   queues with job status in the PostgreSQL the application already runs.
//!
//! ## The queue's mapping
//!
//! | primitive | PostgreSQL |
//! |---|---|
//! | queues | a row in `<schema>.queues`; its messages and dedup marks reference it (`ON DELETE CASCADE`) |
//! | message | a row of `<schema>.messages`: `seq` (identity: FIFO order), `id`, `payload bytea`, `headers jsonb`, `okey` (ordering key), `priority`, `enqueued_at`, `visible_at`, `leased`, `attempt`, `generation` |
//! | send | one `INSERT … SELECT FROM unnest(…)` per batch, after a transaction advisory lock per ordering key in the batch (so a key's `seq` follows commit order); a statement trigger sends `NOTIFY` with the queue's name, delivered at commit (so a transactional enqueue wakes workers only if it commits) |
//! | receive | `WITH c AS (SELECT … WHERE visible_at <= now() … ORDER BY priority DESC, seq LIMIT n FOR UPDATE SKIP LOCKED) UPDATE … SET visible_at = now() + lease, leased, attempt + 1, generation + 1` |
//! | lease | `visible_at` of a leased row; when it passes, the row is receivable again (`attempt + 1`) |
//! | receipt | `seq.generation`: a receipt whose generation moved on, or whose lease passed, is [`queue_core::QueueError::ReceiptExpired`] and changes nothing |
//! | ack | `DELETE … USING unnest(seqs, generations)` for the current receipts |
//! | nack / give back | `UPDATE … SET leased = false, visible_at = now() + delay` (a give-back also takes the attempt back) |
//! | extend | `UPDATE … SET visible_at = now() + lease` |
//! | long poll | waits on a `LISTEN` connection's notification for the queue, the next due row's time, or `poll_interval` (default 1 s: the bound when notifications are lost, e.g. while the listening connection reconnects), whichever comes first |
//! | delay | `visible_at` in the future, up to a year |
//! | ordering | per key: a row with an ordering key is receivable only while no older row of its key is left (one in flight per key, in send order, like SQS FIFO groups) |
//! | priority | higher first, FIFO within a priority |
//! | dedup | `<schema>.dedup (queue, dedup_id, id, expires_at)`, claimed in the send's own statement (window `dedup_window`, default 5 minutes) |
//! | DLQ | the `{queue}-dlq` queue; a dead-lettered row is moved in one statement (deleted from the queue, its copy inserted), so a crash leaves it in one place or the other |
//! | stats | exact: one `count(*) FILTER (…)` over the queue's rows |
//! | peek | the next ready rows, read without a lock |
//! | purge / delete | `DELETE FROM messages` / `DELETE FROM queues` (cascading) |
//! | vacuum | the driver's own `VACUUM` of `messages` after 20,000 settled rows and at least every `vacuum_interval`, one process per schema, plus a sweep of expired dedup marks (`vacuum.rs` says why) |
//!
//! The schema is created on connect and versioned (`<schema>.schema_version`): a schema
//! written by a newer driver is refused with [`queue_core::QueueError::Schema`], an older
//! one is migrated, each under an advisory lock so that processes starting together do
//! not race. A table dropped by hand is reported as `Schema` too, at run time and on
//! connect (the driver does not recreate it empty: restore it, or drop the schema).
//!
//! ## The store's mapping
//!
//! | primitive | PostgreSQL |
//! |---|---|
//! | storage | one table `<schema>.kv (key text primary key, value bytea, version bigint, expires_at timestamptz)`, created with its schema on connect (under an advisory lock, so processes starting together do not race) |
//! | get | `SELECT value, version … WHERE key = $1 AND expires_at > now()` |
//! | insert | `INSERT … ON CONFLICT (key) DO UPDATE … WHERE kv.expires_at <= now() RETURNING version`: a live row wins, an expired one is taken over, in one statement |
//! | replace | `UPDATE … SET version = version + 1 … WHERE key = $1 AND version = $2 AND expires_at > now() RETURNING version` |
//! | delete | `DELETE … RETURNING expires_at > now()` |
//! | get_many | `SELECT key, value, version … WHERE key = ANY($1) AND expires_at > now()` |
//! | write_many | the batch's inserts as one `INSERT … SELECT … FROM unnest($1, $2, $3) ON CONFLICT …` and its replaces as one `UPDATE … FROM unnest(…)`, each statement its own transaction, both sent together: two statements per batch, whatever its size |
//! | retention | `expires_at` from the database's clock; reads never see an expired row, and the store deletes expired rows in batches of 1,000 at most once per `sweep_interval` (default a minute), as it inserts, so the table does not grow without bound |
//!
//! Statements are prepared once per connection. A lost connection is reopened by the next
//! call (that call fails with [`queue_core::QueueError::Connection`]; nothing was
//! half-written, every write is one statement). A send whose reply was lost may have
//! committed: resend with the same dedup id where a duplicate matters (a transactional
//! send has no such window: its transaction's outcome is the answer).
//!
//! ## URLs
//!
//! `postgres://user:password@host:port/database[?schema=queue&connect_timeout=5s&application_name=queue-postgres]`
//! (`postgresql://` too). `schema` (default `queue`) is a lower-case identifier of at most
//! 57 bytes (its notification channel `queue_<schema>` must fit PostgreSQL's 63). The
//! queue driver also takes `max_message_size` (default 1 MiB, at most 64 MiB),
//! `dedup_window` (default 5m), `poll_interval` (default 1s, 10ms to 1m) and
//! `vacuum_interval` (default 30s, 1s to 24h, `0s` off); the store takes
//! `sweep_interval`. Options are parsed by [`queue_core::options::UrlOptions`]: an
//! unknown one is an error.
//!
//! ## What it cannot do
//! - No TLS: `sslmode=require` is refused with an error (loopback and private networks
//!   only, or a TLS-terminating proxy).
//! - One connection per driver or store for its statements (pipelined), plus one
//!   listening connection per driver: open more drivers to spread load over more
//!   connections. A statement that waits on a lock (a `delete_queue` behind an open
//!   transaction that sent to the queue, a dedup claim behind an uncommitted one) holds
//!   up the driver's other statements, heartbeats included.
//! - Each receive walks the queue's rows in order and skips those leased, delayed or
//!   behind an older row of their key: a key with a long backlog ahead of the others
//!   makes receives slower (spread work over keys, or use fairness shards).
//! - A transaction that sends keyed messages holds those keys (a transaction-level
//!   advisory lock per key, so that `seq` follows commit order) until it ends: send a
//!   transaction's keyed messages in one call, or in the same key order everywhere, or
//!   PostgreSQL may end one of two such transactions with a deadlock error.
//! - Every send's trigger and every keyed ack `NOTIFY`: PostgreSQL serializes the commits
//!   of notifying transactions.
//! - Rows are deleted when acked: a busy queue table needs vacuum to keep up. The driver
//!   vacuums its table itself every `vacuum_interval` in which it settled messages (one
//!   process at a time), since autovacuum's defaults wait too long (or are off); no vacuum
//!   removes rows a transaction open elsewhere may still see, so a long-open transaction
//!   still grows the table and slows receives until it ends (measured in
//!   docs/benchmarks.md; set `idle_in_transaction_session_timeout`).
#![warn(missing_docs, missing_debug_implementations)]

use std::time::Duration;

use queue_core::options::UrlOptions;
use queue_core::{QueueError, Result};

mod driver;
mod listen;
mod schema;
mod sql;
mod store;
pub mod txn;
mod vacuum;

pub use driver::{PostgresConfig, PostgresQueue};
pub use store::PostgresStore;

const BACKEND: &str = "postgres";

/// Registers the `postgres://` and `postgresql://` schemes with [`queue_core::connect`].
pub fn register() {
    for scheme in ["postgres", "postgresql"] {
        queue_core::register(scheme, |url| {
            Box::pin(async move {
                let q = PostgresQueue::connect(url.as_str()).await?;
                Ok(std::sync::Arc::new(q) as std::sync::Arc<dyn queue_core::Driver>)
            })
        });
    }
}

/// Where to connect, from a URL: the connection settings and the schema.
pub(crate) struct Target {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) schema: String,
}

impl Target {
    /// Parses the options every user of the URL shares; the caller reads its own from
    /// the returned options, then calls `finish`.
    pub(crate) fn parse(url: &str) -> Result<(Target, UrlOptions)> {
        let parsed =
            url::Url::parse(url).map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(QueueError::invalid_url(
                url,
                "expected postgres:// or postgresql://",
            ));
        }
        let mut o = UrlOptions::new(&parsed);
        let schema = o.string("schema")?.unwrap_or_else(|| "queue".into());
        let valid = !schema.is_empty()
            && schema.len() <= 57
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(o.error(format!(
                "schema={schema:?}: want a lower-case identifier (a-z, 0-9, _) of at most 57 bytes \
                 (its notification channel, queue_<schema>, must fit PostgreSQL's 63)"
            )));
        }
        let connect_timeout = o
            .duration_within(
                "connect_timeout",
                Duration::from_millis(1),
                Duration::from_secs(600),
            )?
            .unwrap_or(Duration::from_secs(5));
        if let Some(mode) = o.string("sslmode")? {
            if mode != "disable" && mode != "prefer" {
                return Err(o.error(format!(
                    "sslmode={mode}: this driver has no TLS; use disable (or prefer)"
                )));
            }
        }
        let app_name = o
            .string("application_name")?
            .unwrap_or_else(|| "queue-postgres".into());
        let host = parsed
            .host_str()
            .ok_or_else(|| QueueError::invalid_url(url, "no host"))?;
        let db = parsed.path().trim_start_matches('/');
        let mut config = tokio_postgres::Config::new();
        config
            .host(host.trim_start_matches('[').trim_end_matches(']'))
            .port(parsed.port().unwrap_or(5432))
            .connect_timeout(connect_timeout)
            .application_name(&app_name);
        if !parsed.username().is_empty() {
            config.user(decode(parsed.username()));
        }
        if let Some(p) = parsed.password() {
            config.password(decode(p));
        }
        if !db.is_empty() {
            config.dbname(decode(db));
        }
        Ok((Target { config, schema }, o))
    }
}

pub(crate) fn map_err(e: tokio_postgres::Error) -> QueueError {
    use tokio_postgres::error::SqlState;
    if let Some(code) = e.code() {
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return QueueError::Auth {
                backend: BACKEND,
                source: Box::new(e),
            };
        }
    }
    // No SQLSTATE: the connection, not the statement, failed. Class 08 (connection
    // exception) and 57P0x (the server shutting down or terminating this session) are
    // the connection too.
    let lost = e.code().is_none_or(|c| {
        let c = c.code();
        c.starts_with("08") || c.starts_with("57P0")
    });
    if e.is_closed() || lost {
        return QueueError::Connection {
            backend: BACKEND,
            source: Box::new(e),
        };
    }
    match e.as_db_error() {
        // "db error" alone says nothing: carry the server's message and code.
        Some(db) => QueueError::backend(
            BACKEND,
            format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        ),
        None => QueueError::backend(BACKEND, e),
    }
}

/// Percent-decodes a URL part (user, password, database).
fn decode(s: &str) -> String {
    // form-urlencoded decoding, with '+' kept as itself (it is not a space in a URL's
    // user info or path).
    let s = s.replace('+', "%2B");
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
