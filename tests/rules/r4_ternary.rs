//! Rules 4.x: ternary.safetensors content.

use super::*;

#[test]
fn rule_4_1_scale_tensor_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    rename_in_file(
        &dir,
        TERNARY,
        "ternary",
        "fc1.weight.scale",
        "fc1.weight.scales",
    );
    open_violation(
        &dir,
        Rule::TernaryTensorSet,
        &[TERNARY, &t("fc1.weight.scale"), "no such tensor"],
    );
}

#[test]
fn rule_4_1_extra_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    add_empty_tensor(&dir, TERNARY, "ternary", "extra");
    open_violation(
        &dir,
        Rule::TernaryTensorSet,
        &[TERNARY, "unexpected tensor \"extra\""],
    );
}

#[test]
fn rule_4_2_passthrough_tensor_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["dtype"] = json!("I32"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TernaryShapes,
        &[
            TERNARY,
            &t("fc1.bias"),
            "F32 of shape [13]",
            "I32 of shape [13]",
        ],
    );
}

#[test]
fn rule_4_2_packed_tensor_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.weight"]["shape"] = json!([26, 1]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TernaryShapes,
        &[TERNARY, &t("fc1.weight"), "U8 of shape [13, 2]", "[26, 1]"],
    );
}

#[test]
fn rule_4_2_scale_tensor_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc2.weight.scale"]["shape"] = json!([1, 5]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TernaryShapes,
        &[TERNARY, &t("fc2.weight.scale"), "F32 of shape [5]"],
    );
}

#[test]
fn rule_4_3_trit5_byte_243() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| b[2 * 3] = 243);
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::PackedByteValid,
        &[TERNARY, &t("fc1.weight"), "0xf3", "row 3, byte 0"],
    );
}

#[test]
fn rule_4_3_trit2_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "t2", |p, _| p.params.encoding = Encoding::Trit2);
    // fc2.weight: 13 columns -> 4 bytes per row; field 2 of row 1, byte 2 set to code 3.
    edit_tensor(&dir, TERNARY, "fc2.weight", |b| b[4 + 2] |= 0b0011_0000);
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::PackedByteValid,
        &[TERNARY, &t("fc2.weight"), "row 1, byte 2", "trit2"],
    );
}

#[test]
fn rule_4_4_trit5_padding_not_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // fc1.weight has 7 columns: the last byte of a row holds 2 trits, canonical max 8.
    let mut last = 0u8;
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        assert!(b[2 * 4 + 1] <= 8);
        b[2 * 4 + 1] += 9; // digit 1 at unused position 2; still a valid byte
        last = b[2 * 4 + 1];
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::CanonicalPadding,
        &[
            TERNARY,
            &t("fc1.weight"),
            "0x08",
            &format!("byte 0x{last:02x} at row 4, byte 1"),
        ],
    );
}

#[test]
fn rule_4_4_trit2_padding_not_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "t2", |p, _| p.params.encoding = Encoding::Trit2);
    // 7 columns in trit2: 2 bytes per row, the last holds 3 trits (canonical max 0x3f).
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        assert!(b[2 * 12 + 1] <= 0x3F);
        b[2 * 12 + 1] |= 0x40; // code 1 (valid) in unused field 3
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_encoding,
        Rule::CanonicalPadding,
        &[TERNARY, &t("fc1.weight"), "0x3f", "row 12, byte 1"],
    );
}

/// Sets scale `index` of fc1.weight to `value`; with `fix_stats`, also makes the manifest's
/// scale_min/scale_max agree so that only rule 4.5 is broken.
fn set_fc1_scale(dir: &Path, index: usize, value: f32, fix_stats: bool) {
    let mut scales = Vec::new();
    edit_tensor(dir, TERNARY, "fc1.weight.scale", |b| {
        set_f32(b, index, value);
        scales = (0..13).map(|i| f32_at(b, i)).collect();
    });
    if fix_stats {
        let lo = scales.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = scales.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        edit_manifest(dir, |m| {
            let e = tensor_entry(m, "fc1.weight");
            e["scale_min"] = json!(lo as f64);
            e["scale_max"] = json!(hi as f64);
        });
    }
    rehash(dir);
}

#[test]
fn rule_4_5_nan_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 2, f32::NAN, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "NaN at scale index 2"],
    );
}

#[test]
fn rule_4_5_zero_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 0, 0.0, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "scale 0 at scale index 0"],
    );
}

