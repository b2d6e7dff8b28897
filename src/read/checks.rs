//! The data rules: checks that read every byte of an open bundle (spec section "Validation
//! order", rules 4.3 to 4.7, 5.2, 5.3, 6.2, 6.3, 7.1 and 7.2).
//!
//! [`crate::read::Bundle::open`] has already proven the structure (shapes, offsets, sizes): these
//! checks walk the bundle's views. Each returns the first violation in a deterministic order
//! (tensors in manifest order, lowest index first) even though tensors are checked in parallel.

use std::path::Path;

use half::f16;
use rayon::prelude::*;

use crate::error::{Result, Violation};
use crate::format::checksum::sha256_hex_blocks;
use crate::format::distribution::{log_sum_exp, NORMALIZATION_TOLERANCE};
use crate::format::encoding::Encoding;
use crate::format::layout::{
    VALIDATION_INPUTS, VALIDATION_INPUT_IDS, VALIDATION_LABELS,
    VALIDATION_ORIGINAL_LABEL_LOG_PROBS, VALIDATION_ORIGINAL_LOG_PROBS,
    VALIDATION_ORIGINAL_LOG_SUM_EXP, VALIDATION_ORIGINAL_PREDICTIONS, VALIDATION_ORIGINAL_TOP_IDS,
    VALIDATION_ORIGINAL_TOP_LOG_PROBS,
};
use crate::format::le;
use crate::format::manifest::TensorSpec;
use crate::format::quantization::scale_fits_f16;
use crate::format::rules::Rule;
use crate::quant::dequantize::dequantize_row_f16;
use crate::read::{Bundle, DistributionView, PackedTensor, Stored};

/// Runs every data check: digests first (so corruption is reported as such), then encoding,
/// scales, passthrough values, exact dequantization and the validation set.
pub fn check_all(bundle: &Bundle) -> Result<()> {
    check_digests(bundle)?;
    check_encoding(bundle)?;
    check_scales(bundle)?;
    check_passthrough(bundle)?;
    check_dequantization(bundle)?;
    check_validation_values(bundle)
}

/// The first error of `results`, in order.
fn first_error(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().collect()
}

fn quantized(bundle: &Bundle) -> Vec<PackedTensor<'_>> {
    bundle.quantized().collect()
}

/// The tensors stored as F32: (manifest entry, F32 bytes, F16 bytes).
fn passthrough(bundle: &Bundle) -> Vec<(&TensorSpec, &[u8], &[u8])> {
    bundle
        .tensors()
        .filter_map(|t| match t.stored {
            Stored::F32(b) => Some((t.spec, b, t.fp16)),
            Stored::Packed(_) => None,
        })
        .collect()
}

/// Rules 7.1 and 7.2: whole-file and per-tensor SHA-256, hashed in parallel. A damaged tensor
/// is named (7.2) before a whole-file mismatch is reported (7.1), so the message localizes.
pub fn check_digests(bundle: &Bundle) -> Result<()> {
    // One job per file (whole) and per listed tensor: (file index, tensor index or None).
    let files: Vec<_> = bundle.files().collect();
    let listed: Vec<Vec<_>> = files.iter().map(|f| f.listed().collect()).collect();
    let jobs: Vec<(usize, Option<usize>)> = listed
        .iter()
        .enumerate()
        .flat_map(|(fi, l)| {
            std::iter::once((fi, None)).chain((0..l.len()).map(move |ti| (fi, Some(ti))))
        })
        .collect();
    let mut results: Vec<(usize, Option<usize>, Result<()>)> = jobs
        .into_par_iter()
        .map(|(fi, ti)| {
            let f = files[fi];
            let (bytes, declared, rule, tensor) = match ti {
                None => (f.bytes(), f.declared_sha256(), Rule::FileDigest, None),
                Some(ti) => {
                    let (t, bytes) = listed[fi][ti];
                    (bytes, t.sha256.as_str(), Rule::TensorDigest, Some(&t.name))
                }
            };
            let found = sha256_hex_blocks(bytes, |b| bundle.release(b));
            let r = if found == declared {
                Ok(())
            } else {
                let v = Violation::new(
                    f.path(),
                    rule,
                    format!("sha256 {declared}"),
                    format!("sha256 {found}"),
                );
                Err(match tensor {
                    Some(name) => v.tensor(name),
                    None => v,
                }
                .into())
            };
            (fi, ti, r)
        })
        .collect();
    // Per file: tensor mismatches first (they localize), then the whole-file digest.
    results.sort_by_key(|&(fi, ti, _)| (fi, ti.is_none(), ti));
    first_error(results.into_iter().map(|(_, _, r)| r).collect())?;
    check_asset_digests(bundle)
}

