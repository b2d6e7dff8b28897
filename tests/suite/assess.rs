//! `bundle assess` on crafted labelled data: a two-class model whose decisions are known for
//! every input, so that each level's accuracy is chosen by the test. Covers the verdicts (in the
//! zone, too easy, too hard, a gap), a missing level, a level of one example, batches, data from
//! a file, and the missing-data errors (exit code 2 on the command line).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ternary_bundle::assess::{assess, AssessOptions, LevelFigures, Verdict};
use ternary_bundle::format::manifest::{LayerSpec, ModelSpec};
use ternary_bundle::format::safetensors::Dtype;
use ternary_bundle::source::{MemorySource, ValidationSet};
use ternary_bundle::write::safetensors::write_safetensors_file;
use ternary_bundle::{write_bundle, BundlePlan, Error, QuantParams, WriteOptions};

/// One example of a level: the model predicts class 0 for it; `right` says whether its label
/// agrees.
fn example(right: bool) -> ([f32; 2], i64) {
    ([1.0, 0.0], if right { 0 } else { 1 })
}

/// Labelled data with `levels[i] = (difficulty, examples, right)`: `right` of the `examples`
/// at that difficulty are labelled as the model predicts.
fn data(levels: &[(u8, usize, usize)], difficulty: bool) -> ValidationSet {
    let (mut inputs, mut labels, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for &(level, n, right) in levels {
        for i in 0..n {
            let (x, l) = example(i < right);
            inputs.extend(x);
            labels.push(l);
            diff.push(level);
        }
    }
    ValidationSet {
        input_ids: None,
        origin: PathBuf::from("crafted.safetensors"),
        inputs,
        labels,
        difficulty: difficulty.then_some(diff),
    }
}

/// A bundle of the model `y = W x` with W = [[1, 0], [0, 1]] (quantized exactly: trits
/// [[1, 0], [0, 1]], scales 0.5), so that the prediction is class 0 exactly when x0 >= x1,
/// with `validation` embedded.
fn bundle(dir: &Path, validation: Option<ValidationSet>) -> PathBuf {
    let src = MemorySource::new("two.safetensors").with("w", vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]);
    let plan = BundlePlan {
        model: ModelSpec {
            decoder: None,
            input_dim: 2,
            layers: vec![LayerSpec {
                name: "out".into(),
                weight: "w".into(),
                bias: None,
                in_features: 2,
                out_features: 2,
                activation: "identity".into(),
                rmsnorm: None,
            }],
        },
        params: QuantParams::default(),
        quantize: BTreeSet::from(["w".to_string()]),
        given: None,
    };
    let dest = dir.join("b");
    let options = WriteOptions {
        validation,
        ..Default::default()
    };
    write_bundle(&dest, &src, &plan, &options).unwrap();
    dest
}

fn accuracies(levels: &[LevelFigures]) -> Vec<(u8, f64)> {
    levels
        .iter()
        .map(|l| (l.difficulty, l.accuracy_fp16))
        .collect()
}

#[test]
fn the_level_closest_to_75_percent_is_chosen_and_lies_in_the_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(
        tmp.path(),
        Some(data(&[(1, 4, 4), (2, 4, 3), (3, 4, 1)], true)),
    );
    let r = assess(&dir, &AssessOptions::default()).unwrap();
    assert_eq!(accuracies(&r.levels), [(1, 1.0), (2, 0.75), (3, 0.25)]);
    assert_eq!((r.chosen, r.verdict, r.ok), (2, Verdict::InZone, true));
    assert_eq!(r.metrics.optimal_level, 2);
    assert_eq!(
        r.metrics.gradient_variance_optimal,
        r.levels[1].gradient_variance
    );
    for l in &r.levels {
        assert_eq!(l.accuracy_ternary, l.accuracy_fp16);
        assert!(
            l.gradient_variance.is_finite() && l.gradient_variance > 0.0,
            "{l:?}"
        );
        assert!(l.mean_cross_entropy.is_finite() && l.mean_cross_entropy > 0.0);
    }
}

#[test]
fn no_level_in_the_zone_says_on_which_side_the_model_is() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            vec![(1, 10, 10), (2, 10, 9)],
            Verdict::TooEasy,
            "too accurate at every level",
        ),
        (
            vec![(1, 10, 5), (2, 10, 2)],
            Verdict::TooHard,
            "too inaccurate at every level",
        ),
        (
            vec![(1, 10, 9), (2, 10, 5)],
            Verdict::Gap,
            "jumps across it",
        ),
    ];
    for (i, (levels, verdict, words)) in cases.into_iter().enumerate() {
        let dir = bundle(&tmp.path().join(i.to_string()), Some(data(&levels, true)));
        let r = assess(&dir, &AssessOptions::default()).unwrap();
        assert_eq!((r.verdict, r.ok), (verdict, false), "{}", r.detail);
        assert!(r.detail.contains(words), "{}", r.detail);
    }
}

