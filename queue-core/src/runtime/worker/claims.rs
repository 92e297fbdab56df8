//! The idempotency glue: claim a key before the handler runs, complete it before the
//! ack, release it after a failure.

use super::*;

pub(super) enum Claim {
    Run(Option<String>),
    Skip,
    Later,
}

pub(super) async fn claim(inner: &Inner, d: &Delivery) -> Claim {
    let Some((store, _)) = &inner.idempotency else {
        return Claim::Run(None);
    };
    let key = idempotency_key(d);
    let hold = inner
        .config
        .job_timeout
        .unwrap_or(inner.config.lease)
        .saturating_mul(2);
    match store.begin(&key, hold).await {
        Ok(Begin::Started) => Claim::Run(Some(key)),
        Ok(Begin::AlreadyDone) => Claim::Skip,
        Ok(Begin::InProgress) => Claim::Later,
        Err(e) => {
            // Without the store we cannot promise exactly-once effects: try again later
            // rather than risk a duplicate effect.
            backend_error(inner, "idempotency store failed", Some(&d.id), &e);
            Claim::Later
        }
    }
}

pub(super) fn idempotency_key(d: &Delivery) -> String {
    d.headers
        .get(headers::IDEMPOTENCY_KEY)
        .cloned()
        .unwrap_or_else(|| d.id.as_str().to_string())
}

pub(super) async fn release(inner: &Inner, key: Option<&str>) {
    if let (Some((store, _)), Some(key)) = (&inner.idempotency, key) {
        if let Err(e) = store.release(key).await {
            backend_error(inner, "could not release idempotency key", None, &e);
        }
    }
}