/// Rule 7.4: the SHA-256 of every asset file, in the manifest's order.
pub fn check_asset_digests(bundle: &Bundle) -> Result<()> {
    let results = bundle
        .assets()
        .par_iter()
        .map(|a| {
            let found = sha256_hex_blocks(a.bytes(), |b| bundle.release(b));
            if found == a.declared_sha256() {
                Ok(())
            } else {
                Err(Violation::new(
                    a.path(),
                    Rule::AssetDigest,
                    format!("sha256 {} (manifest files.assets)", a.declared_sha256()),
                    format!("sha256 {found}"),
                )
                .into())
            }
        })
        .collect();
    first_error(results)
}

/// Number of zero trits in each possible byte (padding positions decode to -1, never 0).
fn zero_counts(encoding: Encoding) -> [u8; 256] {
    let mut table = [0u8; 256];
    let n = encoding.trits_per_byte();
    let mut trits = vec![0i8; n];
    for (b, slot) in table.iter_mut().enumerate() {
        let valid = encoding.first_invalid_byte(&[b as u8]).is_none();
        if valid && encoding.unpack_row(&[b as u8], &mut trits[..n]).is_ok() {
            *slot = trits.iter().filter(|&&t| t == 0).count() as u8;
        }
    }
    table
}

/// Rules 4.3 (valid bytes), 4.4 (canonical padding) and the `zeros` statistic of rule 4.6.
/// Each row is validated by the codec ([`Encoding::validate_row`], the one home of rules 4.3
/// and 4.4), which reports 4.3 before 4.4 for the same row.
pub fn check_encoding(bundle: &Bundle) -> Result<()> {
    let zeros_table = zero_counts(bundle.params().encoding);
    let results = quantized(bundle)
        .par_iter()
        .map(|p| {
            for r in 0..p.rows {
                p.encoding
                    .validate_row(p.row(r), p.cols)
                    .map_err(|e| bundle.row_error(&p.spec.name, r, e))?;
            }
            let zeros: u64 = p
                .packed
                .iter()
                .map(|&b| zeros_table[b as usize] as u64)
                .sum();
            bundle.release(p.packed);
            if Some(zeros) != p.spec.zeros {
                return Err(Violation::new(
                    bundle.ternary_file().path(),
                    Rule::TensorStats,
                    format!("zeros {} (manifest)", p.spec.zeros.unwrap_or(0)),
                    format!("{zeros} zero trits"),
                )
                .tensor(&p.spec.name)
                .into());
            }
            Ok(())
        })
        .collect();
    first_error(results)
}

/// Rule 4.5 (finite, positive, F16-representable scales) and scale_min/scale_max of rule 4.6.
/// Assumes valid packed bytes (run [`check_encoding`] first).
pub fn check_scales(bundle: &Bundle) -> Result<()> {
    let path = bundle.ternary_file().path();
    let results = quantized(bundle)
        .par_iter()
        .map(|p| {
            let bad = |rule, expected: String, found: String| Violation::new(path, rule, expected, found).tensor(&p.spec.name);
            let scales = p.scales();
            if let Some((i, s)) = scales.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0)) {
                return Err(bad(Rule::ScaleValid, "finite scales > 0".into(), format!("scale {s} at scale index {i}")).into());
            }
            // Only a problem where the scale governs a non-zero trit: look under every scale
            // that does not fit F16 (they are rare), not just the first.
            for i in (0..scales.len()).filter(|&i| !scale_fits_f16(scales[i])) {
                if let Some((r, c)) = nonzero_trit_under_scale(p, i) {
                    return Err(bad(
                        Rule::ScaleValid,
                        "a scale whose F16 rounding is finite and non-zero where trits are non-zero".into(),
                        format!(
                            "scale {:e} (F16 {}) at scale index {i}, governing the non-zero trit at row {r}, column {c}",
                            scales[i],
                            f16::from_f32(scales[i])
                        ),
                    )
                    .into());
                }
            }
            let lo = scales.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = scales.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if Some(lo) != p.spec.scale_min || Some(hi) != p.spec.scale_max {
                return Err(bad(
                    Rule::TensorStats,
                    format!("scale_min {:?} and scale_max {:?} (manifest)", p.spec.scale_min.unwrap_or(0.0), p.spec.scale_max.unwrap_or(0.0)),
                    format!("scales from {lo:?} to {hi:?}"),
                )
                .into());
            }
            Ok(())
        })
        .collect();
    first_error(results)
}

