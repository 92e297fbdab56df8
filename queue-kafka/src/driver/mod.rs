//! The driver: the client, its settings from the URL, and the [`Driver`] implementation
//! (the mapping is in the crate docs).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use queue_core::driver::{
    first_enqueued, receipt_str, Capabilities, Driver, LeaseModel, Ordering, ReceiveOptions,
};
use queue_core::options::UrlOptions;
use queue_core::{
    unix_millis, Delivery, Message, MessageId, QueueError, QueueStats, Receipt, Result,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};

use crate::codec::{self, Tp};
use crate::BACKEND;

mod lines;
mod membership;
mod offsets;

use membership::*;
use offsets::*;

/// Default [`KafkaConfig::max_delay`]: SQS's own per-message limit, and a hold-back most
/// job queues can live with.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(15 * 60);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const META_TIMEOUT: Duration = Duration::from_secs(10);

/// Registers the `kafka://` scheme with [`queue_core::connect`].
pub fn register() {
    queue_core::register("kafka", |url| {
        Box::pin(async move {
            Ok(Arc::new(KafkaQueue::connect(url.as_str()).await?) as Arc<dyn Driver>)
        })
    });
}

/// Driver settings, read from the URL. `Debug` hides the values of passed-through
/// properties whose names mention a secret (`sasl.password`, `ssl.key.password`, ...).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Consumer group prefix: queue `Q` is consumed by group `{group}-{Q}`.
    pub group: String,
    /// Partitions of the topics `create_queue` creates.
    pub partitions: i32,
    /// Replication factor of the topics `create_queue` creates (`?replication=`, default
    /// 1: a single-broker setup; use 3 on a production cluster).
    pub replication: i32,
    /// Longest delay (and retry backoff) accepted (`?max_delay=`, default 15 minutes, 1 s
    /// to 1 year). All delays of a queue share one delay topic, read in order per
    /// partition, so a delayed record can be held back behind a longer one sent before it
    /// on the same partition, by at most this much: the bound is the honest promise.
    pub max_delay: Duration,
    /// librdkafka properties passed through (SASL, SSL, ...).
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "key", "token"]
                    .iter()
                    .any(|s| k.contains(s));
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("group", &self.group)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("max_delay", &self.max_delay)
            .field("properties", &props)
            .finish()
    }
}

/// Maps a librdkafka error onto the core's typed errors.
fn map_err(e: KafkaError) -> QueueError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition) => {
            QueueError::UnknownQueue(String::new())
        }
        Some(
            C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::MessageTimedOut
            | C::NetworkException,
        ) => QueueError::connection(BACKEND, e),
        Some(C::OperationTimedOut | C::RequestTimedOut) => QueueError::Timeout(META_TIMEOUT),
        Some(
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed,
        ) => QueueError::Auth {
            backend: BACKEND,
            source: Box::new(e),
        },
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize) => {
            QueueError::InvalidOption(format!("record too large for the broker: {e}"))
        }
        _ => QueueError::backend(BACKEND, e),
    }
}

