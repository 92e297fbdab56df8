//! Running one delivery or one batch: decoding, the per-key line, supervision (leases
//! kept alive, the job timeout, panics, forced shutdown), and handing the outcome to
//! settlement.

use super::*;

/// What a handler run ended as.
pub(super) enum Ran {
    Done(Vec<(usize, Failure)>),
    /// Shutdown forced: return everything.
    Forced,
}

/// Runs `fut` with its `receipts`' leases kept alive, the job timeout, panic capture and
/// shutdown forcing. `Ok` carries the handler's output.
///
/// The handler future is polled right here, inside the job's own task, not spawned as a
/// second task: a panic is caught around each poll ([`CatchUnwind`]), and a timeout or a
/// forced shutdown drops the future at once. (0.1 spawned a task per handler; that spawn
/// and its cross-task wake-up were a third of the worker's cost per job.)
pub(super) async fn supervise<T: Send + 'static>(
    inner: &Inner,
    receipts: &[&Receipt],
    fut: BoxFut<T>,
    mut force: watch::Receiver<bool>,
    job_timeout: Option<Duration>,
) -> Result<T, Option<Failure>> {
    let mut handler = CatchUnwind(fut);
    // Most handlers of a fast queue finish in their first poll: then no timer is set up.
    if let std::task::Poll::Ready(r) =
        std::future::poll_fn(|cx| std::task::Poll::Ready(Pin::new(&mut handler).poll(cx))).await
    {
        return r.map_err(|p| {
            Some(Failure::retryable(format!(
                "handler panicked: {}",
                panic_message(p)
            )))
        });
    }
    // Its leases are kept alive by the loop's extender (see `leases`) while it runs.
    let _held = leases::extendable(inner).then(|| inner.leases.hold(receipts));
    // The job timeout's timer exists only when a timeout is set (boxed: a job without
    // one does not carry its space). `check_config` bounds the timeout, so the sum
    // cannot overflow; the checked form keeps that true if the bound ever moves.
    let mut deadline = job_timeout.map(|t| {
        let now = tokio::time::Instant::now();
        let far = now + Duration::from_secs(100 * 365 * 24 * 3600);
        Box::pin(tokio::time::sleep_until(now.checked_add(t).unwrap_or(far)))
    });
    let timed_out = async {
        match deadline.as_mut() {
            Some(sleep) => sleep.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        r = &mut handler => {
            r.map_err(|p| Some(Failure::retryable(format!(
                "handler panicked: {}",
                panic_message(p)
            ))))
        }
        _ = timed_out => {
            let t = job_timeout.unwrap_or_default();
            Err(Some(Failure {
                error: format!("job timed out after {t:?}"),
                permanent: false,
                kind: DeadLetterKind::Timeout,
                retry_after: None,
                rate_limited: None,
                snooze: None,
            }))
        }
        _ = forced(&mut force) => Err(None),
    }
}

/// Polls a boxed future and turns a panic inside a poll into `Err(payload)`, as a task's
/// `JoinHandle` would, without spawning a task. (`futures-util` has the same adapter; for
/// these dozen lines the quickstart's cold build does not take on that crate.)
pub(super) struct CatchUnwind<T>(pub(super) BoxFut<T>);

impl<T> Future for CatchUnwind<T> {
    type Output = Result<T, Box<dyn std::any::Any + Send>>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = &mut self.0;
        // AssertUnwindSafe: after a panic the future is never polled again (the job is
        // settled as failed and the future dropped), so no broken state is observed.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(p) => std::task::Poll::Ready(Err(p)),
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

/// Aborts a task when its owner is dropped: the worker's loop when its watcher is
/// aborted, so no job outlives its worker.
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

/// One delivery's task: runs it, settles it, and tells the next of its key's line.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn`
/// keeps each argument twice in its future (as passed, and as rebound in its body), and
/// a worker holds this future once per job in flight.
#[allow(clippy::manual_async_fn)] // deliberate, see above
pub(super) fn run_one(
    inner: Arc<Inner>,
    d: Delivery,
    permit: OwnedSemaphorePermit,
    force: watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<Receipt>,
    turn: Turn,
) -> impl Future<Output = ()> + Send {
    async move {
        let _permit = permit;
        let (meters, prepared) = prepare(&inner, &d);
        let span = tracing::info_span!("job", queue = %inner.name, id = %d.id, job = %meters.job, attempt = d.attempt);
        crate::trace::continue_trace(&span, &d.headers);
        let settled = run_one_inner(&inner, &d, force, &acks, turn.after, meters, prepared)
            .instrument(span)
            .await;
        if let Some(done) = turn.done {
            let _ = done.send(settled);
        }
    }
}

/// Runs and settles one delivery; true when it was acked or dead-lettered (its successor
/// with the same ordering key may go), false when it went back to the queue.
///
/// This future lives as long as the job runs, and a worker holds one per job in flight:
/// its size is that of its largest step plus what lives across steps. So the steps before
/// the handler ([`before_run`]) and after it ([`after_run`]) are boxed futures of their
/// own, allocated only while they run, and so are the steps only failures take (settling
/// a failure, a rate limit's back-off). See docs/benchmarks.md, in flight. A plain
/// function returning an `async move` block for the same reason as [`run_one`].
#[allow(clippy::manual_async_fn)]
pub(super) fn run_one_inner<'a>(
    inner: &'a Inner,
    d: &'a Delivery,
    force: watch::Receiver<bool>,
    acks: &'a mpsc::UnboundedSender<Receipt>,
    after: Option<oneshot::Receiver<bool>>,
    meters: &'a JobMeters,
    prepared: Prepared,
) -> impl Future<Output = bool> + Send + 'a {
    // An `async move` block, not an `async fn`: see `run_one`.
    async move {
        record_wait(d, meters);
        let tracked = &prepared.1;
        // The steps before the handler and those after it are boxed: only the running
        // step stays in this future for as long as the handler runs.
        let go = before_run(inner, d, &force, acks, after, meters, prepared.0, tracked);
        let (fut, policy, key, place) = match Box::pin(go).await {
            Go::Run {
                fut,
                policy,
                key,
                place,
            } => (fut, policy, key, place),
            Go::Settled(settled) => return settled,
        };
        let timeout = inner.config.job_timeout;
        let started = Instant::now();
        let ran = match supervise(inner, &[&d.receipt], fut(), force, timeout).await {
            Ok(Ok(())) => Ran::Done(vec![]),
            Ok(Err(e)) => Ran::Done(vec![(0, Failure::from_job(e))]),
            Err(Some(f)) => Ran::Done(vec![(0, f)]),
            Err(None) => Ran::Forced,
        };
        meters.duration.record(started.elapsed().as_secs_f64());
        // A flow's or batch's settlement writes and sends (each dependent, callbacks,
        // parents): its lease is kept alive meanwhile, so that it does not run twice.
        let _held = (flows::grouped(d) && leases::extendable(inner))
            .then(|| inner.leases.hold(&[&d.receipt]));
        let end = after_run(inner, d, acks, meters, tracked, ran, key.as_deref(), policy);
        let settled = Box::pin(end).await;
        // A per-key place, if any, is held until the delivery is settled.
        drop(place);
        settled
    }
}

