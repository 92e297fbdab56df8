//! Stores: the one small trait the layers above the queue share state through.
//!
//! A [`Store`] is a key-value map with a version per entry and a time to live, and exactly
//! two writes: *insert if absent* and *replace if the version is still the one I read*.
//! That is all the job-status layer ([`crate::status`]) needs, and it keeps every state
//! machine in `queue-core`: a store implementation maps the primitives onto its server and
//! holds no policy. The layers never depend on the queue backend, so SQS with a Redis or
//! PostgreSQL store is a valid pair.
//!
//! Implementations: [`MemoryStore`] (one process, bounded), `RedisStore` in `queue-redis`,
//! `PostgresStore` in `queue-postgres`. Every implementation runs the same cases,
//! `queue_core::testkit::store::run` (feature `testkit`), against its real server.
//!
//! Retention is the store's job: every write carries the entry's time to live, an entry
//! past it is gone for every reader, and the store never keeps it longer than it must
//! (Redis expires keys itself; PostgreSQL deletes expired rows as it writes; the memory
//! store drops them as it fills).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{QueueError, Result};

/// The longest key a store must accept (bytes). Longer keys are refused by the layers.
pub const MAX_KEY_LEN: usize = 512;

/// An entry's value and its version. Versions start at 1 and grow by one per write; a
/// replaced entry never gets a version it had before, an expired and re-inserted one may.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Versioned {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The version to pass to [`Store::replace`].
    pub version: u64,
}

impl Versioned {
    /// A value at a version.
    pub fn new(value: Vec<u8>, version: u64) -> Self {
        Versioned { value, version }
    }
}

/// One write of a batch ([`Store::write_many`]): an insert if absent
/// ([`Write::insert`]) or a replace at a version ([`Write::replace`]), with the same
/// meaning as [`Store::insert`] and [`Store::replace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Write<'a> {
    /// The entry's key.
    pub key: &'a str,
    /// `None`: write only if no live entry is there. `Some(v)`: only if the live entry's
    /// version is `v`.
    pub expect: Option<u64>,
    /// The bytes to store.
    pub value: &'a [u8],
    /// The entry's new time to live.
    pub ttl: Duration,
}

impl<'a> Write<'a> {
    /// Writes `value` under `key` if no live entry is there.
    pub fn insert(key: &'a str, value: &'a [u8], ttl: Duration) -> Self {
        Write {
            key,
            expect: None,
            value,
            ttl,
        }
    }

    /// Writes `value` under `key` if the live entry's version is `version`.
    pub fn replace(key: &'a str, version: u64, value: &'a [u8], ttl: Duration) -> Self {
        Write {
            key,
            expect: Some(version),
            value,
            ttl,
        }
    }
}

/// A shared key-value map with versions and expiry. See the [module docs](self).
///
/// `ttl` is at least 1 ms and at most [`MAX_TTL`]; the layers check it before a store sees
/// it. Implementations must be safe to call from many processes at once: the two writes
/// are atomic on the server.
///
/// The batch calls ([`get_many`](Store::get_many), [`write_many`](Store::write_many)) are
/// how the layers keep the store's round trips per job low (job status gathers the starts
/// and ends of jobs running together into one read and one write): a store that can should
/// answer each in one round trip.
/// Their default implementations call the single ones in turn, so a store written for an
/// earlier version keeps working. A batch is not a transaction: each write in it is
/// atomic on its own and may win or lose on its own, and after an error some of its
/// writes may have landed (the layers read again before they retry). The keys of one
/// batch are distinct (the layers never repeat one; a store may refuse a batch that does).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The entry under `key`, unless absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Versioned>>;
    /// Writes `value` under `key` if no live entry is there; returns the new version
    /// (1), or `None` when a live entry exists.
    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Option<u64>>;
    /// Writes `value` under `key` if the live entry's version is `version`; returns the
    /// new version, or `None` when the entry changed, expired or is gone.
    async fn replace(
        &self,
        key: &str,
        version: u64,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<u64>>;
    /// Removes the entry; true if a live one was there.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// The entries under `keys`, in their order (`None`: absent or expired), in one round
    /// trip where the store can.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Versioned>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Makes each write as [`insert`](Store::insert) or [`replace`](Store::replace)
    /// would, in one round trip where the store can; returns each write's new version, or
    /// `None` where it lost, in the writes' order.
    async fn write_many(&self, writes: &[Write<'_>]) -> Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            out.push(match w.expect {
                None => self.insert(w.key, w.value, w.ttl).await?,
                Some(v) => self.replace(w.key, v, w.value, w.ttl).await?,
            });
        }
        Ok(out)
    }
}

/// Refuses a batch that names one key twice (see [`Store`]): for stores whose batch
/// statement cannot write one entry twice.
pub fn check_distinct<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if !seen.insert(k) {
            return Err(QueueError::InvalidOption(format!(
                "a store batch names the key {k:?} twice"
            )));
        }
    }
    Ok(())
}

/// The longest time to live a layer asks a store for: a year.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Checks a key and a time to live before they reach a store.
pub(crate) fn check(key: &str, ttl: Duration) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(QueueError::InvalidOption(format!(
            "store keys must be 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(QueueError::InvalidOption(format!(
            "a retention must be 1ms to {MAX_TTL:?}, got {ttl:?}"
        )));
    }
    Ok(())
}

