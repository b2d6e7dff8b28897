//! The gradient checks on the FP16 model in f64: analytic against numeric derivatives
//! (gradient_check) and gradients reaching every parameter tensor (gradient_flow).

use ndarray::Array2;
use serde_json::{json, Value};

use crate::error::printable;
use crate::model::bundle_decoder::BundleDecoder;
use crate::model::chunks::gradient_rows;
use crate::model::decoder64::{self, Decoder64, DecoderGradCheckOptions, MAX_IN_MEMORY_PARAMETERS};
use crate::model::decoder_stream::{streamed_gradient_check, StreamedReport};
use crate::model::gradcheck::{gradient_check, GradCheckOptions};
use crate::model::model64::{gradient_flow, to_f64, Model64, TensorGradient};
use crate::model::reference::WeightPath;
use crate::verify::check::Check;
use crate::verify::integrity::fail_with;
use crate::verify::options::{VerifyOptions, FLOW_BATCH, GRADCHECK_BATCH};
use crate::verify::runner::{Fail, Outcome, Runner};
use crate::verify::runs::ModelRuns;

/// What the gradient checks measured, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    /// Worst relative error of the gradient check.
    pub max_relative_error: Option<f64>,
    /// Whether gradients flow to every tensor.
    pub flow_passed: Option<bool>,
}

/// Runs gradient_check and gradient_flow on the FP16 model of the open bundle.
pub(crate) fn run(
    r: &mut Runner<'_>,
    runs: Option<&ModelRuns<'_>>,
    options: &VerifyOptions,
) -> Measured {
    let mut measured = Measured::default();
    if let Some(runs) = runs.filter(|r| r.bundle.decoder().is_some()) {
        decoder_checks(r, runs, options, &mut measured);
        return measured;
    }
    // The f64 model is built once, for both checks.
    let models = runs.map(|runs| (runs, Model64::new(runs.bundle)));
    let input = models.as_ref().map(|(runs, model)| (*runs, model));
    r.run_on(Check::GradientCheck, input, |(runs, model)| {
        let model = model.as_ref().map_err(fail_with)?;
        let (x, labels) = batch(runs, GRADCHECK_BATCH)?;
        check(model, x, labels, options, &mut measured)
    });
    r.run_on(Check::GradientFlow, input, |(runs, model)| {
        let model = model.as_ref().map_err(fail_with)?;
        let (x, labels) = batch(runs, FLOW_BATCH)?;
        flow(model, x, labels, &mut measured)
    });
    measured
}

/// The first `limit` inputs (as f64) and labels; fewer when the model is so wide that `limit`
/// samples would not fit the memory bound.
fn batch<'r>(runs: &'r ModelRuns<'_>, limit: usize) -> Result<(Array2<f64>, &'r [usize]), Fail> {
    let samples = runs.samples()?;
    let n = samples
        .len()
        .min(gradient_rows(&runs.bundle.manifest().model, limit));
    Ok((to_f64(samples.rows(0..n).view()), &samples.labels()[..n]))
}

/// Check 10, gradient_check: f64 backprop against central differences.
fn check(
    model: &Model64<'_>,
    x: Array2<f64>,
    labels: &[usize],
    options: &VerifyOptions,
    measured: &mut Measured,
) -> Outcome {
    let grad = GradCheckOptions {
        seed: options.seed,
        ..options.grad.clone()
    };
    let rep = gradient_check(model, x.view(), labels, &grad);
    measured.max_relative_error = Some(rep.max_relative_error);
    let figures = json!({
        "batch": rep.batch, "coordinates": rep.coordinates, "excluded_relu_kinks": rep.excluded_kinks,
        "directions": rep.directions, "excluded_directions": rep.excluded_directions,
        "max_relative_error": rep.max_relative_error, "error_ratio": rep.error_ratio,
        "grad_tol": grad.tolerance, "atol": rep.atol, "step": grad.step, "worst": rep.worst,
    });
    let margin = margin(rep.error_ratio);
    let detail = format!(
        "worst error {:.2e} of its allowance ({margin}) over {} coordinates and {} directions; allowance {:.0e} x |gradient| + {:.1e} / step h, the round-off bound of a central difference (h = {:.0e}: {:.1e}); max relative error {:.2e}; {} coordinates excluded at ReLU kinks; worst: {}",
        rep.error_ratio, rep.coordinates, rep.directions, grad.tolerance, rep.atol * grad.step, grad.step, rep.atol, rep.max_relative_error, rep.excluded_kinks, rep.worst
    );
    if rep.passed() {
        Ok((detail, figures))
    } else {
        Err((detail, figures))
    }
}

