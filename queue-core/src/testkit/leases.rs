//! Leases: nack delays, lease expiry, extension, stale receipts, delayed sends.

use std::time::Duration;

use super::Harness;
use crate::{driver, LeaseModel, Message, QueueError};

/// A nacked message comes back after its delay, not before, with attempt + 1.
pub async fn nack_redelivers_after_delay(h: &Harness) {
    let c = h.fresh("nack_redelivers_after_delay").await;
    c.send_n(1).await;
    let got = c.collect(&c.q, 1, c.within(), c.unit * 20).await;
    assert_eq!(got.len(), 1);
    let delay = if c.caps.max_nack_delay.is_some() {
        c.unit * 3
    } else {
        Duration::ZERO
    };
    let t0 = tokio::time::Instant::now();
    c.q.nack(&c.name, &got[0].receipt, delay)
        .await
        .expect("nack");
    if !delay.is_zero() {
        let early =
            c.q.receive(&c.name, c.opts(1, c.unit, c.unit * 20))
                .await
                .expect("receive");
        assert!(
            early.is_empty(),
            "nacked message came back before its delay"
        );
    }
    let back = c.collect(&c.q, 1, c.within(), c.unit * 20).await;
    assert_eq!(back.len(), 1, "nacked message never came back");
    assert!(
        t0.elapsed() + c.caps.timer_granularity >= delay,
        "came back after {:?}, delay was {delay:?}",
        t0.elapsed()
    );
    assert_eq!(back[0].id, got[0].id);
    assert_eq!(back[0].attempt, 2, "redelivery must be attempt 2");
    c.ack(&back[0]).await;
}

/// An unsettled delivery comes back after its lease (per-message leases), or after its
/// consumer leaves (session leases).
pub async fn lease_expiry_redelivers(h: &Harness) {
    let c = h.fresh("lease_expiry_redelivers").await;
    c.send_n(1).await;
    let lease = c.unit * 3;
    if c.per_message_lease() {
        let got = c.collect(&c.q, 1, c.within(), lease).await;
        assert_eq!(got.len(), 1);
        let t0 = tokio::time::Instant::now();
        let hidden =
            c.q.receive(&c.name, c.opts(1, c.unit, lease))
                .await
                .expect("receive");
        assert!(
            hidden.is_empty(),
            "leased message visible before its lease ended"
        );
        let back = c.collect(&c.q, 1, c.within(), lease).await;
        assert_eq!(back.len(), 1, "message never came back after its lease");
        assert!(t0.elapsed() + c.caps.timer_granularity * 2 >= lease - c.unit);
        assert_eq!(back[0].id, got[0].id);
        assert_eq!(
            back[0].attempt, 2,
            "redelivery after lease must be attempt 2"
        );
        c.ack(&back[0]).await;
    } else {
        let first = h.driver().await;
        let got = c.collect(&first, 1, c.within(), lease).await;
        assert_eq!(got.len(), 1);
        drop(first); // the consumer dies without acking
        let second = h.driver().await;
        let back = c.collect(&second, 1, c.within() * 2, lease).await;
        assert_eq!(
            back.len(),
            1,
            "message not redelivered after its consumer left"
        );
        assert_eq!(back[0].id, got[0].id);
        second
            .ack(&c.name, &[back[0].receipt.clone()])
            .await
            .expect("ack");
    }
}

/// An extended lease keeps the message hidden past the original lease; a backend that
/// cannot extend refuses with a typed error.
pub async fn extend_keeps_hidden(h: &Harness) {
    let c = h.fresh("extend_keeps_hidden").await;
    c.send_n(1).await;
    // Long enough that the extend below lands inside it even on a loaded server.
    let lease = c.unit * 8;
    let got = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(got.len(), 1);
    // Far past the other consumer's wait below, which a slow server may overshoot by
    // several seconds (moto answers a 16 s long poll after about 22 s).
    let r = c.q.extend(&c.name, &got[0].receipt, c.unit * 40).await;
    match c.caps.lease {
        LeaseModel::PerMessage { extend: false } => {
            assert!(
                matches!(r, Err(QueueError::Unsupported { .. })),
                "extend not declared, must be Unsupported: {r:?}"
            );
            return;
        }
        _ => r.expect("extend"),
    }
    if c.per_message_lease() {
        let other = h.driver().await;
        let seen = other
            .receive(&c.name, c.opts(1, lease * 2, lease))
            .await
            .expect("receive");
        assert!(
            seen.is_empty(),
            "extended message was delivered to another consumer"
        );
    } else {
        // Session leases: no other member joins (joining would rebalance the partition
        // away); past the would-be lease the delivery is still ours to ack.
        tokio::time::sleep(lease * 2).await;
        c.q.extend(&c.name, &got[0].receipt, c.unit * 12)
            .await
            .expect("extend again");
    }
    c.q.ack(&c.name, &[got[0].receipt.clone()])
        .await
        .expect("ack after extended lease");
}

