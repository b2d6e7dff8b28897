//! The gradient checks of a decoder too large to hold in f64 (more than
//! [`MAX_IN_MEMORY_PARAMETERS`]): the same f64 forward and backward passes as [`Decoder64`],
//! with every matrix read from the bundle's FP16 file a block of rows at a time inside the
//! products (converted exactly: every F16 value is an f64), its pages released after. Nothing
//! the size of the model is held: the backward pass hands each weight's gradient `dyᵀ x`, a
//! block of rows at a time, to a reducer that keeps what the checks need (the sampled
//! entries, the dot product with each direction, the flow statistics) and drops the rest.
//!
//! What is checked, on one sequence (spec section 16.1): sampled entries of every tensor of the
//! last layer, of the embedding (in rows the sequence looks up), the final norm and an untied
//! head, so that every kind of tensor is probed (`bundle verify` takes one of each); their central differences rerun only the
//! layers from the perturbed one on (the residual stream entering each layer is kept from the
//! first pass). Directions move every parameter at once: rank-1 (a bᵀ) for a matrix, a random
//! vector for a norm, so a direction costs two vectors per tensor. Gradient flow's statistics
//! come from the same backward pass.
//!
//! [`Decoder64`]: crate::model::decoder64::Decoder64
//! [`MAX_IN_MEMORY_PARAMETERS`]: crate::model::decoder64::MAX_IN_MEMORY_PARAMETERS

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, CowArray, Ix2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::decoder::DecoderSpec;
use crate::format::manifest::FileRole;
use crate::model::decoder::{head_name, token_ids, Family};
use crate::model::decoder64::{
    activation, attention, backward_sequence, forward_sequence, lcg, rope, DecoderGradCheckOptions,
    DecoderGradCheckReport, GradSink, Weights64,
};
use crate::model::matmul::{dot_t_blocks, product};
use crate::model::model64::{
    cross_entropy, dot_lanes, mean_cross_entropy, Acc, Model64, TensorGradient,
};
use crate::read::Bundle;

/// A random direction's part in one tensor (viewed as `[rows, cols]`; a vector is one row).
enum Part {
    /// The matrix a bᵀ.
    Rank1 { a: Vec<f64>, b: Vec<f64> },
    /// A vector.
    Vector(Vec<f64>),
}

impl Part {
    fn at(&self, r: usize, c: usize) -> f64 {
        match self {
            Part::Rank1 { a, b } => a[r] * b[c],
            Part::Vector(v) => v[c],
        }
    }

    fn norm_sq(&self) -> f64 {
        let sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
        match self {
            Part::Rank1 { a, b } => sq(a) * sq(b),
            Part::Vector(v) => sq(v),
        }
    }

    /// Σ g[r, c] · at(first + r, c) over the rows of `g`.
    fn dot(&self, first: usize, g: ArrayView2<f64>) -> f64 {
        match self {
            Part::Rank1 { a, b } => g
                .rows()
                .into_iter()
                .enumerate()
                .map(|(r, row)| {
                    a[first + r]
                        * match row.as_slice() {
                            Some(row) => dot_lanes(row, b),
                            None => row.iter().zip(b).map(|(x, y)| x * y).sum::<f64>(),
                        }
                })
                .sum(),
            Part::Vector(v) => g.iter().zip(v).map(|(x, y)| x * y).sum(),
        }
    }
}

/// What a perturbed copy of the model adds to the weights.
#[derive(Clone, Copy)]
enum Perturbation<'a> {
    /// `delta` added to flat entry `index` of tensor `name`.
    Entry {
        name: &'a str,
        index: usize,
        delta: f64,
    },
    /// `scale` times a direction.
    Direction {
        parts: &'a HashMap<String, Part>,
        scale: f64,
    },
}

/// A bundle's FP16 decoder in f64, each tensor converted when read.
struct Streamed<'a> {
    bundle: &'a Bundle,
    shapes: &'a HashMap<String, (usize, usize)>,
}

