//! The command line: arguments, and one function per subcommand.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use queue::{Backend, DeadLetterKind, JobStatuses, Message, QueueError};

use crate::error::CliError;
use crate::output::{self, Output};

/// Operate queues on any backend: Redis, SQS, Kafka, PostgreSQL or memory.
///
/// Exit codes: 0 done; 1 the backend failed (down, refused credentials); 2 bad usage or
/// input; 3 the backend cannot do this; 4 not found (queue, job or message); 5 refused
/// (a purge without confirmation).
#[derive(Debug, Parser)]
#[command(name = "queuectl", version, about, long_about)]
pub struct Cli {
    /// The backend, e.g. redis://127.0.0.1:6379, sqs://..., kafka://..., postgres://...,
    /// memory://.
    #[arg(long, env = "QUEUE_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// Where job status and the paused state live (redis://, postgres://): the store
    /// your workers were given with `Backend::with_status`.
    #[arg(long, env = "STATUS_URL", global = true, hide_env_values = true)]
    pub status_url: Option<String>,
    /// Tables for people, JSON for scripts.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Depths by state (ready, in flight, delayed, dead) of each queue.
    Stats {
        /// Queues to show.
        #[arg(required = true)]
        queues: Vec<String>,
        /// Refresh until interrupted.
        #[arg(long)]
        watch: bool,
        /// Time between refreshes with --watch.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: Duration,
        /// Stop after this many refreshes with --watch.
        #[arg(long)]
        times: Option<u64>,
    },
    /// The next ready messages, without taking them (where the backend can).
    Peek {
        /// The queue.
        queue: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 10)]
        count: usize,
    },
    /// Dead letters: list them, or show one.
    Dlq {
        /// What to do with them.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Move dead letters back into their queue, with a fresh attempt count.
    Redrive {
        /// The queue whose dead letters move.
        queue: String,
        /// Most dead letters to move.
        #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
        limit: usize,
        /// Only those dead-lettered for this reason.
        #[arg(long, value_enum)]
        reason: Option<Reason>,
    },
    /// Remove every message of a queue (asks first unless --yes).
    Purge {
        /// The queue.
        queue: String,
        /// Purge its dead-letter queue instead.
        #[arg(long)]
        dlq: bool,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Send one message.
    Send {
        /// The queue.
        queue: String,
        /// The payload, JSON.
        #[arg(long)]
        json: String,
        /// Wrap the payload as a job of this name, for typed handlers.
        #[arg(long)]
        job: Option<String>,
        /// The job's envelope version, with --job.
        #[arg(long, default_value_t = 1, requires = "job")]
        job_version: u32,
        /// Deliver after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
    },
    /// Pause a queue for every worker that shares the status store.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// A job's status by the id its send returned.
    Job {
        /// The id.
        id: String,
    },
    /// A flow's jobs with their states (see `queue::flow`); `--cancel` cancels what has
    /// not finished.
    Flow {
        /// The flow's id.
        id: String,
        /// Cancel every job of it that has not finished.
        #[arg(long)]
        cancel: bool,
    },
    /// A batch's counts and callbacks (see `queue::batch`); `--close` closes it first.
    Batch {
        /// The batch's id.
        id: String,
        /// Close it (it takes no more jobs; its callbacks go once every job has settled).
        #[arg(long)]
        close: bool,
    },
    /// The web dashboard, with Prometheus metrics at /metrics.
    Serve {
        /// Queues to show.
        #[arg(required = true)]
        queues: Vec<String>,
        /// Address to listen on; anything but loopback needs --token.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The token a request must carry (Authorization: Bearer, or once as ?token=).
        #[arg(long, env = "QUEUECTL_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// Dead-letter subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The oldest dead letters with their reasons.
    List {
        /// The queue whose dead letters to list.
        queue: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: usize,
    },
    /// One dead letter in full.
    Show {
        /// The queue whose dead letter it is.
        queue: String,
        /// The message id.
        id: String,
        /// How many dead letters to look through.
        #[arg(long, default_value_t = 1000)]
        scan: usize,
    },
}

/// Dead-letter reasons, as written in the `x-queue-dlq-reason` header.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Reason {
    /// The last allowed attempt failed.
    MaxAttempts,
    /// The handler said the job can never succeed.
    Permanent,
    /// The payload did not decode.
    Malformed,
    /// The last allowed attempt ran past its timeout.
    Timeout,
    /// No worker knew the job's name within its grace (a newer job type than the workers).
    UnknownJob,
    /// Its runs kept killing the worker process.
    Crashed,
    /// A job of a flow whose dependency failed; it never ran.
    DependencyFailed,
}

impl From<Reason> for DeadLetterKind {
    fn from(r: Reason) -> Self {
        match r {
            Reason::MaxAttempts => DeadLetterKind::MaxAttempts,
            Reason::Permanent => DeadLetterKind::Permanent,
            Reason::Malformed => DeadLetterKind::Malformed,
            Reason::Timeout => DeadLetterKind::Timeout,
            Reason::UnknownJob => DeadLetterKind::UnknownJob,
            Reason::Crashed => DeadLetterKind::Crashed,
            Reason::DependencyFailed => DeadLetterKind::DependencyFailed,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 30s, 5m, 1h)"))
}

/// Connects to the backend, with the status store when one is given.
pub async fn connect(url: Option<&str>, status_url: Option<&str>) -> Result<Backend, CliError> {
    let url = url.ok_or_else(|| {
        CliError::Usage(
            "no backend: pass --url or set QUEUE_URL (e.g. redis://127.0.0.1:6379)".into(),
        )
    })?;
    let mut backend = queue::connect(url).await?;
    if let Some(s) = status_url {
        backend = backend.with_status(JobStatuses::new(queue::connect_store(s).await?));
    }
    Ok(backend)
}

/// Runs one parsed command, writing to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    if let Command::Serve {
        queues,
        listen,
        token,
    } = cli.command
    {
        let backend = connect(cli.url.as_deref(), cli.status_url.as_deref()).await?;
        let access = match token {
            Some(t) => crate::dashboard::Access::Token(t),
            None => crate::dashboard::Access::Loopback,
        };
        let dash = crate::dashboard::Dashboard::new(backend, queues, access)?;
        return crate::dashboard::serve(dash, listen).await;
    }
    let backend = connect(cli.url.as_deref(), cli.status_url.as_deref()).await?;
    let fmt = cli.output;
    match cli.command {
        Command::Stats {
            queues,
            watch,
            interval,
            times,
        } => {
            let mut n = 0u64;
            loop {
                let mut rows = Vec::new();
                for q in &queues {
                    rows.push((q.clone(), backend.queue(q.clone()).stats().await?));
                }
                output::stats(out, fmt, backend.kind(), &rows)?;
                n += 1;
                if !watch || times.is_some_and(|t| n >= t) {
                    return Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = queue::shutdown_signal() => return Ok(()),
                }
            }
        }
        Command::Peek { queue, count } => {
            let q = backend.queue(queue);
            let msgs = q.peek(count).await.map_err(|e| explain_peek(e, q.name()))?;
            output::peeked(out, fmt, &msgs)
        }
        Command::Dlq {
            command: DlqCommand::List { queue, count },
        } => {
            let q = backend.queue(queue);
            let dead = q
                .dead_letters(count)
                .await
                .map_err(|e| explain_peek(e, q.name()))?;
            output::dead_letters(out, fmt, &dead)
        }
        Command::Dlq {
            command: DlqCommand::Show { queue, id, scan },
        } => {
            let q = backend.queue(queue);
            let dead = q
                .dead_letters(scan)
                .await
                .map_err(|e| explain_peek(e, q.name()))?;
            let d = dead
                .into_iter()
                .find(|d| d.message.id.as_str() == id)
                .ok_or_else(|| {
                    CliError::NotFound(format!(
                        "no dead letter {id:?} among the first {scan} of {:?} (raise --scan?)",
                        q.name()
                    ))
                })?;
            output::dead_letter(out, fmt, &d)
        }
        Command::Redrive {
            queue,
            limit,
            reason,
        } => {
            let q = backend.queue(queue);
            let total = q.stats().await?.dead;
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total.min(limit as u64)),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_message("redriving");
            let moved = q
                .redrive_matching(limit, reason.map(Into::into), |n| {
                    bar.set_position(n as u64)
                })
                .await?;
            bar.finish_and_clear();
            output::done(out, fmt, "redriven", q.name(), moved as u64)
        }
        Command::Purge { queue, dlq, yes } => {
            let mut q = backend.queue(queue);
            if dlq {
                q = q.dead_letter_queue();
            }
            let n = q.stats().await?;
            let count = if dlq { n.dead } else { n.total() - n.dead };
            if !yes {
                confirm(q.name(), count, backend.kind()).await?;
            }
            q.purge().await?;
            output::done(out, fmt, "purged", q.name(), count)
        }
        Command::Send {
            queue,
            json,
            job,
            job_version,
            delay,
        } => {
            let data: serde_json::Value = serde_json::from_str(&json)
                .map_err(|e| CliError::Usage(format!("--json is not valid JSON: {e}")))?;
            let payload = match &job {
                Some(name) => queue::job::encode_named(name, job_version, &data),
                None => serde_json::to_vec(&data),
            }
            .map_err(|e| CliError::Usage(format!("cannot encode the payload: {e}")))?;
            let mut m = Message::new(payload);
            if let Some(d) = delay {
                m = m.delay(d);
            }
            let q = backend.queue(queue);
            q.stats().await?; // an unknown queue is an error, not a new queue
            let id = q.producer().send(m).await?;
            output::sent(out, fmt, q.name(), id.as_str())
        }
        Command::Pause { queue } => {
            let q = backend.queue(queue);
            q.stats().await?;
            let changed = q.pause().await.map_err(explain_store)?;
            output::toggled(out, fmt, q.name(), "paused", changed)
        }
        Command::Resume { queue } => {
            let q = backend.queue(queue);
            let changed = q.resume().await.map_err(explain_store)?;
            output::toggled(out, fmt, q.name(), "resumed", changed)
        }
        Command::Job { id } => {
            let s = backend
                .job_status(&queue::MessageId::new(id.clone()))
                .await
                .map_err(explain_store)?
                .ok_or_else(|| {
                    CliError::NotFound(format!(
                        "no job {id:?} in the status store (unknown, or its record expired)"
                    ))
                })?;
            output::job(out, fmt, &s)
        }
        Command::Flow { id, cancel } => {
            let gone = || {
                CliError::NotFound(format!(
                    "no flow {id:?} in the store (unknown, or its records expired)"
                ))
            };
            if cancel {
                let n = backend
                    .cancel_flow(&id)
                    .await
                    .map_err(explain_store)?
                    .ok_or_else(gone)?;
                eprintln!("cancelled {n} unfinished job(s) of flow {id:?}");
            }
            let s = backend
                .flow_status(&id)
                .await
                .map_err(explain_store)?
                .ok_or_else(gone)?;
            output::flow(out, fmt, &s)
        }
        Command::Batch { id, close } => {
            let gone = || {
                CliError::NotFound(format!(
                    "no batch {id:?} in the store (unknown, or its records expired)"
                ))
            };
            // Read first: closing an unknown batch is a not-found, like reading one.
            backend
                .batch_status(&id)
                .await
                .map_err(explain_store)?
                .ok_or_else(gone)?;
            if close {
                backend
                    .batch(id.clone())
                    .close()
                    .await
                    .map_err(explain_store)?;
                eprintln!("closed batch {id:?}");
            }
            let s = backend
                .batch_status(&id)
                .await
                .map_err(explain_store)?
                .ok_or_else(gone)?;
            output::batch(out, fmt, &s)
        }
        Command::Serve { .. } => unreachable!("handled above"),
    }
}

