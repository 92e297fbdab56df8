//! Tables for people, JSON for scripts: one function per kind of answer.

use std::io::Write;
use std::time::SystemTime;

use queue::{DeadLetter, JobStatus, Peeked, QueueStats};
use serde_json::{json, Value};

use crate::error::CliError;

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
}

type Out<'a> = &'a mut (dyn Write + Send);

fn io(e: std::io::Error) -> CliError {
    CliError::Usage(format!("cannot write the output: {e}"))
}

fn print_json(out: Out<'_>, v: &Value) -> Result<(), CliError> {
    writeln!(out, "{v:#}").map_err(io)
}

/// Prints rows as aligned columns under `header`.
fn table(out: Out<'_>, header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec())).map_err(io)?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect())).map_err(io)?;
    }
    Ok(())
}

/// A payload as text for a table cell or a page: UTF-8 as it is, else a note; cut at
/// `max` characters.
pub(crate) fn preview(payload: &[u8], max: usize) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) if s.chars().count() > max => {
            format!("{}…", s.chars().take(max).collect::<String>())
        }
        Ok(s) => s.to_string(),
        Err(_) => format!("({} bytes, not UTF-8)", payload.len()),
    }
}

/// Seconds since the Unix epoch, as RFC 3339.
pub(crate) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn time_ms(ms: u64) -> String {
    time(queue::from_unix_millis(ms))
}

pub(crate) fn stats(
    out: Out<'_>,
    fmt: Output,
    backend: &str,
    rows: &[(String, QueueStats)],
) -> Result<(), CliError> {
    if fmt == Output::Json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(q, s)| {
                json!({"queue": q, "backend": backend, "ready": s.ready,
                    "in_flight": s.in_flight, "delayed": s.delayed, "dead": s.dead})
            })
            .collect();
        return print_json(out, &Value::Array(v));
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(q, s)| {
            vec![
                q.clone(),
                s.ready.to_string(),
                s.in_flight.to_string(),
                s.delayed.to_string(),
                s.dead.to_string(),
            ]
        })
        .collect();
    table(
        out,
        &["QUEUE", "READY", "IN FLIGHT", "DELAYED", "DEAD"],
        &rows,
    )
}

fn peeked_json(p: &Peeked) -> Value {
    json!({
        "id": p.id.as_str(),
        "deliveries": p.deliveries,
        "first_enqueued_at": time(p.first_enqueued_at),
        "ordering_key": p.ordering_key,
        "headers": p.headers,
        "payload": String::from_utf8_lossy(&p.payload),
    })
}

pub(crate) fn peeked(out: Out<'_>, fmt: Output, msgs: &[Peeked]) -> Result<(), CliError> {
    if fmt == Output::Json {
        return print_json(out, &Value::Array(msgs.iter().map(peeked_json).collect()));
    }
    let rows: Vec<Vec<String>> = msgs
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.deliveries.to_string(),
                time(p.first_enqueued_at),
                preview(&p.payload, 60),
            ]
        })
        .collect();
    table(out, &["ID", "DELIVERIES", "ENQUEUED", "PAYLOAD"], &rows)
}

fn dead_json(d: &DeadLetter) -> Value {
    let mut v = peeked_json(&d.message);
    v["reason"] = json!(d.reason.map(|r| r.as_str()));
    v["error"] = json!(d.error);
    v["attempts"] = json!(d.attempts);
    v["source"] = json!(d.source);
    v["dead_at"] = json!(d.dead_at.map(time));
    v
}

pub(crate) fn dead_letters(out: Out<'_>, fmt: Output, dead: &[DeadLetter]) -> Result<(), CliError> {
    if fmt == Output::Json {
        return print_json(out, &Value::Array(dead.iter().map(dead_json).collect()));
    }
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                d.message.id.to_string(),
                d.reason.map_or("-".into(), |r| r.as_str().to_string()),
                d.attempts.map_or("-".into(), |a| a.to_string()),
                d.dead_at.map_or("-".into(), time),
                preview(d.error.as_deref().unwrap_or("-").as_bytes(), 40),
                preview(&d.message.payload, 40),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "REASON", "ATTEMPTS", "DEAD AT", "ERROR", "PAYLOAD"],
        &rows,
    )
}

pub(crate) fn dead_letter(out: Out<'_>, fmt: Output, d: &DeadLetter) -> Result<(), CliError> {
    if fmt == Output::Json {
        return print_json(out, &dead_json(d));
    }
    let v = dead_json(d);
    for k in [
        "id",
        "reason",
        "error",
        "attempts",
        "source",
        "dead_at",
        "first_enqueued_at",
    ] {
        let val = match &v[k] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        writeln!(out, "{:<18} {val}", format!("{k}:")).map_err(io)?;
    }
    writeln!(out, "headers:").map_err(io)?;
    for (k, val) in &d.message.headers {
        writeln!(out, "  {k}: {val}").map_err(io)?;
    }
    writeln!(
        out,
        "payload:\n{}",
        String::from_utf8_lossy(&d.message.payload)
    )
    .map_err(io)
}

pub(crate) fn done(
    out: Out<'_>,
    fmt: Output,
    what: &str,
    queue: &str,
    n: u64,
) -> Result<(), CliError> {
    if fmt == Output::Json {
        return print_json(out, &json!({ "queue": queue, what: n }));
    }
    writeln!(out, "{what} {n} message(s) of {queue:?}").map_err(io)
}

pub(crate) fn sent(out: Out<'_>, fmt: Output, queue: &str, id: &str) -> Result<(), CliError> {
    if fmt == Output::Json {
        return print_json(out, &json!({ "queue": queue, "id": id }));
    }
    writeln!(out, "{id}").map_err(io)
}

