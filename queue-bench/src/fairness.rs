//! `--fairness N`: one tenant's backlog of N jobs, then 10 jobs of another tenant, each job
//! costing `--handler` (default here: sleep 1 ms). Reports how long until the small
//! tenant's 10 jobs are done and until everything is, for a plain worker and for one with
//! per-key concurrency (`--per-key-concurrency`, default 4), on each backend.

use std::sync::atomic::{AtomicUsize, Ordering as AO};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::{LimitKey, Message};

use crate::{unique, url_for, Args, Cost};

struct Outcome {
    small_done: Duration,
    all_done: Duration,
    stepped_aside: u64,
}

async fn once(a: &Args, kind: &str, n: usize, per_key: Option<u32>) -> Result<Outcome, String> {
    let backend = queue_core::connect(&url_for(a, kind)?)
        .await
        .map_err(|e| e.to_string())?;
    let q = backend.queue(unique("fair"));
    q.create().await.map_err(|e| e.to_string())?;
    let producer = q.producer();
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(100);
        let msgs = (0..k)
            .map(|_| Message::new("big").header("tenant", "big"))
            .collect();
        producer.send_batch(msgs).await.map_err(|e| e.to_string())?;
        sent += k;
    }
    let small: Vec<Message> = (0..10)
        .map(|_| Message::new("small").header("tenant", "small"))
        .collect();
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
    if let Some(c) = per_key {
        w = w.concurrency_per_key(c, LimitKey::Header("tenant".into()));
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
    let _ = q.delete().await;
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
        "{:<8} {:<22} {:>14} {:>12} {:>14}",
        "backend", "worker", "small done s", "all done s", "stepped aside"
    );
    for kind in &a.backends {
        for (label, pk) in [
            ("plain".to_string(), None),
            (format!("per-key concurrency {per_key}"), Some(per_key)),
        ] {
            match once(a, kind, n, pk).await {
                Ok(o) => println!(
                    "{:<8} {:<22} {:>14.2} {:>12.2} {:>14}",
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
