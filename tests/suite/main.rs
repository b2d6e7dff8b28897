//! The integration tests, one binary: each file is a module (a file per subject, as before),
//! so the crate and its dependencies are linked once instead of once per file (the suite's
//! build time; see docs/PERFORMANCE.md). Tests that measure the whole process's heap
//! (`tests/hostile.rs`, `tests/gguf_hostile.rs`: a counting global allocator) and the rule
//! tests (`tests/rules/`) stay binaries of their own.

// (The helpers are shared with tests/hostile.rs and tests/gguf_hostile.rs, other crates; clippy
// sees the same file reached by two paths and calls it a duplicate.)
#[allow(clippy::duplicate_mod)]
#[path = "../common/mod.rs"]
mod common;

mod assess;
mod cli;
mod corruption;
mod crash;
mod create_sources;
mod decoder;
mod decoder_bundle;
mod export_gguf;
mod export_hf;
mod fidelity;
mod fixtures;
mod fuzz_replay;
mod import_gguf;
mod properties;
mod reference;
mod report;
mod roundtrip;
mod run;
mod signature_hostile;
mod spec_examples;
mod spec_manifest_example;
mod tokenizer;
mod verify;
