//! `bundle verify`: the CI gate. Runs the named checks of a handoff in order (manifest, files,
//! checksums, structure, encoding, scales, dequantization, agreement, retention,
//! gradient_check, gradient_flow, reference), each with a status, a one-line detail and
//! figures, and the handoff metrics the pipeline logs. A check whose prerequisite failed is
//! reported as not run, never as passed; a metric that cannot be computed by its definition is
//! null, with the reason in the report.

pub mod samples;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result, Violation};
use crate::format::checksum::sha256_reader;
use crate::format::layout::VALIDATION_ORIGINAL_PREDICTIONS;
use crate::format::manifest::{FileRole, Manifest};
use crate::format::rules::Rule;
use crate::model::chunks::{chunk_rows, gradient_rows};
use crate::model::gradcheck::{
    gradient_check, gradient_flow, to_f64, GradCheckOptions, Model64, DEFAULT_GRAD_TOL,
};
use crate::model::reference::{argmax_rows, forward_bundle, forward_source, WeightPath};
use crate::read::checks;
use crate::read::{open_data_file_raw, open_manifest, Bundle, OpenOptions};
use crate::source::CheckpointSource;
use crate::verify::samples::Samples;

/// The integrity checks: the first [`INTEGRITY_CHECKS`] of [`CHECKS`], manifest to
/// dequantization. They depend only on the bytes, so a bundle the writer produced always
/// passes them.
pub const INTEGRITY_CHECKS: usize = 7;

/// The checks, in the order they run.
pub const CHECKS: [&str; 12] = [
    "manifest",
    "files",
    "checksums",
    "structure",
    "encoding",
    "scales",
    "dequantization",
    "agreement",
    "retention",
    "gradient_check",
    "gradient_flow",
    "reference",
];

/// Default `--min-agreement`.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.995;
/// Default `--min-retention`: the handoff's threshold.
pub const DEFAULT_MIN_RETENTION: f64 = 0.995;
/// Default `--samples` (synthetic inputs when the bundle has no validation set).
pub const DEFAULT_SAMPLES: usize = 256;
/// Default `--seed`.
pub const DEFAULT_SEED: u64 = 0;
/// Samples in the gradient-check batch.
pub const GRADCHECK_BATCH: usize = 4;
/// Samples in the gradient-flow batch.
pub const FLOW_BATCH: usize = 32;

/// Settings of a verification.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Checks to run (all when empty).
    pub only: Vec<String>,
    /// Checks not to run.
    pub skip: Vec<String>,
    /// Fail the `files` check on undeclared files.
    pub strict: bool,
    /// Minimum argmax agreement of the two paths.
    pub min_agreement: f64,
    /// Minimum retention: the share of inputs on which the FP16 model's prediction is the
    /// original model's.
    pub min_retention: f64,
    /// Synthetic samples when the bundle has no validation set.
    pub samples: usize,
    /// Seed of synthetic inputs, labels, coordinates and directions.
    pub seed: u64,
    /// Gradient-check settings (tolerance, steps).
    pub grad: GradCheckOptions,
    /// The pre-quantization checkpoint: the `reference` check, and the original predictions
    /// of the `retention` check when the bundle stores none.
    pub reference: Option<PathBuf>,
    /// How to open the bundle.
    pub open: OpenOptions,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            only: Vec::new(),
            skip: Vec::new(),
            strict: false,
            min_agreement: DEFAULT_MIN_AGREEMENT,
            min_retention: DEFAULT_MIN_RETENTION,
            samples: DEFAULT_SAMPLES,
            seed: DEFAULT_SEED,
            grad: GradCheckOptions {
                tolerance: DEFAULT_GRAD_TOL,
                ..GradCheckOptions::default()
            },
            reference: None,
            open: OpenOptions::default(),
        }
    }
}

impl VerifyOptions {
    /// Checks that `--only`/`--skip` name real checks and that the numbers are sane.
    pub fn check(&self) -> Result<()> {
        for name in self.only.iter().chain(&self.skip) {
            if !CHECKS.contains(&name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "unknown check {name:?}; the checks are: {}",
                    CHECKS.join(", ")
                )));
            }
        }
        for (flag, v) in [
            ("--min-agreement", self.min_agreement),
            ("--min-retention", self.min_retention),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "{flag} must be in [0, 1], found {v}"
                )));
            }
        }
        if self.samples == 0 {
            return Err(Error::InvalidArgument(
                "--samples must be at least 1".into(),
            ));
        }
        if !(self.grad.tolerance > 0.0 && self.grad.tolerance.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--grad-tol must be finite and > 0, found {}",
                self.grad.tolerance
            )));
        }
        Ok(())
    }

    fn selected(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|o| o == name))
            && !self.skip.iter().any(|s| s == name)
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check ran and passed.
    Pass,
    /// The check ran and failed.
    Fail,
    /// The check did not run (not selected, or a prerequisite failed).
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Check name.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// One line for people.
    pub detail: String,
    /// Numbers behind the detail.
    pub figures: Value,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The whole verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// True when no selected check failed.
    pub ok: bool,
    /// The bundle directory.
    pub bundle: String,
    /// Every check in order (skipped ones included).
    pub checks: Vec<CheckResult>,
    /// Handoff metrics under the names the pipeline logs.
    pub metrics: BTreeMap<String, Value>,
    /// For each metric that is null, why it could not be computed by its definition.
    pub null_reasons: BTreeMap<String, String>,
}

