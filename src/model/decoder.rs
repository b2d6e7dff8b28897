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

use crate::error::{Error, Result};
use crate::format::quantization::QuantParams;
use crate::model::matmul::{dot_t, product};
use crate::model::reference::{self, rmsnorm, LinearWeight, WeightPath};
use crate::quant::dequantize::dequantize_tensor_f16;
use crate::quant::quantize::quantize;
use crate::source::TensorSource;

/// Most decoder layers a spec may have (real models have under 200): bounds the tensor list an
/// untrusted config makes the reader build.
pub const MAX_LAYERS: usize = 4096;

/// The two decoder families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama: SiLU-gated MLP.
    Llama,
    /// BitNet b1.58: ReLU²-gated MLP, `attn_sub_norm` before `o_proj`, `ffn_sub_norm` before
    /// `down_proj`.
    Bitnet,
}

impl Family {
    /// The name transformers' config uses (`model_type`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Bitnet => "bitnet",
        }
    }
}

/// A decoder's shape and constants, as transformers' config.json gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderSpec {
    /// Family.
    pub family: Family,
    /// Tokens in the vocabulary (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the gated MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Width of a head (even: RoPE rotates halves).
    pub head_dim: usize,
    /// RMSNorm epsilon, added to the mean square.
    pub rms_norm_eps: f32,
    /// RoPE base.
    pub rope_theta: f64,
    /// Whether the output head is `embed_tokens` (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
}

