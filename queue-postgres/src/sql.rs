//! The driver's SQL: the statements each connection prepares, and the row and column
//! encodings they share with transactional enqueue. The mapping is in the
//! [crate docs](crate).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_core::driver::{first_enqueued, receipt_str};
use queue_core::{Headers, Message, QueueError, Receipt, Result};
use tokio_postgres::{Client, Row, Statement};

use crate::{schema, BACKEND};

/// One connection and its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) send: Statement,
    pub(crate) send_dedup: Statement,
    pub(crate) receive: Statement,
    pub(crate) wait_info: Statement,
    pub(crate) ack: Statement,
    pub(crate) requeue: Statement,
    pub(crate) extend: Statement,
    pub(crate) stats: Statement,
    pub(crate) dead_letter: Statement,
    pub(crate) peek: Statement,
    pub(crate) exists: Statement,
}

pub(crate) async fn prepare(
    client: Client,
    s: &str,
) -> std::result::Result<Conn, tokio_postgres::Error> {
    let chan = schema::channel(s);
    let m = format!(r#""{s}".messages"#);
    let lease_until = "now() + $3::float8 * interval '1 millisecond'";
    let cols = "m.seq, m.generation, m.id, m.payload, m.headers::text, m.okey, m.attempt, \
                extract(epoch from m.enqueued_at)::float8";
    let (input, insert, locks) = (INPUT, insert_sql(s), key_locks(s));
    let send = client.prepare(&send_sql(s)).await?;
    // With dedup ids ($9, NULL where none; $10 the window): claim each id in the same
    // statement as the insert, so a crash leaves both or neither. The last SELECT reads
    // the statement's snapshot: a live mark's holder, or NULL for one claimed meanwhile
    // by a concurrent send (looked up again by the caller).
    let send_dedup = client
        .prepare(&format!(
            r#"WITH t AS (SELECT t.*, d.dedup FROM {input}
                          JOIN unnest($9::text[]) WITH ORDINALITY AS d(dedup, ord2)
                            ON d.ord2 = t.ord),
               claimed AS (
                 INSERT INTO "{s}".dedup AS x (queue, dedup_id, id, expires_at)
                 SELECT $1, t.dedup, t.id, now() + $10::float8 * interval '1 millisecond'
                 FROM t WHERE t.dedup IS NOT NULL
                 ON CONFLICT (queue, dedup_id) DO UPDATE
                   SET id = EXCLUDED.id, expires_at = EXCLUDED.expires_at
                   WHERE x.expires_at <= now()
                 RETURNING dedup_id),
               {locks},
               ins AS (
                 {insert} FROM t, key_locks
                 WHERE t.dedup IS NULL OR t.dedup IN (SELECT dedup_id FROM claimed)
                 ORDER BY t.ord
                 RETURNING 1)
             SELECT t.ord, (t.dedup IS NULL OR t.dedup IN (SELECT dedup_id FROM claimed)),
                    x.id
             FROM t LEFT JOIN "{s}".dedup x ON x.queue = $1 AND x.dedup_id = t.dedup
             ORDER BY t.ord"#
        ))
        .await?;
    let receive = client
        .prepare(&format!(
            "WITH c AS (
               SELECT n.seq FROM {m} n
               WHERE n.queue = $1 AND n.visible_at <= now()
                 AND (n.okey IS NULL OR NOT EXISTS (
                   SELECT 1 FROM {m} p WHERE p.queue = $1 AND p.okey = n.okey AND p.seq < n.seq))
               ORDER BY n.priority DESC, n.seq
               LIMIT $2
               FOR UPDATE SKIP LOCKED)
             UPDATE {m} m SET visible_at = {lease_until}, leased = true,
               attempt = m.attempt + 1, generation = m.generation + 1
             FROM c WHERE m.seq = c.seq
             RETURNING {cols}, m.priority"
        ))
        .await?;
    // Whether the queue exists, and in how many ms its next row becomes due.
    let wait_info = client
        .prepare(&format!(
            r#"SELECT EXISTS (SELECT 1 FROM "{s}".queues WHERE name = $1),
                      (SELECT extract(epoch from min(visible_at) - now())::float8 * 1000
                       FROM {m} WHERE queue = $1 AND visible_at > now())"#
        ))
        .await?;
    let valid = "m.queue = $1 AND m.seq = r.seq AND m.generation = r.gen \
                 AND m.leased AND m.visible_at > now()";
    // A keyed ack lets the key's next row through: wake the queue's long polls.
    let ack = client
        .prepare(&format!(
            "WITH d AS (
               DELETE FROM {m} m USING unnest($2::int8[], $3::int8[]) AS r(seq, gen)
               WHERE {valid} RETURNING m.seq, m.okey)
             SELECT seq FROM d
             UNION ALL
             SELECT -1 FROM (SELECT pg_notify('{chan}', $1) FROM d
                             WHERE d.okey IS NOT NULL LIMIT 1) w"
        ))
        .await?;
    let requeue = client
        .prepare(&format!(
            "WITH u AS (
               UPDATE {m} m SET leased = false,
                 visible_at = now() + $4::float8 * interval '1 millisecond',
                 generation = m.generation + 1,
                 attempt = CASE WHEN $5 THEN greatest(m.attempt - 1, 0) ELSE m.attempt END
               FROM (SELECT $2::int8 AS seq, $3::int8 AS gen) r
               WHERE {valid} RETURNING m.seq)
             SELECT seq FROM u
             UNION ALL
             SELECT -1 FROM (SELECT pg_notify('{chan}', $1) FROM u) w"
        ))
        .await?;
    let extend = client
        .prepare(&format!(
            "UPDATE {m} m SET visible_at = now() + $4::float8 * interval '1 millisecond'
             FROM (SELECT $2::int8 AS seq, $3::int8 AS gen) r
             WHERE {valid} RETURNING m.seq"
        ))
        .await?;
    let stats = client
        .prepare(&format!(
            r#"SELECT
                 count(*) FILTER (WHERE visible_at <= now()),
                 count(*) FILTER (WHERE leased AND visible_at > now()),
                 count(*) FILTER (WHERE NOT leased AND visible_at > now()),
                 (SELECT count(*) FROM {m} WHERE queue = $2),
                 EXISTS (SELECT 1 FROM "{s}".queues WHERE name = $1)
               FROM {m} WHERE queue = $1"#
        ))
        .await?;
    // $1 queue, $2 seq, $3 generation; the copy: $4 DLQ, $5 id, $6 payload, $7 headers,
    // $8 key, $9 first enqueued (epoch s).
    let dead_letter = client
        .prepare(&format!(
            "WITH gone AS (
               DELETE FROM {m} m USING (SELECT $2::int8 AS seq, $3::int8 AS gen) r
               WHERE {valid} RETURNING m.seq)
             INSERT INTO {m} (queue, id, payload, headers, okey, enqueued_at, visible_at)
             SELECT $4, $5, $6, $7::text::jsonb, $8, to_timestamp($9::float8), now() FROM gone
             RETURNING seq, pg_notify('{chan}', $1)"
        ))
        .await?;
    let peek = client
        .prepare(&format!(
            "SELECT {cols} FROM {m} m
             WHERE m.queue = $1 AND m.visible_at <= now()
               AND (m.okey IS NULL OR NOT EXISTS (
                 SELECT 1 FROM {m} p WHERE p.queue = $1 AND p.okey = m.okey AND p.seq < m.seq))
             ORDER BY m.priority DESC, m.seq LIMIT $2"
        ))
        .await?;
    let exists = client
        .prepare(&format!(r#"SELECT 1 FROM "{s}".queues WHERE name = $1"#))
        .await?;
    Ok(Conn {
        client,
        send,
        send_dedup,
        receive,
        wait_info,
        ack,
        requeue,
        extend,
        stats,
        dead_letter,
        peek,
        exists,
    })
}

/// The entries of `v` at `at`.
pub(crate) fn pick<T: Clone>(at: &[usize], v: &[T]) -> Vec<T> {
    at.iter().map(|i| v[*i].clone()).collect()
}

pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) fn from_epoch_secs(s: f64) -> SystemTime {
    // Hand-edited rows can hold anything ('infinity' included): never panic on them.
    Duration::try_from_secs_f64(s)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .unwrap_or(UNIX_EPOCH)
}

