//! Fuzz target `codecs`: see `ternary_bundle::fuzzing::codecs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ternary_bundle::fuzzing::codecs(data));