/// The Kafka driver (see the crate docs for its mapping).
pub struct KafkaQueue {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    consumers: Mutex<HashMap<String, Arc<QueueConsumer>>>,
    /// Workers of this instance receiving from each queue (start_receiving minus
    /// stop_receiving): the queue's consumer leaves the group when the last one stops.
    receivers: Mutex<HashMap<String, usize>>,
    known_topics: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for KafkaQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaQueue {
    /// Connects to the brokers of `kafka://host:port[?...]` (see the crate docs) and checks
    /// that they answer.
    pub async fn connect(url: &str) -> Result<Self> {
        let parsed =
            url::Url::parse(url).map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| QueueError::invalid_url(url, "missing broker host"))?;
        let mut config = KafkaConfig {
            bootstrap: format!("{host}:{}", parsed.port().unwrap_or(9092)),
            group: "queue-workers".into(),
            partitions: 3,
            replication: 1,
            max_delay: DEFAULT_MAX_DELAY,
            properties: Vec::new(),
        };
        let mut o = UrlOptions::new(&parsed);
        for b in o.all("bootstrap") {
            config.bootstrap = format!("{},{b}", config.bootstrap);
        }
        if let Some(g) = o.string("group")? {
            config.group = g;
        }
        if let Some(n) = o.integer("partitions", 1, 1000)? {
            config.partitions = n as i32;
        }
        if let Some(n) = o.integer("replication", 1, 32)? {
            config.replication = n as i32;
        }
        if let Some(d) = o.duration_within("max_delay", Duration::from_secs(1), YEAR)? {
            config.max_delay = d;
        }
        config.properties = o.passthrough("librdkafka properties (names with a dot)", |k| {
            k.contains('.') || k == "debug"
        });
        o.finish()?;
        let base = Self::client_config(&config);
        let mut pc = base.clone();
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000");
        let producer: FutureProducer = pc
            .create()
            .map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
        let admin: AdminClient<DefaultClientContext> = base
            .create()
            .map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
        let q = KafkaQueue {
            config,
            producer,
            admin,
            consumers: Mutex::new(HashMap::new()),
            receivers: Mutex::new(HashMap::new()),
            known_topics: Mutex::new(Default::default()),
        };
        // Fail now, with a typed error, when no broker answers.
        let producer = q.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
        })
        .await
        .map_err(|e| QueueError::backend(BACKEND, e))?
        .map_err(|e| QueueError::connection(BACKEND, e))?;
        Ok(q)
    }

    fn client_config(config: &KafkaConfig) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.bootstrap);
        for (k, v) in &config.properties {
            c.set(k, v);
        }
        c
    }

    fn delay_topic(queue: &str) -> String {
        format!("{queue}-delay")
    }

    fn group(&self, queue: &str) -> String {
        format!("{}-{queue}", self.config.group)
    }

    fn check_name(queue: &str) -> Result<()> {
        let ok = !queue.is_empty()
            && queue.len() <= 200
            && queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(())
        } else {
            Err(QueueError::InvalidOption(format!(
                "kafka queue names are 1-200 characters of A-Z, a-z, 0-9, '.', '_' and '-': {queue:?}"
            )))
        }
    }

    /// Fails with `UnknownQueue` unless `topic` exists (cached once seen).
    async fn ensure_topic(&self, queue: &str, topic: &str) -> Result<()> {
        if self
            .known_topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic)
        {
            return Ok(());
        }
        let producer = self.producer.clone();
        let t = topic.to_string();
        let md = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&t), META_TIMEOUT)
        })
        .await
        .map_err(|e| QueueError::backend(BACKEND, e))?
        .map_err(map_err)?;
        let exists = md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(QueueError::UnknownQueue(queue.to_string()));
        }
        self.known_topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string());
        Ok(())
    }

    /// Produces records and waits until the broker acknowledged each.
    async fn produce(
        &self,
        topic: &str,
        records: Vec<(Option<String>, queue_core::driver::Bytes, OwnedHeaders)>,
    ) -> Result<()> {
        let mut futures = Vec::with_capacity(records.len());
        for (key, payload, headers) in &records {
            let mut rec = FutureRecord::to(topic)
                .payload(&payload[..])
                .headers(headers.clone());
            if let Some(k) = key {
                rec = rec.key(k);
            }
            loop {
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        futures.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(map_err(e)),
                }
            }
        }
        for f in futures {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(map_err(e)),
                Err(_) => return Err(QueueError::backend(BACKEND, "producer dropped a record")),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for KafkaQueue {
    fn kind(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::baseline()
            .with_max_message_size(1_000_000 - 2048)
            .with_max_batch(500)
            .with_max_delay(Some(self.config.max_delay))
            .with_max_nack_delay(Some(self.config.max_delay))
            .with_ordering(Ordering::PerKey)
            .with_lease(LeaseModel::Session)
            .with_give_back_keeps_attempt(true)
            .with_max_lease(YEAR)
            .with_timer_granularity(Duration::from_millis(10))
            // A key is the record key: any bytes, bounded by the record's size.
            .with_max_key_len(None)
            .with_key_chars(queue_core::driver::KeyChars::Any)
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        Self::check_name(queue)?;
        // Deleting topics under live consumers crashed the test broker (tansu 0.6) and
        // librdkafka with it: left to the operator's own tools for now.
        Err(QueueError::unsupported(
            BACKEND,
            "delete_queue (delete the queue's topics with the broker's tools)",
        ))
    }

    async fn purge(&self, queue: &str) -> Result<()> {
        Self::check_name(queue)?;
        Err(QueueError::unsupported(
            BACKEND,
            "purge (a topic's unread records cannot be dropped for one consumer group; delete the queue and create it again)",
        ))
    }

    async fn create_queue(&self, queue: &str) -> Result<()> {
        Self::check_name(queue)?;
        let dlq = self.dead_letter_queue(queue);
        let names = [
            queue.to_string(),
            Self::delay_topic(queue),
            dlq.clone(),
            Self::delay_topic(&dlq),
        ];
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(META_TIMEOUT));
        let results = self
            .admin
            .create_topics(topics.iter(), &opts)
            .await
            .map_err(map_err)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(QueueError::backend(
                        BACKEND,
                        format!("creating topic {topic}: {code}"),
                    ))
                }
            }
        }
        // Wait until the metadata shows every topic, so the first send does not race it.
        for n in &names {
            let deadline = tokio::time::Instant::now() + META_TIMEOUT;
            while let Err(e) = self.ensure_topic(queue, n).await {
                if tokio::time::Instant::now() > deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn send(&self, queue: &str, batch: Vec<Message>) -> Result<Vec<MessageId>> {
        Self::check_name(queue)?;
        let now = SystemTime::now();
        let ids = batch.iter().map(|m| m.id.clone()).collect();
        let (delayed, direct): (Vec<&Message>, Vec<&Message>) = batch
            .iter()
            .partition(|m| m.delay.is_some_and(|d| !d.is_zero()));
        for (topic, msgs) in [
            (queue.to_string(), direct),
            (Self::delay_topic(queue), delayed),
        ] {
            if msgs.is_empty() {
                continue;
            }
            self.ensure_topic(queue, &topic).await?;
            let records = msgs
                .into_iter()
                .map(|m| codec::record(m, 1, first_enqueued(&m.headers, now)))
                .collect();
            self.produce(&topic, records).await?;
        }
        Ok(ids)
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<Delivery>> {
        Self::check_name(queue)?;
        let qc = self.consumer(queue).await?;
        let _one_at_a_time = qc.recv.lock().await;
        let _end = ReceiveEnd(&qc);
        qc.wake()?;
        let mut deadline = tokio::time::Instant::now()
            .checked_add(opts.wait)
            .ok_or_else(|| QueueError::InvalidOption(format!("wait {:?} too long", opts.wait)))?;
        // The first receive of a new member waits for the group to assign it partitions
        // (bounded), so that its wait is spent waiting for records, not for the join.
        let join_by = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        loop {
            let now = tokio::time::Instant::now();
            if now < join_by && !qc.track.lock().unwrap_or_else(|p| p.into_inner()).joined {
                deadline = deadline.max(now + opts.wait.min(Duration::from_secs(1)));
            }
            // Partitions whose early record is due: seek back to it and resume.
            let due: Vec<(Tp, i64)> = {
                let mut t = qc.track.lock().unwrap_or_else(|p| p.into_inner());
                let ready: Vec<_> = t
                    .holds
                    .iter()
                    .filter(|(_, h)| h.1 <= now)
                    .map(|(tp, h)| (tp.clone(), h.0))
                    .collect();
                for (tp, _) in &ready {
                    t.holds.remove(tp);
                }
                ready
            };
            for ((topic, p), off) in due {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topic, p);
                if let Err(e) =
                    qc.consumer
                        .seek(&topic, p, Offset::Offset(off), Duration::from_secs(5))
                {
                    tracing::warn!(%topic, partition = p, error = %e, "seek to a due record failed");
                }
                qc.consumer.resume(&tpl).map_err(map_err)?;
            }
            let next_hold = {
                let mut t = qc.track.lock().unwrap_or_else(|p| p.into_inner());
                // Keys' next records and due retries first, before reading more.
                out.extend(t.lines.take(now, opts.max - out.len()));
                if out.len() >= opts.max {
                    return Ok(out);
                }
                let hold = t.holds.values().map(|h| h.1).min();
                match (hold, t.lines.next_due()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            let mut until = if out.is_empty() {
                deadline
            } else {
                now + Duration::from_millis(2)
            };
            if let Some(h) = next_hold {
                until = until.min(h.max(now));
            }
            if until <= now && (!out.is_empty() || now >= deadline) {
                return Ok(out);
            }
            // Cancelled: the wait ends with what this call already holds. `recv` takes
            // nothing when dropped (records stay in the consumer's queue).
            let next = tokio::select! {
                r = tokio::time::timeout_at(until, qc.consumer.recv()) => r,
                _ = opts.cancel.cancelled() => return Ok(out),
            };
            let msg = match next {
                Err(_) => {
                    if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                        return Ok(out);
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    let e = map_err(e);
                    if matches!(e, QueueError::UnknownQueue(_)) {
                        return Err(QueueError::UnknownQueue(queue.to_string()));
                    }
                    tracing::warn!(error = %e, "kafka consumer error");
                    if out.is_empty() {
                        return Err(e);
                    }
                    return Ok(out);
                }
                Ok(Ok(m)) => m,
            };
            let tp = (msg.topic().to_string(), msg.partition());
            let (mut delivery, mut due_ms) = codec::decode(queue, &msg);
            // A due time further away than any this driver writes (`max_delay`, plus a
            // minute for clocks that disagree) is another writer's: holding its partition
            // for it would stall every record behind it, so it is delivered now, malformed.
            if let Some(due) = due_ms {
                let bound = unix_millis(SystemTime::now())
                    .saturating_add(self.config.max_delay.as_millis() as u64)
                    .saturating_add(60_000);
                if due > bound {
                    delivery = delivery.malformed(format!(
                        "due time {due} is more than max_delay ({:?}) away",
                        self.config.max_delay
                    ));
                    due_ms = None;
                }
            }
            let mut t = qc.track.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((held, _)) = t.holds.get(&tp) {
                if msg.offset() >= *held {
                    continue; // prefetched behind an early record; it will be read again
                }
            }
            if let Some(due_ms) = due_ms {
                let wall = unix_millis(SystemTime::now());
                if due_ms > wall {
                    let at = tokio::time::Instant::now() + Duration::from_millis(due_ms - wall);
                    t.holds.insert(tp.clone(), (msg.offset(), at));
                    drop(t);
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&tp.0, tp.1);
                    qc.consumer.pause(&tpl).map_err(map_err)?;
                    continue;
                }
            }
            t.next_commit.entry(tp.clone()).or_insert(msg.offset());
            t.pending.entry(tp.clone()).or_default().insert(
                msg.offset(),
                Slot {
                    done: false,
                    delivery: delivery.clone(),
                },
            );
            // A keyed record of the queue's own topic takes its key's turn.
            let keyed = delivery.ordering_key.clone().filter(|_| {
                tp.0 == queue
                    && !delivery
                        .headers
                        .contains_key(queue_core::headers::MALFORMED)
            });
            let delivery = match keyed {
                Some(k) => match t.lines.admit(&tp, &k, delivery) {
                    Some(d) => d,
                    None => continue,
                },
                None => delivery,
            };
            drop(t);
            tracing::trace!(
                pid = std::process::id(),
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                "kafka: delivered"
            );
            out.push(delivery);
            if out.len() >= opts.max {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        let qc = self.existing_consumer(queue).await?;
        self.settle(&qc, receipts)
    }

    async fn nack(&self, queue: &str, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.republish(queue, receipt, delay, 1).await
    }

    async fn give_back(&self, d: &Delivery, delay: Duration) -> Result<()> {
        self.republish(&d.queue, &d.receipt, delay, 0).await
    }

    async fn extend(&self, queue: &str, receipt: &Receipt, _lease: Duration) -> Result<()> {
        // Session leases: the delivery is ours while we hold its partition.
        let (tp, off) = codec::parse_receipt(receipt)?;
        let qc = self.existing_consumer(queue).await?;
        let t = qc.track.lock().unwrap_or_else(|p| p.into_inner());
        match t.pending.get(&tp).and_then(|m| m.get(&off)) {
            Some(slot) if !slot.done => Ok(()),
            _ => Err(QueueError::ReceiptExpired),
        }
    }

    async fn start_receiving(&self, queue: &str) -> Result<()> {
        *self
            .receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_string())
            .or_default() += 1;
        Ok(())
    }

    async fn stop_receiving(&self, queue: &str) -> Result<()> {
        {
            // Another worker of this instance still receives: the session stays.
            let mut r = self.receivers.lock().unwrap_or_else(|p| p.into_inner());
            match r.get_mut(queue) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return Ok(());
                }
                _ => {
                    r.remove(queue);
                }
            }
        }
        let gone = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(queue);
        if let Some(qc) = gone {
            // Closing leaves the group, so that the partitions move at once: a blocking
            // call in librdkafka (~100 ms with tansu; seconds while a join is under way).
            // It runs on the blocking pool without holding up the worker's shutdown; the
            // runtime waits for it before the process ends, and were it cut short the
            // group would move the partitions at the session timeout instead.
            tokio::task::spawn_blocking(move || drop(qc));
        }
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        Self::check_name(queue)?;
        let delay = Self::delay_topic(queue);
        self.ensure_topic(queue, queue).await?;
        let dlq = self.dead_letter_queue(queue);
        let in_flight = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .map(|c| {
                c.track
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .in_flight(&[queue])
            })
            .unwrap_or(0);
        let main = self.lag(self.group(queue), vec![queue.to_string()]).await?;
        let delayed = self.lag(self.group(queue), vec![delay]).await?;
        let dead = self
            .lag(self.group(&dlq), vec![dlq.clone(), Self::delay_topic(&dlq)])
            .await?;
        Ok(QueueStats::new(
            main.saturating_sub(in_flight),
            in_flight,
            delayed,
            dead,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `max_delay` bounds how long a delayed record can wait behind a longer one: 15
    /// minutes unless the URL says otherwise, within 1 s to a year, never clamped.
    #[tokio::test]
    async fn max_delay_is_declared_and_bounded() {
        // Building a client does not contact the broker.
        let q = KafkaQueue::connect("kafka://127.0.0.1:9092").await.unwrap();
        let caps = q.capabilities();
        assert_eq!(caps.max_delay, Some(Duration::from_secs(900)));
        assert_eq!(caps.max_nack_delay, Some(Duration::from_secs(900)));
        let q = KafkaQueue::connect("kafka://127.0.0.1:9092?max_delay=2h")
            .await
            .unwrap();
        assert_eq!(q.capabilities().max_delay, Some(Duration::from_secs(7200)));
        for bad in ["2y", "500ms", "soon"] {
            let e = KafkaQueue::connect(&format!("kafka://127.0.0.1:9092?max_delay={bad}"))
                .await
                .expect_err(bad);
            assert!(e.to_string().contains("max_delay"), "{bad}: {e}");
        }
    }
}
