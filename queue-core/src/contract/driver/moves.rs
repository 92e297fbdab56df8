//! The copies the core's emulated moves write: a dead letter (with its reason in the
//! headers) and a redriven message (the dead-letter headers removed), and the times and
//! keys they carry across the move.

use std::time::SystemTime;

use super::DeadLetterReason;
use crate::message::{from_unix_millis, headers, unix_millis, Delivery, Message};

/// The message the default [`Driver::dead_letter`](crate::Driver::dead_letter) writes to the dead-letter queue.
pub fn dead_letter_copy(delivery: &Delivery, reason: &DeadLetterReason) -> Message {
    let mut h = delivery.headers.clone();
    h.insert(headers::DLQ_REASON.into(), reason.kind.as_str().into());
    h.insert(headers::DLQ_ERROR.into(), truncate(&reason.error, 1024));
    h.insert(headers::DLQ_ATTEMPTS.into(), reason.attempts.to_string());
    h.insert(headers::DLQ_SOURCE.into(), delivery.queue.clone());
    h.insert(
        headers::DLQ_AT.into(),
        unix_millis(SystemTime::now()).to_string(),
    );
    h.insert(
        headers::FIRST_ENQUEUED_AT.into(),
        unix_millis(delivery.first_enqueued_at).to_string(),
    );
    // The attempts are recorded in DLQ_ATTEMPTS; a redrive starts the count afresh.
    h.remove(headers::ATTEMPTS_BEFORE);
    // What the driver could not decode is in DLQ_ERROR now. The copy itself is a well-formed
    // message of the dead-letter queue: kept marked malformed, a DLQ processor's worker
    // would dead-letter it again (into a `-dlq-dlq` nobody made) instead of handing it over.
    h.remove(headers::MALFORMED);
    // Kept in a header, not as the dead letter's own key: see headers::DLQ_ORDERING_KEY.
    if let Some(k) = &delivery.ordering_key {
        h.insert(headers::DLQ_ORDERING_KEY.into(), k.clone());
    }
    Message {
        id: delivery.id.clone(),
        payload: delivery.payload.clone(),
        headers: h,
        delay: None,
        ordering_key: None,
        dedup_id: None,
        priority: None,
    }
}

/// The message the default [`Driver::redrive`](crate::Driver::redrive) sends back to the source queue: the
/// dead-letter headers removed, the first-enqueued time kept, the ordering key given back.
pub fn redriven_copy(d: Delivery) -> Message {
    let mut h = d.headers;
    let ordering_key = h.remove(headers::DLQ_ORDERING_KEY).or(d.ordering_key);
    for k in [
        headers::DLQ_REASON,
        headers::DLQ_ERROR,
        headers::DLQ_ATTEMPTS,
        headers::DLQ_SOURCE,
        headers::DLQ_AT,
        headers::MALFORMED,
        headers::ATTEMPTS_BEFORE,
    ] {
        h.remove(k);
    }
    h.insert(
        headers::FIRST_ENQUEUED_AT.into(),
        unix_millis(d.first_enqueued_at).to_string(),
    );
    h.insert(
        headers::REDRIVEN_AT.into(),
        unix_millis(SystemTime::now()).to_string(),
    );
    Message {
        id: d.id,
        payload: d.payload,
        headers: h,
        delay: None,
        ordering_key,
        dedup_id: None,
        priority: None,
    }
}

/// The first-enqueued time a driver should report: the [`headers::FIRST_ENQUEUED_AT`]
/// header when present (kept across dead-lettering and redrive), else `stored`.
pub fn first_enqueued(headers: &crate::Headers, stored: SystemTime) -> SystemTime {
    headers
        .get(headers::FIRST_ENQUEUED_AT)
        .and_then(|v| v.parse::<u64>().ok())
        .map(from_unix_millis)
        .unwrap_or(stored)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
