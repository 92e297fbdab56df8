//! The conformance suite on PostgreSQL (the server `scripts/services.sh` starts, role
//! and database `queue`/`queue_test`), one test per case, in a schema of this binary's
//! own so that other test binaries' tables do not meet its queues.

use std::sync::Arc;

use queue_core::testkit::Harness;
use queue_core::{Driver, QueueError, Store};
use queue_postgres::{PostgresQueue, PostgresStore};

const URL: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test?schema=kit";

fn unreachable(e: QueueError) -> QueueError {
    QueueError::InvalidOption(format!(
        "PostgreSQL is not reachable at {URL}: {e}. Start the test servers with scripts/services.sh"
    ))
}

fn harness() -> Harness {
    queue_postgres::register();
    Harness::new(|| async {
        // A short dedup window, so that `dedup_within_window` sees it end.
        let q = PostgresQueue::connect(&format!("{URL}&dedup_window=2s"))
            .await
            .map_err(unreachable)?;
        Ok(Arc::new(q) as Arc<dyn Driver>)
    })
    .status_store(|| async {
        let s = PostgresStore::connect(URL)
            .await
            .unwrap_or_else(|e| panic!("{}", unreachable(e)));
        Arc::new(s) as Arc<dyn Store>
    })
    .bad_url("postgres://queue:queue@127.0.0.1:1/queue_test") // nothing listens on port 1
    .bad_url("postgres://queue:wrong-password@127.0.0.1:5432/queue_test")
    .bad_url("postgres://queue:queue@127.0.0.1:5432/queue_test?nonsense=1")
    .bad_url("postgres://queue:queue@127.0.0.1:5432/queue_test?schema=Bad-Name")
    .bad_url("postgres://queue:queue@127.0.0.1:5432/queue_test?max_message_size=1GiB")
    .bad_url("postgres://queue:queue@127.0.0.1:5432/queue_test?poll_interval=0s")
    .bad_url("postgres://queue:queue@127.0.0.1:5432/queue_test?vacuum_interval=500ms")
}

queue_core::conformance_suite!(harness);
