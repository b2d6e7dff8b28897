//! The decoder of [`crate::model::decoder`] in f64 with its analytic backward pass, and the
//! numeric gradient check on it: the loss is the mean next-token cross-entropy (position t
//! predicts token t + 1), the gradient is computed for every tensor (embeddings, every
//! projection, every norm), and central differences of the loss check sampled entries of every
//! tensor and random directions over all of them, with the allowance of spec section 16.1.
//!
//! The whole model is held in f64: this is for models of up to some millions of parameters
//! (tests, the demo language model). Test hooks scale the backward pass of one component
//! (attention, the RMSNorms, the gated MLP) so that a test can show each wrong backward is
//! caught.

use std::borrow::Cow;
use std::collections::HashMap;

use ndarray::{s, Array2, ArrayView2, Axis, CowArray, Ix2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::decoder::{head_name, load_tensor, token_ids, DecoderSpec, Family};
use crate::model::matmul::product;
use crate::model::model64::{
    cross_entropy, mean_cross_entropy, rms_norm_backward, Model64, TensorGradient,
};
use crate::source::TensorSource;

/// Most parameters of a decoder the f64 model holds in memory (with the perturbed copy of the
/// gradient check, 1 GiB): the gradient checks and the assessment refuse larger decoders.
pub const MAX_IN_MEMORY_PARAMETERS: u64 = 1 << 26;

/// A decoder's parameters in f64, in the order of [`DecoderSpec::tensors`].
#[derive(Debug, Clone)]
pub struct Decoder64 {
    spec: DecoderSpec,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    values: Vec<Vec<f64>>,
    index: HashMap<String, usize>,
}

/// Factors applied to the gradient one component passes back (1.0: the true backward pass).
/// Tests set one of them to 1.01 to show the gradient check catches that component.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackwardHooks {
    /// Attention (scores, softmax, values, RoPE).
    pub attention: f64,
    /// Every RMSNorm.
    pub rmsnorm: f64,
    /// The gated MLP's activation and gate.
    pub mlp: f64,
}

impl Default for BackwardHooks {
    fn default() -> Self {
        BackwardHooks {
            attention: 1.0,
            rmsnorm: 1.0,
            mlp: 1.0,
        }
    }
}

/// What the forward pass keeps of one RMSNorm for the backward pass.
struct NormCache {
    x: Array2<f64>,
    inv: Vec<f64>,
}

/// What the forward pass keeps of one layer.
struct LayerCache {
    norm1: NormCache,
    n1: Array2<f64>,
    q: Array2<f64>,
    k: Array2<f64>,
    v: Array2<f64>,
    probs: Vec<Array2<f64>>,
    sub: Option<NormCache>,
    a: Array2<f64>,
    norm2: NormCache,
    n2: Array2<f64>,
    gate: Array2<f64>,
    up: Array2<f64>,
    ffn: Option<NormCache>,
    m: Array2<f64>,
}

