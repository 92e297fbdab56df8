//! The in-memory driver runs the whole conformance suite, one test per case.

use std::sync::Arc;

use queue_core::testkit::{unique, Harness};
use queue_core::{MemoryConfig, MemoryQueue, Queue};

fn harness() -> Harness {
    // Every instance the factory opens shares one named broker, as consumers of one server do.
    let broker = unique("conformance");
    Harness::new(move || {
        let broker = broker.clone();
        async move { Arc::new(MemoryQueue::named(&broker, MemoryConfig::default())) as Arc<dyn Queue> }
    })
    .bad_url("memory://?max_message_size=lots")
}

queue_core::conformance_suite!(harness);
