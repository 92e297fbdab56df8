//! Cron and repeatable jobs (feature `cron`) on the in-memory backend with a memory store,
//! on tokio's paused clock: two schedulers make one job per tick, missed ticks are
//! skipped or caught up, schedules change at run time, time zones follow the calendar,
//! and bad schedules are refused.

use std::sync::Arc;
use std::time::Duration;

use queue_core::schedule::{Missed, Schedule, Scheduler};
use queue_core::{Backend, JobStatuses, MemoryStore, QueueError};

async fn backend(name: &str) -> Backend {
    let store = Arc::new(MemoryStore::new());
    let b = queue_core::connect(&format!("memory://{name}"))
        .await
        .unwrap()
        .with_status(JobStatuses::new(store));
    b.queue("reports").create().await.unwrap();
    b
}

async fn ready(b: &Backend) -> u64 {
    b.queue("reports").stats().await.unwrap().ready
}

#[tokio::test(start_paused = true)]
async fn two_schedulers_make_one_job_per_tick() {
    let b = backend("sched-two").await;
    let a = Scheduler::new(&b, "app").unwrap();
    a.add(
        Schedule::every("nightly", "reports", Duration::from_secs(10))
            .unwrap()
            .job("report", serde_json::json!({"kind": "sales"})),
    )
    .await
    .unwrap();
    let h1 = a.clone().start();
    let h2 = Scheduler::new(&b, "app").unwrap().start();
    tokio::time::sleep(Duration::from_millis(60_500)).await;
    h1.stop().await;
    h2.stop().await;
    assert_eq!(ready(&b).await, 6, "ticks at 10, 20, … 60 s, each once");
    let jobs = b.queue("reports").peek(10).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&jobs[0].payload).unwrap();
    assert_eq!(body["job"], "report");
    assert_eq!(body["data"]["kind"], "sales");
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_are_skipped_or_caught_up() {
    let b = backend("sched-missed").await;
    let s = Scheduler::new(&b, "app").unwrap();
    let every =
        |name: &str, secs| Schedule::every(name, "reports", Duration::from_secs(secs)).unwrap();
    s.add(every("skip", 10)).await.unwrap();
    s.add(every("stale", 120)).await.unwrap();
    s.add(every("catch", 10).missed(Missed::CatchUp(3)).unwrap())
        .await
        .unwrap();
    // No scheduler ran for 190 s.
    tokio::time::sleep(Duration::from_secs(190)).await;
    assert_eq!(
        s.tick().await.unwrap(),
        4,
        "skip: only the tick due now; stale: its 120 s tick is 70 s late, past the grace; \
         catch: the latest three (170, 180, 190 s)"
    );
    assert_eq!(s.tick().await.unwrap(), 0, "nothing twice");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        s.tick().await.unwrap(),
        2,
        "then one tick each of skip and catch"
    );
    assert_eq!(ready(&b).await, 6);
}

#[tokio::test(start_paused = true)]
async fn schedules_change_at_run_time() {
    let b = backend("sched-change").await;
    let s = Scheduler::new(&b, "app").unwrap();
    s.add(Schedule::every("a", "reports", Duration::from_secs(5)).unwrap())
        .await
        .unwrap();
    s.add(Schedule::every("b", "reports", Duration::from_secs(5)).unwrap())
        .await
        .unwrap();
    let names: Vec<String> = s
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let h = s.clone().start();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(ready(&b).await, 4, "two ticks of each");
    // Removed from another handle (another process would do the same).
    assert!(Scheduler::new(&b, "app")
        .unwrap()
        .remove("b")
        .await
        .unwrap());
    assert!(!s.remove("b").await.unwrap(), "already gone");
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.stop().await;
    assert_eq!(ready(&b).await, 6, "only a ticked after b was removed");
}

#[test]
fn cron_follows_the_time_zone_and_its_daylight_saving() {
    let s = Schedule::cron("standup", "reports", "0 9 * * MON-FRI", "America/New_York").unwrap();
    let ms = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64;
    // Monday 2026-11-30, winter (UTC-5): 09:00 in New York is 14:00 UTC.
    assert_eq!(
        s.next_after(ms("2026-11-30T00:00:00Z")).unwrap(),
        ms("2026-11-30T14:00:00Z")
    );
    // Friday 2026-07-03 is summer (UTC-4): 13:00 UTC; the weekend is skipped.
    assert_eq!(
        s.next_after(ms("2026-07-03T14:00:00Z")).unwrap(),
        ms("2026-07-06T13:00:00Z")
    );
    let ticks = s
        .ticks(ms("2026-11-27T00:00:00Z"), ms("2026-12-01T23:00:00Z"), 10)
        .unwrap();
    assert_eq!(
        ticks,
        [
            ms("2026-11-27T14:00:00Z"),
            ms("2026-11-30T14:00:00Z"),
            ms("2026-12-01T14:00:00Z")
        ]
    );
}

#[tokio::test]
async fn bad_schedules_are_refused() {
    for bad in [
        Schedule::cron("x", "q", "61 * * * *", "UTC"),
        Schedule::cron("x", "q", "not cron", "UTC"),
        Schedule::cron("x", "q", "0 9 * * *", "Mars/Olympus_Mons"),
        Schedule::every("x", "q", Duration::ZERO),
        Schedule::every("", "q", Duration::from_secs(5)),
        Schedule::every("x", "q", Duration::from_secs(5))
            .and_then(|s| s.missed(Missed::CatchUp(0))),
    ] {
        assert!(matches!(bad, Err(QueueError::InvalidOption(_))), "{bad:?}");
    }
    let b = queue_core::connect("memory://sched-nostore").await.unwrap();
    assert!(matches!(
        Scheduler::new(&b, "app"),
        Err(QueueError::NoStatusStore)
    ));
}

#[tokio::test(start_paused = true)]
async fn schedulers_racing_for_one_tick_enqueue_it_once() {
    let b = queue_core::connect("memory://sched-race")
        .await
        .unwrap()
        .with_status(JobStatuses::new(Arc::new(
            queue_core::testkit::store::Yielding::new(),
        )));
    b.queue("reports").create().await.unwrap();
    let (s1, s2) = (
        Scheduler::new(&b, "app").unwrap(),
        Scheduler::new(&b, "app").unwrap(),
    );
    s1.add(
        Schedule::every("r", "reports", Duration::from_secs(10))
            .unwrap()
            .missed(Missed::CatchUp(5))
            .unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (a, c) = tokio::join!(s1.tick(), s2.tick());
    assert_eq!(
        a.unwrap() + c.unwrap(),
        3,
        "three ticks, each enqueued by one of the two"
    );
    assert_eq!(ready(&b).await, 3);
}