struct Entry {
    value: Vec<u8>,
    version: u64,
    expires: Instant,
}

#[derive(Default)]
struct Map {
    entries: HashMap<String, Entry>,
    /// (expiry, key), to drop the expired and, when full, the soonest to expire.
    by_expiry: BTreeSet<(Instant, String)>,
    evicted: u64,
}

impl Map {
    fn live(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.entries.get(key).filter(|e| e.expires > now)
    }

    fn put(&mut self, key: &str, value: &[u8], version: u64, expires: Instant) {
        if let Some(old) = self.entries.remove(key) {
            self.by_expiry.remove(&(old.expires, key.to_string()));
        }
        self.by_expiry.insert((expires, key.to_string()));
        self.entries.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                version,
                expires,
            },
        );
    }

    /// Drops expired entries, then the soonest to expire until there is room for one.
    fn make_room(&mut self, now: Instant, capacity: usize) {
        while let Some((at, key)) = self.by_expiry.first().cloned() {
            if at > now && self.entries.len() < capacity {
                break;
            }
            if at > now {
                self.evicted += 1;
            }
            self.by_expiry.remove(&(at, key.clone()));
            self.entries.remove(&key);
        }
    }
}

/// A store in this process's memory, bounded: when `capacity` live entries are held, the
/// one closest to its expiry is dropped to make room (counted by
/// [`MemoryStore::evicted`] and logged), so memory never grows without bound. Time is
/// tokio's clock, so tests may pause it.
pub struct MemoryStore {
    map: Mutex<Map>,
    capacity: usize,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("MemoryStore")
            .field("entries", &map.entries.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_capacity(100_000).unwrap_or_else(|_| unreachable!("100000 is valid"))
    }
}

impl MemoryStore {
    /// A store of at most 100,000 entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store of at most `capacity` entries (1 to 100,000,000).
    pub fn with_capacity(capacity: usize) -> Result<Self> {
        if capacity == 0 || capacity > 100_000_000 {
            return Err(QueueError::InvalidOption(format!(
                "memory store capacity must be 1 to 100000000, got {capacity}"
            )));
        }
        Ok(MemoryStore {
            map: Mutex::new(Map::default()),
            capacity,
        })
    }

    /// Live entries dropped to make room, so far.
    pub fn evicted(&self) -> u64 {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).evicted
    }

    fn write(&self, key: &str, value: &[u8], ttl: Duration, expect: Option<u64>) -> Option<u64> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        self.write_locked(&mut map, key, value, ttl, expect)
    }

    fn write_locked(
        &self,
        map: &mut Map,
        key: &str,
        value: &[u8],
        ttl: Duration,
        expect: Option<u64>,
    ) -> Option<u64> {
        let now = Instant::now();
        let current = map.live(key, now).map(|e| e.version);
        if current != expect {
            return None;
        }
        let version = current.map_or(1, |v| v + 1);
        if current.is_none() {
            let before = map.evicted;
            map.make_room(now, self.capacity);
            if map.evicted > before {
                tracing::warn!(
                    capacity = self.capacity,
                    evicted = map.evicted - before,
                    "memory store full: dropped the entries closest to expiry"
                );
            }
        }
        let expires = now.checked_add(ttl).unwrap_or(now + MAX_TTL);
        map.put(key, value, version, expires);
        Some(version)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .live(key, Instant::now())
            .map(|e| Versioned::new(e.value.clone(), e.version)))
    }

    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Option<u64>> {
        Ok(self.write(key, value, ttl, None))
    }

    async fn replace(
        &self,
        key: &str,
        version: u64,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<u64>> {
        Ok(self.write(key, value, ttl, Some(version)))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let live = map.live(key, now).is_some();
        if let Some(old) = map.entries.remove(key) {
            map.by_expiry.remove(&(old.expires, key.to_string()));
        }
        Ok(live)
    }

    /// One lock for the whole batch.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Versioned>>> {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .iter()
            .map(|k| {
                map.live(k, now)
                    .map(|e| Versioned::new(e.value.clone(), e.version))
            })
            .collect())
    }

    /// One lock for the whole batch.
    async fn write_many(&self, writes: &[Write<'_>]) -> Result<Vec<Option<u64>>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(writes
            .iter()
            .map(|w| self.write_locked(&mut map, w.key, w.value, w.ttl, w.expect))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_store_passes_the_store_cases() {
        crate::testkit::store::run(&MemoryStore::new(), tokio::time::advance).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_memory_store_drops_the_entry_closest_to_expiry() {
        let s = MemoryStore::with_capacity(2).unwrap();
        let h = Duration::from_secs(3600);
        s.insert("long", b"1", 10 * h).await.unwrap();
        s.insert("short", b"2", h).await.unwrap();
        s.insert("third", b"3", 5 * h).await.unwrap();
        assert!(
            s.get("short").await.unwrap().is_none(),
            "soonest to expire goes"
        );
        assert!(s.get("long").await.unwrap().is_some());
        assert!(s.get("third").await.unwrap().is_some());
        assert_eq!(s.evicted(), 1);
        // Expired entries go first, and are not counted as evicted.
        tokio::time::advance(6 * h).await;
        s.insert("fourth", b"4", h).await.unwrap();
        assert_eq!(s.evicted(), 1);
        assert!(s.get("long").await.unwrap().is_some());
        assert!(MemoryStore::with_capacity(0).is_err());
    }
}
