//! Every bundled driver, connected to its real server with default options, declares
//! exactly the capabilities of its profile in `queue_core::profile`: the profile that
//! `memory://?like=…` wears and that `Backend::require` names backends from. A refusal a
//! driver adds (or drops) without its profile following fails here, so an application
//! tested on a profile is never refused more, or less, in production.

use queue::{Profile, QueueError};

async fn connect(url: &str) -> queue::Backend {
    queue::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}. Start the test servers with scripts/services.sh"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_is_its_driver() {
    let cases = [
        (Profile::Redis, "redis://127.0.0.1:6379"),
        (
            Profile::Redis,
            "redis://127.0.0.1:7001?cluster=true&seed=127.0.0.1:7002",
        ),
        (
            Profile::Sqs,
            "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566",
        ),
        (
            Profile::SqsFifo,
            "sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566&fifo=true",
        ),
        (Profile::Kafka, "kafka://127.0.0.1:9092"),
        (
            Profile::Postgres,
            "postgres://queue:queue@127.0.0.1:5432/queue_test?schema=profiles",
        ),
        (Profile::Memory, "memory://"),
    ];
    let mut wrong = Vec::new();
    for (profile, url) in cases {
        let caps = connect(url).await.capabilities();
        let diff = profile.differences(&caps);
        if !diff.is_empty() {
            wrong.push(format!("{profile} ({url}): {}", diff.join("; ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "profiles that no longer describe their driver (update queue-core/src/contract/profile.rs and docs/backends.md):\n{}",
        wrong.join("\n")
    );
}

/// The profile a memory backend wears is the driver's, refusals included.
#[tokio::test]
async fn a_worn_profile_refuses_what_the_driver_refuses() {
    for profile in Profile::ALL {
        let worn = connect(&format!("memory://?like={profile}"))
            .await
            .capabilities();
        let real = profile.capabilities();
        for (what, refused_worn, refused_real) in [
            ("priority", !worn.priority, !real.priority),
            (
                "dedup",
                worn.dedup_window.is_none(),
                real.dedup_window.is_none(),
            ),
            (
                "ordering",
                worn.ordering == queue::Ordering::None,
                real.ordering == queue::Ordering::None,
            ),
            ("delay", worn.max_delay != real.max_delay, false),
            ("purge", !worn.purge, !real.purge),
            ("peek", worn.peek != real.peek, false),
        ] {
            assert_eq!(refused_worn, refused_real, "{profile}: {what}");
        }
    }
    let e = queue::connect("memory://?like=nats").await.err().unwrap();
    assert!(matches!(e, QueueError::InvalidUrl { .. }), "{e}");
}
