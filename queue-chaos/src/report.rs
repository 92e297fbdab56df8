//! One run's figures, and the table they print as.

use serde::Serialize;

/// The figures of one run on one backend under one fault.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Backend.
    pub backend: String,
    /// The fault, described.
    pub fault: String,
    /// Jobs whose send returned Ok: the promise.
    pub sent: u64,
    /// Sends that returned an error (sent again, same ids, until Ok).
    pub send_errors: u64,
    /// Of `sent`, processed at least once.
    pub processed: u64,
    /// Of `sent`, not processed but in the dead-letter queue with a reason.
    pub dead_lettered: u64,
    /// Of `sent`, neither processed nor dead-lettered. Must be 0.
    pub lost: u64,
    /// Handler runs beyond the first (at-least-once's price; with the idempotency store
    /// on, repeated effects).
    pub duplicated: u64,
    /// Ids processed that no Ok send accounts for. Always 0 here: ids are fixed before
    /// sending, and a failed send is sent again with the same ids.
    pub extra: u64,
    /// Worker processes SIGKILLed.
    pub kills: u64,
    /// Backend calls that failed in the workers (receive, ack, extend...), as their
    /// reports counted them; each was also logged.
    pub worker_errors: u64,
    /// Seconds from a fault's end until processing ran at half its earlier rate again
    /// (the slowest fault of the run).
    pub recovery_s: f64,
    /// The most recovery may take for the run to pass, where the fault sets one.
    pub recovery_limit: Option<f64>,
    /// Healthy throughput of this run over a clean run's, where the fault sets one (the
    /// poison run), and the least it may be.
    pub throughput_ratio: Option<(f64, f64)>,
    /// The whole run, in seconds.
    pub seconds: f64,
    /// Anything worth a look: lost ids, dead-letter reasons, workers that exited by
    /// themselves.
    pub notes: Vec<String>,
}

impl Report {
    /// Whether the run kept the promise: nothing lost, no worker died by itself.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.throughput_ratio.is_none_or(|(r, min)| r >= min)
            && self.recovery_limit.is_none_or(|l| self.recovery_s <= l)
            && !self.notes.iter().any(|n| n.starts_with("worker exited"))
    }
}

/// The reports as a Markdown table.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::from(
        "| backend | fault | kills | sent | send errors | processed | dead-lettered | lost | duplicated | worker errors | recovery | run |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {:.0} s | {:.0} s |\n",
            r.backend,
            r.fault,
            r.kills,
            r.sent,
            r.send_errors,
            r.processed,
            r.dead_lettered,
            r.lost,
            r.duplicated,
            r.worker_errors,
            r.recovery_s,
            r.seconds
        ));
    }
    s
}
