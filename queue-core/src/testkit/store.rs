//! The cases every [`Store`] implementation passes against its real server: the two
//! conditional writes, versions, expiry, deletes, and races between writers.
//!
//! ```text
//! #[tokio::test]
//! async fn my_store() {
//!     let store = MyStore::connect("...").await.unwrap();
//!     queue_core::testkit::store::run(&store, tokio::time::sleep).await;
//! }
//! ```
//!
//! `pass(d)` must let `d` of the store's time go by: `tokio::time::advance` for a store on
//! tokio's paused clock, `tokio::time::sleep` for a server (the expiry cases then sleep a
//! few hundred milliseconds).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{Store, Versioned, Write};

/// Runs every store case on `store`, with keys unique to this run.
pub async fn run<S, F, Fut>(store: &S, pass: F)
where
    S: Store + ?Sized,
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let p = super::unique("kit");
    let key = |k: &str| format!("{p}:{k}");
    let long = Duration::from_secs(3600);

    // insert: only where nothing lives.
    let a = key("a");
    assert_eq!(store.get(&a).await.unwrap(), None, "a fresh key is absent");
    assert_eq!(store.insert(&a, b"one", long).await.unwrap(), Some(1));
    assert_eq!(
        store.insert(&a, b"other", long).await.unwrap(),
        None,
        "insert over a live entry must fail"
    );
    let got = store.get(&a).await.unwrap().expect("inserted entry");
    assert_eq!((got.value.as_slice(), got.version), (&b"one"[..], 1));

    // replace: only at the version read; versions grow.
    assert_eq!(store.replace(&a, 7, b"x", long).await.unwrap(), None);
    assert_eq!(store.replace(&a, 1, b"two", long).await.unwrap(), Some(2));
    assert_eq!(
        store.replace(&a, 1, b"stale", long).await.unwrap(),
        None,
        "a replace at an old version must fail"
    );
    let got = store.get(&a).await.unwrap().expect("replaced entry");
    assert_eq!((got.value.as_slice(), got.version), (&b"two"[..], 2));
    assert_eq!(
        store.replace(&key("never"), 1, b"x", long).await.unwrap(),
        None,
        "replace of an absent key must fail, not create it"
    );
    assert_eq!(store.get(&key("never")).await.unwrap(), None);

    // Binary values round-trip, empty ones too.
    let bin: Vec<u8> = (0..=255u8).collect();
    assert_eq!(
        store.insert(&key("bin"), &bin, long).await.unwrap(),
        Some(1)
    );
    assert_eq!(store.get(&key("bin")).await.unwrap().unwrap().value, bin);
    assert_eq!(
        store.insert(&key("empty"), b"", long).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store.get(&key("empty")).await.unwrap().unwrap().value,
        b"".to_vec()
    );

    // delete.
    assert!(store.delete(&a).await.unwrap());
    assert!(
        !store.delete(&a).await.unwrap(),
        "second delete finds nothing"
    );
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(store.insert(&a, b"again", long).await.unwrap(), Some(1));

    // Expiry: gone for reads and for replace; insert may take the key again; a replace
    // sets the new time to live.
    let short = Duration::from_millis(300);
    let e = key("expiring");
    store.insert(&e, b"1", short).await.unwrap();
    let be = key("batch-expiring");
    assert_eq!(
        store
            .write_many(&[Write::insert(&be, b"1", short)])
            .await
            .unwrap(),
        [Some(1)]
    );
    let kept = key("kept");
    store.insert(&kept, b"1", short).await.unwrap();
    assert_eq!(store.replace(&kept, 1, b"2", long).await.unwrap(), Some(2));
    pass(Duration::from_millis(700)).await;
    assert_eq!(
        store.get(&e).await.unwrap(),
        None,
        "expired entry must be gone"
    );
    assert_eq!(
        store.replace(&e, 1, b"late", long).await.unwrap(),
        None,
        "an expired entry must not be replaced"
    );
    assert!(
        store.get(&kept).await.unwrap().is_some(),
        "a replace must set the entry's new time to live"
    );
    assert_eq!(store.insert(&e, b"new", long).await.unwrap(), Some(1));
    assert_eq!(store.get(&e).await.unwrap().unwrap().value, b"new".to_vec());
    let got = store.get_many(&[&be, &kept]).await.unwrap();
    assert!(
        got[0].is_none() && got[1].is_some(),
        "get_many must not return an expired entry: {got:?}"
    );
    assert_eq!(
        store
            .write_many(&[Write::replace(&be, 1, b"late", long)])
            .await
            .unwrap(),
        [None],
        "a batch must not replace an expired entry"
    );
    assert_eq!(
        store
            .write_many(&[Write::insert(&be, b"new", long)])
            .await
            .unwrap(),
        [Some(1)],
        "a batch may insert where an entry expired"
    );
    assert!(!store.delete(&key("never")).await.unwrap());

    // Races: of many writers replacing at the same version, exactly one wins.
    let r = key("race");
    store.insert(&r, b"0", long).await.unwrap();
    let wins = {
        let mut wins = 0;
        // Sequential calls still model the race: all read version 1 first.
        for i in 0..8u8 {
            if store.replace(&r, 1, &[i], long).await.unwrap().is_some() {
                wins += 1;
            }
        }
        wins
    };
    assert_eq!(wins, 1, "exactly one replace at a version may win");

    batches(store, &key).await;
    for k in [
        "a",
        "bin",
        "empty",
        "expiring",
        "kept",
        "race",
        "batch-expiring",
    ] {
        let _ = store.delete(&key(k)).await;
    }
}

