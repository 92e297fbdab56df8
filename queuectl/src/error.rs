//! What can go wrong, each with its exit code and a line that says what to do.

use queue::QueueError;

/// A failed command.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// The backend (or store) failed, or said no: exit code 1.
    Backend(QueueError),
    /// Bad usage or input: exit code 2.
    Usage(String),
    /// The backend cannot do this: exit code 3.
    Unsupported(String),
    /// No such queue, job or message: exit code 4.
    NotFound(String),
    /// Refused for want of confirmation: exit code 5.
    Refused(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Backend(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unsupported(_) => 3,
            CliError::NotFound(_) => 4,
            CliError::Refused(_) => 5,
        }
    }
}

impl From<QueueError> for CliError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::InvalidOption(_)
            | QueueError::InvalidUrl { .. }
            | QueueError::UnknownScheme { .. }
            | QueueError::Oversize { .. } => CliError::Usage(e.to_string()),
            QueueError::Unsupported { .. } => CliError::Unsupported(e.to_string()),
            QueueError::UnknownQueue(q) => CliError::NotFound(format!(
                "queue {q:?} does not exist on this backend (check the name and --url)"
            )),
            QueueError::JobNotFound(_) => CliError::NotFound(e.to_string()),
            e => CliError::Backend(e),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Backend(e) => {
                write!(f, "{e}")?;
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    write!(f, ": {s}")?;
                    src = s.source();
                }
                match e {
                    QueueError::Connection { .. } => {
                        write!(f, " (is the server running, and is --url right?)")
                    }
                    QueueError::Auth { .. } => write!(f, " (check the credentials in --url)"),
                    _ => Ok(()),
                }
            }
            CliError::Usage(m)
            | CliError::Unsupported(m)
            | CliError::NotFound(m)
            | CliError::Refused(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}
