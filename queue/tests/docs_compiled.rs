//! Every Rust block in the README and docs/ is compiled by the tests: the README and
//! docs/backends.md as doctests of this crate (`include_str!` in src/lib.rs), the driver
//! guide by queue-core's `guide_driver` test. A new page with Rust in it, or a block marked
//! `ignore`, fails here until it is compiled too.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The info strings of the fenced blocks of `text` that rustdoc would treat as Rust.
fn rust_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        if !open && info.trim().starts_with("rust") {
            out.push(info.trim().to_string());
        }
        open = !open;
    }
    out
}

#[test]
fn every_rust_block_of_the_docs_is_compiled() {
    let lib = std::fs::read_to_string(root().join("queue/src/lib.rs")).unwrap();
    let guide_test =
        std::fs::read_to_string(root().join("queue-core/tests/guide_driver.rs")).unwrap();
    let mut pages = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    let mut problems = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let blocks = rust_blocks(&text);
        if blocks.is_empty() {
            continue;
        }
        let rel = page
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .to_string();
        for info in &blocks {
            if info.contains("ignore") {
                problems.push(format!("{rel}: a ```{info} block is not compiled"));
            }
        }
        let doctested = lib.contains(&format!("include_str!(\"../../{rel}\")"));
        let guided = guide_test.contains(&format!("\"../../{rel}\""));
        if !doctested && !guided {
            problems.push(format!(
                "{rel} has {} Rust block(s) that no test compiles: include it in queue/src/lib.rs",
                blocks.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
