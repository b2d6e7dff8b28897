//! Decoder bundles end to end through the library: verify (every check passes on a model that
//! does a task, retention fails on one quantization breaks, the gradient check catches a wrong
//! backward pass in attention, RMSNorm and the gated MLP separately), run and assess.

use crate::common;

use std::path::PathBuf;

use common::decoder::{copy_task, decoder_bundle, plan, spec, task_model, wrong_backwards};
use ndarray::Array2;
use ternary_bundle::assess::{assess, AssessOptions};
use ternary_bundle::model::bundle_decoder::BundleDecoder;
use ternary_bundle::model::decoder::{forward, Family};
use ternary_bundle::model::gradcheck::GradCheckOptions;
use ternary_bundle::model::reference::WeightPath;
use ternary_bundle::run::{run, RunInput};
use ternary_bundle::verify::{verify, Check, Status, VerifyOptions};
use ternary_bundle::{write_bundle, Bundle, WriteOptions};

/// A bundle of the copy-task model of `family` with 40 sequences of 12 tokens.
fn task_bundle(tmp: &tempfile::TempDir, name: &str, family: Family) -> PathBuf {
    let s = spec(family, true);
    let options = WriteOptions {
        validation: Some(copy_task(&s, 40, 12)),
        ..Default::default()
    };
    let dest = tmp.path().join(name);
    write_bundle(&dest, &task_model(&s), &plan(&s), &options).unwrap();
    dest
}

fn status(report: &ternary_bundle::verify::VerifyReport, check: Check) -> Status {
    report.check(check).unwrap().status
}

#[test]
fn a_decoder_that_does_a_task_passes_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    for family in [Family::Llama, Family::Bitnet] {
        let dir = task_bundle(&tmp, family.name(), family);
        let report = verify(&dir, &VerifyOptions::default());
        for c in &report.checks {
            let expected = if c.name == Check::Reference || c.name == Check::Signature {
                Status::Skip
            } else {
                Status::Pass
            };
            assert_eq!(c.status, expected, "{family:?} {}: {}", c.name, c.detail);
        }
        let m = &report.metrics;
        assert!(
            m.retention.unwrap() >= 0.995,
            "{family:?}: {:?}",
            m.retention
        );
        // 40 sequences of 11 scored positions; the copy rule holds at difficulty 1.
        let figures = &report.check(Check::Retention).unwrap().figures;
        assert_eq!(figures["samples"], 440, "{figures}");
        let acc = m.accuracy_fp16.unwrap();
        assert!(acc > 0.5 && acc < 1.0, "{family:?}: accuracy {acc}");
        assert_eq!(m.accuracy_original, m.accuracy_fp16);
    }
}

#[test]
fn retention_fails_where_quantization_changes_the_decisions() {
    // Random weights of RMS 0.58 everywhere: ternary rounding changes what the model predicts.
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Llama, false);
    let options = WriteOptions {
        validation: Some(copy_task(&s, 20, 8)),
        ..Default::default()
    };
    let dir = tmp.path().join("random");
    write_bundle(
        &dir,
        &common::decoder::random_model(&s),
        &plan(&s),
        &options,
    )
    .unwrap();
    let report = verify(&dir, &VerifyOptions::default());
    assert_eq!(status(&report, Check::Retention), Status::Fail);
    assert!(report.metrics.retention.unwrap() < 0.9);
    assert!(!report.ok);
}

#[test]
fn the_gradient_check_catches_a_wrong_backward_pass_in_each_component() {
    let tmp = tempfile::tempdir().unwrap();
    for family in [Family::Llama, Family::Bitnet] {
        let dir = decoder_bundle(&tmp, family.name(), family, false, true);
        let clean = verify(&dir, &VerifyOptions::default());
        assert_eq!(status(&clean, Check::GradientCheck), Status::Pass);
        for hooks in wrong_backwards() {
            let options = VerifyOptions {
                grad: GradCheckOptions {
                    decoder_hooks: hooks,
                    ..GradCheckOptions::default()
                },
                ..VerifyOptions::default()
            };
            let report = verify(&dir, &options);
            let check = report.check(Check::GradientCheck).unwrap();
            assert_eq!(
                check.status,
                Status::Fail,
                "{family:?} {hooks:?}: {}",
                check.detail
            );
            assert!(check.figures["error_ratio"].as_f64().unwrap() > 1.0);
            // Only the check of the analytic gradient sees it.
            assert_eq!(status(&report, Check::GradientFlow), Status::Pass);
            assert_eq!(status(&report, Check::Agreement), Status::Pass);
        }
    }
}