/// A delayed message is not delivered before its time (or delays are refused).
pub async fn delayed_send_not_early(h: &Harness) {
    let c = h.fresh("delayed_send_not_early").await;
    let delay = c.unit * 4;
    let m = Message::new("later").delay(delay);
    if c.caps.max_delay.is_none() {
        let r = c.producer().send(m).await;
        assert!(matches!(r, Err(QueueError::Unsupported { .. })), "{r:?}");
        return;
    }
    let t0 = tokio::time::Instant::now();
    c.producer().send(m).await.expect("send delayed");
    let early =
        c.q.receive(&c.name, c.opts(1, c.unit * 2, c.unit * 20))
            .await
            .expect("receive");
    assert!(early.is_empty(), "delayed message delivered early");
    let got = c.collect(&c.q, 1, c.within(), c.unit * 20).await;
    assert_eq!(got.len(), 1, "delayed message never delivered");
    assert!(
        t0.elapsed() + c.caps.timer_granularity >= delay,
        "delivered after {:?}, delay {delay:?}",
        t0.elapsed()
    );
    assert_eq!(got[0].attempt, 1);
    c.ack(&got[0]).await;
}

/// A receipt whose lease ended is refused by `ack`, `nack` and `extend` with
/// `ReceiptExpired`, and settles nothing: the consumer that leased the message since keeps
/// it. A receipt the driver never issued is refused too.
pub async fn stale_receipt_refused(h: &Harness) {
    let c = h.fresh("stale_receipt_refused").await;
    let forged = driver::receipt("not-a-receipt-of-this-driver");
    let r = c.q.ack(&c.name, std::slice::from_ref(&forged)).await;
    assert!(
        matches!(
            r,
            Err(QueueError::InvalidReceipt { .. } | QueueError::ReceiptExpired)
        ),
        "ack with a forged receipt: want InvalidReceipt, got {r:?}"
    );
    if !c.per_message_lease() || !c.caps.stale_receipts_refused {
        // Session leases: a receipt stays valid while the session lasts. Backends that do
        // not declare `stale_receipts_refused` (SQS) are only checked for forged ones.
        return;
    }
    c.send_n(1).await;
    let lease = c.unit * 3;
    let first = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(first.len(), 1);
    // The lease runs out. Nobody has received the message again, yet the receipt is
    // stale: the message belongs to the queue again.
    tokio::time::sleep(lease + c.caps.timer_granularity * 2 + c.unit).await;
    let r =
        c.q.ack(&c.name, std::slice::from_ref(&first[0].receipt))
            .await;
    assert!(
        matches!(r, Err(QueueError::ReceiptExpired)),
        "ack after the lease ended: want ReceiptExpired, got {r:?}"
    );
    // Another consumer leases the message (the refused ack settled nothing).
    let other = h.driver().await;
    let second = c.collect(&other, 1, c.within(), c.unit * 100).await;
    assert_eq!(
        second.len(),
        1,
        "want the message back after its lease ended"
    );
    assert_eq!(second[0].id, first[0].id);
    let stale = &first[0].receipt;
    let r = c.q.ack(&c.name, std::slice::from_ref(stale)).await;
    assert!(
        matches!(r, Err(QueueError::ReceiptExpired)),
        "ack with a stale receipt: want ReceiptExpired, got {r:?}"
    );
    let r = c.q.nack(&c.name, stale, Duration::ZERO).await;
    assert!(
        matches!(r, Err(QueueError::ReceiptExpired)),
        "nack with a stale receipt: want ReceiptExpired, got {r:?}"
    );
    if c.caps.can_extend() {
        let r = c.q.extend(&c.name, stale, c.unit * 100).await;
        assert!(
            matches!(r, Err(QueueError::ReceiptExpired)),
            "extend with a stale receipt: want ReceiptExpired, got {r:?}"
        );
    }
    // The stale calls changed nothing: the message is still leased to the other consumer.
    let third = h.driver().await;
    let seen = third
        .receive(&c.name, c.opts(1, c.unit * 2, c.unit * 10))
        .await
        .expect("receive");
    assert!(
        seen.is_empty(),
        "want the message still leased to its current consumer, but a stale receipt released it"
    );
    other
        .ack(&c.name, std::slice::from_ref(&second[0].receipt))
        .await
        .unwrap_or_else(|e| panic!("ack by the current consumer: want Ok, got {e}"));
    if c.caps.exact_stats {
        c.stats_eventually(crate::QueueStats::default()).await;
    }
}

/// A delivery given back (its handler never ran) keeps its attempt where the backend
/// declares it; a nack still counts one.
pub async fn give_back_keeps_attempt(h: &Harness) {
    let c = h.fresh("give_back_keeps_attempt").await;
    c.send_n(1).await;
    let lease = c.unit * 50;
    let first = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    c.q.give_back(&first[0], Duration::ZERO)
        .await
        .expect("give_back");
    let again = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(again.len(), 1, "want the message back after give_back");
    let want = if c.caps.give_back_keeps_attempt { 1 } else { 2 };
    assert_eq!(
        again[0].attempt, want,
        "after a give-back: want attempt {want}, got {}",
        again[0].attempt
    );
    c.q.nack(&c.name, &again[0].receipt, Duration::ZERO)
        .await
        .expect("nack");
    let third = c.collect(&c.q, 1, c.within(), lease).await;
    assert_eq!(third.len(), 1, "want the message back after nack");
    assert_eq!(
        third[0].attempt,
        want + 1,
        "after a nack: want attempt {}, got {}",
        want + 1,
        third[0].attempt
    );
    c.ack(&third[0]).await;
}
