//! docs/backends.md is checked against the code: its capability matrix is rendered here
//! from the profiles (which `profiles.rs` holds to the drivers), and its URL-option tables
//! must list exactly the options each backend's parser knows. `QUEUE_BLESS=1` rewrites
//! the matrix after an intended change.

use std::collections::BTreeSet;
use std::time::Duration;

use queue::{Capabilities, KeyChars, LeaseModel, Ordering, Peek, Profile, QueueError};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/backends.md");
const START: &str = "<!-- matrix:start (rendered by queue/tests/backends_doc.rs) -->";
const END: &str = "<!-- matrix:end -->";

fn size(n: usize) -> String {
    const KIB: usize = 1024;
    match n {
        n if n % (KIB * KIB) == 0 => format!("{} MiB", n / (KIB * KIB)),
        n if n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} B"),
    }
}

fn time(d: Duration) -> String {
    let (ms, s) = (d.as_millis(), d.as_secs());
    match () {
        _ if s == 365 * 86_400 && d.subsec_nanos() == 0 => "a year".into(),
        _ if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        _ if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        _ if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        _ if ms >= 1000 && ms % 1000 == 0 => format!("{s} s"),
        _ => format!("{ms} ms"),
    }
}

fn yes(b: bool, yes: &str, no: &str) -> String {
    (if b { yes } else { no }).to_string()
}

type Row = (&'static str, fn(&Capabilities) -> String);

const ROWS: &[Row] = &[
    ("largest message", |c| size(c.max_message_size)),
    ("messages per call", |c| c.max_batch.to_string()),
    ("delayed send", |c| match c.max_delay {
        None => "refused".into(),
        Some(d) => format!("up to {}", time(d)),
    }),
    ("retry delay", |c| match c.max_nack_delay {
        None => "none (at once)".into(),
        Some(d) => format!("up to {}", time(d)),
    }),
    ("ordering key", |c| match c.ordering {
        Ordering::None => "refused".into(),
        Ordering::PerKey => "per key, a retry holds the key".into(),
        Ordering::PerPartition => "per partition, a retry goes behind".into(),
        _ => "?".into(),
    }),
    ("priority", |c| {
        if c.priority {
            "native".into()
        } else if c.lease == LeaseModel::Session || c.ordering != Ordering::None {
            "refused".into()
        } else {
            "emulated as tier queues with `Backend::with_priorities`; else refused".into()
        }
    }),
    ("dedup id", |c| match c.dedup_window {
        None => format!(
            "emulated with a shared store, {} window; else refused",
            time(queue::dedup::EMULATED_WINDOW)
        ),
        Some(w) => format!("native, {} window", time(w)),
    }),
    ("ordering key, dedup id text", |c| {
        let chars = match c.key_chars {
            KeyChars::Any => "any text",
            KeyChars::NoNul => "text without NUL",
            KeyChars::PrintableAscii => "printable ASCII",
            _ => "?",
        };
        match c.max_key_len {
            None => chars.to_string(),
            Some(n) => format!("{chars}, up to {n} B"),
        }
    }),
    ("dead-letter queue", |c| {
        match (c.native_dlq, c.max_receives) {
            (true, Some(n)) => format!("core, and native after {n} receives"),
            _ => "core (emulated)".into(),
        }
    }),
    ("lease", |c| match c.lease {
        LeaseModel::PerMessage { .. } if c.can_extend() => {
            format!("per message, extendable, up to {}", time(c.max_lease))
        }
        LeaseModel::PerMessage { .. } => format!("per message, up to {}", time(c.max_lease)),
        LeaseModel::Session => "consumer session".into(),
        _ => "?".into(),
    }),
    ("timer step", |c| time(c.timer_granularity)),
    ("peek", |c| match c.peek {
        Peek::All => "every queue".into(),
        Peek::DeadLetterQueues => "dead-letter queues".into(),
        Peek::None => "refused".into(),
        _ => "?".into(),
    }),
    ("purge, delete", |c| yes(c.purge, "yes", "refused")),
    ("give-back keeps the attempt", |c| {
        yes(c.give_back_keeps_attempt, "yes", "no (counts one)")
    }),
    ("stats", |c| yes(c.exact_stats, "exact", "approximate")),
    ("stale receipts", |c| {
        yes(c.stale_receipts_refused, "refused", "may be accepted")
    }),
];

fn matrix() -> String {
    let mut out = String::from("| |");
    for p in Profile::ALL {
        out += &format!(" `{p}` |");
    }
    out += "\n|---|";
    out += &"---|".repeat(Profile::ALL.len());
    out += "\n";
    for (name, cell) in ROWS {
        out += &format!("| {name} |");
        for p in Profile::ALL {
            out += &format!(" {} |", cell(&p.capabilities()));
        }
        out += "\n";
    }
    out
}

#[test]
fn the_capability_matrix_is_the_profiles() {
    let doc = std::fs::read_to_string(DOC).expect("docs/backends.md");
    let (Some(a), Some(b)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/backends.md lost its matrix markers");
    };
    let written = &doc[a + START.len()..b];
    let want = format!("\n{}", matrix());
    if std::env::var_os("QUEUE_BLESS").is_some() {
        let new = format!("{}{START}{want}{}", &doc[..a], &doc[b..]);
        std::fs::write(DOC, new).expect("write docs/backends.md");
        return;
    }
    assert_eq!(
        written, want,
        "docs/backends.md's matrix differs from the profiles: rerun with QUEUE_BLESS=1"
    );
}

/// The options a backend's parser knows, from the error an unknown option gets (parsing
/// happens before any connection is tried).
async fn known_options(url: &str) -> BTreeSet<String> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let e = queue::connect(&format!("{url}{sep}zz_unknown=1"))
        .await
        .err()
        .unwrap_or_else(|| panic!("{url}: an unknown option was accepted"));
    let QueueError::InvalidUrl { reason, .. } = &e else {
        panic!("{url}: want InvalidUrl, got {e}")
    };
    let list = reason
        .split_once("knows: ")
        .unwrap_or_else(|| panic!("{url}: {reason}"))
        .1;
    // A pass-through family ("librdkafka properties (names with a dot)") is named by its
    // description, which the docs give in prose.
    list.split(", ")
        .filter(|o| !o.contains(' '))
        .map(str::to_string)
        .collect()
}

/// The options docs/backends.md lists under the heading that names `scheme`.
fn documented_options(doc: &str, scheme: &str) -> BTreeSet<String> {
    let heading = format!("### `{scheme}://`");
    let at = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/backends.md has no section {heading}"));
    doc[at + heading.len()..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("### ") && !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

#[tokio::test]
async fn every_url_option_is_documented() {
    let doc = std::fs::read_to_string(DOC).expect("docs/backends.md");
    for (scheme, url) in [
        ("memory", "memory://"),
        ("redis", "redis://127.0.0.1:6379"),
        ("sqs", "sqs://test:test@us-east-1"),
        ("kafka", "kafka://127.0.0.1:9092"),
        (
            "postgres",
            "postgres://queue:queue@127.0.0.1:5432/queue_test",
        ),
    ] {
        assert_eq!(
            documented_options(&doc, scheme),
            known_options(url).await,
            "docs/backends.md's {scheme}:// options against its parser"
        );
    }
}
