//! Cross-implementation check: the example manifest in spec/FORMAT.md section 3.4 was produced by
//! an independent Python implementation of the spec. Building the same model with this crate
//! must reproduce its sizes, statistics and every digest, and the manifest must parse.

use crate::common;

use std::path::Path;

use ternary_bundle::source::MemorySource;
use ternary_bundle::{write_bundle, Bundle, Manifest, WriteOptions};

/// The JSON block that follows the heading "### 3.4 Example".
fn spec_example_manifest() -> String {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/FORMAT.md"))
            .unwrap();
    let section = spec
        .split("### 3.4 Example")
        .nth(1)
        .expect("spec has section 3.4");
    let block = section
        .split("```json\n")
        .nth(1)
        .expect("section 3.4 has a json block");
    block.split("\n```").next().unwrap().to_string() + "\n"
}

fn example_source() -> MemorySource {
    let fc1: Vec<f32> = (0..16 * 8)
        .map(|i| ((37 * i) % 29) as f32 - 14.0)
        .map(|v| v / 16.0)
        .collect();
    let fc2: Vec<f32> = (0..4 * 16)
        .map(|i| ((53 * i) % 31) as f32 - 15.0)
        .map(|v| v / 32.0)
        .collect();
    let bias: Vec<f32> = (0..16).map(|i| ((i % 5) as f32 - 2.0) / 8.0).collect();
    let norm: Vec<f32> = (0..16).map(|i| 1.0 + (i % 3) as f32 / 4.0).collect();
    MemorySource::new("spec-example")
        .with("fc1.weight", vec![16, 8], fc1)
        .with("fc2.weight", vec![4, 16], fc2)
        .with("fc1.bias", vec![16], bias)
        .with("fc2.norm.weight", vec![16], norm)
}

#[test]
fn writer_reproduces_the_independent_implementation_bit_for_bit() {
    let text = spec_example_manifest();
    let (expected, _) = Manifest::parse(Path::new("spec/FORMAT.md#3.4"), text.as_bytes()).unwrap();
    let plan = common::two_layer_plan(8, 16, 4);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("example");
    let report = write_bundle(&dest, &example_source(), &plan, &WriteOptions::default()).unwrap();
    assert_eq!(
        report.manifest, expected,
        "the writer's manifest differs from spec section 3.4"
    );
    ternary_bundle::read::checks::check_all(&Bundle::open(&dest).unwrap()).unwrap();
}
