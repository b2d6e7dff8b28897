//! Rules 6.x: validation.safetensors content.

use super::*;

/// A valid bundle with a validation set whose original model is recorded by its predictions
/// alone (`--original-top-k 0`): format 2.0.
fn bundle_with_predictions_only(tmp: &tempfile::TempDir) -> PathBuf {
    tiny_bundle(tmp, "p", |_, o| {
        o.validation = Some(validation_set());
        o.original_top_k = Some(0);
    })
}

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
    let dir = bundle_with_predictions_only(&tmp);
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

// ---- format 5.0: the original model's distributions (rules 6.1 and 6.4, spec section 9.1) ----

/// `fixtures/bundles/tiny-distributions`: a chain of layers (10 classes) whose 32 samples
/// store the full form.
const FULL_FIXTURE: &str = "tiny-distributions";
/// `fixtures/bundles/tiny-decoder-top-k`: a decoder (vocabulary 11) whose 3 sequences of 5
/// tokens (12 scored samples) store the top 3.
const TOP_K_FIXTURE: &str = "tiny-decoder-top-k";
const LOG_PROBS: &str = "original_log_probs";
const TOP_IDS: &str = "original_top_ids";
const TOP_LOG_PROBS: &str = "original_top_log_probs";
const LOG_SUM_EXP: &str = "original_log_sum_exp";
const LABEL_LOG_PROBS: &str = "original_label_log_probs";

/// A copy of the fixture bundle `fixtures/bundles/<name>` in `tmp/<name>`.
fn fixture_copy(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/bundles")
        .join(name);
    let dest = tmp.path().join(name);
    std::fs::create_dir(&dest).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    // The fixture is valid to start from.
    check_all(&Bundle::open(&dest).unwrap()).unwrap();
    dest
}

/// Element `i` of little-endian i64 bytes.
fn i64_at(bytes: &[u8], i: usize) -> i64 {
    i64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap())
}

/// Overwrites element `i` of little-endian i64 bytes.
fn set_i64(bytes: &mut [u8], i: usize, v: i64) {
    bytes[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
}

/// Edits the data of `tensor` of the validation file, then rehashes.
fn edit_validation(dir: &Path, tensor: &str, f: impl FnOnce(&mut [u8])) {
    edit_tensor(dir, VALIDATION, tensor, f);
    rehash(dir);
}

/// A validation file's tensors: name, dtype, shape and bytes.
type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrites the validation file of `dir` with the tensors `f` leaves (a valid safetensors
/// file, the `safetensors` crate's layout), lists exactly them in the manifest, and rehashes.
fn rewrite_validation(dir: &Path, f: impl FnOnce(&mut Tensors)) {
    use safetensors::tensor::{SafeTensors, TensorView};
    let path = dir.join(VALIDATION);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    f(&mut tensors);
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    edit_manifest(dir, |m| {
        m["files"]["validation"]["tensors"] = tensors
            .iter()
            .map(|(n, ..)| json!({"name": n, "sha256": sha256_hex(b"")}))
            .collect();
    });
    rehash(dir);
}

/// `tensor` of `tensors`, mutable.
fn find<'a>(
    tensors: &'a mut Tensors,
    tensor: &str,
) -> &'a mut (String, safetensors::Dtype, Vec<usize>, Vec<u8>) {
    tensors.iter_mut().find(|t| t.0 == tensor).unwrap()
}

/// Row `r` of the full form's log-probabilities of `bytes` (10 classes).
fn full_row(bytes: &[u8], r: usize) -> Vec<f32> {
    (0..10).map(|c| f32_at(bytes, r * 10 + c)).collect()
}

/// `dir` opens, the data checks report rule 6.4 naming the validation file and `tensor` and
/// every one of `parts`.
#[track_caller]
fn distribution_violation(dir: &Path, tensor: &str, parts: &[&str]) -> String {
    let named = t(tensor);
    let mut all = vec![VALIDATION, named.as_str()];
    all.extend_from_slice(parts);
    data_violation(
        dir,
        check_validation_values,
        Rule::OriginalDistributions,
        &all,
    )
}