#[test]
fn rule_4_5_negative_zero_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 5, -0.0, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "scale index 5"],
    );
}

#[test]
fn rule_4_5_negative_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 12, -1.0, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "scale -1 at scale index 12"],
    );
}

#[test]
fn rule_4_5_infinite_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_fc1_scale(&dir, 1, f32::INFINITY, false);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "inf at scale index 1"],
    );
}

#[test]
fn rule_4_5_scale_overflowing_f16_over_nonzero_trits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    set_fc1_scale(&dir, r, 1e6, true);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[
            TERNARY,
            &t("fc1.weight"),
            &format!("scale 1e6 (F16 inf) at scale index {r}"),
            &format!("row {r}"),
        ],
    );
}

#[test]
fn rule_4_5_scale_at_the_f16_overflow_boundary() {
    // 65519 rounds to F16 65504 (finite); 65520 rounds to infinity.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    let r = row_with_nonzero_trit(&dir);
    set_fc1_scale(&dir, r, 65519.0, true);
    let b = Bundle::open(&dir).unwrap();
    check_encoding(&b).unwrap();
    check_scales(&b).unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    set_fc1_scale(&dir, r, 65520.0, true);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), "F16 inf"],
    );
}

#[test]
fn rule_4_5_scale_underflowing_f16_over_nonzero_trits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    set_fc1_scale(&dir, r, 1e-9, true);
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), &format!("at scale index {r}")],
    );
}

#[test]
fn rule_4_5_unrepresentable_scale_over_zero_trits_is_allowed() {
    // A scale whose F16 is infinite is fine when every trit it governs is 0: make row r all
    // zero, fix the manifest's statistics and the FP16 row, and everything passes.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    let nonzero = row_trits(&dir, "fc1.weight", r)
        .iter()
        .filter(|&&t| t != 0)
        .count() as u64;
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        b[2 * r] = 0x79; // five zero trits
        b[2 * r + 1] = 0x04; // two zero trits, unused positions 0
    });
    edit_tensor(&dir, FP16, "fc1.weight", |b| {
        b[2 * 7 * r..2 * 7 * (r + 1)].fill(0); // +0.0
    });
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.weight");
        e["zeros"] = json!(e["zeros"].as_u64().unwrap() + nonzero);
    });
    set_fc1_scale(&dir, r, 1e6, true);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

/// Makes quantized tensor `name` consistent again after its packed bytes or scales changed:
/// rewrites its FP16 values from the packed data, its manifest `zeros`, `scale_min` and
/// `scale_max` from the data, and rehashes.
fn resync(dir: &Path, name: &str) {
    let (fp16, zeros, lo, hi) = {
        let b = Bundle::open(dir).unwrap();
        let p = b.packed(name).unwrap();
        let mut trits = vec![0i8; p.cols];
        let mut zeros = 0u64;
        for r in 0..p.rows {
            p.encoding.unpack_row(p.row(r), &mut trits).unwrap();
            zeros += trits.iter().filter(|&&t| t == 0).count() as u64;
        }
        let s = p.scales();
        let lo = s.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (p.dequantize_f16().unwrap(), zeros, lo, hi)
    };
    edit_tensor(dir, FP16, name, |b| {
        for (i, v) in fp16.iter().enumerate() {
            set_u16(b, i, v.to_bits());
        }
    });
    edit_manifest(dir, |m| {
        let e = tensor_entry(m, name);
        e["zeros"] = json!(zeros);
        e["scale_min"] = json!(lo as f64);
        e["scale_max"] = json!(hi as f64);
    });
    rehash(dir);
}

#[test]
fn rule_4_5_subnormal_f16_scale_over_nonzero_trits_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    let h = f16::from_f32(1e-7);
    assert!(h.to_bits() != 0 && h.to_bits() < 0x0400, "F16 subnormal");
    edit_tensor(&dir, TERNARY, "fc1.weight.scale", |b| set_f32(b, r, 1e-7));
    resync(&dir, "fc1.weight");
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

