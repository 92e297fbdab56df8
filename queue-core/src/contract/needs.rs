//! What an application needs from its backend, stated once and checked at start.
//!
//! An application that relies on priorities, a key's order surviving retries, dedup ids or
//! long delays says so with [`Needs`] and calls [`Backend::require`](crate::Backend::require)
//! when it starts: on a backend that cannot give all of it, that one call fails with
//! [`QueueError::Unmet`], listing every missing need and the backends that have it, instead
//! of the first send that uses it failing in production. On `memory://app?like=kafka` (see
//! [`crate::profile`]) the same call refuses what Kafka would, so the application's own
//! tests catch it.
//!
//! ```
//! use std::time::Duration;
//! use queue_core::{Needs, QueueError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
//! let needs = Needs::new().priority().ordering_per_key().max_delay(Duration::from_secs(7200));
//! queue_core::connect("memory://app").await?.require(&needs)?; // memory has all of it
//! let e = queue_core::connect("memory://app?like=kafka").await?.require(&needs).unwrap_err();
//! let QueueError::Unmet { unmet, .. } = &e else { panic!("{e}") };
//! assert_eq!(unmet.len(), 2); // no priorities, delays up to 15 minutes
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use crate::driver::{Capabilities, Ordering, Peek};
use crate::error::{QueueError, Result};
use crate::profile::Profile;

/// One thing an application needs from its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Need {
    /// [`Message::priority`](crate::Message::priority) honoured, higher first.
    Priority,
    /// Ordering keys accepted, a key's messages delivered in send order (per key, or per
    /// partition: a retry may let later messages of the key pass).
    Ordering,
    /// A key's messages processed in send order, a retry of one holding the later ones
    /// ([`Ordering::PerKey`]).
    OrderingPerKey,
    /// Dedup ids dropped within a window at least this long (zero: any window).
    Dedup(Duration),
    /// Delayed sends of up to this long.
    Delay(Duration),
    /// Retry backoffs (nack delays) of up to this long.
    RetryDelay(Duration),
    /// Messages of up to this many bytes, payload plus headers.
    MessageSize(usize),
    /// A main queue's ready messages read without taking them (`queuectl peek`).
    Peek,
    /// Purging and deleting queues.
    Purge,
    /// Leases extended while a long job runs (heartbeats).
    LeaseExtension,
}

impl Need {
    /// Whether a backend with `caps` gives this.
    pub fn met_by(&self, caps: &Capabilities) -> bool {
        match *self {
            Need::Priority => caps.priority,
            Need::Ordering => caps.ordering != Ordering::None,
            Need::OrderingPerKey => caps.ordering == Ordering::PerKey,
            Need::Dedup(w) => caps.dedup_window.is_some_and(|have| have >= w),
            Need::Delay(d) => caps.max_delay.is_some_and(|max| max >= d),
            Need::RetryDelay(d) => caps.max_nack_delay.is_some_and(|max| max >= d),
            Need::MessageSize(n) => caps.max_message_size >= n,
            Need::Peek => caps.peek == Peek::All,
            Need::Purge => caps.purge,
            Need::LeaseExtension => caps.can_extend(),
        }
    }

    fn check_value(&self) -> Result<()> {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let bad = |what: String| Err(QueueError::InvalidOption(what));
        match *self {
            Need::Dedup(d) | Need::Delay(d) | Need::RetryDelay(d) if d > CENTURY => bad(format!(
                "{self}: no backend holds anything for over a century"
            )),
            Need::MessageSize(0) => bad("a need for messages of 0 bytes says nothing".into()),
            Need::MessageSize(n) if n > 1 << 31 => {
                bad(format!("{self}: no backend takes messages over 2 GiB"))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Priority => f.write_str("priorities"),
            Need::Ordering => f.write_str("ordering keys"),
            Need::OrderingPerKey => f.write_str("per-key order that holds across retries"),
            Need::Dedup(w) if w.is_zero() => f.write_str("dedup ids"),
            Need::Dedup(w) => write!(f, "dedup ids within {w:?}"),
            Need::Delay(d) => write!(f, "delays of {d:?}"),
            Need::RetryDelay(d) => write!(f, "retry delays of {d:?}"),
            Need::MessageSize(n) => write!(f, "messages of {n} bytes"),
            Need::Peek => f.write_str("peeking at queued messages"),
            Need::Purge => f.write_str("purging and deleting queues"),
            Need::LeaseExtension => f.write_str("lease extension"),
        }
    }
}

/// A need a backend does not meet, with the backends (by [`Profile`] name, default
/// options) that do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unmet {
    /// What is missing.
    pub need: Need,
    /// The bundled backends that have it.
    pub available_on: Vec<&'static str>,
    /// Whether queue-core emulates it on any backend given a shared store
    /// ([`crate::Backend::with_store`]): dedup ids (see [`crate::dedup`]).
    pub with_a_store: bool,
}

impl Unmet {
    fn new(need: Need) -> Self {
        let with_a_store = matches!(need, Need::Dedup(w) if w <= crate::dedup::EMULATED_WINDOW);
        Unmet {
            need,
            available_on: Profile::ALL
                .iter()
                .filter(|p| need.met_by(&p.capabilities()))
                .map(|p| p.name())
                .collect(),
            with_a_store,
        }
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = if self.with_a_store {
            "; on any backend given a shared store"
        } else if self.need == Need::Priority {
            // Emulated as tiers (crate::tiers), declared by the application.
            "; on sqs with Backend::with_priorities"
        } else {
            ""
        };
        if self.available_on.is_empty() {
            write!(f, "{} (no bundled backend has it{store})", self.need)
        } else {
            write!(
                f,
                "{} (on {}{store})",
                self.need,
                self.available_on.join(", ")
            )
        }
    }
}