/// Check 11, gradient_flow: every parameter tensor gets a finite, non-zero gradient.
fn flow(model: &Model64<'_>, x: Array2<f64>, labels: &[usize], measured: &mut Measured) -> Outcome {
    let n = x.nrows();
    let (loss, stats) = gradient_flow(model, x.view(), labels);
    flow_outcome(loss, &stats, (n, &format!("{n} samples")), measured)
}

/// Passes when the loss is finite and every tensor's gradient is finite and not all zero.
/// `n` is the batch (samples, or a decoder's sequences), `on` says what it is.
fn flow_outcome(
    loss: f64,
    stats: &[TensorGradient],
    (n, on): (usize, &str),
    measured: &mut Measured,
) -> Outcome {
    let bad: Vec<String> = stats
        .iter()
        .filter(|s| s.non_finite > 0 || s.non_zero == 0)
        .map(|s| {
            let why = if s.non_finite > 0 {
                format!("{} non-finite", s.non_finite)
            } else {
                "all zero".into()
            };
            format!("{} ({why})", printable(&s.name))
        })
        .collect();
    let passed = bad.is_empty() && loss.is_finite();
    measured.flow_passed = Some(passed);
    let tensors: Vec<Value> = stats
        .iter()
        .map(|s| json!({ "name": s.name, "elements": s.elements, "norm": s.norm, "variance": s.variance, "mean": s.mean, "non_finite": s.non_finite, "non_zero": s.non_zero }))
        .collect();
    let total_var: f64 = stats.iter().map(|s| s.variance).sum();
    let figures =
        json!({ "batch": n, "loss": loss, "tensors": tensors, "gradient_variance_sum": total_var });
    if passed {
        let norms: Vec<String> = stats
            .iter()
            .map(|s| format!("{} {:.2e}", printable(&s.name), s.norm))
            .collect();
        Ok((
            format!(
                "all {} parameter tensors get finite, non-zero gradients (loss {loss:.4} on {on}); norms: {}",
                stats.len(),
                norms.join(", ")
            ),
            figures,
        ))
    } else if !loss.is_finite() {
        Err((format!("loss is {loss} on {on}"), figures))
    } else {
        Err((
            format!("gradients do not flow to: {}", bad.join(", ")),
            figures,
        ))
    }
}

/// gradient_check and gradient_flow of a decoder: its FP16 weights in f64, the mean next-token
/// cross-entropy over the first sequences of the inputs.
fn decoder_checks(
    r: &mut Runner<'_>,
    runs: &ModelRuns<'_>,
    options: &VerifyOptions,
    measured: &mut Measured,
) {
    let params: u64 = runs
        .bundle
        .manifest()
        .tensors
        .iter()
        .map(|t| t.elements())
        .sum();
    let grad = DecoderGradCheckOptions {
        seed: options.seed,
        tolerance: options.grad.tolerance,
        step: options.grad.step,
        hooks: options.grad.decoder_hooks,
        ..DecoderGradCheckOptions::default()
    };
    if params > MAX_IN_MEMORY_PARAMETERS {
        return streamed_checks(r, runs, &grad, params, measured);
    }
    let model = BundleDecoder::new(runs.bundle, WeightPath::Fp16)
        .and_then(|fp16| Decoder64::load(fp16.spec(), &fp16));
    let ids = |limit: usize| -> Result<ndarray::Array2<i64>, Fail> {
        let samples = runs.samples()?;
        let (n, _) = samples.sequence_shape().unwrap_or((0, 0));
        Ok(samples.ids(0..n.min(limit)))
    };
    r.run_on(Check::GradientCheck, Some(&model), |model| {
        let model = model.as_ref().map_err(fail_with)?;
        let ids = ids(GRADCHECK_BATCH)?;
        let rep = decoder64::gradient_check(model, ids.view(), &grad).map_err(|e| fail_with(&e))?;
        measured.max_relative_error = Some(rep.max_relative_error);
        let figures = json!({
            "batch": ids.nrows(), "tokens": ids.ncols(), "coordinates": rep.coordinates,
            "directions": rep.directions, "max_relative_error": rep.max_relative_error,
            "error_ratio": rep.error_ratio, "grad_tol": grad.tolerance, "atol": rep.atol,
            "step": grad.step, "loss": rep.loss, "worst": rep.worst,
        });
        let margin = margin(rep.error_ratio);
        let detail = format!(
            "worst error {:.2e} of its allowance ({margin}) over {} coordinates (every tensor) and {} directions of the next-token loss on {} sequences of {} tokens; allowance {:.0e} x |gradient| + {:.1e} / step; max relative error {:.2e}; worst: {}",
            rep.error_ratio, rep.coordinates, rep.directions, ids.nrows(), ids.ncols(), grad.tolerance, rep.atol, rep.max_relative_error, rep.worst
        );
        if rep.error_ratio < 1.0 {
            Ok((detail, figures))
        } else {
            Err((detail, figures))
        }
    });
    r.run_on(Check::GradientFlow, Some(&model), |model| {
        let model = model.as_ref().map_err(fail_with)?;
        let ids = ids(FLOW_BATCH)?;
        let (loss, stats) =
            decoder64::gradient_flow(model, ids.view()).map_err(|e| fail_with(&e))?;
        let on = format!("{} sequences of {} tokens", ids.nrows(), ids.ncols());
        flow_outcome(loss, &stats, (ids.nrows(), &on), measured)
    });
}

