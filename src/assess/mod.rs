//! `bundle assess`: the receiving stage's edge-of-chaos assessment, built in. For each
//! curriculum difficulty level of labelled data, the FP16 model's (and the ternary path's) label
//! accuracy, its mean cross-entropy and the variance of its gradients, exactly as the receiving
//! stage computes them; then the level whose accuracy is closest to the target (75%), and
//! whether it lies in the zone (70-80%).
//!
//! Gradient variance, per level: the level's examples are split into batches (default one batch,
//! the whole level; `batch_size` examples each otherwise, in data order, the last one shorter).
//! For each batch, the gradient of the mean cross-entropy over the batch with respect to every
//! parameter tensor of the FP16 model (its values converted exactly to f64, the f64 backward
//! pass of [`crate::model::gradcheck`]); per tensor the unbiased variance of its entries
//! (`torch.Tensor.var()`, correction 1); summed over tensors; averaged over the level's batches.
//! The variance is over a tensor's entries, not over examples, so a batch of one example is
//! defined; a tensor of a single entry has no unbiased variance and is left out of the sum (torch
//! would give NaN), counted in `skipped_tensors`.

mod data;
pub mod report;

use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::format::manifest::FileRole;
use crate::model::bundle_decoder::BundleDecoder;
use crate::model::chunks::{chunk_rows, decoder_sequences, gradient_rows};
use crate::model::decoder::{self, next_token_predictions};
use crate::model::decoder64::{BackwardHooks, Decoder64, MAX_IN_MEMORY_PARAMETERS};
use crate::model::model64::{accumulate_gradient, Model64};
use crate::model::reference::{argmax_rows, forward_bundle, WeightPath};
use crate::read::{Bundle, OpenOptions};

pub use data::LabelledData;
pub use report::{AssessReport, LevelFigures, Verdict};

/// Default target accuracy.
pub const DEFAULT_TARGET: f64 = 0.75;
/// Default zone of accuracies that count as the edge of chaos.
pub const DEFAULT_ZONE: (f64, f64) = (0.70, 0.80);

/// Settings of an assessment.
#[derive(Debug, Clone)]
pub struct AssessOptions {
    /// Accuracy to find the level closest to.
    pub target: f64,
    /// Accuracies `[lo, hi]` that count as the edge of chaos.
    pub zone: (f64, f64),
    /// Examples per batch (the whole level when `None`).
    pub batch_size: Option<usize>,
    /// Labelled data to use instead of the bundle's validation set.
    pub data: Option<PathBuf>,
    /// How to open the bundle.
    pub open: OpenOptions,
}

impl Default for AssessOptions {
    fn default() -> Self {
        AssessOptions {
            target: DEFAULT_TARGET,
            zone: DEFAULT_ZONE,
            batch_size: None,
            data: None,
            open: OpenOptions::default(),
        }
    }
}