/// The batch calls: each entry read or written as the single calls would, results in the
/// callers' order, every write winning or losing on its own.
async fn batches<S: Store + ?Sized>(store: &S, key: &impl Fn(&str) -> String) {
    let long = Duration::from_secs(3600);
    let [b1, b2, b3, b4, never] = ["b1", "b2", "b3", "b4", "never"].map(key);
    assert_eq!(store.get_many(&[]).await.unwrap(), []);
    assert_eq!(store.write_many(&[]).await.unwrap(), []);
    store.insert(&b1, b"1", long).await.unwrap();
    store.insert(&b2, b"2", long).await.unwrap();
    assert_eq!(
        store.get_many(&[&b2, &never, &b1]).await.unwrap(),
        [
            Some(Versioned::new(b"2".to_vec(), 1)),
            None,
            Some(Versioned::new(b"1".to_vec(), 1))
        ],
        "get_many answers in the keys' order, None for an absent key"
    );
    let won = store
        .write_many(&[
            Write::insert(&b3, b"3", long),
            Write::insert(&b1, b"lost", long),
            Write::replace(&b2, 1, b"22", long),
            Write::replace(&b4, 1, b"lost", long),
        ])
        .await
        .unwrap();
    assert_eq!(
        won,
        [Some(1), None, Some(2), None],
        "each write of a batch wins or loses on its own: a new insert, an insert over a \
         live entry, a replace at the version read, a replace of an absent key"
    );
    let got = store.get_many(&[&b1, &b2, &b3, &b4]).await.unwrap();
    let got: Vec<Option<(&[u8], u64)>> = got
        .iter()
        .map(|v| v.as_ref().map(|v| (v.value.as_slice(), v.version)))
        .collect();
    assert_eq!(
        got,
        [
            Some((&b"1"[..], 1)),
            Some((&b"22"[..], 2)),
            Some((&b"3"[..], 1)),
            None
        ],
        "a lost write changes nothing"
    );
    assert_eq!(
        store
            .write_many(&[Write::replace(&b2, 1, b"stale", long)])
            .await
            .unwrap(),
        [None],
        "a batch's replace at an old version must fail"
    );
    // A batch the size of a busy worker's receive, binary values and all.
    let many: Vec<String> = (0..300).map(|i| key(&format!("many-{i}"))).collect();
    let values: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let writes: Vec<Write<'_>> = many
        .iter()
        .zip(&values)
        .map(|(k, v)| Write::insert(k, v, long))
        .collect();
    assert!(store
        .write_many(&writes)
        .await
        .unwrap()
        .iter()
        .all(|r| *r == Some(1)));
    let keys: Vec<&str> = many.iter().map(String::as_str).collect();
    let got = store.get_many(&keys).await.unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            g.as_ref().map(|v| (v.value.as_slice(), v.version)),
            Some((values[i].as_slice(), 1)),
            "entry {i} of a 300-entry batch"
        );
    }
    let replaces: Vec<Write<'_>> = many
        .iter()
        .enumerate()
        .map(|(i, k)| Write::replace(k, if i % 2 == 0 { 1 } else { 5 }, b"r", long))
        .collect();
    let won = store.write_many(&replaces).await.unwrap();
    for (i, w) in won.iter().enumerate() {
        assert_eq!(*w, (i % 2 == 0).then_some(2), "replace {i} of 300");
    }
    for k in many.iter().chain([&b1, &b2, &b3, &b4]) {
        let _ = store.delete(k).await;
    }
}

