//! Transactional enqueue on an sqlx transaction (feature `sqlx`): a commit delivers, a
//! rollback never does, and a transaction on another database is a typed error.

use std::time::Duration;

use queue_core::testkit::unique;
use queue_core::{Driver, Message, QueueError, ReceiveOptions};
use queue_postgres::{txn, PostgresQueue};
use sqlx::Connection;

const URL: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test?schema=txn";
const APP: &str = "postgres://queue:queue@127.0.0.1:5432/queue_test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_commit_delivers_and_rollback_never_does() {
    let pg = PostgresQueue::connect(URL).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {URL}: {e}. Start the test servers with scripts/services.sh")
    });
    let q = unique("sqlx");
    pg.create_queue(&q).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(APP).await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    txn::send_sqlx(&mut tx, &pg, &q, vec![Message::new("committed")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    txn::send_sqlx(&mut tx, &pg, &q, vec![Message::new("rolled back")])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let got = pg
        .receive(
            &q,
            ReceiveOptions::new(10, Duration::from_secs(1), Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let bodies: Vec<_> = got.iter().map(|d| d.payload.to_vec()).collect();
    assert_eq!(bodies, [b"committed".to_vec()]);
    pg.ack(&q, &[got[0].receipt.clone()]).await.unwrap();
    assert_eq!(pg.stats(&q).await.unwrap().ready, 0);

    let mut other = sqlx::PgConnection::connect("postgres://queue:queue@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    let e = txn::send_sqlx(&mut other, &pg, &q, vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::Schema { .. }), "{e}");
    let e = txn::send_sqlx(&mut conn, &pg, "no-such-queue", vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::UnknownQueue(_)), "{e}");
    pg.delete_queue(&q).await.unwrap();
}