#[test]
fn missing_levels_are_absent_and_a_one_example_level_has_a_variance() {
    let tmp = tempfile::tempdir().unwrap();
    // Levels 1 and 5 only; level 5 has a single example.
    let dir = bundle(tmp.path(), Some(data(&[(1, 4, 3), (5, 1, 1)], true)));
    let r = assess(&dir, &AssessOptions::default()).unwrap();
    assert_eq!(accuracies(&r.levels), [(1, 0.75), (5, 1.0)]);
    let one = &r.levels[1];
    // One batch of one example: the variance is over the entries of each gradient tensor
    // (here the 4 entries of w), so it is defined.
    assert_eq!((one.examples, one.batches, one.skipped_tensors), (1, 1, 0));
    assert!(one.gradient_variance.is_finite() && one.gradient_variance > 0.0);
}

#[test]
fn batches_average_the_variance_of_their_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    // Three examples at level 1 in batches of one: the level's variance is the mean of the
    // variances of each example alone (each its own level in a second data set).
    let dir = bundle(&tmp.path().join("a"), Some(data(&[(1, 3, 2)], true)));
    let per_example = AssessOptions {
        batch_size: Some(1),
        ..Default::default()
    };
    let r = assess(&dir, &per_example).unwrap();
    assert_eq!(r.levels[0].batches, 3);
    let mut alone = data(&[(1, 3, 2)], true);
    alone.difficulty = Some(vec![1, 2, 3]);
    let dir = bundle(&tmp.path().join("b"), Some(alone));
    let each = assess(&dir, &AssessOptions::default()).unwrap();
    let mean = each.levels.iter().map(|l| l.gradient_variance).sum::<f64>() / 3.0;
    assert!(
        (r.levels[0].gradient_variance - mean).abs() <= 1e-12 * mean,
        "{r:?} vs {mean}"
    );
    // The whole level as one batch is another figure (the gradient of the mean loss).
    let whole = assess(&tmp.path().join("a").join("b"), &AssessOptions::default()).unwrap();
    assert_ne!(
        whole.levels[0].gradient_variance,
        r.levels[0].gradient_variance
    );
    assert_eq!(whole.levels[0].batches, 1);
}

#[test]
fn data_can_come_from_a_file_and_missing_data_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(tmp.path(), None);
    // No validation set, no --data.
    let e = assess(&dir, &AssessOptions::default()).unwrap_err();
    assert!(matches!(e, Error::MissingData(_)), "{e}");
    assert!(e.to_string().contains("no validation set") && e.to_string().contains("--data"));
    // A file with the levels.
    let set = data(&[(1, 4, 3), (2, 4, 4)], true);
    let path = tmp.path().join("curriculum.safetensors");
    write_data(&path, &set);
    let r = assess(
        &dir,
        &AssessOptions {
            data: Some(path.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(accuracies(&r.levels), [(1, 0.75), (2, 1.0)]);
    assert!(r.data.ends_with("curriculum.safetensors"));
    // A file without a difficulty column.
    let flat = tmp.path().join("flat.safetensors");
    write_data(&flat, &data(&[(1, 4, 3)], false));
    let e = assess(
        &dir,
        &AssessOptions {
            data: Some(flat),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::MissingData(_)) && e.to_string().contains("difficulty"),
        "{e}"
    );
}

/// Writes `set` in the validation layout.
fn write_data(path: &Path, set: &ValidationSet) {
    let n = set.labels.len() as u64;
    let mut tensors = vec![
        ("inputs".to_string(), Dtype::F32, vec![n, 2]),
        ("labels".to_string(), Dtype::I64, vec![n]),
    ];
    if set.difficulty.is_some() {
        tensors.push(("difficulty".to_string(), Dtype::U8, vec![n]));
    }
    write_safetensors_file(path, tensors, &[], false, |name| {
        Ok(match name {
            "inputs" => set.inputs.iter().flat_map(|v| v.to_le_bytes()).collect(),
            "labels" => set.labels.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => set.difficulty.clone().unwrap_or_default(),
        })
    })
    .unwrap();
}

#[test]
fn the_command_exits_0_in_the_zone_1_outside_and_2_without_difficulty() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bundle"))
            .arg("assess")
            .arg(dir)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = bundle(
        &tmp.path().join("in"),
        Some(data(&[(1, 4, 4), (2, 4, 3)], true)),
    );
    let (code, stdout, _) = run(&dir, &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("OK: level 2 (FP16 accuracy 75.0%)"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&dir, &["--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["metrics"]["phase5/edge_of_chaos_optimal_level"], 2);
    assert_eq!(v["metrics"]["phase5/model_format"], "FP16");
    assert_eq!(v["levels"].as_array().unwrap().len(), 2);
    // Another zone: none of the levels is in 85-95%.
    let (code, stdout, _) = run(&dir, &["--zone", "0.85,0.95", "--target-accuracy", "0.9"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("NOT IN ZONE"), "{stdout}");
    let flat = bundle(&tmp.path().join("flat"), Some(data(&[(1, 4, 4)], false)));
    let (code, _, stderr) = run(&flat, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no difficulty column"), "{stderr}");
    let (code, _, stderr) = run(&dir, &["--batch-size", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, _, stderr) = run(&dir, &["--zone", "0.8,0.7"]);
    assert_eq!(code, Some(2), "{stderr}");
}
