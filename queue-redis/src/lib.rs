//! # queue-redis
//!
//! The Redis driver for [`queue_core`], for standalone Redis (7.0 or newer) and Redis
//! Cluster. Applications use it through the `queue` crate's `redis` feature
//! (`queue::connect("redis://127.0.0.1:6379")`); without the facade, call [`register`]
//! once at start-up and use `queue_core::connect`.
//!
//! ## Mapping
//!
//! | primitive | Redis |
//! |---|---|
//! | storage | per queue `Q`: a STRING per message, a ready LIST of message seqs, a `prio` ZSET of prioritized ones, a `delayed` ZSET and a `leased` ZSET, per ordering key a LIST of its seqs, all under the hash tag `{Q}` so every key of a queue lives in one Cluster slot |
//! | send | one Lua script per batch: dedup check per message; one MSET, INCRBY, LPUSH (or ZADD to `delayed` / `prio`) and wake-token push per batch; a keyed message joins its key's list and waits unless it is the key's head |
//! | receive | Lua: promote due delayed messages and expired leases, `ZPOPMIN` of the prioritized ones then `RPOP key max`, one MGET of the messages, HMGET + HSET of the attempt counts and lease generations, one ZADD of every lease deadline. When empty, `BLPOP` on the queue's wake list on a dedicated connection until a send, the next due time or the wait ends: no busy loop |
//! | lease | the message's score in `leased` (server time); expiry puts it back at the head of the line, `attempt + 1` |
//! | ack | Lua: one ZMSCORE of the leases, a generation check per receipt, one ZREM and one DEL for the batch; a keyed message's successor joins the line |
//! | nack with delay | Lua: ZREM from `leased`, ZADD to `delayed` at now + delay (or back to the head when 0) |
//! | give back | the same script, and the attempt count back down by one |
//! | extend | Lua: ZADD XX the new deadline |
//! | delay | `delayed` ZSET, promoted by receivers (server clock; no separate scheduler process) |
//! | DLQ | the core's emulation: queue `Q-dlq` (its own slot), written before the original is acked |
//! | ordering | per key, as BullMQ Pro's groups: only a key's head is ever ready, leased or delayed; the next one joins the line when the head is acked or dead-lettered, so a retry (nacked with its backoff) or an expired lease holds its key while other keys flow |
//! | priority | higher first, FIFO within a priority, as BullMQ's prioritized set: a `prio` ZSET read before the ready list; no priority (or 0) ranks last |
//! | dedup | `SET dedup:<id> NX PX window` inside the send script (default window 5 minutes) |
//! | stats | exact: LLEN/ZCARD after promotion; ready counts the prioritized messages and those waiting behind their key's head (a waiting one's own send delay included) |
//! | peek | Lua: the prioritized ones, then `LRANGE` of the ready list's tail, `MGET` of the messages, `HMGET` of their attempt counts; nothing changes (every queue, dead-letter queues included); messages waiting behind their key's head are not listed (they are not next) |
//! | purge / delete | Lua: DEL every message hash and the state keys (delete also drops `meta`) |
//! | limits | 1 MiB per message by default (`?max_message_size=`, up to 512 MiB), 100 messages per script call, delays and leases up to a year |
//!
//! Receipts carry a lease generation, so an ack or nack from a consumer whose lease ran out
//! is refused ([`QueueError::ReceiptExpired`]) instead of settling someone else's delivery.
//!
//! ## URLs
//!
//! `redis://[user:password@]host:port[/db][?cluster=true&seed=host:port&max_message_size=1MiB&dedup_window=5m]`.
//! `cluster=true` treats the host as a seed of a Redis Cluster (add more seeds with
//! `&seed=host:port`). `rediss://` needs this crate's `tls` feature. Options are parsed by
//! [`queue_core::options::UrlOptions`]: an unknown option or a value over its limit is an
//! error, never ignored or clamped.
//!
//! The backend's [`Driver::idempotency_store`] is a [`RedisIdempotency`] on the same
//! server, so `backend.idempotency_store()` gives workers exactly-once effects across
//! processes with no extra setup. [`RedisStore`] holds the layers' shared state (job
//! status, see `queue_core::status`) on any Redis, whichever queue backend runs the jobs.
//!
//! ## What it cannot do
//! - Priorities and per-key order cost a little per message that uses them (a hash field
//!   each, and a list push per keyed message); unkeyed, unprioritized traffic pays one
//!   `EXISTS` per receive and one per ack batch (docs/benchmarks.md).
//! - A message whose stored body is gone (evicted by a `maxmemory` policy other than
//!   `noeviction`, or deleted by hand) is skipped by receive; if it was a key's head, the
//!   key's later messages wait until the queue is purged. Run Redis with `noeviction`.
//! - Dedup marks outlive a deleted queue until their window ends: a queue deleted and
//!   created again still drops a resend of a dedup id seen in the last window.
//! - Durability is Redis's: without AOF (`appendfsync always` for no loss on a crash), a
//!   Redis restart loses what it had not persisted. The driver reconnects by itself.
//! - Delays and leases use the Redis server's clock, with millisecond resolution; a delayed
//!   message becomes visible when a receiver next looks (receivers block until the next due
//!   time, so that is at once while anyone is receiving).
#![warn(missing_docs, missing_debug_implementations)]

