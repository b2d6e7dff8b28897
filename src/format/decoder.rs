//! The decoder-only language models of a bundle's `model.decoder` (spec rules 2.13 and 2.14):
//! the two families (Llama, BitNet b1.58), their shape and constants as transformers'
//! config.json gives them, and every parameter tensor, named and shaped as transformers names
//! them. The math lives in `model::decoder`; this is what the format says about them.

use crate::format::limits::MAX_LAYERS;

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
        if v.get("quantization_config").is_some_and(|x| !x.is_null()) {
            return Err("quantization_config: expected none: the reference model computes the dense weights in f32, while transformers would quantize weights and activations on the fly; remove the key to read the master weights".into());
        }
        DecoderSpec::from_hf_config_value(v)
    }

    /// [`DecoderSpec::from_hf_config`] of a parsed config.json, whose `quantization_config`
    /// (if any) the caller has read (spec section 18).
    pub fn from_hf_config_value(v: serde_json::Value) -> std::result::Result<DecoderSpec, String> {
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