impl Decoder64 {
    /// Loads every tensor of `spec` from `source` in f64.
    pub fn load(spec: &DecoderSpec, source: &dyn TensorSource) -> Result<Decoder64> {
        spec.check().map_err(Error::InvalidArgument)?;
        let (mut names, mut shapes, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (name, shape) in spec.tensors() {
            let v = load_tensor(source, &name, &shape)?;
            values.push(v.into_iter().map(f64::from).collect());
            names.push(name);
            shapes.push(shape);
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Ok(Decoder64 {
            spec: spec.clone(),
            names,
            shapes,
            values,
            index,
        })
    }

    /// Tensor names, in parameter order.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// Parameter tensor names, in parameter order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of values of parameter `p`.
    pub fn len(&self, p: usize) -> usize {
        self.values[p].len()
    }

    /// Whether the model has no parameters (never, for a checked spec).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Adds `delta` to entry `i` of parameter `p`.
    pub fn nudge(&mut self, p: usize, i: usize, delta: f64) {
        self.values[p][i] += delta;
    }

    /// Adds `scale * direction` to every parameter.
    pub fn nudge_all(&mut self, direction: &[Vec<f64>], scale: f64) {
        for (v, d) in self.values.iter_mut().zip(direction) {
            v.iter_mut().zip(d).for_each(|(x, y)| *x += scale * y);
        }
    }

    /// The mean next-token cross-entropy over `ids` (`[N, T]`, T >= 2, ids < vocab) and, when
    /// `grad`, its gradient for every parameter (in parameter order).
    pub fn loss_and_gradient(
        &self,
        ids: ArrayView2<i64>,
        grad: bool,
        hooks: &BackwardHooks,
    ) -> Result<(f64, Option<Vec<Vec<f64>>>)> {
        self.loss_and_gradient_with(ids, None, grad, hooks)
    }

    /// [`Decoder64::loss_and_gradient`] with the label of every position but the last given
    /// (`[N, T - 1]` flattened, each < vocab) instead of the next token.
    pub fn loss_and_gradient_with(
        &self,
        ids: ArrayView2<i64>,
        labels: Option<&[usize]>,
        grad: bool,
        hooks: &BackwardHooks,
    ) -> Result<(f64, Option<Vec<Vec<f64>>>)> {
        let (n, t) = ids.dim();
        if t < 2 {
            return Err(Error::InvalidArgument(format!(
                "input_ids: expected sequences of at least 2 tokens (one to predict), found T = {t}"
            )));
        }
        let tokens = token_ids(&self.spec, ids)?;
        if let Some(l) = labels {
            let vocab = self.spec.vocab_size;
            if l.len() != n * (t - 1) || l.iter().any(|&y| y >= vocab) {
                return Err(Error::InvalidArgument(format!(
                    "labels: expected {} tokens below {vocab} ([{n}, {}]), found {} values",
                    n * (t - 1),
                    t - 1,
                    l.len()
                )));
            }
        }
        let mut loss = 0.0;
        let mut grads: Vec<Vec<f64>> = if grad {
            self.values.iter().map(|v| vec![0.0; v.len()]).collect()
        } else {
            Vec::new()
        };
        // Every sequence predicts T - 1 tokens: the mean over all of them is the mean of the
        // sequences' means.
        for (k, seq) in tokens.chunks(t).enumerate() {
            let targets = match labels {
                Some(l) => &l[k * (t - 1)..(k + 1) * (t - 1)],
                None => &seq[1..],
            };
            let pass = forward_sequence(&self.spec, self, seq, None)?;
            let logits = &pass.logits;
            let predicting = logits.slice(s![..t - 1, ..]);
            if !grad {
                loss += mean_cross_entropy(predicting, targets) / n as f64;
                continue;
            }
            let (l, g) = cross_entropy(&predicting.to_owned(), targets);
            loss += l / n as f64;
            let mut dlogits = Array2::<f64>::zeros(logits.raw_dim());
            dlogits.slice_mut(s![..t - 1, ..]).assign(&(g / n as f64));
            let mut sink = FullGradients {
                index: &self.index,
                shapes: &self.shapes,
                grads: &mut grads,
            };
            backward_sequence(&self.spec, self, seq, &pass, dlogits, hooks, &mut sink)?;
        }
        Ok((loss, grad.then_some(grads)))
    }
}

impl Weights64 for Decoder64 {
    fn matrix(&self, name: &str) -> Result<CowArray<'_, f64, Ix2>> {
        let i = self.index[name];
        let (r, c) = (self.shapes[i][0], self.shapes[i][1]);
        let view =
            ArrayView2::from_shape((r, c), &self.values[i][..]).expect("shape checked at load");
        Ok(CowArray::from(view))
    }

    fn vector(&self, name: &str) -> Result<Cow<'_, [f64]>> {
        Ok(Cow::Borrowed(&self.values[self.index[name]]))
    }

    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f64>> {
        Ok(self.matrix(name)?.select(Axis(0), ids))
    }
}

