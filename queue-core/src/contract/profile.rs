//! The bundled backends' capability profiles: what each one declares with its default
//! options, so that the in-memory backend can wear it (`memory://app?like=kafka`) and
//! [`Backend::require`](crate::Backend::require) can say which backends have what an
//! application asks for.
//!
//! A profile is a [`Capabilities`] value kept here, in queue-core, beside the drivers it
//! describes; the `queue` crate's `profiles` test connects each real driver and fails when
//! a profile and its driver's `capabilities()` differ in any field the profile copies. So a
//! refusal a backend adds shows up in its profile, and an application tested on
//! `memory://?like=redis` is refused what Redis refuses.
//!
//! What the in-memory backend takes from a profile ([`Profile::apply`]): message size,
//! batch size, longest delay and retry delay, ordering model, priorities, dedup window,
//! native dead-lettering and its receive limit, timer step, longest lease, purge, peek,
//! and whether a give-back keeps its attempt. What it keeps of its own: per-message leases
//! that can be extended, exact stats, stale receipts refused. A profile copies what a
//! backend *refuses* and its limits, not how it fails: memory does not lose a Kafka
//! consumer's session, redeliver like an SQS standard queue, or take a second to time out.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::driver::{Capabilities, KeyChars, LeaseModel, Ordering, Peek};
use crate::error::{QueueError, Result};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const MIB: usize = 1024 * 1024;
const FIVE_MINUTES: Duration = Duration::from_secs(300);

/// A bundled backend's capabilities with its default options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// The embedded in-memory backend (`memory://`).
    Memory,
    /// Redis, standalone or Cluster (`redis://`).
    Redis,
    /// An SQS standard queue (`sqs://`).
    Sqs,
    /// An SQS FIFO queue (`sqs://…?fifo=true`).
    SqsFifo,
    /// Kafka (`kafka://`).
    Kafka,
    /// PostgreSQL (`postgres://`).
    Postgres,
}

