//! The absmean ternary quantizer (BitNet b1.58; spec section "Quantization").
//!
//! Owns the arithmetic that turns f32 weights into trits and scales, bit-exactly as the spec
//! defines it: a group that is already ternary (only -a, 0, +a) keeps a and its signs (step 0);
//! otherwise gamma accumulated in f64 in index order and rounded to f32, `scale = max(gamma,
//! epsilon)`, `x = w * (1 / scale)` in f32, `t = sign(x)` when `|x| > threshold`. It writes the
//! packed rows directly (no intermediate trit tensor) and does no I/O. [`pack_given`] packs
//! trits and scales a source already has (spec section 7.1).

use half::f16;
use rayon::prelude::*;

use crate::format::quantization::{rows_cols, scale_fits_f16, Granularity, QuantParams};
use crate::format::rules::Rule;

/// Per-tensor figures of a quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantStats {
    /// Number of weights.
    pub elements: u64,
    /// Number of zero trits.
    pub zeros: u64,
    /// Smallest scale.
    pub scale_min: f32,
    /// Largest scale.
    pub scale_max: f32,
    /// Root-mean-square of `w - t * scale`.
    pub rmse: f64,
    /// `||w - t * scale|| / ||w||` (0 when `w` is all zeros).
    pub relative_error: f64,
}

impl QuantStats {
    /// Fraction of zero trits.
    pub fn sparsity(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.zeros as f64 / self.elements as f64
        }
    }
}

/// A quantized tensor: packed rows, scales and figures.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    /// Rows (the first dimension).
    pub rows: usize,
    /// Columns (product of the other dimensions).
    pub cols: usize,
    /// `rows * bytes_per_row(cols)` packed bytes, row by row.
    pub packed: Vec<u8>,
    /// The scales, in the layout of [`Granularity::scale_shape`], row-major.
    pub scales: Vec<f32>,
    /// Figures about the result.
    pub stats: QuantStats,
}

/// Why a tensor could not be quantized.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantizeError {
    /// Rule 8.1: a weight is NaN or infinite.
    NonFinite {
        /// Flat (C-order) index of the weight.
        index: u64,
        /// The value.
        value: f32,
    },
    /// Rule 4.5: a scale that governs a non-zero trit rounds to 0 or infinity in F16.
    ScaleNotRepresentable {
        /// Index of the scale in the scale tensor.
        index: u64,
        /// The scale.
        scale: f32,
    },
    /// The shape is not quantizable (rank 0, an empty dimension) or disagrees with the data.
    Shape(String),
    /// The settings break rule 2.8.
    Params(String),
    /// Rule 8.3: a given value is not a trit, or a given scale is not finite and > 0.
    Given(String),
}

impl QuantizeError {
    /// The spec rule the error corresponds to.
    pub fn rule(&self) -> Rule {
        match self {
            QuantizeError::NonFinite { .. } => Rule::SourceWeights,
            QuantizeError::ScaleNotRepresentable { .. } => Rule::ScaleValid,
            QuantizeError::Shape(_) => Rule::TensorList,
            QuantizeError::Params(_) => Rule::Quantization,
            QuantizeError::Given(_) => Rule::GivenTrits,
        }
    }

    /// `(expected, found)` for an error message.
    pub fn expected_found(&self) -> (String, String) {
        match self {
            QuantizeError::NonFinite { index, value } => (
                "finite weights".into(),
                format!("{value} at flat index {index}"),
            ),
            QuantizeError::ScaleNotRepresentable { index, scale } => (
                "a scale whose F16 rounding is finite and non-zero (it governs non-zero trits)"
                    .into(),
                format!(
                    "scale {scale:e} at scale index {index} (F16 {})",
                    f16::from_f32(*scale)
                ),
            ),
            QuantizeError::Shape(s) | QuantizeError::Params(s) => {
                ("a quantizable tensor".into(), s.clone())
            }
            QuantizeError::Given(s) => (
                "trits in {-1, 0, 1} and scales finite and > 0".into(),
                s.clone(),
            ),
        }
    }
}