/// Where the f64 decoder reads its weights: in memory ([`Decoder64`]), or a bundle's FP16
/// tensors converted when used (`model::decoder_stream`).
pub(crate) trait Weights64 {
    /// The matrix `name`, `[out, in]`.
    fn matrix(&self, name: &str) -> Result<CowArray<'_, f64, Ix2>>;
    /// The vector `name` (a norm weight).
    fn vector(&self, name: &str) -> Result<Cow<'_, [f64]>>;
    /// Rows `ids` of the matrix `name` (the embedding lookup).
    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f64>>;
    /// `x W^T` for the matrix `name`.
    fn linear(&self, name: &str, x: &Array2<f64>) -> Result<Array2<f64>> {
        Ok(product(x.view(), self.matrix(name)?.t()))
    }
    /// `dy W` for the matrix `name`.
    fn linear_t(&self, name: &str, dy: &Array2<f64>) -> Result<Array2<f64>> {
        Ok(product(dy.view(), self.matrix(name)?.view()))
    }
}

/// Where the backward pass puts the gradient of each tensor.
pub(crate) trait GradSink {
    /// Adds `g` to rows `first..first + g.nrows()` of tensor `name`'s gradient (the tensor
    /// viewed as `[rows, columns]`; a vector is one row).
    fn add(&mut self, name: &str, first: usize, g: ArrayView2<f64>);
    /// Adds row j of `g` to row `ids[j]` of tensor `name`'s gradient (the embedding lookup).
    fn add_rows(&mut self, name: &str, ids: &[usize], g: ArrayView2<f64>);
    /// Adds `dy^T x` to the gradient of the matrix `name` (a linear's, y = x W^T).
    fn add_outer(&mut self, name: &str, dy: &Array2<f64>, x: &Array2<f64>) {
        self.add(name, 0, product(dy.t(), x.view()).view());
    }
}

/// The whole gradient of every tensor, in memory.
struct FullGradients<'a> {
    index: &'a HashMap<String, usize>,
    shapes: &'a [Vec<usize>],
    grads: &'a mut [Vec<f64>],
}

impl GradSink for FullGradients<'_> {
    fn add(&mut self, name: &str, first: usize, g: ArrayView2<f64>) {
        let p = self.index[name];
        let cols = self.shapes[p].get(1).copied().unwrap_or(self.shapes[p][0]);
        let start = first * cols;
        self.grads[p][start..start + g.len()]
            .iter_mut()
            .zip(g.iter())
            .for_each(|(a, d)| *a += d);
    }

    fn add_rows(&mut self, name: &str, ids: &[usize], g: ArrayView2<f64>) {
        let p = self.index[name];
        let cols = g.ncols();
        for (row, &id) in g.rows().into_iter().zip(ids) {
            self.grads[p][id * cols..(id + 1) * cols]
                .iter_mut()
                .zip(row.iter())
                .for_each(|(a, d)| *a += d);
        }
    }
}

/// What a forward pass over one sequence keeps: the layer caches (for the backward pass), the
/// residual stream entering every layer and leaving the last (`inputs[l]`, `inputs[L]`), the
/// final norm's cache and output, and the logits of every position.
pub(crate) struct SequencePass {
    caches: Vec<LayerCache>,
    pub inputs: Vec<Array2<f64>>,
    finals: (NormCache, Array2<f64>),
    pub logits: Array2<f64>,
}

fn rms<W: Weights64 + ?Sized>(
    spec: &DecoderSpec,
    w: &W,
    x: &Array2<f64>,
    weight: &str,
) -> Result<(Array2<f64>, NormCache)> {
    let eps = f64::from(spec.rms_norm_eps);
    let (y, inv) = Model64::rms_norm(x, &w.vector(weight)?, eps);
    Ok((y, NormCache { x: x.clone(), inv }))
}

