//! URL options, parsed once for every driver.
//!
//! A driver reads its options from the URL's query with typed accessors and then calls
//! [`UrlOptions::finish`]: an option nobody asked for is an error that lists the known
//! ones, a malformed value is an error that says what was expected, and a value over a
//! limit is an error that states the limit. Nothing is clamped silently.
//!
//! | type | written as | examples |
//! |---|---|---|
//! | duration | a number with a unit (`ms`, `s`, `m`, `h`, `d`; humantime's syntax) | `30s`, `500ms`, `5m`, `1h 30m` |
//! | size | bytes, or a number with `KiB`, `MiB`, `GiB` (also `K`, `M`, `G`), or `KB`, `MB`, `GB` (powers of 1000) | `1048576`, `256KiB`, `1MiB` |
//! | bool | `true`/`false`, `1`/`0`, `yes`/`no` | `cluster=true` |
//! | integer | digits | `partitions=6` |
//!
//! ```
//! use std::time::Duration;
//! use queue_core::options::UrlOptions;
//! let url = url::Url::parse("memory://jobs?dedup_window=2m&max_message_size=64KiB").unwrap();
//! let mut o = UrlOptions::new(&url);
//! assert_eq!(o.duration("dedup_window").unwrap(), Some(Duration::from_secs(120)));
//! assert_eq!(o.size("max_message_size").unwrap(), Some(64 * 1024));
//! o.finish().unwrap();
//! ```

use std::time::Duration;

use crate::error::{redact, QueueError, Result};

/// The query options of one URL, consumed by typed accessors (see the module docs).
/// `Debug` shows the redacted URL and the names of the options not yet taken, never
/// their values.
pub struct UrlOptions {
    url: String,
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl std::fmt::Debug for UrlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlOptions")
            .field("url", &self.url)
            .field(
                "untaken",
                &self
                    .pairs
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl UrlOptions {
    /// The options of `url` (the URL is kept, redacted, for error messages).
    pub fn new(url: &url::Url) -> Self {
        UrlOptions {
            url: redact(url.as_str()),
            pairs: url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            known: Vec::new(),
        }
    }

    /// An [`QueueError::InvalidUrl`] about this URL.
    pub fn error(&self, reason: impl Into<String>) -> QueueError {
        QueueError::InvalidUrl {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    /// Every value given for `name` (for options that may repeat, like a seed host).
    pub fn all(&mut self, name: &'static str) -> Vec<String> {
        self.known.push(name);
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| k == name);
        self.pairs = rest;
        mine.into_iter().map(|(_, v)| v).collect()
    }

    /// The value of `name` as text; given twice is an error.
    pub fn string(&mut self, name: &'static str) -> Result<Option<String>> {
        let mut all = self.all(name);
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.pop()),
            _ => Err(self.error(format!("option {name} is given {} times", all.len()))),
        }
    }

    /// The value of `name` as a boolean.
    pub fn bool(&mut self, name: &'static str) -> Result<Option<bool>> {
        let Some(v) = self.string(name)? else {
            return Ok(None);
        };
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(self.error(format!("{name}={v:?}: expected true or false"))),
        }
    }

    /// The value of `name` as an integer in `min..=max`.
    pub fn integer(&mut self, name: &'static str, min: u64, max: u64) -> Result<Option<u64>> {
        let Some(v) = self.string(name)? else {
            return Ok(None);
        };
        let n: u64 = v
            .parse()
            .map_err(|_| self.error(format!("{name}={v:?}: expected a whole number")))?;
        self.check_range(name, n, min, max, &n.to_string())?;
        Ok(Some(n))
    }

    /// The value of `name` as a duration (`30s`, `500ms`, `5m`).
    pub fn duration(&mut self, name: &'static str) -> Result<Option<Duration>> {
        let Some(v) = self.string(name)? else {
            return Ok(None);
        };
        parse_duration(&v)
            .map(Some)
            .map_err(|e| self.error(format!("{name}={v:?}: {e}")))
    }

    /// The value of `name` as a duration in `min..=max`.
    pub fn duration_within(
        &mut self,
        name: &'static str,
        min: Duration,
        max: Duration,
    ) -> Result<Option<Duration>> {
        let d = self.duration_at_most(name, max)?;
        if let Some(d) = d {
            if d < min {
                return Err(self.error(format!(
                    "{name}={}: the minimum is {}",
                    humantime::format_duration(d),
                    humantime::format_duration(min)
                )));
            }
        }
        Ok(d)
    }