/// What an application needs from its backend: build it once, check it with
/// [`Backend::require`](crate::Backend::require) at start (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    items: Vec<Need>,
}

impl Needs {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds any [`Need`].
    pub fn need(mut self, need: Need) -> Self {
        if !self.items.contains(&need) {
            self.items.push(need);
        }
        self
    }
    /// Priorities ([`Need::Priority`]).
    pub fn priority(self) -> Self {
        self.need(Need::Priority)
    }
    /// Ordering keys in partition order at least ([`Need::Ordering`]).
    pub fn ordering(self) -> Self {
        self.need(Need::Ordering)
    }
    /// Per-key order that holds across retries ([`Need::OrderingPerKey`]).
    pub fn ordering_per_key(self) -> Self {
        self.need(Need::OrderingPerKey)
    }
    /// Dedup ids, any window ([`Need::Dedup`]).
    pub fn dedup(self) -> Self {
        self.need(Need::Dedup(Duration::ZERO))
    }
    /// Dedup ids within at least `window`.
    pub fn dedup_window(self, window: Duration) -> Self {
        self.need(Need::Dedup(window))
    }
    /// Delayed sends up to `max` ([`Need::Delay`]).
    pub fn max_delay(self, max: Duration) -> Self {
        self.need(Need::Delay(max))
    }
    /// Retry backoffs up to `max` ([`Need::RetryDelay`]).
    pub fn max_retry_delay(self, max: Duration) -> Self {
        self.need(Need::RetryDelay(max))
    }
    /// Messages up to `bytes` ([`Need::MessageSize`]).
    pub fn message_size(self, bytes: usize) -> Self {
        self.need(Need::MessageSize(bytes))
    }
    /// Peeking at main queues ([`Need::Peek`]).
    pub fn peek(self) -> Self {
        self.need(Need::Peek)
    }
    /// Purge and delete ([`Need::Purge`]).
    pub fn purge(self) -> Self {
        self.need(Need::Purge)
    }
    /// Lease extension ([`Need::LeaseExtension`]).
    pub fn lease_extension(self) -> Self {
        self.need(Need::LeaseExtension)
    }
    /// The needs, in the order they were added.
    pub fn items(&self) -> &[Need] {
        &self.items
    }

    /// Checks these needs against `caps` (backend `backend`): `Ok` when every one is met,
    /// else one [`QueueError::Unmet`] listing all that are not. A need with an absurd
    /// value (messages of 0 bytes or over 2 GiB, durations over a century) is
    /// [`QueueError::InvalidOption`].
    pub fn check(&self, backend: &'static str, caps: &Capabilities) -> Result<()> {
        for n in &self.items {
            n.check_value()?;
        }
        let unmet: Vec<Unmet> = self
            .items
            .iter()
            .filter(|n| !n.met_by(caps))
            .map(|&need| Unmet::new(need))
            .collect();
        if unmet.is_empty() {
            Ok(())
        } else {
            Err(QueueError::Unmet { backend, unmet })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unmet_need_is_listed_with_who_has_it() {
        let needs = Needs::new()
            .priority()
            .ordering_per_key()
            .dedup()
            .max_delay(Duration::from_secs(3600))
            .peek();
        let e = needs
            .check("kafka", &Profile::Kafka.capabilities())
            .unwrap_err();
        let QueueError::Unmet { backend, unmet } = &e else {
            panic!("{e}")
        };
        assert_eq!(*backend, "kafka");
        let names: Vec<Need> = unmet.iter().map(|u| u.need).collect();
        let want: Vec<Need> = needs
            .items()
            .iter()
            .copied()
            .filter(|n| *n != Need::OrderingPerKey)
            .collect();
        assert_eq!(names, want, "kafka keeps a key's order across retries");
        assert_eq!(unmet[0].available_on, ["memory", "redis", "postgres"]);
        assert_eq!(
            unmet[1].available_on,
            ["memory", "redis", "sqs-fifo", "postgres"],
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(
                "priorities (on memory, redis, postgres; on sqs with Backend::with_priorities)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "dedup ids (on memory, redis, sqs-fifo, postgres; on any backend given a shared store)"
            ),
            "{text}"
        );
        needs
            .check("memory", &Profile::Memory.capabilities())
            .unwrap();
    }

    #[test]
    fn absurd_needs_are_invalid_options() {
        let caps = Profile::Memory.capabilities();
        for n in [
            Needs::new().message_size(0),
            Needs::new().message_size(usize::MAX),
            Needs::new().max_delay(Duration::MAX),
            Needs::new().dedup_window(Duration::MAX),
        ] {
            let r = n.check("memory", &caps);
            assert!(
                matches!(r, Err(QueueError::InvalidOption(_))),
                "{n:?}: {r:?}"
            );
        }
    }

    #[test]
    fn partition_order_is_ordering_but_not_per_key_order() {
        let k = Capabilities::baseline().with_ordering(Ordering::PerPartition);
        assert!(Need::Ordering.met_by(&k));
        assert!(!Need::OrderingPerKey.met_by(&k));
        assert!(!Need::Ordering.met_by(&Profile::Sqs.capabilities()));
    }
}