#[test]
fn rule_6_4_positive_log_probability() {
    // Row 0's largest value (at its prediction, 3) made positive: it stays the largest.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, FULL_FIXTURE);
    edit_validation(&dir, LOG_PROBS, |b| set_f32(b, 3, 0.5));
    distribution_violation(
        &dir,
        LOG_PROBS,
        &["finite log-probabilities <= 0", "0.5 at flat index 3"],
    );
}

#[test]
fn rule_6_4_nan_log_probability() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, FULL_FIXTURE);
    edit_validation(&dir, LOG_PROBS, |b| set_f32(b, 25, f32::NAN));
    distribution_violation(&dir, LOG_PROBS, &["NaN at flat index 25"]);
    // -inf (a probability of exactly 0) is not finite either.
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    edit_validation(&dir, TOP_LOG_PROBS, |b| set_f32(b, 5, f32::NEG_INFINITY));
    distribution_violation(&dir, TOP_LOG_PROBS, &["-inf at flat index 5"]);
}

#[test]
fn rule_6_4_full_row_not_normalized() {
    // Row 2's probabilities scaled by exp(-0.002): every value stays <= 0 and the largest at
    // the prediction, but they add up to 0.998.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, FULL_FIXTURE);
    edit_validation(&dir, LOG_PROBS, |b| {
        for c in 20..30 {
            set_f32(b, c, f32_at(b, c) - 0.002);
        }
    });
    distribution_violation(
        &dir,
        LOG_PROBS,
        &[
            "each row's log-sum-exp within 0.001 of 0",
            "in row 2",
            "-0.00",
        ],
    );
    // Within the tolerance (5e-4 too much probability) is valid: it covers F32 rounding.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, FULL_FIXTURE);
    edit_validation(&dir, LOG_PROBS, |b| {
        for c in 20..30 {
            set_f32(b, c, f32_at(b, c) + 5e-4);
        }
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_6_4_full_row_maximum_not_at_the_prediction() {
    // Row 1 (prediction 7): its largest value swapped with another, so the row is the same
    // distribution over other classes: normalized, every value <= 0.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, FULL_FIXTURE);
    let predictions = St::read(&dir.join(VALIDATION))
        .tensor_mut("original_predictions")
        .to_vec();
    assert_eq!(i64_at(&predictions, 1), 7);
    let mut max = 0.0;
    edit_validation(&dir, LOG_PROBS, |b| {
        let row = full_row(b, 1);
        max = row[7];
        assert!(row.iter().all(|&x| x <= max));
        set_f32(b, 10 + 7, row[0]);
        set_f32(b, 10, max);
    });
    distribution_violation(
        &dir,
        LOG_PROBS,
        &[
            &format!("row 1's largest log-probability ({max}) at its original prediction 7"),
            "there",
        ],
    );
}

#[test]
fn rule_6_4_top_k_ids_duplicated() {
    // Row 2's ids (3, 10, 4) become (3, 10, 10).
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    edit_validation(&dir, TOP_IDS, |b| {
        assert_eq!([i64_at(b, 6), i64_at(b, 7), i64_at(b, 8)], [3, 10, 4]);
        set_i64(b, 8, 10);
    });
    distribution_violation(&dir, TOP_IDS, &["distinct ids in row 2", "10 twice"]);
}

#[test]
fn rule_6_4_top_k_id_out_of_range() {
    // The vocabulary has 11 tokens: id 11 is none, nor is -1.
    for (id, found) in [(11, "11 at index 4"), (-1, "-1 at index 4")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
        edit_validation(&dir, TOP_IDS, |b| set_i64(b, 4, id));
        distribution_violation(&dir, TOP_IDS, &["original_top_ids in 0..11", found]);
    }
}

#[test]
fn rule_6_4_top_k_first_id_not_the_prediction() {
    // Row 1's ids (5, 6, 7) become (6, 5, 7): still distinct, the log-probabilities as they were.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    edit_validation(&dir, TOP_IDS, |b| {
        assert_eq!([i64_at(b, 3), i64_at(b, 4)], [5, 6]);
        set_i64(b, 3, 6);
        set_i64(b, 4, 5);
    });
    distribution_violation(
        &dir,
        TOP_IDS,
        &["row 1 to start with its original prediction 5", "found 6"],
    );
}

#[test]
fn rule_6_4_top_k_log_probabilities_increasing() {
    // Row 3's first two log-probabilities swapped.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    let (mut a, mut b) = (0.0, 0.0);
    edit_validation(&dir, TOP_LOG_PROBS, |v| {
        (a, b) = (f32_at(v, 9), f32_at(v, 10));
        assert!(a > b);
        set_f32(v, 9, b);
        set_f32(v, 10, a);
    });
    distribution_violation(
        &dir,
        TOP_LOG_PROBS,
        &[
            "non-increasing log-probabilities in row 3",
            &format!("{a} after {b} at position 1"),
        ],
    );
}

#[test]
fn rule_6_4_top_k_probabilities_adding_up_to_more_than_one() {
    // Row 4's three log-probabilities all -0.01: equal values are non-increasing, but
    // 3 × 0.990 > 1 + 1e-3.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    edit_validation(&dir, TOP_LOG_PROBS, |v| {
        for i in 12..15 {
            set_f32(v, i, -0.01);
        }
    });
    distribution_violation(
        &dir,
        TOP_LOG_PROBS,
        &[
            "row 4's probabilities adding up to at most 1 + 0.001",
            "found 2.97",
        ],
    );
    // 1 + 5e-4 is within the tolerance: row 4's largest probability raised by 5e-4 minus
    // what the three had too little.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    edit_validation(&dir, TOP_LOG_PROBS, |v| {
        let p: Vec<f64> = (12..15).map(|i| (f32_at(v, i) as f64).exp()).collect();
        let first = 1.0 + 5e-4 - p[1] - p[2];
        assert!(first < 1.0 && first > p[1]);
        set_f32(v, 12, first.ln() as f32);
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_6_4_top_k_non_finite_log_sum_exp() {
    for (v, found) in [
        (f32::INFINITY, "inf at index 2"),
        (f32::NAN, "NaN at index 2"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
        edit_validation(&dir, LOG_SUM_EXP, |b| set_f32(b, 2, v));
        distribution_violation(&dir, LOG_SUM_EXP, &["finite values", found]);
    }
    // Any finite value is valid, negative too (logits of any sign).
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    edit_validation(&dir, LOG_SUM_EXP, |b| set_f32(b, 2, -1e30));
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_6_4_top_k_positive_label_log_probability() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    edit_validation(&dir, LABEL_LOG_PROBS, |b| set_f32(b, 7, 0.25));
    distribution_violation(
        &dir,
        LABEL_LOG_PROBS,
        &["finite log-probabilities <= 0", "0.25 at flat index 7"],
    );
}

#[test]
fn rule_6_4_the_writer_stores_the_original_models_distributions() {
    // Recomputed here from the source with the reference model (spec section 9.1): the
    // log-softmax x - LSE(x) in f64 rounded to f32; the top K by logit (ties to the lower id),
    // f32(LSE) and the label's log-probability.
    use ternary_bundle::model::reference::forward_source;
    let v = common::validation_set(6);
    let (src, plan) = common::tiny_model(7);
    let x = ndarray::ArrayView2::from_shape((6, 7), &v.inputs).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let full = tiny_bundle(&tmp, "full", |_, o| o.validation = Some(v.clone()));
    let top = tiny_bundle(&tmp, "top", |_, o| {
        o.validation = Some(v.clone());
        o.original_top_k = Some(3);
    });
    for dir in [&full, &top] {
        assert_eq!(manifest(dir)["format_version"], "5.0");
    }
    let b = Bundle::open(&full).unwrap();
    let logits = forward_source(&src, &plan.model, &b.facts().activations, x).unwrap();
    let f32s = |dir: &Path, name: &str| -> Vec<f32> {
        let mut st = St::read(&dir.join(VALIDATION));
        let bytes = st.tensor_mut(name).to_vec();
        (0..bytes.len() / 4).map(|i| f32_at(&bytes, i)).collect()
    };
    let full_lp = f32s(&full, LOG_PROBS);
    let (top_lp, lse_stored, label_lp) = (
        f32s(&top, TOP_LOG_PROBS),
        f32s(&top, LOG_SUM_EXP),
        f32s(&top, LABEL_LOG_PROBS),
    );
    let ids: Vec<i64> = {
        let mut st = St::read(&top.join(VALIDATION));
        let bytes = st.tensor_mut(TOP_IDS).to_vec();
        (0..bytes.len() / 8).map(|i| i64_at(&bytes, i)).collect()
    };
    assert_eq!((full_lp.len(), ids.len(), lse_stored.len()), (30, 18, 6));
    for (r, row) in logits.rows().into_iter().enumerate() {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        let lp = |c: usize| (row[c] as f64 - lse) as f32;
        for c in 0..5 {
            // Summation order inside the forward pass may differ from the writer's.
            assert!(
                (full_lp[r * 5 + c] - lp(c)).abs() <= 1e-6,
                "row {r} class {c}"
            );
        }
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let want: Vec<i64> = order[..3].iter().map(|&c| c as i64).collect();
        assert_eq!(&ids[r * 3..r * 3 + 3], want.as_slice(), "row {r}");
        for (k, &c) in order[..3].iter().enumerate() {
            assert!((top_lp[r * 3 + k] - lp(c)).abs() <= 1e-6);
        }
        assert!((lse_stored[r] as f64 - lse).abs() <= 1e-5 * lse.abs().max(1.0));
        assert!((label_lp[r] - lp(v.labels[r] as usize)).abs() <= 1e-6);
    }
}

#[test]
fn rule_6_1_distributions_in_a_format_4_bundle() {
    // A 4.x reader refuses these tensors, so a bundle that declares 4.x cannot carry them.
    for (fixture, first) in [(FULL_FIXTURE, LOG_PROBS), (TOP_K_FIXTURE, TOP_IDS)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture_copy(&tmp, fixture);
        edit_manifest(&dir, |m| m["format_version"] = json!("4.0"));
        open_violation(
            &dir,
            Rule::ValidationTensors,
            &[
                VALIDATION,
                &t(first),
                "no original distributions in a format 4.0 bundle (needs format 5.0 or later)",
            ],
        );
    }
    // A newer minor version of 5 is fine.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, FULL_FIXTURE);
    edit_manifest(&dir, |m| m["format_version"] = json!("5.3"));
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

/// The tensors of the top-K form for `rows` scored samples of the chain fixture (K = 2):
/// ids (prediction, then another class), valid log-probabilities.
fn top_k_tensors(rows: usize) -> Tensors {
    use safetensors::Dtype as D;
    let f32b = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    vec![
        (
            TOP_IDS.into(),
            D::I64,
            vec![rows, 2],
            (0..rows)
                .flat_map(|_| [0i64, 1])
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        (
            TOP_LOG_PROBS.into(),
            D::F32,
            vec![rows, 2],
            f32b(vec![-1.0; rows * 2]),
        ),
        (
            LOG_SUM_EXP.into(),
            D::F32,
            vec![rows],
            f32b(vec![2.0; rows]),
        ),
        (
            LABEL_LOG_PROBS.into(),
            D::F32,
            vec![rows],
            f32b(vec![-3.0; rows]),
        ),
    ]
}

#[test]
fn rule_6_1_both_forms_at_once() {
    // The full form and the top-K form's tensors in one file.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, FULL_FIXTURE);
    rewrite_validation(&dir, |ts| ts.extend(top_k_tensors(32)));
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[
            VALIDATION,
            "unexpected tensor \"original_top_ids\"",
            "exactly 5 tensors",
        ],
    );
    // The top-K form with the full form's tensor.
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    rewrite_validation(&dir, |ts| {
        ts.push((
            LOG_PROBS.into(),
            safetensors::Dtype::F32,
            vec![3, 4, 11],
            [-(11f32.ln())]
                .repeat(3 * 4 * 11)
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ))
    });
    // The file holds original_log_probs: the full form is expected, the top-K form's
    // tensors are extra.
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, "unexpected tensor \"original_top_ids\""],
    );
}