/// The first non-zero trit governed by scale index `i` of `p`, as (row, column).
fn nonzero_trit_under_scale(p: &PackedTensor<'_>, i: usize) -> Option<(usize, usize)> {
    let (per_row, group) = p.granularity.row_layout(p.cols);
    let rows: Vec<usize> = match p.granularity {
        crate::Granularity::Tensor => (0..p.rows).collect(),
        crate::Granularity::Channel => vec![i],
        crate::Granularity::Group(_) => vec![i / per_row],
    };
    let col_range = match p.granularity {
        crate::Granularity::Group(_) => {
            let g = i % per_row;
            g * group..((g + 1) * group).min(p.cols)
        }
        _ => 0..p.cols,
    };
    let mut trits = vec![0i8; p.cols];
    for r in rows {
        p.encoding.unpack_row(p.row(r), &mut trits).ok()?;
        if let Some(c) = col_range.clone().find(|&c| trits[c] != 0) {
            return Some((r, c));
        }
    }
    None
}

/// Rule 4.7: passthrough values are finite and fit F16.
pub fn check_passthrough(bundle: &Bundle) -> Result<()> {
    let path = bundle.ternary_file().path();
    let results = passthrough(bundle)
        .par_iter()
        .map(|&(t, bytes, _)| {
            match le::f32s(bytes)
                .enumerate()
                .find(|(_, v)| !f16::from_f32(*v).is_finite())
            {
                None => Ok(()),
                Some((i, v)) => Err(Violation::new(
                    path,
                    Rule::PassthroughRange,
                    "finite values within the F16 range (|v| < 65520)",
                    format!("{v} at flat index {i}"),
                )
                .tensor(&t.name)
                .into()),
            }
        })
        .collect();
    first_error(results)
}

/// Rules 5.2 and 5.3: every FP16 value equals the dequantized trit (or the F32 passthrough
/// value) rounded to F16, bit for bit. Assumes valid packed bytes (run [`check_encoding`] first).
pub fn check_dequantization(bundle: &Bundle) -> Result<()> {
    let path = bundle.fp16_file().path();
    let mismatch = |rule,
                    name: &str,
                    index: usize,
                    shape: &[u64],
                    expected: u16,
                    found: u16|
     -> crate::Error {
        let position = match shape.split_first() {
            Some((_, rest)) if !rest.is_empty() => {
                let cols: u64 = rest.iter().product();
                format!(
                    "flat index {index} (row {}, column {})",
                    index as u64 / cols,
                    index as u64 % cols
                )
            }
            _ => format!("flat index {index}"),
        };
        Violation::new(
            path,
            rule,
            format!(
                "F16 0x{expected:04x} ({}) at {position}",
                f16::from_bits(expected)
            ),
            format!("0x{found:04x} ({})", f16::from_bits(found)),
        )
        .tensor(name)
        .into()
    };
    // Rows in parallel: dequantize a row into a scratch buffer and compare it with the stored
    // row branch-free; only a row that differs is searched for its first bad value.
    let q: Vec<Result<()>> = bundle
        .tensors()
        .filter_map(|t| match t.stored {
            Stored::Packed(p) => Some((p, t.fp16)),
            Stored::F32(_) => None,
        })
        .map(|(p, found)| {
            let scales = p.scales();
            let (_, group) = p.granularity.row_layout(p.cols);
            let first_bad_row = found
                .par_chunks(2 * p.cols)
                .enumerate()
                .map_init(
                    || (vec![0i8; p.cols], vec![f16::ZERO; p.cols]),
                    |(trits, row), (r, stored)| {
                        let rs = p.granularity.row_scales(&scales, r, p.cols);
                        if dequantize_row_f16(p.encoding, p.row(r), rs, group, trits, row).is_err()
                        {
                            return Some(r);
                        }
                        let differs = row
                            .iter()
                            .zip(le::u16s(stored))
                            .fold(0u16, |acc, (e, s)| acc | (e.to_bits() ^ s));
                        (differs != 0).then_some(r)
                    },
                )
                .flatten()
                .min();
            bundle.release(p.packed);
            bundle.release(found);
            let Some(r) = first_bad_row else {
                return Ok(());
            };
            let mut trits = vec![0i8; p.cols];
            let mut row = vec![f16::ZERO; p.cols];
            let rs = p.granularity.row_scales(&scales, r, p.cols);
            dequantize_row_f16(p.encoding, p.row(r), rs, group, &mut trits, &mut row)
                .map_err(|e| bundle.row_error(&p.spec.name, r, e))?;
            let stored = &found[2 * p.cols * r..2 * p.cols * (r + 1)];
            let Some((c, (e, f))) = row
                .iter()
                .zip(le::u16s(stored))
                .enumerate()
                .find(|(_, (e, f))| e.to_bits() != *f)
            else {
                return Ok(());
            };
            Err(mismatch(
                Rule::DequantizationExact,
                &p.spec.name,
                r * p.cols + c,
                &p.spec.shape,
                e.to_bits(),
                f,
            ))
        })
        .collect();
    first_error(q)?;
    let results = passthrough(bundle)
        .par_iter()
        .map(|&(t, src, found)| {
            match le::f32s(src)
                .zip(le::u16s(found))
                .enumerate()
                .find(|(_, (v, f))| f16::from_f32(*v).to_bits() != *f)
            {
                None => Ok(()),
                Some((i, (v, f))) => Err(mismatch(
                    Rule::PassthroughExact,
                    &t.name,
                    i,
                    &t.shape,
                    f16::from_f32(v).to_bits(),
                    f,
                )),
            }
        })
        .collect();
    first_error(results)
}

