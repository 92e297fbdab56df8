//! What the SQS driver reads back: a received message whose body, driver attributes
//! (headers JSON, payload encoding, id, binary payload) and system attributes (sent
//! timestamp, receive count, group id) hold anything another writer or SQS could put there.
//! Every message decodes to exactly one delivery, malformed where it does not decode;
//! nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_sqs::fuzzing::decode_parts;

fuzz_target!(|data: &[u8]| {
    // Fields split at 0xFF; an empty field is an absent attribute; the last field is the
    // binary payload attribute when the input ends with a 0xFE byte.
    let (data, binary) = match data.split_last() {
        Some((0xFE, rest)) => match rest.iter().rposition(|b| *b == 0xFF) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (&rest[..0], Some(rest)),
        },
        _ => (data, None),
    };
    let parts: Vec<Option<&str>> = data
        .split(|b| *b == 0xFF)
        .map(|f| std::str::from_utf8(f).ok().filter(|s| !s.is_empty()))
        .collect();
    let d = decode_parts(&parts, binary);
    assert!(d.attempt >= 1, "an attempt count starts at 1");
});