/// Concurrent inserts of one key from many tasks: exactly one wins. For stores shared
/// across processes, run it against two clients of the same server.
pub async fn concurrent_inserts(stores: Vec<Arc<dyn Store>>) {
    let key = super::unique("kit-race");
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in stores.iter().cycle().take(16).enumerate() {
        let (s, key) = (s.clone(), key.clone());
        tasks.spawn(async move {
            s.insert(&key, &[i as u8], Duration::from_secs(60))
                .await
                .unwrap()
        });
    }
    let mut wins = 0;
    while let Some(r) = tasks.join_next().await {
        if r.unwrap().is_some() {
            wins += 1;
        }
    }
    assert_eq!(
        wins, 1,
        "of 16 concurrent inserts of one key, exactly one wins"
    );
    let _ = stores[0].delete(&key).await;
}

/// A [`MemoryStore`](crate::MemoryStore) that yields to the scheduler inside every call,
/// so that concurrent read-then-compare-and-set loops (settlements, schedulers)
/// interleave between their read and their write, as they do against a server; the
/// in-memory store alone never suspends, and a current-thread runtime would run each to
/// its end in one go. It can also refuse some writes, to stage a store outage at the
/// worst moment ([`Yielding::refuse_replaces`]).
#[derive(Debug, Default)]
pub struct Yielding {
    inner: crate::MemoryStore,
    refuse: std::sync::Mutex<Option<Refusal>>,
}

/// The next `left` replaces of keys that `which` picks fail.
struct Refusal {
    left: usize,
    which: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusal").field("left", &self.left).finish()
    }
}

impl Yielding {
    /// A yielding store over a fresh [`MemoryStore`](crate::MemoryStore).
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` replaces of keys `which` picks fail with a backend error.
    pub fn refuse_replaces(&self, n: usize, which: impl Fn(&str) -> bool + Send + Sync + 'static) {
        *self.refuse.lock().unwrap_or_else(|p| p.into_inner()) = Some(Refusal {
            left: n,
            which: Box::new(which),
        });
    }

    fn refused(&self, key: &str) -> bool {
        let mut r = self.refuse.lock().unwrap_or_else(|p| p.into_inner());
        match r.as_mut() {
            Some(f) if f.left > 0 && (f.which)(key) => {
                f.left -= 1;
                true
            }
            _ => false,
        }
    }
}

#[async_trait::async_trait]
impl Store for Yielding {
    async fn get(&self, key: &str) -> crate::Result<Option<Versioned>> {
        tokio::task::yield_now().await;
        let v = self.inner.get(key).await;
        tokio::task::yield_now().await;
        v
    }
    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> crate::Result<Option<u64>> {
        tokio::task::yield_now().await;
        self.inner.insert(key, value, ttl).await
    }
    async fn replace(
        &self,
        key: &str,
        version: u64,
        value: &[u8],
        ttl: Duration,
    ) -> crate::Result<Option<u64>> {
        tokio::task::yield_now().await;
        if self.refused(key) {
            return Err(crate::QueueError::backend("test store", "write refused"));
        }
        self.inner.replace(key, version, value, ttl).await
    }
    async fn delete(&self, key: &str) -> crate::Result<bool> {
        tokio::task::yield_now().await;
        self.inner.delete(key).await
    }
    async fn get_many(&self, keys: &[&str]) -> crate::Result<Vec<Option<Versioned>>> {
        tokio::task::yield_now().await;
        self.inner.get_many(keys).await
    }
    async fn write_many(&self, writes: &[Write<'_>]) -> crate::Result<Vec<Option<u64>>> {
        tokio::task::yield_now().await;
        self.inner.write_many(writes).await
    }
}
