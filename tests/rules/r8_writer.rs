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

/// Writes a bundle of `handoff` to `tmp/b` and expects a refusal under rule 8.3 whose message
/// holds `parts`; nothing is left at the destination.
#[track_caller]
fn expect_given_refused(handoff: &Handoff, parts: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let msg = expect_violation(
        handoff.write_bundle(&tmp, "b", &WriteOptions::default()),
        Rule::GivenTrits,
        parts,
    );
    assert!(
        !tmp.path().join("b").exists(),
        "a refused write leaves nothing"
    );
    msg
}

/// The handoff's trits and scales reach the bundle unchanged (section 7.1): the trits of each
/// row, fc1's row scales, and fc2's one scale repeated per row (the finest granularity given,
/// channel, wins).
#[test]
fn rule_8_3_valid_given_trits_are_bundled_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = given_bundle(&tmp, "b");
    let b = Bundle::open(&dir).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.params().granularity, ternary_bundle::Granularity::Channel);
    let fc1 = trits(7, 91);
    for r in 0..13 {
        assert_eq!(row_trits(&dir, "fc1.weight", r), fc1[r * 7..(r + 1) * 7]);
    }
    let fc2 = trits(10, 65);
    for r in 0..5 {
        assert_eq!(row_trits(&dir, "fc2.weight", r), fc2[r * 13..(r + 1) * 13]);
    }
    assert_eq!(
        b.packed("fc1.weight").unwrap().scales(),
        Handoff::fc1_scales()
    );
    assert_eq!(
        b.packed("fc2.weight").unwrap().scales(),
        vec![Handoff::FC2_SCALE; 5]
    );
    let mut m = manifest(&dir);
    let zeros = fc1.iter().filter(|&&t| t == 0).count();
    assert_eq!(tensor_entry(&mut m, "fc1.weight")["zeros"], json!(zeros));
}

/// Trits may come as floats (exactly -1, +-0 or 1) and as any integer dtype.
#[test]
fn rule_8_3_float_and_wide_integer_trits_are_accepted() {
    use safetensors::Dtype as D;
    let tmp = tempfile::tempdir().unwrap();
    let fc1 = trits(7, 91);
    let mut h = Handoff::tiny();
    let floats: Vec<f32> = fc1
        .iter()
        .map(|&t| if t == 0 { -0.0 } else { f32::from(t) })
        .collect();
    h.set_tensor("fc1.weight", D::F32, f32_bytes(&floats));
    let wide: Vec<u8> = trits(10, 65)
        .iter()
        .flat_map(|&t| i64::from(t).to_le_bytes())
        .collect();
    h.set_tensor("fc2.weight", D::I64, wide);
    let dir = h.write_bundle(&tmp, "b", &WriteOptions::default()).unwrap();
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
    assert_eq!(row_trits(&dir, "fc1.weight", 3), fc1[21..28]);
}

#[test]
fn rule_8_3_int8_trit_2() {
    let mut h = Handoff::tiny();
    let mut bytes: Vec<u8> = trits(7, 91).into_iter().map(|v| v as u8).collect();
    bytes[40] = 2;
    h.set_tensor("fc1.weight", safetensors::Dtype::I8, bytes);
    expect_given_refused(
        &h,
        &[STAGE_FILE, &t("fc1.weight"), "2 at flat index 40 (I8)"],
    );
}

#[test]
fn rule_8_3_int8_trit_minus_2_and_u8_255() {
    let mut h = Handoff::tiny();
    let mut bytes: Vec<u8> = trits(10, 65).into_iter().map(|v| v as u8).collect();
    bytes[64] = (-2i8) as u8;
    h.set_tensor("fc2.weight", safetensors::Dtype::I8, bytes.clone());
    expect_given_refused(&h, &[STAGE_FILE, &t("fc2.weight"), "-2 at flat index 64"]);
    // As U8, the byte of -1 is 255, which is not a trit.
    let first = bytes.iter().position(|&b| b == 0xFF).unwrap();
    bytes[64] = 0;
    h.set_tensor("fc2.weight", safetensors::Dtype::U8, bytes);
    expect_given_refused(
        &h,
        &[
            STAGE_FILE,
            &t("fc2.weight"),
            &format!("255 at flat index {first} (U8)"),
        ],
    );
}

