//! # queue
//!
//! One API for background jobs and message queues, on the embedded in-memory backend,
//! Redis, AWS SQS, Kafka or PostgreSQL, chosen by a URL. This crate is [`queue_core`] (re-exported
//! whole) plus the bundled drivers behind cargo features, so that [`connect`] knows
//! their URL schemes without any registration:
//!
//! ```toml
//! [dependencies]
//! queue = { version = "0.2", features = ["redis", "sqs"] }   # or "kafka", "redis-tls"
//! ```
//!
//! | feature | URL | driver crate |
//! |---|---|---|
//! | (always) | `memory://NAME` | `queue_core::memory` |
//! | `redis` | `redis://host:6379[?cluster=true]` (`rediss://` with `redis-tls`) | `queue-redis` |
//! | `sqs` | `sqs://[KEY:SECRET@]REGION[?endpoint=…&fifo=true]` | `queue-sqs` |
//! | `kafka` | `kafka://host:9092[?group=…&partitions=…]` | `queue-kafka` |
//! | `postgres` | `postgres://user:pass@host:5432/db[?schema=queue]` | `queue-postgres` |
//!
//! A URL whose scheme needs a feature this build lacks fails with
//! [`QueueError::UnknownScheme`], listing the schemes it knows.
//!
//! Job status ([`status`]) keeps its records in a [`Store`], chosen by URL too with
//! [`connect_store`]: `memory://` always, `redis://` (feature `redis`), `postgres://`
//! (feature `postgres`). The store need not be the queue's server.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue::Result<()> {
//! let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://app".into());
//! let backend = queue::connect(&url).await?;
//! let emails = backend.queue("emails");
//! emails.create().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub use queue_core::*;

/// The Redis driver (feature `redis`).
#[cfg(feature = "redis")]
pub use queue_redis as redis;

/// The SQS driver (feature `sqs`).
#[cfg(feature = "sqs")]
pub use queue_sqs as sqs;

/// The Kafka driver (feature `kafka`).
#[cfg(feature = "kafka")]
pub use queue_kafka as kafka;

/// The PostgreSQL driver and store (feature `postgres`).
#[cfg(feature = "postgres")]
pub use queue_postgres as postgres;

#[cfg(feature = "prometheus")]
pub mod prometheus;

/// The Rust blocks of docs/backends.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/backends.md")]
struct BackendsDoc;

/// The Rust blocks of the README, compiled as doctests (they use the PostgreSQL driver and
/// schedules, so only with those features: `scripts/test.sh` builds with all of them).
#[cfg(all(doctest, feature = "postgres", feature = "cron"))]
#[doc = include_str!("../../README.md")]
struct Readme;

/// Opens the [`Store`] named by `url`, for job status
/// ([`JobStatuses::new`](status::JobStatuses::new)): `memory://` (this process only,
/// bounded), `redis://…` (feature `redis`; the driver's URL) or `postgres://…` (feature
/// `postgres`; see `queue_postgres`). Another scheme is [`QueueError::UnknownScheme`].
pub async fn connect_store(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "memory" => {
            if url != "memory://" {
                return Err(QueueError::invalid_url(
                    url,
                    "the memory store takes no name or options: memory://",
                ));
            }
            Ok(std::sync::Arc::new(MemoryStore::new()))
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(std::sync::Arc::new(
            queue_redis::RedisStore::connect(url).await?,
        )),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(std::sync::Arc::new(
            queue_postgres::PostgresStore::connect(url).await?,
        )),
        other => {
            let mut known = vec!["memory".to_string()];
            if cfg!(feature = "redis") {
                known.extend(["redis".into(), "rediss".into()]);
            }
            if cfg!(feature = "postgres") {
                known.extend(["postgres".into(), "postgresql".into()]);
            }
            Err(QueueError::UnknownScheme {
                scheme: other.to_string(),
                known,
            })
        }
    }
}

/// Opens the backend named by `url`: `memory://` always, and the schemes of the drivers
/// this build's features include (see the crate docs). Drivers registered with
/// [`register`] are known too.
pub async fn connect(url: &str) -> Result<Backend> {
    register_bundled();
    queue_core::connect(url).await
}

/// The URL schemes this build knows: `memory`, the bundled drivers' (by feature), and any
/// registered with [`register`].
pub fn schemes() -> Vec<String> {
    register_bundled();
    queue_core::schemes()
}

/// Registers the bundled drivers this build includes (idempotent). [`connect`] calls it.
pub fn register_bundled() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(feature = "redis")]
        queue_redis::register();
        #[cfg(feature = "sqs")]
        queue_sqs::register();
        #[cfg(feature = "kafka")]
        queue_kafka::register();
        #[cfg(feature = "postgres")]
        queue_postgres::register();
    });
}
