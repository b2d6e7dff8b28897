//! The FP16 model of a bundle, promoted exactly to f64, with its forward pass and analytic
//! backward pass: what the gradient checks ([`crate::model::gradcheck`]) and the assessment
//! ([`crate::assess`]) differentiate.
//!
//! Weight matrices are never held whole: every pass converts row blocks of the FP16 bytes to
//! f64 on the fly, so memory stays near one block plus the activations of the batch. The
//! backward pass hands each block of each parameter's gradient to a sink, so that its callers
//! reduce it as they need (statistics, sampled entries, dot products, a full copy) without
//! the whole gradient ever being materialised here.

use std::collections::HashMap;

use half::f16;
use ndarray::{s, Array1, Array2, ArrayView2, Axis, CowArray};
use rayon::prelude::*;

use crate::error::Result;
use crate::format::activation::Activation;
use crate::format::manifest::FileRole;
use crate::model::matmul::{dot_t_blocks, product};
use crate::read::Bundle;

/// The shape of a parameter tensor as the model uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamShape {
    /// A layer's weight, `[rows, cols]` = `[out_features, in_features]`.
    Matrix {
        /// Rows (out_features).
        rows: usize,
        /// Columns (in_features).
        cols: usize,
    },
    /// A bias or RMSNorm weight.
    Vector(usize),
}

impl ParamShape {
    /// Number of entries.
    pub fn elements(self) -> usize {
        match self {
            ParamShape::Matrix { rows, cols } => rows * cols,
            ParamShape::Vector(n) => n,
        }
    }
}

/// One parameter tensor of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Tensor name (untrusted: escape before printing).
    pub name: String,
    /// Its shape as the model uses it.
    pub shape: ParamShape,
}

/// One layer of the f64 model: the weight stays as FP16 bytes; small vectors are f64.
pub(crate) struct Layer64<'a> {
    /// The bundle the weight is borrowed from (its pages are released after each block).
    pub(crate) bundle: &'a Bundle,
    pub(crate) weight: &'a [u8],
    pub(crate) weight_param: usize,
    pub(crate) out: usize,
    pub(crate) inp: usize,
    pub(crate) bias: Option<(usize, Vec<f64>)>,
    pub(crate) norm: Option<(usize, Vec<f64>, f64)>,
    pub(crate) act: Activation,
}

/// Activations kept from a forward pass, per layer.
#[derive(Clone)]
pub(crate) struct Cache {
    pub(crate) input: Array2<f64>,
    pub(crate) normed: Array2<f64>,
    pub(crate) inv_rms: Vec<f64>,
    pub(crate) pre: Array2<f64>,
}

/// The FP16 model of a bundle in f64, streamed from the FP16 bytes.
pub struct Model64<'a> {
    pub(crate) layers: Vec<Layer64<'a>>,
    params: Vec<Param>,
}

/// Every F16 bit pattern as f64 (exact): converting a weight block is one lookup per value
/// (converting one value at a time with F16C stalls next to the AVX-512 products: 40 ns a value
/// measured in the streamed decoder, against a few ns alone).
pub(crate) fn f16_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f64()).collect())
}

fn f16_vec64(bytes: &[u8]) -> Vec<f64> {
    crate::format::le::f16s_to_f64(bytes)
}

