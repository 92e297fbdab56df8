//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the decode path of
//! what SQS (or another writer) hands this driver. Not a stable API.

use super::*;
use aws_sdk_sqs::types::{Message as SqsMessage, MessageAttributeValue};

/// Builds a received SQS message from `parts` (body, then the values of the driver's
/// attributes and of SQS's system attributes, any of them absent or arbitrary) and
/// decodes it. Any input must give one delivery, malformed where it does not decode,
/// never an error or a panic.
pub fn decode_parts(parts: &[Option<&str>], binary: Option<&[u8]>) -> Delivery {
    let get = |i: usize| parts.get(i).copied().flatten();
    let mut attrs = HashMap::new();
    let text = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .expect("a string attribute builds")
    };
    for (i, name) in [ATTR_HEADERS, ATTR_ENC, ATTR_ID].into_iter().enumerate() {
        if let Some(v) = get(1 + i) {
            attrs.insert(name.to_string(), text(v));
        }
    }
    if let Some(b) = binary {
        attrs.insert(
            ATTR_PAYLOAD.to_string(),
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(Blob::new(b.to_vec()))
                .build()
                .expect("a binary attribute builds"),
        );
    }
    let mut sys = HashMap::new();
    for (i, name) in [
        MessageSystemAttributeName::SentTimestamp,
        MessageSystemAttributeName::ApproximateReceiveCount,
        MessageSystemAttributeName::MessageGroupId,
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = get(4 + i) {
            sys.insert(name, v.to_string());
        }
    }
    let mut m = SqsMessage::builder()
        .set_message_attributes(Some(attrs))
        .set_attributes(Some(sys));
    if let Some(b) = get(0) {
        m = m.body(b);
    }
    if let Some(r) = get(7) {
        m = m.receipt_handle(r);
    }
    if let Some(id) = get(8) {
        m = m.message_id(id);
    }
    SqsQueue::decode("fuzz", m.build()).expect("decode never fails a message")
}
