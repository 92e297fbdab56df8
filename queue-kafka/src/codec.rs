//! The record codec: framework fields in Kafka headers, receipts as
//! `topic|partition|offset`.

use super::*;

pub(crate) const H_ID: &str = "x-queue-id";
pub(crate) const H_ATTEMPT: &str = "x-queue-attempt";
pub(crate) const H_ENQUEUED: &str = "x-queue-enqueued-at";
pub(crate) const H_NOT_BEFORE: &str = "x-queue-not-before";
pub(crate) const H_KEY: &str = "x-queue-key";
pub(crate) const RESERVED: [&str; 5] = [H_ID, H_ATTEMPT, H_ENQUEUED, H_NOT_BEFORE, H_KEY];

impl KafkaQueue {
    pub(crate) fn record(
        m: &Message,
        attempt: u32,
        enqueued: SystemTime,
    ) -> (Option<String>, queue_core::driver::Bytes, OwnedHeaders) {
        let mut h = OwnedHeaders::new_with_capacity(m.headers.len() + 5);
        for (k, v) in &m.headers {
            if !RESERVED.contains(&k.as_str()) {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
        }
        let attempt = attempt.to_string();
        let enq = unix_millis(enqueued).to_string();
        h = h
            .insert(Header {
                key: H_ID,
                value: Some(m.id.as_str().as_bytes()),
            })
            .insert(Header {
                key: H_ATTEMPT,
                value: Some(attempt.as_bytes()),
            })
            .insert(Header {
                key: H_ENQUEUED,
                value: Some(enq.as_bytes()),
            });
        if let Some(d) = m.delay.filter(|d| !d.is_zero()) {
            let due = unix_millis(SystemTime::now() + d).to_string();
            h = h.insert(Header {
                key: H_NOT_BEFORE,
                value: Some(due.as_bytes()),
            });
        }
        let key = match &m.ordering_key {
            Some(k) => {
                h = h.insert(Header {
                    key: H_KEY,
                    value: Some(b"1"),
                });
                k.clone()
            }
            None => m.id.as_str().to_string(),
        };
        (Some(key), m.payload.clone(), h)
    }

    pub(crate) fn decode(queue: &str, msg: &BorrowedMessage<'_>) -> (Delivery, Option<u64>) {
        let mut headers = Headers::new();
        let (mut id, mut attempt, mut enqueued, mut due, mut keyed) = (None, 1, None, None, false);
        // Another writer's record may carry our header names with anything in them: what
        // does not parse marks the delivery malformed (the worker dead-letters it with
        // why), never a guess.
        let mut broken = Vec::new();
        if let Some(hs) = msg.headers() {
            for h in hs.iter() {
                let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                match h.key {
                    H_ID => id = Some(v),
                    H_ATTEMPT => match v.parse::<u32>() {
                        Ok(a) if a >= 1 => attempt = a,
                        _ => broken.push(format!(
                            "{H_ATTEMPT} {v:?} is not a number from 1 to 4294967295"
                        )),
                    },
                    H_ENQUEUED => enqueued = v.parse::<u64>().ok(),
                    H_NOT_BEFORE => match v.parse::<u64>() {
                        Ok(ms) => due = Some(ms),
                        Err(_) => broken.push(format!(
                            "{H_NOT_BEFORE} {v:?} is not a time in Unix milliseconds"
                        )),
                    },
                    H_KEY => keyed = true,
                    k => {
                        headers.insert(k.to_string(), v);
                    }
                }
            }
        }
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let id = id
            .or_else(|| key.clone())
            .unwrap_or_else(|| format!("{}-{}-{}", msg.topic(), msg.partition(), msg.offset()));
        let stored = enqueued
            .map(from_unix_millis)
            .or_else(|| {
                msg.timestamp()
                    .to_millis()
                    .map(|ms| from_unix_millis(ms.max(0) as u64))
            })
            .unwrap_or_else(SystemTime::now);
        let d = Delivery::new(
            queue,
            MessageId::new(id),
            // librdkafka owns the record's buffer: this is the one copy, into a shared
            // buffer that is not copied again.
            msg.payload().unwrap_or_default().to_vec(),
            receipt(format!(
                "{}|{}|{}",
                msg.topic(),
                msg.partition(),
                msg.offset()
            )),
        )
        .with_first_enqueued_at(first_enqueued(&headers, stored))
        .with_headers(headers)
        .with_attempt(attempt)
        .with_ordering_key(if keyed { key } else { None });
        if broken.is_empty() {
            (d, due)
        } else {
            (d.malformed(broken.join("; ")), None)
        }
    }

    pub(crate) fn parse_receipt(r: &Receipt) -> Result<(Tp, i64)> {
        let text = receipt_str(r);
        let bad = || QueueError::invalid_receipt(BACKEND, format!("{text:?}"));
        let mut it = text.rsplitn(3, '|');
        let (Some(o), Some(p), Some(t)) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        match (p.parse::<i32>(), o.parse::<i64>()) {
            (Ok(p), Ok(o)) => Ok(((t.to_string(), p), o)),
            _ => Err(bad()),
        }
    }
}
