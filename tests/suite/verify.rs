//! `bundle verify` through the library: for every one of the thirteen checks, a valid bundle is
//! broken so that exactly that check fails (bundle surgery, then `rehash` so the checks before
//! it keep passing), and the whole report is asserted: the failed check's detail (file, tensor,
//! rule number or figure), every other check Pass, or Skip naming the prerequisite that did not
//! pass. Then: valid bundles of every encoding and granularity pass every check, `only`/`skip`
//! selection, the handoff metrics and the JUnit rendering.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::surgery::{
    edit_manifest, edit_st, edit_tensor, manifest, rehash, tensor_entry, St, FP16, MANIFEST,
    TERNARY, VALIDATION,
};
use common::{
    bundle, f32_at, row_trits, row_with_nonzero_trit, set_f32, set_u16, t, tiny_bundle, u16_at,
};
use serde_json::{json, Value};
use ternary_bundle::format::manifest::{LayerSpec, ModelSpec, RmsNormSpec};
use ternary_bundle::model::gradcheck::GradCheckOptions;
use ternary_bundle::source::ValidationSet;
use ternary_bundle::source::{MemorySource, TensorSource};
use ternary_bundle::verify::{
    verify, Check, CheckResult, Status, VerifyOptions, VerifyReport, RETENTION_METRIC as RETENTION,
};

/// The names of the checks, in order.
fn check_names() -> Vec<&'static str> {
    Check::ALL.iter().map(|c| c.name()).collect()
}

/// The checks named.
fn checks(names: &[&str]) -> Vec<Check> {
    names.iter().map(|n| Check::from_name(n).unwrap()).collect()
}
use ternary_bundle::{
    write_bundle, Bundle, BundlePlan, Encoding, Granularity, QuantParams, WriteOptions,
};

// ---------------------------------------------------------------------------------------------
// Building bundles
// ---------------------------------------------------------------------------------------------

/// 32 samples of the tiny model's 7 inputs, labels in 0..5, with a difficulty.
fn validation_set() -> ValidationSet {
    common::validation_set(32)
}

/// The tiny model's architecture with weights that quantization keeps exactly: every weight of
/// a quantized row is ± the same power of two, so the row's absmean scale is that value, every
/// trit is non-zero and the scale is exact in F16. The FP16 model then is the original model and
/// keeps all its decisions (retention 1).
fn lossless_tiny_model() -> (MemorySource, BundlePlan) {
    let (src, plan) = common::tiny_model(7);
    let mut out = MemorySource::new("lossless.safetensors");
    for t in src.tensors() {
        let mut v = src.load_f32(&t.name).unwrap();
        if plan.quantize.contains(&t.name) {
            let cols = (t.shape[1]) as usize;
            for (r, row) in v.chunks_exact_mut(cols).enumerate() {
                let scale = 2f32.powi(-(r as i32 % 3) - 1);
                row.iter_mut()
                    .for_each(|w| *w = if *w >= 0.0 { scale } else { -scale });
            }
        }
        out.push(t.name, t.shape, v).unwrap();
    }
    (out, plan)
}

/// The lossless tiny model's bundle with the validation set embedded (its stored original
/// predictions are all kept: retention passes), and the original model's distributions beside
/// them (format 5.0, full form: fidelity runs).
fn bundle_with_validation(tmp: &tempfile::TempDir) -> PathBuf {
    lossless_bundle(tmp, "v", None)
}

/// [`bundle_with_validation`] in `tmp/name`, with `original_top_k` as given to the writer
/// (`Some(0)`: the original predictions only, a format 2.0 bundle).
fn lossless_bundle(tmp: &tempfile::TempDir, name: &str, original_top_k: Option<u64>) -> PathBuf {
    let (src, plan) = lossless_tiny_model();
    let dest = tmp.path().join(name);
    let options = WriteOptions {
        validation: Some(validation_set()),
        original_top_k,
        ..Default::default()
    };
    write_bundle(&dest, &src, &plan, &options).unwrap();
    dest
}

