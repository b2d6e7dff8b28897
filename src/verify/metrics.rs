//! The handoff metrics of a verification, each computed by its definition from what the checks
//! measured, or null with the reason.

use std::collections::BTreeMap;

use crate::format::manifest::{FileRole, Manifest};
use crate::verify::check::Check;
use crate::verify::gradients::Measured;
use crate::verify::integrity::declared_bytes;
use crate::verify::report::{CheckResult, Metrics, Status, RETENTION_METRIC};
use crate::verify::runs::{same_share, ModelRuns};

/// What the metrics are computed from.
pub(crate) struct Inputs<'a> {
    pub manifest: Option<&'a Manifest>,
    pub results: &'a [CheckResult],
    pub runs: Option<&'a ModelRuns<'a>>,
    pub retention: Option<f64>,
    pub gradients: Measured,
    pub integrity_seconds: f64,
}

/// The metrics, and for each null one why it could not be computed.
pub(crate) fn metrics(i: Inputs<'_>) -> (Metrics, BTreeMap<String, String>) {
    let size = |role| i.manifest.and_then(|m| m.files.get(role)).map(|e| e.size);
    let params: u64 = i
        .manifest
        .map_or(0, |m| m.tensors.iter().map(|t| t.elements()).sum());
    let mb = |v: Option<u64>| v.map(|b| b as f64 / 1e6);
    let why_not = |check: Check| why_not(i.results, check);
    let paths = i
        .runs
        .and_then(|r| r.paths.get())
        .and_then(|p| p.as_ref().ok());
    let [original, fp16, ternary] = accuracies(i.runs, &why_not);
    let mut reasons = BTreeMap::new();
    let mut known = |name: &str, value: Result<f64, String>| match value {
        Ok(v) => Some(v),
        Err(why) => {
            reasons.insert(name.to_string(), why);
            None
        }
    };
    let m = Metrics {
        accuracy_fp16: known("accuracy_fp16", fp16),
        accuracy_original: known("accuracy_original", original),
        accuracy_ternary: known("accuracy_ternary", ternary),
        compression_ratio: size(FileRole::Ternary).map(|t| params as f64 * 4.0 / t as f64),
        gradient_check_max_relative_error: i.gradients.max_relative_error,
        integrity_gb_per_s: i.manifest.map_or(0, declared_bytes) as f64
            / i.integrity_seconds.max(1e-9)
            / 1e9,
        integrity_seconds: i.integrity_seconds,
        max_logit_difference: paths.map(|p| p.max_logit_difference),
        retention: i.retention,
        dequantized_model_size_mb: mb(size(FileRole::Fp16)),
        gradient_flow_test_passed: i.gradients.flow_passed,
        quantized_model_size_mb: mb(size(FileRole::Ternary)),
        ternary_fp16_agreement: paths.map(|p| same_share(&p.ternary, &p.fp16)),
    };
    // Every other null figure comes from a check that did not produce it, or from a manifest
    // that could not be read.
    for name in m.null_names() {
        let check = match name.as_str() {
            RETENTION_METRIC => Check::Retention,
            "phase4_to_5/gradient_flow_test_passed" => Check::GradientFlow,
            "gradient_check_max_relative_error" => Check::GradientCheck,
            "ternary_fp16_agreement" | "max_logit_difference" => Check::Agreement,
            _ => Check::Manifest,
        };
        reasons.entry(name).or_insert_with(|| why_not(check));
    }
    (m, reasons)
}

/// Why `check` left its figure undefined.
fn why_not(results: &[CheckResult], check: Check) -> String {
    match results.iter().find(|c| c.name == check) {
        Some(c) if c.status == Status::Skip && c.detail == "not selected" => {
            format!("the {check} check was not selected")
        }
        Some(c) if c.status == Status::Skip => format!(
            "the {check} check did not run: {}",
            c.detail.trim_start_matches("not run: ")
        ),
        Some(c) => format!("the {check} check failed: {}", c.detail),
        None => format!("there is no {check} check"),
    }
}

/// `accuracy_original`, `accuracy_fp16` and `accuracy_ternary`: each model's label accuracy
/// on the validation set, or why it is not known.
fn accuracies(
    runs: Option<&ModelRuns<'_>>,
    why_not: &dyn Fn(Check) -> String,
) -> [Result<f64, String>; 3] {
    let labels = match runs.and_then(|r| r.samples.get()) {
        None => Err("no model check ran".to_string()),
        Some(Err(_)) => Err("the inputs could not be read (see the failed checks)".into()),
        Some(Ok(s)) if !s.has_labels() => {
            Err("no labels: the inputs are synthetic (the bundle has no validation set)".into())
        }
        Some(Ok(s)) => Ok(s.labels()),
    };
    let accuracy = |preds: Option<&[usize]>, why: String| match (&labels, preds) {
        (Err(e), _) => Err(e.clone()),
        (Ok(l), Some(p)) => Ok(same_share(p, l)),
        (Ok(_), None) => Err(why),
    };
    let runs = runs.filter(|r| r.samples.get().is_some());
    let original = runs.and_then(ModelRuns::original_if_known);
    let paths = runs
        .and_then(|r| r.paths.get())
        .and_then(|p| p.as_ref().ok());
    let fp16 = runs
        .and_then(|r| r.fp16.get())
        .and_then(|p| p.as_ref().ok())
        .map(Vec::as_slice)
        .or(paths.map(|p| p.fp16.as_slice()));
    [
        accuracy(original, why_not(Check::Retention)),
        accuracy(
            fp16,
            format!(
                "the FP16 model did not run ({}; {})",
                why_not(Check::Agreement),
                why_not(Check::Retention)
            ),
        ),
        accuracy(
            paths.map(|p| p.ternary.as_slice()),
            why_not(Check::Agreement),
        ),
    ]
}
