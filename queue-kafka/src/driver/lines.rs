//! Per-key lines: what makes an ordering key mean on Kafka what it means on every other
//! backend. A partition gives a key's records in send order; this consumer hands them
//! out one at a time, and a keyed record that fails is held here for its retry (with its
//! backoff) instead of being republished behind the key's later records, which wait
//! their turn in memory. Other keys of the partition keep flowing. The held record stays
//! unsettled in [`Track::pending`], so no commit passes it: if this consumer dies, the
//! partition's next owner reads the key from its held record on, in order.
//!
//! Only records of the queue's own topic take part. A keyed record sent with a delay
//! comes from the `Q-delay` topic when it is due and is handed out as it comes, outside
//! its key's line: it is not ordered against the key's other records (memory, Redis and
//! PostgreSQL keep it in line; documented in the crate's "What it cannot do").

use std::collections::VecDeque;

use super::*;

/// One key of one partition with a record out (delivered to a worker, or held for its
/// retry). Lines are per partition and key: a key whose records sit on two partitions
/// (after a partition increase, or from a producer with another partitioner) has a line on
/// each, so a revoked partition never takes another's waiting records with it.
struct Line {
    /// The receipt of the record that is out.
    head: String,
    /// The key's later records, in partition order.
    waiting: VecDeque<Delivery>,
}

#[derive(Default)]
pub(crate) struct Lines {
    busy: HashMap<(Tp, String), Line>,
    /// Records to hand out before reading more: keys' next records once their heads
    /// settled.
    ready: VecDeque<Delivery>,
    /// Retries held for their backoff, with when each is due.
    retries: Vec<(tokio::time::Instant, Delivery)>,
}

impl Lines {
    /// A keyed record just read from `tp`: it is handed out now (`Some`) when its key has
    /// nothing out, else it waits behind the key's head (`None`). A record read again
    /// while it is already the head or waiting (a replay) is not queued twice.
    pub(crate) fn admit(&mut self, tp: &Tp, key: &str, d: Delivery) -> Option<Delivery> {
        let r = receipt_str(&d.receipt).to_string();
        match self.busy.get_mut(&(tp.clone(), key.to_string())) {
            Some(line) => {
                let known =
                    line.head == r || line.waiting.iter().any(|w| receipt_str(&w.receipt) == r);
                if !known {
                    line.waiting.push_back(d);
                }
                None
            }
            None => {
                self.busy.insert(
                    (tp.clone(), key.to_string()),
                    Line {
                        head: r,
                        waiting: VecDeque::new(),
                    },
                );
                Some(d)
            }
        }
    }

    /// The line `d` belongs to: its partition and key.
    fn line_of(d: &Delivery) -> Option<(Tp, String)> {
        let key = d.ordering_key.clone()?;
        let (tp, _) = codec::parse_receipt(&d.receipt).ok()?;
        Some((tp, key))
    }

    /// Whether `d` is the record its key has out (so a nack holds it here).
    pub(crate) fn is_head(&self, d: &Delivery) -> bool {
        Self::line_of(d)
            .and_then(|l| self.busy.get(&l))
            .is_some_and(|l| l.head == receipt_str(&d.receipt))
    }

    /// `d`, a key's head, settled for good (acked or dead-lettered): the key's next record
    /// becomes ready, or the key has nothing out any more.
    pub(crate) fn settled(&mut self, d: &Delivery) {
        if !self.is_head(d) {
            return;
        }
        let Some(id) = Self::line_of(d) else {
            return;
        };
        let Some(line) = self.busy.get_mut(&id) else {
            return;
        };
        match line.waiting.pop_front() {
            Some(next) => {
                line.head = receipt_str(&next.receipt).to_string();
                self.ready.push_back(next);
            }
            None => {
                self.busy.remove(&id);
            }
        }
    }

    /// Holds `d`, its key's head, until `due`: the key keeps waiting behind it.
    pub(crate) fn hold(&mut self, d: Delivery, due: tokio::time::Instant) {
        self.retries.push((due, d));
    }