/// Rule 4.5 concerns every scale. `check_scales` only examines the first scale whose F16
/// rounding is not usable: when that one governs only zero trits, a later unusable scale that
/// governs non-zero trits goes unreported, and a bundle whose FP16 file holds infinities
/// passes every data check.
#[test]
fn rule_4_5_every_unrepresentable_scale_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = (1..13)
        .find(|&r| row_trits(&dir, "fc1.weight", r).iter().any(|&t| t != 0))
        .unwrap();
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        b[0] = 0x79; // row 0: all zero trits
        b[1] = 0x04;
    });
    edit_tensor(&dir, TERNARY, "fc1.weight.scale", |b| {
        set_f32(b, 0, 1e6); // fine: governs only zero trits
        set_f32(b, r, 1e6); // breaks rule 4.5: governs non-zero trits
    });
    resync(&dir, "fc1.weight");
    data_violation(
        &dir,
        check_scales,
        Rule::ScaleValid,
        &[TERNARY, &t("fc1.weight"), &format!("at scale index {r}")],
    );
}

#[test]
fn rule_4_6_zeros_statistic_off_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let mut zeros = 0;
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.weight");
        zeros = e["zeros"].as_u64().unwrap();
        e["zeros"] = json!(zeros - 1);
    });
    data_violation(
        &dir,
        check_encoding,
        Rule::TensorStats,
        &[
            TERNARY,
            &t("fc1.weight"),
            &format!("zeros {} (manifest)", zeros - 1),
            &format!("found {zeros} zero trits"),
        ],
    );
}

#[test]
fn rule_4_6_scale_min_one_ulp_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc2.weight");
        let lo = e["scale_min"].as_f64().unwrap() as f32;
        let below = f32::from_bits(lo.to_bits() - 1);
        e["scale_min"] = json!(below as f64);
    });
    data_violation(
        &dir,
        check_scales,
        Rule::TensorStats,
        &[TERNARY, &t("fc2.weight"), "scale_min"],
    );
}

#[test]
fn rule_4_6_scale_max_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.weight");
        let hi = e["scale_max"].as_f64().unwrap();
        e["scale_max"] = json!(hi * 2.0);
    });
    data_violation(
        &dir,
        check_scales,
        Rule::TensorStats,
        &[TERNARY, &t("fc1.weight"), "scale_max"],
    );
}

#[test]
fn rule_4_7_bias_value_too_large_for_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc1.bias", |b| set_f32(b, 3, 1e6));
    rehash(&dir);
    data_violation(
        &dir,
        check_passthrough,
        Rule::PassthroughRange,
        &[TERNARY, &t("fc1.bias"), "1000000 at flat index 3"],
    );
}

#[test]
fn rule_4_7_nan_passthrough_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc2.norm.weight", |b| {
        set_f32(b, 0, f32::NAN)
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_passthrough,
        Rule::PassthroughRange,
        &[TERNARY, &t("fc2.norm.weight"), "NaN at flat index 0"],
    );
}

#[test]
fn rule_4_7_f16_range_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    // 65519 rounds to the largest finite F16 (65504): valid, with the matching FP16 value.
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_tensor(&dir, TERNARY, "fc1.bias", |b| set_f32(b, 3, -65519.0));
    edit_tensor(&dir, FP16, "fc1.bias", |b| set_u16(b, 3, 0xFBFF));
    rehash(&dir);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
    // 65520 rounds to infinity.
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_tensor(&dir, TERNARY, "fc1.bias", |b| set_f32(b, 3, 65520.0));
    rehash(&dir);
    data_violation(
        &dir,
        check_passthrough,
        Rule::PassthroughRange,
        &[TERNARY, &t("fc1.bias"), "65520 at flat index 3"],
    );
}

#[test]
fn rule_4_5_and_4_7_writer_refuses_unrepresentable_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut values = common::values(7, 91);
    values[7..14].fill(1e6); // row 1 of fc1.weight: scale 1e6 over non-zero trits
    let src2 = rebuild_source(&src, "fc1.weight", values);
    let dest = tmp.path().join("a");
    expect_violation(
        write_bundle(&dest, &src2, &plan, &WriteOptions::default()),
        Rule::ScaleValid,
        &["tiny.safetensors", &t("fc1.weight"), "scale index 1"],
    );
    assert!(!dest.exists());
    let mut bias = common::values(8, 13);
    bias[4] = -7e4;
    let src3 = rebuild_source(&src, "fc1.bias", bias);
    expect_violation(
        write_bundle(&dest, &src3, &plan, &WriteOptions::default()),
        Rule::PassthroughRange,
        &["tiny.safetensors", &t("fc1.bias"), "flat index 4"],
    );
    assert!(!dest.exists());
}
