//! The kit's job-status cases with their records in PostgreSQL (the queue itself is the
//! in-memory backend: the status layer does not care which queue runs the jobs).

use std::sync::Arc;

use queue_core::testkit::{run_case, unique, Harness};
use queue_core::{Driver, MemoryConfig, MemoryQueue, Store};
use queue_postgres::PostgresStore;

const URL: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";

fn harness() -> Harness {
    let broker = unique("pg-status");
    Harness::new(move || {
        let broker = broker.clone();
        async move {
            Ok(Arc::new(MemoryQueue::named(&broker, MemoryConfig::default())) as Arc<dyn Driver>)
        }
    })
    .status_store(|| async {
        let s = PostgresStore::connect(URL).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {URL}: {e}. Start the test servers with scripts/services.sh")
        });
        Arc::new(s) as Arc<dyn Store>
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lifecycle_with_postgres_records() {
    run_case(&harness(), "status_lifecycle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cancel_with_postgres_records() {
    run_case(&harness(), "status_cancel").await;
}