type Outcome = std::result::Result<(String, Value), Fail>;

/// The f64 model, a batch of inputs in f64, and their labels.
type Batch<'a> = (&'a Model64<'a>, Array2<f64>, &'a [usize]);

/// A failed check's detail and figures.
type Fail = (String, Value);

fn fail_with(e: &Error) -> (String, Value) {
    let rule = e.rule().map(|r| r.number());
    (e.to_string(), json!({ "rule": rule }))
}

/// Which check a structural error of `Bundle::open` belongs to.
fn check_of_rule(rule: Option<Rule>) -> &'static str {
    match rule.map(|r| r.number()) {
        Some(n) if n.starts_with("2.") => "manifest",
        Some(n) if n.starts_with("1.") || n == "3.1" => "files",
        _ => "structure",
    }
}

struct Runner<'o> {
    options: &'o VerifyOptions,
    results: Vec<CheckResult>,
    /// Checks that ran and passed, selected or not: what gates the checks that need them.
    passed: Vec<&'static str>,
}

impl Runner<'_> {
    /// Why a check needing `prerequisites` cannot run, if one of them did not pass.
    fn blocked(&self, prerequisites: &[&str]) -> Option<String> {
        let p = prerequisites.iter().find(|p| !self.passed.contains(p))?;
        let failed = self
            .results
            .iter()
            .any(|r| r.name == *p && r.status == Status::Fail);
        Some(if failed {
            format!("not run: {p} failed")
        } else {
            format!("not run: needs {p}, which did not run")
        })
    }

    /// Records a check that did not run, and why.
    fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.results.push(CheckResult {
            name,
            status: Status::Skip,
            detail: detail.into(),
            figures: json!({}),
            seconds: 0.0,
        });
    }

    /// Records a check: runs `f` if selected and every prerequisite passed.
    fn run(&mut self, name: &'static str, prerequisites: &[&str], f: impl FnOnce() -> Outcome) {
        if !self.options.selected(name) {
            self.skip(name, "not selected");
            return;
        }
        if let Some(why) = self.blocked(prerequisites) {
            self.skip(name, why);
            return;
        }
        let t = Instant::now();
        let (status, (detail, figures)) = match f() {
            Ok(x) => (Status::Pass, x),
            Err(x) => (Status::Fail, x),
        };
        if status == Status::Pass {
            self.passed.push(name);
        }
        self.results.push(CheckResult {
            name,
            status,
            detail,
            figures,
            seconds: t.elapsed().as_secs_f64(),
        });
    }

    /// Like `run`, but the result is needed by later checks even when not selected: an
    /// unselected prerequisite still runs, silently. A pass is reported as not selected (and
    /// still gates the dependents); a failure stays a failure, because the selected checks
    /// could not run on this bundle.
    fn run_required(
        &mut self,
        name: &'static str,
        prerequisites: &[&str],
        f: impl FnOnce() -> Outcome,
    ) {
        if self.options.selected(name) {
            self.run(name, prerequisites, f);
            return;
        }
        let (status, detail) = match self.blocked(prerequisites) {
            Some(why) => (Status::Skip, why),
            None => match f() {
                Ok(_) => {
                    self.passed.push(name);
                    (Status::Skip, "not selected".into())
                }
                Err((d, _)) => (
                    Status::Fail,
                    format!(
                        "not selected, but failed as a prerequisite of the selected checks: {d}"
                    ),
                ),
            },
        };
        self.results.push(CheckResult {
            name,
            status,
            detail,
            figures: json!({ "selected": false }),
            seconds: 0.0,
        });
    }
}

