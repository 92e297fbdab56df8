//! PostgresStore against the real server `scripts/services.sh` ensures
//! (postgres://queue:queue@127.0.0.1:5432/queue_test): the store cases, races between
//! clients, retention sweeping, a lost connection, and bad URLs.

use std::sync::Arc;
use std::time::Duration;

use queue_core::testkit::store;
use queue_core::{QueueError, Store};
use queue_postgres::PostgresStore;

const URL: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";

async fn connect(url: &str) -> PostgresStore {
    PostgresStore::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {url}: {e}. Start the test servers with scripts/services.sh")
    })
}

/// A psql-like side connection to look at the table itself.
async fn sql() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=queue password=queue dbname=queue_test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("side connection");
    tokio::spawn(conn);
    c
}

#[tokio::test]
async fn store_passes_the_store_cases() {
    let s = connect(URL).await;
    store::run(&s, tokio::time::sleep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_racing_from_two_clients_make_one_entry() {
    let a: Arc<dyn Store> = Arc::new(connect(URL).await);
    let b: Arc<dyn Store> = Arc::new(connect(URL).await);
    store::concurrent_inserts(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_starting_together_create_one_schema() {
    let schema = format!("race_{}", fastrand::u32(..));
    let url = format!("{URL}?schema={schema}");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.spawn(async move { PostgresStore::connect(&url).await.map(|_| ()) });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap()
            .expect("every concurrent connect creates or finds the table");
    }
    sql()
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_rows_are_deleted_from_the_table() {
    let schema = format!("sweep_{}", fastrand::u32(..));
    let s = connect(&format!("{URL}?schema={schema}&sweep_interval=1ms")).await;
    for i in 0..20 {
        s.insert(&format!("k{i}"), b"v", Duration::from_millis(50))
            .await
            .unwrap();
    }
    s.insert("kept", b"v", Duration::from_secs(600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.insert("trigger", b"v", Duration::from_secs(600))
        .await
        .unwrap();
    let side = sql().await;
    let n: i64 = side
        .query_one(&format!("SELECT count(*) FROM {schema}.kv"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the 20 expired rows must be gone, the live 2 kept");
    side.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lost_connection_is_reopened() {
    let name = format!("lost_{}", fastrand::u32(..));
    let s = connect(&format!("{URL}?application_name={name}")).await;
    s.insert("lost-conn-probe", b"1", Duration::from_secs(60))
        .await
        .unwrap();
    // Kill this store's session (the server's side of a lost connection).
    let killed = sql()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(killed, 1, "one session to kill");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ok = None;
    for _ in 0..3 {
        match s.get("lost-conn-probe").await {
            Ok(v) => {
                ok = v;
                break;
            }
            Err(e) => assert!(
                matches!(
                    e,
                    QueueError::Connection { .. } | QueueError::Backend { .. }
                ),
                "a lost connection is a typed error: {e:?}"
            ),
        }
    }
    assert!(ok.is_some(), "the store reconnects by itself");
    s.delete("lost-conn-probe").await.unwrap();
}

#[tokio::test]
async fn bad_urls_and_credentials_are_typed_errors() {
    let err = |url: &'static str| async move { PostgresStore::connect(url).await.unwrap_err() };
    assert!(matches!(
        err("postgres://queue:wrong@127.0.0.1:5432/queue_test").await,
        QueueError::Auth { .. }
    ));
    assert!(matches!(
        err("postgres://queue:queue@127.0.0.1:1/queue_test").await,
        QueueError::Connection { .. }
    ));
    for (url, says) in [
        (
            "postgres://queue:queue@127.0.0.1/queue_test?schema=Bad-Name",
            "schema",
        ),
        (
            "postgres://queue:queue@127.0.0.1/queue_test?nonsense=1",
            "unknown option",
        ),
        (
            "postgres://queue:queue@127.0.0.1/queue_test?sslmode=require",
            "no TLS",
        ),
        (
            "postgres://queue:queue@127.0.0.1/queue_test?connect_timeout=0s",
            "connect_timeout",
        ),
        ("redis://127.0.0.1/", "postgres://"),
    ] {
        let e = PostgresStore::connect(url).await.unwrap_err();
        assert!(
            matches!(e, QueueError::InvalidUrl { .. }) && e.to_string().contains(says),
            "{url}: want InvalidUrl saying {says:?}, got {e}"
        );
    }
    let e = err("postgres://queue:s3cr3t-pw@127.0.0.1:5432/queue_test?nonsense=1").await;
    assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
    let s = connect(URL).await;
    assert!(!format!("{s:?}").contains("queue:queue"));
}
