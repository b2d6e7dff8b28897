//! The original model: whose decisions `original_predictions` record and retention compares
//! with (spec rule 2.16). Its weights are a source's, read dense, or through the quantizer where
//! the model ternarizes in its own forward pass (quantization-aware training, section 7.2), and
//! for transformers' online BitNet quantization with each projection's input quantized to 8
//! bits per token (section 18.3). The writer runs it for `original_predictions`, and `verify
//! --reference` runs it again.

use std::collections::BTreeSet;

use ndarray::{Array2, Array3, ArrayView2};

use crate::error::{Error, Result};
use crate::format::activation::Activation;
use crate::format::decoder::DecoderSpec;
use crate::format::manifest::{ModelSpec, OriginalForward};
use crate::format::quantization::{Granularity, QuantParams};
use crate::model::chunks::chunk_rows;
use crate::model::decoder::{self, ActivationQuantized, DecoderWeights, SourceWeights};
use crate::model::distribution::{Distributions, Form};
use crate::model::reference::{argmax_rows, forward_source};
use crate::source::ternarized::Ternarized;
use crate::source::TensorSource;

/// The original model: a source of weights and how its forward pass reads them.
pub struct OriginalModel<'a> {
    forward: OriginalForward,
    dense: &'a dyn TensorSource,
    ternarized: Option<Ternarized<'a>>,
}

/// What the original model predicts on a validation set: its argmax at every scored sample
/// (rule 6.3) and, when asked for, its distributions (rule 6.4).
#[derive(Debug, Clone)]
pub struct OriginalOutputs {
    /// The prediction at each scored sample.
    pub predictions: Vec<usize>,
    /// The distributions, in the form asked for.
    pub distributions: Option<Distributions>,
}

impl OriginalOutputs {
    fn new(form: Option<Form>, classes: usize, rows: usize) -> Self {
        OriginalOutputs {
            predictions: Vec::with_capacity(rows),
            distributions: form.map(|f| Distributions::new(f, classes)),
        }
    }

    /// Adds the scored samples of `logits` (a row each); `labels` are every sample's, from
    /// the first.
    fn push(&mut self, logits: ArrayView2<f32>, labels: &[i64]) -> Result<()> {
        let first = self.predictions.len();
        self.predictions.extend(argmax_rows(&logits));
        if let Some(d) = &mut self.distributions {
            let labels = labels.get(first..first + logits.nrows()).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{} labels for {} scored samples",
                    labels.len(),
                    first + logits.nrows()
                ))
            })?;
            d.push_rows(logits, labels)?;
        }
        Ok(())
    }
}

/// The settings of transformers' online BitNet weight quantization (`WeightQuant`, spec
/// section 18.3): absmean per tensor, epsilon 1e-5, round half to even.
pub fn bitnet_online_params() -> QuantParams {
    QuantParams {
        granularity: Granularity::Tensor,
        epsilon: 1e-5,
        sparsity_threshold: 0.5,
        ..QuantParams::default()
    }
}

impl<'a> OriginalModel<'a> {
    /// `source` as read (forward `dense`).
    pub fn dense(source: &'a dyn TensorSource) -> Self {
        OriginalModel {
            forward: OriginalForward::Dense,
            dense: source,
            ternarized: None,
        }
    }

    /// `source` with the tensors `names` replaced by f32(t × scale) of their quantization with
    /// `params` (forward `ternary`, spec section 7.2).
    pub fn ternary(
        source: &'a dyn TensorSource,
        names: BTreeSet<String>,
        params: QuantParams,
    ) -> Result<Self> {
        Ok(OriginalModel {
            forward: OriginalForward::Ternary,
            dense: source,
            ternarized: Some(Ternarized::new(source, names, params)?),
        })
    }

    /// transformers' online BitNet model of `source` (forward `bitnet-online`, spec section
    /// 18.3): the modules `converted` (weight names) ternarized per tensor, their inputs
    /// quantized to 8 bits per token.
    pub fn bitnet_online(
        source: &'a dyn TensorSource,
        converted: BTreeSet<String>,
    ) -> Result<Self> {
        Ok(OriginalModel {
            forward: OriginalForward::BitnetOnline,
            dense: source,
            ternarized: Some(Ternarized::new(source, converted, bitnet_online_params())?),
        })
    }

    /// How it runs.
    pub fn forward(&self) -> OriginalForward {
        self.forward
    }

