//! A record's changes, by the one-record path: what a start and an end make of a record
//! (shared with the batches in [`super::batch`]), and the compare-and-set loop that writes
//! one record until its write lands.

use super::*;

/// A start's inputs.
#[derive(Clone, Debug)]
pub(crate) struct StartArgs {
    queue: String,
    job: Option<String>,
    attempt: u32,
    crash_limit: u32,
}

impl StartArgs {
    pub(super) fn new(queue: &str, job: Option<&str>, attempt: u32, crash_limit: u32) -> Self {
        StartArgs {
            queue: queue.to_string(),
            job: job.map(str::to_string),
            attempt,
            crash_limit,
        }
    }
}

/// An end's inputs, the result already checked against the size limit.
#[derive(Clone, Debug)]
pub(crate) struct End {
    state: JobState,
    error: Option<String>,
    result: Option<serde_json::Value>,
}

impl Core {
    /// The change a start makes to a record (`None`: absent), and what the worker does.
    pub(super) fn start_change(
        id: &str,
        a: &StartArgs,
        rec: Option<JobStatus>,
    ) -> (Start, Option<JobStatus>) {
        let mut rec = rec.unwrap_or_else(|| {
            JobStatus::new(id, &a.queue, a.job.as_deref(), JobState::Queued, now())
        });
        match rec.state {
            JobState::Cancelled => return (Start::Cancelled, None),
            JobState::Succeeded => return (Start::Run, None),
            JobState::Running => rec.crashes = rec.crashes.saturating_add(1),
            // Redriven from the dead-letter queue: it starts afresh.
            JobState::Dead => rec.crashes = 0,
            _ => {}
        }
        if a.crash_limit > 0 && rec.crashes >= a.crash_limit {
            let n = rec.crashes;
            rec.state = JobState::Dead;
            rec.finished_at = Some(now());
            rec.last_error = Some(crashed_error(n));
            return (Start::Crashed(n), Some(rec));
        }
        rec.state = JobState::Running;
        rec.attempt = a.attempt;
        rec.started_at = Some(now());
        rec.finished_at = None;
        rec.cancel_requested = false;
        rec.progress = None;
        (Start::Run, Some(rec))
    }

    /// The change an end makes to a record (`None`: write nothing).
    pub(super) fn end_change(e: &End, rec: Option<JobStatus>) -> Option<JobStatus> {
        let mut rec = rec?;
        if rec.state == JobState::Succeeded {
            return None; // final: a duplicate's run does not rewrite it
        }
        rec.state = e.state;
        // A run that ended, however: the count is of runs in a row that never did.
        rec.crashes = 0;
        rec.last_error = e.error.clone().or(rec.last_error);
        if e.state.is_finished() {
            rec.finished_at = Some(now());
        }
        if e.state == JobState::Succeeded {
            rec.result = e.result.clone();
            rec.progress = rec.progress.map(|p| Progress { percent: 100, ..p });
        }
        if e.state == JobState::Queued {
            rec.started_at = None;
        }
        Some(rec)
    }

    /// An end's inputs: a result over the size limit is left out, and why becomes the
    /// error (unless the attempt has one of its own).
    pub(super) fn end(
        &self,
        state: JobState,
        error: Option<String>,
        result: Option<std::result::Result<serde_json::Value, String>>,
        id: &str,
    ) -> End {
        let (result, result_error) = match result {
            Some(Ok(v)) => {
                let size = serde_json::to_vec(&v)
                    .map(|b| b.len())
                    .unwrap_or(usize::MAX);
                if size > self.max_result {
                    let why = format!(
                        "result of {size} bytes not kept: over the {} byte limit",
                        self.max_result
                    );
                    tracing::warn!(id, "{why}");
                    (None, Some(why))
                } else {
                    (Some(v), None)
                }
            }
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        End {
            state,
            error: error.or(result_error),
            result,
        }
    }

    /// A start on its own: read, change, write until the write lands.
    pub(super) async fn start_one(
        &self,
        id: &str,
        a: &StartArgs,
    ) -> Result<(Start, Option<Written>)> {
        let mut start = Start::Run;
        let (rec, version) = self
            .update(id, |rec| {
                let (s, next) = Self::start_change(id, a, rec);
                start = s;
                next
            })
            .await?;
        let written = match start {
            Start::Run => rec.zip(version),
            _ => None,
        };
        Ok((start, written))
    }

    /// An end on its own.
    pub(super) async fn finish_one(&self, id: &str, e: &End) -> Result<()> {
        self.update(id, |rec| Self::end_change(e, rec))
            .await
            .map(|_| ())
    }

    pub(super) async fn read(&self, id: &str) -> Result<Option<(JobStatus, u64)>> {
        let k = key(id);
        store::check(&k, Duration::from_secs(1))?;
        let Some(v) = self.store.get(&k).await? else {
            return Ok(None);
        };
        Ok(Some((decode(id, &v.value)?, v.version)))
    }

    /// Reads, changes and writes back one record until the write lands at the version it
    /// read. `change` gets the current record (`None`: absent) and returns the new one,
    /// or `None` to write nothing. Returns the record as written (or as found) and, when
    /// written, its new version.
    pub(super) async fn update(
        &self,
        id: &str,
        mut change: impl FnMut(Option<JobStatus>) -> Option<JobStatus>,
    ) -> Result<(Option<JobStatus>, Option<u64>)> {
        let k = key(id);
        for _ in 0..CAS_TRIES {
            let found = self.read(id).await?;
            let (current, version) = match found {
                Some((r, v)) => (Some(r), Some(v)),
                None => (None, None),
            };
            let Some(next) = change(current.clone()) else {
                return Ok((current, None));
            };
            let bytes = encode(&next)?;
            let ttl = self.retention.for_state(next.state);
            let written = match version {
                Some(v) => self.store.replace(&k, v, &bytes, ttl).await?,
                None => self.store.insert(&k, &bytes, ttl).await?,
            };
            if let Some(v) = written {
                return Ok((Some(next), Some(v)));
            }
        }
        Err(QueueError::backend(
            "status store",
            format!("job {id:?}: {CAS_TRIES} concurrent writes in a row; gave up"),
        ))
    }
}