#[test]
fn run_writes_the_logits_of_every_position_on_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = decoder_bundle(&tmp, "b", Family::Bitnet, true, false);
    let b = Bundle::open(&dir).unwrap();
    let ids: Vec<i64> = (0..15).map(|i| (i * 7 % 29) as i64).collect();
    let input = RunInput::Tokens {
        ids: ids.clone(),
        tokens: 5,
    };
    let ids = Array2::from_shape_vec((3, 5), ids).unwrap();
    for path in [WeightPath::Fp16, WeightPath::Ternary] {
        let out = run(&b, path, &input).unwrap();
        assert_eq!((out.rows, out.tokens, out.classes), (3, Some(5), 29));
        let weights = BundleDecoder::new(&b, path).unwrap();
        let want = forward(weights.spec(), &weights, ids.view()).unwrap();
        assert_eq!(out.logits, want.iter().copied().collect::<Vec<_>>());
        assert_eq!(out.predictions.len(), 15);
    }
    // Rows where a decoder takes token ids are refused, and ids beyond the vocabulary too.
    let e = run(&b, WeightPath::Fp16, &RunInput::Rows(vec![0.0; 24])).unwrap_err();
    assert!(e.to_string().contains("token ids for a decoder"), "{e}");
    let bad = RunInput::Tokens {
        ids: vec![0, 29],
        tokens: 2,
    };
    let e = run(&b, WeightPath::Fp16, &bad).unwrap_err();
    assert!(e.to_string().contains("29"), "{e}");
}

#[test]
fn assess_finds_the_level_of_a_decoder_per_difficulty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = task_bundle(&tmp, "llama", Family::Llama);
    let report = assess(&dir, &AssessOptions::default()).unwrap();
    assert_eq!(report.levels.len(), 10);
    assert_eq!(report.levels.iter().map(|l| l.examples).sum::<usize>(), 40);
    // Difficulty 1 follows the copy rule exactly; the hardest level is far from it.
    assert_eq!(report.levels[0].accuracy_fp16, 1.0);
    assert!(report.levels[9].accuracy_fp16 < 0.8);
    assert!(report
        .levels
        .iter()
        .all(|l| l.gradient_variance.is_finite() && l.mean_cross_entropy.is_finite()));
}

/// Writes a safetensors file of one I64 tensor `name` of `shape` holding `ids`.
fn ids_file(path: &std::path::Path, name: &str, shape: Vec<u64>, ids: &[i64]) {
    use ternary_bundle::format::safetensors::Dtype;
    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    ternary_bundle::write::safetensors::write_safetensors_file(
        path,
        vec![(name.to_string(), Dtype::I64, shape)],
        &[],
        true,
        |_| Ok(bytes.clone()),
    )
    .unwrap();
}