/// Writes the tensors of `src` as an F32 safetensors checkpoint at `path` (the "original"
/// model for the `reference` check).
fn write_checkpoint(src: &MemorySource, path: &Path) {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = src
        .tensors()
        .into_iter()
        .map(|t| {
            let bytes = src
                .load_f32(&t.name)
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (t.name, t.shape.iter().map(|&d| d as usize).collect(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A one-layer model (identity, no bias) with the given weight rows, quantized with `params`.
fn one_layer_model(rows: &[Vec<f32>], params: QuantParams) -> (MemorySource, BundlePlan) {
    let (out, inp) = (rows.len() as u64, rows[0].len() as u64);
    let src = MemorySource::new("one-layer.safetensors").with(
        "out.weight",
        vec![out, inp],
        rows.concat(),
    );
    let plan = BundlePlan {
        model: ModelSpec {
            decoder: None,
            input_dim: inp,
            layers: vec![LayerSpec {
                name: "out".into(),
                weight: "out.weight".into(),
                bias: None,
                in_features: inp,
                out_features: out,
                activation: "identity".into(),
                rmsnorm: None,
            }],
        },
        params,
        quantize: BTreeSet::from(["out.weight".to_string()]),
        given: None,
    };
    (src, plan)
}

// ---------------------------------------------------------------------------------------------
// Asserting reports
// ---------------------------------------------------------------------------------------------

const NOT_SELECTED: &str = "not selected";
const NO_REFERENCE: &str = "not run: no --reference given";
const NO_ORIGINAL: &str = "not run: no original predictions: the bundle has no validation set; give --reference ORIGINAL.safetensors (compared on synthetic inputs)";
/// Why fidelity does not run on a bundle that stores the original predictions without their
/// distributions (`original_top_k: Some(0)`: format 2.0).
const NO_DISTRIBUTIONS: &str = "not run: no original distributions: the validation set stores the original model's predictions only (format 2.0; distributions need 5.0, written unless create --original-top-k 0); give --reference ORIGINAL";

/// "not run: P failed": the direct prerequisite P failed.
fn failed(prerequisite: &str) -> String {
    format!("not run: {prerequisite} failed")
}

/// "not run: needs P, which did not run": the prerequisite P was itself not run.
fn needs(prerequisite: &str) -> String {
    format!("not run: needs {prerequisite}, which did not run")
}

/// What a check of a report must show.
#[derive(Debug, Clone)]
enum Expect {
    /// Pass.
    Pass,
    /// Fail, with a detail containing every fragment.
    Fail(Vec<String>),
    /// Skip, with exactly this detail.
    Skip(String),
}

fn fail(parts: &[&str]) -> Expect {
    Expect::Fail(parts.iter().map(|p| p.to_string()).collect())
}

fn skip(detail: impl Into<String>) -> Expect {
    Expect::Skip(detail.into())
}

/// One line per check, for assertion messages.
fn summary(report: &VerifyReport) -> String {
    report
        .checks
        .iter()
        .map(|c| format!("  {:<15} {:?}: {}", c.name, c.status, c.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The result of check `name`.
#[track_caller]
fn check<'r>(report: &'r VerifyReport, name: &str) -> &'r CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in the report:\n{}", summary(report)))
}

/// Asserts the whole report: the checks are the thirteen of `Check::ALL` in order; each check
/// named in `overrides` is as given there, every other one is Pass, except `reference`, which is
/// Skip "not run: no --reference given", and `retention` and `fidelity`, which are Skip for want
/// of original predictions when the bundle has no validation file, unless overridden; `ok` is
/// false exactly when some check is expected to fail.
#[track_caller]
fn assert_checks(report: &VerifyReport, overrides: &[(&str, Expect)]) {
    let all = summary(report);
    let has_validation = check(report, "files").figures["files"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == VALIDATION));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.name()).collect();
    assert_eq!(names, check_names(), "checks out of order:\n{all}");
    for (name, _) in overrides {
        assert!(check_names().contains(name), "test bug: no check {name}");
    }
    for c in &report.checks {
        let expected = overrides
            .iter()
            .find(|(n, _)| c.name == *n)
            .map(|(_, e)| e.clone())
            .unwrap_or(match c.name.name() {
                "reference" => Expect::Skip(NO_REFERENCE.into()),
                "signature" => Expect::Skip(NOT_SIGNED.into()),
                "retention" | "fidelity" if !has_validation => Expect::Skip(NO_ORIGINAL.into()),
                _ => Expect::Pass,
            });
        match expected {
            Expect::Pass => assert_eq!(c.status, Status::Pass, "{}:\n{all}", c.name),
            Expect::Fail(parts) => {
                assert_eq!(c.status, Status::Fail, "{}:\n{all}", c.name);
                for p in parts {
                    assert!(
                        c.detail.contains(&p),
                        "{}: detail lacks {p:?}:\n{all}",
                        c.name
                    );
                }
            }
            Expect::Skip(detail) => {
                assert_eq!(c.status, Status::Skip, "{}:\n{all}", c.name);
                assert_eq!(c.detail, detail, "{}:\n{all}", c.name);
            }
        }
    }
    let any_fail = overrides.iter().any(|(_, e)| matches!(e, Expect::Fail(_)));
    assert_eq!(report.ok, !any_fail, "ok:\n{all}");
}

/// Verifies `dir` with the default options, except the KL gate: the tiny test models are
/// quantized after training, which moves their distributions far more than the gate allows
/// (`--max-kl 0` disables it; tests/suite/fidelity.rs tests the gate).
fn run(dir: &Path) -> VerifyReport {
    verify(dir, &options())
}

/// The default options without the KL gate (see [`run`]).
fn options() -> VerifyOptions {
    VerifyOptions {
        max_kl: 0.0,
        ..Default::default()
    }
}

/// Verifies `dir` with `--only` the named checks.
fn run_only(dir: &Path, names: &[&str]) -> VerifyReport {
    verify(
        dir,
        &VerifyOptions {
            only: checks(names),
            ..options()
        },
    )
}

/// Every check but `selected` reported as not selected.
fn not_selected_except(selected: &[&str]) -> Vec<(&'static str, Expect)> {
    check_names()
        .into_iter()
        .filter(|c| !selected.contains(c))
        .map(|c| (c, skip(NOT_SELECTED)))
        .collect()
}

fn f64_figure(c: &CheckResult, key: &str) -> f64 {
    c.figures[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{}: no number {key} in {}", c.name, c.figures))
}

// ---------------------------------------------------------------------------------------------
// 1. manifest
// ---------------------------------------------------------------------------------------------

#[test]
fn manifest_fails_on_an_unknown_format_and_nothing_else_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["format"] = json!("x"));
    let report = run(&dir);
    assert_checks(
        &report,
        &[
            ("manifest", fail(&[MANIFEST, "(rule 2.3)", "\"x\""])),
            ("files", skip(failed("manifest"))),
            ("checksums", skip(needs("files"))),
            ("structure", skip(needs("files"))),
            ("encoding", skip(needs("structure"))),
            ("scales", skip(needs("encoding"))),
            ("dequantization", skip(needs("encoding"))),
            ("agreement", skip(needs("encoding"))),
            ("retention", skip(needs("structure"))),
            ("fidelity", skip(needs("structure"))),
            ("gradient_check", skip(needs("structure"))),
            ("gradient_flow", skip(needs("structure"))),
        ],
    );
    // Without a manifest there is nothing to measure.
    assert_eq!(
        metric(&report, "phase4_to_5/quantized_model_size_mb"),
        Value::Null
    );
    assert_eq!(metric(&report, "compression_ratio"), Value::Null);
}

// ---------------------------------------------------------------------------------------------
// 2. files
// ---------------------------------------------------------------------------------------------

/// The signature check of an unsigned bundle verified without `--trusted-key`.
const NOT_SIGNED: &str = "not run: no --trusted-key given (the bundle is not signed)";

/// Every check after `files` when `files` failed.
fn after_files_failed() -> Vec<(&'static str, Expect)> {
    vec![
        ("checksums", skip(failed("files"))),
        ("structure", skip(failed("files"))),
        ("encoding", skip(needs("structure"))),
        ("scales", skip(needs("encoding"))),
        ("dequantization", skip(needs("encoding"))),
        ("agreement", skip(needs("encoding"))),
        ("retention", skip(needs("structure"))),
        ("fidelity", skip(needs("structure"))),
        ("gradient_check", skip(needs("structure"))),
        ("gradient_flow", skip(needs("structure"))),
    ]
}

#[test]
fn files_fails_when_fp16_file_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::remove_file(dir.join(FP16)).unwrap();
    let report = run(&dir);
    let mut expected = vec![("files", fail(&[FP16, "(rule 1.2)", "no such file"]))];
    expected.extend(after_files_failed());
    assert_checks(&report, &expected);
    // The manifest still declares the sizes.
    assert!(metric(&report, "phase4_to_5/dequantized_model_size_mb").is_f64());
}

#[test]
fn files_passes_with_an_undeclared_file_but_fails_with_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();

    let report = run(&dir);
    assert_checks(&report, &[]);
    let files = check(&report, "files");
    for part in [
        TERNARY,
        FP16,
        "sizes as declared",
        "1 undeclared file(s) ignored: notes.txt",
    ] {
        assert!(files.detail.contains(part), "{part:?}: {}", files.detail);
    }
    assert_eq!(files.figures["extras"], json!(["notes.txt"]));

    let strict = verify(
        &dir,
        &VerifyOptions {
            strict: true,
            ..Default::default()
        },
    );
    let mut expected = vec![(
        "files",
        fail(&[
            "notes.txt",
            "(rule 1.5)",
            "--strict",
            "1 undeclared: notes.txt",
        ]),
    )];
    expected.extend(after_files_failed());
    assert_checks(&strict, &expected);
}

#[test]
fn undeclared_file_names_are_escaped_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::write(dir.join("evil\u{1b}]0;pwned\u{7}"), b"x").unwrap();
    for strict in [false, true] {
        let report = verify(
            &dir,
            &VerifyOptions {
                strict,
                ..Default::default()
            },
        );
        let files = check(&report, "files");
        assert!(
            !files.detail.contains('\u{1b}') && !files.detail.contains('\u{7}'),
            "raw control characters in {:?}",
            files.detail
        );
        assert!(
            files.detail.contains("evil\\u{1b}]0;pwned\\u{7}"),
            "the name is shown escaped: {:?}",
            files.detail
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. checksums
// ---------------------------------------------------------------------------------------------

#[test]
fn checksums_fails_on_a_corrupted_header_padding_byte_and_only_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // A header padding space belongs to no tensor: turning it into a tab (still JSON
    // whitespace) changes only the whole-file digest (rule 7.1), not a byte any other check
    // reads.
    let file = [TERNARY, FP16, VALIDATION]
        .into_iter()
        .find(|f| St::read(&dir.join(f)).header.ends_with(b" "))
        .expect("a header with padding");
    edit_st(&dir, file, |st| {
        let last = st.header.len() - 1;
        st.header[last] = b'\t';
    });
    let report = run(&dir);
    assert_checks(
        &report,
        &[("checksums", fail(&[file, "(rule 7.1)", "sha256"]))],
    );
    assert_eq!(check(&report, "checksums").figures["per_tensor"], true);
}

#[test]
fn checksums_fails_on_a_corrupted_validation_tensor_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The difficulty column is read by no other check: only its digest (rule 7.2) notices.
    edit_tensor(&dir, VALIDATION, "difficulty", |b| b[1] = 200);
    let report = run(&dir);
    assert_checks(
        &report,
        &[(
            "checksums",
            fail(&[VALIDATION, &t("difficulty"), "(rule 7.2)"]),
        )],
    );
}

#[test]
fn checksums_fails_on_a_corrupted_fp16_tensor_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // No rehash: the per-tensor digest (rule 7.2) names the damaged tensor.
    edit_tensor(&dir, FP16, "fc1.weight", |b| b[2 * 10] ^= 1);
    let report = run(&dir);
    assert_checks(
        &report,
        &[
            (
                "checksums",
                fail(&[FP16, &t("fc1.weight"), "(rule 7.2)", "sha256"]),
            ),
            // The corrupted byte is an FP16 weight, so the exact dequantization check
            // legitimately fails on the same byte (rule 5.2): it does not depend on checksums.
            (
                "dequantization",
                fail(&[
                    FP16,
                    &t("fc1.weight"),
                    "(rule 5.2)",
                    "flat index 10 (row 1, column 3)",
                ]),
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 4. structure
// ---------------------------------------------------------------------------------------------

#[test]
fn structure_fails_on_a_transposed_fp16_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        st.edit_json(|v| v["fc1.weight"]["shape"] = json!([7, 13]))
    });
    rehash(&dir);
    let report = run(&dir);
    assert_checks(
        &report,
        &[
            (
                "structure",
                fail(&[FP16, &t("fc1.weight"), "(rule 5.1)", "[13, 7]", "[7, 13]"]),
            ),
            ("encoding", skip(failed("structure"))),
            ("scales", skip(needs("encoding"))),
            ("dequantization", skip(needs("encoding"))),
            ("agreement", skip(needs("encoding"))),
            ("retention", skip(failed("structure"))),
            ("fidelity", skip(failed("structure"))),
            ("gradient_check", skip(failed("structure"))),
            ("gradient_flow", skip(failed("structure"))),
        ],
    );
    // The headers could not be trusted, so only whole-file digests were computed.
    assert_eq!(check(&report, "checksums").figures["per_tensor"], false);
}

// ---------------------------------------------------------------------------------------------
// 5. encoding
// ---------------------------------------------------------------------------------------------

#[test]
fn encoding_fails_on_trit5_byte_243() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| b[2 * 3] = 243);
    rehash(&dir);
    let report = run(&dir);
    assert_checks(
        &report,
        &[
            (
                "encoding",
                fail(&[
                    TERNARY,
                    &t("fc1.weight"),
                    "(rule 4.3)",
                    "0xf3",
                    "row 3, byte 0",
                ]),
            ),
            ("scales", skip(failed("encoding"))),
            ("dequantization", skip(failed("encoding"))),
            ("agreement", skip(failed("encoding"))),
            // The gradient checks read only the FP16 file: they need the structure, not the
            // trits.
        ],
    );
    assert_eq!(
        metric(&report, "phase4_to_5/dequantization_accuracy_retention"),
        Value::Null
    );
    assert_eq!(
        metric(&report, "phase4_to_5/gradient_flow_test_passed"),
        true
    );
}

