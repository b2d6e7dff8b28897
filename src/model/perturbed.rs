//! Central differences of the loss for many perturbations of the parameters at once: the
//! numeric side of the gradient check ([`crate::model::gradcheck`]).
//!
//! Each perturbation is evaluated at +step and -step. Both copies reuse the unperturbed
//! activations (the caches of one forward pass) up to the first layer the perturbation
//! touches, and carry from there only how they differ from them:
//! - a changed weight entry W[r, k] or bias entry b[r] changes one column of the layer's
//!   pre-activation (by step * u[:, k], or step), and so one column of its output;
//! - an input that differs in one column j reaches the next pre-activation as a rank-1 term,
//!   delta ⊗ W[:, j], without a matmul (unless an RMSNorm mixes the columns first);
//! - every other copy has a dense input, and all of them go through the layer in one matmul,
//!   its weights converted from FP16 once.
//!
//! A random direction moves each weight matrix by a rank-1 matrix a b^T, so its effect on a
//! layer is a rank-1 term too: step * (u b) ⊗ a. A perturbation is excluded (a kink) when some ReLU pre-activation has a different sign in the
//! two copies; its central difference is then meaningless.

use ndarray::{concatenate, s, Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::format::activation::Activation;
use crate::model::chunks::MAX_BATCH_ELEMENTS;
use crate::model::direction::{DirPart, Direction};
use crate::model::model64::{activate_all, mean_cross_entropy, Cache, Layer64, Model64};

/// A perturbation of the parameters, applied with a signed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// One entry of one parameter tensor.
    Coordinate {
        /// The parameter (index into [`Model64::params`]).
        param: usize,
        /// The entry (row-major).
        index: usize,
    },
    /// A direction over all parameters (index into the directions).
    Direction(usize),
}

impl Move {
    fn touches(self, param: usize) -> bool {
        match self {
            Move::Coordinate { param: p, .. } => p == param,
            Move::Direction(_) => true,
        }
    }
}

/// How a perturbed copy's layer input (or normed input) differs from the unperturbed one.
enum Delta {
    /// Not at all.
    Same,
    /// In column `.0` only, by `.1` (one value per batch row).
    Column(usize, Array1<f64>),
    /// Anywhere: the copy's whole matrix.
    Dense(Array2<f64>),
}

/// One perturbation, its two copies (+step, -step) and what they have given so far.
struct Pair {
    mv: Move,
    step: f64,
    first: usize,
    inputs: [Delta; 2],
    kink: bool,
    losses: [f64; 2],
}

/// For each `(move, step)`, (L(θ + step·v) − L(θ − step·v)) / (2·step), or `None` when a ReLU
/// pre-activation changes sign between the two (a kink). `caches` are the unperturbed forward
/// pass over the batch whose labels are `labels`.
pub(crate) fn central_differences(
    model: &Model64<'_>,
    caches: &[Cache],
    labels: &[usize],
    moves: &[(Move, f64)],
    directions: &[Direction],
) -> Vec<Option<f64>> {
    // Copies of a group share each layer's matmul; groups bound the memory they hold.
    let batch = caches.first().map_or(0, |c| c.input.nrows()).max(1) as u64;
    let widest = model
        .layers
        .iter()
        .map(|l| l.inp.max(l.out) as u64)
        .max()
        .unwrap_or(1);
    let per_group = (MAX_BATCH_ELEMENTS / (2 * batch * widest).max(1)).max(1) as usize;
    let mut out = Vec::with_capacity(moves.len());
    for group in moves.chunks(per_group) {
        let mut pairs: Vec<Pair> = group
            .iter()
            .map(|&(mv, step)| Pair {
                mv,
                step,
                first: first_touched(model, mv),
                inputs: [Delta::Same, Delta::Same],
                kink: false,
                losses: [0.0; 2],
            })
            .collect();
        for (l, (layer, cache)) in model.layers.iter().zip(caches).enumerate() {
            step_layer(model, l, layer, cache, &mut pairs, directions, labels);
        }
        out.extend(pairs.iter().map(|p| {
            (!p.kink && p.first < model.layers.len())
                .then(|| (p.losses[0] - p.losses[1]) / (2.0 * p.step))
        }));
    }
    out
}