impl DecoderSpec {
    /// Checks that the numbers make a model: every size positive, KV heads dividing heads, an
    /// even head width, BitNet's `attn_sub_norm` (of `hidden_size`) fitting the attention's
    /// output, finite positive constants. The error names the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name}: expected a positive size, found 0"));
        }
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(format!(
                "num_hidden_layers: expected at most {MAX_LAYERS}, found {}",
                self.num_hidden_layers
            ));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(format!(
                "num_key_value_heads: expected a divisor of num_attention_heads ({}), found {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!(
                "head_dim: expected an even width (RoPE rotates halves), found {}",
                self.head_dim
            ));
        }
        let attn = self.num_attention_heads.checked_mul(self.head_dim);
        if self.family == Family::Bitnet && attn != Some(self.hidden_size) {
            return Err(format!(
                "num_attention_heads * head_dim: expected hidden_size ({}) for bitnet (attn_sub_norm has hidden_size weights), found {} * {}",
                self.hidden_size, self.num_attention_heads, self.head_dim
            ));
        }
        // Every tensor's element count, and the model's, must be a number (an untrusted config
        // can hold any sizes): checked here so that nothing after overflows.
        let overflow = || {
            format!(
                "sizes: the tensors of {} layers of hidden {}, intermediate {}, {} heads of {} and vocab {} overflow",
                self.num_hidden_layers,
                self.hidden_size,
                self.intermediate_size,
                self.num_attention_heads,
                self.head_dim,
                self.vocab_size
            )
        };
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(overflow);
        let per_layer = [
            mul(
                mul(self.num_attention_heads, self.head_dim)?,
                self.hidden_size,
            )?,
            mul(
                mul(self.num_key_value_heads, self.head_dim)?,
                self.hidden_size,
            )?,
            mul(self.intermediate_size, self.hidden_size)?,
        ];
        let layer = per_layer.iter().try_fold(0usize, |acc, &n| {
            acc.checked_add(mul(n, 4)?).ok_or_else(overflow)
        })?;
        let embeddings = mul(mul(self.vocab_size, self.hidden_size)?, 2)?;
        mul(layer, self.num_hidden_layers)?
            .checked_add(embeddings)
            .and_then(|total| total.checked_mul(8))
            .ok_or_else(overflow)?;
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps: expected a finite value > 0, found {}",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "rope_theta: expected a finite value > 0, found {}",
                self.rope_theta
            ));
        }
        Ok(())
    }

    /// The spec of a transformers `config.json` (`model_type` "llama" or "bitnet"), with
    /// transformers' defaults: `head_dim` = hidden / heads, `num_key_value_heads` = heads,
    /// `rope_theta` 10000 (read from `rope_parameters` or the older top-level key),
    /// `tie_word_embeddings` false. Refused, naming the key: another model type or activation,
    /// biases, RoPE scaling other than "default", and numbers that do not make a model
    /// ([`DecoderSpec::check`]).
    pub fn from_hf_config(text: &str) -> std::result::Result<DecoderSpec, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let str_key = |k: &str| v.get(k).and_then(|x| x.as_str());
        let family = match str_key("model_type") {
            Some("llama") => Family::Llama,
            Some("bitnet") => Family::Bitnet,
            Some(other) => {
                return Err(format!(
                    "model_type: expected \"llama\" or \"bitnet\", found {other:?}"
                ))
            }
            None => return Err("model_type: expected \"llama\" or \"bitnet\", found none".into()),
        };
        let act = match family {
            Family::Llama => "silu",
            Family::Bitnet => "relu2",
        };
        let found_act = str_key("hidden_act").unwrap_or(act);
        if found_act != act {
            return Err(format!(
                "hidden_act: expected {act:?} for {}, found {found_act:?}",
                family.name()
            ));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if v.get(key).and_then(|x| x.as_bool()) == Some(true) {
                return Err(format!("{key}: expected false (no biases), found true"));
            }
        }
        let size = |k: &str| -> std::result::Result<Option<usize>, String> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| format!("{k}: expected a non-negative integer, found {x}")),
            }
        };
        let need = |k: &str| size(k)?.ok_or_else(|| format!("{k}: missing"));
        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        let rope = v.get("rope_parameters");
        if let Some(t) = rope
            .and_then(|r| r.get("rope_type"))
            .and_then(|t| t.as_str())
        {
            if t != "default" {
                return Err(format!(
                    "rope_parameters.rope_type: expected \"default\", found {t:?}"
                ));
            }
        }
        if v.get("quantization_config").is_some_and(|x| !x.is_null()) {
            return Err("quantization_config: expected none: the reference model computes the dense weights in f32, while transformers would quantize weights and activations on the fly; remove the key to read the master weights".into());
        }
        if v.get("rope_scaling").is_some_and(|x| !x.is_null()) {
            return Err("rope_scaling: expected none (plain RoPE)".into());
        }
        let theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| v.get("rope_theta"));
        // transformers' defaults differ by family.
        let (default_theta, default_eps) = match family {
            Family::Llama => (10000.0, 1e-6),
            Family::Bitnet => (500000.0, 1e-5),
        };
        let rope_theta = match theta {
            None => default_theta,
            Some(x) => x
                .as_f64()
                .ok_or_else(|| format!("rope_theta: expected a number, found {x}"))?,
        };
        let eps = match v.get("rms_norm_eps") {
            None => default_eps,
            Some(x) => x
                .as_f64()
                .ok_or_else(|| format!("rms_norm_eps: expected a number, found {x}"))?,
        };
        let spec = DecoderSpec {
            family,
            vocab_size: need("vocab_size")?,
            hidden_size,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: size("num_key_value_heads")?.unwrap_or(num_attention_heads),
            head_dim: match size("head_dim")? {
                Some(d) => d,
                None if num_attention_heads > 0 => hidden_size / num_attention_heads,
                None => 0,
            },
            rms_norm_eps: eps as f32,
            rope_theta,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
        };
        spec.check()?;
        Ok(spec)
    }

    /// Every parameter tensor, named and shaped as transformers names them, in model order
    /// (sizes saturate for a spec that fails [`DecoderSpec::check`]).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let (q, kv) = (
            self.num_attention_heads.saturating_mul(hd),
            self.num_key_value_heads.saturating_mul(hd),
        );
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            out.push((p("input_layernorm.weight"), vec![h]));
            out.push((p("self_attn.q_proj.weight"), vec![q, h]));
            out.push((p("self_attn.k_proj.weight"), vec![kv, h]));
            out.push((p("self_attn.v_proj.weight"), vec![kv, h]));
            if self.family == Family::Bitnet {
                out.push((p("self_attn.attn_sub_norm.weight"), vec![h]));
            }
            out.push((p("self_attn.o_proj.weight"), vec![h, q]));
            out.push((p("post_attention_layernorm.weight"), vec![h]));
            out.push((p("mlp.gate_proj.weight"), vec![i, h]));
            out.push((p("mlp.up_proj.weight"), vec![i, h]));
            if self.family == Family::Bitnet {
                out.push((p("mlp.ffn_sub_norm.weight"), vec![i]));
            }
            out.push((p("mlp.down_proj.weight"), vec![h, i]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        out
    }
}

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
/// `input_ids` (`[N, T]`, every id < `vocab_size`, T >= 1).
pub fn forward(
    spec: &DecoderSpec,
    weights: &dyn DecoderWeights,
    input_ids: ArrayView2<i64>,
) -> Result<Array3<f32>> {
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
    let h = norm(&h, "model.norm.weight")?;
    let head = if spec.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let logits = linear(head, h.view(), spec.vocab_size)?;
    logits
        .into_shape_with_order((n, t, spec.vocab_size))
        .map_err(|e| Error::InvalidArgument(format!("logits of {head}: {e}")))
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
    let mut out = Array2::<f32>::zeros((n * t, spec.num_attention_heads * hd));
    for seq in 0..n {
        let rows = seq * t..(seq + 1) * t;
        for head in 0..spec.num_attention_heads {
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
            let ah = product(scores.view(), vh);
            out.slice_mut(s![rows.clone(), head * hd..(head + 1) * hd])
                .assign(&ah);
        }
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

/// Rows `ids` of the matrix `name` (from `path`), every id checked against its rows.
fn select_rows(
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

/// The seven projections of a decoder layer: the tensors a bundle quantizes by default.
pub const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// Whether `name` is one of the projections of a layer (`model.layers.{i}.<projection>`).
pub fn is_projection(name: &str) -> bool {
    name.strip_prefix("model.layers.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(i, p)| i.parse::<usize>().is_ok() && PROJECTIONS.contains(&p))
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
