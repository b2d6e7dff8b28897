//! The decoder-only language models people hand off (Llama, BitNet b1.58) as a reference model
//! in f32, following transformers' `LlamaForCausalLM` and `BitNetForCausalLM` step by step:
//!
//! ```text
//! h = embed_tokens[ids]
//! per layer i (prefix model.layers.{i}.):
//!   n1 = RMSNorm(h, input_layernorm)
//!   q, k, v = n1 q_proj^T, n1 k_proj^T, n1 v_proj^T      (heads, KV heads of head_dim)
//!   q, k = RoPE(q), RoPE(k)                               (half-split rotation, rotate_half)
//!   a = softmax(q k^T / sqrt(head_dim) + causal mask) v    (query head j reads KV head
//!                                                          j / (heads / kv_heads))
//!   bitnet: a = RMSNorm(a, self_attn.attn_sub_norm)
//!   h = h + a o_proj^T
//!   n2 = RMSNorm(h, post_attention_layernorm)
//!   llama:  m = (silu(n2 gate^T) * n2 up^T) down^T
//!   bitnet: m = RMSNorm(relu(n2 gate^T)^2 * n2 up^T, mlp.ffn_sub_norm) down^T
//!   h = h + m
//! logits = RMSNorm(h, model.norm) lm_head^T   (lm_head = embed_tokens when tied)
//! ```
//!
//! RMSNorm is [`rmsnorm`] (mean square accumulated in f64, as for the MLP layers); RoPE's
//! inverse frequencies are `1 / theta^(2i / head_dim)` and its angles `position * inv_freq`,
//! in f32 as transformers computes them; softmax subtracts the row maximum and runs in f32.
//! Matrix products go through [`DecoderWeights::linear`], so the same code runs the FP16
//! weights, the trits and scales, or a checkpoint.

use std::collections::HashMap;

use ndarray::{s, Array2, Array3, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::quantization::QuantParams;
use crate::model::matmul::{dot_t, product};
use crate::model::reference::{self, rmsnorm, LinearWeight, WeightPath};
use crate::quant::dequantize::dequantize_tensor_f16;
use crate::quant::quantize::quantize;
use crate::source::TensorSource;

pub use crate::format::decoder::{is_projection, DecoderSpec, Family, PROJECTIONS};

/// Where a decoder's weights come from (the FP16 file, trits and scales, a checkpoint).
pub trait DecoderWeights {
    /// `x W^T` for the matrix `name` (`[out, in]`).
    fn linear(&self, name: &str, x: ArrayView2<f32>) -> Result<Array2<f32>>;
    /// The vector `name` (norm weights).
    fn vector(&self, name: &str) -> Result<Vec<f32>>;
    /// Rows `ids` of the matrix `name` (the embedding lookup).
    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f32>>;
}

/// The logits `[N, T, vocab_size]` of `spec`'s model with `weights` on the token ids
/// `input_ids` (`[N, T]`, every id < `vocab_size`, T >= 1): [`hidden`], then [`head`].
pub fn forward(
    spec: &DecoderSpec,
    weights: &dyn DecoderWeights,
    input_ids: ArrayView2<i64>,
) -> Result<Array3<f32>> {
    let (n, t) = input_ids.dim();
    let logits = head(spec, weights, hidden(spec, weights, input_ids)?.view())?;
    logits
        .into_shape_with_order((n, t, spec.vocab_size))
        .map_err(|e| Error::InvalidArgument(format!("logits of {}: {e}", head_name(spec))))
}

/// The head's tensor: `lm_head.weight`, or the embedding when tied.
pub(crate) fn head_name(spec: &DecoderSpec) -> &'static str {
    if spec.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    }
}

/// The logits `[rows, vocab_size]` of final hidden states `h` (`[rows, hidden_size]`, from
/// [`hidden`]): any rows of them, so that a caller can run the head a piece at a time.
pub fn head(
    spec: &DecoderSpec,
    weights: &dyn DecoderWeights,
    h: ArrayView2<f32>,
) -> Result<Array2<f32>> {
    let name = head_name(spec);
    let logits = weights.linear(name, h)?;
    if logits.dim() != (h.nrows(), spec.vocab_size) {
        return Err(Error::InvalidArgument(format!(
            "tensor {name}: expected a product of shape [{}, {}], found {:?}",
            h.nrows(),
            spec.vocab_size,
            logits.dim()
        )));
    }
    Ok(logits)
}

