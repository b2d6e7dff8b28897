//! `bundle verify`: the CI gate. Runs the named checks of a handoff in order (manifest, files,
//! checksums, structure, encoding, scales, dequantization, agreement, gradient_check,
//! gradient_flow, reference), each with a status, a one-line detail and figures, and the
//! handoff metrics the pipeline logs. A check whose prerequisite failed is reported as not run,
//! never as passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;
use serde_json::{json, Value};

use crate::checks;
use crate::checksum::sha256_reader;
use crate::error::{Error, Result, Violation};
use crate::gradcheck::{
    gradient_check, gradient_flow, to_f64, GradCheckOptions, Model64, DEFAULT_GRAD_TOL,
};
use crate::manifest::{FileRole, Manifest};
use crate::reader::{open_data_file_raw, open_manifest, Bundle, OpenOptions};
use crate::reference::{argmax_rows, dense_layer, forward, forward_bundle, WeightPath};
use crate::rules::Rule;
use crate::samples::{chunk_rows, gradient_rows, Samples};
use crate::source::{CheckpointSource, TensorSource};

/// The integrity checks: the first [`INTEGRITY_CHECKS`] of [`CHECKS`], manifest to
/// dequantization. They depend only on the bytes, so a bundle the writer produced always
/// passes them.
pub const INTEGRITY_CHECKS: usize = 7;

/// The checks, in the order they run.
pub const CHECKS: [&str; 11] = [
    "manifest",
    "files",
    "checksums",
    "structure",
    "encoding",
    "scales",
    "dequantization",
    "agreement",
    "gradient_check",
    "gradient_flow",
    "reference",
];

/// Default `--min-agreement`.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.995;
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
    /// Synthetic samples when the bundle has no validation set.
    pub samples: usize,
    /// Seed of synthetic inputs, labels, coordinates and directions.
    pub seed: u64,
    /// Gradient-check settings (tolerance, steps).
    pub grad: GradCheckOptions,
    /// The pre-quantization checkpoint, for the `reference` check.
    pub reference: Option<PathBuf>,
    /// Minimum agreement of the original and FP16 models (informational when `None`).
    pub min_reference_agreement: Option<f64>,
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
            samples: DEFAULT_SAMPLES,
            seed: DEFAULT_SEED,
            grad: GradCheckOptions {
                tolerance: DEFAULT_GRAD_TOL,
                ..GradCheckOptions::default()
            },
            reference: None,
            min_reference_agreement: None,
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
        if !(0.0..=1.0).contains(&self.min_agreement) {
            return Err(Error::InvalidArgument(format!(
                "--min-agreement must be in [0, 1], found {}",
                self.min_agreement
            )));
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
}

type Outcome = std::result::Result<(String, Value), (String, Value)>;

