//! Limits and errors: sizes and delays at their edge, stats, typed errors, unknown
//! queues, delete and purge.

use std::time::Duration;

use super::Harness;
use crate::{DeadLetterKind, DeadLetterReason, Message, QueueError, QueueStats};

/// A message over the limit is a typed error before any network call; one at the limit
/// goes through intact.
pub async fn oversize_refused(h: &Harness) {
    let c = h.fresh("oversize_refused").await;
    let max = c.caps.max_message_size;
    let r = c.producer().send(Message::new(vec![7u8; max + 1])).await;
    match r {
        Err(QueueError::Oversize { size, max: m, .. }) => {
            assert_eq!(size, max + 1);
            assert_eq!(m, max);
        }
        other => panic!("oversize message: want Oversize, got {other:?}"),
    }
    let at_limit = Message::new(vec![7u8; max.saturating_sub(10)]).header("h", "1234567");
    assert_eq!(at_limit.encoded_size(), max.saturating_sub(10) + 8);
    c.producer()
        .send(at_limit)
        .await
        .expect("a message under the declared limit must be accepted");
    let got = c.collect(&c.q, 1, c.within(), c.unit * 50).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.len(), max.saturating_sub(10));
    c.q.ack(&c.name, &[got[0].receipt.clone()])
        .await
        .expect("ack");
}

/// Ready / in-flight / delayed / dead counts match what the test did.
pub async fn stats_agree(h: &Harness) {
    let c = h.fresh("stats_agree").await;
    c.stats_eventually(QueueStats::default()).await;
    c.send_n(3).await;
    let delayed = if c.caps.max_delay.is_some() {
        let far = c.unit * 100;
        c.producer()
            .send_batch(vec![
                Message::new("d1").delay(far),
                Message::new("d2").delay(far),
            ])
            .await
            .expect("send delayed");
        2
    } else {
        0
    };
    let got = c.collect(&c.q, 2, c.within(), c.unit * 100).await;
    assert_eq!(got.len(), 2);
    let reason = DeadLetterReason::new(DeadLetterKind::Permanent, "test", 1);
    c.q.dead_letter(&got[0], &reason)
        .await
        .expect("dead_letter");
    c.stats_eventually(QueueStats::new(1, 1, delayed, 1)).await;
    if !c.per_message_lease() {
        return;
    }
    // A lease that ended is not in flight any more: its message is ready again.
    let short = c.collect(&c.q, 1, c.within(), c.unit * 3).await;
    assert_eq!(short.len(), 1);
    if c.caps.exact_stats {
        c.stats_eventually(QueueStats::new(0, 2, delayed, 1)).await;
    }
    tokio::time::sleep(c.unit * 3 + c.caps.timer_granularity + c.unit).await;
    c.stats_eventually(QueueStats::new(1, 1, delayed, 1)).await;
}

/// Unknown schemes, malformed URLs, unreachable servers and bad credentials are typed
/// errors, not panics or hangs.
pub async fn backend_errors_typed(h: &Harness) {
    let c = h.fresh("backend_errors_typed").await;
    let r = crate::connect("nosuchscheme://x").await;
    assert!(
        matches!(r, Err(QueueError::UnknownScheme { .. })),
        "unknown scheme: want UnknownScheme, got {r:?}"
    );
    let r = crate::connect("::not a url").await;
    assert!(
        matches!(r, Err(QueueError::InvalidUrl { .. })),
        "malformed URL: want InvalidUrl, got {r:?}"
    );
    let _ = c;
    for url in &h.bad_urls {
        let attempt = async {
            let q = crate::connect(url).await?.queue("ct-bad-url");
            q.create().await?;
            q.send(Message::new("x")).await.map(|_| ())
        };
        let r = tokio::time::timeout(Duration::from_secs(60), attempt)
            .await
            .unwrap_or_else(|_| panic!("{url}: want a typed error within 60 s, got none"));
        match r {
            Err(
                QueueError::Connection { .. }
                | QueueError::Auth { .. }
                | QueueError::InvalidUrl { .. }
                | QueueError::Timeout(_),
            ) => {}
            other => panic!("{url}: want a Connection/Auth/InvalidUrl error, got {other:?}"),
        }
    }
}

