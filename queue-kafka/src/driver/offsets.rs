//! Offsets: per-partition tracking of delivered records, settling them (ack, and the
//! republish behind nack and give-back, or a keyed record's hold in its line), and commits
//! of each partition's contiguous settled prefix, never past an unsettled offset.

use super::*;

/// A delivered record not yet settled, kept for nack's republish.
pub(crate) struct Slot {
    pub(crate) done: bool,
    pub(crate) delivery: Delivery,
}

pub(crate) struct Track {
    /// Per partition, the delivered records by offset, oldest first.
    pub(crate) pending: HashMap<Tp, BTreeMap<i64, Slot>>,
    /// Paused partitions: the offset of the early record to seek back to, and when.
    pub(crate) holds: HashMap<Tp, (i64, tokio::time::Instant)>,
    /// The group has assigned this member its partitions (possibly none) at least once.
    pub(crate) joined: bool,
    /// Nobody is receiving: every assigned partition is paused while the keeper polls.
    pub(crate) idle: bool,
    /// When the last receive ended.
    pub(crate) last_receive: tokio::time::Instant,
    /// Per partition, the next offset to commit: the first record read since the
    /// partition was assigned, then one past each commit. A commit only ever extends it
    /// by a contiguous run of settled records.
    pub(crate) next_commit: HashMap<Tp, i64>,
    /// Per-key lines: keys with a record out, their later records, held retries.
    pub(crate) lines: super::lines::Lines,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            pending: HashMap::new(),
            holds: HashMap::new(),
            joined: false,
            idle: false,
            last_receive: tokio::time::Instant::now(),
            next_commit: HashMap::new(),
            lines: Default::default(),
        }
    }
}

impl Track {
    /// Records out with a worker: delivered and not settled, less those waiting here in
    /// a key's line or held for their retry.
    pub(crate) fn in_flight(&self, topics: &[&str]) -> u64 {
        let unsettled: u64 = self
            .pending
            .iter()
            .filter(|(tp, _)| topics.contains(&tp.0.as_str()))
            .map(|(_, m)| m.values().filter(|s| !s.done).count() as u64)
            .sum();
        unsettled.saturating_sub(self.lines.queued())
    }
}

impl KafkaQueue {
    /// Marks deliveries done and commits each partition's contiguous done prefix.
    pub(crate) fn settle(&self, qc: &QueueConsumer, receipts: &[Receipt]) -> Result<()> {
        let mut stale = Vec::new();
        let mut commit = TopicPartitionList::new();
        {
            let mut t = qc.track.lock().unwrap_or_else(|p| p.into_inner());
            let mut touched = Vec::new();
            for (i, r) in receipts.iter().enumerate() {
                let (tp, off) = codec::parse_receipt(r)?;
                match t.pending.get_mut(&tp).and_then(|m| m.get_mut(&off)) {
                    Some(slot) if !slot.done => {
                        slot.done = true;
                        let d = slot.delivery.clone();
                        t.lines.settled(&d);
                        touched.push(tp);
                    }
                    _ => stale.push(i),
                }
            }
            touched.sort();
            touched.dedup();
            for tp in touched {
                // Commit the contiguous settled prefix only: never past a gap (an offset
                // read but not tracked, such as a record held for its due time and sought
                // back to), never past an unsettled record.
                let held = t.holds.get(&tp).map(|h| h.0);
                let next = t.next_commit.get(&tp).copied();
                let Some(m) = t.pending.get_mut(&tp) else {
                    continue;
                };
                let last = commit_point(m, next, held);
                if let Some(last) = last {
                    t.next_commit.insert(tp.clone(), last + 1);
                    commit
                        .add_partition_offset(&tp.0, tp.1, Offset::Offset(last + 1))
                        .map_err(map_err)?;
                }
            }
        }
        if commit.count() > 0 {
            tracing::trace!(pid = std::process::id(), offsets = ?membership::tpl_list(&commit), "kafka: commit");
            qc.consumer
                .commit(&commit, CommitMode::Async)
                .map_err(map_err)?;
        }
        QueueError::stale_receipts(receipts.len(), stale)
    }

    /// Publishes a copy to the delay topic with `attempt + step`, then settles the
    /// original: a nack (`step` 1) or a give-back (`step` 0).
    pub(crate) async fn republish(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Duration,
        step: u32,
    ) -> Result<()> {
        let (tp, off) = codec::parse_receipt(receipt)?;
        let qc = self.existing_consumer(queue).await?;
        let d = {
            let mut t = qc.track.lock().unwrap_or_else(|p| p.into_inner());
            let held = t.lines.is_head(
                &t.pending
                    .get(&tp)
                    .and_then(|m| m.get(&off))
                    .filter(|s| !s.done)
                    .ok_or(QueueError::ReceiptExpired)?
                    .delivery,
            );
            let Some(slot) = t.pending.get_mut(&tp).and_then(|m| m.get_mut(&off)) else {
                return Err(QueueError::ReceiptExpired);
            };
            if held {
                // A keyed record's retry waits here, in its key's place: its later
                // records stay behind it and no commit passes it.
                slot.delivery.attempt = slot.delivery.attempt.saturating_add(step);
                let d = slot.delivery.clone();
                let due = tokio::time::Instant::now()
                    .checked_add(delay)
                    .ok_or_else(|| QueueError::InvalidOption(format!("delay {delay:?}")))?;
                t.lines.hold(d, due);
                return Ok(());
            }
            slot.delivery.clone()
        };
        let mut m = Message::new(d.payload.clone())
            .id(d.id.clone())
            .delay(delay);
        m.headers = d.headers.clone();
        m.ordering_key = d.ordering_key.clone();
        let record = codec::record(&m, d.attempt.saturating_add(step), d.first_enqueued_at);
        self.produce(&Self::delay_topic(queue), vec![record])
            .await?;
        self.settle(&qc, std::slice::from_ref(receipt))
    }