/// Quantizes `weights` (C order, shape `shape`) per `params`.
///
/// ```
/// use ternary_bundle::{quantize, QuantParams};
/// let q = quantize(&[0.9, -0.05, -0.4, 2.0, 0.0, -2.0], &[2, 3], &QuantParams::default()).unwrap();
/// assert_eq!(q.packed, vec![0x05, 0x05]); // both rows are [+1, 0, -1]
/// assert_eq!(q.scales, vec![0.45, 2.0]); // row 1 is already ternary: it keeps its scale
/// ```
pub fn quantize(
    weights: &[f32],
    shape: &[u64],
    params: &QuantParams,
) -> Result<QuantizedTensor, QuantizeError> {
    params.check().map_err(QuantizeError::Params)?;
    let (rows, cols) = rows_cols(shape)
        .ok_or_else(|| QuantizeError::Shape(format!("shape {shape:?} has no rows or overflows")))?;
    if rows == 0 || cols == 0 {
        return Err(QuantizeError::Shape(format!(
            "shape {shape:?} is empty; quantized tensors need at least one row and column"
        )));
    }
    let elements = rows * cols;
    if weights.len() as u64 != elements {
        return Err(QuantizeError::Shape(format!(
            "{} values for shape {shape:?} ({elements} elements)",
            weights.len()
        )));
    }
    let (rows, cols) = (rows as usize, cols as usize);
    let (scales, ternary) = compute_scales(weights, rows, cols, params);
    quantize_rows(weights, rows, cols, scales, Some(&ternary), params)
}

/// Packs trits a source already has, with their scales (method `given`, spec section 7.1):
/// `trits` in C order of `shape`, `scales` in the layout of [`Granularity::scale_shape`] for
/// `params.granularity`. Every trit must be -1, 0 or 1 and every scale finite and > 0 (rule
/// 8.3), and a scale that governs a non-zero trit must fit F16 (rule 4.5). The statistics'
/// errors are 0: the source is these trits.
pub fn pack_given(
    trits: &[i8],
    shape: &[u64],
    params: &QuantParams,
    scales: Vec<f32>,
) -> Result<QuantizedTensor, QuantizeError> {
    let (rows, cols) = matrix_with_scales(shape, trits.len(), params, scales.len())?;
    if let Some(i) = trits.iter().position(|t| !(-1..=1).contains(t)) {
        return Err(QuantizeError::Given(format!(
            "value {} at flat index {i}",
            trits[i]
        )));
    }
    if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(QuantizeError::Given(format!(
            "scale {} at scale index {i}",
            scales[i]
        )));
    }
    // Every group is ternary by construction: its trits are the signs of the values.
    let values: Vec<f32> = trits.iter().map(|&t| f32::from(t)).collect();
    let all_given = vec![true; scales.len()];
    // A scale that breaks rule 4.5 is a given scale the writer refuses (rule 8.3).
    let mut q = quantize_rows(
        &values,
        rows as usize,
        cols as usize,
        scales,
        Some(&all_given),
        params,
    )
    .map_err(|e| match e {
        QuantizeError::ScaleNotRepresentable { index, scale } => QuantizeError::Given(format!(
            "scale {scale:e} at scale index {index}, which governs non-zero trits and rounds to {} in F16 (rule 4.5)",
            half::f16::from_f32(scale)
        )),
        other => other,
    })?;
    q.stats.rmse = 0.0;
    q.stats.relative_error = 0.0;
    Ok(q)
}

/// The rows and columns of a quantizable `shape` holding `values` values, with `scales` scales
/// in the layout of `params`' granularity.
fn matrix_with_scales(
    shape: &[u64],
    values: usize,
    params: &QuantParams,
    scales: usize,
) -> Result<(u64, u64), QuantizeError> {
    let (rows, cols) = rows_cols(shape)
        .filter(|&(r, c)| r >= 1 && c >= 1)
        .ok_or_else(|| QuantizeError::Shape(format!("shape {shape:?} is not quantizable")))?;
    if values as u64 != rows * cols {
        return Err(QuantizeError::Shape(format!(
            "{values} values for shape {shape:?}"
        )));
    }
    let expected: u64 = params.granularity.scale_shape(rows, cols).iter().product();
    if scales as u64 != expected {
        return Err(QuantizeError::Shape(format!(
            "{scales} scales where granularity {} needs {expected}",
            params.granularity.name()
        )));
    }
    Ok((rows, cols))
}

/// Quantizes `weights` with given `scales` (in the layout of [`Granularity::scale_shape`])
/// instead of computing them: re-quantization after fine-tuning with the bundle's stored scales.
/// Steps 3 to 5 of the spec's algorithm are applied unchanged.
pub fn quantize_with_scales(
    weights: &[f32],
    shape: &[u64],
    params: &QuantParams,
    scales: &[f32],
) -> Result<QuantizedTensor, QuantizeError> {
    params.check().map_err(QuantizeError::Params)?;
    let (rows, cols) = matrix_with_scales(shape, weights.len(), params, scales.len())?;
    if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(QuantizeError::ScaleNotRepresentable {
            index: i as u64,
            scale: scales[i],
        });
    }
    if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
        return Err(QuantizeError::NonFinite {
            index: i as u64,
            value: weights[i],
        });
    }
    quantize_rows(
        weights,
        rows as usize,
        cols as usize,
        scales.to_vec(),
        None,
        params,
    )
}

