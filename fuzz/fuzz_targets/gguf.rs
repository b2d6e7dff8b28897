//! Fuzz target `gguf`: the GGUF reader and import on arbitrary bytes (see
//! `ternary_bundle::fuzzing::gguf`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ternary_bundle::fuzzing::gguf(data));