/// The final hidden states `[N * T, hidden_size]` (after the final norm, before the head) of
/// `spec`'s model with `weights` on `input_ids` (`[N, T]`), sequence by sequence.
pub fn hidden(
    spec: &DecoderSpec,
    weights: &dyn DecoderWeights,
    input_ids: ArrayView2<i64>,
) -> Result<Array2<f32>> {
    spec.check().map_err(Error::InvalidArgument)?;
    let (n, t) = input_ids.dim();
    let ids = token_ids(spec, input_ids)?;
    let eps = spec.rms_norm_eps;
    let norm = |x: &Array2<f32>, name: &str| -> Result<Array2<f32>> {
        let w = ndarray::Array1::from_vec(weights.vector(name)?);
        if w.len() != x.ncols() {
            return Err(Error::InvalidArgument(format!(
                "tensor {name}: expected {} values, found {}",
                x.ncols(),
                w.len()
            )));
        }
        let mut y = x.clone();
        rmsnorm(&mut y, &w, eps);
        Ok(y)
    };
    // Every product must have the shape the spec gives it (any DecoderWeights may be wrong).
    let rows = n * t;
    let linear = |name: &str, x: ArrayView2<f32>, cols: usize| -> Result<Array2<f32>> {
        let y = weights.linear(name, x)?;
        if y.dim() != (rows, cols) {
            return Err(Error::InvalidArgument(format!(
                "tensor {name}: expected a product of shape [{rows}, {cols}], found {:?}",
                y.dim()
            )));
        }
        Ok(y)
    };
    let (hid, hd) = (spec.hidden_size, spec.head_dim);
    let (q_cols, kv_cols) = (spec.num_attention_heads * hd, spec.num_key_value_heads * hd);
    // The residual stream of every token of every sequence, [N * T, hidden].
    let mut h = weights.rows("model.embed_tokens.weight", &ids)?;
    if h.dim() != (rows, hid) {
        return Err(Error::InvalidArgument(format!(
            "tensor model.embed_tokens.weight: expected rows of {hid}, found {:?}",
            h.dim()
        )));
    }
    let rope = Rope::new(spec, t);
    for l in 0..spec.num_hidden_layers {
        let p = |name: &str| format!("model.layers.{l}.{name}");
        let n1 = norm(&h, &p("input_layernorm.weight"))?;
        let mut q = linear(&p("self_attn.q_proj.weight"), n1.view(), q_cols)?;
        let mut k = linear(&p("self_attn.k_proj.weight"), n1.view(), kv_cols)?;
        let v = linear(&p("self_attn.v_proj.weight"), n1.view(), kv_cols)?;
        rope.apply(&mut q, t);
        rope.apply(&mut k, t);
        let mut a = attention(spec, &q, &k, &v, n, t);
        if spec.family == Family::Bitnet {
            a = norm(&a, &p("self_attn.attn_sub_norm.weight"))?;
        }
        h += &linear(&p("self_attn.o_proj.weight"), a.view(), hid)?;
        let n2 = norm(&h, &p("post_attention_layernorm.weight"))?;
        let mut gate = linear(
            &p("mlp.gate_proj.weight"),
            n2.view(),
            spec.intermediate_size,
        )?;
        let up = linear(&p("mlp.up_proj.weight"), n2.view(), spec.intermediate_size)?;
        match spec.family {
            Family::Llama => gate.mapv_inplace(|z| z / (1.0 + (-z).exp())),
            Family::Bitnet => gate.mapv_inplace(|z| {
                let r = z.max(0.0);
                r * r
            }),
        }
        gate *= &up;
        if spec.family == Family::Bitnet {
            gate = norm(&gate, &p("mlp.ffn_sub_norm.weight"))?;
        }
        h += &linear(&p("mlp.down_proj.weight"), gate.view(), hid)?;
    }
    norm(&h, "model.norm.weight")
}