/// Verifies the bundle in `dir`.
pub fn verify(dir: &Path, options: &VerifyOptions) -> VerifyReport {
    let mut r = Runner {
        options,
        results: Vec::new(),
        passed: Vec::new(),
    };
    let mut metrics: BTreeMap<String, Value> = BTreeMap::new();
    let integrity_start = Instant::now();

    // Open the whole bundle first (headers only): when it opens, every check reads this one
    // manifest, even if the bundle is replaced meanwhile. When it does not, the manifest alone is
    // read, to tell a manifest failure from a files or structure failure.
    let bundle = Bundle::open_with(dir, &options.open);
    let loaded;
    let manifest = match &bundle {
        Ok(b) => Ok((b.manifest(), b.facts())),
        Err(_) => {
            loaded = open_manifest(dir);
            loaded.as_ref().map(|(m, facts)| (m, facts))
        }
    };
    let manifest_ok = manifest.ok().map(|(m, _)| m);
    // Bytes of all declared files.
    let declared_bytes = manifest_ok.map(|m| {
        FileRole::ALL
            .iter()
            .filter_map(|&f| m.files.get(f))
            .map(|e| e.size)
            .sum::<u64>()
    });

    // 1. manifest (rules 2.x, and 1.1-1.3 for manifest.json).
    r.run_required("manifest", &[], || match manifest {
        Ok((m, facts)) => Ok((
            format!("format {} {}{}", m.format, m.format_version, if facts.version.is_newer_minor() { " (newer minor: unknown fields ignored)" } else { "" }),
            json!({ "format_version": m.format_version, "tensors": m.tensors.len(), "layers": m.model.layers.len() }),
        )),
        Err(e) => Err(fail_with(e)),
    });

    // The bundle's open error, if any, belongs to files or structure.
    let open_error_check = bundle.as_ref().err().map(|e| check_of_rule(e.rule()));

    // 2. files (rules 1.x, 3.1; undeclared files fatal with --strict).
    r.run_required("files", &["manifest"], || {
        match (&bundle, open_error_check) {
            (Err(e), Some("files")) => Err(fail_with(e)),
            _ => {
                let m = manifest_ok.expect("manifest passed");
                let extras = bundle
                    .as_ref()
                    .map(|b| b.extras().to_vec())
                    .unwrap_or_default();
                let files: Vec<&str> = FileRole::ALL
                    .iter()
                    .filter(|&&f| m.files.get(f).is_some())
                    .map(|f| f.file_name())
                    .collect();
                let bytes = declared_bytes.expect("manifest passed");
                let figures = json!({ "files": files, "bytes": bytes, "extras": extras });
                // File names come from the bundle: escaped before they reach a terminal.
                let listed = extras
                    .iter()
                    .map(|n| crate::error::printable(n))
                    .collect::<Vec<_>>()
                    .join(", ");
                if !extras.is_empty() && options.strict {
                    let e: Error = Violation::new(
                        dir,
                        Rule::ExtraFiles,
                        "no undeclared files (--strict)",
                        format!("{} undeclared: {listed}", extras.len()),
                    )
                    .into();
                    return Err((e.to_string(), figures));
                }
                let note = if extras.is_empty() {
                    String::new()
                } else {
                    format!("; {} undeclared file(s) ignored: {listed}", extras.len())
                };
                Ok((
                    format!(
                        "{} present, sizes as declared ({} bytes){note}",
                        files.join(", "),
                        bytes
                    ),
                    figures,
                ))
            }
        }
    });

    // 3. checksums (rules 7.1, 7.2). With a structurally broken file only whole-file digests
    // can be computed; they still name the damaged file.
    r.run("checksums", &["files"], || {
        let m = manifest_ok.expect("manifest passed");
        let bytes = declared_bytes.expect("manifest passed");
        let t = Instant::now();
        let outcome = match &bundle {
            Ok(b) => checks::check_digests(b),
            Err(_) => whole_file_digests(dir, m),
        };
        let secs = t.elapsed().as_secs_f64();
        let figures = json!({ "bytes": bytes, "seconds": secs, "gb_per_s": bytes as f64 / secs.max(1e-9) / 1e9, "per_tensor": bundle.is_ok() });
        match outcome {
            Ok(()) => Ok((format!("SHA-256 of {} files and every tensor match ({:.2} GB/s)", if bundle.is_ok() { "all" } else { "the" }, bytes as f64 / secs.max(1e-9) / 1e9), figures)),
            Err(e) => Err((e.to_string(), figures)),
        }
    });

    // 4. structure (rules 3.2-3.7, 4.1, 4.2, 5.1, 6.1, and the layer chain of 2.9).
    r.run_required("structure", &["files"], || match &bundle {
        Ok(b) => {
            let m = b.manifest();
            let widths: Vec<String> = std::iter::once(m.model.input_dim)
                .chain(m.model.layers.iter().map(|l| l.out_features))
                .map(|w| w.to_string())
                .collect();
            Ok((
                format!(
                    "{} tensors in headers as declared; layers chain {}",
                    m.tensors.len(),
                    widths.join(" -> ")
                ),
                json!({ "tensors": m.tensors.len(), "layers": m.model.layers.len() }),
            ))
        }
        Err(e) => Err(fail_with(e)),
    });
    let b = bundle.as_ref().ok();

    // 5-7. data rules.
    r.run_required("encoding", &["structure"], || {
        let b = b.expect("structure passed");
        let packed: u64 = b
            .manifest()
            .tensors
            .iter()
            .filter(|t| t.quantized)
            .filter_map(|t| b.packed(&t.name))
            .map(|p| p.packed.len() as u64)
            .sum();
        let zeros: u64 = b.manifest().tensors.iter().filter_map(|t| t.zeros).sum();
        let figures = json!({ "packed_bytes": packed, "zero_trits": zeros });
        match checks::check_encoding(b) {
            Ok(()) => Ok((
                format!(
                    "{packed} packed bytes valid and canonical ({}); zero counts exact",
                    b.params().encoding
                ),
                figures,
            )),
            Err(e) => Err((e.to_string(), figures)),
        }
    });
    r.run("scales", &["encoding"], || {
        let b = b.expect("structure passed");
        let (mut n, mut lo, mut hi) = (0usize, f32::INFINITY, f32::NEG_INFINITY);
        for t in b.manifest().tensors.iter().filter(|t| t.quantized) {
            let s = b.packed(&t.name).expect("quantized").scales();
            n += s.len();
            lo = s.iter().copied().fold(lo, f32::min);
            hi = s.iter().copied().fold(hi, f32::max);
        }
        let figures = json!({ "scales": n, "min": lo, "max": hi });
        match checks::check_scales(b) {
            Ok(()) => Ok((
                format!("{n} scales finite, positive, F16-representable ({lo:.3e} .. {hi:.3e})"),
                figures,
            )),
            Err(e) => Err((e.to_string(), figures)),
        }
    });
    r.run("dequantization", &["encoding"], || {
        let b = b.expect("structure passed");
        let values: u64 = b.manifest().tensors.iter().map(|t| t.elements()).sum();
        let figures = json!({ "values": values });
        match checks::check_passthrough(b).and_then(|()| checks::check_dequantization(b)) {
            Ok(()) => Ok((
                format!("all {values} FP16 values equal f16(t * scale) or f16(f32) bit for bit"),
                figures,
            )),
            Err(e) => Err((e.to_string(), figures)),
        }
    });
    let integrity_seconds = integrity_start.elapsed().as_secs_f64();

    // The model checks share their inputs and each model's predictions on them, computed once
    // by the first check that needs them (none of the selected checks may).
    let runs = b.map(|b| ModelRuns::new(b, options));
    let runs = runs.as_ref();
    let inputs = || runs.expect("structure passed").samples();

    // 8. agreement: the two forms of the bundle compute the same model.
    r.run("agreement", &["encoding"], || {
        let samples = inputs()?;
        let paths = runs.expect("structure passed").both_paths()?;
        let (n, source) = (samples.len(), samples.source());
        let agree = same_share(&paths.ternary, &paths.fp16);
        let diff = paths.max_logit_difference;
        let figures = json!({ "samples": n, "inputs": source, "seed": options.seed, "agreement": agree, "min_agreement": options.min_agreement, "max_logit_difference": diff });
        let detail = format!(
            "ternary and FP16 paths agree on {:.2}% of argmaxes (minimum {:.2}%) on {n} {source} inputs; max logit difference {diff:.3e}",
            agree * 100.0,
            options.min_agreement * 100.0,
        );
        if agree >= options.min_agreement {
            Ok((detail, figures))
        } else {
            Err((detail, figures))
        }
    });

    // 9. retention: the FP16 model keeps the original model's decisions (the handoff's
    // criterion), against the predictions stored with the validation set or recomputed from
    // --reference.
    let mut retention_value = None;
    match runs.map(ModelRuns::original_source) {
        Some(None) if options.selected("retention") && r.blocked(&["structure"]).is_none() => {
            r.skip("retention", format!("not run: {}", no_original_predictions(b)));
        }
        _ => r.run("retention", &["structure"], || {
            let runs = runs.expect("structure passed");
            let samples = inputs()?;
            let fp16 = runs.fp16()?;
            let (original, from) = runs.original()?;
            let (n, source) = (samples.len(), samples.source());
            let retention = same_share(original, fp16);
            retention_value = Some(retention);
            let changed = n - original.iter().zip(fp16).filter(|(a, b)| a == b).count();
            let figures = json!({
                "samples": n, "inputs": source, "original": from.name(), "retention": retention,
                "min_retention": options.min_retention, "changed": changed,
                "by_difficulty": by_difficulty(samples, original, fp16),
            });
            let detail = format!(
                "the FP16 model keeps {:.2}% of the original model's decisions (minimum {:.2}%) on {n} {source} inputs, {changed} changed; original predictions {}",
                retention * 100.0,
                options.min_retention * 100.0,
                from.describe()
            );
            if retention >= options.min_retention {
                Ok((detail, figures))
            } else {
                Err((detail, figures))
            }
        }),
    }

    // 10. gradient_check and 11. gradient_flow, on the FP16 model in f64.
    let mut grad_max_err = None;
    let mut flow_passed = None;
    let model = b.map(Model64::new);
    // The f64 model and the first `limit` inputs (as f64) and labels, for the gradient checks;
    // fewer when the model is so wide that `limit` samples would not fit the memory bound.
    let batch = |limit: usize| -> std::result::Result<Batch<'_>, (String, Value)> {
        let model = model
            .as_ref()
            .expect("bundle open")
            .as_ref()
            .map_err(fail_with)?;
        let samples = inputs()?;
        let n = samples.len().min(gradient_rows(
            &b.expect("bundle open").manifest().model,
            limit,
        ));
        Ok((
            model,
            to_f64(samples.rows(0..n).view()),
            &samples.labels()[..n],
        ))
    };
    r.run("gradient_check", &["structure"], || {
        let (model, xb, labels) = batch(GRADCHECK_BATCH)?;
        let grad = GradCheckOptions { seed: options.seed, ..options.grad.clone() };
        let rep = gradient_check(model, xb.view(), labels, &grad);
        grad_max_err = Some(rep.max_relative_error);
        let figures = json!({
            "batch": rep.batch, "coordinates": rep.coordinates, "excluded_relu_kinks": rep.excluded_kinks,
            "directions": rep.directions, "excluded_directions": rep.excluded_directions,
            "max_relative_error": rep.max_relative_error, "grad_tol": grad.tolerance, "step": grad.step, "worst": rep.worst,
        });
        let detail = format!(
            "max relative error {:.2e} (tolerance {:.0e}) over {} coordinates and {} directions; {} coordinates excluded at ReLU kinks; worst: {}",
            rep.max_relative_error, grad.tolerance, rep.coordinates, rep.directions, rep.excluded_kinks, rep.worst
        );
        if rep.passed(grad.tolerance) {
            Ok((detail, figures))
        } else {
            Err((detail, figures))
        }
    });
    r.run("gradient_flow", &["structure"], || {
        let (model, xb, labels) = batch(FLOW_BATCH)?;
        let n = xb.nrows();
        let (loss, stats) = gradient_flow(model, xb.view(), labels);
        let bad: Vec<String> = stats
            .iter()
            .filter(|s| s.non_finite > 0 || s.non_zero == 0)
            .map(|s| format!("{} ({})", crate::error::printable(&s.name), if s.non_finite > 0 { format!("{} non-finite", s.non_finite) } else { "all zero".into() }))
            .collect();
        flow_passed = Some(bad.is_empty() && loss.is_finite());
        let tensors: Vec<Value> = stats
            .iter()
            .map(|s| json!({ "name": s.name, "elements": s.elements, "norm": s.norm, "variance": s.variance, "mean": s.mean, "non_finite": s.non_finite, "non_zero": s.non_zero }))
            .collect();
        let total_var: f64 = stats.iter().map(|s| s.variance).sum();
        let figures = json!({ "batch": n, "loss": loss, "tensors": tensors, "gradient_variance_sum": total_var });
        if bad.is_empty() && loss.is_finite() {
            let norms: Vec<String> = stats.iter().map(|s| format!("{} {:.2e}", crate::error::printable(&s.name), s.norm)).collect();
            Ok((format!("all {} parameter tensors get finite, non-zero gradients (loss {loss:.4} on {n} samples); norms: {}", stats.len(), norms.join(", ")), figures))
        } else if !loss.is_finite() {
            Err((format!("loss is {loss} on {n} samples"), figures))
        } else {
            Err((format!("gradients do not flow to: {}", bad.join(", ")), figures))
        }
    });

    // 12. reference (optional): the original checkpoint run again, against the FP16 model and
    // against the predictions the bundle stores.
    if !options.selected("reference") {
        r.skip("reference", "not selected");
    } else if options.reference.is_some() || !options.only.is_empty() {
        r.run("reference", &["structure"], || {
            if options.reference.is_none() {
                return Err(("needs --reference ORIGINAL.safetensors".into(), json!({})));
            }
            let runs = runs.expect("structure passed");
            let samples = inputs()?;
            let recomputed = runs.reference()?;
            let fp16 = runs.fp16()?;
            let (n, source) = (samples.len(), samples.source());
            let agree = same_share(&recomputed.predictions, fp16);
            let declared = &runs.bundle.manifest().provenance.source_sha256;
            let same_file = declared.as_ref().map(|d| *d == recomputed.sha256);
            let provenance = match same_file {
                Some(true) => "its sha256 is the bundle's provenance.source_sha256",
                Some(false) => "its sha256 differs from the bundle's provenance.source_sha256",
                None => "the bundle records no source digest to compare",
            };
            let stored = samples.original_predictions();
            let compare = stored.map(|s| recomputed.compare(s));
            let figures = json!({
                "samples": n, "inputs": source, "agreement": agree, "sha256": recomputed.sha256,
                "matches_provenance": same_file,
                "stored_predictions": compare.as_ref().map(|c| json!({ "differ": c.differ, "near_ties": c.near_ties })),
            });
            let head = format!(
                "original vs FP16 argmax agreement {:.2}% on {n} {source} inputs; {provenance}",
                agree * 100.0
            );
            match compare {
                Some(c) if c.differ > 0 => Err((
                    format!(
                        "the checkpoint's predictions differ from the stored original_predictions on {} of {n} inputs (first: input {}, stored class {}, recomputed {}): not the model this bundle was made from? {head}",
                        c.differ, c.first.0, c.first.1, c.first.2
                    ),
                    figures,
                )),
                Some(c) => Ok((
                    format!(
                        "{head}; its predictions equal the stored original_predictions{}",
                        if c.near_ties > 0 { format!(" ({} differ only at near-ties)", c.near_ties) } else { String::new() }
                    ),
                    figures,
                )),
                None => Ok((format!("{head}; it supplies the original predictions"), figures)),
            }
        });
    } else {
        r.skip("reference", "not run: no --reference given");
    }

    // Metrics under the names the pipeline logs; a null one says why in `null_reasons`.
    let mut null_reasons = BTreeMap::new();
    let size = |role| manifest_ok.and_then(|m| m.files.get(role)).map(|e| e.size);
    let params: u64 = manifest_ok.map_or(0, |m| m.tensors.iter().map(|t| t.elements()).sum());
    let mb = |v: Option<u64>| v.map_or(Value::Null, |b| json!(b as f64 / 1e6));
    metrics.insert(
        "phase4_to_5/quantized_model_size_mb".into(),
        mb(size(FileRole::Ternary)),
    );
    metrics.insert(
        "phase4_to_5/dequantized_model_size_mb".into(),
        mb(size(FileRole::Fp16)),
    );
    // Why a check left its figure undefined.
    let why_not = |name: &str| -> String {
        match r.results.iter().find(|c| c.name == name) {
            Some(c) if c.status == Status::Skip && c.detail == "not selected" => {
                format!("the {name} check was not selected")
            }
            Some(c) if c.status == Status::Skip => format!(
                "the {name} check did not run: {}",
                c.detail.trim_start_matches("not run: ")
            ),
            Some(c) => format!("the {name} check failed: {}", c.detail),
            None => format!("there is no {name} check"),
        }
    };
    metrics.insert(RETENTION_METRIC.into(), json!(retention_value));
    if retention_value.is_none() {
        null_reasons.insert(RETENTION_METRIC.to_string(), why_not("retention"));
    }
    for (name, value) in accuracies(runs, &why_not) {
        match value {
            Ok(a) => metrics.insert(name.into(), json!(a)),
            Err(why) => {
                null_reasons.insert(name.to_string(), why);
                metrics.insert(name.into(), Value::Null)
            }
        };
    }
    metrics.insert(
        "phase4_to_5/gradient_flow_test_passed".into(),
        json!(flow_passed),
    );
    metrics.insert(
        "compression_ratio".into(),
        size(FileRole::Ternary).map_or(Value::Null, |t| json!(params as f64 * 4.0 / t as f64)),
    );
    metrics.insert(
        "gradient_check_max_relative_error".into(),
        json!(grad_max_err),
    );
    let paths = runs
        .and_then(|r| r.paths.get())
        .and_then(|p| p.as_ref().ok());
    metrics.insert(
        "ternary_fp16_agreement".into(),
        json!(paths.map(|p| same_share(&p.ternary, &p.fp16))),
    );
    metrics.insert(
        "max_logit_difference".into(),
        json!(paths.map(|p| p.max_logit_difference)),
    );
    let integrity_bytes = declared_bytes.unwrap_or(0);
    metrics.insert("integrity_seconds".into(), json!(integrity_seconds));
    metrics.insert(
        "integrity_gb_per_s".into(),
        json!(integrity_bytes as f64 / integrity_seconds.max(1e-9) / 1e9),
    );
    // Every other null figure comes from a check that did not produce it, or from a manifest
    // that could not be read.
    for (metric, check) in [
        ("phase4_to_5/gradient_flow_test_passed", "gradient_flow"),
        ("gradient_check_max_relative_error", "gradient_check"),
        ("ternary_fp16_agreement", "agreement"),
        ("max_logit_difference", "agreement"),
    ] {
        if metrics[metric].is_null() {
            null_reasons.insert(metric.to_string(), why_not(check));
        }
    }
    for (metric, value) in &metrics {
        if value.is_null() && !null_reasons.contains_key(metric) {
            null_reasons.insert(metric.clone(), why_not("manifest"));
        }
    }

    let ok = r.results.iter().all(|c| c.status != Status::Fail);
    VerifyReport {
        ok,
        bundle: dir.display().to_string(),
        checks: r.results,
        metrics,
        null_reasons,
    }
}

