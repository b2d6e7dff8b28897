//! Rules 8.x: what a writer refuses in its source checkpoint.

use super::*;

#[test]
fn rule_8_1_nan_weight_is_refused_at_write_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut values = common::values(7, 91);
    values[40] = f32::NAN;
    let src = rebuild_source(&src, "fc1.weight", values);
    let dest = tmp.path().join("b");
    expect_violation(
        write_bundle(&dest, &src, &plan, &WriteOptions::default()),
        Rule::SourceWeights,
        &["tiny.safetensors", &t("fc1.weight"), "NaN at flat index 40"],
    );
    assert!(!dest.exists(), "a refused write leaves nothing behind");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "staging directory left behind");
}

#[test]
fn rule_8_1_infinite_passthrough_weight_is_refused_at_write_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut values = common::values(9, 13);
    values[11] = f32::NEG_INFINITY;
    let src = rebuild_source(&src, "fc2.norm.weight", values);
    expect_violation(
        write_bundle(&tmp.path().join("b"), &src, &plan, &WriteOptions::default()),
        Rule::SourceWeights,
        &[
            "tiny.safetensors",
            &t("fc2.norm.weight"),
            "-inf at flat index 11",
        ],
    );
}

#[test]
fn rule_8_2_i32_source_tensor() {
    use safetensors::tensor::{Dtype as StDtype, TensorView};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ckpt.safetensors");
    let ints: Vec<u8> = [1i32, -2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let floats: Vec<u8> = [0.5f32, -1.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "counts",
            TensorView::new(StDtype::I32, vec![2, 2], &ints).unwrap(),
        ),
        (
            "w",
            TensorView::new(StDtype::F32, vec![2], &floats).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    let src = CheckpointSource::open(&path).unwrap();
    assert_eq!(src.load_f32("w").unwrap(), vec![0.5, -1.5]);
    expect_violation(
        src.load_f32("counts"),
        Rule::SourceDtype,
        &["ckpt.safetensors", &t("counts"), "F32, F16 or BF16", "I32"],
    );
}
