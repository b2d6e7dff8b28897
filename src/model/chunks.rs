//! How many samples the model checks run at once. Widths and sample counts multiply: a
//! validation set of a million one-wide samples and a layer 100,000 wide are both small, but the
//! whole batch through that layer would need hundreds of GB. So forward passes run in chunks of
//! [`chunk_rows`] samples (at most [`MAX_BATCH_ELEMENTS`] activations per matrix), and the
//! gradient batches are cut to [`gradient_rows`] (spec section 17, "Memory of the model checks").

use crate::format::decoder::DecoderSpec;
use crate::format::manifest::ModelSpec;

/// Most elements in one activation matrix of the model checks (samples × width): 2^24, 64 MiB
/// of f32.
pub const MAX_BATCH_ELEMENTS: u64 = 1 << 24;

/// Samples per chunk for a forward pass that holds one activation matrix at a time: as many as
/// fit [`MAX_BATCH_ELEMENTS`] at the model's widest point, at least 1.
pub fn chunk_rows(model: &ModelSpec) -> usize {
    let widest = model
        .layers
        .iter()
        .map(|l| l.out_features)
        .chain([model.input_dim])
        .max()
        .unwrap_or(1)
        .max(1);
    (MAX_BATCH_ELEMENTS / widest).max(1) as usize
}

/// Samples that fit a pass keeping every layer's activations (the gradient checks): at most
/// `limit`, and no more than [`MAX_BATCH_ELEMENTS`] over the sum of all widths, at least 1.
pub fn gradient_rows(model: &ModelSpec, limit: usize) -> usize {
    let widths = model
        .layers
        .iter()
        .fold(model.input_dim, |s, l| s.saturating_add(l.out_features))
        .max(1);
    ((MAX_BATCH_ELEMENTS / widths).max(1) as usize).min(limit)
}

/// Most logits of one forward pass of a decoder (`[sequences × T, vocab]`): 2^27, 512 MiB of
/// f32. The head's output is the widest matrix of a language model by far (a vocabulary of
/// 128,256 against an MLP of 6,912), and under [`MAX_BATCH_ELEMENTS`] it would cut a pass to
/// one sequence of 128 tokens, so that every weight is read and converted once per sequence.
pub const MAX_LOGITS: u64 = 1 << 27;

/// Sequences of `tokens` tokens per forward pass of a decoder, so that no activation matrix
/// inside the layers (the MLP's `[T, intermediate]`, the residual stream) exceeds
/// [`MAX_BATCH_ELEMENTS`] values and the logits `[T, vocab]` of the chunk [`MAX_LOGITS`]; at
/// least 1.
pub fn decoder_sequences(spec: &DecoderSpec, tokens: usize) -> usize {
    let logits = MAX_LOGITS / (tokens.max(1) as u64).saturating_mul(spec.vocab_size.max(1) as u64);
    decoder_layer_sequences(spec, tokens).min(logits.max(1) as usize)
}

/// Sequences of `tokens` tokens per pass through the layers of a decoder when the head runs
/// a piece of rows at a time ([`head_rows`]): no activation matrix inside the layers exceeds
/// [`MAX_BATCH_ELEMENTS`] values; at least 1.
pub fn decoder_layer_sequences(spec: &DecoderSpec, tokens: usize) -> usize {
    let widest = spec.intermediate_size.max(spec.hidden_size).max(1) as u64;
    (MAX_BATCH_ELEMENTS / (tokens.max(1) as u64).saturating_mul(widest)).max(1) as usize
}

/// Most logits of one piece when the head runs a piece of positions at a time: 2^26, 256 MiB
/// of f32 (each piece reads the head's weights once: a vocabulary of 128,256 gives 523
/// positions a piece).
pub const MAX_HEAD_PIECE: u64 = 1 << 26;

/// Rows of logits per piece when the head runs a piece at a time: [`MAX_HEAD_PIECE`] logits;
/// at least 1.
pub fn head_rows(spec: &DecoderSpec) -> usize {
    (MAX_HEAD_PIECE / spec.vocab_size.max(1) as u64).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::LayerSpec;

    fn model(input_dim: u64, widths: &[u64]) -> ModelSpec {
        let mut prev = input_dim;
        let layers = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let l = LayerSpec {
                    name: format!("l{i}"),
                    weight: format!("l{i}.weight"),
                    bias: None,
                    in_features: prev,
                    out_features: w,
                    activation: "relu".into(),
                    rmsnorm: None,
                };
                prev = w;
                l
            })
            .collect();
        ModelSpec {
            input_dim,
            layers,
            decoder: None,
        }
    }

    #[test]
    fn chunk_sizes_follow_the_widest_layer_and_the_sum_of_widths() {
        // The demo model fits 256 samples in one chunk and a whole gradient batch.
        let demo = model(512, &[4096, 4096, 1536, 100]);
        assert_eq!(chunk_rows(&demo), (1 << 24) / 4096);
        assert_eq!(gradient_rows(&demo, 32), 32);
        // A 100,000-wide layer: 167 samples per chunk, gradient batch cut to fit.
        let wide = model(1, &[100_000, 2]);
        assert_eq!(chunk_rows(&wide), 167);
        assert_eq!(gradient_rows(&wide, 32), 32);
        assert_eq!(gradient_rows(&wide, 1000), 167);
        // Wider than the budget: still one sample at a time, never zero.
        let huge = model(1, &[1 << 30, 1]);
        assert_eq!((chunk_rows(&huge), gradient_rows(&huge, 4)), (1, 1));
    }
}