/// Steps 3 to 5 for every row, given the scales; a group flagged in `ternary` (step 0: already
/// ternary) takes the sign of each weight instead. For [`pack_given`] the weights are the trits
/// and the scales are applied only to the statistics.
fn quantize_rows(
    weights: &[f32],
    rows: usize,
    cols: usize,
    scales: Vec<f32>,
    ternary: Option<&[bool]>,
    params: &QuantParams,
) -> Result<QuantizedTensor, QuantizeError> {
    let elements = (rows * cols) as u64;
    // An f64 sum of |w| (each at most f32::MAX) cannot overflow, so a non-finite scale means a
    // non-finite weight: this saves a separate pass over the weights in the common case.
    if scales.iter().any(|s| !s.is_finite()) {
        let i = weights
            .iter()
            .position(|w| !w.is_finite())
            .expect("a non-finite scale comes from a non-finite weight");
        return Err(QuantizeError::NonFinite {
            index: i as u64,
            value: weights[i],
        });
    }
    let bpr = params.encoding.bytes_per_row(cols as u64) as usize;
    let mut packed = vec![0u8; rows * bpr];

    // Rows are independent once the scales are known: quantize them in parallel, each worker
    // with its own trit buffer, and reduce the per-row figures in row order.
    let per_row: Vec<RowOutcome> = packed
        .par_chunks_mut(bpr.max(1))
        .zip(weights.par_chunks(cols))
        .enumerate()
        .map_init(
            || vec![0i8; cols],
            |trits, (r, (out, row))| quantize_row(row, r, &scales, ternary, params, trits, out),
        )
        .collect();
    let mut zeros = 0u64;
    let mut err_sq = 0f64;
    let mut norm_sq = 0f64;
    for o in per_row {
        if let Some(e) = o.error {
            return Err(e);
        }
        zeros += o.zeros;
        err_sq += o.err_sq;
        norm_sq += o.norm_sq;
    }
    let scale_min = scales.iter().copied().fold(f32::INFINITY, f32::min);
    let scale_max = scales.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    Ok(QuantizedTensor {
        rows,
        cols,
        packed,
        scales,
        stats: QuantStats {
            elements,
            zeros,
            scale_min,
            scale_max,
            rmse: (err_sq / elements as f64).sqrt(),
            relative_error: if norm_sq > 0.0 {
                (err_sq / norm_sq).sqrt()
            } else {
                0.0
            },
        },
    })
}

/// Figures of one quantized row.
struct RowOutcome {
    zeros: u64,
    err_sq: f64,
    norm_sq: f64,
    error: Option<QuantizeError>,
}

/// Quantizes row `r` into `out` (its packed bytes), using `trits` as scratch.
fn quantize_row(
    row: &[f32],
    r: usize,
    scales: &[f32],
    ternary: Option<&[bool]>,
    params: &QuantParams,
    trits: &mut [i8],
    out: &mut [u8],
) -> RowOutcome {
    let cols = row.len();
    let (groups_per_row, group) = params.granularity.row_layout(cols);
    let row_scales = params.granularity.row_scales(scales, r, cols);
    let mut outcome = RowOutcome {
        zeros: 0,
        err_sq: 0.0,
        norm_sq: 0.0,
        error: None,
    };
    for (g, &scale) in row_scales.iter().enumerate() {
        let lo = g * group;
        let hi = ((g + 1) * group).min(cols);
        let (w, t) = (&row[lo..hi], &mut trits[lo..hi]);
        let index = match params.granularity {
            Granularity::Tensor => 0,
            Granularity::Channel => r,
            Granularity::Group(_) => r * groups_per_row + g,
        };
        let nonzero = match ternary.and_then(|flags| flags.get(index)) {
            Some(true) => signs(w, t),
            _ => ternarize(w, t, scale, params.sparsity_threshold),
        };
        outcome.zeros += (hi - lo - nonzero) as u64;
        if nonzero > 0 && !scale_fits_f16(scale) && outcome.error.is_none() {
            outcome.error = Some(QuantizeError::ScaleNotRepresentable {
                index: index as u64,
                scale,
            });
        }
        let (e, n) = error_and_norm(w, t, scale);
        outcome.err_sq += e;
        outcome.norm_sq += n;
    }
    params
        .encoding
        .pack_row(trits, out)
        .expect("ternarize produces trits and the row buffer has bytes_per_row bytes");
    outcome
}