impl Streamed<'_> {
    /// Rows `rows` of tensor `name` (viewed as `[rows, cols]`) in f64.
    fn load(&self, name: &str, rows: std::ops::Range<usize>) -> Result<Array2<f64>> {
        let &(_, cols) = self.shapes.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: no tensor {name}", self.bundle.dir().display()))
        })?;
        let bytes = self
            .bundle
            .fp16_bytes(name)
            .ok_or_else(|| self.bundle.missing_tensor(FileRole::Fp16, name))?;
        let part = &bytes[2 * rows.start * cols..2 * rows.end * cols];
        let mut out = Array2::<f64>::zeros((rows.len(), cols));
        // Half's slice conversion (F16C, 8 values an instruction, then to f64: exact).
        crate::format::le::f16s_into(
            part,
            out.as_slice_mut().expect("standard layout"),
            half::slice::HalfFloatSliceExt::convert_to_f64_slice,
        );
        self.bundle.release(part);
        Ok(out)
    }

    fn rows_of(&self, name: &str) -> usize {
        self.shapes.get(name).map_or(0, |s| s.0)
    }
}

impl Weights64 for Streamed<'_> {
    fn matrix(&self, name: &str) -> Result<CowArray<'_, f64, Ix2>> {
        Ok(CowArray::from(self.load(name, 0..self.rows_of(name))?))
    }

    fn vector(&self, name: &str) -> Result<Cow<'_, [f64]>> {
        Ok(Cow::Owned(
            self.load(name, 0..1)?.into_raw_vec_and_offset().0,
        ))
    }

    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f64>> {
        let cols = self.shapes.get(name).map_or(0, |s| s.1);
        let mut out = Array2::<f64>::zeros((ids.len(), cols));
        for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
            row.assign(&self.load(name, id..id + 1)?.row(0));
        }
        Ok(out)
    }

    /// `x W^T`, W converted a block of rows at a time inside the product.
    fn linear(&self, name: &str, x: &Array2<f64>) -> Result<Array2<f64>> {
        let rows = self.rows_of(name);
        let cols = self.shapes.get(name).map_or(1, |s| s.1).max(1);
        let failed = std::sync::Mutex::new(None);
        let y = dot_t_blocks(x.view(), rows, block_rows(cols), |r0, r1| {
            match self.load(name, r0..r1) {
                Ok(w) => CowArray::from(w),
                Err(e) => {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    CowArray::from(Array2::zeros((r1 - r0, x.ncols())))
                }
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(y),
        }
    }

    /// `dy W` = Σ over blocks of rows of W of `dy[:, block] W_block`, the blocks on all
    /// threads and added in order.
    fn linear_t(&self, name: &str, dy: &Array2<f64>) -> Result<Array2<f64>> {
        let rows = self.rows_of(name);
        let cols = self.shapes.get(name).map_or(1, |s| s.1).max(1);
        let block = block_rows(cols);
        let starts: Vec<usize> = (0..rows).step_by(block).collect();
        let parts: Vec<Result<Array2<f64>>> = starts
            .par_iter()
            .map(|&r0| {
                let r1 = (r0 + block).min(rows);
                let w = self.load(name, r0..r1)?;
                Ok(product(dy.slice(s![.., r0..r1]), w.view()))
            })
            .collect();
        let mut out = Array2::<f64>::zeros((dy.nrows(), cols));
        for part in parts {
            out += &part?;
        }
        Ok(out)
    }
}

/// Rows of a weight converted at once: about 2^20 values (8 MB of f64).
fn block_rows(cols: usize) -> usize {
    ((1 << 20) / cols.max(1)).max(1)
}

/// What the checks keep of a block of a gradient.
#[derive(Default)]
struct Partial {
    acc: Acc,
    /// (index into the probed entries, value).
    values: Vec<(usize, f64)>,
    /// Per direction, the block's part of the dot product.
    dots: Vec<f64>,
}

/// Keeps of each tensor's gradient what the checks need, as the backward pass produces it.
/// Rows of the embedding that get two contributions (the lookup, and the tied head) are held
/// until both are in; every other entry is reduced once.
struct Reducer<'a> {
    shapes: &'a HashMap<String, (usize, usize)>,
    coordinates: &'a [(String, usize)],
    directions: &'a [HashMap<String, Part>],
    held: HashMap<usize, Vec<f64>>,
    acc: HashMap<String, Acc>,
    values: Vec<f64>,
    dots: Vec<f64>,
}