impl AssessOptions {
    /// Checks that the numbers make sense.
    pub fn check(&self) -> Result<()> {
        let (lo, hi) = self.zone;
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !unit(self.target) || !unit(lo) || !unit(hi) || lo > hi {
            return Err(Error::InvalidArgument(format!(
                "--target-accuracy and --zone LO,HI must lie in [0, 1] with LO <= HI, found target {} and zone {lo},{hi}",
                self.target
            )));
        }
        if self.batch_size == Some(0) {
            return Err(Error::InvalidArgument(
                "--batch-size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Assesses the bundle in `dir`.
pub fn assess(dir: &Path, options: &AssessOptions) -> Result<AssessReport> {
    options.check()?;
    let bundle = Bundle::open_with(dir, &options.open)?;
    let data = match &options.data {
        Some(path) => LabelledData::from_file(path, &bundle)?,
        None => LabelledData::from_bundle(&bundle)?,
    };
    let mut levels = Vec::new();
    if bundle.decoder().is_some() {
        let fp16 = BundleDecoder::new(&bundle, WeightPath::Fp16)?;
        let params: u64 = bundle.manifest().tensors.iter().map(|t| t.elements()).sum();
        if params > MAX_IN_MEMORY_PARAMETERS {
            return Err(Error::InvalidArgument(format!(
                "{}: the f64 copy of this decoder's {params} parameters is over the {MAX_IN_MEMORY_PARAMETERS} the in-memory assessment holds; a layer-streamed assessment is not implemented yet",
                dir.display()
            )));
        }
        let model = Decoder64::load(fp16.spec(), &fp16)?;
        for (level, rows) in data.levels() {
            let mut figures = assess_decoder_level(&bundle, &model, &data, level, &rows, options)?;
            // Every sequence has the same number of scored positions, so the mean over them is
            // the mean next-token cross-entropy of the level.
            figures.perplexity_fp16 = Some(figures.mean_cross_entropy.exp());
            levels.push(figures);
        }
    } else {
        let model = Model64::new(&bundle)?;
        for (level, rows) in data.levels() {
            levels.push(assess_level(&bundle, &model, &data, level, &rows, options)?);
        }
    }
    let size_mb = bundle
        .manifest()
        .files
        .get(FileRole::Fp16)
        .map_or(0.0, |e| e.size as f64 / 1e6);
    Ok(AssessReport::new(
        dir,
        data.origin.clone(),
        levels,
        options,
        size_mb,
    ))
}

/// The figures of one level: the examples at `rows` of `data`.
fn assess_level(
    bundle: &Bundle,
    model: &Model64<'_>,
    data: &LabelledData,
    level: u8,
    rows: &[usize],
    options: &AssessOptions,
) -> Result<LevelFigures> {
    let x = data.inputs_of(rows);
    let labels: Vec<usize> = rows.iter().map(|&r| data.labels[r]).collect();
    let accuracy = |path| -> Result<f64> {
        let mut right = 0;
        for (chunk, l) in x
            .axis_chunks_iter(ndarray::Axis(0), chunk_rows(&bundle.manifest().model))
            .zip(labels.chunks(chunk_rows(&bundle.manifest().model)))
        {
            let predicted = argmax_rows(&forward_bundle(bundle, path, chunk)?);
            right += predicted.iter().zip(l).filter(|(p, l)| p == l).count();
        }
        Ok(right as f64 / rows.len() as f64)
    };
    let batch = options.batch_size.unwrap_or(rows.len()).max(1);
    let mut sums = BatchSums::default();
    for (xb, lb) in x
        .axis_chunks_iter(ndarray::Axis(0), batch)
        .zip(labels.chunks(batch))
    {
        let (loss, variance, skip) = batch_gradient_variance(bundle, model, xb, lb);
        sums.add(loss, lb.len(), (variance, skip));
    }
    Ok(sums.figures(
        (level, rows.len()),
        accuracy(WeightPath::Fp16)?,
        accuracy(WeightPath::Ternary)?,
    ))
}

/// The batches of a level, added up: loss weighted by examples, gradient variance per batch.
#[derive(Default)]
struct BatchSums {
    loss: f64,
    variance: f64,
    skipped: usize,
    batches: usize,
}

impl BatchSums {
    /// A batch of `examples` with mean loss `loss`, its summed variance and skipped tensors.
    fn add(&mut self, loss: f64, examples: usize, (variance, skipped): (f64, usize)) {
        self.loss += loss * examples as f64;
        self.variance += variance;
        self.skipped = skipped;
        self.batches += 1;
    }

    /// The level's figures: `examples` examples at difficulty `level`, and the accuracies.
    fn figures(
        &self,
        (level, examples): (u8, usize),
        accuracy_fp16: f64,
        accuracy_ternary: f64,
    ) -> LevelFigures {
        LevelFigures {
            difficulty: level,
            examples,
            batches: self.batches,
            accuracy_fp16,
            accuracy_ternary,
            mean_cross_entropy: self.loss / examples as f64,
            perplexity_fp16: None,
            gradient_variance: self.variance / self.batches.max(1) as f64,
            skipped_tensors: self.skipped,
        }
    }
}

/// The figures of one level of a decoder's data: the sequences at `rows`, every position but
/// the last scored; batches of `batch_size` sequences.
fn assess_decoder_level(
    bundle: &Bundle,
    model: &Decoder64,
    data: &LabelledData,
    level: u8,
    rows: &[usize],
    options: &AssessOptions,
) -> Result<LevelFigures> {
    let spec = model.spec();
    let ids = data.ids_of(rows);
    let labels = data.labels_of(rows);
    let chunk = decoder_sequences(spec, ids.ncols());
    let accuracy = |path| -> Result<f64> {
        let weights = BundleDecoder::new(bundle, path)?;
        let mut predicted = Vec::with_capacity(labels.len());
        for part in ids.axis_chunks_iter(ndarray::Axis(0), chunk) {
            predicted.extend(next_token_predictions(&decoder::forward(
                spec, &weights, part,
            )?));
        }
        let right = predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
        Ok(right as f64 / labels.len().max(1) as f64)
    };
    let batch = options.batch_size.unwrap_or(rows.len()).max(1);
    let per = ids.ncols().saturating_sub(1);
    let mut sums = BatchSums::default();
    for (k, part) in ids.axis_chunks_iter(ndarray::Axis(0), batch).enumerate() {
        let first = k * batch * per;
        let lb = &labels[first..first + part.nrows() * per];
        let (loss, grads) =
            model.loss_and_gradient_with(part, Some(lb), true, &BackwardHooks::default())?;
        sums.add(
            loss,
            part.nrows(),
            variance_over_tensors(grads.iter().flatten()),
        );
    }
    Ok(sums.figures(
        (level, rows.len()),
        accuracy(WeightPath::Fp16)?,
        accuracy(WeightPath::Ternary)?,
    ))
}

/// The mean cross-entropy over one batch, the sum over parameter tensors of the unbiased
/// variance of the entries of its gradient, and the number of tensors left out (a single
/// entry). The batch runs in chunks that fit the memory bound, their gradients weighted by
/// their share of the batch.
fn batch_gradient_variance(
    bundle: &Bundle,
    model: &Model64<'_>,
    x: ArrayView2<f32>,
    labels: &[usize],
) -> (f64, f64, usize) {
    let mut grads: Vec<Vec<f64>> = model
        .params()
        .iter()
        .map(|p| vec![0.0; p.shape.elements()])
        .collect();
    let n = labels.len() as f64;
    let rows = gradient_rows(&bundle.manifest().model, labels.len());
    let mut loss = 0.0;
    for (xc, lc) in x
        .axis_chunks_iter(ndarray::Axis(0), rows)
        .zip(labels.chunks(rows))
    {
        let weight = lc.len() as f64 / n;
        let xc: Array2<f64> = xc.mapv(f64::from);
        loss += weight * accumulate_gradient(model, xc.view(), lc, weight, &mut grads);
    }
    let (sum, skipped) = variance_over_tensors(&grads);
    (loss, sum, skipped)
}

/// The sum over tensors of the unbiased variance of each one's gradient entries, and how many
/// tensors were left out (a single entry has none).
fn variance_over_tensors<'g>(grads: impl IntoIterator<Item = &'g Vec<f64>>) -> (f64, usize) {
    let (mut sum, mut skipped) = (0.0, 0);
    for g in grads {
        match unbiased_variance(g) {
            Some(v) => sum += v,
            None => skipped += 1,
        }
    }
    (sum, skipped)
}

/// The unbiased variance of `values` (two passes, in f64); `None` for fewer than two.
pub fn unbiased_variance(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    Some(values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbiased_variance_is_torch_var() {
        // torch.tensor([1., 2., 4.]).var() == 2.3333...
        assert!((unbiased_variance(&[1.0, 2.0, 4.0]).unwrap() - 7.0 / 3.0).abs() < 1e-15);
        assert_eq!(unbiased_variance(&[3.0]), None);
        assert_eq!(unbiased_variance(&[5.0, 5.0]), Some(0.0));
    }
}