/// Every primitive on a queue that does not exist is `UnknownQueue`: send, receive,
/// stats, purge, and ack/nack/extend with an otherwise valid receipt.
pub async fn unknown_queue_typed(h: &Harness) {
    let c = h.fresh("unknown_queue_typed").await;
    c.send_n(1).await;
    let got = c.collect(&c.q, 1, c.within(), c.unit * 50).await;
    assert_eq!(got.len(), 1);
    let receipt = &got[0].receipt;
    let missing = h.queue_name("missing");
    let unknown = |what: &str, r: crate::Result<()>| {
        assert!(
            matches!(r, Err(QueueError::UnknownQueue(ref q)) if q.is_empty() || *q == missing),
            "{what} on a missing queue: want UnknownQueue({missing:?}), got {r:?}"
        );
    };
    unknown(
        "send",
        c.q.send(&missing, vec![Message::new("x")])
            .await
            .map(|_| ()),
    );
    unknown(
        "receive",
        c.q.receive(&missing, c.opts(1, c.unit, c.unit))
            .await
            .map(|_| ()),
    );
    unknown("stats", c.q.stats(&missing).await.map(|_| ()));
    if c.caps.purge {
        unknown("purge", c.q.purge(&missing).await);
    }
    unknown(
        "ack",
        c.q.ack(&missing, std::slice::from_ref(receipt)).await,
    );
    unknown("nack", c.q.nack(&missing, receipt, Duration::ZERO).await);
    if c.caps.can_extend() {
        unknown("extend", c.q.extend(&missing, receipt, c.unit * 10).await);
    }
    // Deleting what does not exist is fine.
    if c.caps.purge {
        c.q.delete_queue(&missing)
            .await
            .unwrap_or_else(|e| panic!("delete_queue of a missing queue: want Ok, got {e}"));
    }
    c.ack(&got[0]).await;
}

/// Declared limits hold at their edge: a message of exactly `max_message_size` goes
/// through intact and one byte more is refused; a delay of exactly `max_delay`, a nack
/// delay of `max_nack_delay` and a lease of `max_lease` are accepted without overflow.
pub async fn limits_at_edge(h: &Harness) {
    let c = h.fresh("limits_at_edge").await;
    let max = c.caps.max_message_size;
    let exact: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let m = Message::new(exact.clone());
    assert_eq!(m.encoded_size(), max);
    c.producer().send(m).await.unwrap_or_else(|e| {
        panic!("a message of exactly max_message_size ({max}): want Ok, got {e}")
    });
    let r = c.producer().send(Message::new(vec![1u8; max + 1])).await;
    assert!(
        matches!(r, Err(QueueError::Oversize { .. })),
        "one byte over max_message_size: want Oversize, got {r:?}"
    );
    let got = c.collect(&c.q, 1, c.within(), c.unit * 50).await;
    assert_eq!(got.len(), 1, "want the largest message back");
    assert!(
        got[0].payload[..] == exact[..],
        "want the largest message intact, got {} bytes",
        got[0].payload.len()
    );
    // A nack delay of exactly max_nack_delay.
    if let Some(max_nack) = c.caps.max_nack_delay {
        c.q.nack(&c.name, &got[0].receipt, max_nack)
            .await
            .unwrap_or_else(|e| {
                panic!("nack delay of max_nack_delay ({max_nack:?}): want Ok, got {e}")
            });
    } else {
        c.ack(&got[0]).await;
    }
    c.producer()
        .send(Message::new("long lease"))
        .await
        .expect("send");
    let leased = c.collect(&c.q, 1, c.within(), c.caps.max_lease).await;
    assert_eq!(
        leased.len(),
        1,
        "a receive with a lease of max_lease: want the message"
    );
    c.ack(&leased[0]).await;
    if let Some(max_delay) = c.caps.max_delay {
        c.producer()
            .send(Message::new("far").delay(max_delay))
            .await
            .unwrap_or_else(|e| {
                panic!("delay of exactly max_delay ({max_delay:?}): want Ok, got {e}")
            });
        // (A backend declaring `Duration::MAX` has no delay past its maximum to refuse.)
        if let Some(too_far) = max_delay.checked_add(Duration::from_millis(1)) {
            let r = c
                .producer()
                .send(Message::new("too far").delay(too_far))
                .await;
            assert!(
                matches!(r, Err(QueueError::Unsupported { .. })),
                "a delay past max_delay: want Unsupported, got {r:?}"
            );
        }
    }
    let early =
        c.q.receive(&c.name, c.opts(10, c.unit * 2, c.unit * 10))
            .await
            .expect("receive");
    assert!(
        early.is_empty(),
        "want nothing visible (a nack of max_nack_delay and a send of max_delay), got {} message(s)",
        early.len()
    );
}