/// The predicted next token at every position but the last (the argmax of its logits, lowest
/// index on ties), `[N, T - 1]` flattened: what `original_predictions` records and retention
/// compares. Runs `weights` a chunk of sequences at a time.
pub fn predictions(
    spec: &DecoderSpec,
    weights: &dyn DecoderWeights,
    input_ids: ArrayView2<i64>,
) -> Result<Vec<usize>> {
    let (n, t) = input_ids.dim();
    let chunk = crate::model::chunks::decoder_sequences(spec, t);
    let mut out = Vec::with_capacity(n.saturating_mul(t.saturating_sub(1)));
    for start in (0..n).step_by(chunk) {
        let ids = input_ids.slice(s![start..(start + chunk).min(n), ..]);
        let logits = forward(spec, weights, ids)?;
        out.extend(next_token_predictions(&logits));
    }
    Ok(out)
}

/// The argmax of the logits at every position but the last of every sequence, flattened
/// (spec section 16's prediction, [`reference::argmax_rows`]).
pub fn next_token_predictions(logits: &Array3<f32>) -> Vec<usize> {
    let (n, t, _) = logits.dim();
    let mut out = Vec::with_capacity(n * t.saturating_sub(1));
    for seq in logits.outer_iter() {
        out.extend(reference::argmax_rows(
            &seq.slice(s![..t.saturating_sub(1), ..]),
        ));
    }
    out
}

/// The logits of the scored positions (every position but the last of every sequence) of
/// `logits` `[N, T, V]`, as rows `[N × (T − 1), V]` in sequence order.
pub fn scored_rows(logits: &Array3<f32>) -> Result<Array2<f32>> {
    let (n, t, v) = logits.dim();
    let scored = t.saturating_sub(1);
    logits
        .slice(s![.., ..scored, ..])
        .to_shape((n * scored, v))
        .map(|a| a.to_owned())
        .map_err(|e| Error::InvalidArgument(format!("logits [{n}, {t}, {v}]: {e}")))
}

/// Tensor `name` of `source` in f32, which must hold the values of `shape`.
pub(crate) fn load_tensor(
    source: &dyn TensorSource,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let values = source.load_f32(name)?;
    let want: usize = shape.iter().product();
    if values.len() != want {
        return Err(Error::InvalidArgument(format!(
            "{}: tensor {name}: expected {want} values (shape {shape:?}), found {}",
            source.path().display(),
            values.len()
        )));
    }
    Ok(values)
}

/// The ids as row indices, each checked against the vocabulary.
pub(crate) fn token_ids(spec: &DecoderSpec, input_ids: ArrayView2<i64>) -> Result<Vec<usize>> {
    let (_, t) = input_ids.dim();
    if t == 0 {
        return Err(Error::InvalidArgument(
            "input_ids: expected sequences of at least 1 token, found T = 0".into(),
        ));
    }
    input_ids
        .indexed_iter()
        .map(|((r, c), &id)| {
            usize::try_from(id)
                .ok()
                .filter(|&i| i < spec.vocab_size)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "input_ids[{r}, {c}]: expected a token id in 0..{}, found {id}",
                        spec.vocab_size
                    ))
                })
        })
        .collect()
}

/// RoPE's cos and sin per position and frequency, `[T, head_dim / 2]`.
struct Rope {
    cos: Array2<f32>,
    sin: Array2<f32>,
    head_dim: usize,
}

impl Rope {
    fn new(spec: &DecoderSpec, t: usize) -> Rope {
        let half = spec.head_dim / 2;
        let theta = spec.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / spec.head_dim as f32))
            .collect();
        let angle = Array2::from_shape_fn((t, half), |(p, i)| p as f32 * inv_freq[i]);
        Rope {
            cos: angle.mapv(f32::cos),
            sin: angle.mapv(f32::sin),
            head_dim: spec.head_dim,
        }
    }

    /// Rotates every head of every token of `x` (`[N * T, heads * head_dim]`, token-major, `t`
    /// tokens per sequence): `x1 cos - x2 sin`, `x2 cos + x1 sin` for the halves x1, x2.
    fn apply(&self, x: &mut Array2<f32>, t: usize) {
        let (hd, half) = (self.head_dim, self.head_dim / 2);
        for (row, mut values) in x.axis_iter_mut(Axis(0)).enumerate() {
            let pos = row % t;
            for head in values.exact_chunks_mut(hd) {
                let mut head = head;
                for i in 0..half {
                    let (x1, x2) = (head[i], head[i + half]);
                    let (c, s) = (self.cos[[pos, i]], self.sin[[pos, i]]);
                    head[i] = x1 * c - x2 * s;
                    head[i + half] = x2 * c + x1 * s;
                }
            }
        }
    }
}