    /// Lag of `group` over `topics`: sum of (high watermark − committed, or − low when
    /// nothing is committed).
    pub(crate) async fn lag(&self, group: String, topics: Vec<String>) -> Result<u64> {
        let cc = {
            let mut c = Self::client_config(&self.config);
            c.set("group.id", group).set("enable.auto.commit", "false");
            c
        };
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let consumer: BaseConsumer = cc.create().map_err(map_err)?;
            let mut tpl = TopicPartitionList::new();
            let mut marks = HashMap::new();
            for topic in &topics {
                let md = consumer
                    .fetch_metadata(Some(topic), META_TIMEOUT)
                    .map_err(map_err)?;
                for t in md.topics() {
                    for p in t.partitions() {
                        let (lo, hi) = consumer
                            .fetch_watermarks(topic, p.id(), META_TIMEOUT)
                            .map_err(map_err)?;
                        marks.insert((topic.clone(), p.id()), (lo, hi));
                        tpl.add_partition(topic, p.id());
                    }
                }
            }
            let committed = consumer
                .committed_offsets(tpl, META_TIMEOUT)
                .map_err(map_err)?;
            let mut lag = 0u64;
            for e in committed.elements() {
                let (lo, hi) = marks
                    .get(&(e.topic().to_string(), e.partition()))
                    .copied()
                    .unwrap_or((0, 0));
                let from = match e.offset() {
                    Offset::Offset(o) => o.max(lo),
                    _ => lo,
                };
                lag += (hi - from).max(0) as u64;
            }
            Ok(lag)
        })
        .await
        .map_err(|e| QueueError::backend(BACKEND, e))?
    }
}

/// Removes the contiguous settled prefix of one partition's tracked records and returns
/// its last offset, or `None` when nothing may be committed. `next` is the next offset to
/// commit (records must continue from it), `held` an offset read early and sought back to
/// (nothing at or past it may be committed before it is read again). A gap (an offset
/// read but not tracked) and an unsettled record both stop the prefix.
pub(crate) fn commit_point(
    m: &mut BTreeMap<i64, Slot>,
    next: Option<i64>,
    held: Option<i64>,
) -> Option<i64> {
    let mut last: Option<i64> = next.map(|n| n - 1);
    while let Some(entry) = m.first_entry() {
        let k = *entry.key();
        if next.is_some_and(|n| k < n) {
            // Read again below what is committed already (a replay): nothing to commit
            // for it once settled.
            if !entry.get().done {
                break;
            }
            entry.remove();
            continue;
        }
        let contiguous = last.is_none_or(|l| k == l + 1);
        let before_hold = held.is_none_or(|h| k < h);
        if !entry.get().done || !contiguous || !before_hold {
            break;
        }
        last = Some(k);
        entry.remove();
    }
    last.filter(|l| next.is_none_or(|n| *l >= n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_core::driver::receipt;

    fn track(offsets: &[(i64, bool)]) -> BTreeMap<i64, Slot> {
        offsets
            .iter()
            .map(|&(o, done)| {
                let d = Delivery::new("q", MessageId::new("x"), Vec::new(), receipt("t|0|0"));
                (o, Slot { done, delivery: d })
            })
            .collect()
    }

    #[test]
    fn commits_only_a_contiguous_settled_prefix() {
        // 5 and 6 settled, 7 not: commit through 6.
        let mut m = track(&[(5, true), (6, true), (7, false)]);
        assert_eq!(commit_point(&mut m, Some(5), None), Some(6));
        assert_eq!(m.len(), 1);
        // A gap: 6 was read but not tracked; 5 and 7 settled: stop at 5.
        let mut m = track(&[(5, true), (7, true)]);
        assert_eq!(commit_point(&mut m, Some(5), None), Some(5));
        // ... and the next commit starts after 5: 7 alone cannot go (6 is missing).
        assert_eq!(commit_point(&mut m, Some(6), None), None);
        // The first tracked record is past the next offset to commit: nothing.
        let mut m = track(&[(9, true)]);
        assert_eq!(commit_point(&mut m, Some(8), None), None);
    }

    #[test]
    fn never_commits_at_or_past_a_held_record() {
        let mut m = track(&[(3, true), (4, true), (5, true)]);
        assert_eq!(commit_point(&mut m, Some(3), Some(4)), Some(3));
    }

    #[test]
    fn replays_below_the_committed_offset_are_dropped_once_settled() {
        let mut m = track(&[(2, true), (3, true), (4, true)]);
        assert_eq!(commit_point(&mut m, Some(3), None), Some(4));
        let mut m = track(&[(2, false), (3, true)]);
        assert_eq!(
            commit_point(&mut m, Some(3), None),
            None,
            "an unsettled replay waits"
        );
    }
}
