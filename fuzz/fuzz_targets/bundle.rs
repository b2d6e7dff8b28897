//! Fuzz target `bundle`: see `ternary_bundle::fuzzing::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ternary_bundle::fuzzing::bundle(data));
