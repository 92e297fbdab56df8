//! The stored message layout, `<enqueue ms>:<n>:<id><k>:<headers JSON><payload>`, and the
//! decoding of the receive script's reply, where another writer's value or a tampered
//! attempt count marks one delivery malformed, never the whole batch.

use super::*;

/// The part of a stored message the client writes: `<n>:<id><k>:<headers JSON><payload>`
/// (the send script puts `<enqueue ms>:` in front).
pub(crate) fn encode_body(m: &Message) -> Result<Vec<u8>> {
    let headers = if m.headers.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&m.headers).map_err(|e| QueueError::backend(BACKEND, e))?
    };
    let id = m.id.as_str();
    let mut b = Vec::with_capacity(id.len() + headers.len() + m.payload.len() + 24);
    b.extend_from_slice(format!("{}:", id.len()).as_bytes());
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(format!("{}:", headers.len()).as_bytes());
    b.extend_from_slice(headers.as_bytes());
    b.extend_from_slice(&m.payload);
    Ok(b)
}

/// A stored message, split: enqueue ms, id, headers JSON, and where the payload starts.
pub(crate) struct Parts<'a> {
    enqueued: u64,
    id: &'a [u8],
    headers: &'a [u8],
    payload_at: usize,
}

/// Splits `<t>:<n>:<id><k>:<headers><payload>`; `None` when the value is not in that form
/// (another writer's).
pub(crate) fn split_stored(v: &[u8]) -> Option<Parts<'_>> {
    fn number(v: &[u8], at: usize) -> Option<(u64, usize)> {
        let end = at + v.get(at..)?.iter().take(20).position(|b| *b == b':')?;
        let n = std::str::from_utf8(&v[at..end]).ok()?.parse().ok()?;
        Some((n, end + 1))
    }
    fn take(v: &[u8], at: usize, n: u64) -> Option<(&[u8], usize)> {
        let end = at.checked_add(usize::try_from(n).ok()?)?;
        Some((v.get(at..end)?, end))
    }
    let (enqueued, at) = number(v, 0)?;
    let (n, at) = number(v, at)?;
    let (id, at) = take(v, at, n)?;
    let (k, at) = number(v, at)?;
    let (headers, payload_at) = take(v, at, k)?;
    Some(Parts {
        enqueued,
        id,
        headers,
        payload_at,
    })
}

/// Decodes the RECEIVE script's reply.
pub(crate) fn decode_receive(queue: &str, raw: Vec<Value>) -> Result<(i64, i64, Vec<Delivery>)> {
    let bad = || QueueError::backend(BACKEND, "unexpected reply from the receive script");
    let mut it = raw.into_iter();
    let now: i64 = it
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(bad)?;
    let next: i64 = it
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(bad)?;
    let mut rest: Vec<Value> = it.collect();
    let mut out = Vec::with_capacity(rest.len() / 5);
    for f in rest.chunks_mut(5) {
        let [s, g, a, key, body] = f else {
            return Err(bad());
        };
        let text = |v: &Value| redis::from_redis_value::<String>(v.clone()).map_err(|_| bad());
        // The receipt and attempt must parse (the script wrote them); the message itself
        // came from its writer, maybe not this driver: what does not decode marks the
        // delivery malformed (with the whole stored value as its payload, for the DLQ)
        // instead of failing the whole receive.
        let receipt = receipt(format!("{}.{}", text(s)?, text(g)?));
        // The count comes from the `att` hash, which another writer can set to anything:
        // one that is not a count marks this delivery malformed, never the whole batch.
        let attempt_text = text(a)?;
        let attempt: Option<u32> = attempt_text.parse().ok().filter(|a| *a >= 1);
        // The value moves out of the reply: the payload is a slice of it, not a copy.
        let value = match std::mem::replace(body, Value::Nil) {
            Value::BulkString(b) => b,
            _ => return Err(bad()),
        };
        let mut broken = Vec::new();
        let absurd;
        if attempt.is_none() {
            absurd = format!("attempt count {attempt_text:?} is not a number from 1 to 4294967295");
            broken.push(absurd.as_str());
        }
        let attempt = attempt.unwrap_or(1);
        let (id, headers, enqueued, payload_at) = match split_stored(&value) {
            Some(p) => {
                let id = String::from_utf8(p.id.to_vec()).unwrap_or_else(|_| {
                    broken.push("id is not UTF-8");
                    format!("redis-{}", receipt_str(&receipt))
                });
                let headers: Headers = if p.headers.is_empty() {
                    Headers::new()
                } else {
                    serde_json::from_slice(p.headers).unwrap_or_else(|_| {
                        broken.push("headers are not a JSON object of strings");
                        Headers::new()
                    })
                };
                (id, headers, from_unix_millis(p.enqueued), p.payload_at)
            }
            None => {
                broken.push("not a message this driver wrote (<t>:<n>:<id><k>:<headers><payload>)");
                (
                    format!("redis-{}", receipt_str(&receipt)),
                    Headers::new(),
                    SystemTime::now(),
                    0,
                )
            }
        };
        let payload = queue_core::driver::Bytes::from(value).slice(payload_at..);
        let key = text(key)?;
        let mut d = Delivery::new(queue, MessageId::new(id), payload, receipt)
            .with_first_enqueued_at(first_enqueued(&headers, enqueued))
            .with_headers(headers)
            .with_attempt(attempt)
            .with_ordering_key((!key.is_empty()).then_some(key));
        if !broken.is_empty() {
            d = d.malformed(broken.join("; "));
        }
        out.push(d);
    }
    Ok((now, next, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_core::headers;

    fn reply(attempt: Value) -> Vec<Value> {
        let good = b"1700000000000:2:m10:".to_vec();
        vec![
            Value::Int(1_700_000_000_000),
            Value::Int(-1),
            // a delivery whose attempt count another writer set to something absurd...
            Value::BulkString(b"7".to_vec()),
            Value::Int(1),
            attempt,
            Value::BulkString(Vec::new()),
            Value::BulkString(good.clone()),
            // ...and a healthy one in the same batch
            Value::BulkString(b"8".to_vec()),
            Value::Int(1),
            Value::Int(2),
            Value::BulkString(b"k".to_vec()),
            Value::BulkString(good),
        ]
    }

    #[test]
    fn an_absurd_attempt_count_marks_one_delivery_malformed_not_the_batch() {
        for absurd in [
            Value::Int(i64::MIN),
            Value::Int(1 << 40),
            Value::Int(0),
            Value::BulkString(b"lots".to_vec()),
        ] {
            let (_, _, out) = decode_receive("q", reply(absurd.clone())).unwrap();
            assert_eq!(out.len(), 2, "{absurd:?}");
            let why = out[0].headers.get(headers::MALFORMED);
            assert!(
                why.is_some_and(|w| w.contains("attempt count")),
                "{absurd:?}: {why:?}"
            );
            assert!(!out[1].headers.contains_key(headers::MALFORMED));
            assert_eq!(out[1].attempt, 2);
        }
    }
}
