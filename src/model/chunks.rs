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

/// Sequences of `tokens` tokens per forward pass of a decoder, so that no activation matrix
/// (the logits `[T, vocab]` of a sequence, the MLP's `[T, intermediate]`) exceeds
/// [`MAX_BATCH_ELEMENTS`] values in a chunk; at least 1.
pub fn decoder_sequences(spec: &DecoderSpec, tokens: usize) -> usize {
    let widest = spec
        .vocab_size
        .max(spec.intermediate_size)
        .max(spec.hidden_size)
        .max(1) as u64;
    (MAX_BATCH_ELEMENTS / (tokens.max(1) as u64).saturating_mul(widest)).max(1) as usize
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