/// Causal grouped-query attention: `[N * T, heads * head_dim]` out of q, k and v.
fn attention(
    spec: &DecoderSpec,
    q: &Array2<f32>,
    k: &Array2<f32>,
    v: &Array2<f32>,
    n: usize,
    t: usize,
) -> Array2<f32> {
    let hd = spec.head_dim;
    let group = spec.num_attention_heads / spec.num_key_value_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let heads = spec.num_attention_heads;
    // Every (sequence, head) on the pool: each is small (T x T), there are N x heads of them.
    let parts: Vec<Array2<f32>> = (0..n * heads)
        .into_par_iter()
        .map(|job| {
            let (seq, head) = (job / heads, job % heads);
            let rows = seq * t..(seq + 1) * t;
            let kv = head / group;
            let qh = q.slice(s![rows.clone(), head * hd..(head + 1) * hd]);
            let kh = k.slice(s![rows.clone(), kv * hd..(kv + 1) * hd]);
            let vh = v.slice(s![rows.clone(), kv * hd..(kv + 1) * hd]);
            let mut scores = product(qh, kh.t());
            for (i, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
                row.mapv_inplace(|x| x * scale);
                // Causal: position i sees positions 0..=i.
                let max = row
                    .slice(s![..=i])
                    .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0.0f32;
                for (j, x) in row.iter_mut().enumerate() {
                    *x = if j <= i { (*x - max).exp() } else { 0.0 };
                    sum += *x;
                }
                row.mapv_inplace(|x| x / sum);
            }
            product(scores.view(), vh)
        })
        .collect();
    let mut out = Array2::<f32>::zeros((n * t, heads * hd));
    for (job, ah) in parts.iter().enumerate() {
        let (seq, head) = (job / heads, job % heads);
        out.slice_mut(s![seq * t..(seq + 1) * t, head * hd..(head + 1) * hd])
            .assign(ah);
    }
    out
}

/// A decoder's weights read from a [`TensorSource`] (a checkpoint in transformers' naming, or
/// tensors in memory), each tensor loaded in f32 when it is used.
pub struct SourceWeights<'a>(&'a dyn TensorSource);

impl<'a> SourceWeights<'a> {
    /// `source`'s tensors as the weights of `spec`'s model: every tensor the spec names must be
    /// there with its shape (the error names the source, the tensor, expected and found).
    pub fn new(spec: &DecoderSpec, source: &'a dyn TensorSource) -> Result<SourceWeights<'a>> {
        let have: HashMap<String, Vec<u64>> = source
            .tensors()
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        for (name, shape) in spec.tensors() {
            let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let found = match have.get(&name) {
                Some(s) if *s == want => continue,
                Some(s) => crate::format::safetensors::shape_string(s),
                None => "no such tensor".to_string(),
            };
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {name}: expected shape {}, found {found}",
                source.path().display(),
                crate::format::safetensors::shape_string(&want)
            )));
        }
        Ok(SourceWeights(source))
    }
}

impl SourceWeights<'_> {
    /// Tensor `name` as a matrix of `cols` columns.
    fn matrix(&self, name: &str, cols: usize) -> Result<Array2<f32>> {
        let values = self.0.load_f32(name)?;
        let found = values.len();
        if cols == 0 || found % cols != 0 {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {name}: expected rows of {cols} values, found {found} values",
                self.0.path().display()
            )));
        }
        Array2::from_shape_vec((found / cols, cols), values)
            .map_err(|e| Error::InvalidArgument(format!("tensor {name}: {e}")))
    }
}

impl DecoderWeights for SourceWeights<'_> {
    fn linear(&self, name: &str, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let w = self.matrix(name, x.ncols())?;
        Ok(dot_t(x, w.view()))
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        self.0.load_f32(name)
    }

    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f32>> {
        let path = self.0.path().display();
        let shape = self
            .0
            .tensors()
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| t.shape)
            .ok_or_else(|| Error::InvalidArgument(format!("{path}: no tensor {name}")))?;
        let &[_, cols] = &shape[..] else {
            return Err(Error::InvalidArgument(format!(
                "{path}: tensor {name}: expected a matrix, found shape {shape:?}"
            )));
        };
        let table = self.matrix(name, cols as usize)?;
        select_rows(self.0.path(), name, table.view(), ids)
    }
}