/// The handoff's main criterion: the share of inputs on which the FP16 model's prediction is
/// the original model's.
pub const RETENTION_METRIC: &str = "phase4_to_5/dequantization_accuracy_retention";

/// Share of positions where `a` and `b` hold the same class (0 for none).
fn same_share(a: &[usize], b: &[usize]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// Why a bundle offers no original predictions to compare with.
fn no_original_predictions(bundle: Option<&Bundle>) -> &'static str {
    match bundle.and_then(|b| b.file(FileRole::Validation)) {
        Some(_) => "no original predictions: the validation set has no original_predictions (a format 1.x bundle); give --reference ORIGINAL.safetensors",
        None => "no original predictions: the bundle has no validation set; give --reference ORIGINAL.safetensors (compared on synthetic inputs)",
    }
}

/// `accuracy_original`, `accuracy_fp16` and `accuracy_ternary`: each model's label accuracy
/// on the validation set, or why it is not known.
fn accuracies(
    runs: Option<&ModelRuns<'_>>,
    why_not: &dyn Fn(&str) -> String,
) -> [(&'static str, std::result::Result<f64, String>); 3] {
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
        (
            "accuracy_original",
            accuracy(original, why_not("retention")),
        ),
        (
            "accuracy_fp16",
            accuracy(
                fp16,
                format!(
                    "the FP16 model did not run ({}; {})",
                    why_not("agreement"),
                    why_not("retention")
                ),
            ),
        ),
        (
            "accuracy_ternary",
            accuracy(paths.map(|p| p.ternary.as_slice()), why_not("agreement")),
        ),
    ]
}

