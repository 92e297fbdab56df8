//! [`PostgresStore`]: the layers' shared store in `<schema>.kv`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use queue_core::store::{self, Store, Versioned, Write};
use queue_core::Result;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::{map_err, Target};

/// A [`Store`] in a PostgreSQL table. See the [crate docs](crate) for the mapping.
pub struct PostgresStore {
    config: tokio_postgres::Config,
    schema: String,
    conn: Mutex<Option<Arc<Conn>>>,
    last_sweep: std::sync::Mutex<tokio::time::Instant>,
    sweep_every: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: only the schema is shown.
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

struct Conn {
    client: Client,
    get: Statement,
    insert: Statement,
    replace: Statement,
    delete: Statement,
    get_many: Statement,
    insert_many: Statement,
    replace_many: Statement,
}

impl PostgresStore {
    /// Connects, and creates the schema and table when missing.
    pub async fn connect(url: &str) -> Result<Self> {
        let (target, mut o) = Target::parse(url)?;
        let sweep_every = o
            .duration_within(
                "sweep_interval",
                Duration::from_millis(1),
                Duration::from_secs(24 * 3600),
            )?
            .unwrap_or(Duration::from_secs(60));
        o.finish()?;
        let Target { config, schema } = target;
        let store = PostgresStore {
            config,
            schema,
            conn: Mutex::new(None),
            last_sweep: std::sync::Mutex::new(tokio::time::Instant::now()),
            sweep_every,
        };
        store.conn().await?;
        Ok(store)
    }