const EMBEDDING: &str = "model.embed_tokens.weight";

impl Reducer<'_> {
    /// The checks' figures of rows `first..` of tensor `name`'s gradient, `g`.
    fn partial(&self, name: &str, first: usize, g: ArrayView2<f64>) -> Partial {
        let cols = g.ncols().max(1);
        let acc = match g.as_slice() {
            Some(flat) => Acc::of(flat),
            None => Acc::of(&g.iter().copied().collect::<Vec<_>>()),
        };
        let values = self
            .coordinates
            .iter()
            .enumerate()
            .filter(|(_, (n, i))| n == name && (first..first + g.nrows()).contains(&(i / cols)))
            .map(|(k, (_, i))| (k, g[[i / cols - first, i % cols]]))
            .collect();
        let dots = self
            .directions
            .iter()
            .map(|parts| parts.get(name).map_or(0.0, |p| p.dot(first, g)))
            .collect();
        Partial { acc, values, dots }
    }

    fn merge(&mut self, name: &str, p: Partial) {
        self.acc.entry(name.to_string()).or_default().add(&p.acc);
        for (k, v) in p.values {
            self.values[k] = v;
        }
        for (d, v) in p.dots.into_iter().enumerate() {
            self.dots[d] += v;
        }
    }

    /// Reduces rows `first..` of the embedding's gradient, `g`, except the held rows, which
    /// are added to what they hold.
    fn take_embedding(&mut self, first: usize, mut g: Array2<f64>) {
        for (i, mut row) in g.rows_mut().into_iter().enumerate() {
            if let Some(h) = self.held.get_mut(&(first + i)) {
                h.iter_mut().zip(row.iter()).for_each(|(a, b)| *a += b);
                row.fill(0.0);
            }
        }
        let p = self.partial(EMBEDDING, first, g.view());
        self.merge(EMBEDDING, p);
    }

    /// Reduces the held rows (call once, after the backward pass).
    fn finish(&mut self) {
        let mut rows: Vec<(usize, Vec<f64>)> = self.held.drain().collect();
        rows.sort_by_key(|(r, _)| *r);
        for (r, v) in rows {
            let n = v.len();
            let g = ArrayView2::from_shape((1, n), &v).expect("one row");
            let p = self.partial(EMBEDDING, r, g);
            self.merge(EMBEDDING, p);
        }
    }
}

impl GradSink for Reducer<'_> {
    fn add(&mut self, name: &str, first: usize, g: ArrayView2<f64>) {
        if name == EMBEDDING {
            return self.take_embedding(first, g.to_owned());
        }
        let p = self.partial(name, first, g);
        self.merge(name, p);
    }

    fn add_rows(&mut self, name: &str, ids: &[usize], g: ArrayView2<f64>) {
        let cols = self.shapes.get(name).map_or(0, |s| s.1);
        for (row, &id) in g.rows().into_iter().zip(ids) {
            let h = self.held.entry(id).or_insert_with(|| vec![0.0; cols]);
            h.iter_mut().zip(row.iter()).for_each(|(a, b)| *a += b);
        }
    }

    /// `dy^T x` a block of rows at a time, the blocks' figures computed on all threads and
    /// merged in order; held embedding rows go to what they hold.
    fn add_outer(&mut self, name: &str, dy: &Array2<f64>, x: &Array2<f64>) {
        let (rows, cols) = (dy.ncols(), x.ncols());
        let block = block_rows(cols);
        let starts: Vec<usize> = (0..rows).step_by(block).collect();
        if name == EMBEDDING {
            for &r0 in &starts {
                let r1 = (r0 + block).min(rows);
                self.take_embedding(r0, product(dy.slice(s![.., r0..r1]).t(), x.view()));
            }
            return;
        }
        let this = &*self;
        let parts: Vec<Partial> = starts
            .par_iter()
            .map(|&r0| {
                let r1 = (r0 + block).min(rows);
                let g = product(dy.slice(s![.., r0..r1]).t(), x.view());
                this.partial(name, r0, g.view())
            })
            .collect();
        for p in parts {
            self.merge(name, p);
        }
    }
}