/// Per difficulty level (when the validation set has one): samples, retention, and the label
/// accuracy of the original and FP16 models.
fn by_difficulty(samples: &Samples<'_>, original: &[usize], fp16: &[usize]) -> Value {
    let Some(levels) = samples.difficulty() else {
        return Value::Null;
    };
    let labels = samples.labels();
    let mut rows = Vec::new();
    let present: std::collections::BTreeSet<u8> = levels.iter().copied().collect();
    for level in present {
        let idx: Vec<usize> = (0..levels.len()).filter(|&i| levels[i] == level).collect();
        let share = |f: &dyn Fn(usize) -> bool| {
            idx.iter().filter(|&&i| f(i)).count() as f64 / idx.len() as f64
        };
        rows.push(json!({
            "difficulty": level, "samples": idx.len(),
            "retention": share(&|i| original[i] == fp16[i]),
            "accuracy_original": share(&|i| original[i] == labels[i]),
            "accuracy_fp16": share(&|i| fp16[i] == labels[i]),
        }));
    }
    Value::Array(rows)
}

/// Where the original model's predictions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OriginalSource {
    /// `original_predictions` in the validation file (rule 6.3).
    Stored,
    /// Recomputed from `--reference`.
    Reference,
}

impl OriginalSource {
    fn name(self) -> &'static str {
        match self {
            OriginalSource::Stored => "original_predictions",
            OriginalSource::Reference => "reference",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            OriginalSource::Stored => "stored in validation.safetensors",
            OriginalSource::Reference => "recomputed from --reference",
        }
    }
}