/// The f64 model, a batch of inputs in f64, and their labels.
type Batch<'a> = (&'a Model64<'a>, Array2<f64>, &'a [usize]);

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
    let mut metrics = BTreeMap::new();
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
            format!("format {} {}{}", m.format, m.format_version, if facts.version > crate::manifest::FormatVersion::CURRENT { " (newer minor: unknown fields ignored)" } else { "" }),
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

    // Inputs for the model checks: the validation set, or seeded synthetic inputs, served in
    // chunks of rows that bound memory. Prepared by the first check that needs them (none of
    // the selected checks may).
    let inputs_cell = std::cell::OnceCell::new();
    let inputs = || {
        inputs_cell
            .get_or_init(|| {
                Samples::of_bundle(b.expect("structure passed"), options.samples, options.seed)
            })
            .as_ref()
            .map_err(fail_with)
    };

    // 8. agreement.
    let mut agreement_value = None;
    let mut max_logit_diff = None;
    r.run("agreement", &["encoding"], || {
        let b = b.expect("structure passed");
        let samples = inputs()?;
        let source = samples.source();
        let run = || -> Result<(f64, f64)> {
            let (mut same, mut diff) = (0usize, 0f64);
            for rows in samples.chunks(chunk_rows(&b.manifest().model)) {
                let x = samples.rows(rows);
                let t = forward_bundle(b, WeightPath::Ternary, x.view())?;
                let f = forward_bundle(b, WeightPath::Fp16, x.view())?;
                let (pt, pf) = (argmax_rows(&t), argmax_rows(&f));
                same += pt.iter().zip(&pf).filter(|(a, b)| a == b).count();
                diff = t.iter().zip(f.iter()).map(|(a, b)| (a - b).abs() as f64).fold(diff, f64::max);
            }
            Ok((same as f64 / samples.len() as f64, diff))
        };
        match run() {
            Ok((agree, diff)) => {
                agreement_value = Some(agree);
                max_logit_diff = Some(diff);
                let figures = json!({ "samples": samples.len(), "inputs": source, "seed": options.seed, "agreement": agree, "min_agreement": options.min_agreement, "max_logit_difference": diff });
                let detail = format!(
                    "argmax agreement {:.2}% (minimum {:.2}%) on {} {source} inputs; max logit difference {diff:.3e}",
                    agree * 100.0,
                    options.min_agreement * 100.0,
                    samples.len()
                );
                if agree >= options.min_agreement {
                    Ok((detail, figures))
                } else {
                    Err((detail, figures))
                }
            }
            Err(e) => Err(fail_with(&e)),
        }
    });

    // 9. gradient_check and 10. gradient_flow, on the FP16 model in f64.
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

    // 11. reference (optional).
    if !options.selected("reference") {
        r.skip("reference", "not selected");
    } else if options.reference.is_some() || !options.only.is_empty() {
        r.run("reference", &["structure"], || {
            let Some(path) = &options.reference else {
                return Err(("needs --reference ORIGINAL.safetensors".into(), json!({})));
            };
            let b = b.expect("structure passed");
            let samples = inputs()?;
            let source = samples.source();
            match reference_agreement(b, path, samples) {
                Ok(agree) => {
                    let figures = json!({ "samples": samples.len(), "inputs": source, "agreement": agree, "min_reference_agreement": options.min_reference_agreement });
                    let detail = format!("original vs FP16 argmax agreement {:.2}% on {} {source} inputs", agree * 100.0, samples.len());
                    match options.min_reference_agreement {
                        Some(min) if agree < min => Err((format!("{detail} (minimum {:.2}%)", min * 100.0), figures)),
                        Some(min) => Ok((format!("{detail} (minimum {:.2}%)", min * 100.0), figures)),
                        None => Ok((format!("{detail} (informational)"), figures)),
                    }
                }
                Err(e) => Err(fail_with(&e)),
            }
        });
    } else {
        r.skip("reference", "not run: no --reference given");
    }

    // Metrics under the names the pipeline logs.
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
    metrics.insert(
        "phase4_to_5/dequantization_accuracy_retention".into(),
        json!(agreement_value),
    );
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
    metrics.insert("max_logit_difference".into(), json!(max_logit_diff));
    let integrity_bytes = declared_bytes.unwrap_or(0);
    metrics.insert("integrity_seconds".into(), json!(integrity_seconds));
    metrics.insert(
        "integrity_gb_per_s".into(),
        json!(integrity_bytes as f64 / integrity_seconds.max(1e-9) / 1e9),
    );

    let ok = r.results.iter().all(|c| c.status != Status::Fail);
    VerifyReport {
        ok,
        bundle: dir.display().to_string(),
        checks: r.results,
        metrics,
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

/// Argmax agreement of the original checkpoint's model and the bundle's FP16 model on the
/// samples, a chunk at a time.
fn reference_agreement(b: &Bundle, path: &Path, samples: &Samples<'_>) -> Result<f64> {
    let original = CheckpointSource::open(path)?;
    // Every tensor read from the original must have the length the bundle's model needs.
    let mut load = |name: &str, len: usize| -> Result<Vec<f32>> {
        let v = original.load_f32(name)?;
        if v.len() != len {
            return Err(Violation::new(
                path,
                Rule::Model,
                format!("{len} values, as the bundle's model needs"),
                format!("{}", v.len()),
            )
            .tensor(name)
            .into());
        }
        Ok(v)
    };
    let layers = b
        .manifest()
        .model
        .layers
        .iter()
        .zip(&b.facts().activations)
        .map(|(l, &activation)| dense_layer(l, activation, &mut load))
        .collect::<Result<Vec<_>>>()?;
    let mut same = 0;
    for rows in samples.chunks(chunk_rows(&b.manifest().model)) {
        let x = samples.rows(rows);
        let f = forward_bundle(b, WeightPath::Fp16, x.view())?;
        let o = forward(&layers, x.view());
        let (po, pf) = (argmax_rows(&o), argmax_rows(&f));
        same += po.iter().zip(&pf).filter(|(a, b)| a == b).count();
    }
    Ok(same as f64 / samples.len().max(1) as f64)
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