    /// The schema holding the table.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The open connection, or a new one (with the table ensured) after a loss.
    async fn conn(&self) -> Result<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.client.is_closed() {
                return Ok(c.clone());
            }
            tracing::warn!("postgres store: connection lost, reconnecting");
        }
        let (mut client, connection) = self.config.connect(NoTls).await.map_err(map_err)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres store: connection ended");
            }
        });
        let s = &self.schema;
        let tx = client.transaction().await.map_err(map_err)?;
        // One creator at a time: concurrent CREATE … IF NOT EXISTS can still collide.
        tx.execute("SELECT pg_advisory_xact_lock(7253010411)", &[])
            .await
            .map_err(map_err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\";
             CREATE TABLE IF NOT EXISTS \"{s}\".kv (
                 key text PRIMARY KEY,
                 value bytea NOT NULL,
                 version bigint NOT NULL,
                 expires_at timestamptz NOT NULL);
             CREATE INDEX IF NOT EXISTS kv_expires_at ON \"{s}\".kv (expires_at);"
        ))
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        let ttl = "now() + $3::float8 * interval '1 millisecond'";
        let get = client
            .prepare(&format!(
                "SELECT value, version FROM \"{s}\".kv WHERE key = $1 AND expires_at > now()"
            ))
            .await
            .map_err(map_err)?;
        let insert = client
            .prepare(&format!(
                "INSERT INTO \"{s}\".kv AS t (key, value, version, expires_at)
                 VALUES ($1, $2, 1, {ttl})
                 ON CONFLICT (key) DO UPDATE
                   SET value = EXCLUDED.value, version = 1, expires_at = EXCLUDED.expires_at
                   WHERE t.expires_at <= now()
                 RETURNING version"
            ))
            .await
            .map_err(map_err)?;
        let replace = client
            .prepare(&format!(
                "UPDATE \"{s}\".kv SET value = $2, version = version + 1,
                   expires_at = now() + $4::float8 * interval '1 millisecond'
                 WHERE key = $1 AND version = $3 AND expires_at > now()
                 RETURNING version"
            ))
            .await
            .map_err(map_err)?;
        let delete = client
            .prepare(&format!(
                "DELETE FROM \"{s}\".kv WHERE key = $1 RETURNING expires_at > now()"
            ))
            .await
            .map_err(map_err)?;
        let get_many = client
            .prepare(&format!(
                "SELECT key, value, version FROM \"{s}\".kv
                 WHERE key = ANY($1::text[]) AND expires_at > now()"
            ))
            .await
            .map_err(map_err)?;
        let insert_many = client
            .prepare(&format!(
                "INSERT INTO \"{s}\".kv AS t (key, value, version, expires_at)
                 SELECT k, v, 1, now() + ms * interval '1 millisecond'
                   FROM unnest($1::text[], $2::bytea[], $3::float8[]) AS u(k, v, ms)
                 ON CONFLICT (key) DO UPDATE
                   SET value = EXCLUDED.value, version = 1, expires_at = EXCLUDED.expires_at
                   WHERE t.expires_at <= now()
                 RETURNING key, version"
            ))
            .await
            .map_err(map_err)?;
        let replace_many = client
            .prepare(&format!(
                "UPDATE \"{s}\".kv AS t SET value = u.v, version = t.version + 1,
                   expires_at = now() + u.ms * interval '1 millisecond'
                 FROM unnest($1::text[], $2::bytea[], $3::int8[], $4::float8[]) AS u(k, v, ver, ms)
                 WHERE t.key = u.k AND t.version = u.ver AND t.expires_at > now()
                 RETURNING t.key, t.version"
            ))
            .await
            .map_err(map_err)?;
        let c = Arc::new(Conn {
            client,
            get,
            insert,
            replace,
            delete,
            get_many,
            insert_many,
            replace_many,
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Deletes up to 1,000 expired rows, at most once per `sweep_interval`.
    async fn sweep(&self, c: &Conn) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < self.sweep_every {
                return;
            }
            *last = tokio::time::Instant::now();
        }
        let s = &self.schema;
        let sql = format!(
            "DELETE FROM \"{s}\".kv WHERE key IN
               (SELECT key FROM \"{s}\".kv WHERE expires_at <= now() LIMIT 1000)"
        );
        match c.client.execute(&sql, &[]).await {
            Ok(n) if n > 0 => tracing::debug!(rows = n, "postgres store: expired rows deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "postgres store: sweeping expired rows failed"),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn version(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let c = self.conn().await?;
        let row = c.client.query_opt(&c.get, &[&key]).await.map_err(map_err)?;
        Ok(row.map(|r| Versioned::new(r.get(0), version(r.get(1)))))
    }

    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Option<u64>> {
        let c = self.conn().await?;
        self.sweep(&c).await;
        let row = c
            .client
            .query_opt(&c.insert, &[&key, &value, &millis(ttl)])
            .await
            .map_err(map_err)?;
        Ok(row.map(|r| version(r.get(0))))
    }

    async fn replace(
        &self,
        key: &str,
        version_now: u64,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<u64>> {
        let Ok(expected) = i64::try_from(version_now) else {
            return Ok(None); // no row has such a version
        };
        let c = self.conn().await?;
        let row = c
            .client
            .query_opt(&c.replace, &[&key, &value, &expected, &millis(ttl)])
            .await
            .map_err(map_err)?;
        Ok(row.map(|r| version(r.get(0))))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let c = self.conn().await?;
        let row = c
            .client
            .query_opt(&c.delete, &[&key])
            .await
            .map_err(map_err)?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// One statement for the whole batch.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Versioned>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.conn().await?;
        let rows = c
            .client
            .query(&c.get_many, &[&keys])
            .await
            .map_err(map_err)?;
        let found: HashMap<String, Versioned> = rows
            .into_iter()
            .map(|r| (r.get(0), Versioned::new(r.get(1), version(r.get(2)))))
            .collect();
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    /// Two statements for the whole batch (its inserts, its replaces), sent together.
    async fn write_many(&self, writes: &[Write<'_>]) -> Result<Vec<Option<u64>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        // One statement cannot write a row twice.
        store::check_distinct(writes.iter().map(|w| w.key))?;
        let c = self.conn().await?;
        self.sweep(&c).await;
        // In key order: two processes writing the same rows lock them in the same order.
        let mut sorted: Vec<&Write<'_>> = writes.iter().collect();
        sorted.sort_unstable_by_key(|w| w.key);
        let (mut ik, mut iv, mut ims) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rk, mut rv, mut rver, mut rms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut ins, mut reps) = (Vec::new(), Vec::new());
        for w in sorted {
            match w.expect {
                None => {
                    ik.push(w.key);
                    iv.push(w.value);
                    ims.push(millis(w.ttl));
                    ins.push(w);
                }
                // No row has a version past i64::MAX: such a replace loses, unsent.
                Some(v) => {
                    if let Ok(v) = i64::try_from(v) {
                        rk.push(w.key);
                        rv.push(w.value);
                        rver.push(v);
                        rms.push(millis(w.ttl));
                        reps.push(w);
                    }
                }
            }
        }
        let inserts = async {
            if ik.is_empty() {
                return Ok(Vec::new());
            }
            c.client.query(&c.insert_many, &[&ik, &iv, &ims]).await
        };
        let replaces = async {
            if rk.is_empty() {
                return Ok(Vec::new());
            }
            c.client
                .query(&c.replace_many, &[&rk, &rv, &rver, &rms])
                .await
        };
        let (inserted, replaced) = tokio::join!(inserts, replaces);
        let mut won: HashMap<String, u64> = HashMap::new();
        for (rows, part) in [(inserted, ins), (replaced, reps)] {
            match rows {
                Ok(rows) => {
                    for r in rows {
                        won.insert(r.get(0), version(r.get(1)));
                    }
                }
                // A deadlock with another process's batch rolled this statement back
                // whole: its writes again, one statement each.
                Err(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {
                    tracing::debug!("postgres store: batch deadlocked, writing it row by row");
                    for w in part {
                        let v = match w.expect {
                            None => self.insert(w.key, w.value, w.ttl).await?,
                            Some(v) => self.replace(w.key, v, w.value, w.ttl).await?,
                        };
                        if let Some(v) = v {
                            won.insert(w.key.to_string(), v);
                        }
                    }
                }
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(writes.iter().map(|w| won.remove(w.key)).collect())
    }
}
