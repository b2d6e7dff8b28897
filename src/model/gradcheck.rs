//! Gradients of the FP16 model, promoted exactly to f64: a streaming backward pass, a numeric
//! gradient check (central differences at sampled coordinates and along random directions, as
//! torch's gradcheck fast mode does), and gradient-flow statistics per parameter tensor.
//!
//! Weight matrices are never held whole: every pass converts row blocks of the FP16 bytes to
//! f64 on the fly, so memory stays near one block plus the activations of the batch. A
//! perturbed forward pass starts at the first layer the perturbation touches, reusing the
//! unperturbed activations before it. ReLU kinks (a pre-activation changing sign between +h
//! and -h) make central differences meaningless there; they are detected and excluded.

use std::collections::HashMap;

use half::f16;
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::Result;
use crate::format::activation::Activation;
use crate::read::Bundle;

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

/// Statistics of one parameter tensor's gradient over a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorGradient {
    /// Tensor name.
    pub name: String,
    /// Elements.
    pub elements: u64,
    /// L2 norm.
    pub norm: f64,
    /// Variance of the entries (population).
    pub variance: f64,
    /// Mean of the entries.
    pub mean: f64,
    /// Number of non-finite entries.
    pub non_finite: u64,
    /// Number of non-zero entries.
    pub non_zero: u64,
}

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

/// A deterministic value in [-1, 1) for element `index` of parameter `param` of direction
/// `seed` (splitmix64), so a direction can be regenerated block by block.
fn direction_value(seed: u64, param: usize, index: usize) -> f64 {
    let mut z = seed
        ^ (param as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// What a forward pass changes in the parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Perturb {
    None,
    Coordinate {
        param: usize,
        index: usize,
        delta: f64,
    },
    Direction {
        seed: u64,
        scale: f64,
    },
}

impl Perturb {
    fn value(&self, param: usize, index: usize) -> f64 {
        match *self {
            Perturb::None => 0.0,
            Perturb::Coordinate {
                param: p,
                index: i,
                delta,
            } => {
                if p == param && i == index {
                    delta
                } else {
                    0.0
                }
            }
            Perturb::Direction { seed, scale } => scale * direction_value(seed, param, index),
        }
    }

    fn touches(&self, param: usize) -> bool {
        match *self {
            Perturb::None => false,
            Perturb::Coordinate { param: p, .. } => p == param,
            Perturb::Direction { .. } => true,
        }
    }
}

/// One layer of the f64 model: the weight stays as FP16 bytes; small vectors are f64.
struct Layer64<'a> {
    weight: &'a [u8],
    weight_param: usize,
    out: usize,
    inp: usize,
    bias: Option<(usize, Vec<f64>)>,
    norm: Option<(usize, Vec<f64>, f64)>,
    act: Activation,
}

/// Activations kept from a forward pass, per layer.
#[derive(Clone)]
struct Cache {
    input: Array2<f64>,
    normed: Array2<f64>,
    inv_rms: Vec<f64>,
    pre: Array2<f64>,
}

/// The FP16 model of a bundle in f64, streamed from the FP16 bytes.
pub struct Model64<'a> {
    layers: Vec<Layer64<'a>>,
    params: Vec<(String, u64)>,
}

/// Every F16 bit pattern as f64 (exact): converting a weight block is one lookup per value.
fn f16_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f64()).collect())
}

fn f16_vec64(bytes: &[u8]) -> Vec<f64> {
    let table = f16_table();
    crate::format::le::u16s(bytes)
        .map(|b| table[usize::from(b)])
        .collect()
}

