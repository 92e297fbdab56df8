//! [`PostgresQueue`]: the queue driver. The mapping is in the [crate docs](crate).

use std::sync::atomic::{AtomicU64, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use queue_core::driver::{
    dead_letter_copy, first_enqueued, receipt, Capabilities, DeadLetterReason, Driver, LeaseModel,
    Ordering, Peek, ReceiveOptions,
};
use queue_core::{Delivery, Message, MessageId, Peeked, QueueError, QueueStats, Receipt, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::listen::{self, Wakers};
use crate::sql::*;
use crate::{map_err, schema, Target, BACKEND};

/// Longest delay, nack delay and lease (a year).
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Driver settings read from the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// The schema holding the tables (`?schema=`, default `queue`).
    pub schema: String,
    /// Largest message accepted, payload plus headers (`?max_message_size=`, default 1 MiB).
    pub max_message_size: usize,
    /// How long a dedup id keeps dropping resends (`?dedup_window=`, default 5 minutes).
    pub dedup_window: Duration,
    /// The longest a long poll waits without a notification before it looks again
    /// (`?poll_interval=`, default 1 s): the bound on a wake-up lost while the listening
    /// connection reconnects, or sent by something that does not notify.
    pub poll_interval: Duration,
    /// The longest the driver goes without vacuuming its table when it settled messages
    /// since the last time (`?vacuum_interval=`, default 30 s; it also vacuums after every
    /// 20,000 rows it settles; `0s` leaves it all to autovacuum). See `vacuum.rs` for why.
    pub vacuum_interval: Duration,
}

/// The PostgreSQL queue driver. See the [crate docs](crate) for its mapping.
pub struct PostgresQueue {
    shared: Arc<Shared>,
    /// The listening task, stopped with the driver.
    listener: tokio::task::JoinHandle<()>,
    /// The vacuum task, if any, stopped with the driver.
    vacuum: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for PostgresQueue {
    fn drop(&mut self) {
        self.listener.abort();
        if let Some(v) = &self.vacuum {
            v.abort();
        }
    }
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection settings hold the password: only the settings are shown.
        f.debug_struct("PostgresQueue")
            .field("config", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) settings: PostgresConfig,
    /// Rows deleted (acked, dead-lettered, purged) since the last vacuum.
    pub(crate) settled: AtomicU64,
    /// The database's name and its server's system identifier, read on connect.
    identity: std::sync::OnceLock<(String, i64)>,
    current: Mutex<Option<Arc<Conn>>>,
    reconnect: tokio::sync::Mutex<()>,
    wakers: Arc<Wakers>,
    requests: AtomicU64,
}

impl PostgresQueue {
    /// Connects (see the crate docs for the URL), creating or migrating the schema.
    pub async fn connect(url: &str) -> Result<Self> {
        let (target, mut o) = Target::parse(url)?;
        let max_message_size = o
            .size_within("max_message_size", 1, 64 * 1024 * 1024)?
            .unwrap_or(1024 * 1024);
        let dedup_window = o
            .duration_within("dedup_window", Duration::from_millis(1), MAX_DELAY)?
            .unwrap_or(Duration::from_secs(300));
        let poll_interval = o
            .duration_within(
                "poll_interval",
                Duration::from_millis(10),
                Duration::from_secs(60),
            )?
            .unwrap_or(Duration::from_secs(1));
        let vacuum_interval = match o.duration("vacuum_interval")? {
            None => Duration::from_secs(30),
            Some(d) if d.is_zero() => Duration::ZERO,
            Some(d) if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) => {
                return Err(o.error(format!("vacuum_interval={d:?}: want 0s (off) or 1s to 24h")))
            }
            Some(d) => d,
        };
        o.finish()?;
        let Target { config, schema } = target;
        let settings = PostgresConfig {
            schema,
            max_message_size,
            dedup_window,
            poll_interval,
            vacuum_interval,
        };
        let wakers = Arc::new(Wakers::default());
        let shared = Arc::new(Shared {
            pg: config.clone(),
            settings,
            current: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(()),
            wakers: wakers.clone(),
            requests: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            identity: std::sync::OnceLock::new(),
        });
        let c = shared.conn().await?;
        let row = c
            .client
            .query_one(
                "SELECT current_database()::text, (SELECT system_identifier FROM pg_control_system())",
                &[],
            )
            .await
            .map_err(map_err)?;
        let _ = shared.identity.set((row.get(0), row.get(1)));
        let listener = tokio::spawn(listen::run(
            config,
            schema::channel(&shared.settings.schema),
            wakers,
        ));
        let vacuum = (!vacuum_interval.is_zero())
            .then(|| tokio::spawn(crate::vacuum::run(Arc::downgrade(&shared), vacuum_interval)));
        Ok(PostgresQueue {
            shared,
            listener,
            vacuum,
        })
    }

    /// The settings read from the URL.
    pub fn config(&self) -> &PostgresConfig {
        &self.shared.settings
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.shared.settings.schema
    }

    /// The database's name and its server's system identifier (what a transactional
    /// send checks its transaction against).
    pub(crate) fn identity(&self) -> (String, i64) {
        self.shared.identity.get().cloned().unwrap_or_default()
    }
}

impl Shared {
    /// The open connection, or a new one (schema ensured, statements prepared).
    async fn conn(&self) -> Result<Arc<Conn>> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _one = self.reconnect.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let (mut client, connection) = self.pg.connect(NoTls).await.map_err(map_err)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres: connection ended");
            }
        });
        let s = &self.settings.schema;
        schema::ensure(&mut client, s).await?;
        let conn = Arc::new(prepare(client, s).await.map_err(|e| self.err(e, None))?);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    fn live(&self) -> Option<Arc<Conn>> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().filter(|c| !c.client.is_closed()).cloned()
    }

    /// Maps a statement's error: a missing table is [`QueueError::Schema`], a missing
    /// queue row (the foreign key) [`QueueError::UnknownQueue`].
    fn err(&self, e: tokio_postgres::Error, queue: Option<&str>) -> QueueError {
        match e.code() {
            Some(c)
                if *c == SqlState::UNDEFINED_TABLE
                    || *c == SqlState::UNDEFINED_FUNCTION
                    || *c == SqlState::UNDEFINED_COLUMN =>
            {
                let what = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string());
                schema::missing(&self.settings.schema, &what)
            }
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                QueueError::UnknownQueue(queue.unwrap_or_default().to_string())
            }
            _ => map_err(e),
        }
    }

    fn count(&self) {
        self.requests.fetch_add(1, AO::Relaxed);
    }

    async fn exists(&self, c: &Conn, queue: &str) -> Result<bool> {
        self.count();
        let row = c
            .client
            .query_opt(&c.exists, &[&queue])
            .await
            .map_err(|e| self.err(e, Some(queue)))?;
        Ok(row.is_some())
    }

    /// The error for a receipt that matched nothing: the queue is gone, or the receipt
    /// is stale.
    async fn unmatched(&self, c: &Conn, queue: &str) -> QueueError {
        match self.exists(c, queue).await {
            Ok(false) => QueueError::UnknownQueue(queue.to_string()),
            Ok(true) => QueueError::ReceiptExpired,
            Err(e) => e,
        }
    }

    /// Back to the queue after `delay`; `uncount` also gives the attempt back.
    async fn requeue(
        &self,
        queue: &str,
        r: &Receipt,
        delay: Duration,
        uncount: bool,
    ) -> Result<()> {
        let (seq, generation) = parse_receipt(r)?;
        let c = self.conn().await?;
        self.count();
        let rows = c
            .client
            .query(
                &c.requeue,
                &[&queue, &seq, &generation, &millis(delay), &uncount],
            )
            .await
            .map_err(|e| self.err(e, Some(queue)))?;
        if rows.is_empty() {
            return Err(self.unmatched(&c, queue).await);
        }
        self.wakers.wake(queue);
        Ok(())
    }
}