impl<'a> Model64<'a> {
    /// The bundle's model with the FP16 weights (every F16 value is exact in f64).
    pub fn new(bundle: &'a Bundle) -> Result<Model64<'a>> {
        let m = bundle.manifest();
        let mut params: Vec<Param> = Vec::new();
        let mut index = HashMap::new();
        let mut param = |name: &str, shape: ParamShape| -> usize {
            *index.entry(name.to_string()).or_insert_with(|| {
                params.push(Param {
                    name: name.to_string(),
                    shape,
                });
                params.len() - 1
            })
        };
        let fp16 = |name: &str| {
            bundle
                .fp16_bytes(name)
                .ok_or_else(|| bundle.missing_tensor(FileRole::Fp16, name))
        };
        let mut layers = Vec::new();
        for (i, l) in m.model.layers.iter().enumerate() {
            let (out, inp) = (l.out_features as usize, l.in_features as usize);
            layers.push(Layer64 {
                bundle,
                weight: fp16(&l.weight)?,
                weight_param: param(
                    &l.weight,
                    ParamShape::Matrix {
                        rows: out,
                        cols: inp,
                    },
                ),
                out,
                inp,
                bias: match &l.bias {
                    Some(b) => Some((param(b, ParamShape::Vector(out)), f16_vec64(fp16(b)?))),
                    None => None,
                },
                norm: match &l.rmsnorm {
                    Some(n) => Some((
                        param(&n.weight, ParamShape::Vector(inp)),
                        f16_vec64(fp16(&n.weight)?),
                        n.eps as f64,
                    )),
                    None => None,
                },
                act: bundle.facts().activations[i],
            });
        }
        Ok(Model64 { layers, params })
    }

    /// Parameter tensors, in order of first use.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Rows of a weight block converted at once (about 4 MB of f64).
    pub(crate) fn rows_per_block(inp: usize) -> usize {
        ((1 << 19) / inp.max(1)).max(1)
    }

    /// Rows `r0..r1` of layer `l`'s weight in f64 (their FP16 pages then released: a pass
    /// over the model keeps about one block per thread resident, not the whole file).
    pub(crate) fn weight_block(l: &Layer64<'_>, r0: usize, r1: usize) -> Array2<f64> {
        let bytes = &l.weight[r0 * l.inp * 2..r1 * l.inp * 2];
        let values = f16_vec64(bytes);
        l.bundle.release(bytes);
        Array2::from_shape_vec((r1 - r0, l.inp), values).expect("rows * inp values")
    }

    /// Column `c` of layer `l`'s weight in f64.
    pub(crate) fn weight_column(l: &Layer64<'_>, c: usize) -> Array1<f64> {
        let table = f16_table();
        let column = Array1::from_shape_fn(l.out, |r| {
            let at = 2 * (r * l.inp + c);
            table[usize::from(u16::from_le_bytes([l.weight[at], l.weight[at + 1]]))]
        });
        l.bundle.release(l.weight);
        column
    }

    /// RMSNorm of the rows of `x` with weight `w`: the normed rows and each row's 1 / rms.
    pub(crate) fn rms_norm(x: &Array2<f64>, w: &[f64], eps: f64) -> (Array2<f64>, Vec<f64>) {
        let mut u = x.clone();
        let mut inv = Vec::with_capacity(u.nrows());
        for mut row in u.axis_iter_mut(Axis(0)) {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
            let r = 1.0 / (ms + eps).sqrt();
            inv.push(r);
            row.iter_mut().zip(w).for_each(|(v, &wv)| *v = *v * r * wv);
        }
        (u, inv)
    }

    /// `u W^T` for layer `l`, the weight converted block by block (blocks in parallel).
    pub(crate) fn matmul(l: &Layer64<'_>, u: ArrayView2<f64>) -> Array2<f64> {
        dot_t_blocks(u, l.out, Model64::rows_per_block(l.inp), |r0, r1| {
            CowArray::from(Model64::weight_block(l, r0, r1))
        })
    }

    /// The forward pass over `x`: the logits and every layer's cache.
    pub(crate) fn forward(&self, x: ArrayView2<f64>) -> (Array2<f64>, Vec<Cache>) {
        let mut caches: Vec<Cache> = Vec::with_capacity(self.layers.len());
        let mut h = x.to_owned();
        for l in &self.layers {
            let input = h;
            let (normed, inv_rms) = match &l.norm {
                Some((_, w, eps)) => Model64::rms_norm(&input, w, *eps),
                None => (input.clone(), Vec::new()),
            };
            let mut pre = Model64::matmul(l, normed.view());
            if let Some((_, b)) = &l.bias {
                pre += &ndarray::ArrayView1::from(b.as_slice());
            }
            h = activate_all(pre.view(), l.act);
            caches.push(Cache {
                input,
                normed,
                inv_rms,
                pre,
            });
        }
        (h, caches)
    }

    /// The backward pass from `caches` and the gradient of the loss with respect to the
    /// logits: `sink(param, offset, block)` receives the gradient of entries
    /// `offset..offset + block.len()` of every parameter, block by block (a parameter used by
    /// several layers arrives once per use; the sink adds them up).
    pub(crate) fn backward(
        &self,
        caches: &[Cache],
        dlogits: Array2<f64>,
        sink: &mut dyn FnMut(usize, usize, &[f64]),
    ) {
        let mut delta = dlogits;
        for (l, c) in self.layers.iter().zip(caches).rev() {
            // Through the activation.
            let mut dz = delta;
            if l.act != Activation::Identity {
                dz.zip_mut_with(&c.pre, |d, &z| *d *= l.act.derivative(z));
            }
            if let Some((param, _)) = &l.bias {
                let db = dz.sum_axis(Axis(0));
                sink(*param, 0, db.as_slice().expect("contiguous"));
            }
            // Weight gradient and the gradient of the layer input, block by block: a window of
            // blocks in parallel, then their weight gradients to the sink in order.
            let mut dnormed = Array2::<f64>::zeros((c.normed.nrows(), l.inp));
            let rows = Model64::rows_per_block(l.inp);
            let starts: Vec<usize> = (0..l.out).step_by(rows).collect();
            for window in starts.chunks(2 * rayon::current_num_threads()) {
                let parts: Vec<(Array2<f64>, Array2<f64>)> = window
                    .par_iter()
                    .map(|&r0| {
                        let r1 = (r0 + rows).min(l.out);
                        let dz_block = dz.slice(s![.., r0..r1]);
                        let dw = product(dz_block.t(), c.normed.view());
                        let w = Model64::weight_block(l, r0, r1);
                        (dw, product(dz_block, w.view()))
                    })
                    .collect();
                for (&r0, (dw, dn)) in window.iter().zip(parts) {
                    let dw = dw.as_standard_layout();
                    sink(
                        l.weight_param,
                        r0 * l.inp,
                        dw.as_slice().expect("standard layout"),
                    );
                    dnormed += &dn;
                }
            }
            // Through the RMSNorm: u = x * r * w with r = 1/sqrt(mean(x^2) + eps).
            delta = match &l.norm {
                Some((param, w, _)) => {
                    let (dx, dw) = rms_norm_backward(&c.input, &c.inv_rms, w, &dnormed);
                    sink(*param, 0, &dw);
                    dx
                }
                None => dnormed,
            };
        }
    }
}

/// The backward pass of `u = x * r * w` ([`Model64::rms_norm`], `inv` the rows' r): from the
/// output gradient `du`, the input gradient and the weight's gradient (summed over rows).
pub(crate) fn rms_norm_backward(
    x: &Array2<f64>,
    inv: &[f64],
    w: &[f64],
    du: &Array2<f64>,
) -> (Array2<f64>, Vec<f64>) {
    let n = x.ncols() as f64;
    let mut dw = vec![0.0; x.ncols()];
    let mut dx = Array2::<f64>::zeros(x.raw_dim());
    for (i, (x, du)) in x.axis_iter(Axis(0)).zip(du.axis_iter(Axis(0))).enumerate() {
        let r = inv[i];
        let dot: f64 = (0..x.len()).map(|j| du[j] * w[j] * x[j]).sum();
        for j in 0..x.len() {
            dw[j] += du[j] * x[j] * r;
            dx[[i, j]] = r * du[j] * w[j] - x[j] * r * r * r * dot / n;
        }
    }
    (dx, dw)
}

/// `act` applied to every element.
pub(crate) fn activate_all(pre: ArrayView2<f64>, act: Activation) -> Array2<f64> {
    if act == Activation::Identity {
        pre.to_owned()
    } else {
        pre.mapv(|v| act.apply(v))
    }
}

/// Mean cross-entropy of `logits` against `labels`.
pub(crate) fn mean_cross_entropy(logits: ArrayView2<f64>, labels: &[usize]) -> f64 {
    let n = logits.nrows();
    let loss: f64 = logits
        .axis_iter(Axis(0))
        .zip(labels)
        .map(|(row, &label)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            max + sum.ln() - row[label]
        })
        .sum();
    loss / n as f64
}