    /// The source of its weights.
    pub fn source(&self) -> &'a dyn TensorSource {
        self.dense
    }

    /// Its weights as its forward pass reads them.
    fn weights(&self) -> &dyn TensorSource {
        match &self.ternarized {
            Some(t) => t,
            None => self.dense,
        }
    }

    /// Runs `f` on the decoder weights its forward pass reads: its (ternarized) weights, with
    /// the inputs of the converted projections quantized for bitnet-online.
    fn with_decoder<T>(
        &self,
        spec: &DecoderSpec,
        f: impl FnOnce(&dyn DecoderWeights) -> Result<T>,
    ) -> Result<T> {
        let weights = SourceWeights::new(spec, self.weights())?;
        match (&self.forward, &self.ternarized) {
            (OriginalForward::BitnetOnline, Some(t)) => {
                f(&ActivationQuantized::new(&weights, t.names().clone()))
            }
            _ => f(&weights),
        }
    }

    /// The logits `[N, T, vocab]` of the decoder `spec` on `ids` (`[N, T]`).
    pub fn decoder_logits(&self, spec: &DecoderSpec, ids: ArrayView2<i64>) -> Result<Array3<f32>> {
        self.with_decoder(spec, |w| decoder::forward(spec, w, ids))
    }

    /// The decoder's next-token predictions at every position but the last, a chunk of
    /// sequences at a time (what `original_predictions` records).
    pub fn decoder_predictions(
        &self,
        spec: &DecoderSpec,
        ids: ArrayView2<i64>,
    ) -> Result<Vec<usize>> {
        self.with_decoder(spec, |w| decoder::predictions(spec, w, ids))
    }

    /// The decoder's next-token predictions and, with `form`, its distributions at every
    /// position but the last (what `original_predictions` and the distributions of rule 6.1
    /// record), a chunk of sequences at a time. `labels` are the validation set's (`[N, T -
    /// 1]` row-major).
    pub fn decoder_outputs(
        &self,
        spec: &DecoderSpec,
        ids: ArrayView2<i64>,
        labels: &[i64],
        form: Option<Form>,
    ) -> Result<OriginalOutputs> {
        let (n, t) = ids.dim();
        let mut out = OriginalOutputs::new(form, spec.vocab_size, n * t.saturating_sub(1));
        self.with_decoder(spec, |w| {
            let chunk = crate::model::chunks::decoder_sequences(spec, t);
            for start in (0..n).step_by(chunk) {
                let seqs = ids.slice(ndarray::s![start..(start + chunk).min(n), ..]);
                let logits = decoder::forward(spec, w, seqs)?;
                out.push(decoder::scored_rows(&logits)?.view(), labels)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The predictions and, with `form`, the distributions of the chain of layers `model` on
    /// `inputs` (`[n, input_dim]` row-major) with their `labels`, in chunks.
    pub fn chain_outputs(
        &self,
        model: &ModelSpec,
        activations: &[Activation],
        inputs: &[f32],
        labels: &[i64],
        form: Option<Form>,
    ) -> Result<OriginalOutputs> {
        let d = model.input_dim as usize;
        let classes = model.layers.last().map_or(0, |l| l.out_features as usize);
        let mut out = OriginalOutputs::new(form, classes, labels.len());
        for chunk in inputs.chunks(chunk_rows(model).saturating_mul(d).max(1)) {
            let x = ArrayView2::from_shape((chunk.len() / d.max(1), d), chunk).map_err(|_| {
                Error::InvalidArgument(format!("{} input values are not rows of {d}", inputs.len()))
            })?;
            out.push(self.chain_logits(model, activations, x)?.view(), labels)?;
        }
        Ok(out)
    }

    /// The logits of the chain of layers `model` on the rows `x`.
    pub fn chain_logits(
        &self,
        model: &ModelSpec,
        activations: &[Activation],
        x: ArrayView2<f32>,
    ) -> Result<Array2<f32>> {
        if self.forward == OriginalForward::BitnetOnline {
            return Err(Error::InvalidArgument(
                "the bitnet-online forward pass is a decoder's (spec section 18.3), not a chain of layers'".into(),
            ));
        }
        forward_source(self.weights(), model, activations, x)
    }

    /// The predictions of the chain of layers `model` on `inputs` (`[n, input_dim]`
    /// row-major), in chunks.
    pub fn chain_predictions(
        &self,
        model: &ModelSpec,
        activations: &[Activation],
        inputs: &[f32],
    ) -> Result<Vec<usize>> {
        let d = model.input_dim as usize;
        let rows = chunk_rows(model);
        let mut out = Vec::with_capacity(inputs.len() / d.max(1));
        for chunk in inputs.chunks(rows.saturating_mul(d).max(1)) {
            let x = ArrayView2::from_shape((chunk.len() / d.max(1), d), chunk).map_err(|_| {
                Error::InvalidArgument(format!("{} input values are not rows of {d}", inputs.len()))
            })?;
            out.extend(argmax_rows(&self.chain_logits(model, activations, x)?));
        }
        Ok(out)
    }
}
