//! Cron and repeatable jobs (feature `cron`): schedules by cron expression in a time zone,
//! or by a fixed interval, each enqueuing a job per tick on any backend.
//!
//! Schedules live in the shared [`Store`] (the backend's status store,
//! [`crate::Backend::with_status`]) as one record per schedule set, so
//! [`Scheduler::add`], [`Scheduler::remove`] and [`Scheduler::list`] work at run time from
//! any process, and every scheduler of the set sees the change within [`RELOAD`].
//!
//! Any number of schedulers may run: each tick is enqueued as a unique job
//! ([`crate::unique`]) whose key is the schedule's name and the tick's time, so two
//! schedulers reaching the same tick make one job. Each schedule's last enqueued tick is
//! kept in the store too; when schedulers were all down, [`Missed`] says what happens to
//! the ticks they missed: skipped (only a tick at most [`Missed::GRACE`] old still runs),
//! or caught up, the latest `n` of them, oldest first.
//!
//! Cron expressions have 5 fields (minute precision) or 6 (seconds first), with names
//! (`MON`, `JAN`), ranges, steps, lists, `L` and `#`, parsed by `croner`; times are
//! resolved in the schedule's IANA time zone by `jiff` (from the system's tz database),
//! so `0 9 * * MON-FRI` in `Europe/Paris` follows daylight saving time. A new schedule
//! starts at its next tick after it was added.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{QueueError, Result};
use crate::handle::Backend;
use crate::limit::now_ms;
use crate::message::Message;
use crate::store::{self, Store};
use crate::unique::{Unique, UniqueScope};

/// How often a scheduler reads the schedule set again.
pub const RELOAD: Duration = Duration::from_secs(1);
/// How long a tick's unique key is kept: it only has to cover two schedulers reaching the
/// same tick at once; afterwards the schedule's last tick keeps the tick from coming back.
const TICK_KEY_TTL: Duration = Duration::from_secs(3600);
/// Most ticks a catch-up enqueues.
pub const MAX_CATCH_UP: u32 = 1000;

/// When a schedule ticks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Every {
    /// A cron expression in an IANA time zone (`"UTC"`, `"Europe/Paris"`).
    Cron {
        /// The expression (5 or 6 fields).
        expr: String,
        /// The time zone.
        tz: String,
    },
    /// Every `ms` milliseconds from the time the schedule was added.
    Interval {
        /// The interval in milliseconds.
        ms: u64,
    },
}

/// What happens to ticks missed while no scheduler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Missed {
    /// Skip them: only a tick at most [`Missed::GRACE`] old is still enqueued.
    Skip,
    /// Enqueue the latest `n` of them (1 to [`MAX_CATCH_UP`]), oldest first.
    CatchUp(u32),
}

impl Missed {
    /// How late a tick may be and still run under [`Missed::Skip`].
    pub const GRACE: Duration = Duration::from_secs(60);
}

/// One schedule: when it ticks, and the job each tick enqueues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Schedule {
    /// Its name, unique within its set.
    pub name: String,
    /// The queue each tick's job goes to.
    pub queue: String,
    /// When it ticks.
    pub every: Every,
    /// The job's name (its handler's `Job::NAME`).
    pub job: String,
    /// The job's data.
    pub data: serde_json::Value,
    /// What happens to missed ticks.
    pub missed: Missed,
    /// When it was added, ms since the Unix epoch (intervals count from here).
    pub since_ms: u64,
}

impl Schedule {
    /// A schedule by cron expression in time zone `tz`. A malformed expression or an
    /// unknown zone is [`QueueError::InvalidOption`].
    pub fn cron(name: &str, queue: &str, expr: &str, tz: &str) -> Result<Self> {
        parse_cron(expr)?;
        zone(tz)?;
        Self::new(
            name,
            queue,
            Every::Cron {
                expr: expr.to_string(),
                tz: tz.to_string(),
            },
        )
    }

    /// A schedule every `interval` (1 second to a year).
    pub fn every(name: &str, queue: &str, interval: Duration) -> Result<Self> {
        if interval < Duration::from_secs(1) || interval > store::MAX_TTL {
            return Err(QueueError::InvalidOption(format!(
                "a schedule's interval must be 1 s to a year, got {interval:?}"
            )));
        }
        Self::new(
            name,
            queue,
            Every::Interval {
                ms: interval.as_millis() as u64,
            },
        )
    }

    fn new(name: &str, queue: &str, every: Every) -> Result<Self> {
        if name.is_empty() || name.len() > 200 || queue.is_empty() {
            return Err(QueueError::InvalidOption(format!(
                "a schedule needs a name of 1 to 200 bytes and a queue, got {name:?} / {queue:?}"
            )));
        }
        Ok(Schedule {
            name: name.into(),
            queue: queue.into(),
            every,
            job: "schedule".into(),
            data: serde_json::Value::Null,
            missed: Missed::Skip,
            since_ms: now_ms(),
        })
    }