impl<'a> Model64<'a> {
    /// The bundle's model with the FP16 weights (every F16 value is exact in f64).
    pub fn new(bundle: &'a Bundle) -> Result<Model64<'a>> {
        let m = bundle.manifest();
        let mut params: Vec<(String, u64)> = Vec::new();
        let mut index = HashMap::new();
        let mut param = |name: &str| -> usize {
            *index.entry(name.to_string()).or_insert_with(|| {
                params.push((
                    name.to_string(),
                    bundle.tensor(name).map_or(0, |t| t.spec.elements()),
                ));
                params.len() - 1
            })
        };
        let fp16 = |name: &str| {
            bundle
                .fp16_bytes(name)
                .ok_or_else(|| bundle.missing_tensor(crate::format::manifest::FileRole::Fp16, name))
        };
        let mut layers = Vec::new();
        for (i, l) in m.model.layers.iter().enumerate() {
            layers.push(Layer64 {
                weight: fp16(&l.weight)?,
                weight_param: param(&l.weight),
                out: l.out_features as usize,
                inp: l.in_features as usize,
                bias: match &l.bias {
                    Some(b) => Some((param(b), f16_vec64(fp16(b)?))),
                    None => None,
                },
                norm: match &l.rmsnorm {
                    Some(n) => Some((param(&n.weight), f16_vec64(fp16(&n.weight)?), n.eps as f64)),
                    None => None,
                },
                act: bundle.facts().activations[i],
            });
        }
        Ok(Model64 { layers, params })
    }

    /// Parameter tensors (name, elements), in order of first use.
    pub fn params(&self) -> &[(String, u64)] {
        &self.params
    }

    fn rows_per_block(inp: usize) -> usize {
        ((1 << 19) / inp.max(1)).max(1)
    }

    /// Rows `r0..r1` of layer `l`'s weight in f64, with `p` applied.
    fn weight_block(&self, l: &Layer64<'_>, r0: usize, r1: usize, p: &Perturb) -> Array2<f64> {
        let bytes = &l.weight[r0 * l.inp * 2..r1 * l.inp * 2];
        let values = f16_vec64(bytes);
        let mut w = Array2::from_shape_fn((r1 - r0, l.inp), |(r, c)| values[r * l.inp + c]);
        if p.touches(l.weight_param) {
            for (k, v) in w.iter_mut().enumerate() {
                *v += p.value(l.weight_param, r0 * l.inp + k);
            }
        }
        w
    }

    fn vector(param: usize, values: &[f64], p: &Perturb) -> Array1<f64> {
        let mut v = Array1::from_vec(values.to_vec());
        if p.touches(param) {
            for (k, x) in v.iter_mut().enumerate() {
                *x += p.value(param, k);
            }
        }
        v
    }

    /// First layer whose parameters `p` changes.
    fn first_touched(&self, p: &Perturb) -> usize {
        self.layers
            .iter()
            .position(|l| {
                p.touches(l.weight_param)
                    || l.bias.as_ref().is_some_and(|b| p.touches(b.0))
                    || l.norm.as_ref().is_some_and(|n| p.touches(n.0))
            })
            .unwrap_or(self.layers.len())
    }

    /// Forward from layer `start` (earlier caches from `base`), returning logits and caches.
    fn forward(
        &self,
        x: ArrayView2<f64>,
        p: &Perturb,
        base: Option<&[Cache]>,
    ) -> (Array2<f64>, Vec<Cache>) {
        let start = if base.is_some() {
            self.first_touched(p)
        } else {
            0
        };
        let mut caches: Vec<Cache> = base.map(|b| b[..start].to_vec()).unwrap_or_default();
        let mut h = match (base, start) {
            (Some(b), s) if s > 0 => activate_all(b[s - 1].pre.view(), self.layers[s - 1].act),
            _ => x.to_owned(),
        };
        if start == self.layers.len() {
            let logits = base.map(|b| b[start - 1].pre.clone()).unwrap_or(h.clone());
            return (logits, caches);
        }
        for l in &self.layers[start..] {
            let input = h;
            let (normed, inv_rms) = match &l.norm {
                Some((param, w, eps)) => {
                    let w = Model64::vector(*param, w, p);
                    let mut u = input.clone();
                    let mut inv = Vec::with_capacity(u.nrows());
                    for mut row in u.axis_iter_mut(Axis(0)) {
                        let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
                        let r = 1.0 / (ms + eps).sqrt();
                        inv.push(r);
                        row.zip_mut_with(&w, |v, &wv| *v = *v * r * wv);
                    }
                    (u, inv)
                }
                None => (input.clone(), Vec::new()),
            };
            let mut pre = Array2::<f64>::zeros((normed.nrows(), l.out));
            let rows = Model64::rows_per_block(l.inp);
            let mut r0 = 0;
            while r0 < l.out {
                let r1 = (r0 + rows).min(l.out);
                let w = self.weight_block(l, r0, r1, p);
                pre.slice_mut(s![.., r0..r1]).assign(&normed.dot(&w.t()));
                r0 = r1;
            }
            if let Some((param, b)) = &l.bias {
                pre += &Model64::vector(*param, b, p);
            }
            h = activate_all(pre.view(), l.act);
            caches.push(Cache {
                input,
                normed,
                inv_rms,
                pre,
            });
        }
        let logits = caches
            .last()
            .zip(self.layers.last())
            .map(|(c, l)| activate_all(c.pre.view(), l.act))
            .unwrap_or(h);
        (logits, caches)
    }
}

fn activate_all(pre: ArrayView2<f64>, act: Activation) -> Array2<f64> {
    if act == Activation::Identity {
        pre.to_owned()
    } else {
        pre.mapv(|v| act.apply(v))
    }
}

/// Mean cross-entropy of `logits` against `labels`, and its gradient with respect to the logits.
fn cross_entropy(logits: &Array2<f64>, labels: &[usize]) -> (f64, Array2<f64>) {
    let n = logits.nrows();
    let mut grad = Array2::<f64>::zeros(logits.raw_dim());
    let mut loss = 0.0;
    for (i, row) in logits.axis_iter(Axis(0)).enumerate() {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        let lse = max + sum.ln();
        loss += lse - row[labels[i]];
        for (j, v) in row.iter().enumerate() {
            grad[[i, j]] = ((v - lse).exp() - if j == labels[i] { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    (loss / n as f64, grad)
}

/// ReLU pattern of every cached layer from `start`: which pre-activations are positive.
fn relu_signs(model: &Model64<'_>, caches: &[Cache], start: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for (l, c) in model.layers.iter().zip(caches).skip(start) {
        if l.act == Activation::Relu {
            out.extend(c.pre.iter().map(|&v| v > 0.0));
        }
    }
    out
}

/// What a backward pass collects.
struct Backward {
    stats: Vec<TensorGradient>,
    sampled: HashMap<(usize, usize), f64>,
    direction_dots: Vec<f64>,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    sum: f64,
    sum_sq: f64,
    non_finite: u64,
    non_zero: u64,
}

impl Acc {
    fn add(&mut self, g: f64) {
        if g.is_finite() {
            self.sum += g;
            self.sum_sq += g * g;
        } else {
            self.non_finite += 1;
        }
        self.non_zero += (g != 0.0) as u64;
    }
}

impl Model64<'_> {
    /// Backward pass from `caches`; gradient of the mean loss with respect to every parameter,
    /// reduced to statistics, values at `sampled` coordinates, and dot products with the
    /// directions of `direction_seeds`. Parameters used by several layers get the sum of their
    /// uses for the sampled values and dot products; their statistics are per use, summed.
    fn backward(
        &self,
        caches: &[Cache],
        dlogits: Array2<f64>,
        sampled: &[(usize, usize)],
        direction_seeds: &[u64],
        scale: f64,
    ) -> Backward {
        self.backward_into(caches, dlogits, sampled, direction_seeds, scale, None)
    }

    /// [`Model64::backward`], also adding the scaled gradient of every parameter into `full`
    /// (one vector per parameter, in [`Model64::params`] order) when given.
    fn backward_into(
        &self,
        caches: &[Cache],
        dlogits: Array2<f64>,
        sampled: &[(usize, usize)],
        direction_seeds: &[u64],
        scale: f64,
        mut full: Option<&mut [Vec<f64>]>,
    ) -> Backward {
        let mut acc = vec![Acc::default(); self.params.len()];
        let mut values: HashMap<(usize, usize), f64> = sampled.iter().map(|&k| (k, 0.0)).collect();
        let mut dots = vec![0.0; direction_seeds.len()];
        // Records the gradient of elements `offset..offset + g.len()` of parameter `param`.
        let mut record = |param: usize, offset: usize, g: &[f64], acc: &mut Vec<Acc>| {
            for &x in g {
                acc[param].add(x * scale);
            }
            if let Some(full) = full.as_deref_mut() {
                if let Some(dst) = full
                    .get_mut(param)
                    .and_then(|v| v.get_mut(offset..offset + g.len()))
                {
                    dst.iter_mut().zip(g).for_each(|(d, &x)| *d += x * scale);
                }
            }
            for (&(p, i), v) in values.iter_mut() {
                if p == param && (offset..offset + g.len()).contains(&i) {
                    *v += g[i - offset] * scale;
                }
            }
            for (d, &seed) in dots.iter_mut().zip(direction_seeds) {
                *d += g
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| x * scale * direction_value(seed, param, offset + k))
                    .sum::<f64>();
            }
        };
        let mut delta = dlogits;
        for (l, c) in self.layers.iter().zip(caches).rev() {
            // Through the activation.
            let mut dz = delta;
            if l.act != Activation::Identity {
                dz.zip_mut_with(&c.pre, |d, &z| *d *= l.act.derivative(z));
            }
            if let Some((param, _)) = &l.bias {
                let db = dz.sum_axis(Axis(0));
                record(*param, 0, db.as_slice().expect("contiguous"), &mut acc);
            }
            // Weight gradient and the gradient of the layer input, block by block.
            let mut dnormed = Array2::<f64>::zeros((c.normed.nrows(), l.inp));
            let rows = Model64::rows_per_block(l.inp);
            let mut r0 = 0;
            while r0 < l.out {
                let r1 = (r0 + rows).min(l.out);
                let w = self.weight_block(l, r0, r1, &Perturb::None);
                let dz_block = dz.slice(s![.., r0..r1]);
                let dw = dz_block.t().dot(&c.normed);
                let dw = dw.as_standard_layout();
                record(
                    l.weight_param,
                    r0 * l.inp,
                    dw.as_slice().expect("standard layout"),
                    &mut acc,
                );
                dnormed += &dz_block.dot(&w);
                r0 = r1;
            }
            // Through the RMSNorm: u = x * r * w with r = 1/sqrt(mean(x^2) + eps).
            delta = match &l.norm {
                Some((param, w, _)) => {
                    let n = l.inp as f64;
                    let mut dw = vec![0.0; l.inp];
                    let mut dx = Array2::<f64>::zeros(c.input.raw_dim());
                    for (i, (x, du)) in c
                        .input
                        .axis_iter(Axis(0))
                        .zip(dnormed.axis_iter(Axis(0)))
                        .enumerate()
                    {
                        let r = c.inv_rms[i];
                        let dot: f64 = (0..l.inp).map(|j| du[j] * w[j] * x[j]).sum();
                        for j in 0..l.inp {
                            dw[j] += du[j] * x[j] * r;
                            dx[[i, j]] = r * du[j] * w[j] - x[j] * r * r * r * dot / n;
                        }
                    }
                    record(*param, 0, &dw, &mut acc);
                    dx
                }
                None => dnormed,
            };
        }
        let stats = self
            .params
            .iter()
            .zip(&acc)
            .map(|((name, elements), a)| {
                let n = (*elements).max(1) as f64;
                let mean = a.sum / n;
                TensorGradient {
                    name: name.clone(),
                    elements: *elements,
                    norm: a.sum_sq.sqrt(),
                    variance: (a.sum_sq / n - mean * mean).max(0.0),
                    mean,
                    non_finite: a.non_finite,
                    non_zero: a.non_zero,
                }
            })
            .collect();
        Backward {
            stats,
            sampled: values,
            direction_dots: dots,
        }
    }
}

/// Gradient statistics of every parameter tensor for the mean cross-entropy over `inputs`
/// (`[n, input_dim]`) and `labels`.
pub fn gradient_flow(
    model: &Model64<'_>,
    inputs: ArrayView2<f64>,
    labels: &[usize],
) -> (f64, Vec<TensorGradient>) {
    let (logits, caches) = model.forward(inputs, &Perturb::None, None);
    let (loss, dlogits) = cross_entropy(&logits, labels);
    (loss, model.backward(&caches, dlogits, &[], &[], 1.0).stats)
}

/// Adds `weight` times the gradient of the mean cross-entropy over `inputs`/`labels` with respect
/// to every parameter into `into` (one f64 vector per parameter, sized like
/// [`Model64::params`]); returns the mean cross-entropy. A batch too large for one pass is the
/// sum of its chunks with weights `chunk size / batch size`.
pub fn accumulate_gradient(
    model: &Model64<'_>,
    inputs: ArrayView2<f64>,
    labels: &[usize],
    weight: f64,
    into: &mut [Vec<f64>],
) -> f64 {
    let (logits, caches) = model.forward(inputs, &Perturb::None, None);
    let (loss, dlogits) = cross_entropy(&logits, labels);
    model.backward_into(&caches, dlogits, &[], &[], weight, Some(into));
    loss
}

/// The numeric gradient check on `inputs`/`labels` (a small batch).
pub fn gradient_check(
    model: &Model64<'_>,
    inputs: ArrayView2<f64>,
    labels: &[usize],
    options: &GradCheckOptions,
) -> GradCheckReport {
    let (logits, caches) = model.forward(inputs, &Perturb::None, None);
    let (loss, dlogits) = cross_entropy(&logits, labels);
    let mean_max_logit = logits
        .axis_iter(Axis(0))
        .map(|row| row.iter().fold(0.0f64, |m, v| m.max(v.abs())))
        .sum::<f64>()
        / logits.nrows().max(1) as f64;
    let dot_lengths: u64 = model.layers.iter().map(|l| l.inp as u64).sum();
    let noise = round_off_bound(loss, mean_max_logit, dot_lengths);
    let sampled = sample_coordinates(model, options);
    let h = options.step;
    let loss_at = |p: Perturb| -> (f64, Vec<bool>) {
        let start = model.first_touched(&p);
        let (logits, c) = model.forward(inputs, &p, Some(&caches));
        (
            cross_entropy(&logits, labels).0,
            relu_signs(model, &c, start),
        )
    };
    // Directions first: up to 4 candidates per requested direction, skipping any whose +h and
    // -h passes differ in a ReLU pattern; the backward pass then needs only the chosen ones.
    // A direction moves every parameter at once: scale the step by the direction's expected
    // norm (entries uniform in [-1, 1): |v| ~ sqrt(N / 3)) so the move has length h.
    let total: u64 = model.params.iter().map(|p| p.1).sum();
    let hd = h / ((total as f64 / 3.0).sqrt()).max(1.0);
    let mut excluded_directions = 0;
    let mut directions: Vec<(u64, f64)> = Vec::new();
    for d in 0..options.directions as u64 * 4 {
        if directions.len() == options.directions {
            break;
        }
        let seed = options.seed.wrapping_add(0x5EED_0000 + d);
        let ((plus, s_plus), (minus, s_minus)) = rayon::join(
            || loss_at(Perturb::Direction { seed, scale: hd }),
            || loss_at(Perturb::Direction { seed, scale: -hd }),
        );
        if s_plus == s_minus {
            directions.push((seed, (plus - minus) / (2.0 * hd)));
        } else {
            excluded_directions += 1;
        }
    }
    let seeds: Vec<u64> = directions.iter().map(|d| d.0).collect();
    let back = model.backward(
        &caches,
        dlogits,
        &sampled,
        &seeds,
        options.analytic_gradient_scale,
    );
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
    let consider = |analytic: f64,
                    numeric: f64,
                    step: f64,
                    what: String,
                    report: &mut GradCheckReport| {
        let diff = (analytic - numeric).abs();
        let allowed = options.tolerance * analytic.abs().max(numeric.abs()) + noise / step;
        let ratio = diff / allowed;
        report.max_relative_error = report
            .max_relative_error
            .max(relative_error(analytic, numeric));
        if ratio >= report.error_ratio {
            report.error_ratio = ratio;
            report.worst = format!("{what}: analytic {analytic:.6e}, numeric {numeric:.6e}, difference {diff:.2e} of {allowed:.2e} allowed");
        }
    };
    // Every perturbed pass is independent: run them on all cores.
    let numeric: Vec<Option<f64>> = sampled
        .par_iter()
        .map(|&(param, index)| {
            let (plus, s_plus) = loss_at(Perturb::Coordinate {
                param,
                index,
                delta: h,
            });
            let (minus, s_minus) = loss_at(Perturb::Coordinate {
                param,
                index,
                delta: -h,
            });
            (s_plus == s_minus).then(|| (plus - minus) / (2.0 * h))
        })
        .collect();
    for (&(param, index), numeric) in sampled.iter().zip(numeric) {
        let Some(numeric) = numeric else {
            report.excluded_kinks += 1;
            continue;
        };
        let analytic = back.sampled[&(param, index)];
        report.coordinates += 1;
        consider(
            analytic,
            numeric,
            h,
            format!("{} [{index}]", model.params[param].0),
            &mut report,
        );
    }
    for (d, &(_, numeric)) in directions.iter().enumerate() {
        let analytic = back.direction_dots[d];
        report.directions += 1;
        consider(analytic, numeric, hd, format!("direction {d}"), &mut report);
    }
    report
}

/// The coordinates the gradient check perturbs: `coordinates_per_tensor` distinct indices of
/// each parameter tensor (all of a smaller one), drawn with splitmix64 from the seed.
fn sample_coordinates(model: &Model64<'_>, options: &GradCheckOptions) -> Vec<(usize, usize)> {
    let mut sampled = Vec::new();
    for (param, (_, elements)) in model.params.iter().enumerate() {
        let n = *elements as usize;
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

/// Converts f32 inputs to f64 (exact).
pub fn to_f64(x: ArrayView2<f32>) -> Array2<f64> {
    x.mapv(f64::from)
}
