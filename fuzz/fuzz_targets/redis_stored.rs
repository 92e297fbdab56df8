//! What the Redis driver reads back: a stored message value written by this driver or by
//! anyone else, and receipt text. Any bytes decode to exactly one delivery (marked
//! malformed when they are not this driver's layout) and any text to a receipt or a typed
//! refusal; nothing panics or allocates beyond the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_redis::fuzzing::{decode_stored, parse_receipt_text};

fuzz_target!(|data: &[u8]| {
    let d = decode_stored(data);
    assert!(
        d.payload.len() <= data.len(),
        "the payload is a slice of the value"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_receipt_text(text);
    }
});
