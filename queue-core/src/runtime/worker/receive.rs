//! The receive loop: leases as many messages as there are free slots, starts a task
//! per delivery (or batch), batches acks, and drains in-flight jobs on shutdown.

use super::*;

/// Main loop. Dropping (aborting) this future drops every job task with it.
/// `slots` is the worker's pool of concurrency slots, shared by a fair worker's loops.
pub(super) async fn run(
    inner: Arc<Inner>,
    mut stop: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
) -> WorkerReport {
    if let Err(e) = inner.driver.start_receiving(&inner.name).await {
        backend_error(&inner, "start_receiving failed", None, &e);
    }
    let batch_mode = matches!(inner.mode, Mode::Batch(_));
    let max_batch = inner.caps.max_batch.max(1);
    let (force_tx, force_rx) = watch::channel(false);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Receipt>();
    let mut aux = JoinSet::new();
    aux.spawn(acker(inner.clone(), ack_rx));
    // Dropped (aborted) when this loop ends.
    let _cancels = AbortOnDrop(tokio::spawn(lifecycle::watch_cancels(inner.clone())));
    let _leases = leases::extendable(&inner)
        .then(|| AbortOnDrop(tokio::spawn(leases::extend_leases(inner.clone()))));
    let _places = inner
        .primary
        .then(|| AbortOnDrop(tokio::spawn(limits::renew_places(inner.clone()))));
    // The queue's paused state (crate::pause), read before the first receive so that a
    // pause survives a restart, then kept current by a watcher aborted with this loop.
    let (paused_tx, mut paused) = watch::channel(false);
    let _pause = match &inner.status {
        Some(s) => {
            let store = s.store().clone();
            if let Ok(true) = crate::pause::is_paused(&*store, &inner.home).await {
                paused_tx.send_replace(true);
            }
            let task = crate::pause::watch(store, inner.home.to_string(), paused_tx);
            Some(AbortOnDrop(tokio::spawn(task)))
        }
        None => None,
    };
    let mut tasks = JoinSet::new();
    let mut errors_in_row = 0u32;
    // Per ordering key, the settle signal of the last delivery of that key started here.
    let mut lines: HashMap<String, oneshot::Receiver<bool>> = HashMap::new();
    // A fair loop whose shard came back empty (see below), and what its wait brought.
    let mut idle = false;
    let mut pending = None;

    // `stopping` fires with `stop`, and alone when the handle is dropped: either ends it
    // (a cancelled receive returns at once, so looping on would spin).
    'outer: while !*stop.borrow() && !inner.stopping.is_cancelled() {
        if *paused.borrow() {
            tokio::select! {
                r = paused.wait_for(|p| !*p) => if r.is_err() { break },
                _ = stop.changed() => break,
            }
            continue;
        }
        // A fair worker's loop on a shard that came back empty waits for its next message
        // without holding a slot, so that idle shards do not keep slots from busy ones;
        // the message it gets then waits for a slot (the next one to free up: the pool is
        // first-in first-out), leased but unstarted for at most that long.
        if idle {
            // Shutdown cuts its wait short, as any receive's.
            let opts = ReceiveOptions::new(1, inner.config.poll_wait, inner.config.lease)
                .cancelled_by(inner.stopping.clone());
            let got = inner.driver.receive(&inner.name, opts).await;
            let deliveries = match got {
                Ok(d) if d.is_empty() => continue,
                Ok(d) => d,
                Err(e) => {
                    backend_error(&inner, "receive failed", None, &e);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = stop.changed() => break,
                    }
                }
            };
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.ok(),
                _ = stop.changed() => None,
            };
            let Some(permit) = permit else {
                for d in deliveries {
                    give_back(&inner, &d).await;
                }
                break;
            };
            idle = false;
            pending = Some((deliveries, vec![permit]));
        }
        let (deliveries, mut permits) = match pending.take() {
            Some(p) => p,
            None => {
                let first = tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = stop.changed() => break,
                };
                let mut permits = vec![first];
                tokio::task::yield_now().await;
                let want = if batch_mode {
                    inner.config.batch_size.min(max_batch)
                } else {
                    while permits.len() < max_batch {
                        match slots.clone().try_acquire_owned() {
                            Ok(p) => permits.push(p),
                            Err(_) => break,
                        }
                    }
                    permits.len()
                };
                // A fair loop polls without waiting while its shard is busy, then goes idle.
                let wait = if inner.fair {
                    Duration::ZERO
                } else {
                    inner.config.poll_wait
                };
                // Shutdown cuts the wait short (the driver returns at once, with whatever it
                // had already taken, which is given back below).
                let opts = ReceiveOptions::new(want, wait, inner.config.lease)
                    .cancelled_by(inner.stopping.clone());
                let got = inner.driver.receive(&inner.name, opts).await;
                while tasks.try_join_next().is_some() {}
                let deliveries = match got {
                    Ok(d) => {
                        errors_in_row = 0;
                        if d.is_empty() && inner.fair {
                            idle = true;
                        }
                        d
                    }
                    Err(e) => {
                        backend_error(&inner, "receive failed", None, &e);
                        errors_in_row += 1;
                        let pause = crate::retry::Backoff::exponential(
                            Duration::from_millis(100),
                            Duration::from_secs(5),
                        )
                        .delay(errors_in_row);
                        tracing::warn!(queue = %inner.name, error = %e, retry_in = ?pause, "receive failed");
                        drop(permits);
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => continue 'outer,
                            _ = stop.changed() => break 'outer,
                        }
                    }
                };
                (deliveries, permits)
            }
        };
        inner
            .counters
            .received
            .fetch_add(deliveries.len() as u64, AtomicOrdering::Relaxed);
        if *stop.borrow() || *paused.borrow() {
            for d in deliveries {
                give_back(&inner, &d).await;
            }
            if *stop.borrow() {
                break;
            }
            continue;
        }
        if deliveries.is_empty() {
            continue;
        }
        if batch_mode {
            let permit = permits.swap_remove(0);
            tasks.spawn(run_batch(
                inner.clone(),
                deliveries,
                permit,
                force_rx.clone(),
                ack_tx.clone(),
            ));
        } else {
            if lines.len() > 1024 {
                lines.retain(|_, rx| {
                    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
                });
            }
            for (d, permit) in deliveries.into_iter().zip(permits.drain(..)) {
                let turn = match &d.ordering_key {
                    Some(k) => {
                        let (done, rx) = oneshot::channel();
                        Turn {
                            // Wait only for a predecessor still running here. One that
                            // settled already (its own earlier attempt, given back, or a
                            // message the backend has since redelivered in order) must
                            // not hold this delivery: waiting on its old answer stalled
                            // the key for ever.
                            after: lines.insert(k.clone(), rx).and_then(|mut prev| {
                                match prev.try_recv() {
                                    Err(oneshot::error::TryRecvError::Empty) => Some(prev),
                                    _ => None,
                                }
                            }),
                            done: Some(done),
                        }
                    }
                    None => Turn::default(),
                };
                tasks.spawn(run_one(
                    inner.clone(),
                    d,
                    permit,
                    force_rx.clone(),
                    ack_tx.clone(),
                    turn,
                ));
            }
        }
    }

    // Graceful shutdown: tell handlers, wait for in-flight jobs up to the grace period,
    // then force the rest.
    inner.shutdown.cancel();
    let grace = inner.config.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let _ = force_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
    drop(ack_tx);
    while aux.join_next().await.is_some() {}
    if let Err(e) = inner.driver.stop_receiving(&inner.name).await {
        tracing::warn!(queue = %inner.name, error = %e, "stop_receiving failed");
    }
    inner.counters.snapshot()
}

/// Batches acks: waits up to `ack_linger` for more receipts, up to the backend's max batch.
pub(super) async fn acker(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Receipt>) {
    let max = inner.caps.max_batch.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(max.min(64));
        batch.push(first);
        let until = tokio::time::Instant::now() + inner.config.ack_linger;
        while batch.len() < max {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                _ => break,
            }
        }
        if let Err(e) = inner.driver.ack(&inner.name, &batch).await {
            backend_error(
                &inner,
                "ack failed; the messages will be redelivered",
                None,
                &e,
            );
        }
    }
}
