//! Retry policy and backoff: the single place that decides *when* a failed job runs again.

use std::time::Duration;

/// How long to wait before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `base * 2^(attempt-1)`, capped at `max`, then "full jitter" (a uniform random delay
    /// between 0 and that value) when `jitter` is set, as AWS's backoff article recommends so
    /// that failing jobs do not retry in lockstep. Build it with [`Backoff::exponential`].
    #[non_exhaustive]
    Exponential {
        /// Delay before the first retry (before jitter).
        base: Duration,
        /// Cap on the delay.
        max: Duration,
        /// Apply full jitter.
        jitter: bool,
    },
}

impl Backoff {
    /// `base * 2^(attempt-1)` capped at `max`, with full jitter.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff::Exponential {
            base,
            max,
            jitter: true,
        }
    }

    /// The same, without jitter (deterministic; for tests and tightly scheduled jobs).
    pub fn exponential_without_jitter(base: Duration, max: Duration) -> Self {
        Backoff::Exponential {
            base,
            max,
            jitter: false,
        }
    }

    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, max, jitter } => {
                let shift = attempt.saturating_sub(1).min(32);
                let raw = base.saturating_mul(1u32 << shift.min(31)).min(max);
                if jitter {
                    raw.mul_f64(fastrand::f64())
                } else {
                    raw
                }
            }
        }
    }
}

/// Retry policy: how many attempts, and the backoff between them.
///
/// ```
/// use std::time::Duration;
/// use queue_core::{Backoff, RetryPolicy};
/// let p = RetryPolicy::new(4, Backoff::exponential(Duration::from_millis(200), Duration::from_secs(2)));
/// assert_eq!(p.max_attempts, 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total attempts including the first; after the last one fails the job is dead-lettered.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 25 attempts, exponential backoff from 1 s capped at 15 min, with full jitter: a job
    /// that keeps failing is retried for about two hours (3 h 47 min at most, under an hour
    /// about once in a thousand) before it is dead-lettered.
    ///
    /// Why: a downstream outage of an hour should cost retries, not a full dead-letter
    /// queue. River and Sidekiq default to 25 attempts and Oban to 20, over days; their
    /// delays grow without bound, ours stop at 15 minutes because that is the longest
    /// every backend can hold a retried message back (Kafka's default `max_delay`), so
    /// the default behaves the same on each. A longer window is a policy of your own:
    /// more attempts, or a higher cap where the backend holds it (the worker refuses at
    /// start a cap the backend cannot hold, see [`Worker::clamp_retry_delays`](crate::Worker::clamp_retry_delays)).
    /// On SQS the attempts must fit the queue's `maxReceiveCount` (25 by default).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 25,
            backoff: Backoff::Exponential {
                base: Duration::from_secs(1),
                max: Duration::from_secs(15 * 60),
                jitter: true,
            },
        }
    }
}

/// What to do with a failed delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Give it back to the queue, visible again after this delay.
    Retry(Duration),
    /// Move it to the dead-letter queue.
    DeadLetter,
}

impl RetryPolicy {
    /// `max_attempts` attempts in all (at least 1; the worker refuses 0), `backoff`
    /// between them.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Self {
        RetryPolicy {
            max_attempts,
            backoff,
        }
    }

    /// No retries: the first failure dead-letters.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Fixed(Duration::ZERO),
        }
    }

    /// The longest wait this policy asks for between two attempts, before jitter (zero
    /// when it never retries). The worker checks it against the backend's
    /// [`max_nack_delay`](crate::Capabilities::max_nack_delay) at start.
    pub fn longest_delay(&self) -> Duration {
        if self.max_attempts <= 1 {
            return Duration::ZERO;
        }
        match self.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, max, .. } => {
                Backoff::exponential_without_jitter(base, max).delay(self.max_attempts - 1)
            }
        }
    }

    /// The longest a job that keeps failing is retried before it is dead-lettered: the sum
    /// of the waits between its attempts, before jitter (full jitter makes the expected
    /// window half of it). Handler run times come on top.
    pub fn retry_window(&self) -> Duration {
        let plain = match self.backoff {
            Backoff::Exponential { base, max, .. } => {
                Backoff::exponential_without_jitter(base, max)
            }
            fixed => fixed,
        };
        (1..self.max_attempts).fold(Duration::ZERO, |sum, a| sum.saturating_add(plain.delay(a)))
    }

    /// Decides after failed attempt `attempt`. `retry_after` (from the handler's error)
    /// replaces the backoff delay; `permanent` errors are dead-lettered at once.
    pub fn decide(&self, attempt: u32, permanent: bool, retry_after: Option<Duration>) -> Decision {
        if permanent || attempt >= self.max_attempts {
            Decision::DeadLetter
        } else {
            Decision::Retry(retry_after.unwrap_or_else(|| self.backoff.delay(attempt)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The default survives an hour's outage (the 0.2 default dead-lettered after about
    /// 15 s of failures), and its delays fit every backend (Kafka holds 15 minutes).
    #[test]
    fn default_policy_outlasts_an_hours_outage() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 25);
        let window = p.retry_window();
        assert_eq!(window, Duration::from_secs(1023 + 14 * 900), "{window:?}");
        assert!(
            window / 2 > Duration::from_secs(3600),
            "expected window under jitter"
        );
        assert_eq!(p.longest_delay(), Duration::from_secs(900));
        // Under full jitter the window is a sum of uniform draws: below an hour about
        // once in a thousand (checked here by drawing, with a generous bound).
        let short = (0..2000)
            .filter(|_| {
                (1..p.max_attempts)
                    .map(|a| p.backoff.delay(a))
                    .sum::<Duration>()
                    < Duration::from_secs(3600)
            })
            .count();
        assert!(
            short <= 20,
            "{short} of 2000 draws retried for under an hour"
        );
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let b = Backoff::Exponential {
            base: S,
            max: 10 * S,
            jitter: false,
        };
        let got: Vec<_> = (1..=6).map(|a| b.delay(a)).collect();
        assert_eq!(got, vec![S, 2 * S, 4 * S, 8 * S, 10 * S, 10 * S]);
        // no overflow on absurd attempt numbers
        assert_eq!(b.delay(u32::MAX), 10 * S);
        assert_eq!(b.delay(0), S);
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_varies() {
        let b = Backoff::Exponential {
            base: S,
            max: 100 * S,
            jitter: true,
        };
        let draws: Vec<_> = (0..200).map(|_| b.delay(4)).collect();
        assert!(draws.iter().all(|d| *d <= 8 * S));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "jitter should spread delays");
    }

    #[test]
    fn fixed_is_fixed() {
        assert_eq!(Backoff::Fixed(3 * S).delay(7), 3 * S);
    }

    #[test]
    fn decisions() {
        let p = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Fixed(S),
        };
        assert_eq!(p.decide(1, false, None), Decision::Retry(S));
        assert_eq!(p.decide(2, false, Some(5 * S)), Decision::Retry(5 * S));
        assert_eq!(p.decide(3, false, None), Decision::DeadLetter);
        assert_eq!(p.decide(1, true, None), Decision::DeadLetter);
        assert_eq!(
            RetryPolicy::none().decide(1, false, None),
            Decision::DeadLetter
        );
    }
}