// ---------------------------------------------------------------------------------------------
// 6. scales
// ---------------------------------------------------------------------------------------------

#[test]
fn scales_fails_on_a_zero_scale_over_an_all_zero_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    let nonzero = row_trits(&dir, "fc1.weight", r)
        .iter()
        .filter(|&&t| t != 0)
        .count() as u64;
    // Row r of fc1.weight [13, 7] in trit5: two bytes, 0x79 holds five zero trits (digits 1),
    // the last byte holds 7 mod 5 = 2 zero trits: 1 + 3 = 4.
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| {
        b[2 * r] = 0x79;
        b[2 * r + 1] = 0x04;
    });
    edit_tensor(&dir, TERNARY, "fc1.weight.scale", |b| set_f32(b, r, 0.0));
    // 0 * 0.0 dequantizes to +0.0, so the FP16 row stays consistent (rule 5.2 holds).
    edit_tensor(&dir, FP16, "fc1.weight", |b| {
        b[2 * 7 * r..2 * 7 * (r + 1)].fill(0);
    });
    // zeros stays exact (rule 4.6). scale_min cannot follow the data: rule 2.7 requires a
    // manifest scale_min > 0, so it keeps its value (the scales check reports rule 4.5 first).
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.weight");
        e["zeros"] = json!(e["zeros"].as_u64().unwrap() + nonzero);
    });
    rehash(&dir);
    let report = run(&dir);
    assert_checks(
        &report,
        &[(
            "scales",
            fail(&[
                TERNARY,
                &t("fc1.weight"),
                "(rule 4.5)",
                &format!("scale 0 at scale index {r}"),
            ]),
        )],
    );
    assert_eq!(check(&report, "scales").figures["min"], 0.0);
}

