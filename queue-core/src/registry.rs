//! Backend selection from a URL: `memory://`, and whatever schemes driver crates register
//! (`redis://`, `sqs://`, `kafka://`). One binary switches backend with an environment
//! variable and no code change:
//!
//! ```no_run
//! # async fn run() -> queue_core::Result<()> {
//! // queue_redis::register(); queue_sqs::register(); ... at start-up
//! let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://".into());
//! let queue = queue_core::connect(&url).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};

use crate::error::{QueueError, Result};
use crate::queue::Queue;

/// The future a [`Connector`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Queue>>> + Send>>;

/// Opens a backend from a parsed URL.
pub type Connector = fn(url::Url) -> ConnectFuture;

fn registry() -> &'static RwLock<BTreeMap<String, Connector>> {
    static REG: OnceLock<RwLock<BTreeMap<String, Connector>>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut m: BTreeMap<String, Connector> = BTreeMap::new();
        m.insert("memory".into(), crate::memory::connector);
        RwLock::new(m)
    })
}

/// Registers `connector` for URL `scheme` (replacing any earlier one). Driver crates call
/// this from their own `register()` function.
pub fn register(scheme: &str, connector: Connector) {
    registry()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(scheme.to_ascii_lowercase(), connector);
}

/// The schemes registered in this process.
pub fn schemes() -> Vec<String> {
    registry()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect()
}

/// Opens the backend named by `url`.
///
/// A malformed URL is [`QueueError::InvalidUrl`]; a scheme no driver registered is
/// [`QueueError::UnknownScheme`] listing the known ones.
pub async fn connect(url: &str) -> Result<Arc<dyn Queue>> {
    let parsed = url::Url::parse(url).map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
    let connector = registry()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(parsed.scheme())
        .copied();
    match connector {
        Some(c) => c(parsed).await,
        None => Err(QueueError::UnknownScheme {
            scheme: parsed.scheme().to_string(),
            known: schemes(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_and_lists_schemes() {
        assert!(connect("memory://").await.is_ok());
        match connect("nope://x").await {
            Err(QueueError::UnknownScheme { scheme, known }) => {
                assert_eq!(scheme, "nope");
                assert!(known.contains(&"memory".to_string()));
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(
            connect("not a url").await,
            Err(QueueError::InvalidUrl { .. })
        ));
        assert!(matches!(
            connect("").await,
            Err(QueueError::InvalidUrl { .. })
        ));
        let e = connect("memory://?max_message_size=abc")
            .await
            .err()
            .unwrap();
        assert!(matches!(e, QueueError::InvalidUrl { .. }), "{e}");
    }

    #[test]
    fn redacts_passwords() {
        let e = QueueError::invalid_url("redis://user:secret@host/0", "x");
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
