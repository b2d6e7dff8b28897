//! The numeric gradient check of the FP16 model in f64: the analytic gradient of the backward
//! pass ([`crate::model::model64`]) against central differences of the loss at sampled
//! coordinates of every parameter tensor and along random directions over all parameters, as
//! torch's gradcheck fast mode does.
//!
//! Every perturbed loss is computed in one batched pass (`model::perturbed`): the
//! unperturbed activations are reused up to the first layer a perturbation touches, and the
//! perturbed copies go through each later layer together, its weights converted once. A random
//! direction is, for each weight matrix, the outer product of two random vectors, so applying
//! it or taking its dot product with a gradient costs a matrix-vector product. ReLU kinks (a
//! pre-activation changing sign between +h and -h) make central differences meaningless there;
//! they are detected and excluded.

use std::collections::HashMap;

use ndarray::{ArrayView2, Axis};

use crate::model::decoder64::BackwardHooks;
use crate::model::direction::{direction_value, Direction};
use crate::model::model64::{cross_entropy, Cache, Model64};
use crate::model::perturbed::{central_differences, Move};

/// Settings of the gradient check.
#[derive(Debug, Clone, PartialEq)]
pub struct GradCheckOptions {
    /// Seed for coordinates and directions.
    pub seed: u64,
    /// Coordinates sampled per parameter tensor.
    pub coordinates_per_tensor: usize,
    /// Random directions over all parameters.
    pub directions: usize,
    /// Central-difference step (absolute, on f64 weights).
    pub step: f64,
    /// Relative part of the allowance (rtol): an analytic derivative a and its central
    /// difference n agree when |a - n| <= rtol * max(|a|, |n|) + [`round_off_bound`] / step.
    pub tolerance: f64,
    /// Test hook: multiplies every analytic gradient, to prove the check catches a wrong
    /// backward pass. Always 1.0 outside tests.
    #[doc(hidden)]
    pub analytic_gradient_scale: f64,
    /// Test hooks of a decoder's backward pass (attention, RMSNorm, gated MLP), to prove the
    /// check catches each wrong. Always 1.0 outside tests.
    #[doc(hidden)]
    pub decoder_hooks: BackwardHooks,
}

impl Default for GradCheckOptions {
    fn default() -> Self {
        GradCheckOptions {
            seed: 0,
            coordinates_per_tensor: 2,
            directions: 2,
            step: 1e-5,
            tolerance: DEFAULT_GRAD_TOL,
            analytic_gradient_scale: 1.0,
            decoder_hooks: BackwardHooks::default(),
        }
    }
}

/// Default `--grad-tol`, the relative part of the allowance. In f64 with h = 1e-5 the central
/// difference of a derivative that stands above round-off agrees to about 1e-8 relative; a
/// wrong backward pass (missing term, wrong sign, 1% scale) is off by 1e-2 or more. 1e-4
/// separates the two with margin on both sides (CS231n: < 1e-7 good, > 1e-2 wrong;
/// torch.autograd.gradcheck uses rtol 1e-3 in f64). Derivatives buried in round-off are
/// covered by the absolute part, [`round_off_bound`].
pub const DEFAULT_GRAD_TOL: f64 = 1e-4;

/// The floor of the informative relative error |a - n| / max(|a|, |n|, floor).
pub const RELATIVE_ERROR_FLOOR: f64 = 1e-6;

/// The outcome of the numeric gradient check.
#[derive(Debug, Clone, PartialEq)]
pub struct GradCheckReport {
    /// Coordinates compared.
    pub coordinates: usize,
    /// Coordinates excluded because a ReLU pre-activation changed sign between +h and -h.
    pub excluded_kinks: usize,
    /// Directions compared.
    pub directions: usize,
    /// Directions excluded for a ReLU kink.
    pub excluded_directions: usize,
    /// Largest relative error seen, |a - n| / max(|a|, |n|, 1e-6) (informative: the gate is
    /// [`GradCheckReport::error_ratio`]).
    pub max_relative_error: f64,
    /// Largest ratio of an error to its allowance, |a - n| / (rtol * max(|a|, |n|) + atol);
    /// the check passes when it is below 1, and 1 / error_ratio is its margin.
    pub error_ratio: f64,
    /// Where the largest error ratio was (tensor and index, or direction).
    pub worst: String,
    /// The absolute allowance of a coordinate (step `h`): the round-off bound of a central
    /// difference of the loss (see [`round_off_bound`]).
    pub atol: f64,
    /// Samples in the batch.
    pub batch: usize,
}

