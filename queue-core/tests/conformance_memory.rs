//! The in-memory driver runs the whole conformance kit, one test per case.

use std::sync::Arc;

use queue_core::testkit::{unique, Harness};
use queue_core::{Driver, MemoryConfig, MemoryQueue};

fn harness() -> Harness {
    // Every instance the factory opens shares one named broker, as consumers of one server do.
    let broker = unique("conformance");
    Harness::new(move || {
        let broker = broker.clone();
        async move {
            Ok(Arc::new(MemoryQueue::named(&broker, MemoryConfig::default())) as Arc<dyn Driver>)
        }
    })
    .bad_url("memory://?max_message_size=lots")
    .bad_url("memory://?no_such_option=1")
}

queue_core::conformance_suite!(harness);