mod codec;
mod scripts;
mod store;

pub use store::RedisStore;

use codec::{decode_receive, encode_body};

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::driver::{
    first_enqueued, receipt, receipt_str, Capabilities, Driver, LeaseModel, Ordering, Peek,
    ReceiveOptions,
};
use queue_core::options::UrlOptions;
use queue_core::{
    from_unix_millis, Begin, Delivery, Headers, IdempotencyStore, Message, MessageId, Peeked,
    QueueError, QueueStats, Receipt, Result,
};
use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, RedisFuture, Value};

const BACKEND: &str = "redis";

/// Longest delay, nack delay and lease the driver accepts.
const MAX_TIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Registers the `redis://` and `rediss://` schemes with [`queue_core::connect`] (the
/// `queue` facade crate does this for you).
pub fn register() {
    queue_core::register("redis", |url| Box::pin(async move { open(url).await }));
    queue_core::register("rediss", |url| Box::pin(async move { open(url).await }));
}

async fn open(url: url::Url) -> Result<Arc<dyn Driver>> {
    Ok(Arc::new(RedisQueue::connect(url.as_str()).await?))
}

/// Driver settings read from the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Deduplication window.
    pub dedup_window: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            max_message_size: 1024 * 1024,
            dedup_window: Duration::from_secs(300),
        }
    }
}

/// One connection to standalone Redis or to a Cluster.
#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Blocking(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Blocking(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Blocking(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Blocking(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Opener {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

impl Opener {
    /// A connection for blocking commands (BLPOP), which must not share a multiplexed
    /// connection with other traffic.
    async fn blocking(&self) -> Result<Conn> {
        match self {
            Opener::Single(c) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                c.get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map(Conn::Blocking)
                    .map_err(map_err)
            }
            Opener::Cluster(c) => c
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(map_err),
        }
    }
}

