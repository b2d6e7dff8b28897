//! Dequantization: packed trits and scales to f32 or F16 values (spec rule 5.2).
//!
//! `fp16 = f16_rne(f32(t - zero_point) * scale)`. With `zero_point = 0` and `t` in {-1, 0, +1}
//! the f32 product is exact (`-scale`, `+0.0` or `scale`), so the F16 value of a trit is one of
//! three constants per scale; the row decoders below use that instead of converting each value.

use half::f16;
use rayon::prelude::*;

use crate::format::encoding::{Encoding, RowError};
use crate::format::quantization::Granularity;

/// The dequantized F16 value of one trit: `f16_rne(f32(t - zero_point) * scale)` (rule 5.2).
#[inline]
pub fn dequantize_f16(trit: i8, scale: f32, zero_point: i32) -> f16 {
    f16::from_f32((i32::from(trit) - zero_point) as f32 * scale)
}

/// The dequantized f32 value of one trit: `f32(t - zero_point) * scale`.
#[inline]
pub fn dequantize_f32(trit: i8, scale: f32, zero_point: i32) -> f32 {
    (i32::from(trit) - zero_point) as f32 * scale
}

/// Decodes one packed row straight to f32 values, applying the row's scales.
///
/// `row_scales` are the scales of this row and `group` the number of consecutive columns each
/// covers (see [`Granularity::row_layout`] and [`Granularity::row_scales`]); `out.len()` is the
/// column count. Zero point 0 is assumed (the only value format 1.0 allows, rule 2.8).
pub fn dequantize_row_f32(
    encoding: Encoding,
    packed: &[u8],
    row_scales: &[f32],
    group: usize,
    out: &mut [f32],
) -> Result<(), RowError> {
    encoding.unpack_row_f32(packed, out)?;
    for (chunk, &s) in out.chunks_mut(group.max(1)).zip(row_scales) {
        for v in chunk {
            *v *= s;
        }
    }
    Ok(())
}

/// Decodes one packed row straight to F16 values (rule 5.2), using `scratch` (at least
/// `out.len()` trits) for the unpacked row.
///
/// With `zero_point = 0` the value of a trit is `+0.0`, `f16(scale)` or `-f16(scale)`
/// (round-to-nearest-even is symmetric), so each output is two masks over the bits of
/// `f16(scale)`: branch-free and vectorizable, and equal to [`dequantize_f16`] bit for bit.
pub fn dequantize_row_f16(
    encoding: Encoding,
    packed: &[u8],
    row_scales: &[f32],
    group: usize,
    scratch: &mut [i8],
    out: &mut [f16],
) -> Result<(), RowError> {
    let trits = &mut scratch[..out.len()];
    encoding.unpack_row(packed, trits)?;
    let group = group.max(1);
    for ((o, t), &s) in out
        .chunks_mut(group)
        .zip(trits.chunks(group))
        .zip(row_scales)
    {
        let magnitude = f16::from_f32(s).to_bits();
        for (o, &t) in o.iter_mut().zip(t.iter()) {
            let t = i16::from(t);
            let keep = (-(t & 1)) as u16; // all ones for t = +-1, zero for t = 0
            let sign = (t as u16) & 0x8000; // set for t = -1
            *o = f16::from_bits((magnitude & keep) | sign);
        }
    }
    Ok(())
}

/// Dequantizes a whole packed tensor (`rows` x `cols`) to F16, rows in parallel.
pub fn dequantize_tensor_f16(
    encoding: Encoding,
    granularity: Granularity,
    packed: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Vec<f16>, RowError> {
    let bpr = encoding.bytes_per_row(cols as u64) as usize;
    let (_, group) = granularity.row_layout(cols);
    if packed.len() != rows * bpr {
        return Err(RowError::Length {
            expected: rows * bpr,
            found: packed.len(),
        });
    }
    let needed_scales: u64 = granularity
        .scale_shape(rows as u64, cols as u64)
        .iter()
        .product();
    if (scales.len() as u64) < needed_scales {
        return Err(RowError::ScaleCount {
            expected: needed_scales as usize,
            found: scales.len(),
        });
    }
    let mut out = vec![f16::ZERO; rows * cols];
    if cols == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(cols)
        .zip(packed.par_chunks(bpr))
        .enumerate()
        .try_for_each_init(
            || vec![0i8; cols],
            |scratch, (r, (o, row))| {
                let rs = granularity.row_scales(scales, r, cols);
                dequantize_row_f16(encoding, row, rs, group, scratch, o)
            },
        )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_trit_is_positive_zero_and_negative_is_negated() {
        assert_eq!(dequantize_f16(0, 0.45, 0).to_bits(), 0x0000);
        assert_eq!(dequantize_f16(1, 0.45, 0).to_bits(), 0x3733);
        assert_eq!(dequantize_f16(-1, 0.45, 0).to_bits(), 0xB733);
    }

    #[test]
    fn row_decoders_agree_with_the_scalar_formula() {
        for enc in Encoding::ALL {
            let trits: Vec<i8> = (0..13).map(|i| (i % 3) as i8 - 1).collect();
            let mut packed = vec![0u8; enc.bytes_per_row(13) as usize];
            enc.pack_row(&trits, &mut packed).unwrap();
            let scales = [0.3f32, 7.0, 1e-3];
            let mut f = vec![0f32; 13];
            dequantize_row_f32(enc, &packed, &scales, 5, &mut f).unwrap();
            let mut h = vec![f16::ZERO; 13];
            let mut scratch = vec![0i8; 13];
            dequantize_row_f16(enc, &packed, &scales, 5, &mut scratch, &mut h).unwrap();
            for (i, &t) in trits.iter().enumerate() {
                let s = scales[i / 5];
                assert_eq!(f[i].to_bits(), dequantize_f32(t, s, 0).to_bits());
                assert_eq!(h[i].to_bits(), dequantize_f16(t, s, 0).to_bits());
            }
        }
    }
    #[test]
    fn whole_tensor_lengths_are_checked_and_reported_as_such() {
        let enc = Encoding::Trit5;
        let packed = vec![0u8; 2 * enc.bytes_per_row(7) as usize];
        // 2 rows of 7 columns in groups of 3: 2 x 3 scales needed.
        let g = Granularity::Group(3);
        assert_eq!(
            dequantize_tensor_f16(enc, g, &packed, &[1.0; 5], 2, 7),
            Err(RowError::ScaleCount {
                expected: 6,
                found: 5
            })
        );
        assert_eq!(
            dequantize_tensor_f16(enc, g, &packed[1..], &[1.0; 6], 2, 7),
            Err(RowError::Length {
                expected: 4,
                found: 3
            })
        );
        assert!(dequantize_tensor_f16(enc, g, &packed, &[1.0; 6], 2, 7).is_ok());
    }
}
