//! The built-in language-model demo (`bundle demo --model lm`, `bundle create --demo lm`): a
//! tiny BitNet b1.58 decoder (hidden 256, 4 layers, 8 heads and 2 KV heads of 32, intermediate
//! 512, vocabulary 1,000, untied head; 2.75 M parameters) that does a task, so that its
//! accuracy and retention mean something. Everything comes from ChaCha8 streams of one seed.
//!
//! The task, a *successor language*: the token after x is succ(x) = (7x + 3) mod 1000 (7 is
//! prime to 1000, so succ is a permutation). A validation sequence starts at a random token and
//! follows succ, each next token replaced by a uniform one with probability 0.06 (d − 1) at
//! difficulty d = 1..10: a model that knows the rule is right at about 1 − 0.06 (d − 1) of the
//! positions (100% at level 1, 46% at level 10, 75% near level 5).
//!
//! The model knows the rule by construction rather than by training: the residual stream
//! carries the token's embedding (rows of RMS 1), the head's row y is the embedding of
//! succ⁻¹(y) (times 0.05), so the logits of x peak at succ(x) with a margin of about 10, and
//! every layer adds a small term (o_proj and down_proj of RMS
//! 0.1 / sqrt(fan in); the other projections of RMS 1 / sqrt(fan in), norms near 1). Quantizing
//! the projections changes those terms, not the decisions: retention stays near 100%, and a
//! model whose layers carried the decisions would show what quantization costs it.

use std::path::{Path, PathBuf};

use ndarray_rand::rand::{Rng, SeedableRng};
use ndarray_rand::rand_distr::StandardNormal;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::format::decoder::{DecoderSpec, Family};
use crate::format::quantization::QuantParams;
use crate::format::safetensors::Dtype;
use crate::source::{SourceTensor, TensorSource, TokenIds, ValidationSet};
use crate::write::plan::BundlePlan;

/// Sequences per difficulty level of the validation set.
pub const SEQUENCES_PER_LEVEL: usize = 20;
/// Tokens per validation sequence.
pub const TOKENS: usize = 32;
/// Difficulty levels.
pub const LEVELS: u8 = 10;

/// Factor of the head's rows: the logit of succ(x) is about 0.05 x 256 = 12.8 above the
/// others' (of spread 0.8), confident but not so sure that a noisy position costs the
/// cross-entropy hundreds of nats.
pub const HEAD_SCALE: f32 = 0.05;

/// The demo decoder's shape and constants.
pub fn demo_lm_spec() -> DecoderSpec {
    DecoderSpec {
        family: Family::Bitnet,
        vocab_size: 1000,
        hidden_size: 256,
        intermediate_size: 512,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        head_dim: 32,
        rms_norm_eps: 1e-5,
        rope_theta: 500000.0,
        tie_word_embeddings: false,
    }
}

/// succ(x) = (7x + 3) mod vocab: the task's rule.
pub fn successor(x: usize, vocab: usize) -> usize {
    (7 * x + 3) % vocab
}

/// The demo language model as a tensor source: each tensor generated when loaded.
#[derive(Debug, Clone)]
pub struct DemoLm {
    seed: u64,
    spec: DecoderSpec,
    label: PathBuf,
}

impl DemoLm {
    /// The demo LM of `seed`.
    pub fn new(seed: u64) -> Self {
        DemoLm {
            seed,
            spec: demo_lm_spec(),
            label: PathBuf::from(format!("demo-lm(seed {seed})")),
        }
    }

    /// Its shape and constants.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// The plan: the seven projections of every layer quantized with `params`.
    pub fn plan(&self, params: QuantParams) -> BundlePlan {
        BundlePlan::of_decoder(&self.spec, params)
    }