pub(crate) fn parse_receipt(r: &Receipt) -> Result<(i64, i64)> {
    let text = receipt_str(r);
    text.split_once('.')
        .and_then(|(s, g)| Some((s.parse::<i64>().ok()?, g.parse::<i64>().ok()?)))
        .filter(|(s, g)| *s > 0 && *g > 0)
        .ok_or_else(|| QueueError::invalid_receipt(BACKEND, format!("{text:?}")))
}

pub(crate) fn headers_json(h: &Headers) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "{}".into())
}

/// A row of `cols` (see `prepare`) as its parts.
pub(crate) struct Got {
    pub(crate) seq: i64,
    pub(crate) generation: i64,
    pub(crate) id: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: Headers,
    pub(crate) key: Option<String>,
    pub(crate) attempt: u32,
    pub(crate) enqueued: SystemTime,
}

pub(crate) fn got(r: &Row) -> Got {
    let headers: String = r.get(4);
    let enqueued = from_epoch_secs(r.get::<_, f64>(7));
    let headers: Headers = serde_json::from_str(&headers).unwrap_or_default();
    Got {
        seq: r.get(0),
        generation: r.get(1),
        id: r.get(2),
        payload: r.get(3),
        enqueued: first_enqueued(&headers, enqueued),
        headers,
        key: r.get(5),
        attempt: u32::try_from(r.get::<_, i32>(6)).unwrap_or(0),
    }
}

