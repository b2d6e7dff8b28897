//! The `fidelity` check: how far each path's distribution lies from the original model's, the
//! way quantized language models are judged (spec section 16.3). Per scored sample, KL(original
//! || path) against the distributions the bundle stores (format 5.0) or that `--reference`
//! recomputes, and the cross-entropy of the labels; summarized as mean, median, 99th and
//! 99.9th percentile and maximum, perplexities, a histogram and per difficulty level. The gate:
//! the FP16 path's mean KL at most `--max-kl`.

use std::borrow::Cow;
use std::collections::BTreeSet;

use ndarray::ArrayView2;
use serde_json::{json, Value};

use crate::model::distribution::{nll, Distributions, Summary};
use crate::verify::options::VerifyOptions;
use crate::verify::runs::{same_share, ModelRuns, OriginalSource};
use crate::verify::samples::Samples;

/// Upper edges of the KL histogram's bins, in nats: [0, 1e-6), [1e-6, 1e-5), ... [1, 10), and
/// a last bin of 10 and above.
pub const HISTOGRAM_EDGES: [f64; 8] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// One path's figures at every scored sample.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathRows {
    /// KL(original || path), when the original's distributions are known.
    pub kl: Vec<f64>,
    /// How far the exact KL can lie above `kl` (top-K form).
    pub kl_bound: Vec<f64>,
    /// −log q(label).
    pub nll: Vec<f64>,
}

/// Both paths' figures, filled a chunk of samples at a time by the agreement run.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathsFidelity {
    pub ternary: PathRows,
    pub fp16: PathRows,
    scratch: Vec<f64>,
}

impl PathsFidelity {
    /// Adds the rows of logits of both paths for the samples `first..` with their `labels`,
    /// measured against `original` when known.
    pub fn record(
        &mut self,
        original: Option<&Distributions>,
        first: usize,
        (ternary, fp16): (ArrayView2<f32>, ArrayView2<f32>),
        labels: &[usize],
    ) {
        for (rows, out) in [(ternary, &mut self.ternary), (fp16, &mut self.fp16)] {
            for (k, row) in rows.rows().into_iter().enumerate() {
                // Rows of a standard-layout product are contiguous: borrowed, not copied.
                let row = row
                    .as_slice()
                    .map_or_else(|| Cow::Owned(row.to_vec()), Cow::Borrowed);
                let label = labels.get(first + k).copied().unwrap_or(usize::MAX);
                match original {
                    Some(d) => {
                        let f = d.measure(first + k, &row, label, &mut self.scratch);
                        out.kl.push(f.kl);
                        out.kl_bound.push(f.kl_bound);
                        out.nll.push(f.nll);
                    }
                    None => out.nll.push(nll(&row, label)),
                }
            }
        }
    }
}

/// Mean of `values` (0 when empty).
fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// How many values fall in each bin of [`HISTOGRAM_EDGES`].
pub fn histogram(values: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; HISTOGRAM_EDGES.len() + 1];
    for &v in values {
        let bin = HISTOGRAM_EDGES
            .iter()
            .position(|&e| v < e)
            .unwrap_or(HISTOGRAM_EDGES.len());
        counts[bin] += 1;
    }
    counts
}

/// The perplexity exp(cross-entropy) of a language model; null for a chain of layers, whose
/// figure is the cross-entropy alone.
fn perplexity(decoder: bool, cross_entropy: f64) -> Value {
    if decoder {
        json!(cross_entropy.exp())
    } else {
        Value::Null
    }
}

/// The figures of one path.
fn path_figures(
    p: &PathRows,
    bounded: bool,
    labelled: bool,
    decoder: bool,
    same_top: f64,
) -> Value {
    let ce = mean(&p.nll);
    json!({
        "kl": Summary::of(&p.kl),
        "kl_error_bound": bounded.then(|| json!({
            "mean": mean(&p.kl_bound),
            "max": p.kl_bound.iter().copied().fold(0.0, f64::max),
        })),
        "cross_entropy": labelled.then_some(ce),
        "perplexity": if labelled { perplexity(decoder, ce) } else { Value::Null },
        "same_top": same_top,
        "histogram": histogram(&p.kl),
    })
}

