//! What the Kafka driver reads back: a record another writer produced, with any key, value
//! and headers (this driver's header names among them, holding anything), and receipt
//! text. Every record decodes to exactly one delivery; a header of ours that does not
//! parse marks it malformed; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_kafka::fuzzing::{decode_record, parse_receipt_text, Record, HEADER_NAMES};

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// Splits `data` into fields at 0xFF bytes.
fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0xFF).collect()
}

fuzz_target!(|data: &[u8]| {
    let f = fields(data);
    // Field 0: key; 1: value; 2: timestamp (8 bytes); the rest: header pairs, a name that
    // is one byte picks one of ours, a longer one is used as it is (if UTF-8).
    let mut r = Record {
        key: f.first().copied().filter(|k| !k.is_empty()),
        payload: f.get(1).copied(),
        ..Record::default()
    };
    if let Some(ts) = f.get(2).and_then(|b| <[u8; 8]>::try_from(*b).ok()) {
        r.timestamp_ms = Some(i64::from_le_bytes(ts));
    }
    for pair in f.get(3..).unwrap_or_default().chunks(2) {
        let name = match pair[0] {
            [i] => Some(HEADER_NAMES[*i as usize % HEADER_NAMES.len()]),
            other => text(other),
        };
        if let Some(name) = name {
            r.headers.push((name, pair.get(1).copied()));
        }
    }
    let (d, due) = decode_record(&r);
    assert!(d.payload.len() <= data.len(), "the payload is a copy of the value");
    if d.headers.contains_key(queue_core::headers::MALFORMED) {
        assert!(due.is_none(), "a malformed record is never held for a due time");
    }
    if let Some(t) = text(data) {
        let _ = parse_receipt_text(t);
    }
});