#[test]
fn scales_fails_on_a_scale_underflowing_f16_over_nonzero_trits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let r = row_with_nonzero_trit(&dir);
    // 1e-9 is a finite, positive f32 whose F16 rounding is 0: rule 4.5 is broken where it
    // governs non-zero trits. Everything else is made consistent with it: the FP16 row is
    // f16(t * 1e-9) and scale_min is 1e-9 (valid for rule 2.7), so only rule 4.5 is broken.
    edit_tensor(&dir, TERNARY, "fc1.weight.scale", |b| set_f32(b, r, 1e-9));
    let fp16 = {
        let b = Bundle::open(&dir).unwrap();
        b.packed("fc1.weight").unwrap().dequantize_f16().unwrap()
    };
    edit_tensor(&dir, FP16, "fc1.weight", |b| {
        for (i, v) in fp16.iter().enumerate() {
            set_u16(b, i, v.to_bits());
        }
    });
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.weight")["scale_min"] = json!(1e-9f32 as f64)
    });
    rehash(&dir);
    let report = run(&dir);
    assert_checks(
        &report,
        &[(
            "scales",
            fail(&[
                TERNARY,
                &t("fc1.weight"),
                "(rule 4.5)",
                &format!("scale 1e-9 (F16 0) at scale index {r}"),
                &format!("non-zero trit at row {r}"),
            ]),
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// 7. dequantization
// ---------------------------------------------------------------------------------------------

#[test]
fn dequantization_fails_on_one_fp16_ulp_naming_the_flat_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // Flat index 10 of fc1.weight [13, 7] is row 1, column 3.
    let mut before = 0;
    edit_tensor(&dir, FP16, "fc1.weight", |b| {
        before = u16_at(b, 10);
        set_u16(b, 10, before ^ 1);
    });
    rehash(&dir);
    let report = run(&dir);
    assert_checks(
        &report,
        &[(
            "dequantization",
            fail(&[
                FP16,
                &t("fc1.weight"),
                "(rule 5.2)",
                &format!("F16 0x{before:04x}"),
                "flat index 10 (row 1, column 3)",
                &format!("found 0x{:04x}", before ^ 1),
            ]),
        )],
    );
}

// ---------------------------------------------------------------------------------------------
// 8. agreement
// ---------------------------------------------------------------------------------------------

/// One layer 8 -> 2: row 0 all 1.0, row 1 all 1 + 2^-12. Per-channel absmean gives trits all +1
/// and scales 1.0 and 1.000244, which both round to F16 1.0: the FP16 logits tie (argmax 0)
/// while the ternary path prefers row 1 whenever sum(x) > 0. Dequantization stays exact.
fn disagreeing_bundle(
    tmp: &tempfile::TempDir,
    name: &str,
    validation: Option<ValidationSet>,
) -> PathBuf {
    let w1 = 1.0 + 2f32.powi(-12);
    assert_eq!(half::f16::from_f32(w1), half::f16::ONE);
    let (src, plan) = one_layer_model(&[vec![1.0; 8], vec![w1; 8]], QuantParams::default());
    let dest = tmp.path().join(name);
    let options = WriteOptions {
        validation,
        ..Default::default()
    };
    write_bundle(&dest, &src, &plan, &options).unwrap();
    dest
}

#[test]
fn agreement_fails_when_the_two_paths_disagree_on_half_the_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    // Validation inputs with exact sums: 5 positive (ternary argmax 1), 5 negative (argmax 0
    // on both paths): exactly 50% agreement.
    let inputs: Vec<f32> = (0..10)
        .flat_map(|i| {
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            (0..8).map(move |j| sign * (0.25 + 0.5 * ((i + j) % 3) as f32))
        })
        .collect();
    let validation = ValidationSet {
        input_ids: None,
        origin: PathBuf::from("val.safetensors"),
        inputs,
        labels: (0..10).map(|i| i % 2).collect(),
        difficulty: None,
    };
    let dir = disagreeing_bundle(&tmp, "v", Some(validation));
    let report = run(&dir);
    // The original model (like the ternary path) tells the rows apart; the FP16 model, whose
    // scales round to the same F16, does not: it keeps half of the original's decisions.
    assert_checks(
        &report,
        &[
            (
                "agreement",
                fail(&[
                    "ternary and FP16 paths agree on 50.00% of argmaxes (minimum 99.50%) on 10 validation inputs",
                    "max logit difference",
                ]),
            ),
            (
                "retention",
                fail(&["keeps 50.00% of the original model's decisions (minimum 99.50%) on 10 validation inputs, 5 changed"]),
            ),
        ],
    );
    let agreement = check(&report, "agreement");
    assert_eq!(f64_figure(agreement, "agreement"), 0.5);
    assert_eq!(agreement.figures["inputs"], "validation");
    assert!(f64_figure(agreement, "max_logit_difference") > 0.0);
    for path in ["ternary_seconds", "fp16_seconds"] {
        assert!(f64_figure(agreement, path) > 0.0, "{path}");
    }
    assert_eq!(metric(&report, "ternary_fp16_agreement"), 0.5);
    assert_eq!(metric(&report, RETENTION), 0.5);

    // Synthetic standard-normal inputs: sum(x) > 0 about half the time.
    let dir = disagreeing_bundle(&tmp, "s", None);
    let report = run(&dir);
    assert_checks(
        &report,
        &[(
            "agreement",
            fail(&["(minimum 99.50%) on 256 synthetic inputs"]),
        )],
    );
    let a = f64_figure(check(&report, "agreement"), "agreement");
    assert!((0.35..0.65).contains(&a), "agreement {a}");
    // A lower bar lets the same bundle pass.
    let lenient = verify(
        &dir,
        &VerifyOptions {
            min_agreement: 0.3,
            ..Default::default()
        },
    );
    assert_checks(&lenient, &[]);
}

// ---------------------------------------------------------------------------------------------
// 9. retention
// ---------------------------------------------------------------------------------------------

/// The classes stored in `original_predictions`.
fn stored_predictions(dir: &Path) -> Vec<i64> {
    St::read(&dir.join(VALIDATION))
        .tensor_mut("original_predictions")
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Rewrites `original_predictions` (and re-hashes, so only the checks that read them see the
/// change): the original model "decided otherwise". When the bundle also stores the original's
/// distributions (format 5.0, full form), each changed row's log-probabilities of the old and
/// the new class are swapped, so that the distributions say the same and the row's largest value
/// stays at its prediction (rule 6.4); a class out of range (rule 6.3) leaves the row alone.
fn set_stored_predictions(dir: &Path, classes: &[i64]) {
    let old = stored_predictions(dir);
    edit_st(dir, VALIDATION, |st| {
        for (chunk, c) in st
            .tensor_mut("original_predictions")
            .chunks_exact_mut(8)
            .zip(classes)
        {
            chunk.copy_from_slice(&c.to_le_bytes());
        }
        let header = st.parsed();
        assert!(
            header.get("original_top_ids").is_none(),
            "test bug: the top-K form is not handled"
        );
        if header.get("original_log_probs").is_none() {
            return;
        }
        let log_probs = st.tensor_mut("original_log_probs");
        let width = log_probs.len() / 4 / old.len();
        for (row, (&was, &now)) in old.iter().zip(classes).enumerate() {
            if was != now && (0..width as i64).contains(&now) {
                let (a, b) = (row * width + was as usize, row * width + now as usize);
                let (va, vb) = (f32_at(log_probs, a), f32_at(log_probs, b));
                set_f32(log_probs, a, vb);
                set_f32(log_probs, b, va);
            }
        }
    });
    rehash(dir);
}

#[test]
fn retention_is_the_share_of_stored_original_decisions_the_fp16_model_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The lossless model's FP16 predictions are the original's: all 32 kept.
    let report = run(&dir);
    assert_checks(&report, &[]);
    assert_eq!(metric(&report, RETENTION), 1.0);
    // Its distributions are the original's too, up to the F16 rounding of the biases: it passes
    // the default KL gate as well (the other tests disable it, see [`run`]).
    let fidelity = check(&report, "fidelity");
    assert_eq!(fidelity.figures["original"], "stored");
    assert_eq!(fidelity.figures["form"], "full");
    let kl = fidelity.figures["fp16"]["kl"]["mean"].as_f64().unwrap();
    assert!((0.0..1e-4).contains(&kl), "{}", fidelity.detail);
    let gated = verify(&dir, &VerifyOptions::default());
    assert_checks(&gated, &[]);
    assert!(
        check(&gated, "fidelity").detail.contains("(maximum 0.05)"),
        "{}",
        check(&gated, "fidelity").detail
    );
    let original = stored_predictions(&dir);
    let labels: Vec<i64> = validation_set().labels;
    let accuracy = |p: &[i64]| p.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / 32.0;
    for key in ["accuracy_original", "accuracy_fp16", "accuracy_ternary"] {
        assert_eq!(metric(&report, key), accuracy(&original), "{key}");
    }
    assert_eq!(report.null_reasons, Default::default());

    // Say the original decided otherwise on one input: the FP16 model keeps 31 of 32.
    let mut changed = original.clone();
    changed[5] = (changed[5] + 1) % 5;
    set_stored_predictions(&dir, &changed);
    let report = run(&dir);
    assert_checks(
        &report,
        &[(
            "retention",
            fail(&[
                "the FP16 model keeps 96.88% of the original model's decisions (minimum 99.50%) on 32 validation inputs, 1 changed",
                "original predictions stored in validation.safetensors",
            ]),
        )],
    );
    assert_eq!(metric(&report, RETENTION), 31.0 / 32.0);
    assert_eq!(metric(&report, "accuracy_original"), accuracy(&changed));
    assert_eq!(metric(&report, "accuracy_fp16"), accuracy(&original));
    // Per difficulty level (the set has levels 0..3, 8 inputs each): the change is at input 5,
    // level 1.
    let levels = &check(&report, "retention").figures["by_difficulty"];
    let retention: Vec<f64> = (0..4)
        .map(|l| levels[l]["retention"].as_f64().unwrap())
        .collect();
    assert_eq!(retention, [1.0, 7.0 / 8.0, 1.0, 1.0]);
    // The stored distribution of input 5 says the same: the FP16 model's is now far from it.
    let fidelity = check(&report, "fidelity");
    let changed_kl = fidelity.figures["fp16"]["kl"]["max"].as_f64().unwrap();
    assert!(changed_kl > 100.0 * kl, "{}", fidelity.detail);
    // The same bundle passes a bar it meets.
    let lenient = verify(
        &dir,
        &VerifyOptions {
            min_retention: 0.96,
            ..options()
        },
    );
    assert_checks(&lenient, &[]);
}

#[test]
fn ties_go_to_the_first_class_in_the_stored_and_the_fp16_predictions() {
    // Rows 0 and 1 are the same weights: their logits tie on every input, in the original
    // and in the FP16 model, and the first (0) must win both times (as torch.argmax). Row 2
    // is the negation: it wins exactly when the sum of the input is negative. Once with the
    // original's distributions stored (format 5.0), once with its predictions only (2.0).
    let tmp = tempfile::tempdir().unwrap();
    let row = vec![0.5f32; 6];
    let neg: Vec<f32> = row.iter().map(|v| -v).collect();
    let (src, plan) = one_layer_model(&[row.clone(), row, neg], QuantParams::default());
    let inputs: Vec<f32> = (0..8)
        .flat_map(|i| (0..6).map(move |j| if i % 2 == 0 { 0.25 } else { -0.25 } * (j + 1) as f32))
        .collect();
    let checkpoint = tmp.path().join("original.safetensors");
    write_checkpoint(&src, &checkpoint);
    for (original_top_k, version) in [(None, "5.0"), (Some(0), "2.0")] {
        let distributions = original_top_k.is_none();
        let dest = tmp.path().join(format!("ties-{version}"));
        let write_options = WriteOptions {
            validation: Some(ValidationSet {
                input_ids: None,
                origin: PathBuf::from("val.safetensors"),
                inputs: inputs.clone(),
                labels: vec![0, 2, 1, 2, 0, 2, 1, 2],
                difficulty: None,
            }),
            original_top_k,
            ..Default::default()
        };
        write_bundle(&dest, &src, &plan, &write_options).unwrap();
        assert_eq!(stored_predictions(&dest), [0, 2, 0, 2, 0, 2, 0, 2]);
        let report = run(&dest);
        let fidelity = if distributions {
            Expect::Pass
        } else {
            skip(NO_DISTRIBUTIONS)
        };
        assert_checks(&report, &[("fidelity", fidelity)]);
        assert_eq!(
            check(&report, "manifest").detail,
            format!("format ternary-bundle {version}")
        );
        assert_eq!(metric(&report, RETENTION), 1.0);
        // Labels 1 are never predicted: class 1 always ties with class 0 and loses.
        assert_eq!(metric(&report, "accuracy_fp16"), 0.75);
        assert_eq!(metric(&report, "accuracy_original"), 0.75);

        // The reference check forgives a stored class that ties with the recomputed one (another
        // summation order could pick it), and nothing else. (Fidelity then measures the FP16
        // model against the checkpoint's distributions when the bundle stores none.)
        let with_reference = |dir: &Path| {
            verify(
                dir,
                &VerifyOptions {
                    reference: Some(checkpoint.clone()),
                    min_retention: 0.0,
                    ..options()
                },
            )
        };
        set_stored_predictions(&dest, &[1, 2, 0, 2, 1, 2, 0, 2]);
        let report = with_reference(&dest);
        assert_checks(
            &report,
            &[("reference", Expect::Pass), ("fidelity", Expect::Pass)],
        );
        let f = check(&report, "fidelity");
        let from = if distributions { "stored" } else { "reference" };
        assert_eq!(f.figures["original"], from, "{}", f.detail);
        assert_eq!(f.figures["predictions"], "original_predictions");
        let r = check(&report, "reference");
        let near_ties =
            "its predictions equal the stored original_predictions (2 differ only at near-ties)";
        if distributions {
            // The tied classes have the same log-probability: the stored distributions are
            // the recomputed ones.
            assert!(
                r.detail.contains(&format!(
                    "{near_ties} and its distributions the stored ones (KL at most "
                )),
                "{}",
                r.detail
            );
            let kl = r.figures["stored_distributions"]["max_kl"]
                .as_f64()
                .unwrap();
            assert!(kl <= 1e-4, "{}", r.detail);
        } else {
            assert!(r.detail.ends_with(near_ties), "{}", r.detail);
            assert_eq!(r.figures["stored_distributions"], Value::Null);
        }
        assert_eq!(
            r.figures["stored_predictions"],
            json!({"differ": 0, "near_ties": 2})
        );
        // Input 0 stored as class 2, which does not tie: predictions only, the predictions
        // differ; with the distributions (which say the same), they differ first.
        set_stored_predictions(&dest, &[2, 2, 0, 2, 0, 2, 0, 2]);
        let report = with_reference(&dest);
        let differ = if distributions {
            fail(&[
                "the checkpoint's distributions differ from the stored ones: KL(stored || recomputed) reaches",
                "not the model this bundle was made from?",
            ])
        } else {
            fail(&["differ from the stored original_predictions on 1 of 8 inputs (first: input 0, stored class 2, recomputed 0)"])
        };
        assert_checks(
            &report,
            &[("reference", differ), ("fidelity", Expect::Pass)],
        );
        assert_eq!(
            check(&report, "reference").figures["stored_predictions"],
            json!({"differ": 1, "near_ties": 0})
        );
    }
}

#[test]
fn a_single_validation_input_gives_retention_0_or_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, plan) = lossless_tiny_model();
    let dest = tmp.path().join("one");
    let options = WriteOptions {
        validation: Some(ValidationSet {
            input_ids: None,
            origin: PathBuf::from("val.safetensors"),
            inputs: common::values(3, 7),
            labels: vec![4],
            difficulty: Some(vec![1]),
        }),
        ..Default::default()
    };
    write_bundle(&dest, &src, &plan, &options).unwrap();
    let report = run(&dest);
    assert_checks(&report, &[]);
    let kept = check(&report, "retention");
    assert_eq!(kept.figures["samples"], 1);
    assert_eq!(metric(&report, RETENTION), 1.0);
    let stored = stored_predictions(&dest)[0];
    set_stored_predictions(&dest, &[(stored + 1) % 5]);
    let report = run(&dest);
    assert_checks(
        &report,
        &[(
            "retention",
            fail(&["keeps 0.00%", "on 1 validation inputs, 1 changed"]),
        )],
    );
    assert_eq!(metric(&report, RETENTION), 0.0);
}