impl GradCheckReport {
    /// Whether every compared derivative agreed within its allowance and at least one was
    /// compared.
    pub fn passed(&self) -> bool {
        self.error_ratio < 1.0 && self.coordinates + self.directions > 0
    }
}

/// Unit round-off of f64.
const U64: f64 = f64::EPSILON / 2.0;

/// How many times the probabilistic round-off estimate the allowance is (the estimate holds
/// with high probability, not always: Higham and Mary's bound carries a factor lambda of a few).
pub const ROUND_OFF_SAFETY: f64 = 4.0;

/// The round-off bound of the loss: lambda * u * S * sqrt(sum of in_features), with S = |L| +
/// the mean over the batch of the largest |logit| (the magnitudes whose rounding reaches the
/// loss) and sqrt(sum of in_features) the probabilistic growth of rounding along the forward
/// pass (each layer's dot products of length in_features, Higham and Mary 2019). A central
/// difference with step h then has a round-off error of at most this divided by h.
pub fn round_off_bound(loss: f64, mean_max_logit: f64, dot_lengths: u64) -> f64 {
    ROUND_OFF_SAFETY * U64 * (loss.abs() + mean_max_logit) * (dot_lengths as f64).sqrt()
}

/// Relative error of an analytic versus a numeric derivative.
pub fn relative_error(analytic: f64, numeric: f64) -> f64 {
    (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(RELATIVE_ERROR_FLOOR)
}

/// The numeric gradient check on `inputs`/`labels` (a small batch).
pub fn gradient_check(
    model: &Model64<'_>,
    inputs: ArrayView2<f64>,
    labels: &[usize],
    options: &GradCheckOptions,
) -> GradCheckReport {
    let (logits, caches) = model.forward(inputs);
    let (loss, dlogits) = cross_entropy(&logits, labels);
    let mean_max_logit = logits
        .axis_iter(Axis(0))
        .map(|row| row.iter().fold(0.0f64, |m, v| m.max(v.abs())))
        .sum::<f64>()
        / logits.nrows().max(1) as f64;
    let dot_lengths: u64 = model.layers.iter().map(|l| l.inp as u64).sum();
    let noise = round_off_bound(loss, mean_max_logit, dot_lengths);
    let h = options.step;
    let sampled = sample_coordinates(model, options);

    let candidates: Vec<Direction> = (0..options.directions as u64 * 4)
        .map(|d| Direction::new(options.seed.wrapping_add(0x5EED_0000 + d), model.params()))
        .collect();
    let numeric = numeric_side(model, &caches, labels, &sampled, &candidates, options);
    let (coordinate_numeric, chosen, excluded_directions) = numeric;

    // The analytic side: one backward pass, reduced to the sampled entries and the dot
    // products with the chosen directions.
    let scale = options.analytic_gradient_scale;
    let mut values: HashMap<(usize, usize), f64> = sampled.iter().map(|&k| (k, 0.0)).collect();
    let mut dots = vec![0.0; chosen.len()];
    model.backward(&caches, dlogits, &mut |param, offset, g| {
        for (&(p, i), v) in values.iter_mut() {
            if p == param && (offset..offset + g.len()).contains(&i) {
                *v += g[i - offset] * scale;
            }
        }
        for (dot, &(d, _)) in dots.iter_mut().zip(&chosen) {
            *dot += candidates[d].dot(param, offset, g) * scale;
        }
    });

    let mut report = GradCheckReport {
        coordinates: 0,
        excluded_kinks: 0,
        directions: 0,
        excluded_directions,
        max_relative_error: 0.0,
        error_ratio: 0.0,
        worst: String::new(),
        atol: noise / h,
        batch: inputs.nrows(),
    };
    // Each comparison's allowance: rtol relative, plus the round-off of its central difference.
    let mut consider = |analytic: f64, numeric: f64, step: f64, what: String| {
        let diff = (analytic - numeric).abs();
        let allowed = options.tolerance * analytic.abs().max(numeric.abs()) + noise / step;
        let ratio = diff / allowed;
        report.max_relative_error = report
            .max_relative_error
            .max(relative_error(analytic, numeric));
        if ratio >= report.error_ratio {
            report.error_ratio = ratio;
            report.worst = format!(
                "{what}: analytic {analytic:.6e}, numeric {numeric:.6e}, difference {diff:.2e} of {allowed:.2e} allowed"
            );
        }
    };
    let mut compared = (0, 0, 0);
    for (&(param, index), numeric) in sampled.iter().zip(&coordinate_numeric) {
        let Some(numeric) = *numeric else {
            compared.1 += 1;
            continue;
        };
        compared.0 += 1;
        let name = &model.params()[param].name;
        consider(
            values[&(param, index)],
            numeric,
            h,
            format!("{name} [{index}]"),
        );
    }
    for (k, (&(d, numeric), &analytic)) in chosen.iter().zip(&dots).enumerate() {
        compared.2 += 1;
        let step = h / candidates[d].norm.max(f64::MIN_POSITIVE);
        consider(analytic, numeric, step, format!("direction {k}"));
    }
    report.coordinates = compared.0;
    report.excluded_kinks = compared.1;
    report.directions = compared.2;
    report
}

/// The central differences: one per sampled coordinate (`None` at a ReLU kink), and the chosen
/// directions with theirs. Candidate directions are evaluated in rounds until `directions` of
/// them have no kink (the first round carries the coordinates too); a direction's step is
/// scaled by its norm, so that the move has length h. Returns the coordinates' differences,
/// the chosen (candidate, difference) pairs and how many candidates were excluded.
#[allow(clippy::type_complexity)]
fn numeric_side(
    model: &Model64<'_>,
    caches: &[Cache],
    labels: &[usize],
    sampled: &[(usize, usize)],
    candidates: &[Direction],
    options: &GradCheckOptions,
) -> (Vec<Option<f64>>, Vec<(usize, f64)>, usize) {
    let h = options.step;
    let mut moves: Vec<(Move, f64)> = sampled
        .iter()
        .map(|&(param, index)| (Move::Coordinate { param, index }, h))
        .collect();
    let mut coordinate_numeric: Vec<Option<f64>> = Vec::new();
    let mut chosen: Vec<(usize, f64)> = Vec::new();
    let mut excluded_directions = 0;
    let mut next = 0;
    loop {
        let wanted = options.directions.saturating_sub(chosen.len());
        let round: Vec<usize> = (next..(next + wanted).min(candidates.len())).collect();
        next += round.len();
        moves.extend(round.iter().map(|&d| {
            (
                Move::Direction(d),
                h / candidates[d].norm.max(f64::MIN_POSITIVE),
            )
        }));
        if moves.is_empty() {
            break;
        }
        let numeric = central_differences(model, caches, labels, &moves, candidates);
        let split = moves
            .iter()
            .take_while(|m| matches!(m.0, Move::Coordinate { .. }))
            .count();
        if coordinate_numeric.is_empty() {
            coordinate_numeric = numeric[..split].to_vec();
        }
        for (&d, n) in round.iter().zip(&numeric[split..]) {
            match n {
                Some(n) => chosen.push((d, *n)),
                None => excluded_directions += 1,
            }
        }
        moves.clear();
        if chosen.len() >= options.directions || next >= candidates.len() {
            break;
        }
    }
    (coordinate_numeric, chosen, excluded_directions)
}

/// The coordinates the gradient check perturbs: `coordinates_per_tensor` distinct indices of
/// each parameter tensor (all of a smaller one), drawn with splitmix64 from the seed.
fn sample_coordinates(model: &Model64<'_>, options: &GradCheckOptions) -> Vec<(usize, usize)> {
    let mut sampled = Vec::new();
    for (param, p) in model.params().iter().enumerate() {
        let n = p.shape.elements();
        let k = options.coordinates_per_tensor.min(n);
        let mut picked: Vec<usize> = Vec::new();
        let mut j = 0;
        while picked.len() < k {
            let u = (direction_value(options.seed ^ 0xC0FF_EE00, param, j) + 1.0) / 2.0;
            let idx = ((u * n as f64) as usize).min(n - 1);
            if !picked.contains(&idx) {
                picked.push(idx);
            }
            j += 1;
        }
        sampled.extend(picked.into_iter().map(|i| (param, i)));
    }
    sampled
}
