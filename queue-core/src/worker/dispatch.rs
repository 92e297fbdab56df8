//! Running one delivery or one batch: decoding, the per-key line, supervision (lease
//! heartbeats, the job timeout, panics, forced shutdown), and handing the outcome to
//! settlement.

use super::*;

/// What a handler run ended as.
pub(super) enum Ran {
    Done(Vec<(usize, Failure)>),
    /// Shutdown forced: return everything.
    Forced,
}

/// Runs `fut` with lease heartbeats for `receipts`, the job timeout, panic capture and
/// shutdown forcing. `Ok` carries the handler's output.
pub(super) async fn supervise<T: Send + 'static>(
    inner: &Inner,
    receipts: &[&Receipt],
    fut: BoxFut<T>,
    mut force: watch::Receiver<bool>,
    job_timeout: Option<Duration>,
) -> Result<T, Option<Failure>> {
    let mut guard = AbortOnDrop(tokio::spawn(fut));
    let handle = &mut guard.0;
    let lease = inner.config.lease;
    let extend = matches!(inner.caps.lease, LeaseModel::PerMessage { extend: true });
    let beat = (lease / 3).max(inner.caps.timer_granularity);
    let now = tokio::time::Instant::now();
    let mut next_beat = now + beat;
    let timeout_at = job_timeout.map(|t| now + t);
    loop {
        tokio::select! {
            r = &mut *handle => {
                return r.map_err(|e| Some(Failure::retryable(if e.is_panic() {
                    format!("handler panicked: {}", panic_message(e.into_panic()))
                } else {
                    "handler task was cancelled".to_string()
                })));
            }
            _ = tokio::time::sleep_until(next_beat), if extend => {
                next_beat += beat;
                for r in receipts {
                    if let Err(e) = inner.driver.extend(&inner.name, r, lease).await {
                        backend_error(inner, "lease extension failed", None, &e);
                    }
                }
            }
            _ = tokio::time::sleep_until(timeout_at.unwrap_or_else(tokio::time::Instant::now)), if timeout_at.is_some() => {
                handle.abort();
                let t = job_timeout.unwrap_or_default();
                return Err(Some(Failure {
                    error: format!("job timed out after {t:?}"),
                    permanent: false,
                    kind: DeadLetterKind::Timeout,
                    retry_after: None,
                }));
            }
            _ = forced(&mut force) => {
                handle.abort();
                return Err(None);
            }
        }
    }
}

