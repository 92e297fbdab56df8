//! Queue URLs: the shared option parser every driver uses, and the password redaction
//! applied to URLs in errors. Any text: typed errors, never a panic, never an option
//! silently accepted (finish() reports what was not read).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use queue_core::options::UrlOptions;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A URL with a password comes back with the password replaced (parsed again, not
    // searched as text: the same characters may also appear in the path or query).
    let redacted = queue_core::redact(text);
    if let Ok(url) = url::Url::parse(text) {
        if url.password().is_some() {
            let again = url::Url::parse(&redacted).expect("a redacted URL still parses");
            assert_eq!(again.password(), Some("***"), "password kept: {redacted}");
        }
    }
    for base in ["redis://h:1/?", "sqs://us-east-1?", "kafka://h:9092?"] {
        let Ok(url) = url::Url::parse(&format!("{base}{text}")) else {
            continue;
        };
        let mut o = UrlOptions::new(&url);
        let _ = o.all("seed");
        let _ = o.string("group");
        let _ = o.bool("fifo");
        let _ = o.integer("partitions", 1, 1000);
        let _ = o.duration("dedup_window");
        let _ = o.duration_within("max_delay", Duration::from_secs(1), Duration::MAX);
        let _ = o.duration_at_most("poll", Duration::from_secs(3600));
        let _ = o.size("max_message_size");
        let _ = o.size_within("limit", 1, usize::MAX);
        let _ = o.passthrough("properties", |k| k.contains('.'));
        let _ = o.finish();
    }
});