/// What the steps before the handler decided: run it (holding the idempotency key and the
/// per-key place, if any), or the delivery is settled already.
enum Go {
    Run {
        fut: Thunk,
        policy: RetryPolicy,
        key: Option<String>,
        /// Boxed: most workers have no limits, and this lives as long as the job runs.
        place: Option<Box<limits::Place>>,
    },
    /// Settled without running: true when acked or dead-lettered.
    Settled(bool),
}

/// Decoding, the per-key line, limits, the idempotency claim and the start's status.
#[allow(clippy::too_many_arguments)]
async fn before_run(
    inner: &Inner,
    d: &Delivery,
    force: &watch::Receiver<bool>,
    acks: &mpsc::UnboundedSender<Receipt>,
    after: Option<oneshot::Receiver<bool>>,
    meters: &JobMeters,
    prepared: Result<(Thunk, RetryPolicy), DecodeError>,
    tracked: &Tracked,
) -> Go {
    if let Some(why) = flows::doomed(d) {
        let dead = flows::dead_letter_doomed(inner, d, why, meters).await;
        if dead && inner.status.is_some() {
            lifecycle::started(inner, d, tracked).await;
            lifecycle::ended(inner, d, tracked, JobState::Dead, Some(why.to_string())).await;
        }
        return Go::Settled(dead);
    }
    if let Some(h) = debounce_header(d) {
        if Box::pin(superseded(inner, h)).await {
            tracing::info!("a later job under this job's debounce key supersedes it; acked unrun");
            bump(&inner.counters.superseded);
            let _ = acks.send(d.receipt.clone());
            if inner.status.is_some() {
                lifecycle::started(inner, d, tracked).await;
                let why = Some("superseded by a later job under its debounce key".to_string());
                lifecycle::ended(inner, d, tracked, JobState::Cancelled, why).await;
            }
            return Go::Settled(true);
        }
    }
    let before = flows::before(inner, d, tracked).await;
    if let flows::Before::NoStore = before {
        flows::give_back_unrecorded(inner, d).await;
        return Go::Settled(false);
    }
    if let flows::Before::Finished { cancelled } = before {
        tracing::info!(
            cancelled,
            "this flow job has finished already; acked without running"
        );
        // Its settlement may have been cut short (a crash after its outcome was written):
        // advancing its dependents again is harmless, and finishes that.
        let outcome = || match cancelled {
            true => Outcome::Failed(crate::flow::CANCELLED.into()),
            false => Outcome::Succeeded {
                result: None,
                redriven: false,
            },
        };
        if !flows::recorded(inner, d, outcome).await {
            flows::give_back_unrecorded(inner, d).await;
            return Go::Settled(false);
        }
        if cancelled {
            bump(&inner.counters.cancelled);
        } else {
            bump(&inner.counters.duplicates_skipped);
        }
        let _ = acks.send(d.receipt.clone());
        return Go::Settled(true);
    }
    let (fut, policy) = match prepared {
        Ok(p) => p,
        Err(e @ DecodeError::UnknownJob { .. }) if !settle::unknown_too_long(inner, d) => {
            // A rolling deploy: a newer producer's job, which a newer worker will know.
            tracing::info!(error = %e, "no handler here for this job yet; giving it back");
            settle::give_back_unknown(inner, d).await;
            return Go::Settled(false);
        }
        Err(e) => {
            tracing::warn!(error = %e, "undecodable message, dead-lettering");
            let f = Failure::malformed(&e);
            let error = f.error.clone();
            let dead = Box::pin(settle_failure(inner, d, f, RetryPolicy::none(), meters)).await;
            if dead && inner.status.is_some() {
                lifecycle::started(inner, d, tracked).await;
                lifecycle::ended(inner, d, tracked, JobState::Dead, Some(error)).await;
            }
            return Go::Settled(dead);
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
            return Go::Settled(false);
        }
    }
    let place = match limits::admit(inner, d).await {
        limits::Admit::Run(place) => place,
        limits::Admit::Deferred => return Go::Settled(false),
    };
    let key = match claim(inner, d).await {
        Claim::Run(key) => key,
        Claim::Skip => {
            // Its key's work is done: a flow's or batch's job counts as succeeded.
            let done = || Outcome::Succeeded {
                result: None,
                redriven: false,
            };
            if !flows::recorded(inner, d, done).await {
                flows::give_back_unrecorded(inner, d).await;
                return Go::Settled(false);
            }
            bump(&inner.counters.duplicates_skipped);
            let _ = acks.send(d.receipt.clone());
            return Go::Settled(true);
        }
        Claim::Later => {
            // Another worker is running this key: look again after a lease.
            let delay = clamp_delay(&inner.caps, inner.config.lease);
            if let Err(e) = inner.driver.give_back(d, delay).await {
                backend_error(inner, "could not defer message", Some(&d.id), &e);
            }
            return Go::Settled(false);
        }
    };
    match lifecycle::started(inner, d, tracked).await {
        lifecycle::Started::Run => {}
        lifecycle::Started::Cancelled => {
            release(inner, key.as_deref()).await;
            if !flows::recorded(inner, d, || Outcome::Failed("cancelled".into())).await {
                flows::give_back_unrecorded(inner, d).await;
                return Go::Settled(false);
            }
            bump(&inner.counters.cancelled);
            let _ = acks.send(d.receipt.clone());
            return Go::Settled(true);
        }
        lifecycle::Started::Crashed(n) => {
            // Its runs keep killing the process: set it aside, not run again.
            release(inner, key.as_deref()).await;
            tracing::error!(crashes = n, "job crashed its workers; dead-lettering it");
            let f = Failure {
                error: crate::status::crashed_error(n),
                permanent: true,
                kind: DeadLetterKind::Crashed,
                retry_after: None,
                rate_limited: None,
                snooze: None,
            };
            return Go::Settled(
                Box::pin(settle_failure(inner, d, f, RetryPolicy::none(), meters)).await,
            );
        }
    }
    Go::Run {
        fut,
        policy,
        key,
        place: place.map(Box::new),
    }
}