/// What [`streamed_gradient_check`] found: the check, and gradient flow's statistics from the
/// same backward pass.
#[derive(Debug, Clone)]
pub struct StreamedReport {
    /// The gradient check.
    pub check: DecoderGradCheckReport,
    /// Per tensor, in the order of [`DecoderSpec::tensors`], its gradient's statistics.
    pub flow: Vec<TensorGradient>,
}

/// The gradient checks of the bundle's FP16 decoder on the one sequence `ids` (T >= 2 tokens),
/// streamed (module docs): `options.per_tensor` entries of each tensor of the last layer, of
/// the embedding, the final norm and an untied head; `options.directions` directions.
pub fn streamed_gradient_check(
    bundle: &Bundle,
    ids: &[i64],
    options: &DecoderGradCheckOptions,
) -> Result<StreamedReport> {
    let spec = bundle.decoder().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: the bundle holds a chain of layers, not a decoder",
            bundle.dir().display()
        ))
    })?;
    let ids = ArrayView2::from_shape((1, ids.len()), ids)
        .map_err(|e| Error::InvalidArgument(format!("input_ids: {e}")))?;
    let seq = token_ids(spec, ids)?;
    let t = seq.len();
    if t < 2 {
        return Err(Error::InvalidArgument(format!(
            "input_ids: expected a sequence of at least 2 tokens (one to predict), found T = {t}"
        )));
    }
    let tensors = spec.tensors();
    let shapes: HashMap<String, (usize, usize)> = tensors
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                (if s.len() == 2 { s[0] } else { 1 }, *s.last().unwrap_or(&1)),
            )
        })
        .collect();
    let mut next = lcg(options.seed);
    let coordinates = probed_entries(spec, &tensors, &seq, options.per_tensor, &mut next);
    let uniform = |next: &mut dyn FnMut() -> u64, n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| (next() as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
            .collect()
    };
    let directions: Vec<HashMap<String, Part>> = (0..options.directions)
        .map(|_| {
            tensors
                .iter()
                .map(|(name, s)| {
                    let part = if s.len() == 2 {
                        Part::Rank1 {
                            a: uniform(&mut next, s[0]),
                            b: uniform(&mut next, s[1]),
                        }
                    } else {
                        Part::Vector(uniform(&mut next, s[0]))
                    };
                    (name.clone(), part)
                })
                .collect()
        })
        .collect();
    let targets = &seq[1..];

    // The pass every check starts from: loss, and the gradient reduced as it is produced.
    let base = Streamed {
        bundle,
        shapes: &shapes,
    };
    let pass = forward_sequence(spec, &base, &seq, None)?;
    let (loss, g) = cross_entropy(&pass.logits.slice(s![..t - 1, ..]).to_owned(), targets);
    let mut dlogits = Array2::<f64>::zeros(pass.logits.raw_dim());
    dlogits.slice_mut(s![..t - 1, ..]).assign(&g);
    let lookups: HashSet<usize> = seq.iter().copied().collect();
    let mut reducer = Reducer {
        shapes: &shapes,
        coordinates: &coordinates,
        directions: &directions,
        held: lookups
            .iter()
            .map(|&r| (r, vec![0.0; spec.hidden_size]))
            .collect(),
        acc: HashMap::new(),
        values: vec![0.0; coordinates.len()],
        dots: vec![0.0; directions.len()],
    };
    backward_sequence(
        spec,
        &base,
        &seq,
        &pass,
        dlogits,
        &options.hooks,
        &mut reducer,
    )?;
    reducer.finish();

    let mut report = DecoderGradCheckReport::new(spec, t, loss);
    let h = options.step;
    let layers = spec.num_hidden_layers;
    // Every perturbed loss at once (see `perturbed_losses`): each probed entry at +h and -h,
    // from the layer it belongs to (the final norm and the head: after the last layer; the
    // embedding: from the start), then each direction at +step and -step, from the start.
    let steps: Vec<f64> = directions
        .iter()
        .map(|parts| h / parts.values().map(Part::norm_sq).sum::<f64>().sqrt())
        .collect();
    let mut streams = Vec::with_capacity(2 * (coordinates.len() + directions.len()));
    for (name, index) in &coordinates {
        let start = match layer_of(name) {
            Some(l) => l,
            None if name == EMBEDDING => 0,
            None => layers,
        };
        for delta in [h, -h] {
            streams.push(Stream {
                start,
                perturbation: Perturbation::Entry {
                    name,
                    index: *index,
                    delta,
                },
            });
        }
    }
    for (parts, &step) in directions.iter().zip(&steps) {
        for scale in [step, -step] {
            streams.push(Stream {
                start: 0,
                perturbation: Perturbation::Direction { parts, scale },
            });
        }
    }
    let losses = perturbed_losses(spec, &base, &seq, &pass.inputs, &streams)?;
    for (k, (name, index)) in coordinates.iter().enumerate() {
        let numeric = (losses[2 * k] - losses[2 * k + 1]) / (2.0 * h);
        report.consider(
            options.tolerance,
            reducer.values[k],
            numeric,
            h,
            format!("{name} [{index}]"),
        );
        report.coordinates += 1;
    }
    let first = 2 * coordinates.len();
    for (d, &step) in steps.iter().enumerate() {
        let numeric = (losses[first + 2 * d] - losses[first + 2 * d + 1]) / (2.0 * step);
        report.consider(
            options.tolerance,
            reducer.dots[d],
            numeric,
            step,
            format!("direction {d}"),
        );
        report.directions += 1;
    }
    let flow = tensors
        .iter()
        .map(|(name, s)| {
            let a = reducer.acc.get(name).copied().unwrap_or_default();
            TensorGradient::from_acc(name, s.iter().product::<usize>() as u64, &a)
        })
        .collect();
    Ok(StreamedReport {
        check: report,
        flow,
    })
}

