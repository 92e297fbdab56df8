//! Group membership: the consumer per queue, its rebalance callbacks, and the keeper that
//! polls an idle consumer so the group can rebalance around it.

use super::*;

/// Drops the state of revoked partitions, so nothing is committed or acked for them.
pub(crate) struct Ctx {
    pub(crate) track: Arc<Mutex<Track>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        // librdkafka's own log lines (ask for more with `?debug=consumer,cgrp,fetch`).
        tracing::debug!(target: "librdkafka", ?level, fac, "{log_message}");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::debug!(pid = std::process::id(), partitions = ?tpl_list(tpl), "kafka rebalance: revoked");
            let mut t = self.track.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements() {
                let tp = (e.topic().to_string(), e.partition());
                t.pending.remove(&tp);
                t.lines.revoke(&tp);
                t.holds.remove(&tp);
                t.next_commit.remove(&tp);
            }
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut t = self.track.lock().unwrap_or_else(|p| p.into_inner());
            tracing::debug!(pid = std::process::id(), partitions = ?tpl_list(tpl), idle = t.idle, "kafka rebalance: assigned");
            t.joined = true;
            if tpl.count() > 0 {
                // librdkafka keeps a partition's pause across a revoke and a later assign,
                // so every assignment sets it explicitly: paused while idle (fetching off
                // until someone receives), resumed otherwise. A partition paused in an
                // earlier idle spell would otherwise stay paused for good.
                let _ = if t.idle { c.pause(tpl) } else { c.resume(tpl) };
            }
        }
    }
}

pub(crate) struct QueueConsumer {
    pub(crate) consumer: StreamConsumer<Ctx>,
    pub(crate) track: Arc<Mutex<Track>>,
    pub(crate) recv: tokio::sync::Mutex<()>,
}

/// While nobody receives (the worker is busy or stopped), keeps the consumer polled so the
/// group can rebalance around it, with every assigned partition paused so nothing is
/// fetched; a record that was already prefetched is sought back to, to be read again.
/// Ends when the consumer is dropped.
pub(crate) async fn keep_membership(qc: std::sync::Weak<QueueConsumer>) {
    const IDLE_AFTER: Duration = Duration::from_millis(300);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(qc) = qc.upgrade() else { return };
        let Ok(_guard) = qc.recv.try_lock() else {
            continue;
        };
        {
            let mut t = qc.track.lock().unwrap_or_else(|p| p.into_inner());
            if t.last_receive.elapsed() < IDLE_AFTER {
                continue;
            }
            if !t.idle {
                t.idle = true;
                if let Ok(assigned) = qc.consumer.assignment() {
                    let _ = qc.consumer.pause(&assigned);
                }
            }
        }
        if let Ok(Ok(m)) =
            tokio::time::timeout(Duration::from_millis(100), qc.consumer.recv()).await
        {
            let (topic, p, off) = (m.topic().to_string(), m.partition(), m.offset());
            drop(m);
            tracing::debug!(pid = std::process::id(), %topic, partition = p, offset = off, "kafka idle: prefetched record; pausing and seeking back");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, p);
            let _ = qc.consumer.pause(&tpl);
            let _ = qc
                .consumer
                .seek(&topic, p, Offset::Offset(off), Duration::from_secs(1));
        }
    }
}

impl QueueConsumer {
    /// Resumes fetching after an idle spell (but not partitions held for a due time).
    pub(crate) fn wake(&self) -> Result<()> {
        let mut t = self.track.lock().unwrap_or_else(|p| p.into_inner());
        if !t.idle {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for e in self.consumer.assignment().map_err(map_err)?.elements() {
            let tp = (e.topic().to_string(), e.partition());
            if !t.holds.contains_key(&tp) {
                tpl.add_partition(&tp.0, tp.1);
            }
        }
        if tpl.count() > 0 {
            tracing::debug!(pid = std::process::id(), partitions = ?tpl_list(&tpl), "kafka wake: resuming");
            self.consumer.resume(&tpl).map_err(map_err)?;
        }
        // Only once resumed: a failed resume leaves the consumer idle, so the next
        // receive tries again instead of fetching nothing from paused partitions.
        t.idle = false;
        Ok(())
    }
}

/// `topic/partition@offset` of each element, for debug logs.
pub(crate) fn tpl_list(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect()
}

/// Records `last_receive` when a receive ends, however it ends.
pub(crate) struct ReceiveEnd<'a>(pub(crate) &'a QueueConsumer);

impl Drop for ReceiveEnd<'_> {
    fn drop(&mut self) {
        self.0
            .track
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_receive = tokio::time::Instant::now();
    }
}

impl KafkaQueue {
    pub(crate) async fn consumer(&self, queue: &str) -> Result<Arc<QueueConsumer>> {
        if let Some(c) = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
        {
            return Ok(c.clone());
        }
        let delay = Self::delay_topic(queue);
        self.ensure_topic(queue, queue).await?;
        self.ensure_topic(queue, &delay).await?;
        let track = Arc::new(Mutex::new(Track::default()));
        let mut cc = Self::client_config(&self.config);
        cc.set("group.id", self.group(queue))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "300000");
        let consumer: StreamConsumer<Ctx> = cc
            .create_with_context(Ctx {
                track: track.clone(),
            })
            .map_err(map_err)?;
        consumer.subscribe(&[queue, &delay]).map_err(map_err)?;
        let qc = Arc::new(QueueConsumer {
            consumer,
            track,
            recv: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(keep_membership(Arc::downgrade(&qc)));
        let mut all = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.entry(queue.to_string()).or_insert(qc).clone())
    }

    /// The consumer that issued receipts for `queue`; without one, a receipt is stale
    /// (its session ended), or the queue does not exist.
    pub(crate) async fn existing_consumer(&self, queue: &str) -> Result<Arc<QueueConsumer>> {
        let found = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned();
        match found {
            Some(c) => Ok(c),
            None => {
                Self::check_name(queue)?;
                self.ensure_topic(queue, queue).await.map_err(|e| match e {
                    QueueError::UnknownQueue(_) => QueueError::UnknownQueue(queue.to_string()),
                    other => other,
                })?;
                Err(QueueError::ReceiptExpired)
            }
        }
    }
}
