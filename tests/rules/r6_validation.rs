//! Rules 6.x: validation.safetensors content.

use super::*;

#[test]
fn rule_6_1_labels_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["labels"]["dtype"] = json!("U64"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t("labels"), "I64 of shape [4]", "U64"],
    );
}

#[test]
fn rule_6_1_inputs_of_the_wrong_width() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["inputs"]["shape"] = json!([7, 4]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t("inputs"), "[7, 7]", "[7, 4]"],
    );
}

#[test]
fn rule_6_1_difficulty_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["difficulty"]["dtype"] = json!("I8"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t("difficulty")],
    );
}

#[test]
fn rule_6_1_extra_tensor_and_missing_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, o| o.validation = Some(validation_set()));
    add_empty_tensor(&dir, VALIDATION, "validation", "extra");
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, "unexpected tensor \"extra\""],
    );
    let dir = tiny_bundle(&tmp, "b", |_, o| o.validation = Some(validation_set()));
    rename_in_file(&dir, VALIDATION, "validation", "inputs", "x");
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, "a tensor named inputs"],
    );
}

#[test]
fn rule_6_1_validation_file_to_embed_is_checked_naming_the_tensor() {
    use ternary_bundle::format::safetensors::Dtype;
    use ternary_bundle::source::load_validation_set;
    use ternary_bundle::write::safetensors::write_safetensors_file;
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, tensors: Vec<(String, Dtype, Vec<u64>)>| {
        let path = tmp.path().join(name);
        write_safetensors_file(&path, tensors, &[], false, |n| {
            let e = match n {
                "inputs" => 4 * 3 * 2,
                "labels" => 8 * 2,
                _ => 4,
            };
            Ok(vec![0; e])
        })
        .unwrap();
        path
    };
    // Labels for 2 rows, inputs of 3 rows.
    let path = write(
        "rows.safetensors",
        vec![
            ("inputs".into(), Dtype::F32, vec![3, 2]),
            ("labels".into(), Dtype::I64, vec![2]),
        ],
    );
    expect_violation(
        load_validation_set(&path),
        Rule::ValidationTensors,
        &["rows.safetensors", &t("labels"), "shape [3]", "found [2]"],
    );
    // Inputs of the wrong dtype.
    let path = write(
        "dtype.safetensors",
        vec![
            ("inputs".into(), Dtype::I32, vec![3, 2]),
            ("labels".into(), Dtype::I64, vec![2]),
        ],
    );
    expect_violation(
        load_validation_set(&path),
        Rule::ValidationTensors,
        &[
            "dtype.safetensors",
            &t("inputs"),
            "F32 of rank 2",
            "I32 of shape [3, 2]",
        ],
    );
    // No labels at all.
    let path = write(
        "nolabels.safetensors",
        vec![("inputs".into(), Dtype::F32, vec![3, 2])],
    );
    expect_violation(
        load_validation_set(&path),
        Rule::ValidationTensors,
        &[
            "nolabels.safetensors",
            &t("labels"),
            "I64 [N]",
            "found none",
        ],
    );
}

#[test]
fn rule_6_1_writer_refuses_an_empty_validation_set() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let options = WriteOptions {
        validation: Some(ValidationSet {
            input_ids: None,
            origin: "val.safetensors".into(),
            inputs: vec![],
            labels: vec![],
            difficulty: None,
        }),
        ..Default::default()
    };
    expect_violation(
        write_bundle(&tmp.path().join("b"), &src, &plan, &options),
        Rule::ValidationTensors,
        &["val.safetensors"],
    );
}

#[test]
fn rule_6_1_original_predictions_of_the_wrong_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["original_predictions"]["dtype"] = json!("U64"))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[
            VALIDATION,
            &t("original_predictions"),
            "I64 of shape [4]",
            "U64",
        ],
    );
}

#[test]
fn rule_6_1_original_predictions_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // [2, 2] holds the same 32 bytes as [4]: only the shape is wrong.
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|v| v["original_predictions"]["shape"] = json!([2, 2]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[
            VALIDATION,
            &t("original_predictions"),
            "I64 of shape [4]",
            "I64 of shape [2, 2]",
        ],
    );
}

#[test]
fn rule_6_1_original_predictions_in_a_format_1_bundle() {
    // A 1.x reader refuses the tensor, so a bundle that declares 1.x cannot carry it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    assert_eq!(manifest(&dir)["format_version"], "2.0");
    edit_manifest(&dir, |m| m["format_version"] = json!("1.4"));
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[
            VALIDATION,
            &t("original_predictions"),
            "no original_predictions in a format 1.4 bundle (needs format 2.0 or later)",
        ],
    );
}

#[test]
fn rule_6_3_original_prediction_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The last layer has 5 outputs: class 5 does not exist.
    edit_tensor(&dir, VALIDATION, "original_predictions", |b| {
        b[8..16].copy_from_slice(&5i64.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::OriginalPredictions,
        &[
            VALIDATION,
            &t("original_predictions"),
            "original_predictions in 0..5",
            "5 at index 1",
        ],
    );
}

#[test]
fn rule_6_3_negative_original_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "original_predictions", |b| {
        b[24..32].copy_from_slice(&(-1i64).to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::OriginalPredictions,
        &[VALIDATION, &t("original_predictions"), "-1 at index 3"],
    );
}

#[test]
fn rule_6_3_the_writer_stores_the_original_models_predictions() {
    // What the writer stores is the source model's argmax on each input, in f32, before
    // quantization: recomputed here from the source with the reference model.
    use ternary_bundle::model::reference::{argmax_rows, forward_source};
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    let (src, plan) = common::tiny_model(7);
    let b = Bundle::open(&dir).unwrap();
    let v = validation_set();
    let x = ndarray::ArrayView2::from_shape((4, 7), &v.inputs).unwrap();
    let expected =
        argmax_rows(&forward_source(&src, &plan.model, &b.facts().activations, x).unwrap());
    let stored: Vec<usize> = St::read(&dir.join(VALIDATION))
        .tensor_mut("original_predictions")
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    assert_eq!(stored, expected);
    // Not the labels: the labels are the data's, the predictions the model's.
    assert_ne!(stored, [0, 1, 2, 4]);
}

#[test]
fn rule_6_2_nan_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "inputs", |b| set_f32(b, 9, f32::NAN));
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[VALIDATION, &t("inputs"), "NaN at flat index 9"],
    );
}

#[test]
fn rule_6_2_label_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The last layer has 5 outputs: label 5 is out of range.
    edit_tensor(&dir, VALIDATION, "labels", |b| {
        b[16..24].copy_from_slice(&5i64.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[VALIDATION, &t("labels"), "0..5", "5 at index 2"],
    );
}

#[test]
fn rule_6_2_negative_label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "labels", |b| {
        b[0..8].copy_from_slice(&i64::MIN.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[
            VALIDATION,
            &t("labels"),
            &format!("{} at index 0", i64::MIN),
        ],
    );
}

#[test]
fn rule_6_2_writer_refuses_bad_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = common::tiny_model(7);
    let mut v = validation_set();
    v.labels[3] = 5;
    let options = WriteOptions {
        validation: Some(v),
        ..Default::default()
    };
    expect_violation(
        write_bundle(&tmp.path().join("b"), &src, &plan, &options),
        Rule::ValidationValues,
        &["val.safetensors", &t("labels"), "5 at index 3"],
    );
}
