//! Raw writers that are not the framework: each puts hostile messages straight into a
//! queue's storage with the backend's own client, cycling through kinds of poison.
//!
//! Every kind must end in the dead-letter queue with a reason, and none may stop, panic or
//! stall a worker. Kinds a broker refuses itself (over its size limit) are counted as
//! refused, not sent.

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::MessageAttributeValue;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// A backend's raw client, pointed at one queue.
pub enum Raw {
    /// Redis: the driver's keys, written directly.
    Redis {
        /// A plain connection.
        conn: redis::aio::MultiplexedConnection,
        /// `q:{name}:`.
        prefix: String,
    },
    /// SQS: SendMessage with hostile bodies and attributes.
    Sqs {
        /// The SDK client.
        client: aws_sdk_sqs::Client,
        /// The queue's URL.
        url: String,
    },
    /// Kafka: records with hostile values and headers.
    Kafka {
        /// A plain producer.
        producer: FutureProducer,
        /// The queue's topic.
        topic: String,
    },
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Raw::Redis { .. } => "Raw::Redis",
            Raw::Sqs { .. } => "Raw::Sqs",
            Raw::Kafka { .. } => "Raw::Kafka",
        })
    }
}

/// How many kinds of poison each writer cycles through.
pub const KINDS: u64 = 8;

const JUNK: &[u8] = b"\xff\xfe\x00not an envelope\x80\x81";
const UNKNOWN_JOB: &[u8] = br#"{"job":"no-such-job","v":1,"data":{"x":1}}"#;