#[test]
fn rule_6_1_top_k_larger_than_the_classes_or_zero() {
    // The decoder's vocabulary has 11 tokens: K may be 1 to 11.
    for k in [12usize, 0] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
        rewrite_validation(&dir, |ts| {
            let n = 3 * 4 * k;
            let ids = find(ts, TOP_IDS);
            ids.2 = vec![3, 4, k];
            ids.3 = (0..n as i64)
                .map(|i| i % k as i64)
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let lp = find(ts, TOP_LOG_PROBS);
            lp.2 = vec![3, 4, k];
            lp.3 = (0..n).flat_map(|_| (-3f32).to_le_bytes()).collect();
        });
        open_violation(
            &dir,
            Rule::ValidationTensors,
            &[
                VALIDATION,
                &t(TOP_IDS),
                "K in 1..=11 (at most the 11 classes and 1024)",
                &format!("K = {k}"),
            ],
        );
    }
}

#[test]
fn rule_6_1_distributions_without_original_predictions() {
    // The distributions are allowed only beside the predictions they explain.
    for (fixture, tensor) in [(FULL_FIXTURE, LOG_PROBS), (TOP_K_FIXTURE, TOP_IDS)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture_copy(&tmp, fixture);
        rewrite_validation(&dir, |ts| ts.retain(|t| t.0 != "original_predictions"));
        open_violation(
            &dir,
            Rule::ValidationTensors,
            &[VALIDATION, &format!("unexpected tensor \"{tensor}\"")],
        );
    }
}