/// A decoder's weights with transformers' `ActQuant` before every product with a weight in
/// `names` (the modules online BitNet quantization converts, spec section 18.3): each input row
/// (a token) quantized to 8 bits, [`quantize_activations`].
pub struct ActivationQuantized<'a> {
    inner: &'a dyn DecoderWeights,
    names: std::collections::BTreeSet<String>,
}

impl<'a> ActivationQuantized<'a> {
    /// `inner`, with the inputs of the products with `names` quantized.
    pub fn new(inner: &'a dyn DecoderWeights, names: std::collections::BTreeSet<String>) -> Self {
        ActivationQuantized { inner, names }
    }
}

impl DecoderWeights for ActivationQuantized<'_> {
    fn linear(&self, name: &str, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        if !self.names.contains(name) {
            return self.inner.linear(name, x);
        }
        let mut q = x.to_owned();
        for row in q.rows_mut() {
            quantize_activations(row);
        }
        self.inner.linear(name, q.view())
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        self.inner.vector(name)
    }

    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f32>> {
        self.inner.rows(name, ids)
    }
}

/// transformers' `ActQuant` on one token's activations, in f32 (spec section 18.3):
/// m = max(max |x_i|, 1e-5), s = 127 / m, x_i = clamp(round_half_even(x_i s), -128, 127) / s.
pub fn quantize_activations(mut x: ndarray::ArrayViewMut1<f32>) {
    let m = x.fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
    let s = 127.0f32 / m;
    x.mapv_inplace(|v| (v * s).round_ties_even().clamp(-128.0, 127.0) / s);
}

/// Rows `ids` of the matrix `name` (from `path`), every id checked against its rows.
pub(crate) fn select_rows(
    path: &std::path::Path,
    name: &str,
    table: ArrayView2<f32>,
    ids: &[usize],
) -> Result<Array2<f32>> {
    if let Some(&id) = ids.iter().find(|&&id| id >= table.nrows()) {
        return Err(Error::InvalidArgument(format!(
            "{}: tensor {name}: token id {id} beyond its {} rows",
            path.display(),
            table.nrows()
        )));
    }
    Ok(table.select(Axis(0), ids))
}

/// A decoder quantized as a bundle holds it: every projection as trits and scales (absmean,
/// `params`), every other tensor as given; its two weight paths are [`QuantizedDecoder::path`].
pub struct QuantizedDecoder {
    path: std::path::PathBuf,
    ternary: HashMap<String, LinearWeight>,
    fp16: HashMap<String, Array2<f32>>,
    plain: HashMap<String, (Vec<f32>, Vec<f32>)>,
    /// Columns of each unquantized matrix (the embedding lookup needs them).
    widths: HashMap<String, usize>,
}

impl QuantizedDecoder {
    /// Quantizes the projections of `spec`'s model from `source`, a tensor at a time.
    pub fn new(
        spec: &DecoderSpec,
        source: &dyn TensorSource,
        params: &QuantParams,
    ) -> Result<QuantizedDecoder> {
        let mut q = QuantizedDecoder {
            path: source.path().to_path_buf(),
            ternary: HashMap::new(),
            fp16: HashMap::new(),
            plain: HashMap::new(),
            widths: HashMap::new(),
        };
        for (name, shape) in spec.tensors() {
            let values = load_tensor(source, &name, &shape)?;
            if is_projection(&name) {
                let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
                let t = quantize(&values, &dims, params).map_err(|e| {
                    let (expected, found) = e.expected_found();
                    Error::from(
                        crate::error::Violation::new(source.path(), e.rule(), expected, found)
                            .tensor(&name),
                    )
                })?;
                let (rows, cols) = (t.rows, t.cols);
                let mut trits = Array2::<f32>::zeros((rows, cols));
                let bpr = params.encoding.bytes_per_row(cols as u64) as usize;
                for (r, row) in trits.axis_iter_mut(Axis(0)).enumerate() {
                    let out = row.into_slice().expect("standard layout");
                    params
                        .encoding
                        .unpack_row_f32(&t.packed[r * bpr..(r + 1) * bpr], out)
                        .map_err(|e| {
                            Error::InvalidArgument(format!(
                                "{}: tensor {name}: row {r} of its trits does not decode: {e}",
                                source.path().display()
                            ))
                        })?;
                }
                let f16s = dequantize_tensor_f16(
                    params.encoding,
                    params.granularity,
                    &t.packed,
                    &t.scales,
                    rows,
                    cols,
                )
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "{}: tensor {name}: its trits do not dequantize: {e}",
                        source.path().display()
                    ))
                })?;
                let fp16 =
                    Array2::from_shape_vec((rows, cols), f16s.iter().map(|h| h.to_f32()).collect())
                        .expect("rows * cols values");
                let t_scales_len = t.scales.len();
                let w = LinearWeight::ternary(trits, t.scales, params.granularity).ok_or_else(
                    || {
                        Error::InvalidArgument(format!(
                            "{}: tensor {name}: {} scales do not fit its {rows} x {cols} trits",
                            source.path().display(),
                            t_scales_len
                        ))
                    },
                )?;
                q.ternary.insert(name.clone(), w);
                q.fp16.insert(name, fp16);
            } else {
                let rounded = values
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_f32())
                    .collect();
                if let [_, cols] = shape[..] {
                    q.widths.insert(name.clone(), cols);
                }
                q.plain.insert(name, (values, rounded));
            }
        }
        Ok(q)
    }

    /// The weights along `path`: trits and scales with the other tensors as given (ternary),
    /// or every tensor as F16 would hold it (FP16).
    pub fn path(&self, path: WeightPath) -> QuantizedPath<'_> {
        QuantizedPath { q: self, path }
    }
}