/// `(sum (w - t * scale)^2, sum w^2)` in f64, accumulated in 8 independent f32 lanes per
/// 1024-element block so the loop vectorizes (informational figures, not part of the format).
fn error_and_norm(w: &[f32], t: &[i8], scale: f32) -> (f64, f64) {
    let mut err = 0f64;
    let mut norm = 0f64;
    for (wb, tb) in w.chunks(1024).zip(t.chunks(1024)) {
        let mut e = [0f32; 8];
        let mut n = [0f32; 8];
        let mut wc = wb.chunks_exact(8);
        let mut tc = tb.chunks_exact(8);
        for (w8, t8) in (&mut wc).zip(&mut tc) {
            for k in 0..8 {
                let d = w8[k] - t8[k] as f32 * scale;
                e[k] += d * d;
                n[k] += w8[k] * w8[k];
            }
        }
        for (&w, &t) in wc.remainder().iter().zip(tc.remainder()) {
            let d = w - t as f32 * scale;
            e[0] += d * d;
            n[0] += w * w;
        }
        err += e.iter().map(|&x| x as f64).sum::<f64>();
        norm += n.iter().map(|&x| x as f64).sum::<f64>();
    }
    (err, norm)
}

/// The absmean scale of a group: mean |w| accumulated in f64 in index order, rounded to f32,
/// clamped below by epsilon. Non-finite when any value is non-finite.
pub fn absmean_scale(values: &[f32], epsilon: f32) -> f32 {
    let gamma = if values.is_empty() {
        0.0
    } else {
        let sum: f64 = values.iter().fold(0.0f64, |acc, &w| acc + (w.abs() as f64));
        (sum / values.len() as f64) as f32
    };
    // f32::max would drop a NaN; keep it, so that a non-finite weight yields a non-finite scale.
    if gamma.is_nan() {
        gamma
    } else {
        gamma.max(epsilon)
    }
}

/// Step 0 of the spec's quantizer: `Some(a)` when every value of the group is -a, +-0 or +a
/// (compared as f32) for one a >= epsilon, at least one of them non-zero: the group is already
/// ternary, and keeps a as its scale.
pub fn already_ternary(values: &[f32], epsilon: f32) -> Option<f32> {
    let a = values.iter().map(|w| w.abs()).find(|&m| m != 0.0)?;
    (a.is_finite() && a >= epsilon && values.iter().all(|w| w.abs() == 0.0 || w.abs() == a))
        .then_some(a)
}

/// A group's scale (step 0, else steps 1 and 2) and whether it was already ternary.
fn group_scale(values: &[f32], epsilon: f32) -> (f32, bool) {
    match already_ternary(values, epsilon) {
        Some(a) => (a, true),
        None => (absmean_scale(values, epsilon), false),
    }
}

/// Every group's scale and whether it is already ternary, in the layout of
/// [`Granularity::scale_shape`].
fn compute_scales(
    weights: &[f32],
    rows: usize,
    cols: usize,
    params: &QuantParams,
) -> (Vec<f32>, Vec<bool>) {
    let eps = params.epsilon;
    let pairs: Vec<(f32, bool)> = match params.granularity {
        Granularity::Tensor => vec![group_scale(weights, eps)],
        Granularity::Channel => weights
            .par_chunks(cols)
            .map(|row| group_scale(row, eps))
            .collect(),
        Granularity::Group(_) => {
            let (per_row, group) = params.granularity.row_layout(cols);
            let mut pairs = vec![(0f32, false); rows * per_row];
            pairs
                .par_chunks_mut(per_row)
                .zip(weights.par_chunks(cols))
                .for_each(|(out, row)| {
                    for (o, g) in out.iter_mut().zip(row.chunks(group)) {
                        *o = group_scale(g, eps);
                    }
                });
            pairs
        }
    };
    pairs.into_iter().unzip()
}

/// Writes the sign of each value of an already-ternary group (step 0) and returns how many are
/// non-zero.
#[inline]
fn signs(w: &[f32], out: &mut [i8]) -> usize {
    let mut nonzero = 0usize;
    for (o, &w) in out.iter_mut().zip(w) {
        let t = (w > 0.0) as i8 - (w < 0.0) as i8;
        nonzero += (t != 0) as usize;
        *o = t;
    }
    nonzero
}

