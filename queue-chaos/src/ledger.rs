//! The ledger: what every worker process did, written so that a SIGKILL cannot corrupt it,
//! and read back by the harness to count processed, lost and duplicated jobs.
//!
//! A worker appends one line per handler run, `<unix_ms> <message id>\n`, with a single
//! `write` on a file opened with `O_APPEND`: the kernel appends it whole, and a process
//! killed before the call leaves nothing (the job was not acked either, so it is delivered
//! again). The harness reads each file incrementally, so a long run is not re-read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One worker process's append-only record of handler runs.
#[derive(Debug)]
pub struct LedgerWriter {
    file: Mutex<File>,
}

impl LedgerWriter {
    /// Creates (or appends to) the ledger file at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LedgerWriter {
            file: Mutex::new(file),
        })
    }

    /// Records that the handler ran for message `id`. One `write` call per line.
    pub fn record(&self, id: &str) -> std::io::Result<()> {
        let line = format!("{} {id}\n", now_ms());
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes())
    }
}

/// Everything the workers of one run recorded, read incrementally from a directory of
/// ledger files.
#[derive(Debug, Default)]
pub struct Ledger {
    dir: PathBuf,
    offsets: HashMap<PathBuf, (u64, Vec<u8>)>,
    /// Handler runs per message id.
    pub runs: HashMap<String, u32>,
    /// Handler runs per second since the epoch (for throughput and recovery).
    pub per_second: HashMap<u64, u64>,
    /// All handler runs.
    pub total: u64,
    /// The first and the last handler run (Unix ms).
    pub span: Option<(u64, u64)>,
}

impl Ledger {
    /// A reader of the ledger files in `dir`.
    pub fn new(dir: &Path) -> Self {
        Ledger {
            dir: dir.to_path_buf(),
            ..Default::default()
        }
    }

    /// Reads what was appended since the last call.
    pub fn refresh(&mut self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("ledger") {
                continue;
            }
            let (offset, rest) = self.offsets.entry(path.clone()).or_default();
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(*offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            *offset += buf.len() as u64;
            rest.extend_from_slice(&buf);
            let complete = match rest.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => continue,
            };
            let lines: Vec<u8> = rest.drain(..complete).collect();
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let line = String::from_utf8_lossy(line);
                let Some((ms, id)) = line.split_once(' ') else {
                    continue;
                };
                *self.runs.entry(id.to_string()).or_default() += 1;
                if let Ok(ms) = ms.parse::<u64>() {
                    *self.per_second.entry(ms / 1000).or_default() += 1;
                    self.span = Some(match self.span {
                        None => (ms, ms),
                        Some((a, b)) => (a.min(ms), b.max(ms)),
                    });
                }
                self.total += 1;
            }
        }
        Ok(())
    }

    /// How many of `ids` have run at least once.
    pub fn processed_of<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> usize {
        ids.into_iter()
            .filter(|id| self.runs.contains_key(*id))
            .count()
    }

    /// Handler runs beyond the first, summed over every id.
    pub fn repeats(&self) -> u64 {
        self.runs
            .values()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_lines_incrementally_and_counts_repeats() {
        let dir = std::env::temp_dir().join(format!("chaos-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let w = LedgerWriter::open(&dir.join("a.ledger")).unwrap();
        w.record("job-1").unwrap();
        w.record("job-2").unwrap();
        let mut l = Ledger::new(&dir);
        l.refresh().unwrap();
        assert_eq!(l.total, 2);
        // A torn line (a writer killed mid-line) is not counted until it is whole.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("a.ledger"))
            .unwrap();
        f.write_all(b"123 job-").unwrap();
        l.refresh().unwrap();
        assert_eq!(l.total, 2);
        f.write_all(b"1\n").unwrap();
        l.refresh().unwrap();
        assert_eq!(l.total, 3);
        assert_eq!(l.runs["job-1"], 2);
        assert_eq!(l.repeats(), 1);
        assert_eq!(
            l.processed_of(&["job-1".to_string(), "job-9".to_string()]),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