/// The first layer whose parameters `mv` changes (the number of layers if none).
fn first_touched(model: &Model64<'_>, mv: Move) -> usize {
    model
        .layers
        .iter()
        .position(|l| {
            mv.touches(l.weight_param)
                || l.bias.as_ref().is_some_and(|b| mv.touches(b.0))
                || l.norm.as_ref().is_some_and(|n| mv.touches(n.0))
        })
        .unwrap_or(model.layers.len())
}

/// Moves every active copy through layer `l`.
fn step_layer(
    model: &Model64<'_>,
    l: usize,
    layer: &Layer64<'_>,
    cache: &Cache,
    pairs: &mut [Pair],
    directions: &[Direction],
    labels: &[usize],
) {
    let last = l + 1 == model.layers.len();
    let active: Vec<usize> = (0..pairs.len())
        .filter(|&i| !pairs[i].kink && pairs[i].first <= l)
        .collect();
    // The normed input of every active copy, as a difference from the unperturbed one.
    let mut normed: Vec<Delta> = Vec::with_capacity(2 * active.len());
    for &i in &active {
        let p = &mut pairs[i];
        for (k, sign) in [1.0, -1.0].into_iter().enumerate() {
            let input = std::mem::replace(&mut p.inputs[k], Delta::Same);
            normed.push(normed_delta(
                layer,
                cache,
                p.mv,
                sign * p.step,
                input,
                directions,
            ));
        }
    }
    // One matmul for every dense copy.
    let dense: Vec<ArrayView2<f64>> = normed
        .iter()
        .filter_map(|d| match d {
            Delta::Dense(u) => Some(u.view()),
            _ => None,
        })
        .collect();
    let mut dense_pre = if dense.is_empty() {
        None
    } else {
        let stacked = concatenate(Axis(0), &dense).expect("copies share the width");
        let mut pre = Model64::matmul(layer, stacked.view());
        if let Some((_, b)) = &layer.bias {
            pre += &ArrayView1::from(b.as_slice());
        }
        Some((pre, 0usize))
    };
    let rows = cache.pre.nrows();
    for (n, &i) in active.iter().enumerate() {
        let p = &mut pairs[i];
        let mut pres = Vec::with_capacity(2);
        for (k, sign) in [1.0, -1.0].into_iter().enumerate() {
            let u = &normed[2 * n + k];
            let mut pre = match u {
                Delta::Same => cache.pre.clone(),
                Delta::Column(j, dv) => {
                    let column = Model64::weight_column(layer, *j);
                    &cache.pre + &outer(dv.view(), column.view())
                }
                Delta::Dense(_) => {
                    let (all, at) = dense_pre.as_mut().expect("dense copies were multiplied");
                    let pre = all.slice(s![*at..*at + rows, ..]).to_owned();
                    *at += rows;
                    pre
                }
            };
            own_layer_move(layer, cache, p.mv, sign * p.step, u, directions, &mut pre);
            pres.push(pre);
        }
        if layer.act == Activation::Relu
            && pres[0]
                .iter()
                .zip(pres[1].iter())
                .any(|(a, b)| (*a > 0.0) != (*b > 0.0))
        {
            p.kink = true;
            continue;
        }
        for (k, pre) in pres.into_iter().enumerate() {
            if last {
                p.losses[k] =
                    mean_cross_entropy(activate_all(pre.view(), layer.act).view(), labels);
                continue;
            }
            // A copy whose normed input was unchanged and whose own change is one weight or
            // bias entry of row r differs from the unperturbed output in column r only.
            let row = match (&normed[2 * n + k], p.mv) {
                (Delta::Same, Move::Coordinate { param, index }) if param == layer.weight_param => {
                    Some(index / layer.inp)
                }
                (Delta::Same, Move::Coordinate { param, index })
                    if layer.bias.as_ref().is_some_and(|b| b.0 == param) =>
                {
                    Some(index)
                }
                _ => None,
            };
            p.inputs[k] = match row {
                Some(r) => {
                    let new = pre.column(r).mapv(|v| layer.act.apply(v));
                    let old = cache.pre.column(r).mapv(|v| layer.act.apply(v));
                    Delta::Column(r, new - old)
                }
                None => Delta::Dense(activate_all(pre.view(), layer.act)),
            };
        }
    }
}