    /// Up to `max` records to hand out at `now`: due retries first, then keys' next
    /// records.
    pub(crate) fn take(&mut self, now: tokio::time::Instant, max: usize) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.retries.len() && out.len() < max {
            if self.retries[i].0 <= now {
                out.push(self.retries.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        while out.len() < max {
            let Some(d) = self.ready.pop_front() else {
                break;
            };
            out.push(d);
        }
        out
    }

    /// When the next held retry is due.
    pub(crate) fn next_due(&self) -> Option<tokio::time::Instant> {
        self.retries.iter().map(|r| r.0).min()
    }

    /// Records here and not out with a worker (waiting, ready, or held for a retry).
    pub(crate) fn queued(&self) -> u64 {
        let waiting: usize = self.busy.values().map(|l| l.waiting.len()).sum();
        (waiting + self.ready.len() + self.retries.len()) as u64
    }

    /// `tp` was revoked: its keys' lines go (the partition's next owner reads them again
    /// from the last commit, in order).
    pub(crate) fn revoke(&mut self, tp: &Tp) {
        self.busy.retain(|(t, _), _| t != tp);
        let from = |d: &Delivery| codec::parse_receipt(&d.receipt).is_ok_and(|(t, _)| &t == tp);
        self.ready.retain(|d| !from(d));
        self.retries.retain(|(_, d)| !from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_core::driver::receipt;

    fn rec(off: i64, key: &str) -> Delivery {
        Delivery::new(
            "q",
            MessageId::new(format!("m{off}")),
            "x",
            receipt(format!("q|0|{off}")),
        )
        .with_ordering_key(Some(key.to_string()))
    }

    #[test]
    fn a_key_has_one_record_out_and_a_retry_holds_it() {
        let tp: Tp = ("q".into(), 0);
        let mut l = Lines::default();
        let a1 = l.admit(&tp, "a", rec(1, "a")).expect("a's first goes out");
        assert!(l.admit(&tp, "a", rec(2, "a")).is_none(), "a2 waits");
        assert!(
            l.admit(&tp, "b", rec(3, "b")).is_some(),
            "b is not held by a"
        );
        assert!(
            l.admit(&tp, "a", rec(1, "a")).is_none(),
            "a replayed head is not queued"
        );
        let now = tokio::time::Instant::now();
        l.hold(a1.clone(), now + Duration::from_secs(5));
        assert!(l.take(now, 10).is_empty(), "a1 held, a2 waits behind it");
        assert_eq!(l.next_due(), Some(now + Duration::from_secs(5)));
        let back = l.take(now + Duration::from_secs(5), 10);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].id.as_str(), "m1");
        l.settled(&back[0]);
        let next = l.take(now, 10);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].id.as_str(), "m2");
        l.settled(&next[0]);
        assert_eq!(l.queued(), 0);
        assert!(l.admit(&tp, "a", rec(4, "a")).is_some(), "a is free again");
    }

    #[test]
    fn a_revoked_partition_drops_its_lines_and_only_its() {
        let (p0, p1): (Tp, Tp) = (("q".into(), 0), ("q".into(), 1));
        let on = |p: i32, off: i64| {
            Delivery::new(
                "q",
                MessageId::new(format!("m{off}")),
                "x",
                receipt(format!("q|{p}|{off}")),
            )
            .with_ordering_key(Some("a".to_string()))
        };
        let mut l = Lines::default();
        assert!(l.admit(&p0, "a", on(0, 1)).is_some());
        assert!(l.admit(&p0, "a", on(0, 2)).is_none());
        // The same key on another partition has a line of its own.
        let head1 = l.admit(&p1, "a", on(1, 7)).expect("p1's line is its own");
        assert!(l.admit(&p1, "a", on(1, 8)).is_none());
        l.revoke(&p0);
        assert_eq!(l.queued(), 1, "p1's waiting record stays");
        l.settled(&head1);
        assert_eq!(l.take(tokio::time::Instant::now(), 10).len(), 1);
    }
}