    /// The job each tick enqueues: `job` (a handler's `Job::NAME`) with `data`.
    pub fn job(mut self, job: &str, data: serde_json::Value) -> Self {
        self.job = job.into();
        self.data = data;
        self
    }

    /// What happens to missed ticks (default [`Missed::Skip`]).
    pub fn missed(mut self, missed: Missed) -> Result<Self> {
        if let Missed::CatchUp(n) = missed {
            if n == 0 || n > MAX_CATCH_UP {
                return Err(QueueError::InvalidOption(format!(
                    "a catch-up must be 1 to {MAX_CATCH_UP} ticks, got {n}"
                )));
            }
        }
        self.missed = missed;
        Ok(self)
    }

    /// The ticks due in `(after, now]`, at most `max`, oldest first, in ms.
    pub fn ticks(&self, after: u64, now: u64, max: usize) -> Result<Vec<u64>> {
        if now <= after || max == 0 {
            return Ok(Vec::new());
        }
        let mut out = match &self.every {
            Every::Interval { ms } => {
                let ms = (*ms).max(1);
                let last_k = now.saturating_sub(self.since_ms) / ms;
                let first_k = after.saturating_sub(self.since_ms) / ms + 1;
                let from = first_k.max(last_k.saturating_sub(max as u64 - 1));
                (from..=last_k)
                    .map(|k| self.since_ms + k * ms)
                    .filter(|t| *t > after && *t <= now)
                    .collect::<Vec<_>>()
            }
            Every::Cron { expr, tz } => {
                let cron = parse_cron(expr)?;
                let now_z = zoned(now + 1, tz)?; // iter_before is exclusive: include `now`
                let mut v = Vec::new();
                for t in cron.iter_before(now_z).take(max) {
                    let ms = t.timestamp().as_millisecond().max(0) as u64;
                    if ms <= after {
                        break;
                    }
                    v.push(ms);
                }
                v.reverse();
                v
            }
        };
        out.truncate(max);
        Ok(out)
    }

    /// The next tick after `now`, in ms.
    pub fn next_after(&self, now: u64) -> Result<u64> {
        match &self.every {
            Every::Interval { ms } => {
                let ms = (*ms).max(1);
                Ok(self.since_ms + (now.saturating_sub(self.since_ms) / ms + 1) * ms)
            }
            Every::Cron { expr, tz } => {
                let t = parse_cron(expr)?
                    .find_next_occurrence(&zoned(now, tz)?, false)
                    .map_err(|e| QueueError::InvalidOption(format!("cron {expr:?}: {e}")))?;
                Ok(t.timestamp().as_millisecond().max(0) as u64)
            }
        }
    }
}

fn parse_cron(expr: &str) -> Result<croner::Cron> {
    croner::Cron::from_str(expr)
        .map_err(|e| QueueError::InvalidOption(format!("cron expression {expr:?}: {e}")))
}

fn zone(tz: &str) -> Result<jiff::tz::TimeZone> {
    jiff::tz::TimeZone::get(tz)
        .map_err(|e| QueueError::InvalidOption(format!("time zone {tz:?}: {e}")))
}

fn zoned(ms: u64, tz: &str) -> Result<jiff::Zoned> {
    let ts = jiff::Timestamp::from_millisecond(ms as i64)
        .map_err(|e| QueueError::InvalidOption(format!("time {ms} ms: {e}")))?;
    Ok(ts.to_zoned(zone(tz)?))
}

/// Schedules of one set, in the backend's store, and the loop that enqueues their ticks.
#[derive(Clone, Debug)]
pub struct Scheduler {
    backend: Backend,
    store: Arc<dyn Store>,
    set: String,
}

type Set = BTreeMap<String, Schedule>;

impl Scheduler {
    /// The schedules of set `set` on `backend`, which needs a shared store
    /// ([`crate::Backend::with_status`]; otherwise [`QueueError::NoStatusStore`]).
    pub fn new(backend: &Backend, set: &str) -> Result<Self> {
        let store = backend.store().ok_or(QueueError::NoStatusStore)?.clone();
        Ok(Scheduler {
            backend: backend.clone(),
            store,
            set: set.to_string(),
        })
    }

    fn key(&self) -> String {
        format!("schedules:{}", self.set)
    }