pub(crate) fn toggled(
    out: Out<'_>,
    fmt: Output,
    queue: &str,
    what: &str,
    changed: bool,
) -> Result<(), CliError> {
    if fmt == Output::Json {
        return print_json(
            out,
            &json!({ "queue": queue, what: true, "changed": changed }),
        );
    }
    let note = if changed { "" } else { " (it already was)" };
    writeln!(out, "{queue:?} {what}{note}").map_err(io)
}

/// A flow: one line per job, with what it waits on.
pub(crate) fn flow(out: Out<'_>, fmt: Output, s: &queue::flow::FlowStatus) -> Result<(), CliError> {
    if fmt == Output::Json {
        let nodes: Vec<_> = s
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "node": n.node.index(),
                    "queue": n.queue,
                    "job": n.job,
                    "id": n.id.as_str(),
                    "state": n.state.as_str(),
                    "after": n.dependencies.iter().map(|(d, p)| json!({
                        "node": d.index(),
                        "on_failure": format!("{p:?}").to_lowercase(),
                    })).collect::<Vec<_>>(),
                    "error": n.error,
                    "result": n.result,
                })
            })
            .collect();
        return print_json(
            out,
            &json!({ "id": s.id.as_str(), "finished": s.is_finished(), "jobs": nodes }),
        );
    }
    writeln!(
        out,
        "{:<5} {:<10} {:<20} {:<16} {:<14} error",
        "node", "state", "queue", "job", "after"
    )
    .map_err(io)?;
    for n in &s.nodes {
        let after: Vec<String> = n.dependencies.iter().map(|(d, _)| d.to_string()).collect();
        let after = if after.is_empty() {
            "-".to_string()
        } else {
            after.join(",")
        };
        writeln!(
            out,
            "{:<5} {:<10} {:<20} {:<16} {:<14} {}",
            n.node,
            n.state.as_str(),
            n.queue,
            n.job.as_deref().unwrap_or("(raw)"),
            after,
            n.error.as_deref().unwrap_or("")
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `name: value` lines, `-` for a value that is missing.
fn print_fields(out: Out<'_>, fields: &[(&str, Option<String>)]) -> Result<(), CliError> {
    for (k, v) in fields {
        writeln!(
            out,
            "{:<12} {}",
            format!("{k}:"),
            v.as_deref().unwrap_or("-")
        )
        .map_err(io)?;
    }
    Ok(())
}

/// A batch: its counts, then one line per callback.
pub(crate) fn batch(
    out: Out<'_>,
    fmt: Output,
    s: &queue::batch::BatchStatus,
) -> Result<(), CliError> {
    let callbacks: Vec<_> = s
        .callbacks
        .iter()
        .map(|c| {
            json!({
                "kind": c.kind.as_str(),
                "queue": c.queue,
                "job": c.job,
                "id": c.id.as_str(),
                "state": c.state.as_str(),
                "error": c.error,
            })
        })
        .collect();
    if fmt == Output::Json {
        return print_json(
            out,
            &json!({
                "id": s.id,
                "description": s.description,
                "parent": s.parent,
                "total": s.total,
                "pending": s.pending(),
                "succeeded": s.succeeded,
                "dead": s.dead,
                "closed": s.closed,
                "complete": s.complete,
                "success": s.success,
                "finished": s.is_finished(),
                "callbacks": callbacks,
                "errors": s.errors.iter().map(|(slot, e)| json!({"slot": slot, "error": e})).collect::<Vec<_>>(),
            }),
        );
    }
    let state = match (s.closed, s.complete, s.success) {
        (false, _, _) => "open",
        (true, false, _) => "closed, running",
        (true, true, true) => "complete, every job succeeded",
        (true, true, false) => "complete, some jobs dead",
    };
    let fields = [
        ("id", Some(s.id.clone())),
        ("description", s.description.clone()),
        ("parent", s.parent.clone()),
        ("state", Some(state.to_string())),
        ("total", Some(s.total.to_string())),
        ("pending", Some(s.pending().to_string())),
        ("succeeded", Some(s.succeeded.to_string())),
        ("dead", Some(s.dead.to_string())),
        ("opened_at", Some(time(s.opened_at))),
    ];
    print_fields(&mut *out, &fields)?;
    for c in &s.callbacks {
        writeln!(
            out,
            "on_{:<9} {:<10} {} {} {}",
            c.kind.as_str(),
            c.state.as_str(),
            c.queue,
            c.job.as_deref().unwrap_or("(raw)"),
            c.error.as_deref().unwrap_or("")
        )
        .map_err(io)?;
    }
    for (slot, e) in &s.errors {
        writeln!(out, "dead slot {slot}: {e}").map_err(io)?;
    }
    Ok(())
}

pub(crate) fn job(out: Out<'_>, fmt: Output, s: &JobStatus) -> Result<(), CliError> {
    if fmt == Output::Json {
        let v = serde_json::to_value(s).map_err(|e| CliError::Usage(e.to_string()))?;
        return print_json(out, &v);
    }
    let progress = s
        .progress
        .as_ref()
        .map(|p| format!("{}% {}", p.percent, p.message.as_deref().unwrap_or("")));
    let fields = [
        ("id", Some(s.id.clone())),
        ("queue", Some(s.queue.clone())),
        ("job", s.job.clone()),
        ("state", Some(s.state.as_str().to_string())),
        ("attempt", Some(s.attempt.to_string())),
        ("enqueued_at", Some(time_ms(s.enqueued_at))),
        ("started_at", s.started_at.map(time_ms)),
        ("finished_at", s.finished_at.map(time_ms)),
        ("progress", progress),
        ("last_error", s.last_error.clone()),
        ("result", s.result.as_ref().map(|r| r.to_string())),
    ];
    print_fields(&mut *out, &fields)?;
    Ok(())
}
