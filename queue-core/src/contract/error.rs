//! Typed errors shared by every backend.

use std::time::Duration;

/// Shorthand for `Result<T, QueueError>`.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// A boxed error from a backend's client library, kept as the `source` of a [`QueueError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to a queue, the same for every backend.
///
/// Errors that come from a request the caller can fix (`Oversize`, `Unsupported`,
/// `InvalidOption`, `InvalidUrl`, `UnknownScheme`, `UnknownQueue`) are raised *before* any
/// message is written, so nothing is half-sent. Errors from the backend keep the client's
/// error as their [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A message is larger than the backend (or queue) accepts.
    #[error("message of {size} bytes exceeds the {backend} limit of {max} bytes")]
    Oversize {
        /// Encoded size of the message (payload plus headers).
        size: usize,
        /// The limit declared in [`crate::Capabilities::max_message_size`].
        max: usize,
        /// Backend name.
        backend: &'static str,
    },
    /// A send option or operation the backend does not support (and the core cannot emulate).
    #[error("{backend} does not support {feature}")]
    Unsupported {
        /// What was asked for, e.g. "ordering keys".
        feature: String,
        /// Backend name.
        backend: &'static str,
    },
    /// An option value that is out of range or malformed.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A queue URL that cannot be parsed or is missing a required part.
    #[error("invalid queue URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials are redacted).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL whose scheme no driver registered.
    #[error("unknown queue URL scheme {scheme:?}; known schemes: {}", known.join(", "))]
    UnknownScheme {
        /// The scheme that was asked for.
        scheme: String,
        /// The schemes registered in this process.
        known: Vec<String>,
    },
    /// The queue (or topic, or stream group) does not exist; call `create_queue` first.
    #[error("queue {0:?} does not exist (create it with Queue::create)")]
    UnknownQueue(String),
    /// A receipt whose lease has ended: the message may already be leased by someone else.
    #[error("receipt is no longer valid (lease expired or message already settled)")]
    ReceiptExpired,
    /// A receipt this driver did not issue (from another backend, or forged).
    #[error("receipt was not issued by this {backend} driver: {reason}")]
    InvalidReceipt {
        /// Backend name.
        backend: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend could not be reached.
    #[error("cannot connect to {backend}: {source}")]
    Connection {
        /// Backend name.
        backend: &'static str,
        /// Underlying client error.
        #[source]
        source: BoxError,
    },
    /// The backend refused our credentials.
    #[error("{backend} rejected the credentials: {source}")]
    Auth {
        /// Backend name.
        backend: &'static str,
        /// Underlying client error.
        #[source]
        source: BoxError,
    },
    /// Any other error reported by the backend.
    #[error("{backend} error: {source}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// Underlying client error.
        #[source]
        source: BoxError,
    },
    /// A batch call in which some entries failed; the others succeeded.
    #[error("{} of the batch's entries failed; first: {}", failed.len(), failed.first().map(|f| f.1.as_str()).unwrap_or(""))]
    PartialBatch {
        /// Index in the batch and reason of each failed entry.
        failed: Vec<(usize, String)>,
    },
    /// An operation timed out.
    #[error("operation timed out after {0:?}")]
    Timeout(Duration),
    /// A payload could not be decoded into a job.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No status record for this job id: never sent with status on, or its record expired
    /// (see [`crate::status::Retention`]).
    #[error("no job {0:?} (unknown id, or its status record expired)")]
    JobNotFound(String),
    /// The job already finished, so it cannot be cancelled.
    #[error("job {id:?} already finished ({state}); only queued, failed or running jobs can be cancelled")]
    JobFinished {
        /// The job's id.
        id: String,
        /// The state it finished in.
        state: crate::status::JobState,
    },
    /// What the backend holds is not laid out the way this driver expects: its schema was
    /// written by a newer version of the driver, or a table it needs is gone (dropped by
    /// hand). Nothing was written. The reason says what to do.
    #[error("{backend} schema {schema:?}: {reason}")]
    Schema {
        /// Backend name.
        backend: &'static str,
        /// The schema (or namespace) concerned.
        schema: String,
        /// What does not match, and what to do.
        reason: String,
    },
    /// A flow that cannot run (a cycle, a dependency on a job not in it, too large, a job
    /// the backend would refuse, a queue that does not exist, an id another flow has:
    /// refused before anything is written), or one whose records cannot be read. See
    /// [`crate::flow`].
    #[error("invalid flow: {0}")]
    InvalidFlow(String),
    /// A batch operation that cannot be done: adding to a closed batch, a batch id that is
    /// taken or unknown, a callback the backend would refuse, or records that cannot be
    /// read. See [`crate::batch`].
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// An operation needs job status, and the backend was not given a status store
    /// ([`crate::Backend::with_status`]).
    #[error(
        "no shared store on this backend: job status, pause, unique jobs and schedules need one (Backend::with_store or Backend::with_status)"
    )]
    NoStatusStore,
    /// The backend does not give what the application said it needs
    /// ([`crate::Backend::require`]); every missing need is listed, with the backends that
    /// have it.
    #[error(
        "{backend} cannot give this application what it requires: {}",
        unmet.iter().map(|u| u.to_string()).collect::<Vec<_>>().join("; ")
    )]
    Unmet {
        /// Backend name.
        backend: &'static str,
        /// Each missing need, with the backends that have it.
        unmet: Vec<crate::needs::Unmet>,
    },
}

