//! `--fairness N`: one tenant's backlog of N jobs, then 10 jobs of another tenant, each job
//! costing `--handler` (default here: sleep 1 ms). Reports how long until the small
//! tenant's 10 jobs are done and until everything is, on each backend, for: a plain
//! worker; one with per-key concurrency (`--per-key-concurrency`, default 4); a fair
//! producer and worker over `--fair-shards` shards (default 8, `queue_core::fair`); and,
//! where the backend orders by key, messages keyed by tenant (Kafka: one partition per
//! key's hash; memory and Redis: one job of a key at a time, like SQS FIFO's groups).

use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::{Fairness, LimitKey, Message, Ordering as KeyOrdering};

use crate::{unique, url_for, Args, Cost};

struct Outcome {
    small_done: Duration,
    all_done: Duration,
    stepped_aside: u64,
}

/// How a run shares the workers between tenants.
#[derive(Clone, Debug)]
enum Share {
    Plain,
    PerKey(u32),
    Fair(Fairness),
    Keyed,
}

async fn once(a: &Args, kind: &str, n: usize, share: &Share) -> Result<Outcome, String> {
    let backend = queue_core::connect(&url_for(a, kind)?)
        .await
        .map_err(|e| e.to_string())?;
    let q = backend.queue(unique("fair"));
    q.create().await.map_err(|e| e.to_string())?;
    let mut producer = q.producer();
    if let Share::Fair(f) = share {
        f.create(&q).await.map_err(|e| e.to_string())?;
        producer = producer.fair(f.clone());
    }
    let message = |tenant: &str| {
        let m = Message::new(tenant.to_string()).header("tenant", tenant);
        match share {
            Share::Keyed => m.ordering_key(tenant),
            _ => m,
        }
    };
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(100);
        let msgs = (0..k).map(|_| message("big")).collect();
        producer.send_batch(msgs).await.map_err(|e| e.to_string())?;
        sent += k;
    }
    let small: Vec<Message> = (0..10).map(|_| message("small")).collect();
    producer
        .send_batch(small)
        .await
        .map_err(|e| e.to_string())?;
    let cost = if a.handler == "none" {
        Cost::Sleep(Duration::from_millis(1))
    } else {
        Cost::parse(&a.handler)?
    };
    let small_left = Arc::new(AtomicUsize::new(10));
    let all_left = Arc::new(AtomicUsize::new(n + 10));
    let small_done = Arc::new(std::sync::Mutex::new(None));
    let t0 = Instant::now();
    let (s2, a2, d2) = (small_left.clone(), all_left.clone(), small_done.clone());
    let mut w = q
        .worker()
        .concurrency(a.consumers)
        .poll_wait(Duration::from_secs(1))
        .lease(Duration::from_secs(120));
    match share {
        // One process: the limit kept in it is the whole limit (no shared store here).
        Share::PerKey(c) => {
            w = w
                .concurrency_per_key(*c, LimitKey::Header("tenant".into()))
                .local_only()
        }
        Share::Fair(f) => w = w.fair(f.clone()),
        Share::Plain | Share::Keyed => {}
    }
    let w = w
        .handle_raw(move |d| {
            let (s2, a2, d2) = (s2.clone(), a2.clone(), d2.clone());
            async move {
                cost.pay().await;
                if d.headers.get("tenant").map(String::as_str) == Some("small")
                    && s2.fetch_sub(1, AO::SeqCst) == 1
                {
                    *d2.lock().unwrap() = Some(t0.elapsed());
                }
                a2.fetch_sub(1, AO::SeqCst);
                Ok(())
            }
        })
        .start()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while all_left.load(AO::SeqCst) > 0 {
        if Instant::now() > deadline {
            return Err(format!("{kind}: fairness run did not finish in 30 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_done = t0.elapsed();
    let r = w.shutdown().await;
    match share {
        Share::Fair(f) => {
            for s in f.queues(&q) {
                let _ = s.delete().await;
            }
        }
        _ => {
            let _ = q.delete().await;
        }
    }
    let small_done = small_done.lock().unwrap().unwrap_or(all_done);
    Ok(Outcome {
        small_done,
        all_done,
        stepped_aside: r.rate_limited,
    })
}

/// Runs the fairness comparison on every backend of `a`.
pub async fn run(a: &Args, n: usize) -> std::process::ExitCode {
    let per_key = a.per_key_concurrency.unwrap_or(4);
    let fair = match Fairness::by_header(a.fair_shards, "tenant") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("--fair-shards: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if fair.shard_of("big") == fair.shard_of("small") {
        eprintln!(
            "--fair-shards {}: big and small share a shard; pick another count",
            a.fair_shards
        );
        return std::process::ExitCode::FAILURE;
    }
    println!(
        "fairness: {n} jobs of tenant big, then 10 of tenant small; concurrency {}, handler {}",
        a.consumers,
        if a.handler == "none" {
            "sleep:1"
        } else {
            &a.handler
        }
    );
    println!(
        "{:<8} {:<24} {:>14} {:>12} {:>14}",
        "backend", "worker", "small done s", "all done s", "stepped aside"
    );
    for kind in &a.backends {
        let mut shares = vec![
            ("plain".to_string(), Share::Plain),
            (
                format!("per-key concurrency {per_key}"),
                Share::PerKey(per_key),
            ),
            (
                format!("fair, {} shards", a.fair_shards),
                Share::Fair(fair.clone()),
            ),
        ];
        match queue_core::connect(&url_for(a, kind).unwrap_or_default()).await {
            Ok(b) if b.capabilities().ordering != KeyOrdering::None => {
                shares.push(("keyed by tenant".to_string(), Share::Keyed));
            }
            _ => {}
        }
        for (label, share) in shares {
            match once(a, kind, n, &share).await {
                Ok(o) => println!(
                    "{:<8} {:<24} {:>14.2} {:>12.2} {:>14}",
                    kind,
                    label,
                    o.small_done.as_secs_f64(),
                    o.all_done.as_secs_f64(),
                    o.stepped_aside
                ),
                Err(e) => {
                    eprintln!("{kind}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
