//! The in-memory driver runs the whole conformance kit, one test per case: as itself, and
//! wearing each bundled backend's profile (`memory://?like=…`), so that every refusal and
//! limit a profile declares is exercised by the kit too.

use std::sync::Arc;
use std::time::Duration;

use queue_core::testkit::{unique, Harness};
use queue_core::{Driver, MemoryConfig, MemoryQueue, Profile};

/// Every instance the factory opens shares one named broker, as consumers of one server
/// do. The dedup window is short so that `dedup_within_window` sees it end. The time unit
/// follows the profile's timer step (one second on SQS), as the real backend's kit does.
fn harness_like(like: Option<Profile>) -> Harness {
    let broker = unique("conformance");
    let mut config = like.map_or_else(MemoryConfig::default, MemoryConfig::like);
    config.dedup_window = Duration::from_secs(1);
    Harness::new(move || {
        let (broker, config) = (broker.clone(), config.clone());
        async move { Ok(Arc::new(MemoryQueue::named(&broker, config)) as Arc<dyn Driver>) }
    })
    .bad_url("memory://?max_message_size=lots")
    .bad_url("memory://?no_such_option=1")
    .bad_url("memory://?like=rabbitmq")
}

fn harness() -> Harness {
    harness_like(None)
}

queue_core::conformance_suite!(harness);

macro_rules! like {
    ($($module:ident => $profile:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            fn harness() -> Harness {
                harness_like(Some($profile))
            }
            queue_core::conformance_suite!(harness);
        }
    )*};
}

like! {
    like_redis => Profile::Redis,
    like_sqs => Profile::Sqs,
    like_sqs_fifo => Profile::SqsFifo,
    like_kafka => Profile::Kafka,
    like_postgres => Profile::Postgres,
}

/// Priorities emulated as tiers ([`queue_core::tiers`]) over the profile that has none
/// (SQS standard; FIFO and Kafka refuse tiers): the whole kit runs through the wrapper.
/// `queue-sqs` runs the wrapper's paths on a real standard queue.
macro_rules! tiered {
    ($($module:ident => $profile:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            fn harness() -> Harness {
                harness_like(Some($profile)).priority_tiers(4)
            }
            queue_core::conformance_suite!(harness);
        }
    )*};
}

tiered! {
    tiers_like_sqs => Profile::Sqs,
}