/// `purge` removes every message of a queue (ready, delayed and leased) but not its dead
/// letters; `delete_queue` removes the queue and its dead-letter queue, after which the
/// queue is unknown until created again (empty).
pub async fn delete_and_purge(h: &Harness) {
    let c = h.fresh("delete_and_purge").await;
    c.send_n(4).await;
    let delayed = c.caps.max_delay.is_some();
    if delayed {
        c.producer()
            .send(Message::new("later").delay(c.unit * 100))
            .await
            .expect("send delayed");
    }
    let leased = c.collect(&c.q, 1, c.within(), c.unit * 100).await;
    assert_eq!(leased.len(), 1);
    let more = c.collect(&c.q, 1, c.within(), c.unit * 100).await;
    let reason = DeadLetterReason::new(DeadLetterKind::Permanent, "kept", 1);
    c.q.dead_letter(&more[0], &reason)
        .await
        .expect("dead_letter");
    let r = c.q.purge(&c.name).await;
    if !c.caps.purge {
        assert!(
            matches!(r, Err(QueueError::Unsupported { .. })),
            "purge where not declared: want Unsupported, got {r:?}"
        );
        let r = c.q.delete_queue(&c.name).await;
        assert!(
            matches!(r, Err(QueueError::Unsupported { .. })),
            "delete_queue where purge is not declared: want Unsupported, got {r:?}"
        );
        return;
    }
    r.expect("purge");
    let left =
        c.q.receive(&c.name, c.opts(10, c.unit * 3, c.unit * 10))
            .await
            .expect("receive after purge");
    assert!(
        left.is_empty(),
        "after purge: want no message, got {} (ready or leased ones survived)",
        left.len()
    );
    if c.caps.exact_stats {
        c.stats_eventually(QueueStats::new(0, 0, 0, 1)).await;
    }
    let dead = c.dlq_contents(1).await;
    assert_eq!(
        dead.len(),
        1,
        "purge must leave the dead-letter queue alone"
    );
    c.q.delete_queue(&c.name).await.expect("delete_queue");
    let r = c.q.send(&c.name, vec![Message::new("x")]).await;
    assert!(
        matches!(r, Err(QueueError::UnknownQueue(_))),
        "send after delete_queue: want UnknownQueue, got {r:?}"
    );
    let r = c.q.stats(&c.name).await;
    assert!(
        matches!(r, Err(QueueError::UnknownQueue(_))),
        "stats after delete_queue: want UnknownQueue, got {r:?}"
    );
    let dlq = c.q.dead_letter_queue(&c.name);
    let r = c.q.stats(&dlq).await;
    assert!(
        matches!(r, Err(QueueError::UnknownQueue(_))),
        "stats of the dead-letter queue after delete_queue: want UnknownQueue (deleted with its queue), got {r:?}"
    );
    c.q.delete_queue(&c.name)
        .await
        .expect("delete_queue twice: want Ok");
    c.q.create_queue(&c.name).await.expect("create again");
    let r =
        c.q.receive(&c.name, c.opts(10, c.unit * 2, c.unit * 10))
            .await;
    assert!(
        matches!(&r, Ok(v) if v.is_empty()),
        "a re-created queue: want it empty, got {r:?}"
    );
    let r = c.q.receive(&dlq, c.opts(10, c.unit * 2, c.unit * 10)).await;
    assert!(
        matches!(&r, Ok(v) if v.is_empty()),
        "a re-created queue's dead-letter queue: want it empty (the old dead letters went with delete_queue), got {r:?}"
    );
}