    async fn load(&self) -> Result<(Set, Option<u64>)> {
        match self.store.get(&self.key()).await? {
            None => Ok((Set::new(), None)),
            Some(v) => {
                let set = serde_json::from_slice(&v.value).map_err(|e| {
                    QueueError::backend("schedule store", format!("unreadable schedule set: {e}"))
                })?;
                Ok((set, Some(v.version)))
            }
        }
    }

    async fn change(&self, f: impl Fn(&mut Set) -> bool) -> Result<bool> {
        for _ in 0..20 {
            let (mut set, version) = self.load().await?;
            if !f(&mut set) {
                return Ok(false);
            }
            let bytes =
                serde_json::to_vec(&set).map_err(|e| QueueError::backend("schedule store", e))?;
            let done = match version {
                Some(v) => {
                    self.store
                        .replace(&self.key(), v, &bytes, store::MAX_TTL)
                        .await?
                }
                None => {
                    self.store
                        .insert(&self.key(), &bytes, store::MAX_TTL)
                        .await?
                }
            };
            if done.is_some() {
                return Ok(true);
            }
        }
        Err(QueueError::backend(
            "schedule store",
            "too many writers raced; try again",
        ))
    }

    /// Adds `s`, or replaces the schedule of that name.
    pub async fn add(&self, s: Schedule) -> Result<()> {
        self.change(|set| {
            set.insert(s.name.clone(), s.clone());
            true
        })
        .await
        .map(|_| ())
    }

    /// Removes the schedule called `name`; `false` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        self.change(|set| set.remove(name).is_some()).await
    }

    /// Every schedule of the set, by name.
    pub async fn list(&self) -> Result<Vec<Schedule>> {
        Ok(self.load().await?.0.into_values().collect())
    }

    /// Enqueues every tick due now; returns how many jobs this call sent.
    pub async fn tick(&self) -> Result<usize> {
        let now = now_ms();
        let mut sent = 0;
        for s in self.load().await?.0.values() {
            sent += self.tick_one(s, now).await?;
        }
        Ok(sent)
    }

    async fn tick_one(&self, s: &Schedule, now: u64) -> Result<usize> {
        let last_key = format!("schedule-last:{}:{}", self.set, s.name);
        let last = self.store.get(&last_key).await?;
        let after = match &last {
            Some(v) => std::str::from_utf8(&v.value)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(s.since_ms),
            None => s.since_ms,
        };
        let max = match s.missed {
            Missed::Skip => 1,
            Missed::CatchUp(n) => n as usize,
        };
        let mut due = s.ticks(after, now, max)?;
        if s.missed == Missed::Skip {
            due.retain(|t| now - t <= Missed::GRACE.as_millis() as u64);
        }
        let mut sent = 0;
        let q = self.backend.queue(s.queue.clone());
        for t in &due {
            let payload = crate::job::encode_named(&s.job, 1, &s.data)
                .map_err(|e| QueueError::InvalidOption(format!("schedule {}: {e}", s.name)))?;
            let key = format!("schedule:{}:{}:{t}", self.set, s.name);
            let u = Unique::new(key, UniqueScope::For(TICK_KEY_TTL))?;
            let out = q
                .producer()
                .send_unique_batch(vec![(Message::new(payload), u)])
                .await?;
            if matches!(out.first(), Some(crate::unique::Enqueued::New(_))) {
                sent += 1;
            }
        }
        // Remember the latest tick looked at (compare-and-set; another scheduler may have).
        let newest = match s.ticks(after, now, 1)?.last() {
            Some(t) => *t,
            None => return Ok(sent),
        };
        let bytes = newest.to_string().into_bytes();
        let _ = match last {
            Some(v) => {
                self.store
                    .replace(&last_key, v.version, &bytes, store::MAX_TTL)
                    .await?
            }
            None => self.store.insert(&last_key, &bytes, store::MAX_TTL).await?,
        };
        Ok(sent)
    }

    /// Runs the scheduler on the current tokio runtime until the handle is stopped: it
    /// enqueues due ticks and reads the set again every [`RELOAD`] (sooner when a tick is
    /// due). A failing store or backend is logged and tried again; nothing panics.
    pub fn start(self) -> SchedulerHandle {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = self.tick().await {
                    tracing::warn!(set = %self.set, error = %e, "scheduler tick failed; trying again");
                }
                let now = now_ms();
                let next = self
                    .load()
                    .await
                    .ok()
                    .and_then(|(set, _)| set.values().filter_map(|s| s.next_after(now).ok()).min())
                    .map(|t| Duration::from_millis(t.saturating_sub(now)))
                    .unwrap_or(RELOAD);
                tokio::select! {
                    _ = tokio::time::sleep(next.min(RELOAD)) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        SchedulerHandle { stop, task }
    }
}

/// A running scheduler.
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SchedulerHandle {
    /// Stops the scheduler (a tick in progress finishes first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