#[async_trait]
impl Driver for PostgresQueue {
    fn kind(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::baseline()
            .with_max_message_size(self.shared.settings.max_message_size)
            .with_purge(true)
            .with_max_batch(1000)
            .with_max_delay(Some(MAX_DELAY))
            .with_max_nack_delay(Some(MAX_DELAY))
            .with_ordering(Ordering::PerKey)
            .with_priority(true)
            .with_dedup_window(Some(self.shared.settings.dedup_window))
            .with_lease(LeaseModel::per_message(true))
            .with_max_lease(MAX_DELAY)
            .with_exact_stats(true)
            .with_stale_receipts_refused(true)
            .with_give_back_keeps_attempt(true)
            .with_timer_granularity(Duration::from_millis(1))
            .with_peek(Peek::All)
            // Keys live in indexed `text` columns: no NUL, and a B-tree entry holds about
            // 2.7 kB, so 1 KiB leaves room for the queue name beside it.
            .with_max_key_len(Some(1024))
            .with_key_chars(queue_core::driver::KeyChars::NoNul)
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        let c = self.shared.conn().await?;
        let s = &self.shared.settings.schema;
        self.shared.count();
        c.client
            .execute(
                &format!(
                    r#"INSERT INTO "{s}".queues (name) VALUES ($1), ($2) ON CONFLICT DO NOTHING"#
                ),
                &[&queue, &self.dead_letter_queue(queue)],
            )
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        Ok(())
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        let c = self.shared.conn().await?;
        let s = &self.shared.settings.schema;
        self.shared.count();
        c.client
            .execute(
                &format!(r#"DELETE FROM "{s}".queues WHERE name IN ($1, $2)"#),
                &[&queue, &self.dead_letter_queue(queue)],
            )
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        self.shared.wakers.wake(queue);
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        let c = self.shared.conn().await?;
        if !self.shared.exists(&c, queue).await? {
            return Err(QueueError::UnknownQueue(queue.to_string()));
        }
        let s = &self.shared.settings.schema;
        self.shared.count();
        let n = c
            .client
            .execute(
                &format!(r#"DELETE FROM "{s}".messages WHERE queue = $1"#),
                &[&queue],
            )
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        self.shared.settled.fetch_add(n, AO::Relaxed);
        Ok(())
    }

    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for m in &batch {
            check_text(m)?;
        }
        let c = self.shared.conn().await?;
        let q = queue.to_string();
        let cols = columns(&batch);
        let ids: Vec<MessageId> = batch.iter().map(|m| m.id.clone()).collect();
        self.shared.count();
        if cols.dedup.iter().all(Option::is_none) {
            c.client
                .execute(&c.send, &cols.params(&q))
                .await
                .map_err(|e| self.shared.err(e, Some(queue)))?;
            return Ok(ids);
        }
        // A dedup id repeated within the batch: the first is sent, the rest answer its id.
        let mut first: std::collections::HashMap<&str, usize> = Default::default();
        let mut dedup = cols.dedup.clone();
        let mut same_as = vec![None; batch.len()];
        for (i, d) in cols.dedup.iter().enumerate() {
            if let Some(d) = d {
                match first.get(d.as_str()) {
                    Some(&j) => {
                        same_as[i] = Some(j);
                        dedup[i] = None;
                    }
                    None => {
                        first.insert(d, i);
                    }
                }
            }
        }
        // Rows that repeat an id within the batch are left out of the insert.
        let keep: Vec<usize> = (0..batch.len()).filter(|i| same_as[*i].is_none()).collect();
        let sub = Columns {
            ids: pick(&keep, &cols.ids),
            payloads: pick(&keep, &cols.payloads),
            headers: pick(&keep, &cols.headers),
            keys: pick(&keep, &cols.keys),
            priorities: pick(&keep, &cols.priorities),
            delays: pick(&keep, &cols.delays),
            enqueued: pick(&keep, &cols.enqueued),
            dedup: pick(&keep, &dedup),
        };
        let window = millis(self.shared.settings.dedup_window);
        let p = sub.params(&q);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p.to_vec();
        params.push(&sub.dedup);
        params.push(&window);
        let rows = c
            .client
            .query(&c.send_dedup, &params)
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        let mut out: Vec<MessageId> = ids.clone();
        let mut lookup = Vec::new();
        for r in &rows {
            let ord: i64 = r.get(0);
            let fresh: bool = r.get(1);
            let holder: Option<String> = r.get(2);
            let i = keep[usize::try_from(ord - 1).unwrap_or(0)];
            if !fresh {
                match holder {
                    Some(h) => out[i] = MessageId::new(h),
                    None => lookup.push(i),
                }
            }
        }
        if !lookup.is_empty() {
            // Claimed by a concurrent send after this statement's snapshot: read it now.
            let s = &self.shared.settings.schema;
            let wanted: Vec<String> = lookup
                .iter()
                .filter_map(|i| cols.dedup[*i].clone())
                .collect();
            let found = c
                .client
                .query(
                    &format!(
                        r#"SELECT dedup_id, id FROM "{s}".dedup WHERE queue = $1 AND dedup_id = ANY($2)"#
                    ),
                    &[&q, &wanted],
                )
                .await
                .map_err(|e| self.shared.err(e, Some(queue)))?;
            for i in lookup {
                let d = cols.dedup[i].as_deref();
                if let Some(r) = found.iter().find(|r| Some(r.get::<_, &str>(0)) == d) {
                    out[i] = MessageId::new(r.get::<_, String>(1));
                }
            }
        }
        for (i, j) in same_as.iter().enumerate() {
            if let Some(j) = j {
                out[i] = out[*j].clone();
            }
        }
        Ok(out)
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + opts.wait.min(MAX_DELAY);
        let max = i64::try_from(opts.max.min(1000)).unwrap_or(1000);
        let lease = millis(opts.lease.min(MAX_DELAY));
        let q = queue.to_string();
        loop {
            let wake = self.shared.wakers.of(queue);
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let c = self.shared.conn().await?;
            self.shared.count();
            let rows = c
                .client
                .query(&c.receive, &[&q, &max, &lease])
                .await
                .map_err(|e| self.shared.err(e, Some(queue)))?;
            if !rows.is_empty() {
                let mut got: Vec<(i16, Got)> = rows.iter().map(|r| (r.get(8), got(r))).collect();
                got.sort_by_key(|(p, g)| (std::cmp::Reverse(*p), g.seq));
                return Ok(got
                    .into_iter()
                    .map(|(_, g)| {
                        Delivery::new(
                            queue,
                            MessageId::new(g.id),
                            g.payload,
                            receipt(format!("{}.{}", g.seq, g.generation)),
                        )
                        .with_headers(g.headers)
                        .with_attempt(g.attempt)
                        .with_first_enqueued_at(g.enqueued)
                        .with_ordering_key(g.key)
                    })
                    .collect());
            }
            self.shared.count();
            let info = c
                .client
                .query_one(&c.wait_info, &[&q])
                .await
                .map_err(|e| self.shared.err(e, Some(queue)))?;
            if !info.get::<_, bool>(0) {
                return Err(QueueError::UnknownQueue(queue.to_string()));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline.min(now + self.shared.settings.poll_interval);
            if let Some(due_ms) = info.get::<_, Option<f64>>(1) {
                // An 'infinity' a hand-edited row holds is no due time at all.
                if let Ok(due) = Duration::try_from_secs_f64((due_ms.max(0.0) + 1.0) / 1000.0) {
                    until = until.min(now + due.min(MAX_DELAY));
                }
            }
            // Cancelled: only the wait is cut short; the take above ran to the end.
            tokio::select! {
                _ = tokio::time::timeout_at(until, notified) => {}
                _ = opts.cancel.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>> {
        let c = self.shared.conn().await?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.shared.count();
        let rows = c
            .client
            .query(&c.peek, &[&queue, &max])
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        if rows.is_empty() && !self.shared.exists(&c, queue).await? {
            return Err(QueueError::UnknownQueue(queue.to_string()));
        }
        Ok(rows
            .iter()
            .map(|r| {
                let g = got(r);
                Peeked::new(MessageId::new(g.id), g.payload)
                    .with_headers(g.headers)
                    .with_deliveries(g.attempt)
                    .with_first_enqueued_at(g.enqueued)
                    .with_ordering_key(g.key)
            })
            .collect())
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        let mut seqs = Vec::with_capacity(receipts.len());
        let mut gens = Vec::with_capacity(receipts.len());
        for r in receipts {
            let (s, g) = parse_receipt(r)?;
            seqs.push(s);
            gens.push(g);
        }
        let c = self.shared.conn().await?;
        self.shared.count();
        let rows = c
            .client
            .query(&c.ack, &[&queue, &seqs, &gens])
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        // The -1 row is the statement's notification, not a receipt.
        let done: std::collections::HashSet<i64> = rows
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .filter(|s| *s > 0)
            .collect();
        self.shared
            .settled
            .fetch_add(done.len() as u64, AO::Relaxed);
        self.shared.wakers.wake(queue);
        let failed: Vec<usize> = (0..seqs.len())
            .filter(|i| !done.contains(&seqs[*i]))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let why = self.shared.unmatched(&c, queue).await;
        if receipts.len() == 1 || matches!(why, QueueError::UnknownQueue(_)) {
            return Err(why);
        }
        Err(QueueError::PartialBatch {
            failed: failed.into_iter().map(|i| (i, why.to_string())).collect(),
        })
    }

    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.shared
            .requeue(queue, receipt, delay.min(MAX_DELAY), false)
            .await
    }

    async fn give_back(&self, d: &Delivery, delay: Duration) -> Result<()> {
        self.shared
            .requeue(&d.queue, &d.receipt, delay.min(MAX_DELAY), true)
            .await
    }

    async fn extend(&self, queue: &str, r: &Receipt, lease: Duration) -> Result<()> {
        let (seq, generation) = parse_receipt(r)?;
        let c = self.shared.conn().await?;
        self.shared.count();
        let rows = c
            .client
            .query(
                &c.extend,
                &[&queue, &seq, &generation, &millis(lease.min(MAX_DELAY))],
            )
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        if rows.is_empty() {
            return Err(self.shared.unmatched(&c, queue).await);
        }
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let c = self.shared.conn().await?;
        self.shared.count();
        let dlq = self.dead_letter_queue(queue);
        let r = c
            .client
            .query_one(&c.stats, &[&queue, &dlq])
            .await
            .map_err(|e| self.shared.err(e, Some(queue)))?;
        if !r.get::<_, bool>(4) {
            return Err(QueueError::UnknownQueue(queue.to_string()));
        }
        let n = |i: usize| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
        Ok(QueueStats::new(n(0), n(1), n(2), n(3)))
    }

    async fn dead_letter(&self, d: &Delivery, reason: &DeadLetterReason) -> Result<()> {
        let (seq, generation) = parse_receipt(&d.receipt)?;
        let copy = dead_letter_copy(d, reason);
        let c = self.shared.conn().await?;
        let dlq = self.dead_letter_queue(&d.queue);
        let enqueued = epoch_secs(first_enqueued(&copy.headers, d.first_enqueued_at));
        self.shared.count();
        let rows = c
            .client
            .query(
                &c.dead_letter,
                &[
                    &d.queue,
                    &seq,
                    &generation,
                    &dlq,
                    &copy.id.as_str(),
                    &copy.payload.as_ref(),
                    &headers_json(&copy.headers),
                    &copy.ordering_key,
                    &enqueued,
                ],
            )
            .await
            .map_err(|e| self.shared.err(e, Some(&dlq)))?;
        if rows.is_empty() {
            return Err(self.shared.unmatched(&c, &d.queue).await);
        }
        self.shared.settled.fetch_add(1, AO::Relaxed);
        self.shared.wakers.wake(&d.queue);
        Ok(())
    }

    fn requests_made(&self) -> Option<u64> {
        Some(self.shared.requests.load(AO::Relaxed))
    }
}
