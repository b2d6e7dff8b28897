//! The built-in language-model demo (`bundle demo --model lm`, `bundle create --demo lm`): the
//! trained fixture of `fixtures/lm`, embedded in the binary. A Llama-family decoder (hidden 96,
//! 4 layers, 4 heads and 2 KV heads of 24, intermediate 256, a character vocabulary of 63,
//! untied head; 418,464 parameters) trained with quantization-aware training (its seven
//! projections per layer ternary in the forward pass, straight-through gradients) on the first
//! 300 KB of Shakespeare by `scripts/train_lm.py`, a third of its sequences a chunk of text
//! repeated, so that it learned to copy from context: attention, positions and every layer
//! matter (removing a layer, swapping two heads or changing the RoPE base moves its next-token
//! distribution by 0.09 to 3 nats, spec section 16.3).
//!
//! Its bundle stores the weights it was trained as (their ternary forward pass is the original
//! model, spec section 7.2), the tokenizer, and a validation set cut from the held-out text
//! (`fixtures/lm/validation.txt`) with difficulty levels: a sequence is a chunk of
//! [`CHUNK`] characters repeated to [`TOKENS`], and at difficulty d = 1..10 each character after
//! the first chunk is replaced by a uniform one with probability 0.03 (d − 1). The first chunk
//! is Shakespeare to predict (about half right); the repeats are copied (nearly all right when
//! clean), so accuracy falls with the noise and crosses 75% at a low level. The seed chooses
//! the chunks and the noise, never the weights.

use std::path::{Path, PathBuf};

use ndarray_rand::rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::format::decoder::DecoderSpec;
use crate::format::quantization::QuantParams;
use crate::format::safetensors::{parse_header_from_bytes, Dtype};
use crate::source::{AssetFile, SourceTensor, TensorSource, TokenIds, ValidationSet};
use crate::write::plan::BundlePlan;

/// The trained model's transformers config.
const CONFIG: &str = include_str!("../../fixtures/lm/config.json");
/// Its master weights (F32).
const WEIGHTS: &[u8] = include_bytes!("../../fixtures/lm/model.safetensors");
/// Its character tokenizer (Hugging Face `tokenizers` JSON).
pub const TOKENIZER: &str = include_str!("../../fixtures/lm/tokenizer.json");
/// The held-out text the validation set is cut from.
const VALIDATION_TEXT: &str = include_str!("../../fixtures/lm/validation.txt");

/// Sequences per difficulty level of the validation set.
pub const SEQUENCES_PER_LEVEL: usize = 20;
/// Tokens (characters) per validation sequence.
pub const TOKENS: usize = 48;
/// Characters of the chunk a sequence repeats.
pub const CHUNK: usize = 16;
/// Difficulty levels.
pub const LEVELS: u8 = 10;
/// Probability, per level above 1, that a character after the first chunk is replaced by a
/// uniform one.
pub const NOISE: f64 = 0.03;

/// The demo language model as a tensor source: the embedded trained weights.
#[derive(Debug, Clone)]
pub struct DemoLm {
    seed: u64,
    spec: DecoderSpec,
    label: PathBuf,
}

impl DemoLm {
    /// The demo LM, its validation set drawn with `seed`.
    pub fn new(seed: u64) -> Self {
        DemoLm {
            seed,
            spec: DecoderSpec::from_hf_config(CONFIG).expect("the embedded config is valid"),
            label: PathBuf::from("demo-lm (fixtures/lm)"),
        }
    }

    /// Its shape and constants.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// The plan: the seven projections of every layer quantized with `params` (the defaults
    /// are those it was trained with: per row, absmean, epsilon 1e-5, threshold 0.5).
    pub fn plan(&self, params: QuantParams) -> BundlePlan {
        BundlePlan::of_decoder(&self.spec, params)
    }

    /// The tokenizer, carried into the bundle as an asset (format 4.0, rule 1.6).
    pub fn assets(&self) -> Vec<AssetFile> {
        vec![AssetFile {
            name: "tokenizer.json".into(),
            bytes: TOKENIZER.as_bytes().to_vec(),
        }]
    }

    /// The held-out text as token ids.
    fn validation_ids(&self) -> Result<Vec<i64>> {
        let tokenizer = tokenizers::Tokenizer::from_bytes(TOKENIZER.as_bytes())
            .map_err(|e| Error::InvalidArgument(format!("the demo's tokenizer: {e}")))?;
        let encoding = tokenizer
            .encode(VALIDATION_TEXT, false)
            .map_err(|e| Error::InvalidArgument(format!("the demo's validation text: {e}")))?;
        Ok(encoding.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// The validation set: [`SEQUENCES_PER_LEVEL`] sequences of [`TOKENS`] characters at each
    /// difficulty 1..10 (ChaCha8 of the seed, stream 1), labels the next characters.
    pub fn validation_set(&self) -> ValidationSet {
        let text = self
            .validation_ids()
            .expect("the embedded tokenizer reads its text");
        let vocab = self.spec.vocab_size;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(1);
        let n = SEQUENCES_PER_LEVEL * LEVELS as usize;
        let difficulty: Vec<u8> = (0..n).map(|i| (i % LEVELS as usize) as u8 + 1).collect();
        let mut ids = Vec::with_capacity(n * TOKENS);
        for &d in &difficulty {
            let start = rng.random_range(0..text.len() - CHUNK);
            let chunk = &text[start..start + CHUNK];
            for p in 0..TOKENS {
                let noisy = p >= CHUNK && rng.random::<f64>() < NOISE * f64::from(d - 1);
                ids.push(if noisy {
                    rng.random_range(0..vocab) as i64
                } else {
                    chunk[p % CHUNK]
                });
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
        // The crate's own container reader: rules 3.2 to 3.6 proved every range in bounds.
        let header = parse_header_from_bytes(&self.label, WEIGHTS)?;
        let e = header.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("no tensor {name} in {}", self.label.display()))
        })?;
        let start = header.data_start() as usize;
        let bytes = &WEIGHTS[start + e.start as usize..start + e.end as usize];
        Ok(crate::format::le::f32s(bytes).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_is_whole_and_the_levels_add_noise_after_the_first_chunk() {
        let lm = DemoLm::new(5);
        for t in lm.tensors() {
            let v = lm.load_f32(&t.name).unwrap();
            assert_eq!(
                v.len() as u64,
                t.shape.iter().product::<u64>(),
                "{}",
                t.name
            );
        }
        let v = lm.validation_set();
        let ids = &v.input_ids.as_ref().unwrap().ids;
        assert_eq!(ids.len(), 200 * TOKENS);
        // Level 1 (sequences 0, 10, ...) repeats its chunk exactly; at level 10 (sequences 9,
        // 19, ...) a share 0.27 of the copied characters is replaced (one in 63 by itself).
        let changed = |level: usize| {
            let n: usize = (0..SEQUENCES_PER_LEVEL)
                .map(|k| {
                    let s = k * LEVELS as usize + level - 1;
                    (CHUNK..TOKENS)
                        .filter(|&p| ids[s * TOKENS + p] != ids[s * TOKENS + p % CHUNK])
                        .count()
                })
                .sum();
            n as f64 / (SEQUENCES_PER_LEVEL * (TOKENS - CHUNK)) as f64
        };
        assert_eq!(changed(1), 0.0);
        let expected = NOISE * 9.0 * 62.0 / 63.0;
        assert!((changed(10) - expected).abs() < 0.06, "{}", changed(10));
        // The seed chooses the data, not the weights.
        assert_ne!(DemoLm::new(6).validation_set().input_ids, v.input_ids);
    }
}