#[test]
fn rule_6_1_distributions_of_the_wrong_shape() {
    // Each edit keeps the byte length (rule 3.5) and breaks only the shape or the dtype.
    let cases: [(&str, &str, Value, &[&str]); 6] = [
        (
            FULL_FIXTURE,
            LOG_PROBS,
            json!({"shape": [16, 20]}),
            &["F32 of shape [32, 10]", "F32 of shape [16, 20]"],
        ),
        (
            FULL_FIXTURE,
            LOG_PROBS,
            json!({"dtype": "I32"}),
            &["F32 of shape [32, 10]", "I32 of shape [32, 10]"],
        ),
        (
            TOP_K_FIXTURE,
            TOP_IDS,
            json!({"shape": [12, 3]}),
            &[
                "original_top_ids of shape [3, 4, K] with the rest of the top-K form",
                "original_top_ids of shape [12, 3]",
            ],
        ),
        (
            TOP_K_FIXTURE,
            TOP_LOG_PROBS,
            json!({"shape": [3, 2, 6]}),
            &["F32 of shape [3, 4, 3]", "F32 of shape [3, 2, 6]"],
        ),
        (
            TOP_K_FIXTURE,
            LOG_SUM_EXP,
            json!({"shape": [4, 3]}),
            &["F32 of shape [3, 4]", "F32 of shape [4, 3]"],
        ),
        (
            TOP_K_FIXTURE,
            LABEL_LOG_PROBS,
            json!({"dtype": "U32"}),
            &["F32 of shape [3, 4]", "U32 of shape [3, 4]"],
        ),
    ];
    for (fixture, tensor, edit, parts) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture_copy(&tmp, fixture);
        edit_st(&dir, VALIDATION, |st| {
            st.edit_json(|v| {
                for (k, x) in edit.as_object().unwrap() {
                    v[tensor][k] = x.clone();
                }
            })
        });
        rehash(&dir);
        let mut all = vec![VALIDATION];
        let named = t(tensor);
        all.push(&named);
        all.extend_from_slice(parts);
        open_violation(&dir, Rule::ValidationTensors, &all);
    }
}

#[test]
fn rule_6_1_a_top_k_tensor_missing() {
    // original_top_ids with the rest of the form incomplete: the missing tensor is named.
    for missing in [TOP_LOG_PROBS, LOG_SUM_EXP, LABEL_LOG_PROBS] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
        rewrite_validation(&dir, |ts| ts.retain(|t| t.0 != missing));
        open_violation(
            &dir,
            Rule::ValidationTensors,
            &[VALIDATION, &t(missing), "no such tensor"],
        );
    }
    // Without original_top_ids, the others cannot say K.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(&tmp, TOP_K_FIXTURE);
    rewrite_validation(&dir, |ts| ts.retain(|t| t.0 != TOP_IDS));
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t(TOP_IDS), "without original_top_ids"],
    );
}