    /// The validation set: 20 sequences of 32 tokens at each difficulty 1..10 (stream 1 of
    /// the seed), labels the next tokens.
    pub fn validation_set(&self) -> ValidationSet {
        let vocab = self.spec.vocab_size;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(1);
        let n = SEQUENCES_PER_LEVEL * LEVELS as usize;
        let difficulty: Vec<u8> = (0..n).map(|i| (i % LEVELS as usize) as u8 + 1).collect();
        let mut ids = Vec::with_capacity(n * TOKENS);
        for &d in &difficulty {
            let mut token = rng.random_range(0..vocab);
            ids.push(token as i64);
            for _ in 1..TOKENS {
                token = if rng.random::<f64>() < 0.06 * f64::from(d - 1) {
                    rng.random_range(0..vocab)
                } else {
                    successor(token, vocab)
                };
                ids.push(token as i64);
            }
        }
        let labels = ids.chunks(TOKENS).flat_map(|s| s[1..].to_vec()).collect();
        ValidationSet {
            origin: self.label.join("validation"),
            inputs: Vec::new(),
            input_ids: Some(TokenIds {
                tokens: TOKENS,
                ids,
            }),
            labels,
            difficulty: Some(difficulty),
        }
    }

    /// Standard normal values of tensor `k` (stream `k + 2` of the seed) times `scale`.
    fn normal(&self, k: usize, n: usize, scale: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(k as u64 + 2);
        (0..n)
            .map(|_| rng.sample::<f32, _>(StandardNormal) * scale)
            .collect()
    }
}

impl TensorSource for DemoLm {
    fn path(&self) -> &Path {
        &self.label
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.spec
            .tensors()
            .into_iter()
            .map(|(name, shape)| SourceTensor {
                name,
                shape: shape.iter().map(|&d| d as u64).collect(),
                dtype: Dtype::F32,
            })
            .collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let tensors = self.spec.tensors();
        let k = tensors.iter().position(|(n, _)| n == name).ok_or_else(|| {
            Error::InvalidArgument(format!("no tensor {name} in {}", self.label.display()))
        })?;
        let shape = &tensors[k].1;
        let n: usize = shape.iter().product();
        let fan_in = shape.get(1).copied().unwrap_or(1) as f32;
        Ok(match name {
            "model.embed_tokens.weight" => self.normal(k, n, 1.0),
            "lm_head.weight" => {
                // Row y is the embedding of succ⁻¹(y), times HEAD_SCALE: the logits of x peak
                // at succ(x).
                let (vocab, h) = (self.spec.vocab_size, self.spec.hidden_size);
                let embed = self.load_f32("model.embed_tokens.weight")?;
                let mut head = vec![0f32; n];
                for x in 0..vocab {
                    let y = successor(x, vocab);
                    for (o, e) in head[y * h..(y + 1) * h].iter_mut().zip(&embed[x * h..]) {
                        *o = e * HEAD_SCALE;
                    }
                }
                head
            }
            _ if shape.len() == 1 => self
                .normal(k, n, 0.05)
                .into_iter()
                .map(|v| 1.0 + v)
                .collect(),
            _ if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") => {
                self.normal(k, n, 0.1 / fan_in.sqrt())
            }
            _ => self.normal(k, n, 1.0 / fan_in.sqrt()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_head_reads_the_successor_and_the_data_follows_it_at_level_1() {
        let lm = DemoLm::new(5);
        let vocab = lm.spec().vocab_size;
        let succ: BTreeSet<usize> = (0..vocab).map(|x| successor(x, vocab)).collect();
        assert_eq!(succ.len(), vocab, "succ is a permutation");
        let v = lm.validation_set();
        let ids = &v.input_ids.as_ref().unwrap().ids;
        assert_eq!(ids.len(), 200 * TOKENS);
        // Level 1 (sequence 0) has no noise: every label is the successor of its token.
        for (label, id) in v.labels.iter().zip(ids).take(TOKENS - 1) {
            assert_eq!(*label as usize, successor(*id as usize, vocab));
        }
        // Level 10 (sequence 9) is far from the rule.
        let off = (0..TOKENS - 1)
            .filter(|&p| {
                v.labels[9 * (TOKENS - 1) + p] as usize
                    != successor(ids[9 * TOKENS + p] as usize, vocab)
            })
            .count();
        assert!(off >= 5, "{off}");
        // Another seed, other weights.
        let a = lm.load_f32("model.layers.0.mlp.up_proj.weight").unwrap();
        let b = DemoLm::new(6)
            .load_f32("model.layers.0.mlp.up_proj.weight")
            .unwrap();
        assert_ne!(a, b);
    }
}
