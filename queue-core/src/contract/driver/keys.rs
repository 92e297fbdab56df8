//! What a backend accepts as an ordering key or a dedup id: how long, which characters.
//!
//! SQS takes at most 128 printable ASCII characters as a `MessageGroupId` or a
//! `MessageDeduplicationId`; PostgreSQL stores keys in indexed `text` columns (no NUL, and a
//! B-tree entry holds about 2.7 kB); Redis and Kafka take any bytes. A key the backend would
//! refuse is refused here, before anything is sent, with a typed error that names the
//! rule: on every backend alike, so that `memory://?like=sqs-fifo` refuses what SQS would.
//! Every backend refuses an empty key (SQS does; elsewhere it reads as a mistake).

use super::Capabilities;
use crate::error::{QueueError, Result};

/// The characters a backend accepts in ordering keys and dedup ids
/// ([`Capabilities::key_chars`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyChars {
    /// Any UTF-8 text (Redis, Kafka, memory).
    Any,
    /// Any UTF-8 text but NUL (PostgreSQL's `text`).
    NoNul,
    /// Printable ASCII only, `!` to `~`: letters, digits and punctuation, no spaces (SQS).
    PrintableAscii,
}

impl KeyChars {
    fn allows(self, c: char) -> bool {
        match self {
            KeyChars::Any => true,
            KeyChars::NoNul => c != '\0',
            KeyChars::PrintableAscii => c.is_ascii_graphic(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyChars::Any => "any text",
            KeyChars::NoNul => "text without NUL",
            KeyChars::PrintableAscii => "printable ASCII ('!' to '~', no spaces)",
        }
    }
}

/// Checks one ordering key or dedup id (`what` names it in the error) against `caps`.
pub(crate) fn check(
    caps: &Capabilities,
    backend: &'static str,
    what: &str,
    key: &str,
) -> Result<()> {
    if key.is_empty() {
        return Err(QueueError::InvalidOption(format!("an empty {what}")));
    }
    if let Some(max) = caps.max_key_len {
        if key.len() > max {
            return Err(QueueError::InvalidOption(format!(
                "{what} of {} bytes: {backend} takes at most {max}",
                key.len()
            )));
        }
    }
    if let Some(c) = key.chars().find(|c| !caps.key_chars.allows(*c)) {
        return Err(QueueError::InvalidOption(format!(
            "{what} holds {c:?}: {backend} takes {}",
            caps.key_chars.describe()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_for_emptiness_length_and_characters() {
        let sqs = Capabilities::baseline()
            .with_max_key_len(Some(128))
            .with_key_chars(KeyChars::PrintableAscii);
        let ok = "a".repeat(128);
        assert!(check(&sqs, "sqs", "ordering key", &ok).is_ok());
        assert!(check(&sqs, "sqs", "ordering key", "~!{}|").is_ok());
        for bad in ["", &"a".repeat(129), "a b", "é", "a\nb"] {
            assert!(
                matches!(
                    check(&sqs, "sqs", "ordering key", bad),
                    Err(QueueError::InvalidOption(_))
                ),
                "{bad:?}"
            );
        }
        let pg = Capabilities::baseline()
            .with_max_key_len(None)
            .with_key_chars(KeyChars::NoNul);
        assert!(check(&pg, "postgres", "dedup id", "é a\n").is_ok());
        assert!(check(&pg, "postgres", "dedup id", "a\0b").is_err());
        let any = pg.with_key_chars(KeyChars::Any);
        assert!(check(&any, "kafka", "dedup id", "a\0b").is_ok());
        assert!(check(&any, "kafka", "dedup id", "").is_err());
    }
}
