//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the decode paths of
//! what a Kafka broker or another writer hands this driver. Not a stable API.

use queue_core::driver::receipt;
use queue_core::Delivery;

use crate::codec;

pub use super::codec::plain::Record;

/// The names of the headers this driver reads, for a fuzz target to pick from.
pub const HEADER_NAMES: [&str; 5] = codec::RESERVED;

/// Decodes a record; returns the delivery and its due time (`None` when it is due now
/// or malformed). Never panics, whatever the record holds.
pub fn decode_record(r: &Record<'_>) -> (Delivery, Option<u64>) {
    codec::decode("fuzz", r)
}

/// Parses `text` as a receipt: `Ok` only for `topic|partition|offset`.
pub fn parse_receipt_text(text: &str) -> bool {
    codec::parse_receipt(&receipt(text.to_string())).is_ok()
}