    /// The value of `name` as a duration no longer than `max`.
    pub fn duration_at_most(
        &mut self,
        name: &'static str,
        max: Duration,
    ) -> Result<Option<Duration>> {
        let d = self.duration(name)?;
        if let Some(d) = d {
            if d > max {
                return Err(self.error(format!(
                    "{name}={}: the limit is {}",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                )));
            }
        }
        Ok(d)
    }

    /// The value of `name` as a size in bytes (`1048576`, `256KiB`, `1MiB`).
    pub fn size(&mut self, name: &'static str) -> Result<Option<usize>> {
        self.size_within(name, 0, usize::MAX)
    }

    /// The value of `name` as a size in bytes in `min..=max`.
    pub fn size_within(
        &mut self,
        name: &'static str,
        min: usize,
        max: usize,
    ) -> Result<Option<usize>> {
        let Some(v) = self.string(name)? else {
            return Ok(None);
        };
        let n = parse_size(&v).map_err(|e| self.error(format!("{name}={v:?}: {e}")))?;
        self.check_range(name, n as u64, min as u64, max as u64, &v)?;
        Ok(Some(n))
    }

    fn check_range(&self, name: &str, n: u64, min: u64, max: u64, shown: &str) -> Result<()> {
        if n < min || n > max {
            return Err(self.error(format!(
                "{name}={shown} is out of range: the backend accepts {min} to {max}"
            )));
        }
        Ok(())
    }

    /// Takes every option whose name matches `pred` (a backend that passes its client
    /// library's own properties through, such as librdkafka's dotted names).
    pub fn passthrough(
        &mut self,
        what: &'static str,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        self.known.push(what);
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| pred(k));
        self.pairs = rest;
        mine
    }

    /// Fails on any option no accessor asked for, listing the known ones.
    pub fn finish(self) -> Result<()> {
        if let Some((k, _)) = self.pairs.first() {
            let mut known = self.known.clone();
            known.sort_unstable();
            known.dedup();
            return Err(self.error(format!(
                "unknown option {k:?}; this backend knows: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(())
    }
}

/// Parses a duration with a unit: `30s`, `500ms`, `5m`, `1h 30m`. A bare number is an
/// error (was it seconds or milliseconds?).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a duration needs a unit, e.g. 30s or 500ms".into());
    }
    humantime::parse_duration(s).map_err(|e| format!("not a duration ({e}); e.g. 30s or 500ms"))
}

/// Parses a size: bytes, or a number with `KiB`/`MiB`/`GiB` (powers of 1024) or
/// `KB`/`MB`/`GB` (powers of 1000), case-insensitive, `B` optional.
pub fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size such as 65536, 256KiB or 1MiB".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| "size too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(q: &str) -> UrlOptions {
        UrlOptions::new(&url::Url::parse(&format!("x://h?{q}")).unwrap())
    }

    #[test]
    fn typed_values() {
        let mut o = opts("a=30s&b=2MiB&c=true&d=7&e=x&e=y");
        assert_eq!(o.duration("a").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(o.size("b").unwrap(), Some(2 << 20));
        assert_eq!(o.bool("c").unwrap(), Some(true));
        assert_eq!(o.integer("d", 1, 10).unwrap(), Some(7));
        assert_eq!(o.all("e"), vec!["x", "y"]);
        assert_eq!(o.string("missing").unwrap(), None);
        o.finish().unwrap();
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = opts("a=30").duration("a").unwrap_err().to_string();
        assert!(e.contains("needs a unit"), "{e}");
        let e = opts("b=lots").size("b").unwrap_err().to_string();
        assert!(e.contains("expected a size"), "{e}");
        let e = opts("d=0").integer("d", 1, 10).unwrap_err().to_string();
        assert!(e.contains("1 to 10"), "{e}");
        let e = opts("c=maybe").bool("c").unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
        let e = opts("a=1s&a=2s").duration("a").unwrap_err().to_string();
        assert!(e.contains("2 times"), "{e}");
        let mut o = opts("a=2h");
        let e = o
            .duration_at_most("a", Duration::from_secs(3600))
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit is 1h"), "{e}");
        let mut o = opts("known=1&typo=2&password=hunter2");
        o.string("known").unwrap();
        let e = o.finish().unwrap_err().to_string();
        assert!(e.contains("\"typo\"") && e.contains("knows: known"), "{e}");
        assert!(!e.contains("hunter2"), "secrets are redacted: {e}");
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(parse_size("1kb"), Ok(1000));
    }
}