impl Profile {
    /// Every profile, in the order the docs list them.
    pub const ALL: &'static [Profile] = &[
        Profile::Memory,
        Profile::Redis,
        Profile::Sqs,
        Profile::SqsFifo,
        Profile::Kafka,
        Profile::Postgres,
    ];

    /// The name used in `memory://?like=NAME` and in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Memory => "memory",
            Profile::Redis => "redis",
            Profile::Sqs => "sqs",
            Profile::SqsFifo => "sqs-fifo",
            Profile::Kafka => "kafka",
            Profile::Postgres => "postgres",
        }
    }

    /// What the backend's driver declares with its default URL options.
    pub fn capabilities(&self) -> Capabilities {
        let base = Capabilities::baseline();
        match self {
            Profile::Memory => crate::memory::own_capabilities(&crate::MemoryConfig::default()),
            Profile::Redis => base
                .with_max_message_size(MIB)
                .with_purge(true)
                .with_peek(Peek::All)
                .with_max_batch(100)
                .with_max_delay(Some(YEAR))
                .with_max_nack_delay(Some(YEAR))
                .with_dedup_window(Some(FIVE_MINUTES))
                .with_ordering(Ordering::PerKey)
                .with_priority(true)
                .with_lease(LeaseModel::per_message(true))
                .with_max_lease(YEAR)
                .with_exact_stats(true)
                .with_stale_receipts_refused(true)
                .with_give_back_keeps_attempt(true)
                .with_timer_granularity(Duration::from_millis(10))
                .with_max_key_len(None)
                .with_key_chars(KeyChars::Any),
            Profile::Sqs | Profile::SqsFifo => {
                let fifo = *self == Profile::SqsFifo;
                base.with_max_message_size(MIB - 1024)
                    .with_purge(true)
                    .with_max_batch(10)
                    .with_max_delay((!fifo).then_some(YEAR))
                    .with_max_nack_delay(Some(Duration::from_secs(11 * 3600)))
                    .with_native_dlq(true)
                    .with_peek(Peek::DeadLetterQueues)
                    .with_ordering(if fifo {
                        Ordering::PerKey
                    } else {
                        Ordering::None
                    })
                    .with_dedup_window(fifo.then_some(FIVE_MINUTES))
                    .with_lease(LeaseModel::per_message(true))
                    .with_max_lease(Duration::from_secs(12 * 3600))
                    .with_timer_granularity(Duration::from_secs(1))
                    .with_give_back_keeps_attempt(!fifo)
                    .with_max_receives(Some(25))
                    .with_max_key_len(Some(128))
                    .with_key_chars(KeyChars::PrintableAscii)
            }
            Profile::Kafka => base
                .with_max_message_size(1_000_000 - 2048)
                .with_max_batch(500)
                .with_max_delay(Some(Duration::from_secs(15 * 60)))
                .with_max_nack_delay(Some(Duration::from_secs(15 * 60)))
                .with_ordering(Ordering::PerKey)
                .with_lease(LeaseModel::Session)
                .with_give_back_keeps_attempt(true)
                .with_max_lease(YEAR)
                .with_timer_granularity(Duration::from_millis(10))
                .with_max_key_len(None)
                .with_key_chars(KeyChars::Any),
            Profile::Postgres => base
                .with_max_message_size(MIB)
                .with_purge(true)
                .with_max_batch(1000)
                .with_max_delay(Some(YEAR))
                .with_max_nack_delay(Some(YEAR))
                .with_ordering(Ordering::PerKey)
                .with_priority(true)
                .with_dedup_window(Some(FIVE_MINUTES))
                .with_lease(LeaseModel::per_message(true))
                .with_max_lease(YEAR)
                .with_exact_stats(true)
                .with_stale_receipts_refused(true)
                .with_give_back_keeps_attempt(true)
                .with_timer_granularity(Duration::from_millis(1))
                .with_peek(Peek::All)
                .with_max_key_len(Some(1024))
                .with_key_chars(KeyChars::NoNul),
        }
    }

    /// `own` (the in-memory driver's capabilities) wearing this profile: every field that
    /// decides what is refused or limited comes from the profile; the lease model, exact
    /// stats and stale-receipt refusal stay `own`'s (see the module docs).
    pub fn apply(&self, own: &Capabilities) -> Capabilities {
        let p = self.capabilities();
        Capabilities {
            lease: own.lease,
            exact_stats: own.exact_stats,
            stale_receipts_refused: own.stale_receipts_refused,
            ..p
        }
    }

    /// The fields in which `caps` differs from this profile, by name (empty when they
    /// agree in every field). The `queue` crate's tests hold every bundled
    /// driver to its profile with this.
    pub fn differences(&self, caps: &Capabilities) -> Vec<String> {
        let p = self.capabilities();
        let mut out = Vec::new();
        macro_rules! same {
            ($($f:ident),*) => {$(
                if p.$f != caps.$f {
                    out.push(format!(
                        "{}: profile {:?}, driver {:?}",
                        stringify!($f), p.$f, caps.$f
                    ));
                }
            )*};
        }
        same!(
            max_message_size,
            max_batch,
            max_delay,
            max_nack_delay,
            native_dlq,
            max_receives,
            ordering,
            priority,
            dedup_window,
            timer_granularity,
            max_lease,
            purge,
            peek,
            give_back_keeps_attempt,
            lease,
            exact_stats,
            stale_receipts_refused,
            max_key_len,
            key_chars
        );
        out
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self> {
        Profile::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                QueueError::InvalidOption(format!(
                    "no backend profile named {s:?}; the profiles are {}",
                    Profile::ALL
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_typed() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), *p);
        }
        let e = "rabbit".parse::<Profile>().unwrap_err();
        assert!(
            matches!(e, QueueError::InvalidOption(ref m) if m.contains("sqs-fifo")),
            "{e}"
        );
    }

    #[test]
    fn the_memory_profile_is_the_memory_driver() {
        use crate::driver::Driver;
        let own = crate::MemoryQueue::new().capabilities();
        assert_eq!(Profile::Memory.differences(&own), Vec::<String>::new());
    }

    #[test]
    fn apply_keeps_memory_leases_and_takes_the_refusals() {
        let own = Profile::Memory.capabilities();
        let k = Profile::Kafka.apply(&own);
        assert_eq!(k.lease, own.lease);
        assert!(!k.priority && !k.purge && k.dedup_window.is_none());
        assert_eq!(k.peek, Peek::None);
        assert_eq!(k.max_delay, Some(Duration::from_secs(900)));
    }
}