/// Tokens of the one sequence the streamed checks of a large decoder run on.
pub const STREAMED_TOKENS: usize = 16;

/// gradient_check and gradient_flow of a decoder too large to hold in f64, from one streamed
/// pass ([`streamed_gradient_check`]) on the first sequence (its first 16 tokens), one entry
/// of each probed tensor and the directions of `grad`.
fn streamed_checks(
    r: &mut Runner<'_>,
    runs: &ModelRuns<'_>,
    grad: &DecoderGradCheckOptions,
    params: u64,
    measured: &mut Measured,
) {
    let result = std::cell::OnceCell::new();
    let report = || -> Result<&StreamedReport, Fail> {
        result
            .get_or_init(|| -> Result<StreamedReport, Fail> {
                let ids = runs.samples()?.ids(0..1);
                let ids: Vec<i64> = ids.iter().take(STREAMED_TOKENS).copied().collect();
                // One entry a tensor: each costs a pass from its layer on (the embedding's,
                // a whole pass).
                let grad = DecoderGradCheckOptions {
                    per_tensor: 1,
                    ..grad.clone()
                };
                streamed_gradient_check(runs.bundle, &ids, &grad).map_err(|e| fail_with(&e))
            })
            .as_ref()
            .map_err(Clone::clone)
    };
    r.run_on(Check::GradientCheck, Some(()), |_| {
        let rep = &report()?.check;
        measured.max_relative_error = Some(rep.max_relative_error);
        let figures = json!({
            "batch": 1, "tokens": STREAMED_TOKENS, "streamed": true, "parameters": params,
            "coordinates": rep.coordinates, "directions": rep.directions,
            "max_relative_error": rep.max_relative_error, "error_ratio": rep.error_ratio,
            "grad_tol": grad.tolerance, "atol": rep.atol, "step": grad.step, "loss": rep.loss,
            "worst": rep.worst,
        });
        let detail = format!(
            "worst error {:.2e} of its allowance ({}) over {} coordinates (every tensor of the last layer, the embedding, the final norm and an untied head) and {} rank-1 directions over all {params} parameters, on 1 sequence of {STREAMED_TOKENS} tokens, the decoder streamed from fp16.safetensors in f64; allowance {:.0e} x |gradient| + {:.1e} / step; max relative error {:.2e}; worst: {}",
            rep.error_ratio, margin(rep.error_ratio), rep.coordinates, rep.directions, grad.tolerance, rep.atol, rep.max_relative_error, rep.worst
        );
        if rep.error_ratio < 1.0 {
            Ok((detail, figures))
        } else {
            Err((detail, figures))
        }
    });
    r.run_on(Check::GradientFlow, Some(()), |_| {
        let rep = report()?;
        let on = format!("1 sequence of {STREAMED_TOKENS} tokens, streamed");
        flow_outcome(rep.check.loss, &rep.flow, (1, &on), measured)
    });
}

/// "margin Nx" for an error ratio, or "exact".
fn margin(error_ratio: f64) -> String {
    if error_ratio > 0.0 {
        format!("margin {:.0}x", 1.0 / error_ratio)
    } else {
        "exact".into()
    }
}