fn explain_peek(e: QueueError, queue: &str) -> CliError {
    match e {
        QueueError::Unsupported { backend, .. } => CliError::Unsupported(format!(
            "{backend} cannot show {queue:?}'s messages without taking them; \
             `queuectl redrive --reason` still works, and `stats` shows the depths"
        )),
        e => e.into(),
    }
}

fn explain_store(e: QueueError) -> CliError {
    match e {
        QueueError::NoStatusStore => CliError::Usage(
            "this needs the store your workers use for job status: pass --status-url or set \
             STATUS_URL (e.g. redis://127.0.0.1:6379 or postgres://...)"
                .into(),
        ),
        e => e.into(),
    }
}

/// Asks on the terminal; refuses when there is none.
async fn confirm(queue: &str, count: u64, kind: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Refused(format!(
            "purging {queue:?} needs confirmation: pass --yes when not at a terminal"
        )));
    }
    eprint!("Purge {count} message(s) from {queue:?} on {kind}? Type the queue name to confirm: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    tokio::io::AsyncBufReadExt::read_line(&mut stdin, &mut line)
        .await
        .map_err(|e| CliError::Refused(format!("could not read the confirmation: {e}")))?;
    if line.trim() != queue {
        return Err(CliError::Refused("not confirmed; nothing purged".into()));
    }
    Ok(())
}