/// The text of a panic's payload.
pub(super) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// Aborts the handler task when its supervisor is dropped (worker aborted or crashed), so
/// no handler outlives its worker.
pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes once shutdown is forced; never, if the sender is gone without forcing.
pub(super) async fn forced(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A delivery's place in its ordering key's line: it waits for its predecessor (received
/// earlier by this worker) to settle, and tells its successor when it has settled.
#[derive(Default)]
pub(super) struct Turn {
    pub(super) after: Option<oneshot::Receiver<bool>>,
    pub(super) done: Option<oneshot::Sender<bool>>,
}

pub(super) async fn run_one(
    inner: Arc<Inner>,
    d: Delivery,
    _permit: OwnedSemaphorePermit,
    force: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<Receipt>,
    turn: Turn,
) {
    let (job_name, prepared) = prepare(&inner, &d);
    let span = tracing::info_span!("job", queue = %inner.name, id = %d.id, job = %job_name, attempt = d.attempt);
    let settled = run_one_inner(&inner, &d, force, &acks, turn.after, job_name, prepared)
        .instrument(span)
        .await;
    if let Some(done) = turn.done {
        let _ = done.send(settled);
    }
}

/// Runs and settles one delivery; true when it was acked or dead-lettered (its successor
/// with the same ordering key may go), false when it went back to the queue.
pub(super) async fn run_one_inner(
    inner: &Inner,
    d: &Delivery,
    force: watch::Receiver<bool>,
    acks: &mpsc::UnboundedSender<Receipt>,
    after: Option<oneshot::Receiver<bool>>,
    job_name: String,
    prepared: Prepared,
) -> bool {
    let started = Instant::now();
    record_wait(inner, d, &job_name);
    let (fut, policy) = match prepared {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable message, dead-lettering");
            return settle_failure(
                inner,
                d,
                Failure::malformed(&e),
                RetryPolicy::none(),
                &job_name,
            )
            .await;
        }
    };
    // Wait for this key's predecessor (still running here) before anything else, keeping
    // the lease alive meanwhile: the job timeout and the idempotency claim start only
    // when the handler can start. On a per-key backend (SQS FIFO), a successor must not
    // overtake a predecessor that went back to the queue: it goes back too, and the
    // backend redelivers both in order. On a per-partition backend retries leave the
    // partition anyway, so it proceeds.
    if let Some(after) = after {
        let strict = inner.caps.ordering == crate::Ordering::PerKey;
        let wait = async move { after.await.unwrap_or(false) };
        let go = match supervise(inner, &[&d.receipt], Box::pin(wait), force.clone(), None).await {
            Ok(settled) => settled || !strict,
            Err(_) => false, // shutdown forced while waiting
        };
        if !go {
            give_back(inner, d).await;
            return false;
        }
    }
    let key = match claim(inner, d).await {
        Claim::Run(key) => key,
        Claim::Skip => {
            bump(&inner.counters.duplicates_skipped);
            let _ = acks.send(d.receipt.clone());
            return true;
        }
        Claim::Later => {
            // Another worker is running this key: look again after a lease.
            let delay = clamp_delay(&inner.caps, inner.config.lease);
            if let Err(e) = inner.driver.give_back(&inner.name, &d.receipt, delay).await {
                backend_error(inner, "could not defer message", Some(&d.id), &e);
            }
            return false;
        }
    };
    let timeout = inner.config.job_timeout;
    let ran = match supervise(inner, &[&d.receipt], fut(), force, timeout).await {
        Ok(Ok(())) => Ran::Done(vec![]),
        Ok(Err(e)) => Ran::Done(vec![(0, Failure::from_job(e))]),
        Err(Some(f)) => Ran::Done(vec![(0, f)]),
        Err(None) => Ran::Forced,
    };
    metrics::histogram!("queue_job_duration_seconds", "queue" => inner.name.clone(), "job" => job_name.clone())
        .record(started.elapsed().as_secs_f64());
    match ran {
        Ran::Forced => {
            release(inner, key.as_deref()).await;
            give_back(inner, d).await;
            false
        }
        Ran::Done(mut failures) => match failures.pop() {
            None => {
                settle_success(inner, d, key.as_deref(), acks, &job_name).await;
                true
            }
            Some((_, f)) => {
                release(inner, key.as_deref()).await;
                settle_failure(inner, d, f, policy, &job_name).await
            }
        },
    }
}

pub(super) async fn run_batch(
    inner: Arc<Inner>,
    batch: Vec<Delivery>,
    _permit: OwnedSemaphorePermit,
    force: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<Receipt>,
) {
    let Mode::Batch(handler) = &inner.mode else {
        return;
    };
    let span = tracing::info_span!("batch", queue = %inner.name, size = batch.len());
    async {
        for d in &batch {
            record_wait(&inner, d, "batch");
        }
        let started = Instant::now();
        let receipts: Vec<&Receipt> = batch.iter().map(|d| &d.receipt).collect();
        let timeout = inner.config.job_timeout;
        let ran = match supervise(&inner, &receipts, handler(batch.clone()), force, timeout).await {
            Ok(failures) => Ran::Done(
                failures
                    .into_iter()
                    .map(|f| (f.index, Failure::from_job(f.error)))
                    .collect(),
            ),
            Err(Some(f)) => Ran::Done(
                (0..batch.len())
                    .map(|i| (i, f.clone()))
                    .collect(),
            ),
            Err(None) => Ran::Forced,
        };
        metrics::histogram!("queue_job_duration_seconds", "queue" => inner.name.clone(), "job" => "batch")
            .record(started.elapsed().as_secs_f64());
        match ran {
            Ran::Forced => {
                for d in &batch {
                    give_back(&inner, d).await;
                }
            }
            Ran::Done(failures) => {
                let mut failed: HashMap<usize, Failure> = failures
                    .into_iter()
                    .filter(|(i, _)| *i < batch.len())
                    .collect();
                for (i, d) in batch.iter().enumerate() {
                    match failed.remove(&i) {
                        None => settle_success(&inner, d, None, &acks, "batch").await,
                        Some(f) => {
                            settle_failure(&inner, d, f, inner.config.retry, "batch").await;
                        }
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

pub(super) type Prepared = Result<(Thunk, RetryPolicy), DecodeError>;

/// Finds the handler for a delivery and decodes its payload.
pub(super) fn prepare(inner: &Inner, d: &Delivery) -> (String, Prepared) {
    let Mode::Jobs { jobs, raw } = &inner.mode else {
        return (
            "batch".into(),
            Err(DecodeError::NotAnEnvelope("batch mode".into())),
        );
    };
    let default = inner.config.retry;
    if let Some(why) = d.headers.get(headers::MALFORMED) {
        return (
            "malformed".into(),
            Err(DecodeError::Undecodable(format!(
                "driver could not decode this message: {why}"
            ))),
        );
    }
    let raw_run = |raw: &RawFn| {
        let (raw, d) = (raw.clone(), d.clone());
        Ok((Box::new(move || raw(d)) as Thunk, default))
    };
    if let (true, Some(raw)) = (jobs.is_empty(), raw) {
        // Only a raw handler: no envelope to decode.
        return ("raw".into(), raw_run(raw));
    }
    let env = match decode_envelope(&d.payload) {
        Ok(env) => env,
        Err(e) => {
            return match raw {
                Some(raw) => ("raw".into(), raw_run(raw)),
                None => ("malformed".into(), Err(e)),
            }
        }
    };
    let name = env.job.clone();
    match (jobs.get(&name), raw) {
        (Some(reg), _) => {
            let ctx = JobContext {
                id: d.id.clone(),
                queue: d.queue.clone(),
                attempt: d.attempt,
                headers: d.headers.clone(),
                first_enqueued_at: d.first_enqueued_at,
                shutdown: inner.shutdown.clone(),
            };
            let policy = reg.retry.unwrap_or(default);
            (name, (reg.run)(env, ctx).map(|f| (f, policy)))
        }
        // Metric labels come from registered names only: a name read from a payload must
        // not create a new time series.
        (None, Some(raw)) => ("raw".into(), raw_run(raw)),
        (None, None) => {
            let mut known: Vec<String> = jobs.keys().cloned().collect();
            known.sort();
            let e = DecodeError::UnknownJob {
                name: name.clone(),
                known,
            };
            ("unknown".into(), Err(e))
        }
    }
}
