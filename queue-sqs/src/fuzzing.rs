//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the decode path of
//! what SQS (or another writer) hands this driver. Not a stable API.

use queue_core::Delivery;

use crate::codec::{decode, Received};

/// Builds a received message from `parts` (body; the values of the driver's attributes
/// `x-queue-headers`, `x-queue-enc` and `x-queue-id`; SQS's system attributes
/// `SentTimestamp`, `ApproximateReceiveCount` and `MessageGroupId`; the receipt handle;
/// the message id: any of them absent or arbitrary) and the binary payload attribute, and
/// decodes it. Any input gives one delivery, malformed where it does not decode, never a
/// panic.
pub fn decode_parts(parts: &[Option<&str>], binary: Option<&[u8]>) -> Delivery {
    let get = |i: usize| parts.get(i).copied().flatten().map(str::to_string);
    let m = Received {
        body: get(0),
        headers: get(1),
        encoding: get(2),
        id: get(3),
        sent_timestamp: get(4),
        receive_count: get(5),
        group_id: get(6),
        receipt_handle: get(7),
        message_id: get(8),
        binary: binary.map(<[u8]>::to_vec),
    };
    decode("fuzz", m)
}
