//! Priorities are not emulated on Kafka: `Backend::with_priorities` is refused there, with
//! the reason (queue_core::tiers: a consumer's receive without waiting does not see what
//! its topic holds, so tier queues could not keep "higher first"; a test of them saw a
//! lower tier's record before a higher one's in two runs of three).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_are_refused_not_approximated() {
    let driver = common::connect(common::URL).await;
    let backend = queue_core::Backend::new(driver);
    match backend.with_priorities(3) {
        Err(queue_core::QueueError::Unsupported { feature, .. }) => {
            assert!(feature.contains("priorities"), "{feature}")
        }
        other => panic!("want Unsupported, got {other:?}"),
    }
}