/// The predictions of the bundle's two paths on the inputs.
struct TwoPaths {
    ternary: Vec<usize>,
    fp16: Vec<usize>,
    max_logit_difference: f64,
}

/// The original checkpoint's predictions, recomputed for `--reference`.
struct Recomputed {
    predictions: Vec<usize>,
    /// Per input, whether the stored prediction (if any) is within rounding of the recomputed
    /// maximum logit: a near-tie, where summation order may pick either class.
    near_tie: Vec<bool>,
    /// SHA-256 of the checkpoint file.
    sha256: String,
}

/// How recomputed predictions compare with stored ones.
struct Comparison {
    /// Inputs whose classes differ beyond a near-tie.
    differ: usize,
    /// Inputs whose classes differ at a near-tie only.
    near_ties: usize,
    /// The first input that differs: (index, stored, recomputed).
    first: (usize, usize, usize),
}

impl Recomputed {
    fn compare(&self, stored: &[usize]) -> Comparison {
        let mut c = Comparison {
            differ: 0,
            near_ties: 0,
            first: (0, 0, 0),
        };
        for (i, (&s, &p)) in stored.iter().zip(&self.predictions).enumerate() {
            if s == p {
                continue;
            }
            if self.near_tie[i] {
                c.near_ties += 1;
            } else {
                if c.differ == 0 {
                    c.first = (i, s, p);
                }
                c.differ += 1;
            }
        }
        c
    }
}

