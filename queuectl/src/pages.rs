//! The dashboard's HTML (maud: escaped by default, checked at compile time).

use maud::{html, Markup, PreEscaped, DOCTYPE};
use queue::batch::BatchStatus;
use queue::flow::{FlowStatus, NodeState, NodeStatus, OnFailure};
use queue::{DeadLetter, JobStatus, QueueStats};

use crate::dashboard::url_path;
use crate::output::{preview, time};

const STYLE: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.7em 1.5em;display:flex;gap:2em;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:1em 1.5em;max-width:1200px}
table{border-collapse:collapse;background:#fff;width:100%;margin:.5em 0 1.5em}
th,td{text-align:left;padding:.35em .7em;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef0f4;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.dead{color:#b42318;font-weight:600}
.flash{background:#e8f3ff;border:1px solid #9cc8f5;padding:.5em 1em}
.error{background:#fdecec;border:1px solid #f1a9a9;padding:.5em 1em}
code,.mono{font-family:ui-monospace,monospace;font-size:13px}
form.inline{display:inline-block;background:#fff;border:1px solid #e3e6eb;padding:.7em 1em;margin:0 1em 1em 0}
button{font:inherit;padding:.2em .9em}
.levels{display:flex;gap:1.2em;align-items:flex-start;overflow-x:auto;margin:.5em 0 1.5em}
.level{display:flex;flex-direction:column;gap:.6em;min-width:11em}
.node{background:#fff;border:1px solid #e3e6eb;border-left:5px solid #9aa3b2;padding:.4em .7em}
.node.succeeded{border-left-color:#2e9e5b}.node.failed{border-left-color:#b42318}
.node.sent,.node.released{border-left-color:#2f6fdb}
";

fn layout(title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="5"; }
                title { (title) " · queuectl" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/" { "queuectl" }
                    form action="/jobs" method="get" {
                        input name="id" placeholder="job id" aria-label="job id";
                        " " button type="submit" { "Look up" }
                    }
                    form action="/flows" method="get" {
                        input name="id" placeholder="flow id" aria-label="flow id";
                        " " button type="submit" { "Look up" }
                    }
                    form action="/batches" method="get" {
                        input name="id" placeholder="batch id" aria-label="batch id";
                        " " button type="submit" { "Look up" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// One queue's line on the overview.
pub(crate) struct Row {
    pub(crate) queue: String,
    pub(crate) stats: Result<QueueStats, String>,
    pub(crate) trend: Option<f64>,
}

pub(crate) fn overview(backend: &str, rows: &[Row]) -> Markup {
    layout(
        "Queues",
        true,
        html! {
            h1 { "Queues on " (backend) }
            table id="queues" {
                tr { th { "Queue" } th { "Ready" } th { "In flight" } th { "Delayed" } th { "Dead" } th { "Change / min" } }
                @for r in rows {
                    tr data-queue=(r.queue) {
                        td { a href=(url_path(&r.queue)) { (r.queue) } }
                        @match &r.stats {
                            Ok(s) => {
                                td.n { (s.ready) } td.n { (s.in_flight) } td.n { (s.delayed) }
                                td.n.dead[s.dead > 0] { (s.dead) }
                            }
                            Err(e) => { td colspan="4" .error { (e) } }
                        }
                        td.n { @match r.trend { Some(t) => { (format!("{t:+.1}")) }, None => { "…" } } }
                    }
                }
            }
            p { small { "Refreshes every 5 seconds. Change / min: how fast the queue grew (+) or drained (−) over the last five minutes." } }
        },
    )
}

/// What a queue's page shows.
pub(crate) struct QueueView<'a> {
    pub(crate) backend: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) stats: Result<QueueStats, String>,
    /// `Err(None)`: the backend cannot list dead letters without taking them.
    pub(crate) dead: Result<Vec<DeadLetter>, Option<String>>,
    pub(crate) csrf: &'a str,
    pub(crate) flash: Option<&'a str>,
}

pub(crate) fn queue(v: QueueView<'_>) -> Markup {
    let action = url_path(v.queue);
    layout(
        v.queue,
        false,
        html! {
            h1 { (v.queue) small { " on " (v.backend) } }
            @if let Some(m) = v.flash { p.flash role="status" { (m) } }
            @match &v.stats {
                Ok(s) => {
                    table id="depths" {
                        tr { th { "Ready" } th { "In flight" } th { "Delayed" } th { "Dead" } }
                        tr { td.n { (s.ready) } td.n { (s.in_flight) } td.n { (s.delayed) } td.n.dead[s.dead > 0] { (s.dead) } }
                    }
                }
                Err(e) => { p.error { "Stats unavailable: " (e) } }
            }
            h2 { "Dead letters" }
            @match &v.dead {
                Ok(list) if list.is_empty() => { p id="no-dead" { "No dead letters." } }
                Ok(list) => {
                    table id="dead-letters" {
                        tr { th { "Id" } th { "Reason" } th { "Error" } th { "Attempts" } th { "Dead at" } th { "Payload" } }
                        @for d in list {
                            tr {
                                td.mono { (d.message.id) }
                                td { (d.reason.map_or("-", |r| r.as_str())) }
                                td { (d.error.as_deref().map_or("-".to_string(), |e| preview(e.as_bytes(), 120))) }
                                td.n { (d.attempts.map_or("-".to_string(), |a| a.to_string())) }
                                td { (d.dead_at.map_or("-".to_string(), time)) }
                                td.mono { (preview(&d.message.payload, 120)) }
                            }
                        }
                    }
                }
                Err(None) => { p id="no-peek" { (v.backend) " cannot list dead letters without taking them; the counts above are exact enough to act on, and a redrive by reason works." } }
                Err(Some(e)) => { p.error { "Dead letters unavailable: " (e) } }
            }
            form.inline id="redrive" method="post" action=(format!("{action}/redrive")) {
                input type="hidden" name="csrf" value=(v.csrf);
                strong { "Redrive" } " "
                select name="reason" aria-label="reason" {
                    option value="all" { "all reasons" }
                    @for r in ["max-attempts", "permanent", "malformed", "timeout", "unknown-job", "crashed", "dependency-failed"] { option value=(r) { (r) } }
                }
                " up to " input name="limit" size="6" placeholder="all" aria-label="limit";
                label { " " input type="checkbox" name="confirm" value="yes"; " I mean it" }
                " " button type="submit" { "Redrive" }
            }
            form.inline id="purge" method="post" action=(format!("{action}/purge")) {
                input type="hidden" name="csrf" value=(v.csrf);
                strong { "Purge" } " "
                select name="target" aria-label="what to purge" {
                    option value="dlq" { "dead letters" }
                    option value="queue" { "the queue" }
                }
                " type the queue's name: " input name="confirm" size="14" aria-label="confirm";
                " " button type="submit" { "Purge" }
            }
            script { (PreEscaped("setInterval(function(){var a=document.activeElement;if(!a||a===document.body)location.reload()},10000)")) }
        },
    )
}

pub(crate) fn job(id: &str, found: Option<Result<Option<JobStatus>, String>>) -> Markup {
    layout(
        "Job",
        false,
        html! {
            h1 { "Job " span.mono { (id) } }
            @match found {
                None => { p { "Enter a job id above." } }
                Some(Err(e)) => { p.error { (e) } }
                Some(Ok(None)) => { p.error id="job-missing" { "No such job: unknown, or its record expired." } }
                Some(Ok(Some(s))) => {
                    table id="job" {
                        tr { th { "State" } td.state { (s.state.as_str()) } }
                        tr { th { "Queue" } td { a href=(url_path(&s.queue)) { (s.queue) } } }
                        tr { th { "Job" } td { (s.job.as_deref().unwrap_or("-")) } }
                        tr { th { "Attempt" } td { (s.attempt) } }
                        @if let Some(p) = &s.progress { tr { th { "Progress" } td { (p.percent) "% " (p.message.as_deref().unwrap_or("")) } } }
                        @if let Some(e) = &s.last_error { tr { th { "Last error" } td { (e) } } }
                        @if let Some(r) = &s.result { tr { th { "Result" } td.mono { (r.to_string()) } } }
                    }
                }
            }
        },
    )
}

/// A flow as its graph: one column per level (a job's level is one more than its
/// deepest dependency's), each job a box with its state, queue, job name and what it
/// waits on; then the counts per state.
pub(crate) fn flow(id: &str, found: Option<Result<Option<FlowStatus>, String>>) -> Markup {
    layout(
        "Flow",
        true,
        html! {
            h1 { "Flow " span.mono { (id) } }
            @match found {
                None => { p { "Enter a flow id above." } }
                Some(Err(e)) => { p.error { (e) } }
                Some(Ok(None)) => { p.error id="flow-missing" { "No such flow: unknown, or its records expired." } }
                Some(Ok(Some(s))) => {
                    p id="flow-counts" {
                        @for state in [NodeState::Waiting, NodeState::Sent, NodeState::Succeeded, NodeState::Failed] {
                            (state.as_str()) " " strong { (s.count(state)) } " · "
                        }
                        @if s.is_finished() { "finished" } @else { "running" }
                    }
                    div.levels id="flow" {
                        @for level in levels(&s) {
                            div.level {
                                @for n in level {
                                    div class=(format!("node {}", n.state.as_str())) data-node=(n.node.index()) {
                                        strong { "#" (n.node.index()) " " (n.job.as_deref().unwrap_or("(raw)")) }
                                        br;
                                        span.state { (n.state.as_str()) }
                                        " on " a href=(url_path(&n.queue)) { (n.queue) }
                                        br;
                                        @if !n.dependencies.is_empty() {
                                            "after "
                                            @for (i, (d, p)) in n.dependencies.iter().enumerate() {
                                                @if i > 0 { ", " }
                                                "#" (d.index())
                                                @if !matches!(p, OnFailure::Fail) { " (" (format!("{p:?}").to_lowercase()) ")" }
                                            }
                                            br;
                                        }
                                        a.mono href=(format!("/jobs?id={}", n.id)) { "job" }
                                        @if let Some(e) = &n.error { div.dead { (e) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A batch: its counts as a bar, its callbacks, its first errors.
pub(crate) fn batch(id: &str, found: Option<Result<Option<BatchStatus>, String>>) -> Markup {
    layout(
        "Batch",
        true,
        html! {
            h1 { "Batch " span.mono { (id) } }
            @match found {
                None => { p { "Enter a batch id above." } }
                Some(Err(e)) => { p.error { (e) } }
                Some(Ok(None)) => { p.error id="batch-missing" { "No such batch: unknown, or its records expired." } }
                Some(Ok(Some(s))) => {
                    @if let Some(d) = &s.description { p { (d) } }
                    @if let Some(p) = &s.parent {
                        p { "Nested in " a.mono href=(format!("/batches?id={p}")) { (p) } }
                    }
                    p id="batch-counts" {
                        "total " strong { (s.total) } " · pending " strong { (s.pending()) }
                        " · succeeded " strong { (s.succeeded) } " · dead " strong.dead[s.dead > 0] { (s.dead) }
                        " · "
                        @if !s.closed { "open" }
                        @else if !s.complete { "closed, running" }
                        @else if s.success { "complete, every job succeeded" }
                        @else { "complete, some jobs dead" }
                    }
                    (bar(s.total, s.succeeded, s.dead))
                    @if !s.callbacks.is_empty() {
                        h2 { "Callbacks" }
                        table {
                            tr { th { "on" } th { "state" } th { "queue" } th { "job" } th { "error" } }
                            @for c in &s.callbacks {
                                tr {
                                    td { (c.kind.as_str()) }
                                    td { (c.state.as_str()) }
                                    td { a href=(url_path(&c.queue)) { (c.queue) } }
                                    td { a.mono href=(format!("/jobs?id={}", c.id)) { (c.job.as_deref().unwrap_or("(raw)")) } }
                                    td.dead { (c.error.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                    @if !s.errors.is_empty() {
                        h2 { "First dead jobs" }
                        ul { @for (slot, e) in &s.errors { li { "slot " (slot) ": " span.dead { (e) } } } }
                    }
                }
            }
        },
    )
}

/// Succeeded, dead and pending as one horizontal bar, drawn as SVG.
fn bar(total: u32, ok: u32, dead: u32) -> Markup {
    let w = |n: u32| match total {
        0 => 0.0,
        t => f64::from(n) * 600.0 / f64::from(t),
    };
    let (ok_w, dead_w) = (w(ok), w(dead));
    html! {
        svg id="batch-bar" width="600" height="14" role="img" aria-label="progress" {
            rect x="0" y="0" width="600" height="14" fill="#e3e6eb" {}
            rect x="0" y="0" width=(format!("{ok_w:.1}")) height="14" fill="#2e9e5b" {}
            rect x=(format!("{ok_w:.1}")) y="0" width=(format!("{dead_w:.1}")) height="14" fill="#b42318" {}
        }
    }
}

/// The flow's jobs by level: roots first, each job one level past its deepest dependency.
fn levels(s: &FlowStatus) -> Vec<Vec<&NodeStatus>> {
    let n = s.nodes.len();
    let mut level = vec![0usize; n];
    // Dependencies always point at jobs added earlier or later; repeat until nothing moves
    // (at most n rounds, as the graph has no cycle).
    for _ in 0..n {
        let mut moved = false;
        for (i, node) in s.nodes.iter().enumerate() {
            for (d, _) in &node.dependencies {
                let want = level.get(d.index() as usize).map_or(0, |l| l + 1);
                if level[i] < want {
                    level[i] = want;
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let depth = level.iter().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); depth];
    for (node, l) in s.nodes.iter().zip(level) {
        out[l].push(node);
    }
    out
}

pub(crate) fn not_found(q: &str) -> Markup {
    layout(
        "Not found",
        false,
        html! { h1 { "No queue " (q) } p { "This dashboard shows only the queues it was started with." } },
    )
}
