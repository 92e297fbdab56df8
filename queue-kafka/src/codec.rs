//! The record codec: framework fields in Kafka headers, receipts as
//! `topic|partition|offset`. Decoding needs no Kafka client (the fuzz targets build it
//! without librdkafka); encoding into librdkafka's headers comes with feature `client`.

use std::time::SystemTime;

use queue_core::driver::{first_enqueued, receipt, receipt_str};
use queue_core::{from_unix_millis, Delivery, Headers, MessageId, QueueError, Receipt, Result};

use crate::BACKEND;

/// A partition: its topic and number.
pub(crate) type Tp = (String, i32);

pub(crate) const H_ID: &str = "x-queue-id";
pub(crate) const H_ATTEMPT: &str = "x-queue-attempt";
pub(crate) const H_ENQUEUED: &str = "x-queue-enqueued-at";
pub(crate) const H_NOT_BEFORE: &str = "x-queue-not-before";
pub(crate) const H_KEY: &str = "x-queue-key";
pub(crate) const RESERVED: [&str; 5] = [H_ID, H_ATTEMPT, H_ENQUEUED, H_NOT_BEFORE, H_KEY];

/// What [`decode`] reads of a record: librdkafka's message when receiving, or
/// plain bytes in the fuzz targets (feature `fuzzing`).
pub trait RecordView {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn timestamp_ms(&self) -> Option<i64>;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
    /// Calls `f` with each header, in order.
    fn each_header(&self, f: &mut dyn FnMut(&str, Option<&[u8]>));
}

/// A record held in plain fields, for the fuzz targets and tests.
#[cfg(any(test, feature = "fuzzing"))]
pub mod plain {
    use super::RecordView;

    /// A record as another writer may have produced it.
    #[derive(Debug, Default)]
    pub struct Record<'a> {
        /// Its key.
        pub key: Option<&'a [u8]>,
        /// Its value.
        pub payload: Option<&'a [u8]>,
        /// Its headers, in order (names may repeat).
        pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
        /// Its broker timestamp.
        pub timestamp_ms: Option<i64>,
    }

    impl RecordView for Record<'_> {
        fn topic(&self) -> &str {
            "fuzz"
        }
        fn partition(&self) -> i32 {
            0
        }
        fn offset(&self) -> i64 {
            7
        }
        fn timestamp_ms(&self) -> Option<i64> {
            self.timestamp_ms
        }
        fn key(&self) -> Option<&[u8]> {
            self.key
        }
        fn payload(&self) -> Option<&[u8]> {
            self.payload
        }
        fn each_header(&self, f: &mut dyn FnMut(&str, Option<&[u8]>)) {
            for (k, v) in &self.headers {
                f(k, *v);
            }
        }
    }
}

/// Decodes a record of `queue`; returns the delivery and its due time (`None` when it is
/// due now or malformed).
pub(crate) fn decode(queue: &str, msg: &impl RecordView) -> (Delivery, Option<u64>) {
    let mut headers = Headers::new();
    let (mut id, mut attempt, mut enqueued, mut due, mut keyed) = (None, 1, None, None, false);
    // Another writer's record may carry our header names with anything in them: what
    // does not parse marks the delivery malformed (the worker dead-letters it with
    // why), never a guess.
    let mut broken = Vec::new();
    msg.each_header(&mut |key, value| {
        let v = String::from_utf8_lossy(value.unwrap_or_default()).into_owned();
        match key {
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
            // The core's mark for a delivery the driver could not decode: this driver
            // never writes it, so a record carrying it is another writer's claim.
            queue_core::headers::MALFORMED => broken.push(format!(
                "carries the reserved header {}",
                queue_core::headers::MALFORMED
            )),
            k => {
                headers.insert(k.to_string(), v);
            }
        }
    });
    let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
    let id = id
        .or_else(|| key.clone())
        .unwrap_or_else(|| format!("{}-{}-{}", msg.topic(), msg.partition(), msg.offset()));
    let stored = enqueued
        .map(from_unix_millis)
        .or_else(|| {
            msg.timestamp_ms()
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

/// Parses a receipt back into its partition and offset.
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

/// The client side: librdkafka's records read through [`RecordView`], and messages
/// encoded into librdkafka's headers.
#[cfg(feature = "client")]
mod client {
    use queue_core::{unix_millis, Message};
    use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};

    use super::*;

    impl RecordView for BorrowedMessage<'_> {
        fn topic(&self) -> &str {
            rdkafka::Message::topic(self)
        }
        fn partition(&self) -> i32 {
            rdkafka::Message::partition(self)
        }
        fn offset(&self) -> i64 {
            rdkafka::Message::offset(self)
        }
        fn timestamp_ms(&self) -> Option<i64> {
            rdkafka::Message::timestamp(self).to_millis()
        }
        fn key(&self) -> Option<&[u8]> {
            rdkafka::Message::key(self)
        }
        fn payload(&self) -> Option<&[u8]> {
            rdkafka::Message::payload(self)
        }
        fn each_header(&self, f: &mut dyn FnMut(&str, Option<&[u8]>)) {
            if let Some(hs) = rdkafka::Message::headers(self) {
                for h in hs.iter() {
                    f(h.key, h.value);
                }
            }
        }
    }

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
}
#[cfg(feature = "client")]
pub(crate) use client::record;

#[cfg(test)]
mod tests {
    use super::plain::Record;
    use super::*;
    use queue_core::unix_millis;

    /// Found by the `kafka_record` fuzz target: a foreign record carrying the core's
    /// malformed mark and a due time was held for that due time, then dead-lettered.
    #[test]
    fn a_record_carrying_the_reserved_malformed_header_is_malformed_and_not_held() {
        let due = (unix_millis(SystemTime::now()) + 60_000).to_string();
        let r = Record {
            payload: Some(b"x"),
            headers: vec![
                (H_NOT_BEFORE, Some(due.as_bytes())),
                (queue_core::headers::MALFORMED, Some(b"trust me")),
            ],
            ..Record::default()
        };
        let (d, held) = decode("q", &r);
        assert_eq!(held, None, "a malformed record is never held");
        let why = d.headers.get(queue_core::headers::MALFORMED).unwrap();
        assert!(why.contains("reserved header"), "{why}");
    }

    #[test]
    fn a_plain_foreign_record_decodes_with_an_id_from_its_position() {
        let r = Record {
            key: Some(b"k"),
            payload: Some(b"hello"),
            headers: vec![("app", Some(b"1"))],
            timestamp_ms: Some(-5),
        };
        let (d, held) = decode("q", &r);
        assert_eq!((d.id.as_str(), d.attempt, held), ("k", 1, None));
        assert_eq!(d.headers.get("app").map(String::as_str), Some("1"));
        assert_eq!(&d.payload[..], b"hello");
    }
}
