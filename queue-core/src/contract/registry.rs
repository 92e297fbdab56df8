//! Backend selection from a URL: `memory://`, and whatever schemes other drivers register.
//! One binary switches backend with an environment variable and no code change:
//!
//! ```no_run
//! # async fn run() -> queue_core::Result<()> {
//! let url = std::env::var("QUEUE_URL").unwrap_or_else(|_| "memory://".into());
//! let backend = queue_core::connect(&url).await?;
//! # Ok(()) }
//! ```
//!
//! The bundled drivers (`redis://`, `sqs://`, `kafka://`) are known without registration
//! through the `queue` crate's cargo features (`queue::connect`). [`register`] is for a
//! driver written outside this workspace.

use std::collections::BTreeMap;
use std::sync::{OnceLock, RwLock};

use crate::driver::Connector;
use crate::error::{QueueError, Result};
use crate::handle::Backend;

fn registry() -> &'static RwLock<BTreeMap<String, Connector>> {
    static REG: OnceLock<RwLock<BTreeMap<String, Connector>>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut m: BTreeMap<String, Connector> = BTreeMap::new();
        m.insert("memory".into(), crate::memory::connector);
        RwLock::new(m)
    })
}

/// Registers `connector` for URL `scheme` (replacing any earlier one), so that
/// [`connect`] opens URLs of that scheme with it.
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
pub async fn connect(url: &str) -> Result<Backend> {
    let parsed = url::Url::parse(url).map_err(|e| QueueError::invalid_url(url, e.to_string()))?;
    let connector = registry()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(parsed.scheme())
        .copied();
    match connector {
        Some(c) => Ok(Backend::from_driver(c(parsed).await?)),
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
        let e = QueueError::invalid_url("redis://user:secret@host/0?token=t0k", "x");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(!e.to_string().contains("t0k"), "{e}");
    }
}