pub(crate) fn rope(spec: &DecoderSpec, x: &mut Array2<f64>, inverse: bool) {
    let hd = spec.head_dim;
    let half = hd / 2;
    let theta = spec.rope_theta;
    for (pos, mut row) in x.axis_iter_mut(Axis(0)).enumerate() {
        for mut head in row.exact_chunks_mut(hd) {
            for i in 0..half {
                let angle = pos as f64 / theta.powf((2 * i) as f64 / hd as f64);
                let (c, s) = (
                    angle.cos(),
                    if inverse { -angle.sin() } else { angle.sin() },
                );
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }
}

/// Causal grouped-query attention of one sequence on its projections (RoPE applied to `q` and
/// `k`): the heads' outputs side by side, and each head's probabilities.
pub(crate) fn attention(
    sp: &DecoderSpec,
    q: &Array2<f64>,
    k: &Array2<f64>,
    v: &Array2<f64>,
) -> (Array2<f64>, Vec<Array2<f64>>) {
    let (hd, heads) = (sp.head_dim, sp.num_attention_heads);
    let group = heads / sp.num_key_value_heads;
    let mut a = Array2::<f64>::zeros((q.nrows(), heads * hd));
    let mut probs = Vec::with_capacity(heads);
    for h in 0..heads {
        let g = h / group;
        let qh = q.slice(s![.., h * hd..(h + 1) * hd]);
        let kh = k.slice(s![.., g * hd..(g + 1) * hd]);
        let mut sc = product(qh, kh.t()) / (hd as f64).sqrt();
        for (i, mut row) in sc.axis_iter_mut(Axis(0)).enumerate() {
            row.slice_mut(s![i + 1..]).fill(f64::NEG_INFINITY);
        }
        let pr = softmax_rows(&sc);
        let ah = product(pr.view(), v.slice(s![.., g * hd..(g + 1) * hd]));
        a.slice_mut(s![.., h * hd..(h + 1) * hd]).assign(&ah);
        probs.push(pr);
    }
    (a, probs)
}

/// One sequence through the decoder. With `start` = (l, x), the pass begins at layer l with
/// residual stream x (an earlier pass's `inputs[l]`; l = L starts at the final norm).
pub(crate) fn forward_sequence<W: Weights64 + ?Sized>(
    sp: &DecoderSpec,
    w: &W,
    seq: &[usize],
    start: Option<(usize, Array2<f64>)>,
) -> Result<SequencePass> {
    let (first, mut x) = match start {
        Some(s) => s,
        None => (0, w.rows("model.embed_tokens.weight", seq)?),
    };
    let mut caches = Vec::with_capacity(sp.num_hidden_layers);
    let mut inputs = Vec::with_capacity(sp.num_hidden_layers + 1);
    for l in first..sp.num_hidden_layers {
        inputs.push(x.clone());
        let p = |name: &str| format!("model.layers.{l}.{name}");
        let (n1, norm1) = rms(sp, w, &x, &p("input_layernorm.weight"))?;
        let mut q = w.linear(&p("self_attn.q_proj.weight"), &n1)?;
        let mut k = w.linear(&p("self_attn.k_proj.weight"), &n1)?;
        let v = w.linear(&p("self_attn.v_proj.weight"), &n1)?;
        rope(sp, &mut q, false);
        rope(sp, &mut k, false);
        let (a, probs) = attention(sp, &q, &k, &v);
        let (a_in, sub) = if sp.family == Family::Bitnet {
            let (y, c) = rms(sp, w, &a, &p("self_attn.attn_sub_norm.weight"))?;
            (y, Some(c))
        } else {
            (a.clone(), None)
        };
        x = x + w.linear(&p("self_attn.o_proj.weight"), &a_in)?;
        let (n2, norm2) = rms(sp, w, &x, &p("post_attention_layernorm.weight"))?;
        let gate = w.linear(&p("mlp.gate_proj.weight"), &n2)?;
        let up = w.linear(&p("mlp.up_proj.weight"), &n2)?;
        let act = gate.mapv(|z| activation(sp.family, z));
        let m0 = &act * &up;
        let (m, ffn) = if sp.family == Family::Bitnet {
            let (y, c) = rms(sp, w, &m0, &p("mlp.ffn_sub_norm.weight"))?;
            (y, Some(c))
        } else {
            (m0, None)
        };
        x = x + w.linear(&p("mlp.down_proj.weight"), &m)?;
        caches.push(LayerCache {
            norm1,
            n1,
            q,
            k,
            v,
            probs,
            sub,
            a: a_in,
            norm2,
            n2,
            gate,
            up,
            ffn,
            m,
        });
    }
    inputs.push(x.clone());
    let (nf, normf) = rms(sp, w, &x, "model.norm.weight")?;
    let logits = w.linear(head_name(sp), &nf)?;
    Ok(SequencePass {
        caches,
        inputs,
        finals: (normf, nf),
        logits,
    })
}

/// `dy W` for the linear `name` (y = x W^T), adding `dy^T x` to its gradient.
fn linear_back<W: Weights64 + ?Sized>(
    w: &W,
    name: &str,
    x: &Array2<f64>,
    dy: &Array2<f64>,
    sink: &mut dyn GradSink,
) -> Result<Array2<f64>> {
    sink.add_outer(name, dy, x);
    w.linear_t(name, dy)
}

/// The input gradient of the RMSNorm `weight` (cache `c`) from its output gradient `dy`,
/// adding to the weight's gradient; scaled by the RMSNorm hook.
fn rms_back<W: Weights64 + ?Sized>(
    w: &W,
    weight: &str,
    c: &NormCache,
    dy: &Array2<f64>,
    hook: f64,
    sink: &mut dyn GradSink,
) -> Result<Array2<f64>> {
    let (dx, dw) = rms_norm_backward(&c.x, &c.inv, &w.vector(weight)?, dy);
    let dw: Vec<f64> = dw.into_iter().map(|d| d * hook).collect();
    let n = dw.len();
    sink.add(
        weight,
        0,
        ArrayView2::from_shape((1, n), &dw).expect("one row"),
    );
    Ok(dx * hook)
}

/// The backward pass of one sequence (a whole [`forward_sequence`] pass, from layer 0) from
/// the gradient of the logits, every tensor's gradient into `sink`.
pub(crate) fn backward_sequence<W: Weights64 + ?Sized>(
    sp: &DecoderSpec,
    w: &W,
    seq: &[usize],
    pass: &SequencePass,
    dlogits: Array2<f64>,
    hooks: &BackwardHooks,
    sink: &mut dyn GradSink,
) -> Result<()> {
    let (hd, heads) = (sp.head_dim, sp.num_attention_heads);
    let group = heads / sp.num_key_value_heads;
    let finals = &pass.finals;
    let dnf = linear_back(w, head_name(sp), &finals.1, &dlogits, sink)?;
    let mut dx = rms_back(w, "model.norm.weight", &finals.0, &dnf, hooks.rmsnorm, sink)?;
    for (l, c) in pass.caches.iter().enumerate().rev() {
        let p = |name: &str| format!("model.layers.{l}.{name}");
        // MLP.
        let dm = linear_back(w, &p("mlp.down_proj.weight"), &c.m, &dx, sink)?;
        let dm0 = match &c.ffn {
            Some(nc) => rms_back(
                w,
                &p("mlp.ffn_sub_norm.weight"),
                nc,
                &dm,
                hooks.rmsnorm,
                sink,
            )?,
            None => dm,
        };
        let act = c.gate.mapv(|z| activation(sp.family, z));
        let dup = &dm0 * &act;
        let mut dgate = &dm0 * &c.up;
        dgate.zip_mut_with(&c.gate, |d, &z| {
            *d *= activation_derivative(sp.family, z) * hooks.mlp
        });
        let dn2 = linear_back(w, &p("mlp.gate_proj.weight"), &c.n2, &dgate, sink)?
            + linear_back(w, &p("mlp.up_proj.weight"), &c.n2, &dup, sink)?;
        dx = dx
            + rms_back(
                w,
                &p("post_attention_layernorm.weight"),
                &c.norm2,
                &dn2,
                hooks.rmsnorm,
                sink,
            )?;
        // Attention.
        let da_in = linear_back(w, &p("self_attn.o_proj.weight"), &c.a, &dx, sink)?;
        let da = match &c.sub {
            Some(nc) => rms_back(
                w,
                &p("self_attn.attn_sub_norm.weight"),
                nc,
                &da_in,
                hooks.rmsnorm,
                sink,
            )?,
            None => da_in,
        };
        let mut dq = Array2::<f64>::zeros(c.q.raw_dim());
        let mut dk = Array2::<f64>::zeros(c.k.raw_dim());
        let mut dv = Array2::<f64>::zeros(c.v.raw_dim());
        let scale = 1.0 / (hd as f64).sqrt();
        for h in 0..heads {
            let g = h / group;
            let pr = &c.probs[h];
            let dah = da.slice(s![.., h * hd..(h + 1) * hd]);
            let vh = c.v.slice(s![.., g * hd..(g + 1) * hd]);
            let dp = product(dah, vh.t());
            let mut dsc = pr * &dp;
            for (mut row, prow) in dsc.axis_iter_mut(Axis(0)).zip(pr.axis_iter(Axis(0))) {
                let total: f64 = row.sum();
                row.zip_mut_with(&prow, |d, &pv| *d -= pv * total);
            }
            dsc *= scale * hooks.attention;
            let mut dvh = dv.slice_mut(s![.., g * hd..(g + 1) * hd]);
            dvh += &product(pr.t(), dah);
            let qh = c.q.slice(s![.., h * hd..(h + 1) * hd]);
            let kh = c.k.slice(s![.., g * hd..(g + 1) * hd]);
            dq.slice_mut(s![.., h * hd..(h + 1) * hd])
                .assign(&product(dsc.view(), kh));
            let mut dkh = dk.slice_mut(s![.., g * hd..(g + 1) * hd]);
            dkh += &product(dsc.t(), qh);
        }
        // RoPE is a rotation: its backward is the inverse rotation.
        rope(sp, &mut dq, true);
        rope(sp, &mut dk, true);
        let dn1 = linear_back(w, &p("self_attn.q_proj.weight"), &c.n1, &dq, sink)?
            + linear_back(w, &p("self_attn.k_proj.weight"), &c.n1, &dk, sink)?
            + linear_back(w, &p("self_attn.v_proj.weight"), &c.n1, &dv, sink)?;
        dx = dx
            + rms_back(
                w,
                &p("input_layernorm.weight"),
                &c.norm1,
                &dn1,
                hooks.rmsnorm,
                sink,
            )?;
    }
    sink.add_rows("model.embed_tokens.weight", seq, dx.view());
    Ok(())
}

/// The gated MLP's activation: SiLU (Llama) or ReLU² (BitNet).
pub(crate) fn activation(family: Family, z: f64) -> f64 {
    match family {
        Family::Llama => z / (1.0 + (-z).exp()),
        Family::Bitnet => z.max(0.0).powi(2),
    }
}

fn activation_derivative(family: Family, z: f64) -> f64 {
    match family {
        Family::Llama => {
            let s = 1.0 / (1.0 + (-z).exp());
            s * (1.0 + z * (1.0 - s))
        }
        Family::Bitnet => 2.0 * z.max(0.0),
    }
}

fn softmax_rows(x: &Array2<f64>) -> Array2<f64> {
    let mut y = x.clone();
    for mut row in y.axis_iter_mut(Axis(0)) {
        let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let z = row.sum();
        row /= z;
    }
    y
}

/// Gradient statistics of every tensor (embeddings, projections, norms) for the mean
/// next-token cross-entropy over `ids`: the loss and, per tensor in parameter order, its
/// gradient's norm, variance, and counts of non-finite and non-zero entries.
pub fn gradient_flow(
    model: &Decoder64,
    ids: ArrayView2<i64>,
) -> Result<(f64, Vec<TensorGradient>)> {
    let (loss, grads) = model.loss_and_gradient(ids, true, &BackwardHooks::default())?;
    let stats = model
        .names
        .iter()
        .zip(grads.iter().flatten())
        .map(|(name, g)| TensorGradient::of(name, g))
        .collect();
    Ok((loss, stats))
}

/// Options of [`gradient_check`].
#[derive(Debug, Clone)]
pub struct DecoderGradCheckOptions {
    /// Entries sampled per tensor.
    pub per_tensor: usize,
    /// Random directions over all parameters.
    pub directions: usize,
    /// Central-difference step.
    pub step: f64,
    /// Relative tolerance (the allowance adds the loss's round-off over the step).
    pub tolerance: f64,
    /// Seed of the sampled entries and directions.
    pub seed: u64,
    /// Test hooks on the backward pass.
    pub hooks: BackwardHooks,
}

impl Default for DecoderGradCheckOptions {
    fn default() -> Self {
        DecoderGradCheckOptions {
            per_tensor: 2,
            directions: 2,
            step: 1e-5,
            tolerance: 1e-4,
            seed: 0x5EED,
            hooks: BackwardHooks::default(),
        }
    }
}

/// What [`gradient_check`] found.
#[derive(Debug, Clone)]
pub struct DecoderGradCheckReport {
    /// Mean next-token cross-entropy.
    pub loss: f64,
    /// Entries compared.
    pub coordinates: usize,
    /// Directions compared.
    pub directions: usize,
    /// Largest error over its allowance (passes below 1; the margin is its inverse).
    pub error_ratio: f64,
    /// Largest |a − n| / max(|a|, |n|, 1e-6), for information.
    pub max_relative_error: f64,
    /// The loss's round-off bound ε_L (the allowance adds ε_L / step).
    pub atol: f64,
    /// The comparison with that ratio.
    pub worst: String,
}

impl DecoderGradCheckReport {
    /// An empty report for the loss `loss` of `spec`'s model on sequences of `t` tokens: its
    /// allowance's absolute part is ε_L = 4·u·(|L| + 1)·sqrt(Σ inner dimensions), spec 16.1.
    pub(crate) fn new(spec: &DecoderSpec, t: usize, loss: f64) -> Self {
        let inner = spec.num_hidden_layers
            * (3 * spec.hidden_size
                + t
                + spec.num_attention_heads * spec.head_dim
                + spec.intermediate_size)
            + spec.hidden_size;
        DecoderGradCheckReport {
            loss,
            coordinates: 0,
            directions: 0,
            error_ratio: 0.0,
            max_relative_error: 0.0,
            atol: 4.0 * f64::EPSILON / 2.0 * (loss.abs() + 1.0) * (inner as f64).sqrt(),
            worst: String::new(),
        }
    }

    /// Compares an analytic derivative with its central difference of step `step`, allowed
    /// `tolerance`·max(|a|, |n|) + ε_L / step; keeps the worst.
    pub(crate) fn consider(
        &mut self,
        tolerance: f64,
        analytic: f64,
        numeric: f64,
        step: f64,
        what: String,
    ) {
        let allowed = tolerance * analytic.abs().max(numeric.abs()) + self.atol / step;
        let ratio = (analytic - numeric).abs() / allowed;
        let relative = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-6);
        self.max_relative_error = self.max_relative_error.max(relative);
        if ratio >= self.error_ratio {
            self.error_ratio = ratio;
            self.worst = format!(
                "{what}: analytic {analytic:.6e}, numeric {numeric:.6e}, allowed difference {allowed:.2e}"
            );
        }
    }
}

/// The 64-bit LCG the gradient checks draw entries and directions from (its top 53 bits).
pub(crate) fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 11
    }
}

