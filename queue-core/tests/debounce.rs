//! Debounce and replace ([`queue_core::debounce`]) on the in-memory backend under tokio's
//! paused clock: only the last job sent under a key runs, when the last send says
//! (debounce) or when the first pending one was due (replace); other keys are untouched;
//! bad sends are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::*;
use tokio::time::Instant;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Sync {
    user: String,
    version: u32,
}
impl Job for Sync {
    const NAME: &'static str = "sync";
}

fn sync(user: &str, version: u32) -> Sync {
    Sync {
        user: user.into(),
        version,
    }
}

type Runs = Arc<Mutex<Vec<(String, u32, Instant)>>>;

async fn setup() -> (Backend, Runs, WorkerHandle) {
    let b = connect(&format!("memory://debounce-{}", fastrand::u64(..)))
        .await
        .unwrap()
        .with_store(Arc::new(MemoryStore::new()));
    b.queue("q").create().await.unwrap();
    let runs: Runs = Arc::default();
    let seen = runs.clone();
    let w = b
        .queue("q")
        .worker()
        .poll_wait(Duration::from_millis(20))
        .handle(move |s: Sync, _ctx: JobContext| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((s.user, s.version, Instant::now()));
                Ok(())
            }
        })
        .start()
        .unwrap();
    (b, runs, w)
}

/// Five sends 200 ms apart, each debounced by 1 s: only the fifth runs, about 1 s after
/// it was sent, with its data; another key's job runs on its own schedule.
#[tokio::test(start_paused = true)]
async fn only_the_last_debounced_job_runs_after_the_last_send() {
    let (b, runs, w) = setup().await;
    let p = b.queue("q").producer();
    let t0 = Instant::now();
    p.debounce(&sync("bob", 0), "bob", Duration::from_millis(300))
        .await
        .unwrap();
    for v in 1..=5 {
        p.debounce(&sync("ann", v), "ann", Duration::from_secs(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last_send = t0 + Duration::from_millis(800);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let runs = runs.lock().unwrap().clone();
    let ann: Vec<_> = runs.iter().filter(|r| r.0 == "ann").collect();
    assert_eq!(ann.len(), 1, "{runs:?}");
    assert_eq!(ann[0].1, 5, "the last data runs");
    assert!(ann[0].2 >= last_send + Duration::from_secs(1), "{runs:?}");
    assert!(
        ann[0].2 < last_send + Duration::from_millis(1_500),
        "{runs:?}"
    );
    let bob: Vec<_> = runs.iter().filter(|r| r.0 == "bob").collect();
    assert_eq!(bob.len(), 1, "another key is untouched: {runs:?}");
    assert!(bob[0].2 < t0 + Duration::from_millis(500), "{runs:?}");
    let r = w.shutdown().await;
    assert_eq!(r.superseded, 4, "{r:?}");
    assert_eq!(r.succeeded, 2, "{r:?}");
}

/// A job sent due in 1 s, replaced after 300 ms (asking 5 s): the replacement runs at the
/// first one's time, with its own data. Once nothing is pending, a replace runs after its
/// own delay.
#[tokio::test(start_paused = true)]
async fn a_replacement_keeps_the_pending_jobs_schedule() {
    let (b, runs, w) = setup().await;
    let p = b.queue("q").producer();
    let t0 = Instant::now();
    p.replace_pending(&sync("ann", 1), "ann", Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.replace_pending(&sync("ann", 2), "ann", Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].1, 2, "the replacement's data: {runs:?}");
        assert!(runs[0].2 >= t0 + Duration::from_secs(1), "{runs:?}");
        assert!(runs[0].2 < t0 + Duration::from_millis(1_500), "{runs:?}");
    }
    let t1 = Instant::now();
    p.replace_pending(&sync("ann", 3), "ann", Duration::from_millis(500))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].1, 3);
    assert!(runs[1].2 >= t1 + Duration::from_millis(500), "{runs:?}");
    let r = w.shutdown().await;
    assert_eq!(r.superseded, 1, "{r:?}");
}

#[tokio::test]
async fn bad_debounces_are_refused_with_nothing_sent() {
    let bare = connect("memory://debounce-bare").await.unwrap();
    bare.queue("q").create().await.unwrap();
    assert!(matches!(
        bare.queue("q")
            .producer()
            .debounce(&sync("a", 1), "a", Duration::from_secs(1))
            .await,
        Err(QueueError::NoStatusStore)
    ));
    let (b, _, w) = setup().await;
    let p = b.queue("q").producer();
    for (key, delay) in [
        ("", Duration::from_secs(1)),
        (&*"k".repeat(600), Duration::from_secs(1)),
        ("k", Duration::from_secs(400 * 24 * 3600)),
    ] {
        let e = p.debounce(&sync("a", 1), key, delay).await.unwrap_err();
        assert!(matches!(e, QueueError::InvalidOption(_)), "{e}");
    }
    let stats = b.queue("q").stats().await.unwrap();
    assert_eq!(stats.total(), 0, "{stats:?}");
    w.shutdown().await;
}