/// Settling after the handler ran, and the end's status.
#[allow(clippy::too_many_arguments)]
async fn after_run(
    inner: &Inner,
    d: &Delivery,
    acks: &mpsc::UnboundedSender<Receipt>,
    meters: &JobMeters,
    tracked: &Tracked,
    ran: Ran,
    key: Option<&str>,
    policy: RetryPolicy,
) -> bool {
    // Where the job goes back to the queue, its status leaves `running` first: a worker
    // that starts it again must not find it `running` and count a crash.
    match ran {
        Ran::Forced => {
            release(inner, key).await;
            lifecycle::ended(inner, d, tracked, JobState::Queued, None).await;
            give_back(inner, d).await;
            false
        }
        Ran::Done(mut failures) => match failures.pop() {
            None => {
                let result = tracked.flow.as_ref().and_then(|f| f.run().take_result());
                let redriven = d.headers.contains_key(headers::REDRIVEN_AT);
                let done = || Outcome::Succeeded { result, redriven };
                if !flows::recorded(inner, d, done).await {
                    release(inner, key).await;
                    lifecycle::ended(inner, d, tracked, JobState::Queued, None).await;
                    flows::give_back_unrecorded(inner, d).await;
                    return false;
                }
                settle_success(inner, d, key, acks, meters).await;
                lifecycle::ended(inner, d, tracked, JobState::Succeeded, None).await;
                true
            }
            Some((_, f)) if f.snooze.is_some() && settle::may_snooze(inner, d) => {
                release(inner, key).await;
                lifecycle::ended(inner, d, tracked, JobState::Queued, None).await;
                Box::pin(settle::snooze(inner, d, f.snooze.unwrap_or_default())).await;
                false
            }
            Some((_, f)) if f.rate_limited.is_some() && limits::pauses(inner, d) => {
                release(inner, key).await;
                lifecycle::ended(inner, d, tracked, JobState::Queued, Some(f.error)).await;
                Box::pin(limits::back_off(
                    inner,
                    d,
                    f.rate_limited.unwrap_or_default(),
                ))
                .await;
                false
            }
            Some((_, f)) if tracked.cancel.is_cancelled() => {
                // Stopped by its cancel signal: settled, not retried.
                tracing::info!(error = %f.error, "job cancelled");
                release(inner, key).await;
                let why = format!("cancelled: {}", f.error);
                if !flows::recorded(inner, d, || Outcome::Failed(why)).await {
                    // Cancelled it stays: its next delivery is skipped, and records the
                    // cancellation in its flow then.
                    lifecycle::ended(inner, d, tracked, JobState::Cancelled, Some(f.error)).await;
                    flows::give_back_unrecorded(inner, d).await;
                    return false;
                }
                bump(&inner.counters.cancelled);
                let _ = acks.send(d.receipt.clone());
                lifecycle::ended(inner, d, tracked, JobState::Cancelled, Some(f.error)).await;
                true
            }
            Some((_, mut f)) => {
                release(inner, key).await;
                // Rate limited with no rate limit for this job: nothing to pause, so an
                // ordinary retry after the pause asked for (it spends an attempt: never
                // given back for ever).
                if let Some(pause) = f.rate_limited.take() {
                    f.retry_after = Some(pause);
                }
                // Snoozed past the worker's snooze_limit: a retry after its delay.
                if let Some(delay) = f.snooze.take() {
                    tracing::warn!(
                        ?delay,
                        limit = ?inner.config.snooze_limit,
                        "job snoozed past the worker's snooze_limit; retried, spending an attempt"
                    );
                    f.retry_after = Some(delay);
                }
                let error = f.error.clone();
                lifecycle::ended(inner, d, tracked, JobState::Failed, Some(error.clone())).await;
                let dead = Box::pin(settle_failure(inner, d, f, policy, meters)).await;
                if dead {
                    lifecycle::ended(inner, d, tracked, JobState::Dead, Some(error)).await;
                }
                dead
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
    // A flow's jobs whose dependency failed never reach the handler.
    let (doomed, batch): (Vec<Delivery>, Vec<Delivery>) =
        batch.into_iter().partition(|d| flows::doomed(d).is_some());
    for d in &doomed {
        let why = flows::doomed(d).unwrap_or_default();
        flows::dead_letter_doomed(&inner, d, why, &inner.meters.batch).await;
    }
    // Nor do debounced jobs a later send superseded.
    let mut live = Vec::with_capacity(batch.len());
    for d in batch {
        match debounce_header(&d) {
            Some(h) if superseded(&inner, h).await => {
                bump(&inner.counters.superseded);
                let _ = acks.send(d.receipt.clone());
                continue;
            }
            _ => {}
        }
        // A flow's or batch's job: skipped when already finished, given back without a
        // store (as in the one-job path).
        match flows::before(&inner, &d, &Tracked::new(&inner, &d, None)).await {
            flows::Before::Run => live.push(d),
            flows::Before::NoStore => flows::give_back_unrecorded(&inner, &d).await,
            flows::Before::Finished { cancelled } => {
                let outcome = || match cancelled {
                    true => Outcome::Failed(crate::flow::CANCELLED.into()),
                    false => Outcome::Succeeded {
                        result: None,
                        redriven: false,
                    },
                };
                if !flows::recorded(&inner, &d, outcome).await {
                    flows::give_back_unrecorded(&inner, &d).await;
                    continue;
                }
                bump(&inner.counters.duplicates_skipped);
                let _ = acks.send(d.receipt.clone());
            }
        }
    }
    let batch = live;
    if batch.is_empty() {
        return;
    }
    let span = tracing::info_span!("batch", queue = %inner.name, size = batch.len());
    async {
        for d in &batch {
            record_wait(d, &inner.meters.batch);
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
            Err(Some(f)) => Ran::Done((0..batch.len()).map(|i| (i, f.clone())).collect()),
            Err(None) => Ran::Forced,
        };
        inner
            .meters
            .batch
            .duration
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
                    // Batch handlers have no JobContext: the worker records each item's
                    // outcome, with no progress, result or cancel signal.
                    let tracked = Tracked::new(&inner, d, None);
                    match failed.remove(&i) {
                        None => {
                            let done = || Outcome::Succeeded {
                                result: None,
                                redriven: d.headers.contains_key(headers::REDRIVEN_AT),
                            };
                            if !flows::recorded(&inner, d, done).await {
                                flows::give_back_unrecorded(&inner, d).await;
                                continue;
                            }
                            settle_success(&inner, d, None, &acks, &inner.meters.batch).await;
                            lifecycle::ended(&inner, d, &tracked, JobState::Succeeded, None).await;
                        }
                        Some(f) if f.snooze.is_some() && settle::may_snooze(&inner, d) => {
                            settle::snooze(&inner, d, f.snooze.unwrap_or_default()).await;
                            lifecycle::ended(&inner, d, &tracked, JobState::Queued, None).await;
                        }
                        Some(mut f) => {
                            if let Some(delay) = f.snooze.take() {
                                f.retry_after = Some(delay);
                            }
                            let error = f.error.clone();
                            let dead = settle_failure(
                                &inner,
                                d,
                                f,
                                inner.config.retry,
                                &inner.meters.batch,
                            )
                            .await;
                            let state = if dead {
                                JobState::Dead
                            } else {
                                JobState::Failed
                            };
                            lifecycle::ended(&inner, d, &tracked, state, Some(error)).await;
                        }
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

pub(super) type Prepared = (Result<(Thunk, RetryPolicy), DecodeError>, Tracked);

/// Finds the handler for a delivery and decodes its payload; also picks the metric
/// handles of its job label.
pub(super) fn prepare<'a>(inner: &'a Inner, d: &Delivery) -> (&'a JobMeters, Prepared) {
    let meters = &inner.meters;
    let Mode::Jobs { jobs, raw } = &inner.mode else {
        return (
            &meters.batch,
            (
                Err(DecodeError::NotAnEnvelope("batch mode".into())),
                Tracked::new(inner, d, None),
            ),
        );
    };
    let default = inner.config.retry;
    if let Some(why) = d.headers.get(headers::MALFORMED) {
        return (
            &meters.malformed,
            (
                Err(DecodeError::Undecodable(format!(
                    "driver could not decode this message: {why}"
                ))),
                Tracked::new(inner, d, None),
            ),
        );
    }
    let raw_run = |raw: &RawFn| {
        let (raw, d2) = (raw.clone(), d.clone());
        (
            Ok((Box::new(move || raw(d2)) as Thunk, default)),
            Tracked::new(inner, d, None),
        )
    };
    if let (true, Some(raw)) = (jobs.is_empty(), raw) {
        // Only a raw handler: no envelope to decode.
        return (&meters.raw, raw_run(raw));
    }
    let env = match decode_envelope(&d.payload) {
        Ok(env) => env,
        Err(e) => {
            return match raw {
                Some(raw) => (&meters.raw, raw_run(raw)),
                None => (&meters.malformed, (Err(e), Tracked::new(inner, d, None))),
            }
        }
    };
    match (jobs.get(&env.job), raw) {
        (Some(reg), _) => {
            let tracked = Tracked::new(inner, d, Some(&env.job));
            let ctx = JobContext {
                id: d.id.clone(),
                queue: d.queue.clone(),
                attempt: d.attempt,
                headers: d.headers.clone(),
                first_enqueued_at: d.first_enqueued_at,
                shutdown: inner.shutdown.clone(),
                cancel: tracked.cancel.clone(),
                life: tracked.life.clone(),
                flow: tracked.flow.clone(),
            };
            let policy = reg.retry.unwrap_or(default);
            let m = meters.jobs.get(&env.job).unwrap_or(&meters.unknown);
            (m, ((reg.run)(env, ctx).map(|f| (f, policy)), tracked))
        }
        // Metric labels come from registered names only: a name read from a payload must
        // not create a new time series.
        (None, Some(raw)) => (&meters.raw, raw_run(raw)),
        (None, None) => {
            let mut known: Vec<String> = jobs.keys().cloned().collect();
            known.sort();
            let tracked = Tracked::new(inner, d, Some(&env.job));
            let e = DecodeError::UnknownJob {
                name: env.job,
                known,
            };
            (&meters.unknown, (Err(e), tracked))
        }
    }
}

/// A delivery's debounce header, unless it was redriven (an operator's redrive runs).
fn debounce_header(d: &Delivery) -> Option<&str> {
    match d.headers.contains_key(headers::REDRIVEN_AT) {
        true => None,
        false => d.headers.get(headers::DEBOUNCE).map(String::as_str),
    }
}

/// Whether a debounced job was superseded (see [`crate::debounce`]). Without a shared
/// store, or when it cannot be read, the job runs: at least once, as ever.
async fn superseded(inner: &Inner, header: &str) -> bool {
    let Some(store) = inner.backend.store() else {
        return false;
    };
    match crate::debounce::superseded(store.as_ref(), header).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not read this job's debounce record; running it");
            false
        }
    }
}
