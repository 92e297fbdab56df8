//! The guide's driver (`docs/guide_driver.rs`) runs the whole conformance kit, and every
//! Rust block of `docs/writing-a-driver.md` is checked to be an excerpt of the compiled
//! code, so the guide cannot drift from the API.

use std::collections::HashSet;
use std::sync::Arc;

use queue_core::driver::Url;
use queue_core::testkit::{unique, Harness};
use queue_core::Driver;

#[path = "../../docs/guide_driver.rs"]
mod guide_driver;
use guide_driver::MyDriver;

fn harness() -> Harness {
    guide_driver::register(); // backend_errors_typed opens the bad URLs through connect
    let broker = unique("guide");
    Harness::new(move || {
        // A short dedup window, so that `dedup_within_window` sees it end.
        let url = format!("mybackend://{broker}?dedup_window=1s");
        async move {
            let url = Url::parse(&url).expect("a valid URL");
            Ok(Arc::new(MyDriver::open(url).await?) as Arc<dyn Driver>)
        }
    })
    .bad_url("mybackend://app?nonsense=1") // InvalidUrl: unknown option
    .bad_url("mybackend://app?max_message_size=1GiB") // InvalidUrl: over the limit
}

queue_core::conformance_suite!(harness);

/// How an application uses the driver (the guide's section 7).
#[tokio::test]
async fn applications_use_it_through_a_backend() -> queue_core::Result<()> {
    let url = Url::parse("mybackend://app").expect("a valid URL");
    let backend = queue_core::Backend::new(MyDriver::open(url).await?);
    // or, so that one binary switches backend with QUEUE_URL:
    guide_driver::register();
    let backend2 = queue_core::connect("mybackend://app").await?;
    let emails = backend.queue("emails");
    emails.create().await?;
    emails.send(queue_core::Message::new("hello")).await?;
    assert_eq!(backend2.queue("emails").stats().await?.ready, 1);
    Ok(())
}

#[test]
fn every_rust_block_of_the_guide_is_compiled_code() {
    let guide = include_str!("../../docs/writing-a-driver.md");
    let code: HashSet<&str> = [
        include_str!("../../docs/guide_driver.rs"),
        include_str!("guide_driver.rs"),
    ]
    .iter()
    .flat_map(|f| f.lines())
    .map(str::trim)
    .collect();
    let mut in_rust = false;
    let mut missing = Vec::new();
    for (n, line) in guide.lines().enumerate() {
        let t = line.trim();
        if let Some(info) = t.strip_prefix("```") {
            in_rust = !in_rust && info.starts_with("rust");
            continue;
        }
        if in_rust && !t.is_empty() && t != "// …" && !code.contains(t) {
            missing.push(format!("line {}: {t}", n + 1));
        }
    }
    assert!(
        missing.is_empty(),
        "want every line of the guide's Rust blocks in docs/guide_driver.rs or this test, these are not:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_guide_lists_every_case_of_the_kit() {
    let guide = include_str!("../../docs/writing-a-driver.md");
    let missing: Vec<&str> = queue_core::testkit::CASES
        .iter()
        .copied()
        .filter(|c| !guide.contains(&format!("| `{c}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/writing-a-driver.md's case table lacks: {missing:?}"
    );
}