/// The layer of `model.layers.{l}.…`, if the name is a layer's.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split_once('.')?
        .0
        .parse()
        .ok()
}

/// The entries probed: `per_tensor` of each tensor of the last layer, of the final norm and of
/// an untied head (uniform), and of the embedding (in rows the sequence looks up).
fn probed_entries(
    spec: &DecoderSpec,
    tensors: &[(String, Vec<usize>)],
    seq: &[usize],
    per_tensor: usize,
    next: &mut dyn FnMut() -> u64,
) -> Vec<(String, usize)> {
    let last = spec.num_hidden_layers - 1;
    let mut out = Vec::new();
    for (name, shape) in tensors {
        let probed = layer_of(name) == Some(last)
            || name == "model.norm.weight"
            || (name == head_name(spec) && name != EMBEDDING);
        let n: usize = shape.iter().product();
        for _ in 0..per_tensor {
            if name == EMBEDDING {
                let row = seq[(next() % seq.len() as u64) as usize];
                let col = (next() % spec.hidden_size as u64) as usize;
                out.push((name.clone(), row * spec.hidden_size + col));
            } else if probed {
                out.push((name.clone(), (next() % n as u64) as usize));
            }
        }
    }
    out
}

/// One perturbed copy of the model in [`perturbed_losses`]: where its pass begins (layer
/// `start`; the number of layers: at the final norm) and what it adds to the weights.
struct Stream<'a> {
    start: usize,
    perturbation: Perturbation<'a>,
}

