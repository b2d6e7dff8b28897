//! Small decoders for the tests: a spec of either family, random weights in transformers'
//! naming, and decoder bundles written from them (with a validation set of token sequences).

use std::path::PathBuf;

use ternary_bundle::model::decoder::{DecoderSpec, Family};
use ternary_bundle::source::{MemorySource, TokenIds, ValidationSet};
use ternary_bundle::{write_bundle, BundlePlan, QuantParams, WriteOptions};

/// A two-layer decoder of `family`: vocab 29, hidden 24, intermediate 40, 6 heads (2 KV) of 4.
pub fn spec(family: Family, tied: bool) -> DecoderSpec {
    DecoderSpec {
        family,
        vocab_size: 29,
        hidden_size: 24,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        tie_word_embeddings: tied,
    }
}

/// Rows of whole GGUF blocks (256 columns): hidden 256, intermediate 512, 4 heads (2 KV) of 64,
/// 2 layers, vocab 300.
pub fn spec256(family: Family, tied: bool) -> DecoderSpec {
    DecoderSpec {
        vocab_size: 300,
        hidden_size: 256,
        intermediate_size: 512,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 64,
        ..spec(family, tied)
    }
}

/// Random weights for `s` (norm weights near 1).
pub fn random_model(s: &DecoderSpec) -> MemorySource {
    model_with(s, |_, _| {})
}

/// [`random_model`] with `edit(name, values)` applied to every tensor's values.
pub fn model_with(s: &DecoderSpec, edit: impl Fn(&str, &mut Vec<f32>)) -> MemorySource {
    let mut src = MemorySource::new("random.safetensors");
    for (k, (name, shape)) in s.tensors().into_iter().enumerate() {
        let n = shape.iter().product();
        let mut values = super::values(100 + k as u64, n);
        if shape.len() == 1 {
            values.iter_mut().for_each(|v| *v = 1.0 + *v / 2.0);
        }
        edit(&name, &mut values);
        src = src.with(&name, shape.iter().map(|&d| d as u64).collect(), values);
    }
    src
}

/// `n` sequences of `t` pseudo-random ids of `s`'s vocabulary, labels by shifting, difficulty
/// 1..=10 cycling.
pub fn token_validation(s: &DecoderSpec, n: usize, t: usize) -> ValidationSet {
    let ids: Vec<i64> = super::values(7, n * t)
        .iter()
        .map(|v| ((v + 1.0) / 2.0 * s.vocab_size as f32) as i64 % s.vocab_size as i64)
        .collect();
    let labels = ids.chunks(t).flat_map(|row| row[1..].to_vec()).collect();
    ValidationSet {
        origin: PathBuf::from("tokens.safetensors"),
        inputs: Vec::new(),
        input_ids: Some(TokenIds { tokens: t, ids }),
        labels,
        difficulty: Some((0..n).map(|i| (i % 10 + 1) as u8).collect()),
    }
}

/// The plan of `s`'s bundle: the projections quantized with the default parameters.
pub fn plan(s: &DecoderSpec) -> BundlePlan {
    BundlePlan::of_decoder(s, QuantParams::default())
}

/// A decoder bundle of `family` in `tmp/name`, with a validation set of 4 sequences of 6
/// tokens when `validation`.
pub fn decoder_bundle(
    tmp: &tempfile::TempDir,
    name: &str,
    family: Family,
    tied: bool,
    validation: bool,
) -> PathBuf {
    let s = spec(family, tied);
    let options = WriteOptions {
        validation: validation.then(|| token_validation(&s, 4, 6)),
        ..Default::default()
    };
    let dest = tmp.path().join(name);
    write_bundle(&dest, &random_model(&s), &plan(&s), &options).unwrap();
    dest
}

/// Weights that do a task (as `scripts/decoder_numpy.py make --task` builds them): embedding
/// rows of RMS 1, every layer adding a small term (o_proj and down_proj of RMS 0.1 / sqrt(fan
/// in)), so the head reads the token off the residual stream: a tied model repeats it.
pub fn task_model(s: &DecoderSpec) -> MemorySource {
    let root3 = 3f32.sqrt();
    model_with(s, |name, v| {
        let fan_in = if name == "model.embed_tokens.weight" {
            1
        } else {
            s.hidden_size.max(if name.ends_with("down_proj.weight") {
                s.intermediate_size
            } else {
                1
            })
        };
        let small = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
        let scale = root3 / (fan_in as f32).sqrt() * if small { 0.1 } else { 1.0 };
        if !name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x *= scale);
        }
    })
}

/// `n` sequences of `t` tokens of the copy task (each next token repeats the last), a token
/// replaced by a pseudo-random one with probability 0.06 (d - 1) at difficulty d = 1..=10.
pub fn copy_task(s: &DecoderSpec, n: usize, t: usize) -> ValidationSet {
    let r = super::values(11, n * t * 2);
    let vocab = s.vocab_size as i64;
    let draw = |k: usize| (((r[k] + 1.0) / 2.0 * vocab as f32) as i64).min(vocab - 1);
    let difficulty: Vec<u8> = (0..n).map(|i| (i % 10 + 1) as u8).collect();
    let mut ids = Vec::with_capacity(n * t);
    for (seq, &d) in difficulty.iter().enumerate() {
        let mut last = draw(seq * t * 2);
        ids.push(last);
        for p in 1..t {
            let k = (seq * t + p) * 2;
            if (r[k + 1] + 1.0) / 2.0 < 0.06 * (d - 1) as f32 {
                last = draw(k);
            }
            ids.push(last);
        }
    }
    let labels = ids.chunks(t).flat_map(|row| row[1..].to_vec()).collect();
    ValidationSet {
        origin: PathBuf::from("copy-task.safetensors"),
        inputs: Vec::new(),
        input_ids: Some(TokenIds { tokens: t, ids }),
        labels,
        difficulty: Some(difficulty),
    }
}

/// A 1% error in the backward pass of attention, of the RMSNorms, of the gated MLP: one each.
pub fn wrong_backwards() -> [ternary_bundle::model::decoder64::BackwardHooks; 3] {
    use ternary_bundle::model::decoder64::BackwardHooks;
    [
        BackwardHooks {
            attention: 1.01,
            ..BackwardHooks::default()
        },
        BackwardHooks {
            rmsnorm: 1.01,
            ..BackwardHooks::default()
        },
        BackwardHooks {
            mlp: 1.01,
            ..BackwardHooks::default()
        },
    ]
}
