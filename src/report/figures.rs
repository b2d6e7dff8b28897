//! The figures only the report shows: trit and scale distributions per quantized tensor (read
//! from `ternary.safetensors`) and gradient norms per parameter tensor (from verify).

use crate::read::Bundle;
use crate::verify::{Check, VerifyReport};

/// Bins of a tensor's scale histogram (log-spaced between the smallest and largest scale of the
/// bundle).
pub const SCALE_BINS: usize = 24;

/// The trit and scale distributions of one quantized tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorFigures {
    /// Tensor name (untrusted: escaped when rendered).
    pub name: String,
    /// Counts of -1, 0 and +1 trits.
    pub trits: [u64; 3],
    /// The tensor's scales.
    pub scales: Vec<f32>,
}

/// A parameter tensor's gradient norm over verify's gradient-flow batch.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientNorm {
    /// Tensor name (untrusted).
    pub name: String,
    /// L2 norm of its gradient.
    pub norm: f64,
}

/// Trit counts and scales of every quantized tensor, in manifest order. Rows that do not decode
/// (a bundle that fails the encoding check) count as they decode: invalid codes as 0.
pub fn tensor_figures(bundle: &Bundle) -> Vec<TensorFigures> {
    bundle
        .quantized()
        .map(|p| {
            let mut trits = [0u64; 3];
            let mut row = vec![0i8; p.cols];
            for r in 0..p.rows {
                if p.encoding.unpack_row(p.row(r), &mut row).is_ok() {
                    for &t in &row {
                        trits[(t + 1).clamp(0, 2) as usize] += 1;
                    }
                }
            }
            TensorFigures {
                name: p.spec.name.clone(),
                trits,
                scales: p.scales(),
            }
        })
        .collect()
}

/// The per-tensor gradient norms verify's gradient_flow check reported, if it ran.
pub fn gradient_norms(report: &VerifyReport) -> Vec<GradientNorm> {
    let Some(flow) = report.check(Check::GradientFlow) else {
        return Vec::new();
    };
    flow.figures["tensors"]
        .as_array()
        .map(|tensors| {
            tensors
                .iter()
                .filter_map(|t| {
                    Some(GradientNorm {
                        name: t["name"].as_str()?.to_string(),
                        norm: t["norm"].as_f64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Histogram of `scales` over [`SCALE_BINS`] log-spaced bins from `lo` to `hi` (all scales in
/// one bin when `lo == hi`); non-positive or non-finite scales are not counted.
pub fn scale_histogram(scales: &[f32], lo: f64, hi: f64) -> [u64; SCALE_BINS] {
    let mut bins = [0u64; SCALE_BINS];
    let (llo, lhi) = (lo.ln(), hi.ln());
    for &s in scales.iter().filter(|s| s.is_finite() && **s > 0.0) {
        let t = if lhi > llo {
            ((s as f64).ln() - llo) / (lhi - llo)
        } else {
            0.0
        };
        let i = ((t * SCALE_BINS as f64) as usize).min(SCALE_BINS - 1);
        bins[i] += 1;
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_cover_the_range_and_skip_bad_scales() {
        let bins = scale_histogram(&[1.0, 10.0, 100.0, f32::NAN, -1.0], 1.0, 100.0);
        assert_eq!(bins.iter().sum::<u64>(), 3);
        assert_eq!(
            (bins[0], bins[SCALE_BINS / 2], bins[SCALE_BINS - 1]),
            (1, 1, 1)
        );
        assert_eq!(scale_histogram(&[2.0, 2.0], 2.0, 2.0)[0], 2);
    }
}