/// Rules 6.2 and 6.3: validation inputs are finite; labels and original predictions index the
/// last layer's outputs.
pub fn check_validation_values(bundle: &Bundle) -> Result<()> {
    let Some(v) = bundle.validation() else {
        return Ok(());
    };
    let classes = bundle.classes();
    if bundle.decoder().is_some() {
        let (ids, labels): (Vec<i64>, Vec<i64>) =
            (le::i64s(v.inputs).collect(), le::i64s(v.labels).collect());
        token_values(v.path, &ids, &labels, classes)?;
    } else {
        validation_values(v.path, le::f32s(v.inputs), le::i64s(v.labels), classes)?;
    }
    if let Some(p) = v.original_predictions {
        class_indices(
            v.path,
            (VALIDATION_ORIGINAL_PREDICTIONS, Rule::OriginalPredictions),
            le::i64s(p),
            classes,
        )?;
        if let Some(d) = v.distributions {
            let predictions: Vec<i64> = le::i64s(p).collect();
            check_distributions(v.path, &predictions, d, classes as usize)?;
        }
    }
    Ok(())
}

/// Rule 6.4 (format 5.0): the original model's stored distributions are distributions and
/// agree with its predictions. Every log-probability is finite and <= 0 and every log-sum-exp
/// finite; a full row's log-sum-exp (f64, index order) lies within 1e-3 of 0 and the row's
/// largest value is at the stored prediction; a top-K row's ids are distinct classes, the
/// first the stored prediction, its log-probabilities non-increasing with probabilities
/// adding up to at most 1 + 1e-3.
pub fn check_distributions(
    path: &Path,
    predictions: &[i64],
    d: DistributionView<'_>,
    classes: usize,
) -> Result<()> {
    let bad = |tensor: &str, expected: String, found: String| -> crate::error::Error {
        Violation::new(path, Rule::OriginalDistributions, expected, found)
            .tensor(tensor)
            .into()
    };
    let log_probs = |tensor: &str, bytes: &[u8]| -> Result<Vec<f32>> {
        let values: Vec<f32> = le::f32s(bytes).collect();
        match values.iter().position(|x| !(x.is_finite() && *x <= 0.0)) {
            Some(i) => Err(bad(
                tensor,
                "finite log-probabilities <= 0".into(),
                format!("{} at flat index {i}", values[i]),
            )),
            None => Ok(values),
        }
    };
    match d {
        DistributionView::Full { log_probs: bytes } => {
            let lp = log_probs(VALIDATION_ORIGINAL_LOG_PROBS, bytes)?;
            for (row, (values, &p)) in lp.chunks(classes.max(1)).zip(predictions).enumerate() {
                let lse = log_sum_exp(values).unwrap_or(f64::NAN);
                if lse.is_nan() || lse.abs() > NORMALIZATION_TOLERANCE {
                    return Err(bad(
                        VALIDATION_ORIGINAL_LOG_PROBS,
                        format!("each row's log-sum-exp within {NORMALIZATION_TOLERANCE} of 0 (probabilities adding up to 1)"),
                        format!("{lse} in row {row}"),
                    ));
                }
                let max = values.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let at = values.get(p as usize).copied().unwrap_or(f32::NAN);
                if at != max {
                    return Err(bad(
                        VALIDATION_ORIGINAL_LOG_PROBS,
                        format!("row {row}'s largest log-probability ({max}) at its original prediction {p}"),
                        format!("{at} there"),
                    ));
                }
            }
        }
        DistributionView::TopK {
            k,
            ids,
            log_probs: lp_bytes,
            log_sum_exp,
            label_log_probs,
        } => {
            let lp = log_probs(VALIDATION_ORIGINAL_TOP_LOG_PROBS, lp_bytes)?;
            log_probs(VALIDATION_ORIGINAL_LABEL_LOG_PROBS, label_log_probs)?;
            if let Some((i, x)) = le::f32s(log_sum_exp)
                .enumerate()
                .find(|(_, x)| !x.is_finite())
            {
                return Err(bad(
                    VALIDATION_ORIGINAL_LOG_SUM_EXP,
                    "finite values".into(),
                    format!("{x} at index {i}"),
                ));
            }
            let ids: Vec<i64> = le::i64s(ids).collect();
            class_indices(
                path,
                (VALIDATION_ORIGINAL_TOP_IDS, Rule::OriginalDistributions),
                ids.iter().copied(),
                classes as u64,
            )?;
            let k = k.max(1);
            let mut seen = vec![false; classes];
            for (row, ((ids, lp), &p)) in
                ids.chunks(k).zip(lp.chunks(k)).zip(predictions).enumerate()
            {
                if ids[0] != p {
                    return Err(bad(
                        VALIDATION_ORIGINAL_TOP_IDS,
                        format!("row {row} to start with its original prediction {p}"),
                        format!("{}", ids[0]),
                    ));
                }
                for &id in ids {
                    if std::mem::replace(&mut seen[id as usize], true) {
                        return Err(bad(
                            VALIDATION_ORIGINAL_TOP_IDS,
                            format!("distinct ids in row {row}"),
                            format!("{id} twice"),
                        ));
                    }
                }
                for &id in ids {
                    seen[id as usize] = false;
                }
                if let Some(j) = lp.windows(2).position(|w| w[1] > w[0]) {
                    return Err(bad(
                        VALIDATION_ORIGINAL_TOP_LOG_PROBS,
                        format!("non-increasing log-probabilities in row {row}"),
                        format!("{} after {} at position {}", lp[j + 1], lp[j], j + 1),
                    ));
                }
                let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
                if total > 1.0 + NORMALIZATION_TOLERANCE {
                    return Err(bad(
                        VALIDATION_ORIGINAL_TOP_LOG_PROBS,
                        format!("row {row}'s probabilities adding up to at most 1 + {NORMALIZATION_TOLERANCE}"),
                        format!("{total}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Rule 6.2 for a decoder's validation set (from a bundle's file, or the set a writer is about
/// to embed, read from `path`): every token id and every label is a token of the `vocab`.
pub fn token_values(path: &Path, ids: &[i64], labels: &[i64], vocab: u64) -> Result<()> {
    let rule = Rule::ValidationValues;
    class_indices(
        path,
        (VALIDATION_INPUT_IDS, rule),
        ids.iter().copied(),
        vocab,
    )?;
    class_indices(
        path,
        (VALIDATION_LABELS, rule),
        labels.iter().copied(),
        vocab,
    )
}

/// Rule 6.2 on a validation set's values, wherever they come from (a bundle's file, or the set
/// a writer is about to embed, read from `path`): every input finite, every label in
/// `0..classes`.
pub fn validation_values(
    path: &Path,
    mut inputs: impl Iterator<Item = f32>,
    labels: impl Iterator<Item = i64>,
    classes: u64,
) -> Result<()> {
    if let Some((i, v)) = inputs.by_ref().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Violation::new(
            path,
            Rule::ValidationValues,
            "finite inputs",
            format!("{v} at flat index {i}"),
        )
        .tensor(VALIDATION_INPUTS)
        .into());
    }
    class_indices(
        path,
        (VALIDATION_LABELS, Rule::ValidationValues),
        labels,
        classes,
    )
}

/// Every value of `tensor` (labels, rule 6.2, or original predictions, rule 6.3) is a class:
/// an index into the last layer's `classes` outputs.
fn class_indices(
    path: &Path,
    (tensor, rule): (&str, Rule),
    mut values: impl Iterator<Item = i64>,
    classes: u64,
) -> Result<()> {
    match values
        .by_ref()
        .enumerate()
        .find(|(_, l)| !(0..classes as i128).contains(&(*l as i128)))
    {
        Some((i, l)) => Err(Violation::new(
            path,
            rule,
            format!("{tensor} in 0..{classes} (outputs of the last layer, or the vocabulary)"),
            format!("{l} at index {i}"),
        )
        .tensor(tensor)
        .into()),
        None => Ok(()),
    }
}