impl Raw {
    /// A raw client for `queue` on the backend `url` points at.
    pub async fn connect(backend: &str, url: &str, queue: &str) -> Result<Self, String> {
        match backend {
            "redis" => {
                let client = redis::Client::open(url).map_err(|e| e.to_string())?;
                let conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Raw::Redis {
                    conn,
                    prefix: format!("q:{{{queue}}}:"),
                })
            }
            "sqs" => {
                let endpoint = url
                    .split_once("endpoint=")
                    .map(|(_, e)| e.split('&').next().unwrap_or(e).to_string())
                    .ok_or("the SQS URL has no endpoint=")?;
                let conf = aws_sdk_sqs::Config::builder()
                    .behavior_version_latest()
                    .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                    .endpoint_url(endpoint)
                    .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                        "test", "test", None, None, "chaos",
                    ))
                    .build();
                let client = aws_sdk_sqs::Client::from_conf(conf);
                let url = client
                    .get_queue_url()
                    .queue_name(queue)
                    .send()
                    .await
                    .map_err(|e| format!("GetQueueUrl: {e}"))?
                    .queue_url
                    .ok_or("GetQueueUrl: no URL")?;
                Ok(Raw::Sqs { client, url })
            }
            "kafka" => {
                let bootstrap = url
                    .strip_prefix("kafka://")
                    .and_then(|r| r.split(['?', '/']).next())
                    .ok_or("not a kafka:// URL")?;
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    .create()
                    .map_err(|e| e.to_string())?;
                Ok(Raw::Kafka {
                    producer,
                    topic: queue.to_string(),
                })
            }
            o => Err(format!("unknown backend {o:?}")),
        }
    }

    /// Writes poison number `i`; `limit` is the framework's message
    /// size limit on this backend. `Ok(false)`: the broker refused it.
    pub async fn write(&mut self, i: u64, limit: usize) -> Result<bool, String> {
        // The first two are the size-limit kind (at the limit, then one byte over); the
        // rest cycle through the other kinds. Two of them are enough to show the limit is
        // handled, and more would measure the broker's bandwidth for megabyte messages
        // rather than what poison costs the framework.
        let kind = if i < 2 {
            KINDS - 1
        } else {
            (i - 2) % (KINDS - 1)
        };
        let over = usize::from(i == 1);
        match self {
            Raw::Redis { conn, prefix } => {
                // The driver's layout: `<enqueued ms>:<id len>:<id><headers len>:<headers><payload>`.
                let framed = |id: &str, headers: &str, payload: &[u8]| {
                    let mut v =
                        format!("1700000000000:{}:{id}{}:{headers}", id.len(), headers.len())
                            .into_bytes();
                    v.extend_from_slice(payload);
                    v
                };
                let id = format!("poison-{i}");
                let mut attempts: Option<&str> = None;
                let value: Vec<u8> = match kind {
                    0 => JUNK.to_vec(),                         // not the layout at all
                    1 => framed(&id, "{not json", UNKNOWN_JOB), // headers not JSON
                    2 => framed(&id, "", JUNK),                 // not an envelope, not UTF-8
                    3 => framed(&id, "", b""),                  // empty
                    4 => framed(&id, "", UNKNOWN_JOB),          // unknown job name
                    5 => {
                        // absurd attempt count, absurd max-attempts header
                        attempts = Some("99999999999999999999999");
                        framed(&id, r#"{"x-queue-max-attempts":"-7"}"#, JUNK)
                    }
                    6 => b"1700000000000:99999999999999999999999:x".to_vec(), // huge length
                    _ => {
                        // exactly at the limit, then one byte over
                        let mut v = framed(&id, "", b"");
                        v.resize(limit + over, b'x');
                        v
                    }
                };
                let seq: u64 = redis::cmd("INCR")
                    .arg(format!("{prefix}seq"))
                    .query_async(conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut p = redis::pipe();
                p.cmd("SET").arg(format!("{prefix}m:{seq}")).arg(value);
                if let Some(a) = attempts {
                    p.cmd("HSET").arg(format!("{prefix}att")).arg(seq).arg(a);
                }
                p.cmd("LPUSH").arg(format!("{prefix}ready")).arg(seq);
                let () = p.query_async(conn).await.map_err(|e| e.to_string())?;
                Ok(true)
            }
            Raw::Sqs { client, url } => {
                let attr = |s: &str| {
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(s)
                        .build()
                        .expect("data type set")
                };
                let mut req = client.send_message().queue_url(url.as_str());
                req = match kind {
                    0 => req.message_body("not an envelope \u{1}\u{fffd}"),
                    1 => req
                        .message_body(String::from_utf8_lossy(UNKNOWN_JOB))
                        .message_attributes("x-queue-headers", attr("{not json")),
                    2 => req
                        .message_body(" ")
                        .message_attributes("x-queue-enc", attr("binary"))
                        .message_attributes(
                            "x-queue-payload",
                            MessageAttributeValue::builder()
                                .data_type("Binary")
                                .binary_value(Blob::new(JUNK))
                                .build()
                                .expect("data type set"),
                        ),
                    3 => req
                        .message_body(" ")
                        .message_attributes("x-queue-enc", attr("empty")),
                    4 => req.message_body(String::from_utf8_lossy(UNKNOWN_JOB)),
                    5 => req
                        .message_body("junk")
                        .message_attributes("x-queue-attempts-before", attr("99999999999999999999"))
                        .message_attributes(
                            "x-queue-headers",
                            attr(r#"{"x-queue-max-attempts":"-7"}"#),
                        ),
                    6 => req
                        .message_body("junk")
                        .message_attributes("x-queue-id", attr(&"i".repeat(60_000))),
                    _ => {
                        // SQS's own limit is 256 KiB: at it, then one byte over.
                        req.message_body("x".repeat(262_144 + over))
                    }
                };
                match req.send().await {
                    Ok(_) => Ok(true),
                    Err(e) if kind == 7 => {
                        tracing::debug!("SQS refused an oversized raw message: {e}");
                        Ok(false)
                    }
                    Err(e) => Err(format!("raw SendMessage (kind {kind}): {e}")),
                }
            }
            Raw::Kafka { producer, topic } => {
                fn h<'a>(k: &'a str, v: &'a [u8]) -> Header<'a, &'a [u8]> {
                    Header {
                        key: k,
                        value: Some(v),
                    }
                }
                let mut headers = OwnedHeaders::new();
                let big;
                let value: &[u8] = match kind {
                    0 => JUNK,
                    1 => {
                        headers = headers
                            .insert(h("x-queue-attempt", b"abc"))
                            .insert(h("x-queue-id", b"\xff\xfe"));
                        UNKNOWN_JOB
                    }
                    2 => b"",
                    3 => UNKNOWN_JOB,
                    4 => {
                        headers = headers
                            .insert(h("x-queue-attempt", b"99999999999999999999999"))
                            .insert(h("x-queue-enqueued-at", b"-5"))
                            .insert(h("x-queue-max-attempts", b"-7"));
                        JUNK
                    }
                    5 => {
                        // a due time on the main topic, far away: must not hold the partition
                        headers = headers.insert(h("x-queue-not-before", b"18446744073709551615"));
                        JUNK
                    }
                    6 => {
                        headers = headers.insert(h("x-queue-headers", b"{not json"));
                        JUNK
                    }
                    _ => {
                        big = vec![b'x'; limit + over];
                        &big
                    }
                };
                let key = format!("poison-{i}");
                let rec = FutureRecord::to(topic.as_str())
                    .key(&key)
                    .payload(value)
                    .headers(headers);
                match producer.send(rec, std::time::Duration::from_secs(10)).await {
                    Ok(_) => Ok(true),
                    Err((e, _)) if kind == 7 => {
                        tracing::debug!("Kafka refused an oversized raw record: {e}");
                        Ok(false)
                    }
                    Err((e, _)) => Err(format!("raw produce (kind {kind}): {e}")),
                }
            }
        }
    }
}
