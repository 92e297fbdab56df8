//! The dashboard over real HTTP, on the in-memory backend inside this process (as an
//! application embeds it): pages, forms with their confirmations and tokens, job lookup,
//! Prometheus metrics, and the access token.

mod common;

use axum::http::StatusCode;
use common::Charge;
use common::{csrf, http, serve};
use queue::{Backend, JobStatuses, MemoryStore, Message};
use queuectl::dashboard::{Access, Dashboard};

/// A memory backend with queue `orders` holding one ready job and three dead letters:
/// permanent (its error carrying markup), max-attempts, malformed. Returns the backend
/// and the id of the job that succeeded.
async fn seeded(name: &str) -> (Backend, queue::MessageId) {
    let store = std::sync::Arc::new(MemoryStore::new());
    let backend = queue::connect(&format!("memory://{name}"))
        .await
        .unwrap()
        .with_status(JobStatuses::new(store));
    let q = backend.queue("orders");
    q.create().await.unwrap();
    let done = q.enqueue(&Charge { n: 0 }).await.unwrap();
    for n in [2, 5] {
        q.enqueue(&Charge { n }).await.unwrap();
    }
    q.producer().send(Message::new("not a job")).await.unwrap();
    common::work_charges(&q, 3, 1).await;
    q.enqueue(&Charge { n: 9 }).await.unwrap();
    (backend, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_forms_and_metrics() {
    let (backend, done) = seeded("dash-pages").await;
    let q = backend.queue("orders");
    let addr =
        serve(Dashboard::new(backend.clone(), vec!["orders".into()], Access::Loopback).unwrap())
            .await;

    let home = http(addr, "/", None, &[]).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home
        .body
        .contains(r#"<meta http-equiv="refresh" content="5">"#));
    let row = &home.body[home.body.find(r#"data-queue="orders""#).unwrap()..];
    let cells: Vec<&str> = row
        .split("<td class=\"n")
        .skip(1)
        .take(4)
        .map(|c| c.split('>').nth(1).unwrap().split('<').next().unwrap())
        .collect();
    assert_eq!(
        cells,
        ["1", "0", "0", "3"],
        "ready, in flight, delayed, dead"
    );

    let page = http(addr, "/queues/orders", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    for want in [
        "permanent",
        "max-attempts",
        "malformed",
        "bank timed out",
        "not a job",
    ] {
        assert!(page.body.contains(want), "queue page lacks {want:?}");
    }
    assert!(
        page.body.contains("&lt;script&gt;") && !page.body.contains("<script>alert"),
        "an error's markup is escaped"
    );
    let token = csrf(&page.body);

    // Redrive: refused without the form token, does nothing without the confirmation.
    let forged = http(
        addr,
        "/queues/orders/redrive",
        Some(&[("csrf", "forged"), ("reason", "all"), ("confirm", "yes")]),
        &[],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let unconfirmed = http(
        addr,
        "/queues/orders/redrive",
        Some(&[("csrf", &token), ("reason", "all")]),
        &[],
    )
    .await;
    assert_eq!(unconfirmed.status, StatusCode::SEE_OTHER);
    assert_eq!(q.stats().await.unwrap().dead, 3, "nothing moved");
    let bad_limit = http(
        addr,
        "/queues/orders/redrive",
        Some(&[
            ("csrf", &token),
            ("reason", "all"),
            ("limit", "-1"),
            ("confirm", "yes"),
        ]),
        &[],
    )
    .await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    let redrive = http(
        addr,
        "/queues/orders/redrive",
        Some(&[
            ("csrf", &token),
            ("reason", "malformed"),
            ("confirm", "yes"),
        ]),
        &[],
    )
    .await;
    assert_eq!(redrive.status, StatusCode::SEE_OTHER);
    let back = redrive.location.expect("redirect to the queue page");
    let after = http(addr, &back, None, &[]).await;
    assert!(
        after.body.contains("Redrove 1 dead letter(s)."),
        "{}",
        after.body
    );
    let s = q.stats().await.unwrap();
    assert_eq!((s.ready, s.dead), (2, 2), "only the malformed one moved");

    // Purge: the name must be typed.
    let wrong = http(
        addr,
        "/queues/orders/purge",
        Some(&[("csrf", &token), ("target", "dlq"), ("confirm", "order")]),
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::SEE_OTHER);
    assert_eq!(q.stats().await.unwrap().dead, 2, "nothing purged");
    http(
        addr,
        "/queues/orders/purge",
        Some(&[("csrf", &token), ("target", "dlq"), ("confirm", "orders")]),
        &[],
    )
    .await;
    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.ready, s.dead),
        (2, 0),
        "the dead letters purged, the queue kept"
    );

    // Unknown queues and jobs.
    assert_eq!(
        http(addr, "/queues/nope", None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let job = http(addr, &format!("/jobs?id={done}"), None, &[]).await;
    assert!(job.body.contains("succeeded"), "{}", job.body);
    assert_eq!(
        http(addr, "/jobs?id=nope", None, &[]).await.status,
        StatusCode::NOT_FOUND
    );

    // Prometheus scrape.
    let m = http(addr, "/metrics", None, &[]).await;
    assert_eq!(m.status, StatusCode::OK);
    for line in [
        r#"queue_depth{queue="orders",state="ready"} 2"#,
        r#"queue_depth{queue="orders",state="dead"} 0"#,
        r#"queue_stats_up{queue="orders"} 1"#,
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{}",
            m.body
        );
    }

    // A flow as its graph: the root on the first level, its dependent on the second.
    let mut f = queue::flow::Flow::with_id("order-77");
    let charge = f.job("orders", &Charge { n: 77 }).unwrap();
    let ship = f.message("orders", Message::new("ship"));
    f.depends_on(ship, charge, queue::flow::OnFailure::Ignore);
    backend.add_flow(f).await.unwrap();
    let page = http(addr, "/flows?id=order-77", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let levels: Vec<&str> = page.body.split(r#"<div class="level">"#).skip(1).collect();
    assert_eq!(levels.len(), 2, "{}", page.body);
    assert!(levels[0].contains(r#"data-node="0""#) && levels[0].contains("charge"));
    assert!(levels[1].contains(r#"data-node="1""#) && levels[1].contains("after #0 (ignore)"));
    assert!(
        page.body.contains("waiting <strong>1</strong>"),
        "{}",
        page.body
    );
    assert_eq!(
        http(addr, "/flows?id=nope", None, &[]).await.status,
        StatusCode::NOT_FOUND
    );

    // A batch: its counts, its bar and its callback.
    let batch = backend
        .new_batch()
        .id("album-9")
        .description("album nine")
        .on_message(
            queue::batch::Kind::Complete,
            "orders",
            Message::new("report"),
        )
        .open()
        .await
        .unwrap();
    let three = vec![Message::new("a"), Message::new("b"), Message::new("c")];
    batch.add_messages("orders", three).await.unwrap();
    batch.close().await.unwrap();
    let page = http(addr, "/batches?id=album-9", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for want in [
        "total <strong>3</strong>",
        "pending <strong>3</strong>",
        "closed, running",
        "album nine",
        r#"id="batch-bar""#,
        "<td>complete</td><td>pending</td>",
    ] {
        assert!(page.body.contains(want), "{want:?} missing: {}", page.body);
    }
    assert_eq!(
        http(addr, "/batches?id=nope", None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_page() {
    let backend = queue::connect("memory://dash-token").await.unwrap();
    backend.queue("orders").create().await.unwrap();
    assert!(
        Dashboard::new(
            backend.clone(),
            vec!["orders".into()],
            Access::Token("short".into())
        )
        .is_err(),
        "a short token is refused"
    );
    let token = "a-long-enough-token-123";
    let addr =
        serve(Dashboard::new(backend, vec!["orders".into()], Access::Token(token.into())).unwrap())
            .await;
    for path in [
        "/",
        "/queues/orders",
        "/metrics",
        "/jobs?id=x",
        "/flows?id=x",
        "/batches?id=x",
    ] {
        assert_eq!(
            http(addr, path, None, &[]).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let wrong = http(
        addr,
        "/",
        None,
        &[("authorization", "Bearer a-long-enough-token-124")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let bearer = http(
        addr,
        "/",
        None,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(bearer.status, StatusCode::OK);
    let once = http(addr, &format!("/?token={token}"), None, &[]).await;
    assert_eq!(once.status, StatusCode::OK);
    let cookie = once.cookie.expect("the token is kept in a cookie");
    let pair = cookie.split(';').next().unwrap();
    let again = http(addr, "/queues/orders", None, &[("cookie", pair)]).await;
    assert_eq!(again.status, StatusCode::OK);
    // Purging through the API without the token changes nothing.
    let purge = http(
        addr,
        "/queues/orders/purge",
        Some(&[("csrf", "x"), ("target", "queue"), ("confirm", "orders")]),
        &[],
    )
    .await;
    assert_eq!(purge.status, StatusCode::UNAUTHORIZED);
}

/// The router mounted in an application's own server is never open by accident: loopback
/// access checks each request's peer, and refuses when the server does not say it (0.2's
/// router without a token answered anyone); an application's own authentication in front
/// is a choice named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_is_guarded_by_an_explicit_choice() {
    let backend = queue::connect("memory://dash-access").await.unwrap();
    backend.queue("orders").create().await.unwrap();
    let dash = |a| Dashboard::new(backend.clone(), vec!["orders".into()], a).unwrap();
    let without_peer = common::serve_without_peer(dash(Access::Loopback)).await;
    let refused = http(without_peer, "/", None, &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    assert!(refused.body.contains("connect_info"), "{}", refused.body);
    let local = serve(dash(Access::Loopback)).await;
    assert_eq!(http(local, "/", None, &[]).await.status, StatusCode::OK);
    let named = http(local, "/", None, &[("host", "localhost:8080")]).await;
    assert_eq!(named.status, StatusCode::OK);
    // A page whose own name rebinds to 127.0.0.1: local peer, foreign Host.
    let rebound = http(local, "/", None, &[("host", "evil.example:8080")]).await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN, "{rebound:?}");
    let fronted = common::serve_without_peer(dash(Access::AuthenticatedInFront)).await;
    assert_eq!(http(fronted, "/", None, &[]).await.status, StatusCode::OK);
}
