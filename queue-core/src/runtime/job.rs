//! Typed jobs and the envelope that carries them.
//!
//! A job is a serde type with a stable [`Job::NAME`]. On the wire it travels as a JSON
//! envelope `{"job": NAME, "v": VERSION, "data": ...}`, so that a worker can tell an unknown
//! job or a malformed payload from a bug in a handler, and dead-letter it with the reason
//! instead of panicking or blocking the queue.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::retry::RetryPolicy;

/// A background job type.
///
/// ```
/// use queue_core::Job;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SendEmail { to: String }
/// impl Job for SendEmail { const NAME: &'static str = "send_email"; }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name the job is routed by. Renaming it strands queued jobs.
    const NAME: &'static str;
    /// Envelope format version. Bump it when the data changes incompatibly; a worker
    /// dead-letters envelopes newer than the version it was built with.
    const VERSION: u32 = 1;
    /// Per-job-type retry policy, overriding the worker's.
    fn retry_policy() -> Option<RetryPolicy> {
        None
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    job: String,
    v: u32,
    data: T,
}

/// Encodes a job into envelope bytes.
pub fn encode<J: Job>(job: &J) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        job: J::NAME.to_string(),
        v: J::VERSION,
        data: job,
    })
}

/// Encodes an envelope for job `name` at `version` with `data` as it is, for tools that
/// send jobs without their Rust type (`queuectl send --job NAME`).
pub fn encode_named(
    name: &str,
    version: u32,
    data: &serde_json::Value,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        job: name.to_string(),
        v: version,
        data,
    })
}

/// An envelope whose name and version are read but whose data is not yet typed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RawEnvelope {
    /// Job name.
    pub job: String,
    /// Format version.
    pub version: u32,
    /// The job's data, still as JSON.
    pub data: serde_json::Value,
}

/// Reads the envelope from bytes without knowing the job type.
pub fn decode_envelope(bytes: &[u8]) -> Result<RawEnvelope, DecodeError> {
    let e: Envelope<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotAnEnvelope(e.to_string()))?;
    Ok(RawEnvelope {
        job: e.job,
        version: e.v,
        data: e.data,
    })
}

/// Decodes the envelope's data as job `J`, checking the version.
pub fn decode_data<J: Job>(env: RawEnvelope) -> Result<J, DecodeError> {
    if env.version > J::VERSION {
        return Err(DecodeError::UnsupportedVersion {
            name: env.job,
            version: env.version,
            supported: J::VERSION,
        });
    }
    serde_json::from_value(env.data).map_err(|e| DecodeError::InvalidData {
        name: env.job,
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Email {
        to: String,
    }
    impl Job for Email {
        const NAME: &'static str = "email";
        const VERSION: u32 = 2;
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&Email { to: "a@b".into() }).unwrap();
        let env = decode_envelope(&bytes).unwrap();
        assert_eq!(env.job, "email");
        assert_eq!(env.version, 2);
        assert_eq!(
            decode_data::<Email>(env).unwrap(),
            Email { to: "a@b".into() }
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for bytes in [
            &b""[..],
            b"\xff\xfe",
            b"{",
            b"[]",
            b"{\"job\":1}",
            b"null",
            b"{\"v\":1}",
        ] {
            assert!(
                matches!(decode_envelope(bytes), Err(DecodeError::NotAnEnvelope(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn wrong_data_and_newer_version_are_typed_errors() {
        let env = decode_envelope(br#"{"job":"email","v":1,"data":{"too":3}}"#).unwrap();
        assert!(matches!(
            decode_data::<Email>(env),
            Err(DecodeError::InvalidData { .. })
        ));
        let env = decode_envelope(br#"{"job":"email","v":3,"data":{"to":"x"}}"#).unwrap();
        assert!(matches!(
            decode_data::<Email>(env),
            Err(DecodeError::UnsupportedVersion {
                version: 3,
                supported: 2,
                ..
            })
        ));
    }
}