/// A copy's normed input at a layer, from its input and the layer's (perhaps moved) RMSNorm
/// weight.
fn normed_delta(
    layer: &Layer64<'_>,
    cache: &Cache,
    mv: Move,
    dv: f64,
    input: Delta,
    directions: &[Direction],
) -> Delta {
    let Some((param, w, eps)) = &layer.norm else {
        return input;
    };
    let touched = mv.touches(*param);
    let moved_w = || -> Vec<f64> {
        let mut w = w.clone();
        if touched {
            match mv {
                Move::Coordinate { index, .. } => w[index] += dv,
                Move::Direction(d) => {
                    if let DirPart::Vector(v) = &directions[d].parts[*param] {
                        w.iter_mut().zip(v).for_each(|(x, y)| *x += dv * y);
                    }
                }
            }
        }
        w
    };
    match input {
        Delta::Same if !touched => Delta::Same,
        // normed_j = x_j * r * (w_j + dv): one column moves by dv * x_j * r.
        Delta::Same => match mv {
            Move::Coordinate { index: j, .. } => {
                let r = ArrayView1::from(cache.inv_rms.as_slice());
                Delta::Column(j, &cache.input.column(j) * &r * dv)
            }
            Move::Direction(_) => Delta::Dense(Model64::rms_norm(&cache.input, &moved_w(), *eps).0),
        },
        Delta::Column(j, dx) => {
            let mut x = cache.input.clone();
            let mut column = x.column_mut(j);
            column += &dx;
            Delta::Dense(Model64::rms_norm(&x, &moved_w(), *eps).0)
        }
        Delta::Dense(h) => Delta::Dense(Model64::rms_norm(&h, &moved_w(), *eps).0),
    }
}

/// Adds what the move does to this layer's own weight and bias to a copy's pre-activation
/// (`u` is the copy's normed input).
fn own_layer_move(
    layer: &Layer64<'_>,
    cache: &Cache,
    mv: Move,
    dv: f64,
    u: &Delta,
    directions: &[Direction],
    pre: &mut Array2<f64>,
) {
    let bias = layer.bias.as_ref().map(|b| b.0);
    match mv {
        Move::Coordinate { param, index } if param == layer.weight_param => {
            let (r, k) = (index / layer.inp, index % layer.inp);
            let mut column = cache.normed.column(k).to_owned();
            match u {
                Delta::Same => {}
                Delta::Column(j, dx) if *j == k => column += dx,
                Delta::Column(..) => {}
                Delta::Dense(m) => column.assign(&m.column(k)),
            }
            let mut target = pre.column_mut(r);
            target.scaled_add(dv, &column);
        }
        Move::Coordinate { param, index } if Some(param) == bias => {
            pre.column_mut(index).mapv_inplace(|v| v + dv);
        }
        Move::Coordinate { .. } => {}
        Move::Direction(d) => {
            let parts = &directions[d].parts;
            if let DirPart::Matrix { a, b } = &parts[layer.weight_param] {
                let b = ArrayView1::from(b.as_slice());
                let ub = match u {
                    Delta::Same => cache.normed.dot(&b),
                    Delta::Column(j, dx) => cache.normed.dot(&b) + &(dx * b[*j]),
                    Delta::Dense(m) => m.dot(&b),
                };
                pre.scaled_add(dv, &outer(ub.view(), ArrayView1::from(a.as_slice())));
            }
            if let Some(DirPart::Vector(db)) = bias.map(|p| &parts[p]) {
                pre.scaled_add(dv, &ArrayView1::from(db.as_slice()));
            }
        }
    }
}

/// The outer product x y^T.
fn outer(x: ArrayView1<f64>, y: ArrayView1<f64>) -> Array2<f64> {
    Array2::from_shape_fn((x.len(), y.len()), |(i, j)| x[i] * y[j])
}
