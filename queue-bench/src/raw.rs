//! The raw baselines: the same workload through each backend's own client, doing strictly
//! less than the framework (no lease, attempt count, retry or dead-letter bookkeeping).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AO};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::Driver;

use crate::{now_micros, payload, produce, summarize, unique, Args, Cost, Probe, RssSampler, Run};

/// The same workload with the raw client.
pub(crate) async fn raw(a: &Args, backend: &str) -> Result<Run, String> {
    let probe = Arc::new(Probe::new(a.messages, format!("{backend} raw")));
    let cost = Cost::parse(&a.handler)?;
    let rss = RssSampler::start();
    let t0 = Instant::now();
    let size = a.payload;
    let (send, requests) = match backend {
        "memory" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..a.consumers {
                let (rx, probe) = (rx.clone(), probe.clone());
                tokio::spawn(async move {
                    loop {
                        let mut buf = Vec::new();
                        if rx.lock().await.recv_many(&mut buf, 10).await == 0 {
                            return;
                        }
                        for p in buf {
                            probe.record(&p);
                            cost.pay().await;
                        }
                    }
                });
            }
            let send = produce(a, move |k| {
                let tx = tx.clone();
                async move {
                    for _ in 0..k {
                        tx.send(payload(size)).await.map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            })
            .await?;
            (send, None)
        }
        "redis" => {
            let client = redis::Client::open(a.redis_url.as_str()).map_err(|e| e.to_string())?;
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let key = unique("bench-raw");
            let stop = Arc::new(AtomicBool::new(false));
            for _ in 0..a.consumers.min(4) {
                let (mut conn, key, probe, stop) =
                    (conn.clone(), key.clone(), probe.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(AO::Relaxed) {
                        let got: Option<Vec<Vec<u8>>> = redis::cmd("RPOP")
                            .arg(&key)
                            .arg(10)
                            .query_async(&mut conn)
                            .await
                            .unwrap_or(None);
                        match got {
                            Some(items) => {
                                for p in items {
                                    probe.record(&p);
                                    cost.pay().await;
                                }
                            }
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                });
            }
            let send = produce(a, move |k| {
                let (mut conn, key) = (conn.clone(), key.clone());
                async move {
                    let vals: Vec<Vec<u8>> = (0..k).map(|_| payload(size)).collect();
                    redis::cmd("LPUSH")
                        .arg(&key)
                        .arg(vals)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            probe.wait_for(a.messages, Duration::from_secs(900)).await?;
            stop.store(true, AO::Relaxed);
            (send, None)
        }
        "sqs" => {
            let q = queue_sqs::SqsQueue::connect(&a.sqs_url)
                .await
                .map_err(|e| e.to_string())?;
            let client = q.client().clone();
            let name = unique("bench-raw");
            let url = client
                .create_queue()
                .queue_name(&name)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .queue_url()
                .unwrap_or_default()
                .to_string();
            let requests = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            for _ in 0..a.consumers.div_ceil(10).max(1) {
                let (client, url, probe, stop, reqs) = (
                    client.clone(),
                    url.clone(),
                    probe.clone(),
                    stop.clone(),
                    requests.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(AO::Relaxed) {
                        reqs.fetch_add(1, AO::Relaxed);
                        let Ok(out) = client
                            .receive_message()
                            .queue_url(&url)
                            .max_number_of_messages(10)
                            .wait_time_seconds(1)
                            .send()
                            .await
                        else {
                            continue;
                        };
                        let mut del = Vec::new();
                        for (i, m) in out.messages().iter().enumerate() {
                            let body = m.body().unwrap_or_default();
                            let sent: u64 = body
                                .split(':')
                                .next()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            probe.record(&sent.to_le_bytes());
                            cost.pay().await;
                            if let Ok(e) =
                                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                                    .id(i.to_string())
                                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                                    .build()
                            {
                                del.push(e);
                            }
                        }
                        if !del.is_empty() {
                            reqs.fetch_add(1, AO::Relaxed);
                            let _ = client
                                .delete_message_batch()
                                .queue_url(&url)
                                .set_entries(Some(del))
                                .send()
                                .await;
                        }
                    }
                });
            }
            let (c2, u2, r2) = (client.clone(), url.clone(), requests.clone());
            let send = produce(a, move |k| {
                let (client, url, reqs) = (c2.clone(), u2.clone(), r2.clone());
                async move {
                    for chunk in (0..k).collect::<Vec<_>>().chunks(10) {
                        let entries = chunk
                            .iter()
                            .map(|i| {
                                let body = format!(
                                    "{}:{}",
                                    now_micros(),
                                    "x".repeat(size.saturating_sub(17))
                                );
                                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                                    .id(i.to_string())
                                    .message_body(body)
                                    .build()
                                    .map_err(|e| e.to_string())
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        reqs.fetch_add(1, AO::Relaxed);
                        client
                            .send_message_batch()
                            .queue_url(&url)
                            .set_entries(Some(entries))
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            })
            .await?;
            probe.wait_for(a.messages, Duration::from_secs(900)).await?;
            stop.store(true, AO::Relaxed);
            (send, Some(requests.load(AO::Relaxed)))
        }
        "kafka" => {
            use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
            use rdkafka::producer::{FutureProducer, FutureRecord};
            use rdkafka::Message as _;
            let bootstrap = a
                .kafka_url
                .trim_start_matches("kafka://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            // Topics come from the driver's create_queue (tansu creates none on first use).
            let topic = unique("bench-raw");
            let admin = queue_kafka::KafkaQueue::connect(&a.kafka_url)
                .await
                .map_err(|e| e.to_string())?;
            admin
                .create_queue(&topic)
                .await
                .map_err(|e| e.to_string())?;
            let producer: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "2")
                .create()
                .map_err(|e| e.to_string())?;
            let consumer: StreamConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", format!("raw-{topic}"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .create()
                .map_err(|e| e.to_string())?;
            consumer.subscribe(&[&topic]).map_err(|e| e.to_string())?;
            let stop = Arc::new(AtomicBool::new(false));
            let (p2, s2) = (probe.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !s2.load(AO::Relaxed) {
                    if let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
                    {
                        p2.record(m.payload().unwrap_or_default());
                        cost.pay().await;
                        n += 1;
                        if n.is_multiple_of(100) {
                            let _ = consumer.commit_message(&m, CommitMode::Async);
                        }
                    }
                }
            });
            let send = produce(a, move |k| {
                let (producer, topic) = (producer.clone(), topic.clone());
                async move {
                    let mut futs = Vec::new();
                    for _ in 0..k {
                        let p = payload(size);
                        let rec = FutureRecord::<(), _>::to(&topic).payload(&p);
                        futs.push(producer.send_result(rec).map_err(|(e, _)| e.to_string())?);
                    }
                    for f in futs {
                        f.await
                            .map_err(|e| e.to_string())?
                            .map_err(|(e, _)| e.to_string())?;
                    }
                    Ok(())
                }
            })
            .await?;
            probe.wait_for(a.messages, Duration::from_secs(900)).await?;
            stop.store(true, AO::Relaxed);
            (send, None)
        }
        "postgres" => postgres(a, &probe, cost).await?,
        other => return Err(format!("unknown backend {other}")),
    };
    probe.wait_for(a.messages, Duration::from_secs(900)).await?;
    let e2e = t0.elapsed();
    Ok(summarize(a, send, e2e, &probe, requests, rss.finish()))
}

/// The PostgreSQL baseline: the plainest SKIP LOCKED queue (a table of payloads; a
/// consumer deletes up to 10 rows as it takes them: no lease, no attempts, no ordering,
/// no notification, a 1 ms sleep when empty) on one pipelined connection per side.
async fn postgres(
    a: &Args,
    probe: &Arc<Probe>,
    cost: Cost,
) -> Result<(Duration, Option<u64>), String> {
    let (producer, consumer) = (
        Arc::new(crate::bloat::connect(a).await?),
        Arc::new(crate::bloat::connect(a).await?),
    );
    let table = unique("bench_raw").replace('-', "_");
    producer
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload bytea NOT NULL)"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let take = consumer
        .prepare(&format!(
            "DELETE FROM {table} WHERE id IN
               (SELECT id FROM {table} ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED)
             RETURNING payload"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..a.consumers.min(4) {
        let (client, take, probe, stop) =
            (consumer.clone(), take.clone(), probe.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(AO::Relaxed) {
                match client.query(&take, &[]).await {
                    Ok(rows) if !rows.is_empty() => {
                        for r in rows {
                            let p: Vec<u8> = r.get(0);
                            probe.record(&p);
                            cost.pay().await;
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        });
    }
    let insert = producer
        .prepare(&format!(
            "INSERT INTO {table} (payload) SELECT unnest($1::bytea[])"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let size = a.payload;
    let send = produce(a, move |k| {
        let (client, insert) = (producer.clone(), insert.clone());
        async move {
            let vals: Vec<Vec<u8>> = (0..k).map(|_| payload(size)).collect();
            client
                .execute(&insert, &[&vals])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    probe.wait_for(a.messages, Duration::from_secs(900)).await?;
    stop.store(true, AO::Relaxed);
    let _ = consumer.batch_execute(&format!("DROP TABLE {table}")).await;
    Ok((send, None))
}