/// Relative size, against the largest |logit| of the row, of a logit difference that summation
/// order can produce in f32 (a 4096-term dot product rounds at about 1e-6 of its terms).
const NEAR_TIE: f32 = 1e-4;

/// What the model checks share, each computed once by the first check that needs it: the inputs,
/// and the predictions of the bundle's two paths and of the original model on them.
struct ModelRuns<'b> {
    bundle: &'b Bundle,
    options: &'b VerifyOptions,
    samples: OnceCell<Result<Samples<'b>>>,
    paths: OnceCell<Result<TwoPaths>>,
    fp16: OnceCell<Result<Vec<usize>>>,
    reference: OnceCell<Result<Recomputed>>,
}

impl<'b> ModelRuns<'b> {
    fn new(bundle: &'b Bundle, options: &'b VerifyOptions) -> Self {
        ModelRuns {
            bundle,
            options,
            samples: OnceCell::new(),
            paths: OnceCell::new(),
            fp16: OnceCell::new(),
            reference: OnceCell::new(),
        }
    }

    fn samples(&self) -> std::result::Result<&Samples<'b>, Fail> {
        self.samples
            .get_or_init(|| {
                Samples::of_bundle(self.bundle, self.options.samples, self.options.seed)
            })
            .as_ref()
            .map_err(fail_with)
    }

    /// Where the original predictions come from: stored, else `--reference`, else nowhere.
    fn original_source(&self) -> Option<OriginalSource> {
        let stored = self
            .bundle
            .file(FileRole::Validation)
            .is_some_and(|f| f.header().get(VALIDATION_ORIGINAL_PREDICTIONS).is_some());
        if stored {
            Some(OriginalSource::Stored)
        } else {
            self.options
                .reference
                .as_ref()
                .map(|_| OriginalSource::Reference)
        }
    }

    /// The original model's predictions on the inputs, and where they come from.
    fn original(&self) -> std::result::Result<(&[usize], OriginalSource), Fail> {
        match self.original_source() {
            Some(OriginalSource::Stored) => Ok((
                self.samples()?.original_predictions().expect("stored"),
                OriginalSource::Stored,
            )),
            Some(OriginalSource::Reference) => {
                Ok((&self.reference()?.predictions, OriginalSource::Reference))
            }
            None => Err((no_original_predictions(Some(self.bundle)).into(), json!({}))),
        }
    }

    /// The original model's predictions if they are stored or were already recomputed (never
    /// runs the checkpoint: metrics only report what a check computed).
    fn original_if_known(&self) -> Option<&[usize]> {
        match self.original_source()? {
            OriginalSource::Stored => self.samples.get()?.as_ref().ok()?.original_predictions(),
            OriginalSource::Reference => Some(&self.reference.get()?.as_ref().ok()?.predictions),
        }
    }

    /// Both paths on every input, a chunk of rows at a time.
    fn both_paths(&self) -> std::result::Result<&TwoPaths, Fail> {
        let samples = self.samples()?;
        self.paths
            .get_or_init(|| {
                let b = self.bundle;
                let mut p = TwoPaths {
                    ternary: Vec::with_capacity(samples.len()),
                    fp16: Vec::with_capacity(samples.len()),
                    max_logit_difference: 0.0,
                };
                for rows in samples.chunks(chunk_rows(&b.manifest().model)) {
                    let x = samples.rows(rows);
                    let t = forward_bundle(b, WeightPath::Ternary, x.view())?;
                    let f = forward_bundle(b, WeightPath::Fp16, x.view())?;
                    p.ternary.extend(argmax_rows(&t));
                    p.fp16.extend(argmax_rows(&f));
                    p.max_logit_difference = t
                        .iter()
                        .zip(f.iter())
                        .map(|(a, b)| (a - b).abs() as f64)
                        .fold(p.max_logit_difference, f64::max);
                }
                Ok(p)
            })
            .as_ref()
            .map_err(fail_with)
    }

    /// The FP16 model's predictions: from the agreement check's run when it ran, otherwise
    /// computed alone.
    fn fp16(&self) -> std::result::Result<&[usize], Fail> {
        let samples = self.samples()?;
        self.fp16
            .get_or_init(|| {
                if let Some(Ok(p)) = self.paths.get() {
                    return Ok(p.fp16.clone());
                }
                let mut out = Vec::with_capacity(samples.len());
                for rows in samples.chunks(chunk_rows(&self.bundle.manifest().model)) {
                    let x = samples.rows(rows);
                    out.extend(argmax_rows(&forward_bundle(
                        self.bundle,
                        WeightPath::Fp16,
                        x.view(),
                    )?));
                }
                Ok(out)
            })
            .as_ref()
            .map(Vec::as_slice)
            .map_err(fail_with)
    }

    /// The `--reference` checkpoint's predictions, a chunk of rows at a time with one layer in
    /// memory, and which of them sit at a near-tie with the stored prediction.
    fn reference(&self) -> std::result::Result<&Recomputed, Fail> {
        let samples = self.samples()?;
        let path = self.options.reference.as_ref().ok_or_else(|| {
            (
                "needs --reference ORIGINAL.safetensors".to_string(),
                json!({}),
            )
        })?;
        self.reference
            .get_or_init(|| {
                let original = CheckpointSource::open(path)?;
                let model = &self.bundle.manifest().model;
                let activations = &self.bundle.facts().activations;
                let stored = samples.original_predictions();
                let mut r = Recomputed {
                    predictions: Vec::with_capacity(samples.len()),
                    near_tie: Vec::with_capacity(samples.len()),
                    sha256: original.sha256(),
                };
                for rows in samples.chunks(chunk_rows(model)) {
                    let start = rows.start;
                    let x = samples.rows(rows);
                    let logits = forward_source(&original, model, activations, x.view())?;
                    let predictions = argmax_rows(&logits);
                    for (k, (row, &p)) in logits.rows().into_iter().zip(&predictions).enumerate() {
                        let tie = stored.is_some_and(|s| {
                            let scale = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                            row[p] - row[s[start + k]] <= NEAR_TIE * scale
                        });
                        r.near_tie.push(tie);
                    }
                    r.predictions.extend(predictions);
                }
                Ok(r)
            })
            .as_ref()
            .map_err(fail_with)
    }
}

