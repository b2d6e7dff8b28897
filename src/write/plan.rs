//! What to build: the architecture, the quantization settings and which tensors to quantize,
//! with the default choice (every 2-D layer weight of the model) or glob patterns.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::format::manifest::{ModelSpec, QuantSourceSpec};
use crate::format::quantization::QuantParams;
use crate::source::SourceTensor;

/// What to build: the architecture, the quantization settings and which tensors to quantize.
#[derive(Debug, Clone, PartialEq)]
pub struct BundlePlan {
    /// The model the reference model runs (manifest `model`).
    pub model: ModelSpec,
    /// Quantization settings.
    pub params: QuantParams,
    /// Names of the source tensors to quantize; every other tensor is stored as F32/F16.
    pub quantize: BTreeSet<String>,
    /// For a source that is already ternary: where its trits and scales come from (method
    /// `given`, spec section 7.1). Every tensor of `quantize` is then taken from
    /// [`crate::source::TensorSource::given`], never quantized; `params` gives only the
    /// encoding and granularity.
    pub given: Option<QuantSourceSpec>,
}

impl BundlePlan {
    /// The plan of a decoder: the seven projections of every layer quantized with `params`
    /// (the default choice of [`select_quantized`]).
    pub fn of_decoder(spec: &crate::format::decoder::DecoderSpec, params: QuantParams) -> Self {
        BundlePlan {
            model: ModelSpec::of_decoder(spec),
            params,
            quantize: spec
                .tensors()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| crate::format::decoder::is_projection(n))
                .collect(),
            given: None,
        }
    }
}

/// The tensors to quantize: those matching any of `patterns` (globs: `*`, `?`, `[abc]`; a
/// pattern that matches nothing is an error), or by default every 2-D tensor named `*.weight`
/// that is a layer weight of `model` (for a decoder: the seven projections of every layer).
pub fn select_quantized(
    tensors: &[SourceTensor],
    model: &ModelSpec,
    patterns: &[String],
) -> Result<BTreeSet<String>> {
    if patterns.is_empty() && model.decoder.is_some() {
        // A decoder: the seven projections of every layer (embeddings, norms and an untied head
        // stay F32).
        return Ok(tensors
            .iter()
            .filter(|t| crate::format::decoder::is_projection(&t.name))
            .map(|t| t.name.clone())
            .collect());
    }
    if patterns.is_empty() {
        let layer_weights: BTreeSet<&str> =
            model.layers.iter().map(|l| l.weight.as_str()).collect();
        return Ok(tensors
            .iter()
            .filter(|t| {
                t.shape.len() == 2
                    && t.name.ends_with(".weight")
                    && layer_weights.contains(t.name.as_str())
            })
            .map(|t| t.name.clone())
            .collect());
    }
    let mut chosen = BTreeSet::new();
    for p in patterns {
        let glob = glob::Pattern::new(p)
            .map_err(|e| Error::InvalidArgument(format!("--quantize {p}: {e}")))?;
        let before = chosen.len();
        chosen.extend(
            tensors
                .iter()
                .filter(|t| glob.matches(&t.name))
                .map(|t| t.name.clone()),
        );
        if chosen.len() == before && !tensors.iter().any(|t| glob.matches(&t.name)) {
            return Err(Error::InvalidArgument(format!(
                "--quantize {p}: matches no tensor of the checkpoint"
            )));
        }
    }
    Ok(chosen)
}