#[test]
fn sequences_too_short_or_out_of_the_vocabulary_are_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = decoder_bundle(&tmp, "b", Family::Llama, false, false);
    let b = Bundle::open(&dir).unwrap();
    // Validation sets need a next token: T = 1 (and T = 0) are refused by rule 6.1.
    for (t, ids) in [(1u64, vec![3i64, 4]), (0, vec![])] {
        let path = tmp.path().join(format!("val-{t}.safetensors"));
        ids_file(&path, "input_ids", vec![2, t], &ids);
        let e = ternary_bundle::source::load_validation_set(&path).unwrap_err();
        assert_eq!(
            e.rule(),
            Some(ternary_bundle::Rule::ValidationTensors),
            "{e}"
        );
        assert!(e.to_string().contains("T >= 2"), "{e}");
    }
    // `run` takes T >= 1 tokens, every id in the vocabulary.
    let path = tmp.path().join("empty.safetensors");
    ids_file(&path, "input_ids", vec![2, 0], &[]);
    let e = ternary_bundle::run::load_inputs(&path, &b).unwrap_err();
    assert!(e.to_string().contains("[N >= 1, T >= 1]"), "{e}");
    let path = tmp.path().join("far.safetensors");
    ids_file(&path, "input_ids", vec![1, 3], &[0, 5, 29]);
    let e = ternary_bundle::run::load_inputs(&path, &b).unwrap_err();
    assert!(
        e.to_string().contains("0..29") && e.to_string().contains("position 2"),
        "{e}"
    );
    // A validation set of ids beyond the vocabulary is refused by create (rule 6.2).
    let s = spec(Family::Llama, false);
    let mut v = copy_task(&s, 2, 4);
    v.input_ids.as_mut().unwrap().ids[3] = 29;
    let options = WriteOptions {
        validation: Some(v),
        ..Default::default()
    };
    let e = write_bundle(
        &tmp.path().join("bad"),
        &task_model(&s),
        &plan(&s),
        &options,
    )
    .unwrap_err();
    assert_eq!(
        e.rule(),
        Some(ternary_bundle::Rule::ValidationValues),
        "{e}"
    );
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn the_language_model_demo_passes_verify_and_its_levels_follow_the_noise() {
    use ternary_bundle::write::demo_lm::DemoLm;
    let tmp = tempfile::tempdir().unwrap();
    let lm = DemoLm::new(ternary_bundle::write::demo::DEFAULT_SEED);
    let plan = lm.plan(ternary_bundle::QuantParams::default());
    let options = WriteOptions {
        validation: Some(lm.validation_set()),
        assets: lm.assets(),
        ..Default::default()
    };
    // As the demo writes it: the original model is the ternary forward it was trained with.
    let dir = tmp.path().join("lm");
    ternary_bundle::write_bundle_qat(&dir, &lm, &plan, &options, &|_| {}).unwrap();
    let report = verify(&dir, &VerifyOptions::default());
    assert!(report.ok, "{:?}", report.checks);
    assert!(report.metrics.retention.unwrap() >= 0.995);
    let fidelity = report.check(Check::Fidelity).unwrap();
    assert!(
        fidelity.figures["fp16"]["kl"]["mean"].as_f64().unwrap() < 1e-5,
        "{}",
        fidelity.detail
    );
    let a = assess(&dir, &AssessOptions::default()).unwrap();
    // Noise replaces copied characters: accuracy falls with the level, from above the 75%
    // target at level 1 to under half at level 10, and each level has its perplexity.
    let acc: Vec<f64> = a.levels.iter().map(|l| l.accuracy_fp16).collect();
    assert!(acc[0] > 0.75 && acc[9] < 0.5, "{acc:?}");
    assert!(acc[0] > acc[4] && acc[4] > acc[9], "{acc:?}");
    for l in &a.levels {
        let p = l.perplexity_fp16.unwrap();
        assert!((p - l.mean_cross_entropy.exp()).abs() < 1e-9 * p);
    }

    // Its master weights run dense are another model than the one trained: the same bundle
    // judged against them keeps barely half the decisions, and its distribution is far off.
    let dense = tmp.path().join("dense");
    ternary_bundle::write_bundle(&dense, &lm, &plan, &options).unwrap();
    let only = VerifyOptions {
        only: vec![Check::Retention, Check::Fidelity],
        ..Default::default()
    };
    let report = verify(&dense, &only);
    assert!(report.metrics.retention.unwrap() < 0.8);
    let fidelity = report.check(Check::Fidelity).unwrap();
    assert_eq!(fidelity.status, Status::Fail, "{}", fidelity.detail);
}

#[test]
fn the_streamed_gradient_check_agrees_with_the_in_memory_decoder() {
    use ternary_bundle::model::decoder64::{gradient_flow, Decoder64, DecoderGradCheckOptions};
    use ternary_bundle::model::decoder_stream::streamed_gradient_check;
    let tmp = tempfile::tempdir().unwrap();
    for (family, tied) in [(Family::Llama, false), (Family::Bitnet, true)] {
        let dir = decoder_bundle(&tmp, family.name(), family, tied, false);
        let b = Bundle::open(&dir).unwrap();
        let ids: Vec<i64> = vec![3, 17, 3, 28, 0, 9, 17];
        let rep = streamed_gradient_check(&b, &ids, &DecoderGradCheckOptions::default()).unwrap();
        assert!(rep.check.error_ratio < 0.1, "{family:?}: {:?}", rep.check);
        assert!(rep.check.coordinates >= 20 && rep.check.directions == 2);
        // The same loss and the same gradient statistics as the f64 decoder held in memory.
        let fp16 = BundleDecoder::new(&b, WeightPath::Fp16).unwrap();
        let model = Decoder64::load(fp16.spec(), &fp16).unwrap();
        let view = Array2::from_shape_vec((1, ids.len()), ids.clone()).unwrap();
        let (loss, stats) = gradient_flow(&model, view.view()).unwrap();
        assert!((rep.check.loss - loss).abs() <= 1e-12 * loss.abs());
        assert_eq!(rep.flow.len(), stats.len());
        for (s, m) in rep.flow.iter().zip(&stats) {
            assert_eq!((&s.name, s.non_zero), (&m.name, m.non_zero));
            assert!(
                (s.norm - m.norm).abs() <= 1e-9 * m.norm,
                "{}: {} vs {}",
                s.name,
                s.norm,
                m.norm
            );
        }
        // A 1% error in the backward pass of any component fails it.
        for hooks in wrong_backwards() {
            let options = DecoderGradCheckOptions {
                hooks,
                ..DecoderGradCheckOptions::default()
            };
            let rep = streamed_gradient_check(&b, &ids, &options).unwrap();
            assert!(
                rep.check.error_ratio > 1.0,
                "{family:?} {hooks:?}: {:?}",
                rep.check
            );
        }
    }
}