/// Whole-file SHA-256 of every declared file straight from disk (rule 7.1), for a bundle whose
/// headers could not be parsed.
fn whole_file_digests(dir: &Path, m: &Manifest) -> Result<()> {
    for role in FileRole::ALL {
        let Some(entry) = m.files.get(role) else {
            continue;
        };
        let path = dir.join(role.file_name());
        let Some((mut file, _)) = open_data_file_raw(dir, role)? else {
            continue;
        };
        let found = sha256_reader(&mut file).map_err(|e| Error::io(&path, "read", e))?;
        if found != entry.sha256 {
            return Err(Violation::new(
                &path,
                Rule::FileDigest,
                format!("sha256 {}", entry.sha256),
                format!("sha256 {found}"),
            )
            .into());
        }
    }
    Ok(())
}

impl VerifyReport {
    /// JUnit XML: one test case per check (skipped checks as `<skipped/>`).
    pub fn to_junit(&self) -> String {
        let esc = |s: &str| -> String {
            s.chars()
                .filter(|&c| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{7f}'))
                .map(|c| match c {
                    '&' => "&amp;".into(),
                    '<' => "&lt;".into(),
                    '>' => "&gt;".into(),
                    '"' => "&quot;".into(),
                    '\'' => "&apos;".into(),
                    c => c.to_string(),
                })
                .collect()
        };
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let time: f64 = self.checks.iter().map(|c| c.seconds).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str(&format!(
            "<testsuites name=\"bundle verify\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{time:.3}\">\n",
            self.checks.len(),
            count(Status::Fail),
            count(Status::Skip)
        ));
        x.push_str(&format!(
            "  <testsuite name=\"bundle verify {}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{time:.3}\">\n",
            esc(&self.bundle),
            self.checks.len(),
            count(Status::Fail),
            count(Status::Skip)
        ));
        for c in &self.checks {
            x.push_str(&format!(
                "    <testcase classname=\"bundle.verify\" name=\"{}\" time=\"{:.3}\">",
                c.name, c.seconds
            ));
            match c.status {
                Status::Pass => x.push_str(&format!("<system-out>{}</system-out>", esc(&c.detail))),
                Status::Fail => x.push_str(&format!(
                    "<failure message=\"{0}\">{0}</failure>",
                    esc(&c.detail)
                )),
                Status::Skip => x.push_str(&format!("<skipped message=\"{}\"/>", esc(&c.detail))),
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }
}