/// The numeric gradient check of `model` on `ids`: for `per_tensor` entries of every tensor
/// and for random directions, the analytic derivative against the central difference
/// (L(θ + h v) − L(θ − h v)) / 2h, allowed rtol·max(|a|, |n|) + ε_L / h with ε_L the f64
/// round-off bound of the loss (spec section 16.1: 4·u·S·sqrt(Σ inner dimensions)).
pub fn gradient_check(
    model: &Decoder64,
    ids: ArrayView2<i64>,
    options: &DecoderGradCheckOptions,
) -> Result<DecoderGradCheckReport> {
    let (loss, grads) = model.loss_and_gradient(ids, true, &options.hooks)?;
    let grads = grads.expect("asked for");
    let h = options.step;
    let mut work = model.clone();
    let mut report = DecoderGradCheckReport::new(&model.spec, ids.ncols(), loss);
    let tolerance = options.tolerance;
    let mut next = lcg(options.seed);
    let loss_at = |m: &Decoder64| -> Result<f64> {
        Ok(m.loss_and_gradient(ids, false, &BackwardHooks::default())?
            .0)
    };
    let mut coordinates = Vec::with_capacity(grads.len() * options.per_tensor);
    for (p, grad) in grads.iter().enumerate() {
        for _ in 0..options.per_tensor {
            coordinates.push((p, (next() % grad.len() as u64) as usize));
        }
    }
    // The entries' central differences on the pool, a copy of the model per part (as many
    // parts as threads while the copies stay within 1 GiB; each entry is set to w + h and
    // w - h from its own value, then restored exactly, so the figures do not depend on the
    // split).
    let bytes = model.values.iter().map(Vec::len).sum::<usize>() * 8;
    let parts = rayon::current_num_threads()
        .min((1usize << 30) / bytes.max(1))
        .max(1);
    let numeric: Vec<Result<f64>> = coordinates
        .par_chunks(coordinates.len().div_ceil(parts).max(1))
        .flat_map_iter(|chunk| {
            let mut work = model.clone();
            chunk
                .iter()
                .map(|&(p, i)| {
                    let w = work.values[p][i];
                    work.values[p][i] = w + h;
                    let plus = loss_at(&work);
                    work.values[p][i] = w - h;
                    let minus = loss_at(&work);
                    work.values[p][i] = w;
                    Ok((plus? - minus?) / (2.0 * h))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (&(p, i), numeric) in coordinates.iter().zip(numeric) {
        report.consider(
            tolerance,
            grads[p][i],
            numeric?,
            h,
            format!("{} [{i}]", model.names[p]),
        );
        report.coordinates += 1;
    }
    for d in 0..options.directions {
        let dir: Vec<Vec<f64>> = grads
            .iter()
            .map(|g| {
                g.iter()
                    .map(|_| (next() as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
                    .collect()
            })
            .collect();
        let norm = dir.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
        let step = h / norm;
        let analytic: f64 = dir
            .iter()
            .zip(&grads)
            .map(|(d, g)| d.iter().zip(g).map(|(a, b)| a * b).sum::<f64>())
            .sum();
        work.nudge_all(&dir, step);
        let plus = loss_at(&work)?;
        work.nudge_all(&dir, -2.0 * step);
        let minus = loss_at(&work)?;
        work.nudge_all(&dir, step);
        report.consider(
            tolerance,
            analytic,
            (plus - minus) / (2.0 * step),
            step,
            format!("direction {d}"),
        );
        report.directions += 1;
    }
    Ok(report)
}
