//! The message codec: the framework's id, headers and binary payloads in SQS message
//! attributes, and the FIFO deduplication id. Decoding reads a [`Received`], plain parts
//! that need no AWS SDK (the fuzz targets build it without one); encoding into the SDK's
//! types, and reading its messages into a [`Received`], come with feature `client`.

use std::time::SystemTime;

use queue_core::driver::{first_enqueued, receipt};
use queue_core::{from_unix_millis, Delivery, Headers, Message, MessageId};

pub(crate) const ATTR_ID: &str = "x-queue-id";
pub(crate) const ATTR_HEADERS: &str = "x-queue-headers";
pub(crate) const ATTR_PAYLOAD: &str = "x-queue-payload";
pub(crate) const ATTR_ENC: &str = "x-queue-enc";
pub(crate) const ATTR_NOT_BEFORE: &str = "x-queue-not-before";

/// Characters SQS accepts in a message body.
pub(crate) fn sqs_text_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// The FIFO `MessageDeduplicationId`: the dedup id, else the message id, so that a retried
/// send is dropped. A dead-lettered or redriven copy keeps its message id but must not be
/// dropped as a duplicate of the original (SQS remembers ids for 5 minutes: a redrive
/// within that time would lose the message), so its copy time is appended.
pub(crate) fn fifo_dedup_id(m: &Message) -> String {
    if let Some(d) = &m.dedup_id {
        return d.clone();
    }
    let id = m.id.as_str();
    let copy = [
        (queue_core::headers::REDRIVEN_AT, "r"),
        (queue_core::headers::DLQ_AT, "d"),
    ]
    .iter()
    .find_map(|(h, tag)| m.headers.get(*h).map(|at| format!("-{tag}{at}")));
    match copy {
        None => id.to_string(),
        Some(suffix) => {
            // SQS allows 128 characters: keep the suffix whole.
            let keep = 128usize.saturating_sub(suffix.len());
            let mut cut = id.len().min(keep);
            while !id.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}{suffix}", &id[..cut])
        }
    }
}

/// What the decoder reads of a received message: its body, the values of this driver's
/// attributes and of SQS's system attributes, each absent or holding anything another
/// writer (or SQS) put there.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) body: Option<String>,
    pub(crate) message_id: Option<String>,
    pub(crate) receipt_handle: Option<String>,
    /// Attribute `x-queue-id`.
    pub(crate) id: Option<String>,
    /// Attribute `x-queue-headers` (JSON).
    pub(crate) headers: Option<String>,
    /// Attribute `x-queue-enc` (`empty` or `binary`).
    pub(crate) encoding: Option<String>,
    /// Attribute `x-queue-payload`'s binary value.
    pub(crate) binary: Option<Vec<u8>>,
    /// System attribute `SentTimestamp`.
    pub(crate) sent_timestamp: Option<String>,
    /// System attribute `ApproximateReceiveCount`.
    pub(crate) receive_count: Option<String>,
    /// System attribute `MessageGroupId`.
    pub(crate) group_id: Option<String>,
}

/// Decodes a received message of `queue`. Every message decodes to one delivery: one
/// whose attributes do not decode is marked malformed (the worker dead-letters it with
/// why), never failing the whole receive.
pub(crate) fn decode(queue: &str, m: Received) -> Delivery {
    let mut broken = None;
    let mut headers: Headers = match &m.headers {
        Some(h) => serde_json::from_str(h).unwrap_or_else(|e| {
            broken = Some(format!(
                "{ATTR_HEADERS} is not a JSON object of strings: {e}"
            ));
            Headers::new()
        }),
        None => Headers::new(),
    };
    // The payload moves out of the response: no copy.
    let payload: Vec<u8> = match m.encoding.as_deref() {
        Some("empty") => Vec::new(),
        Some("binary") => m.binary.unwrap_or_default(),
        _ => m.body.unwrap_or_default().into_bytes(),
    };
    let id = m.id.or(m.message_id).unwrap_or_default();
    let sent = m
        .sent_timestamp
        .and_then(|v| v.parse::<u64>().ok())
        .map(from_unix_millis)
        .unwrap_or_else(SystemTime::now);
    let group = m.group_id.filter(|g| *g != id);
    // SQS counts the receive that returned this message, so the count is at least 1;
    // a 0 (never sent by SQS, found by the fuzz target) must not make attempt 0.
    let receives: u32 = m
        .receive_count
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // A copy sent back by a give-back carries the attempts made before it.
    let before = match headers.remove(queue_core::headers::ATTEMPTS_BEFORE) {
        None => 0,
        Some(v) => v.parse::<u32>().unwrap_or_else(|_| {
            broken = Some(format!(
                "{} is not a count: {v:?}",
                queue_core::headers::ATTEMPTS_BEFORE
            ));
            0
        }),
    };
    let attempt = before.saturating_add(receives);
    let d = Delivery::new(
        queue,
        MessageId::new(id),
        payload,
        receipt(m.receipt_handle.unwrap_or_default()),
    )
    .with_attempt(attempt)
    .with_first_enqueued_at(first_enqueued(&headers, sent))
    .with_headers(headers)
    .with_ordering_key(group);
    match broken {
        Some(why) => d.malformed(why),
        None => d,
    }
}