#[test]
fn rule_8_3_float_trit_0_5() {
    let mut h = Handoff::tiny();
    let mut v: Vec<f32> = trits(7, 91).into_iter().map(f32::from).collect();
    v[12] = 0.5;
    h.set_tensor("fc1.weight", safetensors::Dtype::F32, f32_bytes(&v));
    expect_given_refused(&h, &[STAGE_FILE, &t("fc1.weight"), "0.5 at flat index 12"]);
    // Nor NaN, nor a value that is close to a trit.
    for bad in [f32::NAN, 1.0 + f32::EPSILON, -0.99999994] {
        v[12] = bad;
        h.set_tensor("fc1.weight", safetensors::Dtype::F32, f32_bytes(&v));
        expect_given_refused(&h, &[STAGE_FILE, &t("fc1.weight"), "at flat index 12"]);
    }
}

#[test]
fn rule_8_3_f16_trit_1_5() {
    let mut h = Handoff::tiny();
    let mut v: Vec<f16> = trits(10, 65)
        .into_iter()
        .map(|t| f16::from_f32(f32::from(t)))
        .collect();
    v[7] = f16::from_f32(1.5);
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    h.set_tensor("fc2.weight", safetensors::Dtype::F16, bytes);
    expect_given_refused(&h, &[STAGE_FILE, &t("fc2.weight"), "1.5 at flat index 7"]);
}

#[test]
fn rule_8_3_scale_list_of_the_wrong_length() {
    for n in [12usize, 14, 0] {
        let mut h = Handoff::tiny();
        h.edit_metadata(|m| m["scales"]["fc1.weight"] = json!(vec![0.5f32; n]));
        expect_given_refused(
            &h,
            &[
                METADATA_FILE,
                &t("fc1.weight"),
                "one scale per row (13)",
                &format!("a list of {n} numbers"),
            ],
        );
    }
}

#[test]
fn rule_8_3_group_scales_of_the_wrong_count() {
    // group_size 4 over 7 columns: 2 scales per row, 13 rows.
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| {
        m["group_size"] = json!(4);
        m["scales"]["fc1.weight"] = json!(vec![vec![0.5f32; 3]; 13]);
    });
    expect_given_refused(&h, &[METADATA_FILE, &t("fc1.weight"), "group_size 4"]);
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| {
        m["group_size"] = json!(4);
        m["scales"]["fc1.weight"] = json!(vec![vec![0.5f32; 2]; 12]);
    });
    expect_given_refused(&h, &[METADATA_FILE, &t("fc1.weight"), "12 lists"]);
    // The right count is accepted, and the bundle is then of granularity group.
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| {
        m["group_size"] = json!(4);
        m["scales"]["fc1.weight"] = json!(vec![vec![0.5f32; 2]; 13]);
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = h.write_bundle(&tmp, "b", &WriteOptions::default()).unwrap();
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(
        b.params().granularity,
        ternary_bundle::Granularity::Group(4)
    );
    check_all(&b).unwrap();
}

#[test]
fn rule_8_3_group_scales_without_group_size() {
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| m["scales"]["fc1.weight"] = json!(vec![vec![0.5f32; 2]; 13]));
    expect_given_refused(
        &h,
        &[
            METADATA_FILE,
            &t("fc1.weight"),
            "without a top-level group_size",
        ],
    );
}

