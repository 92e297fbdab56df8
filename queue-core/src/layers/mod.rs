//! The layers over the shared [`Store`](store::Store): job status, rate limits and per-key
//! concurrency, unique jobs, schedules, fairness, pause, the outbox relay and emulated
//! dedup ids. Each works the same on every backend, because it keeps its state in the
//! store rather than in the queue. One layer wraps the driver itself instead: priority
//! tiers ([`tiers`]), where the backend has no priorities. Flows ([`flow`]) are jobs that
//! wait for other jobs, advanced in the store as each settles.

pub mod aggregate;
pub mod batch;
pub mod debounce;
pub mod dedup;
pub mod fair;
pub mod flow;
pub mod limit;
pub mod pause;
pub mod relay;
#[cfg(feature = "cron")]
pub mod schedule;
pub mod status;
pub mod store;
pub mod tiers;
pub mod unique;
