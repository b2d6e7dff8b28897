//! Fuzz target `decoder_config`: see `ternary_bundle::fuzzing::decoder_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ternary_bundle::fuzzing::decoder_config(data));