#[test]
fn rule_8_3_nan_zero_negative_and_infinite_scales() {
    for (value, found) in [
        (json!(0), "scale 0 at index 0"),
        (json!(-0.5), "scale -0.5 at index 0"),
        (json!(1e39), "scale inf at index 0"),
        (json!(-1e39), "scale -inf at index 0"),
    ] {
        let mut h = Handoff::tiny();
        h.edit_metadata(|m| m["scales"]["fc2.weight"] = value);
        expect_given_refused(&h, &[METADATA_FILE, &t("fc2.weight"), found]);
    }
    // One bad scale of a row list is located by its index.
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| m["scales"]["fc1.weight"][5] = json!(-0.0));
    expect_given_refused(&h, &[METADATA_FILE, &t("fc1.weight"), "at index 5"]);
    // NaN is not JSON: the metadata file itself is refused.
    let mut h = Handoff::tiny();
    let text = h.metadata.replacen("0.03125", "NaN", 1);
    assert_ne!(text, h.metadata);
    h.metadata = text;
    expect_given_refused(&h, &[METADATA_FILE]);
}

#[test]
fn rule_8_3_scale_for_a_tensor_that_is_not_there() {
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| m["scales"]["fc3.weight"] = json!(0.5));
    expect_given_refused(
        &h,
        &[
            METADATA_FILE,
            &t("fc3.weight"),
            "a scale for a tensor that is not there",
        ],
    );
}

#[test]
fn rule_8_3_zero_point_for_a_tensor_without_a_scale() {
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| {
        m["scales"].as_object_mut().unwrap().remove("fc2.weight");
        m["zero_points"] = json!({"fc2.weight": 0});
    });
    expect_given_refused(
        &h,
        &[
            METADATA_FILE,
            &t("fc2.weight"),
            "a zero point for a tensor without a scale",
        ],
    );
}

#[test]
fn rule_8_3_int8_tensor_without_a_scale() {
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| {
        m["scales"].as_object_mut().unwrap().remove("fc2.weight");
        if let Some(z) = m["zero_points"].as_object_mut() {
            z.remove("fc2.weight");
        }
    });
    expect_given_refused(
        &h,
        &[
            STAGE_FILE,
            &t("fc2.weight"),
            METADATA_FILE,
            "a quantized tensor without a scale",
        ],
    );
}

#[test]
fn rule_8_3_non_zero_zero_point() {
    for zp in [json!(1), json!([0, 0, 0.5]), json!("0"), json!(-1)] {
        let mut h = Handoff::tiny();
        h.edit_metadata(|m| m["zero_points"]["fc1.weight"] = zp);
        expect_given_refused(&h, &[METADATA_FILE, &t("fc1.weight"), "zero point 0"]);
    }
    // Zero points of 0 everywhere (a number or a list) are fine.
    let mut h = Handoff::tiny();
    h.edit_metadata(|m| m["zero_points"]["fc1.weight"] = json!(vec![0; 13]));
    let tmp = tempfile::tempdir().unwrap();
    h.write_bundle(&tmp, "b", &WriteOptions::default()).unwrap();
}

/// Spec rule 8.3 lists "a scale that ... breaks rule 4.5" among what a writer of given trits
/// refuses under rule 8.3: a given scale whose F16 rounding is 0 or infinite while it governs
/// non-zero trits.
#[test]
fn rule_8_3_given_scale_that_breaks_rule_4_5() {
    for (value, found) in [(json!(1e-9), "1e-9"), (json!(1e6), "1e6")] {
        let mut h = Handoff::tiny();
        h.edit_metadata(|m| m["scales"]["fc2.weight"] = value);
        expect_given_refused(&h, &[&t("fc2.weight"), found]);
    }
}

/// Spec 18.1 and rule 8.3: float trits are F32, F16 or BF16 holding exactly -1, +-0 or 1. An
/// F64 value near a trit (0.99999999999, 1e-60) is not a trit.
#[test]
fn rule_8_3_f64_near_trits() {
    for bad in [0.999_999_999_99f64, 1e-60, -1.000_000_000_01] {
        let mut h = Handoff::tiny();
        let mut v: Vec<f64> = trits(7, 91).into_iter().map(f64::from).collect();
        v[3] = bad;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        h.set_tensor("fc1.weight", safetensors::Dtype::F64, bytes);
        expect_given_refused(&h, &[STAGE_FILE, &t("fc1.weight"), "at flat index 3"]);
    }
}
