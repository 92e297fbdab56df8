//! The job envelope decoder: any bytes a queue hands the worker. Decoding may fail with a
//! typed error; it must not panic, and what decodes must type-check or fail typed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_core::job::{decode_data, decode_envelope};

#[derive(serde::Serialize, serde::Deserialize)]
struct Resize {
    id: u64,
    width: u32,
    name: String,
    tags: Vec<String>,
}

impl queue_core::Job for Resize {
    const NAME: &'static str = "resize";
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = decode_envelope(data) {
        let _ = env.job.len();
        let _ = decode_data::<Resize>(env);
    }
});