/// Encodes a batch as the `send` statements' arrays.
pub(crate) struct Columns {
    pub(crate) ids: Vec<String>,
    pub(crate) payloads: Vec<Vec<u8>>,
    pub(crate) headers: Vec<String>,
    pub(crate) keys: Vec<Option<String>>,
    pub(crate) priorities: Vec<i16>,
    pub(crate) delays: Vec<f64>,
    pub(crate) enqueued: Vec<f64>,
    pub(crate) dedup: Vec<Option<String>>,
}

pub(crate) fn columns(batch: &[Message]) -> Columns {
    let now = SystemTime::now();
    let mut c = Columns {
        ids: Vec::with_capacity(batch.len()),
        payloads: Vec::with_capacity(batch.len()),
        headers: Vec::with_capacity(batch.len()),
        keys: Vec::with_capacity(batch.len()),
        priorities: Vec::with_capacity(batch.len()),
        delays: Vec::with_capacity(batch.len()),
        enqueued: Vec::with_capacity(batch.len()),
        dedup: Vec::with_capacity(batch.len()),
    };
    for m in batch {
        c.ids.push(m.id.as_str().to_string());
        c.payloads.push(m.payload.to_vec());
        c.headers.push(headers_json(&m.headers));
        c.keys.push(m.ordering_key.clone());
        c.priorities.push(i16::from(m.priority.unwrap_or(0)));
        c.delays.push(millis(m.delay.unwrap_or_default()));
        c.enqueued.push(epoch_secs(first_enqueued(&m.headers, now)));
        c.dedup.push(m.dedup_id.clone());
    }
    c
}

impl Columns {
    pub(crate) fn params<'a>(
        &'a self,
        queue: &'a String,
    ) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 8] {
        [
            queue,
            &self.ids,
            &self.payloads,
            &self.headers,
            &self.keys,
            &self.priorities,
            &self.delays,
            &self.enqueued,
        ]
    }
}

/// The CTE `key_locks` of a send ($1 the queue, $5 the ordering keys): a transaction
/// lock on each distinct key, taken in key order before any row is numbered, so that two
/// transactions sending to one key get their `seq` in commit order (without it, a
/// transaction open longer could commit an older `seq` after a younger one was already
/// delivered, breaking the key's order). A transaction sending keyed messages holds
/// their keys until it ends; rows without a key take no lock.
fn key_locks(s: &str) -> String {
    format!(
        "key_locks AS MATERIALIZED (
           SELECT count(*) AS n FROM (
             SELECT pg_advisory_xact_lock(hashtext('{s}'), hashtext($1 || '/' || k))
             FROM (SELECT DISTINCT k FROM unnest($5::text[]) AS u(k)
                   WHERE k IS NOT NULL ORDER BY k) keys) taken)"
    )
}

/// A send's input ($1 the queue, then one array per column); rows keep the arrays'
/// order (`seq` by ordinality).
const INPUT: &str = "unnest($2::text[], $3::bytea[], $4::text[], $5::text[], $6::int2[], \
                     $7::float8[], $8::float8[]) WITH ORDINALITY \
                     AS t(id, payload, headers, okey, priority, delay_ms, enqueued, ord)";

/// The insert of a send's rows `t` (its `FROM` follows). Delays count from the
/// statement's clock, not the start of an application's transaction.
fn insert_sql(s: &str) -> String {
    format!(
        r#"INSERT INTO "{s}".messages (queue, id, payload, headers, okey, priority, enqueued_at, visible_at)
           SELECT $1, t.id, t.payload, t.headers::jsonb, t.okey, t.priority,
                  to_timestamp(t.enqueued), clock_timestamp() + t.delay_ms * interval '1 millisecond'"#
    )
}

/// The SQL of a plain send in `schema`: the driver's prepared send, and transactional
/// enqueue's on the application's own connection.
pub(crate) fn send_sql(s: &str) -> String {
    format!(
        "WITH {locks} {insert} FROM {INPUT}, key_locks ORDER BY t.ord",
        locks = key_locks(s),
        insert = insert_sql(s)
    )
}

/// PostgreSQL's `text` and `jsonb` hold no NUL character: refuse one in an id, a key or a
/// header before anything is written.
pub(crate) fn check_text(m: &Message) -> Result<()> {
    let nul = |s: &str| s.contains('\0');
    let bad = nul(m.id.as_str())
        || m.ordering_key.as_deref().is_some_and(nul)
        || m.dedup_id.as_deref().is_some_and(nul)
        || m.headers.iter().any(|(k, v)| nul(k) || nul(v));
    if bad {
        return Err(QueueError::InvalidOption(
            "PostgreSQL text cannot hold a NUL character (in the id, ordering key, dedup id \
             or a header)"
                .into(),
        ));
    }
    Ok(())
}
