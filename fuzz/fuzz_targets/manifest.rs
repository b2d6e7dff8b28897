//! Fuzz target `manifest`: see `ternary_bundle::fuzzing::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ternary_bundle::fuzzing::manifest(data));