impl QueueError {
    /// Wraps a client error as [`QueueError::Backend`].
    pub fn backend(backend: &'static str, e: impl Into<BoxError>) -> Self {
        QueueError::Backend {
            backend,
            source: e.into(),
        }
    }

    /// Wraps a client error as [`QueueError::Connection`].
    pub fn connection(backend: &'static str, e: impl Into<BoxError>) -> Self {
        QueueError::Connection {
            backend,
            source: e.into(),
        }
    }

    /// Builds [`QueueError::Unsupported`].
    pub fn unsupported(backend: &'static str, feature: impl Into<String>) -> Self {
        QueueError::Unsupported {
            feature: feature.into(),
            backend,
        }
    }

    /// Builds [`QueueError::InvalidUrl`], redacting any password in `url`.
    pub fn invalid_url(url: &str, reason: impl Into<String>) -> Self {
        QueueError::InvalidUrl {
            url: redact(url),
            reason: reason.into(),
        }
    }

    /// The result of acking `total` receipts of which those at `stale` (indexes) had lost
    /// their lease: `Ok` when none, [`QueueError::ReceiptExpired`] for a single receipt,
    /// else [`QueueError::PartialBatch`]. For drivers' `ack`.
    pub fn stale_receipts(total: usize, stale: Vec<usize>) -> Result<()> {
        match (stale.len(), total) {
            (0, _) => Ok(()),
            (_, 1) => Err(QueueError::ReceiptExpired),
            _ => Err(QueueError::PartialBatch {
                failed: stale
                    .into_iter()
                    .map(|i| (i, QueueError::ReceiptExpired.to_string()))
                    .collect(),
            }),
        }
    }

    /// Builds [`QueueError::InvalidReceipt`].
    pub fn invalid_receipt(backend: &'static str, reason: impl Into<String>) -> Self {
        QueueError::InvalidReceipt {
            backend,
            reason: reason.into(),
        }
    }

    /// True for errors that a retry of the same call may cure: a lost or refused
    /// connection and a timeout. Everything else (a bad request, an unknown queue, refused
    /// credentials, a stale receipt, an error the backend reported) fails the same way
    /// again.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Connection { .. } | QueueError::Timeout(_))
    }
}

/// Removes secrets from a URL for error messages, logs and `Debug` output: the password,
/// and the value of every query option whose name mentions a secret (`password`, `secret`,
/// `token`, `key`). Text that is not a URL is returned as `<unparsable URL>` when it
/// contains an `@` (it may hold credentials), else unchanged.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let lower = k.to_ascii_lowercase();
                        let secret = ["password", "secret", "token", "key"]
                            .iter()
                            .any(|s| lower.contains(s));
                        let v = if secret {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) if url.contains('@') => "<unparsable URL>".to_string(),
        Err(_) => url.to_string(),
    }
}

/// Why a payload could not be turned into a typed job. The worker dead-letters such messages
/// at once (retrying cannot fix them) with this error as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a job envelope (not JSON, or missing `job`/`v`/`data`).
    #[error("payload is not a job envelope: {0}")]
    NotAnEnvelope(String),
    /// No handler is registered for this job name.
    #[error("no handler for job {name:?}; known jobs: {}", known.join(", "))]
    UnknownJob {
        /// Name found in the envelope.
        name: String,
        /// Names the worker has handlers for.
        known: Vec<String>,
    },
    /// The envelope's format version is newer than this worker understands.
    #[error("job {name:?} has envelope version {version}, this worker handles up to {supported}")]
    UnsupportedVersion {
        /// Job name.
        name: String,
        /// Version found.
        version: u32,
        /// Highest version the registered job type declares.
        supported: u32,
    },
    /// The driver could not decode the stored message (a foreign writer, broken headers).
    #[error("the {0}")]
    Undecodable(String),
    /// The envelope is fine but its data does not match the job type.
    #[error("job {name:?} has malformed data: {error}")]
    InvalidData {
        /// Job name.
        name: String,
        /// serde's message.
        error: String,
    },
}
