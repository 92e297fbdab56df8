//! `--status URL`: the framework side records every job's status in that store, so the
//! ratio to the raw client shows what job status costs (memory://, redis://…, postgres://…).

use std::sync::Arc;

use queue_core::{JobStatuses, MemoryStore, Store};

/// Opens the store named by `url`.
pub async fn store_for(url: &str) -> Result<JobStatuses, String> {
    let store: Arc<dyn Store> = match url.split_once("://").map(|(s, _)| s) {
        Some("memory") => Arc::new(MemoryStore::new()),
        Some("redis") => Arc::new(
            queue_redis::RedisStore::connect(url)
                .await
                .map_err(|e| format!("--status {}: {e}", queue_core::redact(url)))?,
        ),
        Some("postgres" | "postgresql") => Arc::new(
            queue_postgres::PostgresStore::connect(url)
                .await
                .map_err(|e| format!("--status {}: {e}", queue_core::redact(url)))?,
        ),
        _ => {
            return Err(format!(
                "--status {}: want memory://, redis://… or postgres://…",
                queue_core::redact(url)
            ))
        }
    };
    Ok(JobStatuses::new(store))
}
