//! Fuzz target `verify_numeric`: value, scale and packed-byte mutations of a valid fixture
//! bundle, through every numeric check and the reference model (see
//! `ternary_bundle::fuzzing::verify_numeric`).
#![no_main]

const BASE: &[u8] = include_bytes!("../base/tiny-trit5-channel.bin");

libfuzzer_sys::fuzz_target!(|data: &[u8]| ternary_bundle::fuzzing::verify_numeric(BASE, data));
