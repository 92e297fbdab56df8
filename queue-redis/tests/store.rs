//! The store cases (`queue_core::testkit::store`) on standalone Redis and on the Cluster,
//! with real time (Redis expires the entries), and inserts racing from two clients.

mod common;

use std::sync::Arc;

use queue_core::testkit::store;
use queue_core::Store;
use queue_redis::RedisStore;

const STANDALONE: &str = "redis://127.0.0.1:6379";
const CLUSTER: &str = "redis://127.0.0.1:7001?cluster=true&seed=127.0.0.1:7002";

#[tokio::test]
async fn standalone_store_passes_the_store_cases() {
    let s = RedisStore::new(&common::connect(STANDALONE).await);
    store::run(&s, tokio::time::sleep).await;
}

#[tokio::test]
async fn cluster_store_passes_the_store_cases() {
    let s = RedisStore::new(&common::connect(CLUSTER).await);
    store::run(&s, tokio::time::sleep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_racing_from_two_clients_make_one_entry() {
    for url in [STANDALONE, CLUSTER] {
        let a: Arc<dyn Store> = Arc::new(RedisStore::new(&common::connect(url).await));
        let b: Arc<dyn Store> = Arc::new(RedisStore::new(&common::connect(url).await));
        store::concurrent_inserts(vec![a, b]).await;
    }
}

#[tokio::test]
async fn debug_output_holds_no_password() {
    let s = RedisStore::connect(STANDALONE).await.unwrap();
    assert_eq!(format!("{s:?}"), "RedisStore { .. }");
}