#[test]
fn corrupted_original_predictions_fail_naming_file_tensor_and_rule() {
    let tmp = tempfile::tempdir().unwrap();
    // Out of range (rule 6.3): a data rule, found when the model checks read the validation
    // set; every check that needs its inputs fails with the same message.
    let dir = bundle_with_validation(&tmp);
    set_stored_predictions(&dir, &[0, 1, 2, 7]);
    let report = run(&dir);
    let bad = fail(&[
        VALIDATION,
        &t("original_predictions"),
        "(rule 6.3)",
        "7 at index 3",
    ]);
    assert_checks(
        &report,
        &[
            ("agreement", bad.clone()),
            ("retention", bad.clone()),
            ("fidelity", bad.clone()),
            ("gradient_check", bad.clone()),
            ("gradient_flow", bad),
        ],
    );
    assert_eq!(metric(&report, RETENTION), Value::Null);
    assert!(report.null_reasons[RETENTION].contains("(rule 6.3)"));

    // Wrong dtype or shape (rule 6.1): the bundle does not open; structure names it.
    for (i, edit) in [json!({"dtype": "I32"}), json!({"shape": [2, 16]})]
        .iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("s{i}"), |_, o| {
            o.validation = Some(validation_set())
        });
        edit_st(&dir, VALIDATION, |st| {
            st.edit_json(|v| {
                for (k, val) in edit.as_object().unwrap() {
                    v["original_predictions"][k] = val.clone();
                }
                if v["original_predictions"]["dtype"] == "I32" {
                    // 32 labels of 4 bytes: keep the byte length consistent (rule 3.5).
                    v["original_predictions"]["shape"] = json!([64]);
                }
            })
        });
        rehash(&dir);
        let report = run(&dir);
        assert_checks(
            &report,
            &[
                (
                    "structure",
                    fail(&[
                        VALIDATION,
                        &t("original_predictions"),
                        "(rule 6.1)",
                        "I64 of shape [32]",
                    ]),
                ),
                ("encoding", skip(failed("structure"))),
                ("scales", skip(needs("encoding"))),
                ("dequantization", skip(needs("encoding"))),
                ("agreement", skip(needs("encoding"))),
                ("retention", skip(failed("structure"))),
                ("fidelity", skip(failed("structure"))),
                ("gradient_check", skip(failed("structure"))),
                ("gradient_flow", skip(failed("structure"))),
            ],
        );
    }
}

#[test]
fn a_bundle_written_by_the_1_0_writer_has_no_retention_and_says_why() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/versions/written-by-1.0");
    let report = run(&dir);
    let why = "not run: no original predictions: the validation set has no original_predictions (a format 1.x bundle); give --reference ORIGINAL.safetensors";
    // Fidelity needs the original model too (its distributions): it says the same.
    assert_checks(
        &report,
        &[("retention", skip(why)), ("fidelity", skip(why))],
    );
    assert_eq!(metric(&report, RETENTION), Value::Null);
    assert_eq!(metric(&report, "accuracy_original"), Value::Null);
    assert_eq!(
        report.null_reasons[RETENTION],
        format!(
            "the retention check did not run: {}",
            why.trim_start_matches("not run: ")
        )
    );
    // The two forms of the bundle are still compared, and the labels still score them.
    assert!(metric(&report, "accuracy_fp16").is_f64());
    assert!(metric(&report, "accuracy_ternary").is_f64());
    assert_eq!(metric(&report, "ternary_fp16_agreement"), 1.0);
}

#[test]
fn without_labels_the_accuracies_are_null_and_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let report = run(&bundle(&tmp));
    assert_checks(&report, &[]);
    for key in [
        RETENTION,
        "accuracy_original",
        "accuracy_fp16",
        "accuracy_ternary",
    ] {
        assert_eq!(metric(&report, key), Value::Null, "{key}");
        assert!(report.null_reasons.contains_key(key), "{key}");
    }
    assert!(report.null_reasons["accuracy_fp16"].contains("no labels: the inputs are synthetic"));
    assert!(report.null_reasons[RETENTION].contains("the bundle has no validation set"));
    // The agreement of the two paths is measured all the same, under its own name.
    assert!(metric(&report, "ternary_fp16_agreement").is_f64());
}

// ---------------------------------------------------------------------------------------------
// 9. gradient_check
// ---------------------------------------------------------------------------------------------