impl Stream<'_> {
    /// The perturbed vector `name`: `base` plus this stream's part of it.
    fn vector(&self, name: &str, base: &[f64]) -> Vec<f64> {
        let mut w = base.to_vec();
        match self.perturbation {
            Perturbation::Entry {
                name: n,
                index,
                delta,
            } if n == name && index < w.len() => w[index] += delta,
            Perturbation::Direction { parts, scale } => {
                if let Some(p) = parts.get(name) {
                    w.iter_mut()
                        .enumerate()
                        .for_each(|(c, v)| *v += scale * p.at(0, c));
                }
            }
            _ => {}
        }
        w
    }

    /// Adds what this stream's perturbation of matrix `name` (`cols` columns) adds to
    /// `y = x Wᵀ`: an entry (r, c) moved by δ adds δ x[:, c] to column r; a direction s a bᵀ
    /// adds s (x b) aᵀ. The same sums as `x (W + P)ᵀ`, without a perturbed copy of W.
    fn correct(&self, name: &str, cols: usize, x: ArrayView2<f64>, mut y: ArrayViewMut2<f64>) {
        match self.perturbation {
            Perturbation::Entry {
                name: n,
                index,
                delta,
            } if n == name => {
                let (r, c) = (index / cols.max(1), index % cols.max(1));
                let mut col = y.column_mut(r);
                col.zip_mut_with(&x.column(c), |v, &xc| *v += delta * xc);
            }
            Perturbation::Direction { parts, scale } => match parts.get(name) {
                Some(Part::Rank1 { a, b }) => {
                    for (mut yrow, xrow) in y.rows_mut().into_iter().zip(x.rows()) {
                        let u = scale * xrow.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
                        yrow.iter_mut().zip(a).for_each(|(v, ai)| *v += u * ai);
                    }
                }
                Some(Part::Vector(_)) | None => {}
            },
            _ => {}
        }
    }

    /// Adds this stream's perturbation of the embedding to the rows `seq` looks up.
    fn correct_lookup(&self, seq: &[usize], cols: usize, mut x: ArrayViewMut2<f64>) {
        match self.perturbation {
            Perturbation::Entry { name, index, delta } if name == EMBEDDING => {
                let (r, c) = (index / cols.max(1), index % cols.max(1));
                for (p, &id) in seq.iter().enumerate() {
                    if id == r {
                        x[[p, c]] += delta;
                    }
                }
            }
            Perturbation::Direction { parts, scale } => {
                if let Some(Part::Rank1 { a, b }) = parts.get(EMBEDDING) {
                    for (mut row, &id) in x.rows_mut().into_iter().zip(seq) {
                        row.iter_mut()
                            .zip(b)
                            .for_each(|(v, bc)| *v += scale * a[id] * bc);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Most rows of logits computed at once by [`perturbed_losses`] (2^25 f64: 256 MB).
const MAX_LOGIT_VALUES: usize = 1 << 25;

/// The loss of every stream (a copy of the sequence through the model with its own
/// perturbation), all in one pass over the weights: the streams' rows side by side, so each
/// matrix is read and converted once for all of them; each stream's perturbation added to the
/// products as a correction ([`Stream::correct`]), its norms and lookups perturbed directly,
/// its attention its own. A stream that starts at layer `l` enters there with the unperturbed
/// pass's residual stream `inputs[l]` (the layers before it are not perturbed).
fn perturbed_losses(
    sp: &DecoderSpec,
    w: &Streamed<'_>,
    seq: &[usize],
    inputs: &[Array2<f64>],
    streams: &[Stream<'_>],
) -> Result<Vec<f64>> {
    let t = seq.len();
    let hidden = sp.hidden_size;
    let layers = sp.num_hidden_layers;
    let eps = f64::from(sp.rms_norm_eps);
    let cols_of = |name: &str| w.shapes.get(name).map_or(1, |s| s.1);
    // The streams entered so far (in the order they entered), and their residual streams.
    let mut active: Vec<usize> = Vec::new();
    let mut x = Array2::<f64>::zeros((0, hidden));
    let lookup = if streams.iter().any(|s| s.start == 0) {
        Some(w.rows(EMBEDDING, seq)?)
    } else {
        None
    };
    let enter = |l: usize, active: &mut Vec<usize>, x: &mut Array2<f64>| -> Result<()> {
        for i in (0..streams.len()).filter(|&i| streams[i].start == l) {
            let mut xi = match (&lookup, l) {
                (Some(rows), 0) => rows.clone(),
                _ => inputs.get(l).cloned().ok_or_else(|| {
                    Error::InvalidArgument(format!("no residual stream at layer {l}"))
                })?,
            };
            if l == 0 {
                streams[i].correct_lookup(seq, hidden, xi.view_mut());
            }
            x.append(Axis(0), xi.view())
                .map_err(|e| Error::InvalidArgument(format!("residual streams: {e}")))?;
            active.push(i);
        }
        Ok(())
    };
    // Each active stream's block of `rows` (t rows each), with its stream.
    fn blocks<'s, 'p>(
        active: &'s [usize],
        streams: &'s [Stream<'p>],
        t: usize,
    ) -> impl Iterator<Item = (std::ops::Range<usize>, &'s Stream<'p>)> {
        active
            .iter()
            .enumerate()
            .map(move |(j, &i)| (j * t..(j + 1) * t, &streams[i]))
    }
    let norm = |x: &Array2<f64>, active: &[usize], name: &str| -> Result<Array2<f64>> {
        let base = w.vector(name)?;
        let mut y = Array2::<f64>::zeros(x.raw_dim());
        for (rows, stream) in blocks(active, streams, t) {
            let (n, _) = Model64::rms_norm(
                &x.slice(s![rows.clone(), ..]).to_owned(),
                &stream.vector(name, &base),
                eps,
            );
            y.slice_mut(s![rows, ..]).assign(&n);
        }
        Ok(y)
    };
    let linear = |x: &Array2<f64>, active: &[usize], name: &str| -> Result<Array2<f64>> {
        let mut y = w.linear(name, x)?;
        let cols = cols_of(name);
        for (rows, stream) in blocks(active, streams, t) {
            stream.correct(
                name,
                cols,
                x.slice(s![rows.clone(), ..]),
                y.slice_mut(s![rows, ..]),
            );
        }
        Ok(y)
    };
    for l in 0..layers {
        enter(l, &mut active, &mut x)?;
        if active.is_empty() {
            continue;
        }
        let p = |name: &str| format!("model.layers.{l}.{name}");
        let n1 = norm(&x, &active, &p("input_layernorm.weight"))?;
        let q = linear(&n1, &active, &p("self_attn.q_proj.weight"))?;
        let k = linear(&n1, &active, &p("self_attn.k_proj.weight"))?;
        let v = linear(&n1, &active, &p("self_attn.v_proj.weight"))?;
        let mut a = Array2::<f64>::zeros((x.nrows(), sp.num_attention_heads * sp.head_dim));
        for (rows, _) in blocks(&active, streams, t) {
            let mut qs = q.slice(s![rows.clone(), ..]).to_owned();
            let mut ks = k.slice(s![rows.clone(), ..]).to_owned();
            rope(sp, &mut qs, false);
            rope(sp, &mut ks, false);
            let vs = v.slice(s![rows.clone(), ..]).to_owned();
            a.slice_mut(s![rows, ..])
                .assign(&attention(sp, &qs, &ks, &vs).0);
        }
        if sp.family == Family::Bitnet {
            a = norm(&a, &active, &p("self_attn.attn_sub_norm.weight"))?;
        }
        x = x + linear(&a, &active, &p("self_attn.o_proj.weight"))?;
        let n2 = norm(&x, &active, &p("post_attention_layernorm.weight"))?;
        let gate = linear(&n2, &active, &p("mlp.gate_proj.weight"))?;
        let up = linear(&n2, &active, &p("mlp.up_proj.weight"))?;
        let mut m = gate.mapv(|z| activation(sp.family, z)) * &up;
        if sp.family == Family::Bitnet {
            m = norm(&m, &active, &p("mlp.ffn_sub_norm.weight"))?;
        }
        x = x + linear(&m, &active, &p("mlp.down_proj.weight"))?;
    }
    enter(layers, &mut active, &mut x)?;
    let nf = norm(&x, &active, "model.norm.weight")?;
    // The head a group of streams at a time, so that the logits held stay bounded.
    let vocab = w.rows_of(head_name(sp)).max(1);
    let per_group = (MAX_LOGIT_VALUES / (t * vocab).max(1)).max(1);
    let targets = &seq[1..];
    let mut losses = vec![f64::NAN; streams.len()];
    for j0 in (0..active.len()).step_by(per_group) {
        let j1 = (j0 + per_group).min(active.len());
        let ids = &active[j0..j1];
        let logits = linear(
            &nf.slice(s![j0 * t..j1 * t, ..]).to_owned(),
            ids,
            head_name(sp),
        )?;
        for (j, &i) in ids.iter().enumerate() {
            let rows = j * t..(j + 1) * t - 1;
            losses[i] = mean_cross_entropy(logits.slice(s![rows, ..]), targets);
        }
    }
    Ok(losses)
}