/// Check "fidelity": KL(original || path) and cross-entropies per path, gated on the FP16 mean
/// KL.
pub(crate) fn fidelity(
    runs: &ModelRuns<'_>,
    options: &VerifyOptions,
) -> crate::verify::runner::Outcome {
    let samples = runs.samples()?;
    let paths = runs.both_paths()?;
    let (original, from) = runs.original()?;
    let Some((dist, dist_from)) = runs.original_distributions() else {
        return Err((
            crate::verify::runs::no_original_distributions(runs.bundle),
            json!({}),
        ));
    };
    let f = &paths.fidelity;
    let (n, source, unit) = (samples.len(), samples.source(), samples.unit());
    let decoder = runs.bundle.decoder().is_some();
    let labelled = samples.has_labels();
    let bounded = dist.form().k().is_some_and(|k| (k as usize) < dist.classes);
    let labels = samples.labels();
    let original_nll: Vec<f64> = (0..n).map(|i| dist.original_nll(i, labels[i])).collect();
    let original_ce = mean(&original_nll);
    let fp16_kl = Summary::of(&f.fp16.kl);
    let figures = json!({
        "samples": n, "inputs": source,
        "original": match dist_from { OriginalSource::Stored => "stored", OriginalSource::Reference => "reference" },
        "predictions": from.name(),
        "form": dist.form().name(), "top_k": dist.form().k(),
        "max_kl": options.max_kl, "histogram_edges": HISTOGRAM_EDGES,
        "fp16": path_figures(&f.fp16, bounded, labelled, decoder, same_share(original, &paths.fp16)),
        "ternary": path_figures(&f.ternary, bounded, labelled, decoder, same_share(original, &paths.ternary)),
        "original_model": {
            "cross_entropy": labelled.then_some(original_ce),
            "perplexity": if labelled { perplexity(decoder, original_ce) } else { Value::Null },
        },
        "by_difficulty": by_difficulty(samples, f, &original_nll, decoder),
    });
    let measure = if decoder {
        "perplexity"
    } else {
        "cross-entropy"
    };
    let show = |ce: f64| if decoder { ce.exp() } else { ce };
    let ce_text = if labelled {
        format!(
            "; {measure} original {:.4}, FP16 {:.4}, ternary {:.4}",
            show(original_ce),
            show(mean(&f.fp16.nll)),
            show(mean(&f.ternary.nll))
        )
    } else {
        String::new()
    };
    let bound_text = if bounded {
        format!(
            " (top-{} lower bound; the exact mean is at most {:.3e} higher)",
            dist.form().k().unwrap_or(0),
            mean(&f.fp16.kl_bound)
        )
    } else {
        String::new()
    };
    let gate = if options.max_kl > 0.0 {
        format!("maximum {}", options.max_kl)
    } else {
        "gate disabled".to_string()
    };
    let detail = format!(
        "KL(original || FP16) mean {:.3e} nats ({gate}){bound_text}, median {:.3e}, p99 {:.3e}, max {:.3e}; ternary mean {:.3e}{ce_text}; on {n} {source} {unit}, original distributions {}",
        fp16_kl.mean,
        fp16_kl.median,
        fp16_kl.p99,
        fp16_kl.max,
        mean(&f.ternary.kl),
        dist_from.describe(),
    );
    if options.max_kl == 0.0 || fp16_kl.mean <= options.max_kl {
        Ok((detail, figures))
    } else {
        Err((detail, figures))
    }
}

/// Per difficulty level (when the validation set has one): samples, mean KL of each path,
/// and the cross-entropy (and a decoder's perplexity) of the original, FP16 and ternary
/// models.
fn by_difficulty(
    samples: &Samples<'_>,
    f: &PathsFidelity,
    original_nll: &[f64],
    decoder: bool,
) -> Value {
    let Some(levels) = samples.difficulty() else {
        return Value::Null;
    };
    let present: BTreeSet<u8> = levels.iter().copied().collect();
    let rows = present.into_iter().map(|level| {
        let idx: Vec<usize> = (0..levels.len()).filter(|&i| levels[i] == level).collect();
        let avg = |v: &[f64]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
        let (o, fp, t) = (avg(original_nll), avg(&f.fp16.nll), avg(&f.ternary.nll));
        json!({
            "difficulty": level, "samples": idx.len(),
            "mean_kl_fp16": avg(&f.fp16.kl), "mean_kl_ternary": avg(&f.ternary.kl),
            "cross_entropy_original": o, "cross_entropy_fp16": fp, "cross_entropy_ternary": t,
            "perplexity_original": perplexity(decoder, o),
            "perplexity_fp16": perplexity(decoder, fp),
            "perplexity_ternary": perplexity(decoder, t),
        })
    });
    Value::Array(rows.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_by_decade() {
        assert_eq!(
            histogram(&[0.0, 5e-7, 1e-6, 0.5, 10.0, 1e3]),
            vec![2, 1, 0, 0, 0, 0, 1, 0, 2]
        );
    }
}
