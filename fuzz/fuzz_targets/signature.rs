//! Fuzz target `signature`: `model.sig` and its signed statement on arbitrary bytes (see
//! `ternary_bundle::fuzzing::signature`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ternary_bundle::fuzzing::signature(data);
});
