//! [`RedisStore`]: the layers' [`Store`] on Redis, for job status shared by every process.

use super::*;
use queue_core::store::{Store, Versioned, Write};

/// A [`Store`] on Redis (standalone or Cluster). Each entry is a HASH `kv:<key>` with
/// fields `v` (the value) and `n` (the version), and the entry's time to live as the key's
/// expiry, so Redis itself enforces retention. `insert` and `replace` are Lua scripts on
/// that one key: atomic, and in Cluster each entry lives in its key's slot. A batch
/// (`get_many`, `write_many`) issues its commands at once on the multiplexed connection,
/// which writes them out together rather than waiting for each reply; each is still a
/// command on its own key. A batch fails as a whole when one of its commands fails.
///
/// The store need not share a server with the queue: SQS or Kafka with a Redis store is a
/// valid pair. Durability is Redis's, as for the queue (see the crate docs).
pub struct RedisStore {
    conn: Conn,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection (and any password in it) stays out of logs.
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the same server (and connection) as `queue`.
    pub fn new(queue: &RedisQueue) -> Self {
        RedisStore {
            conn: queue.conn.clone(),
        }
    }

    /// Connects to the Redis (or Cluster) at `url`; the URL is the driver's
    /// ([`RedisQueue::connect`]), its queue options included.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(&RedisQueue::connect(url).await?))
    }

    fn key(key: &str) -> String {
        format!("kv:{key}")
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let (v, n): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(Self::key(key))
            .arg("v")
            .arg("n")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(match (v, n) {
            (Some(v), Some(n)) => Some(Versioned::new(v, n)),
            _ => None,
        })
    }

    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Option<u64>> {
        let won: i64 = scripts::KV_INSERT
            .key(Self::key(key))
            .arg(value)
            .arg(ms(ttl).max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok((won == 1).then_some(1))
    }

    async fn replace(
        &self,
        key: &str,
        version: u64,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let next: u64 = scripts::KV_REPLACE
            .key(Self::key(key))
            .arg(version)
            .arg(value)
            .arg(ms(ttl).max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok((next > 0).then_some(next))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let n: i64 = redis::cmd("DEL")
            .arg(Self::key(key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(n > 0)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Versioned>>> {
        futures_util::future::try_join_all(keys.iter().map(|k| self.get(k))).await
    }

    async fn write_many(&self, writes: &[Write<'_>]) -> Result<Vec<Option<u64>>> {
        futures_util::future::try_join_all(writes.iter().map(|w| async move {
            match w.expect {
                None => self.insert(w.key, w.value, w.ttl).await,
                Some(v) => self.replace(w.key, v, w.value, w.ttl).await,
            }
        }))
        .await
    }
}
