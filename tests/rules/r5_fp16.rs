//! Rules 5.x: fp16.safetensors content.

use super::*;

#[test]
fn rule_5_1_fp16_tensor_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        st.edit_json(|v| v["fc1.bias"]["dtype"] = json!("BF16"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, &t("fc1.bias"), "F16 of shape [13]", "BF16"],
    );
}

#[test]
fn rule_5_1_fp16_tensor_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        st.edit_json(|v| v["fc1.weight"]["shape"] = json!([7, 13]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, &t("fc1.weight"), "[13, 7]", "[7, 13]"],
    );
}

#[test]
fn rule_5_1_fp16_tensor_missing_and_extra() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    rename_in_file(&dir, FP16, "fp16", "fc2.weight", "fc2.weights");
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, &t("fc2.weight"), "no such tensor"],
    );
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    add_empty_tensor(&dir, FP16, "fp16", "extra");
    open_violation(
        &dir,
        Rule::Fp16TensorSet,
        &[FP16, "unexpected tensor \"extra\""],
    );
}

#[test]
fn rule_5_2_one_flipped_fp16_bit_is_located() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // Flat index 10 of fc1.weight [13, 7] is row 1, column 3.
    let mut before = 0;
    edit_tensor(&dir, FP16, "fc1.weight", |b| {
        before = u16_at(b, 10);
        set_u16(b, 10, before ^ 1);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::DequantizationExact,
        &[
            FP16,
            &t("fc1.weight"),
            &format!("F16 0x{before:04x}"),
            "flat index 10 (row 1, column 3)",
            &format!("found 0x{:04x}", before ^ 1),
        ],
    );
}

#[test]
fn rule_5_2_negative_zero_for_a_zero_trit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let (r, c) = (0..5)
        .find_map(|r| {
            let trits = row_trits(&dir, "fc2.weight", r);
            trits.iter().position(|&t| t == 0).map(|c| (r, c))
        })
        .expect("a zero trit");
    let i = r * 13 + c;
    edit_tensor(&dir, FP16, "fc2.weight", |b| {
        assert_eq!(u16_at(b, i), 0x0000, "t = 0 dequantizes to +0.0");
        set_u16(b, i, 0x8000);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::DequantizationExact,
        &[
            FP16,
            &t("fc2.weight"),
            &format!("flat index {i} (row {r}, column {c})"),
            "found 0x8000",
        ],
    );
}

#[test]
fn rule_5_3_one_flipped_bias_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, FP16, "fc1.bias", |b| {
        let v = u16_at(b, 4);
        set_u16(b, 4, v ^ 0x0400);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::PassthroughExact,
        &[FP16, &t("fc1.bias"), "flat index 4"],
    );
}

#[test]
fn rule_5_3_passthrough_f32_changed_without_fp16() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // A change in the F32 value that moves its F16 rounding.
    let mut new = 0.0f32;
    edit_tensor(&dir, TERNARY, "fc2.norm.weight", |b| {
        new = f32_at(b, 6) + 0.25;
        set_f32(b, 6, new);
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_dequantization,
        Rule::PassthroughExact,
        &[
            FP16,
            &t("fc2.norm.weight"),
            &format!("F16 0x{:04x}", f16::from_f32(new).to_bits()),
            "flat index 6",
        ],
    );
}