#[test]
fn gradient_check_fails_when_the_analytic_gradient_is_off_by_one_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let report = verify(
        &dir,
        &VerifyOptions {
            grad: GradCheckOptions {
                analytic_gradient_scale: 1.01,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    assert_checks(
        &report,
        &[(
            "gradient_check",
            fail(&["of its allowance", "1e-4 x |gradient|", "worst: "]),
        )],
    );
    let g = check(&report, "gradient_check");
    // |1.01 a - a| / (1.01 |a|) = 0.0099, about 99 times the relative allowance of 1e-4.
    let err = f64_figure(g, "max_relative_error");
    assert!((err - 0.01 / 1.01).abs() < 1e-4, "max relative error {err}");
    assert_eq!(metric(&report, "gradient_check_max_relative_error"), err);
    let ratio = f64_figure(g, "error_ratio");
    assert!(ratio > 50.0, "error ratio {ratio}");
}

#[test]
fn gradient_check_passes_with_default_options_and_reports_its_figures() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [bundle(&tmp), bundle_with_validation(&tmp)] {
        let report = run(&dir);
        assert_checks(&report, &[]);
        let g = check(&report, "gradient_check");
        let err = f64_figure(g, "max_relative_error");
        assert!((0.0..1e-4).contains(&err), "max relative error {err}");
        // A margin of at least 100x.
        let ratio = f64_figure(g, "error_ratio");
        assert!((0.0..0.01).contains(&ratio), "error ratio {ratio}");
        assert!(f64_figure(g, "atol") > 0.0, "{}", g.figures);
        assert!(
            g.figures["coordinates"].as_u64().unwrap() > 0,
            "{}",
            g.figures
        );
        assert!(
            g.figures["directions"].as_u64().unwrap() > 0,
            "{}",
            g.figures
        );
        assert_eq!(g.figures["grad_tol"], 1e-4);
        assert!(g.detail.contains("1e-4 x |gradient|"), "{}", g.detail);
    }
}

/// The batched central differences follow every path a perturbation can take: a coordinate of
/// a weight, a bias or an RMSNorm weight, changed columns reaching a layer with and without an
/// RMSNorm, every activation, random directions. A wrong numeric side would disagree with the
/// backward pass; a wrong backward pass must still be caught.
#[test]
fn gradient_check_agrees_on_every_activation_with_norms_on_every_layer() {
    let tmp = tempfile::tempdir().unwrap();
    for act in ["relu", "gelu", "silu", "tanh", "identity"] {
        let (mut src, mut plan) = common::tiny_model(7);
        let norm: Vec<f32> = common::values(5, 7).iter().map(|v| 1.0 + v / 3.0).collect();
        src.push("fc1.norm.weight".to_string(), vec![7], norm)
            .unwrap();
        plan.model.layers[0].activation = act.into();
        plan.model.layers[0].rmsnorm = Some(RmsNormSpec {
            weight: "fc1.norm.weight".into(),
            eps: 1e-5,
        });
        let dir = tmp.path().join(act);
        write_bundle(&dir, &src, &plan, &WriteOptions::default()).unwrap();
        let run = |scale: f64| {
            verify(
                &dir,
                &VerifyOptions {
                    only: checks(&["gradient_check"]),
                    grad: GradCheckOptions {
                        analytic_gradient_scale: scale,
                        coordinates_per_tensor: 6,
                        directions: 3,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
        };
        let report = run(1.0);
        let g = check(&report, "gradient_check");
        assert_eq!(g.status, Status::Pass, "{act}: {}", g.detail);
        let ratio = f64_figure(g, "error_ratio");
        assert!(ratio < 0.01, "{act}: error ratio {ratio}: {}", g.detail);
        let compared = g.figures["coordinates"].as_u64().unwrap();
        assert!(compared >= 10, "{act}: {}", g.figures);
        assert_eq!(g.figures["directions"], 3, "{act}: {}", g.figures);
        let report = run(1.01);
        assert_eq!(
            check(&report, "gradient_check").status,
            Status::Fail,
            "{act}"
        );
    }
}

/// A model whose loss is large (logits near 1000) while its first layer's gradients are tiny
/// (inputs of 1e-9): the central difference of a first-layer weight is then mostly round-off of
/// the loss (about ulp(L) / 2h = 6e-9 against gradients near 1e-7), the case in which a purely
/// relative tolerance fails a correct model. It must pass, while a backward pass off by 1% must
/// still fail.
#[test]
fn gradient_check_passes_tiny_gradients_in_round_off_noise_and_still_catches_a_wrong_backward() {
    let tmp = tempfile::tempdir().unwrap();
    let (inp, hidden, out) = (4u64, 8u64, 3u64);
    let src = MemorySource::new("noisy.safetensors")
        .with("fc1.weight", vec![hidden, inp], common::values(1, 32))
        .with("fc1.bias", vec![hidden], vec![1.0; hidden as usize])
        .with(
            "fc2.weight",
            vec![out, hidden],
            common::values(2, 24).iter().map(|v| v * 200.0).collect(),
        );
    let mut plan = common::two_layer_plan(inp, hidden, out);
    plan.model.layers[1].rmsnorm = None;
    let n = 8;
    let validation = ValidationSet {
        input_ids: None,
        origin: PathBuf::from("noisy-validation.safetensors"),
        inputs: common::values(3, n * inp as usize)
            .iter()
            .map(|v| v * 1e-9)
            .collect(),
        labels: (0..n as i64).map(|i| i % 3).collect(),
        difficulty: None,
    };
    let dest = tmp.path().join("noisy");
    let options = WriteOptions {
        validation: Some(validation),
        ..Default::default()
    };
    write_bundle(&dest, &src, &plan, &options).unwrap();

    let only = |scale: f64| {
        verify(
            &dest,
            &VerifyOptions {
                only: checks(&["gradient_check"]),
                grad: GradCheckOptions {
                    analytic_gradient_scale: scale,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    };
    let report = only(1.0);
    let g = check(&report, "gradient_check");
    assert_eq!(g.status, Status::Pass, "{}", g.detail);
    // The noise case: relative to the tiny gradients, the round-off is far above 1e-4.
    let err = f64_figure(g, "max_relative_error");
    assert!(err > 1e-4, "not the noise case: max relative error {err}");
    assert!(f64_figure(g, "error_ratio") < 1.0, "{}", g.figures);

    let report = only(1.01);
    let g = check(&report, "gradient_check");
    assert_eq!(g.status, Status::Fail, "{}", g.detail);
}

// ---------------------------------------------------------------------------------------------
// 10. gradient_flow
// ---------------------------------------------------------------------------------------------

#[test]
fn gradient_flow_fails_when_a_zero_last_layer_blocks_the_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    // 7 -> 13 (relu, bias) -> 5 (identity, bias), the last weight all zero: the logits are the
    // last bias whatever the input, so fc1 gets identically zero gradients.
    let src = MemorySource::new("dead.safetensors")
        .with("fc1.weight", vec![13, 7], common::values(7, 91))
        .with("fc1.bias", vec![13], common::values(8, 13))
        .with("fc2.weight", vec![5, 13], vec![0.0; 65])
        .with("fc2.bias", vec![5], vec![0.1, 0.5, -0.3, 0.2, 0.0]);
    let layer = |name: &str, inp: u64, out: u64, act: &str| LayerSpec {
        name: name.into(),
        weight: format!("{name}.weight"),
        bias: Some(format!("{name}.bias")),
        in_features: inp,
        out_features: out,
        activation: act.into(),
        rmsnorm: None,
    };
    let plan = BundlePlan {
        model: ModelSpec {
            decoder: None,
            input_dim: 7,
            layers: vec![layer("fc1", 7, 13, "relu"), layer("fc2", 13, 5, "identity")],
        },
        params: QuantParams::default(),
        quantize: BTreeSet::from(["fc1.weight".to_string(), "fc2.weight".to_string()]),
        given: None,
    };
    let dir = tmp.path().join("dead");
    write_bundle(&dir, &src, &plan, &WriteOptions::default()).unwrap();
    let report = run(&dir);
    assert_checks(
        &report,
        &[(
            "gradient_flow",
            fail(&["gradients do not flow to: fc1.weight (all zero), fc1.bias (all zero)"]),
        )],
    );
    let flow = check(&report, "gradient_flow");
    assert!(!flow.detail.contains("fc2"), "{}", flow.detail);
    assert!(f64_figure(flow, "loss").is_finite());
    assert_eq!(
        metric(&report, "phase4_to_5/gradient_flow_test_passed"),
        false
    );
    // Both paths give the bias as logits: full agreement.
    assert_eq!(f64_figure(check(&report, "agreement"), "agreement"), 1.0);
}

// ---------------------------------------------------------------------------------------------
// 11. reference
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_fails_cleanly_on_a_checkpoint_with_a_tensor_of_the_wrong_length() {
    // A bias one element short would not broadcast in the reference model: it must be a
    // violation naming the checkpoint, the tensor and both lengths, not a panic.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let short = MemorySource::new("short.safetensors")
        .with("fc1.weight", vec![13, 7], common::values(7, 91))
        .with("fc1.bias", vec![12], common::values(8, 12))
        .with("fc2.norm.weight", vec![13], common::values(9, 13))
        .with("fc2.weight", vec![5, 13], common::values(10, 65));
    let path = tmp.path().join("short.safetensors");
    write_checkpoint(&short, &path);
    let report = verify(
        &dir,
        &VerifyOptions {
            reference: Some(path),
            ..Default::default()
        },
    );
    // The retention and fidelity gates would take the original predictions and distributions
    // from it: they fail the same way.
    let short_bias = fail(&["short.safetensors", &t("fc1.bias"), "13 values", "found 12"]);
    assert_checks(
        &report,
        &[
            ("reference", short_bias.clone()),
            ("retention", short_bias.clone()),
            ("fidelity", short_bias),
        ],
    );
}

#[test]
fn reference_supplies_the_original_predictions_when_the_bundle_stores_none() {
    // No validation set: the original is compared with the FP16 model on synthetic inputs, and
    // its predictions feed the retention gate, its distributions the fidelity check.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let (original, _) = common::tiny_model(7);
    let original_path = tmp.path().join("original.safetensors");
    write_checkpoint(&original, &original_path);
    let with = |path: &Path, min_retention: f64| {
        verify(
            &dir,
            &VerifyOptions {
                reference: Some(path.to_path_buf()),
                min_retention,
                ..options()
            },
        )
    };
    let supplied = [
        ("reference", Expect::Pass),
        ("retention", Expect::Pass),
        ("fidelity", Expect::Pass),
    ];
    let report = with(&original_path, 0.0);
    assert_checks(&report, &supplied);
    let (r, kept) = (check(&report, "reference"), check(&report, "retention"));
    let agreement = f64_figure(r, "agreement");
    assert_eq!(f64_figure(kept, "retention"), agreement);
    assert_eq!(kept.figures["original"], "reference");
    assert_eq!(metric(&report, RETENTION), json!(agreement));
    assert!(
        r.detail.starts_with(&format!(
            "original vs FP16 argmax agreement {:.2}% on 256 synthetic inputs",
            agreement * 100.0
        )) && r.detail.ends_with("it supplies the original predictions"),
        "{}",
        r.detail
    );
    // The checkpoint is not the file the bundle was made from (the bundle has no source digest
    // in provenance at all here): said, not failed.
    assert!(r.detail.contains("records no digest of it"), "{}", r.detail);
    let fidelity = check(&report, "fidelity");
    assert_eq!(fidelity.figures["original"], "reference");
    assert_eq!(fidelity.figures["predictions"], "reference");
    assert_eq!(fidelity.figures["inputs"], "synthetic");
    assert!(
        fidelity.detail.ends_with(
            "on 256 synthetic inputs, original distributions recomputed from --reference"
        ),
        "{}",
        fidelity.detail
    );
    let own_kl = fidelity.figures["fp16"]["kl"]["mean"].as_f64().unwrap();
    assert!(own_kl > 0.0, "{}", fidelity.detail);

    // The gate: the original keeps its own bar; another model (seed 8) keeps fewer decisions.
    assert_checks(&with(&original_path, agreement), &supplied);
    let (other, _) = common::tiny_model(8);
    let other_path = tmp.path().join("other.safetensors");
    write_checkpoint(&other, &other_path);
    let report = with(&other_path, agreement);
    assert_checks(
        &report,
        &[
            ("reference", Expect::Pass),
            (
                "retention",
                fail(&[
                    "of the original model's decisions",
                    &format!("(minimum {:.2}%)", agreement * 100.0),
                    "recomputed from --reference",
                ]),
            ),
            ("fidelity", Expect::Pass),
        ],
    );
    assert!(f64_figure(check(&report, "retention"), "retention") < agreement);
    // ... and its distributions lie further from the FP16 model's than the original's do.
    let other_kl = check(&report, "fidelity").figures["fp16"]["kl"]["mean"]
        .as_f64()
        .unwrap();
    assert!(other_kl > own_kl, "{other_kl} vs {own_kl}");
}

#[test]
fn reference_must_reproduce_the_stored_original_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, _) = lossless_tiny_model();
    let original_path = tmp.path().join("original.safetensors");
    write_checkpoint(&original, &original_path);
    let (other, _) = common::tiny_model(8);
    let other_path = tmp.path().join("other.safetensors");
    write_checkpoint(&other, &other_path);
    // With the original's distributions (format 5.0) and with its predictions only (2.0).
    for original_top_k in [None, Some(0)] {
        let distributions = original_top_k.is_none();
        let dir = lossless_bundle(&tmp, &format!("v{original_top_k:?}"), original_top_k);
        let with = |path: &Path| {
            verify(
                &dir,
                &VerifyOptions {
                    reference: Some(path.to_path_buf()),
                    min_retention: 0.0,
                    ..options()
                },
            )
        };
        let report = with(&original_path);
        // Without stored distributions, fidelity takes the checkpoint's.
        assert_checks(
            &report,
            &[("reference", Expect::Pass), ("fidelity", Expect::Pass)],
        );
        let r = check(&report, "reference");
        let same = "its predictions equal the stored original_predictions";
        if distributions {
            assert!(
                r.detail.contains(&format!(
                    "{same} and its distributions the stored ones (KL at most "
                )),
                "{}",
                r.detail
            );
            let kl = r.figures["stored_distributions"]["max_kl"]
                .as_f64()
                .unwrap();
            assert!(kl <= 1e-4, "{}", r.detail);
        } else {
            assert!(r.detail.ends_with(same), "{}", r.detail);
            assert_eq!(r.figures["stored_distributions"], Value::Null);
        }
        // Retention comes from the stored predictions and equals the recomputed agreement.
        let kept = check(&report, "retention");
        assert_eq!(kept.figures["original"], "original_predictions");
        assert_eq!(f64_figure(kept, "retention"), f64_figure(r, "agreement"));
        let from = if distributions { "stored" } else { "reference" };
        assert_eq!(check(&report, "fidelity").figures["original"], from);

        // Another checkpoint does not reproduce them: the reference check says so, by the
        // distributions first when the bundle stores them.
        let report = with(&other_path);
        let differ = if distributions {
            fail(&[
                "the checkpoint's distributions differ from the stored ones: KL(stored || recomputed) reaches",
                "not the model this bundle was made from?",
            ])
        } else {
            fail(&[
                "the checkpoint's predictions differ from the stored original_predictions on",
                "of 32 inputs (first: input",
                "not the model this bundle was made from?",
            ])
        };
        assert_checks(
            &report,
            &[("reference", differ), ("fidelity", Expect::Pass)],
        );
        let r = check(&report, "reference");
        assert!(
            r.figures["stored_predictions"]["differ"].as_u64().unwrap() > 0,
            "{}",
            r.figures
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Valid bundles
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_bundles_of_every_encoding_and_granularity_pass_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, _) = common::tiny_model(7);
    let original_path = tmp.path().join("original.safetensors");
    write_checkpoint(&original, &original_path);
    let key = ternary_bundle::signing::SigningKey::generate_p256();
    for encoding in [Encoding::Trit5, Encoding::Trit2] {
        for granularity in [
            Granularity::Tensor,
            Granularity::Channel,
            Granularity::Group(3),
        ] {
            for with_validation in [false, true] {
                let name = format!("{encoding:?}-{}-{with_validation}", granularity.name());
                let dir = tiny_bundle(&tmp, &name, |p, o| {
                    p.params.encoding = encoding;
                    p.params.granularity = granularity;
                    if with_validation {
                        o.validation = Some(validation_set());
                    }
                });
                // Signed, and verified against the key: the signature check passes too.
                ternary_bundle::signing::sign_bundle(&dir, &key).unwrap();
                // The tiny model's weights are not QAT weights: quantization changes some of
                // its decisions, so the retention gate (tested on its own above) is set to 0,
                // and moves its distributions beyond the KL gate, which is disabled.
                let report = verify(
                    &dir,
                    &VerifyOptions {
                        reference: Some(original_path.clone()),
                        min_retention: 0.0,
                        trusted_keys: vec![key.public()],
                        ..options()
                    },
                );
                assert!(report.ok, "{name}:\n{}", summary(&report));
                assert!(
                    report.checks.iter().all(|c| c.status == Status::Pass),
                    "{name}:\n{}",
                    summary(&report)
                );
                let inputs = if with_validation {
                    "validation"
                } else {
                    "synthetic"
                };
                assert_eq!(
                    check(&report, "agreement").figures["inputs"],
                    inputs,
                    "{name}"
                );
                // Fidelity measures against the stored distributions (format 5.0) when there is
                // a validation set, else against the checkpoint's.
                let (original, version) = if with_validation {
                    ("stored", "5.0")
                } else {
                    ("reference", "1.0")
                };
                assert_eq!(
                    check(&report, "fidelity").figures["original"],
                    original,
                    "{name}"
                );
                assert_eq!(
                    check(&report, "manifest").detail,
                    format!("format ternary-bundle {version}"),
                    "{name}"
                );
                assert!(
                    check(&report, "encoding").detail.contains(encoding.name()),
                    "{name}: {}",
                    check(&report, "encoding").detail
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------------

#[test]
fn only_runs_the_selected_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let report = run_only(&dir, &["checksums"]);
    // Every other check, `reference` included, is reported as not selected.
    assert_checks(&report, &not_selected_except(&["checksums"]));
    assert_eq!(
        report
            .checks
            .iter()
            .filter(|c| c.status == Status::Pass)
            .map(|c| c.name)
            .collect::<Vec<_>>(),
        ["checksums"]
    );
    // Prerequisites ran silently (checksums needs files, which needs the manifest) but are
    // reported as not selected, with no figures of their own.
    for name in ["manifest", "files"] {
        assert_eq!(check(&report, name).figures, json!({ "selected": false }));
    }

    // Selecting a check whose prerequisites are not selected still runs them silently.
    let selected = ["dequantization", "gradient_flow"];
    let report = run_only(&dir, &selected);
    assert_checks(&report, &not_selected_except(&selected));
}

#[test]
fn only_does_not_hide_a_failing_unselected_prerequisite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc1.weight", |b| b[2 * 3] = 243);
    rehash(&dir);
    let report = run_only(&dir, &["dequantization"]);
    // The selected check did not run because the bundle breaks rule 4.3: a CI gate must not
    // report success.
    assert_eq!(check(&report, "dequantization").status, Status::Skip);
    assert!(!report.ok, "{}", summary(&report));
}

#[test]
fn only_reference_without_a_reference_fails_asking_for_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let report = run_only(&dir, &["reference"]);
    let mut overrides = not_selected_except(&["reference"]);
    overrides.push((
        "reference",
        fail(&["needs --reference ORIGINAL.safetensors"]),
    ));
    assert_checks(&report, &overrides);
}

#[test]
fn skip_leaves_out_the_named_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let report = verify(
        &dir,
        &VerifyOptions {
            skip: vec![Check::GradientCheck, Check::GradientFlow],
            ..Default::default()
        },
    );
    assert_checks(
        &report,
        &[
            ("gradient_check", skip(NOT_SELECTED)),
            ("gradient_flow", skip(NOT_SELECTED)),
        ],
    );
    assert_eq!(
        metric(&report, "gradient_check_max_relative_error"),
        Value::Null
    );
    assert_eq!(
        metric(&report, "phase4_to_5/gradient_flow_test_passed"),
        Value::Null
    );

    // Skipping a failing check hides its failure, and only its.
    let broken = tiny_bundle(&tmp, "broken", |_, _| {});
    edit_tensor(&broken, FP16, "fc1.weight", |b| b[2 * 10] ^= 1);
    rehash(&broken);
    let report = verify(
        &broken,
        &VerifyOptions {
            skip: vec![Check::Dequantization],
            ..Default::default()
        },
    );
    assert_checks(&report, &[("dequantization", skip(NOT_SELECTED))]);
}

#[test]
fn unknown_check_names_are_refused() {
    let err = Check::parse_list(&["checksum".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown check \"checksum\""), "{err}");
    assert!(Check::parse_list(&["nonsense".into()]).is_err());
    let all: Vec<String> = check_names().iter().map(|c| c.to_string()).collect();
    assert_eq!(Check::parse_list(&all).unwrap(), Check::ALL.to_vec());
}

#[test]
fn the_checks_are_the_fourteen_in_their_documented_order() {
    assert_eq!(
        check_names(),
        [
            "manifest",
            "files",
            "checksums",
            "structure",
            "encoding",
            "scales",
            "dequantization",
            "signature",
            "agreement",
            "retention",
            "fidelity",
            "gradient_check",
            "gradient_flow",
            "reference",
        ]
    );
    // Like retention, fidelity needs the structure, not the trits: it reads the FP16 model.
    assert_eq!(Check::Fidelity.prerequisites(), [Check::Structure]);
    assert_eq!(
        Check::Fidelity.prerequisites(),
        Check::Retention.prerequisites()
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics and JUnit
// ---------------------------------------------------------------------------------------------

#[test]
fn metrics_carry_the_handoff_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    let report = run(&dir);
    assert_checks(&report, &[]);
    let m = manifest(&dir);
    let size = |role: &str| m["files"][role]["size"].as_u64().unwrap();
    let params: u64 = m["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(params, 91 + 13 + 13 + 65);
    let all = serde_json::to_value(&report.metrics).unwrap();
    let one = |key: &str| -> Value {
        all.get(key)
            .cloned()
            .unwrap_or_else(|| panic!("no metric {key} in {all}"))
    };
    assert_eq!(
        one("phase4_to_5/quantized_model_size_mb").as_f64(),
        Some(size("ternary") as f64 / 1e6)
    );
    assert_eq!(
        one("phase4_to_5/dequantized_model_size_mb").as_f64(),
        Some(size("fp16") as f64 / 1e6)
    );
    let retention = one("phase4_to_5/dequantization_accuracy_retention")
        .as_f64()
        .unwrap();
    assert!((0.995..=1.0).contains(&retention), "{retention}");
    assert_eq!(
        retention,
        f64_figure(check(&report, "agreement"), "agreement")
    );
    assert_eq!(one("phase4_to_5/gradient_flow_test_passed"), true);
    let ratio = one("compression_ratio").as_f64().unwrap();
    assert_eq!(ratio, params as f64 * 4.0 / size("ternary") as f64);
    let err = one("gradient_check_max_relative_error").as_f64().unwrap();
    assert!((0.0..1e-4).contains(&err), "{err}");
    assert_eq!(
        err,
        f64_figure(check(&report, "gradient_check"), "max_relative_error")
    );

    // On a layer large enough for the headers not to dominate, the trits compress F32 weights
    // more than tenfold (1.6 bits per weight plus one F32 scale per row).
    let rows: Vec<Vec<f32>> = (0..64).map(|r| common::values(r, 256)).collect();
    let (src, plan) = one_layer_model(&rows, QuantParams::default());
    let big = tmp.path().join("big");
    write_bundle(&big, &src, &plan, &WriteOptions::default()).unwrap();
    let report = run(&big);
    assert_checks(&report, &[]);
    let ratio = metric(&report, "compression_ratio").as_f64().unwrap();
    assert!(ratio > 10.0 && ratio < 20.0, "compression ratio {ratio}");
    let q = metric(&report, "phase4_to_5/quantized_model_size_mb")
        .as_f64()
        .unwrap();
    let d = metric(&report, "phase4_to_5/dequantized_model_size_mb")
        .as_f64()
        .unwrap();
    assert!(
        q > 0.0 && d > 5.0 * q,
        "quantized {q} MB, dequantized {d} MB"
    );
}

#[test]
fn junit_has_one_testcase_per_check_and_a_failure_for_the_failed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let good = bundle(&tmp);
    let xml = run(&good).to_junit();
    assert_eq!(xml.matches("<testcase ").count(), Check::ALL.len(), "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 0, "{xml}");
    // retention, fidelity, reference, signature
    assert_eq!(xml.matches("<skipped ").count(), 4, "{xml}");
    for name in check_names() {
        assert!(xml.contains(&format!("name=\"{name}\"")), "{name}: {xml}");
    }
    assert!(
        xml.contains("tests=\"14\" failures=\"0\" skipped=\"4\""),
        "{xml}"
    );

    let broken = tiny_bundle(&tmp, "broken", |_, _| {});
    edit_tensor(&broken, FP16, "fc1.weight", |b| b[2 * 10] ^= 1);
    rehash(&broken);
    let report = run(&broken);
    assert!(!report.ok);
    let xml = report.to_junit();
    assert_eq!(xml.matches("<testcase ").count(), Check::ALL.len(), "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(
        xml.contains("tests=\"14\" failures=\"1\" skipped=\"4\""),
        "{xml}"
    );
    let case = xml
        .lines()
        .find(|l| l.contains("name=\"dequantization\""))
        .unwrap();
    assert!(case.contains("<failure message=\""), "{case}");
    assert!(case.contains("(rule 5.2)"), "{case}");
    assert!(case.contains("tensor &quot;fc1.weight&quot;"), "{case}");
}

/// Metric `name` of `report`, as it appears in the JSON report.
fn metric(report: &ternary_bundle::verify::VerifyReport, name: &str) -> serde_json::Value {
    serde_json::to_value(&report.metrics).unwrap()[name].clone()
}