/// The Redis driver (see the crate docs for its mapping).
pub struct RedisQueue {
    conn: Conn,
    opener: Opener,
    blocking: Mutex<Vec<Conn>>,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection (and any password in it) stays out of logs.
        f.debug_struct("RedisQueue")
            .field("cluster", &matches!(self.opener, Opener::Cluster(_)))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Connects to the Redis (or Cluster) at `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        let parsed =
            url::Url::parse(url).map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
        if parsed.scheme() == "rediss" && !cfg!(feature = "tls") {
            return Err(QueueError::invalid_url(
                url,
                "rediss:// needs queue-redis built with the `tls` feature",
            ));
        }
        let mut config = RedisConfig::default();
        let mut base = parsed.clone();
        base.set_query(None);
        let mut o = UrlOptions::new(&parsed);
        let cluster = o.bool("cluster")?.unwrap_or(false);
        let mut seeds = Vec::new();
        for v in o.all("seed") {
            let mut s = base.clone();
            let (h, p) = v
                .rsplit_once(':')
                .ok_or_else(|| o.error(format!("seed={v:?}: expected host:port")))?;
            let port = p
                .parse::<u16>()
                .map_err(|_| o.error(format!("seed={v:?}: the port must be a number")))?;
            s.set_host(Some(h))
                .map_err(|e| o.error(format!("seed={v:?}: {e}")))?;
            let _ = s.set_port(Some(port));
            seeds.push(s.to_string());
        }
        if let Some(n) = o.size_within("max_message_size", 1, 512 << 20)? {
            config.max_message_size = n;
        }
        if let Some(d) = o.duration_within("dedup_window", Duration::from_millis(1), MAX_TIME)? {
            config.dedup_window = d;
        }
        o.finish()?;
        if !seeds.is_empty() && !cluster {
            return Err(QueueError::invalid_url(url, "seed= needs cluster=true"));
        }
        let (conn, opener) = if cluster {
            seeds.insert(0, base.to_string());
            let client = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(Duration::from_secs(5))
                .response_timeout(Duration::from_secs(30))
                .retries(3)
                .build()
                .map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
            let conn = client.get_async_connection().await.map_err(map_err)?;
            (Conn::Cluster(conn), Opener::Cluster(Box::new(client)))
        } else {
            let client = redis::Client::open(base.as_str())
                .map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
            let cfg = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(Duration::from_secs(30)))
                .set_number_of_retries(2);
            let conn = client
                .get_connection_manager_with_config(cfg)
                .await
                .map_err(map_err)?;
            (Conn::Single(conn), Opener::Single(Box::new(client)))
        };
        let q = RedisQueue {
            conn,
            opener,
            blocking: Mutex::new(Vec::new()),
            config,
        };
        // Fail now, with a typed error, on wrong credentials or a dead server.
        redis::cmd("PING")
            .query_async::<()>(&mut q.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(q)
    }

    fn keys(queue: &str) -> Keys {
        Keys::new(queue)
    }

    /// NACK script: back to the queue after `delay`; `uncount` gives the attempt back.
    async fn requeue(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Duration,
        uncount: bool,
    ) -> Result<()> {
        let keys = Self::keys(queue);
        let (s, g) = parse_receipt(receipt)?;
        let mut inv = scripts::NACK.prepare_invoke();
        for k in keys.main() {
            inv.key(k);
        }
        inv.arg(&keys.prefix)
            .arg(s)
            .arg(g)
            .arg(ms(delay))
            .arg(if uncount { "1" } else { "0" });
        let ok: i64 = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| with_queue(map_err(e), queue))?;
        current_receipt(ok)
    }

    async fn clear(&self, queue: &str, how: &str) -> Result<()> {
        let keys = Self::keys(queue);
        let mut inv = scripts::CLEAR.prepare_invoke();
        for k in keys.main() {
            inv.key(k);
        }
        inv.key(keys.k("seq")).arg(&keys.prefix).arg(how);
        inv.invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| with_queue(map_err(e), queue))
    }

    async fn blocking_conn(&self) -> Result<Conn> {
        let pooled = self
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.opener.blocking().await,
        }
    }

    fn return_blocking(&self, c: Conn) {
        let mut pool = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(c);
        }
    }
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn new(queue: &str) -> Self {
        Keys {
            prefix: format!("q:{{{queue}}}:"),
        }
    }
    fn k(&self, s: &str) -> String {
        format!("{}{s}", self.prefix)
    }
    /// meta ready delayed leased wake
    fn main(&self) -> [String; 5] {
        ["meta", "ready", "delayed", "leased", "wake"].map(|s| self.k(s))
    }
}

fn check_name(queue: &str) -> Result<()> {
    if queue.is_empty() || queue.contains(['{', '}']) || queue.len() > 200 {
        return Err(QueueError::InvalidOption(format!(
            "redis queue names must be 1-200 characters without braces: {queue:?}"
        )));
    }
    Ok(())
}

/// Maps a client error onto the core's typed errors.
fn map_err(e: RedisError) -> QueueError {
    // Our scripts' own error; older and newer clients parse a bare error word differently.
    if e.code() == Some("UNKNOWN_QUEUE") || e.to_string().contains("UNKNOWN_QUEUE") {
        return QueueError::UnknownQueue(String::new());
    }
    if let Some(code) = e.code() {
        if code == "NOAUTH" || code == "WRONGPASS" {
            return QueueError::Auth {
                backend: BACKEND,
                source: Box::new(e),
            };
        }
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        QueueError::Auth {
            backend: BACKEND,
            source: Box::new(e),
        }
    } else if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
        QueueError::connection(BACKEND, e)
    } else if e.is_timeout() {
        QueueError::Timeout(Duration::from_secs(30))
    } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
        QueueError::invalid_url("redis", e.to_string())
    } else {
        QueueError::backend(BACKEND, e)
    }
}

fn with_queue(e: QueueError, queue: &str) -> QueueError {
    match e {
        QueueError::UnknownQueue(_) => QueueError::UnknownQueue(queue.to_string()),
        other => other,
    }
}

fn parse_receipt(r: &Receipt) -> Result<(&str, &str)> {
    let text = receipt_str(r);
    text.split_once('.')
        .filter(|(s, g)| s.parse::<u64>().is_ok() && g.parse::<u64>().is_ok())
        .ok_or_else(|| QueueError::invalid_receipt(BACKEND, format!("{text:?}")))
}

/// The NACK and EXTEND scripts answer 1, or 0 when the receipt's lease had ended.
fn current_receipt(ok: i64) -> Result<()> {
    if ok == 1 {
        Ok(())
    } else {
        Err(QueueError::ReceiptExpired)
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[async_trait]
impl Driver for RedisQueue {
    fn kind(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::baseline()
            .with_max_message_size(self.config.max_message_size)
            .with_purge(true)
            .with_peek(Peek::All)
            .with_max_batch(100)
            .with_max_delay(Some(MAX_TIME))
            .with_max_nack_delay(Some(MAX_TIME))
            .with_dedup_window(Some(self.config.dedup_window))
            .with_ordering(Ordering::PerKey)
            .with_priority(true)
            .with_lease(LeaseModel::per_message(true))
            .with_max_lease(MAX_TIME)
            .with_exact_stats(true)
            .with_stale_receipts_refused(true)
            .with_give_back_keeps_attempt(true)
            .with_timer_granularity(Duration::from_millis(10))
            // Keys are Redis strings: any text, any length.
            .with_max_key_len(None)
            .with_key_chars(queue_core::driver::KeyChars::Any)
    }

    fn idempotency_store(&self) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(RedisIdempotency {
            conn: self.conn.clone(),
        }))
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        check_name(queue)?;
        let now = queue_core::unix_millis(SystemTime::now());
        for q in [queue.to_string(), self.dead_letter_queue(queue)] {
            redis::cmd("HSETNX")
                .arg(Keys::new(&q).k("meta"))
                .arg("created")
                .arg(now)
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        check_name(queue)?;
        for q in [queue.to_string(), self.dead_letter_queue(queue)] {
            self.clear(&q, "delete").await?;
        }
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        check_name(queue)?;
        self.clear(queue, "purge").await
    }

    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        check_name(queue)?;
        let keys = Self::keys(queue);
        let mut inv = scripts::SEND.prepare_invoke();
        for k in keys.main() {
            inv.key(k);
        }
        inv.key(keys.k("seq"));
        inv.arg(&keys.prefix).arg(ms(self.config.dedup_window));
        for m in &batch {
            inv.arg(m.id.as_str())
                .arg(encode_body(m)?)
                .arg(ms(m.delay.unwrap_or_default()))
                .arg(m.dedup_id.as_deref().unwrap_or(""))
                // Priority 0 ranks with the unprioritized messages (memory and
                // PostgreSQL do the same), so it takes the plain ready list.
                .arg(
                    m.priority
                        .filter(|p| *p > 0)
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                )
                .arg(m.ordering_key.as_deref().unwrap_or(""));
        }
        let ids: Vec<String> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| with_queue(map_err(e), queue))?;
        Ok(ids.into_iter().map(MessageId::new).collect())
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        check_name(queue)?;
        let keys = Self::keys(queue);
        let deadline = tokio::time::Instant::now()
            .checked_add(opts.wait)
            .ok_or_else(|| QueueError::InvalidOption(format!("wait {:?} too long", opts.wait)))?;
        loop {
            let mut inv = scripts::RECEIVE.prepare_invoke();
            for k in &keys.main()[..4] {
                inv.key(k);
            }
            inv.arg(&keys.prefix).arg(opts.max).arg(ms(opts.lease));
            let raw: Vec<Value> = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| with_queue(map_err(e), queue))?;
            let (now, next, out) = decode_receive(queue, raw)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !out.is_empty() || left.is_zero() {
                return Ok(out);
            }
            let mut block = left;
            if next >= 0 {
                block = block.min(Duration::from_millis((next - now).max(1) as u64));
            }
            // BLPOP's timeout is in seconds (fractions allowed); 0 would block for ever.
            let secs = block.as_secs_f64().max(0.01);
            let mut conn = self.blocking_conn().await?;
            let mut cmd = redis::cmd("BLPOP");
            cmd.arg(keys.k("wake")).arg(secs);
            let blpop = cmd.query_async::<Option<(String, String)>>(&mut conn);
            // Cancelled: the connection is mid-command, so it is dropped, not pooled. The
            // take above already ran to the end, so nothing leased is left behind.
            let r = tokio::select! {
                r = blpop => r,
                _ = opts.cancel.cancelled() => return Ok(Vec::new()),
            };
            match r {
                Ok(_) => self.return_blocking(conn),
                Err(e) => return Err(map_err(e)),
            }
        }
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        let keys = Self::keys(queue);
        let mut inv = scripts::ACK.prepare_invoke();
        for k in keys.main() {
            inv.key(k);
        }
        inv.arg(&keys.prefix);
        for r in receipts {
            let (s, g) = parse_receipt(r)?;
            inv.arg(s).arg(g);
        }
        let stale: Vec<usize> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| with_queue(map_err(e), queue))?;
        QueueError::stale_receipts(receipts.len(), stale)
    }

    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.requeue(queue, receipt, delay, false).await
    }

    async fn give_back(&self, d: &Delivery, delay: Duration) -> Result<()> {
        self.requeue(&d.queue, &d.receipt, delay, true).await
    }

    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<()> {
        let keys = Self::keys(queue);
        let (s, g) = parse_receipt(receipt)?;
        let ok: i64 = scripts::EXTEND
            .key(keys.k("meta"))
            .key(keys.k("leased"))
            .arg(&keys.prefix)
            .arg(s)
            .arg(g)
            .arg(ms(lease))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| with_queue(map_err(e), queue))?;
        current_receipt(ok)
    }

    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>> {
        let keys = Self::keys(queue);
        let mut inv = scripts::PEEK.prepare_invoke();
        for k in &keys.main()[..4] {
            inv.key(k);
        }
        inv.arg(&keys.prefix).arg(max.min(i64::MAX as usize));
        let raw: Vec<Value> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| with_queue(map_err(e), queue))?;
        let (_, _, out) = decode_receive(queue, raw)?;
        Ok(out
            .into_iter()
            .map(|d| {
                Peeked::new(d.id, d.payload)
                    .with_headers(d.headers)
                    .with_deliveries(d.attempt.saturating_sub(1))
                    .with_first_enqueued_at(d.first_enqueued_at)
                    .with_ordering_key(d.ordering_key)
            })
            .collect())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let count = |q: String| async move {
            let keys = Self::keys(&q);
            let mut inv = scripts::STATS.prepare_invoke();
            for k in &keys.main()[..4] {
                inv.key(k);
            }
            inv.arg(&keys.prefix);
            let v: (u64, u64, u64) = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| with_queue(map_err(e), &q))?;
            Ok::<_, QueueError>(v)
        };
        let (ready, in_flight, delayed) = count(queue.to_string()).await?;
        let (dr, di, dd) = count(self.dead_letter_queue(queue)).await?;
        Ok(QueueStats::new(ready, in_flight, delayed, dr + di + dd))
    }
}

/// A Redis-backed [`IdempotencyStore`]: effects are exactly-once across every worker that
/// shares the Redis. Keys are `idem:<key>`, holding `running` (with the claim's lease as
/// TTL) or `done` (with the retention as TTL).
pub struct RedisIdempotency {
    conn: Conn,
}

impl std::fmt::Debug for RedisIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIdempotency").finish_non_exhaustive()
    }
}

impl RedisIdempotency {
    /// A store on the same server as `queue`.
    pub fn new(queue: &RedisQueue) -> Self {
        RedisIdempotency {
            conn: queue.conn.clone(),
        }
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn begin(&self, key: &str, lease: Duration) -> Result<Begin> {
        let state: String = scripts::IDEM_BEGIN
            .key(format!("idem:{key}"))
            .arg(ms(lease).max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(match state.as_str() {
            "done" => Begin::AlreadyDone,
            "running" => Begin::InProgress,
            _ => Begin::Started,
        })
    }

    async fn complete(&self, key: &str, retention: Duration) -> Result<()> {
        redis::cmd("SET")
            .arg(format!("idem:{key}"))
            .arg("done")
            .arg("PX")
            .arg(ms(retention).max(1))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    async fn release(&self, key: &str) -> Result<()> {
        scripts::IDEM_RELEASE
            .key(format!("idem:{key}"))
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }
}

/// Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the decode paths of
/// what a Redis server or another writer hands this driver. Not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Decodes `value` as a stored message inside a RECEIVE reply. Any bytes must give one
    /// delivery (malformed where they do not decode), never an error or a panic.
    pub fn decode_stored(value: &[u8]) -> Delivery {
        let reply = vec![
            Value::Int(1_700_000_000_000),
            Value::Int(-1),
            Value::BulkString(b"7".to_vec()),
            Value::Int(1),
            Value::Int(1),
            Value::BulkString(Vec::new()),
            Value::BulkString(value.to_vec()),
        ];
        let (_, _, mut out) = decode_receive("fuzz", reply).expect("a well-formed reply decodes");
        assert_eq!(out.len(), 1, "one delivery per stored message");
        out.remove(0)
    }

    /// Parses `text` as a receipt: `Ok` only for `<seq>.<generation>`.
    pub fn parse_receipt_text(text: &str) -> bool {
        parse_receipt(&receipt(text.to_string())).is_ok()
    }
}
