//! The check every send goes through before any network call: the framework's reserved
//! headers, size, delay, priority, ordering and dedup against the backend's capabilities.

use super::{keys, Capabilities, Ordering};
use crate::error::{QueueError, Result};
use crate::message::{headers, Message};

/// Checks a message against a backend's declared capabilities, before any network call.
/// Every send through a [`crate::Queue`] handle goes through it; drivers need not repeat
/// it.
pub fn validate(caps: &Capabilities, backend: &'static str, m: &Message) -> Result<()> {
    if m.headers.contains_key(headers::DEBOUNCE)
        && [headers::FLOW, headers::BATCH, headers::BATCH_CALLBACK]
            .iter()
            .any(|h| m.headers.contains_key(*h))
    {
        return Err(QueueError::InvalidOption(
            "a debounced job cannot be a flow's or batch's job (a superseded one would never \
             settle its place)"
                .into(),
        ));
    }
    for (k, v) in &m.headers {
        if !k.starts_with("x-queue-") {
            continue;
        }
        match k.as_str() {
            headers::IDEMPOTENCY_KEY => {}
            headers::UNIQUE if crate::unique::valid_header(v) => {}
            headers::FLOW if crate::flow::parse_header(v).is_some() => {}
            headers::FLOW_FAILED => {}
            headers::BATCH | headers::BATCH_CALLBACK if crate::batch::valid_header(k, v) => {}
            headers::DEBOUNCE if crate::debounce::valid_header(v) => {}
            headers::MAX_ATTEMPTS if v.parse::<u32>().is_ok_and(|n| n >= 1) => {}
            headers::MAX_ATTEMPTS => {
                return Err(QueueError::InvalidOption(format!(
                    "header {k}={v:?}: must be a whole number of at least 1"
                )))
            }
            _ => {
                return Err(QueueError::InvalidOption(format!(
                    "header {k:?} is reserved for the framework (names starting with x-queue-)"
                )))
            }
        }
    }
    let size = m.encoded_size();
    if size > caps.max_message_size {
        return Err(QueueError::Oversize {
            size,
            max: caps.max_message_size,
            backend,
        });
    }
    if m.ordering_key.is_some() && caps.ordering == Ordering::None {
        return Err(QueueError::unsupported(backend, "ordering keys"));
    }
    if m.dedup_id.is_some() && caps.dedup_window.is_none() {
        return Err(QueueError::unsupported(backend, "deduplication ids"));
    }
    if let Some(k) = &m.ordering_key {
        keys::check(caps, backend, "ordering key", k)?;
    }
    if let Some(k) = &m.dedup_id {
        keys::check(caps, backend, "dedup id", k)?;
    }
    if m.priority.is_some() && !caps.priority {
        return Err(QueueError::unsupported(backend, "priorities"));
    }
    if let Some(delay) = m.delay {
        match caps.max_delay {
            None if !delay.is_zero() => {
                return Err(QueueError::unsupported(backend, "delayed delivery"))
            }
            Some(max) if delay > max => {
                return Err(QueueError::unsupported(
                    backend,
                    format!("delays over {max:?} (asked for {delay:?})"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers_are_refused_on_send() {
        let caps = Capabilities::baseline();
        let ok = Message::new("x")
            .header(headers::IDEMPOTENCY_KEY, "k")
            .header(headers::MAX_ATTEMPTS, "3")
            .header("trace-id", "t");
        validate(&caps, "test", &ok).unwrap();
        for (k, v) in [
            (headers::MALFORMED, "spoofed"),
            (headers::FIRST_ENQUEUED_AT, "0"),
            (headers::DLQ_REASON, "permanent"),
            (headers::MAX_ATTEMPTS, "0"),
            (headers::MAX_ATTEMPTS, "lots"),
        ] {
            let r = validate(&caps, "test", &Message::new("x").header(k, v));
            assert!(
                matches!(r, Err(QueueError::InvalidOption(_))),
                "{k}={v}: {r:?}"
            );
        }
    }
}