/// Ordering keys and dedup ids at the declared edge ([`Capabilities::max_key_len`] and
/// [`Capabilities::key_chars`](crate::Capabilities::key_chars)): a key exactly as long as
/// declared (1,000 bytes where unbounded), made of the odd characters the backend
/// declares it takes (separators, braces, spaces, newlines, non-ASCII where allowed),
/// goes through and comes back intact; one byte more, a character outside the declared
/// set, or an empty key is refused with `InvalidOption` before anything is sent.
///
/// [`Capabilities::max_key_len`]: crate::Capabilities::max_key_len
pub async fn keys_at_edge(h: &Harness) {
    use crate::driver::{KeyChars, Ordering};
    let c = h.fresh("keys_at_edge").await;
    let p = c.producer();
    let (chars, max) = (c.caps.key_chars, c.caps.max_key_len);
    let odd: &[char] = match chars {
        KeyChars::PrintableAscii => &['a', '|', ':', '{', '}', '~', '!', '#', '-', '0'],
        KeyChars::NoNul => &['a', '|', ':', '{', '}', ' ', '\n', 'é', '€', '\t'],
        _ => &['a', '|', ':', '{', '}', ' ', '\n', 'é', '\0', '€'],
    };
    let len = max.unwrap_or(1000);
    let mut edge = String::new();
    for ch in odd.iter().cycle() {
        if edge.len() >= len {
            break;
        }
        edge.push(if edge.len() + ch.len_utf8() <= len {
            *ch
        } else {
            'a'
        });
    }
    assert_eq!(edge.len(), len);
    let refused = |what: &str, r: crate::Result<crate::MessageId>| {
        assert!(
            matches!(r, Err(QueueError::InvalidOption(_))),
            "{what}: want InvalidOption before sending, got {r:?}"
        );
    };
    let outside = match chars {
        KeyChars::PrintableAscii => Some("a b"),
        KeyChars::NoNul => Some("a\0b"),
        _ => None,
    };
    // Each kind of key the backend takes: its name, how a message gets it, the payload.
    type SetKey = fn(Message, String) -> Message;
    let kinds: [(&str, SetKey, bool, &str); 2] = [
        (
            "ordering key",
            |m, k| m.ordering_key(k),
            c.caps.ordering != Ordering::None,
            "edge-key",
        ),
        (
            "dedup id",
            |m, k| m.dedup_id(k),
            c.caps.dedup_window.is_some(),
            "edge-dedup",
        ),
    ];
    let mut sent = 0;
    for (what, set, _, payload) in kinds.iter().filter(|k| k.2) {
        p.send(set(Message::new(*payload), edge.clone()))
            .await
            .unwrap_or_else(|e| panic!("a {what} of {len} bytes: want Ok, got {e}"));
        sent += 1;
        let try_key = |k: String| p.send(set(Message::new("x"), k));
        refused(&format!("an empty {what}"), try_key(String::new()).await);
        if let Some(max) = max {
            refused(
                &format!("a {what} one byte too long"),
                try_key("a".repeat(max + 1)).await,
            );
        }
        if let Some(bad) = outside {
            refused(
                &format!("a {what} outside the declared characters"),
                try_key(bad.to_string()).await,
            );
        }
    }
    let got = c.collect(&c.q, sent, c.within(), c.unit * 50).await;
    let mut names: Vec<String> = got
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();
    names.sort();
    let mut want: Vec<&str> = Vec::new();
    if c.caps.dedup_window.is_some() {
        want.push("edge-dedup");
    }
    if c.caps.ordering != Ordering::None {
        want.push("edge-key");
    }
    assert_eq!(
        names, want,
        "want only the messages at the edge, none of the refused"
    );
    for d in &got {
        if d.payload[..] == b"edge-dedup"[..] {
            // A message sent with a dedup id has that id as its message id.
            assert!(
                d.id.as_str() == edge,
                "the dedup id at the edge came back altered as the message id ({} bytes)",
                d.id.as_str().len()
            );
        }
        if d.payload[..] == b"edge-key"[..] {
            assert!(
                d.ordering_key.as_deref() == Some(edge.as_str()),
                "the ordering key at the edge came back altered: {:?}",
                d.ordering_key
                    .as_deref()
                    .map(|k| (k.len(), k.chars().take(20).collect::<String>()))
            );
        }
        c.ack(d).await;
    }
}