/// Writes the trits of `w` under `scale` and returns how many are non-zero.
#[inline]
fn ternarize(w: &[f32], out: &mut [i8], scale: f32, threshold: f32) -> usize {
    let inv = 1.0f32 / scale;
    let mut nonzero = 0usize;
    for (o, &w) in out.iter_mut().zip(w) {
        let x = w * inv;
        let t = (x > threshold) as i8 - (x < -threshold) as i8;
        nonzero += (t != 0) as usize;
        *o = t;
    }
    nonzero
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_from_the_spec() {
        let q = quantize(
            &[0.9, -0.05, -0.4, 2.0, 0.0, -2.0],
            &[2, 3],
            &QuantParams::default(),
        )
        .unwrap();
        assert_eq!(q.scales, vec![0.45f32, 2.0]);
        assert_eq!(q.packed, vec![5, 5]);
        assert_eq!(q.stats.zeros, 2);
    }

    #[test]
    fn group_scales_cover_short_last_group() {
        let p = QuantParams {
            granularity: Granularity::Group(2),
            ..QuantParams::default()
        };
        let q = quantize(&[1.0, 3.0, 5.0], &[1, 3], &p).unwrap();
        assert_eq!(q.scales, vec![2.0, 5.0]);
        assert_eq!(Granularity::Group(2).scale_shape(1, 3), vec![1, 2]);
    }

    #[test]
    fn all_zero_tensor_gets_epsilon_scale_and_zero_trits() {
        let q = quantize(&[0.0; 6], &[2, 3], &QuantParams::default()).unwrap();
        assert_eq!(q.scales, vec![1e-5, 1e-5]);
        assert_eq!(q.stats.zeros, 6);
    }

    #[test]
    fn non_finite_weight_is_refused_with_its_index() {
        let e = quantize(&[0.0, f32::NAN], &[1, 2], &QuantParams::default()).unwrap_err();
        assert!(matches!(e, QuantizeError::NonFinite { index: 1, .. }));
        assert_eq!(e.rule(), Rule::SourceWeights);
    }

    #[test]
    fn already_ternary_groups_keep_their_scale_and_signs() {
        // Row 0 is 0.25 * [1, 0, -1, 1]: absmean would rescale it to 0.1875.
        let w = [0.25, 0.0, -0.25, 0.25, 0.3, 0.1, -0.2, 0.0];
        let q = quantize(&w, &[2, 4], &QuantParams::default()).unwrap();
        assert_eq!(q.scales[0], 0.25);
        assert_eq!(q.scales[1], absmean_scale(&w[4..], 1e-5));
        let mut t = [0i8; 4];
        crate::format::encoding::Encoding::Trit5
            .unpack_row(&q.packed[..1], &mut t)
            .unwrap();
        assert_eq!(t, [1, 0, -1, 1]);
        // Per tensor the rows differ (0.25 vs others): plain absmean.
        let p = QuantParams {
            granularity: Granularity::Tensor,
            ..QuantParams::default()
        };
        let q = quantize(&w, &[2, 4], &p).unwrap();
        assert_eq!(q.scales, vec![absmean_scale(&w, 1e-5)]);
        // Below epsilon, step 0 does not apply.
        assert_eq!(already_ternary(&[1e-6, -1e-6], 1e-5), None);
        assert_eq!(already_ternary(&[0.0, -0.0], 1e-5), None);
        assert_eq!(already_ternary(&[0.5, -0.5, 0.0], 1e-5), Some(0.5));
    }

    #[test]
    fn given_trits_are_packed_whatever_the_scale() {
        let q = pack_given(
            &[1, 0, -1, 1, 1, 0],
            &[2, 3],
            &QuantParams::default(),
            vec![100.0, 1e-3],
        )
        .unwrap();
        assert_eq!(q.packed, vec![5, 2 + 2 * 3 + 9]);
        assert_eq!(q.scales, vec![100.0, 1e-3]);
        assert_eq!(q.stats.zeros, 2);
        let e = pack_given(&[2, 0], &[1, 2], &QuantParams::default(), vec![1.0]).unwrap_err();
        assert_eq!(e.rule(), Rule::GivenTrits);
        let e = pack_given(&[1, 0], &[1, 2], &QuantParams::default(), vec![-1.0]).unwrap_err();
        assert_eq!(e.rule(), Rule::GivenTrits);
        let e = pack_given(&[1, 0], &[1, 2], &QuantParams::default(), vec![1.0, 2.0]).unwrap_err();
        assert_eq!(e.rule(), Rule::TensorList);
    }

    #[test]
    fn huge_scale_for_nonzero_trits_is_refused() {
        let e = quantize(&[1e6, -1e6], &[1, 2], &QuantParams::default()).unwrap_err();
        assert!(matches!(
            e,
            QuantizeError::ScaleNotRepresentable { index: 0, .. }
        ));
    }
}