/// Mean cross-entropy of `logits` against `labels`, and its gradient with respect to the logits.
pub(crate) fn cross_entropy(logits: &Array2<f64>, labels: &[usize]) -> (f64, Array2<f64>) {
    let n = logits.nrows();
    let mut grad = Array2::<f64>::zeros(logits.raw_dim());
    for (i, row) in logits.axis_iter(Axis(0)).enumerate() {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        let lse = max + sum.ln();
        for (j, v) in row.iter().enumerate() {
            grad[[i, j]] = ((v - lse).exp() - if j == labels[i] { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    (mean_cross_entropy(logits.view(), labels), grad)
}

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

#[derive(Default, Clone, Copy)]
pub(crate) struct Acc {
    sum: f64,
    sum_sq: f64,
    non_finite: u64,
    non_zero: u64,
}

impl Acc {
    /// The statistics of `g`, summed in 8 lanes (which the compiler vectorizes; one running
    /// sum would wait on each addition), the lanes added in a fixed order.
    pub(crate) fn of(g: &[f64]) -> Acc {
        const LANES: usize = 8;
        let (mut sum, mut sum_sq) = ([0f64; LANES], [0f64; LANES]);
        let (mut non_finite, mut non_zero) = ([0u64; LANES], [0u64; LANES]);
        let mut add = |i: usize, x: f64| {
            let finite = x.is_finite();
            let v = if finite { x } else { 0.0 };
            sum[i] += v;
            sum_sq[i] += v * v;
            non_finite[i] += u64::from(!finite);
            non_zero[i] += u64::from(x != 0.0);
        };
        let mut chunks = g.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (i, &x) in chunk.iter().enumerate() {
                add(i, x);
            }
        }
        for (i, &x) in chunks.remainder().iter().enumerate() {
            add(i, x);
        }
        Acc {
            sum: sum.iter().sum(),
            sum_sq: sum_sq.iter().sum(),
            non_finite: non_finite.iter().sum(),
            non_zero: non_zero.iter().sum(),
        }
    }

    /// Adds `other`'s entries to these.
    pub(crate) fn add(&mut self, other: &Acc) {
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.non_finite += other.non_finite;
        self.non_zero += other.non_zero;
    }
}

/// `Σ a[i] b[i]` in 8 lanes (vectorized), the lanes added in a fixed order.
pub(crate) fn dot_lanes(a: &[f64], b: &[f64]) -> f64 {
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    acc.iter().sum()
}

/// Entries of a gradient block a sink reduces on one thread (the blocks of a large layer are
/// split so that every thread takes part).
pub(crate) const SINK_CHUNK: usize = 1 << 15;

/// Gradient statistics of every parameter tensor for the mean cross-entropy over `inputs`
/// (`[n, input_dim]`) and `labels`.
pub fn gradient_flow(
    model: &Model64<'_>,
    inputs: ArrayView2<f64>,
    labels: &[usize],
) -> (f64, Vec<TensorGradient>) {
    let (logits, caches) = model.forward(inputs);
    let (loss, dlogits) = cross_entropy(&logits, labels);
    let mut acc = vec![Acc::default(); model.params.len()];
    model.backward(&caches, dlogits, &mut |param, _, g| {
        // Chunks on all threads, added up in order (the same sums on every run).
        let parts: Vec<Acc> = g.par_chunks(SINK_CHUNK).map(Acc::of).collect();
        parts.iter().for_each(|p| acc[param].add(p));
    });
    let stats = model
        .params
        .iter()
        .zip(&acc)
        .map(|(p, a)| TensorGradient::from_acc(&p.name, p.shape.elements() as u64, a))
        .collect();
    (loss, stats)
}

impl TensorGradient {
    /// The statistics of tensor `name`'s whole gradient `g`.
    pub(crate) fn of(name: &str, g: &[f64]) -> TensorGradient {
        let parts: Vec<Acc> = g.par_chunks(SINK_CHUNK).map(Acc::of).collect();
        let mut acc = Acc::default();
        parts.iter().for_each(|p| acc.add(p));
        TensorGradient::from_acc(name, g.len() as u64, &acc)
    }

    pub(crate) fn from_acc(name: &str, elements: u64, a: &Acc) -> TensorGradient {
        let n = elements.max(1) as f64;
        let mean = a.sum / n;
        TensorGradient {
            name: name.to_string(),
            elements,
            norm: a.sum_sq.sqrt(),
            variance: (a.sum_sq / n - mean * mean).max(0.0),
            mean,
            non_finite: a.non_finite,
            non_zero: a.non_zero,
        }
    }
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
    let (logits, caches) = model.forward(inputs);
    let (loss, dlogits) = cross_entropy(&logits, labels);
    model.backward(&caches, dlogits, &mut |param, offset, g| {
        if let Some(dst) = into
            .get_mut(param)
            .and_then(|v| v.get_mut(offset..offset + g.len()))
        {
            dst.iter_mut().zip(g).for_each(|(d, &x)| *d += x * weight);
        }
    });
    loss
}

/// Converts f32 inputs to f64 (exact).
pub fn to_f64(x: ArrayView2<f32>) -> Array2<f64> {
    x.mapv(f64::from)
}