/// The client side: messages encoded into the SDK's types, and the SDK's received
/// messages read into a [`Received`].
#[cfg(feature = "client")]
mod client {
    use aws_sdk_sqs::primitives::Blob;
    use aws_sdk_sqs::types::{
        MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
    };
    use queue_core::{unix_millis, QueueError, Result};

    use super::*;
    use crate::driver::{secs_ceil, MAX_SQS_DELAY};
    use crate::BACKEND;

    pub(crate) fn text_attr(v: &str) -> Result<MessageAttributeValue> {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .map_err(|e| QueueError::backend(BACKEND, e))
    }

    /// Bytes SQS counts for a message attribute: name, data type and value.
    pub(crate) fn attr_size(name: &str, v: &MessageAttributeValue) -> usize {
        name.len()
            + v.data_type().len()
            + v.string_value().map_or(0, str::len)
            + v.binary_value().map_or(0, |b| b.as_ref().len())
    }

    /// The batch entry `i` that sends `m`, and the bytes SQS counts for it.
    pub(crate) fn entry(
        i: usize,
        m: &Message,
        fifo: bool,
    ) -> Result<(SendMessageBatchRequestEntry, usize)> {
        let mut attrs: Vec<(&str, MessageAttributeValue)> =
            vec![(ATTR_ID, text_attr(m.id.as_str())?)];
        if !m.headers.is_empty() {
            let h =
                serde_json::to_string(&m.headers).map_err(|e| QueueError::backend(BACKEND, e))?;
            attrs.push((ATTR_HEADERS, text_attr(&h)?));
        }
        let body = match std::str::from_utf8(&m.payload) {
            Ok(s) if !s.is_empty() && s.chars().all(sqs_text_char) => s.to_string(),
            _ => {
                if m.payload.is_empty() {
                    attrs.push((ATTR_ENC, text_attr("empty")?));
                } else {
                    attrs.push((ATTR_ENC, text_attr("binary")?));
                    let bin = MessageAttributeValue::builder()
                        .data_type("Binary")
                        .binary_value(Blob::new(m.payload.to_vec()))
                        .build()
                        .map_err(|e| QueueError::backend(BACKEND, e))?;
                    attrs.push((ATTR_PAYLOAD, bin));
                }
                "-".to_string()
            }
        };
        let delay = m.delay.unwrap_or_default();
        if delay > MAX_SQS_DELAY {
            let due = unix_millis(SystemTime::now() + delay);
            attrs.push((ATTR_NOT_BEFORE, text_attr(&due.to_string())?));
        }
        let size = body.len() + attrs.iter().map(|(k, v)| attr_size(k, v)).sum::<usize>();
        let mut e = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(body);
        for (k, v) in attrs {
            e = e.message_attributes(k, v);
        }
        if fifo {
            e = e
                .message_group_id(
                    m.ordering_key
                        .clone()
                        .unwrap_or_else(|| m.id.as_str().to_string()),
                )
                .message_deduplication_id(fifo_dedup_id(m));
        } else if !delay.is_zero() {
            e = e.delay_seconds(secs_ceil(delay.min(MAX_SQS_DELAY)) as i32);
        }
        Ok((
            e.build().map_err(|e| QueueError::backend(BACKEND, e))?,
            size,
        ))
    }

    impl From<aws_sdk_sqs::types::Message> for Received {
        fn from(mut m: aws_sdk_sqs::types::Message) -> Self {
            let mut attrs = m.message_attributes.take().unwrap_or_default();
            let mut text = |k: &str| attrs.get_mut(k).and_then(|v| v.string_value.take());
            let (id, headers, encoding) = (text(ATTR_ID), text(ATTR_HEADERS), text(ATTR_ENC));
            let mut sys = m.attributes.take().unwrap_or_default();
            let mut sys = |k: MessageSystemAttributeName| sys.remove(&k);
            Received {
                body: m.body.take(),
                message_id: m.message_id.take(),
                receipt_handle: m.receipt_handle.take(),
                id,
                headers,
                encoding,
                binary: attrs
                    .remove(ATTR_PAYLOAD)
                    .and_then(|v| v.binary_value)
                    .map(Blob::into_inner),
                sent_timestamp: sys(MessageSystemAttributeName::SentTimestamp),
                receive_count: sys(MessageSystemAttributeName::ApproximateReceiveCount),
                group_id: sys(MessageSystemAttributeName::MessageGroupId),
            }
        }
    }
}
#[cfg(feature = "client")]
pub(crate) use client::*;