/// One weight path of a [`QuantizedDecoder`].
pub struct QuantizedPath<'a> {
    q: &'a QuantizedDecoder,
    path: WeightPath,
}

impl QuantizedPath<'_> {
    fn plain(&self, name: &str) -> Result<&[f32]> {
        let (values, rounded) = self.q.plain.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: no tensor {name}", self.q.path.display()))
        })?;
        Ok(match self.path {
            WeightPath::Ternary => values,
            WeightPath::Fp16 => rounded,
        })
    }
}

impl DecoderWeights for QuantizedPath<'_> {
    fn linear(&self, name: &str, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        match self.path {
            WeightPath::Ternary => {
                if let Some(w) = self.q.ternary.get(name) {
                    return Ok(reference::linear(x, w));
                }
            }
            WeightPath::Fp16 => {
                if let Some(w) = self.q.fp16.get(name) {
                    return Ok(dot_t(x, w.view()));
                }
            }
        }
        // An unquantized matrix (the head).
        let values = self.plain(name)?;
        let cols = x.ncols().max(1);
        let w = ArrayView2::from_shape((values.len() / cols, cols), values)
            .map_err(|e| Error::InvalidArgument(format!("tensor {name}: {e}")))?;
        Ok(dot_t(x, w))
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.plain(name)?.to_vec())
    }

    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f32>> {
        let values = self.plain(name)?;
        let width = self.q.widths.get(name).copied().unwrap_or(0).max(1);
        let table = ArrayView2::from_shape((values.len() / width, width), values).map_err(|e| {
            Error::InvalidArgument(format!("{}: tensor {name}: {e}", self.q.path.display()))
        })?;
        select_rows(&self.q.path, name, table, ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_quantized_per_token_as_transformers_act_quant() {
        // s = 127 / max|x| = 127; round half to even: 63.5 -> 64, 31.75 -> 32, 0.508 -> 1.
        let mut x = ndarray::array![[0.5f32, -1.0, 0.25, 0.004], [0.0, 0.0, 0.0, 0.0]];
        for row in x.rows_mut() {
            quantize_activations(row);
        }
        let s = 127.0f32;
        assert_eq!(
            x.row(0).to_vec(),
            vec![64.0 / s, -127.0 / s, 32.0 / s, 1.0 / s]
        );
        // An all-zero token stays zero (max floored at 1e-5, no division by zero).
        assert_eq!(x.row(1).to_vec(), vec![0.0; 4]);
        // A row is its own scale: doubling a token does not change its codes.
        let mut y = ndarray::array![[1.0f32, -2.0, 0.5, 0.008]];
        quantize_activations(y.row_mut(0));
        assert_eq!(
            y.row(0).to_vec(),
            vec![64.0 / 63.5, -2.0, 32.0 / 63.5, 1.0 / 63.5]
        );
    }
}
