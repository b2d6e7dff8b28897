//! Little-endian element decoding of tensor data: every multi-byte value in a bundle is
//! little-endian (spec section 1, "Conventions"). A trailing partial element is ignored; callers
//! have already checked that byte lengths are whole multiples of the element size.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

/// `f32` values.
pub fn f32s(bytes: &[u8]) -> impl ExactSizeIterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// `u16` values (F16 and BF16 bit patterns).
pub fn u16s(bytes: &[u8]) -> impl ExactSizeIterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// `f16` values.
pub fn f16s(bytes: &[u8]) -> impl ExactSizeIterator<Item = f16> + '_ {
    u16s(bytes).map(f16::from_bits)
}

/// F16 little-endian bytes to f32 (exact); see [`f16s_into`].
pub fn f16s_to_f32(bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / 2];
    f16s_into(bytes, &mut out, |h, dst| h.convert_to_f32_slice(dst));
    out
}

/// F16 little-endian bytes to f64 (exact); see [`f16s_into`].
pub fn f16s_to_f64(bytes: &[u8]) -> Vec<f64> {
    let mut out = vec![0f64; bytes.len() / 2];
    f16s_into(bytes, &mut out, |h, dst| h.convert_to_f64_slice(dst));
    out
}

/// F16 little-endian bytes converted into `out` (as many values as both hold) by `convert`
/// (half's slice conversions: F16C where the CPU has it), through a small stack buffer so that
/// no second copy of the tensor is allocated; blocks of 256 Ki values on all threads (a layer of
/// a large model is 10^8 values).
pub fn f16s_into<T: Send>(bytes: &[u8], out: &mut [T], convert: impl Fn(&[f16], &mut [T]) + Sync) {
    const CHUNK: usize = 1024;
    out.par_chunks_mut(CHUNK * 256)
        .zip(bytes.par_chunks(2 * CHUNK * 256))
        .for_each(|(out, bytes)| {
            let mut buf = [f16::ZERO; CHUNK];
            for (src, dst) in bytes.chunks(2 * CHUNK).zip(out.chunks_mut(CHUNK)) {
                let n = dst.len().min(src.len() / 2);
                for (h, v) in buf[..n].iter_mut().zip(f16s(src)) {
                    *h = v;
                }
                convert(&buf[..n], &mut dst[..n]);
            }
        });
}

/// The little-endian bytes of `values` (`N` bytes each, by `bytes_of`), in one allocation of
/// the exact size (a `flat_map` collect grows its vector a value at a time).
pub fn to_le<T: Copy, const N: usize>(values: &[T], bytes_of: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * N];
    for (dst, &v) in out.chunks_exact_mut(N).zip(values) {
        dst.copy_from_slice(&bytes_of(v));
    }
    out
}

/// The little-endian bytes of `values`: borrowed as they are in memory on a little-endian
/// machine, converted ([`to_le`]) on a big-endian one.
pub fn bytes_of<'a, T: bytemuck::Pod, const N: usize>(
    values: &'a [T],
    to_le_bytes: impl Fn(T) -> [u8; N],
) -> std::borrow::Cow<'a, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        std::borrow::Cow::Owned(to_le(values, to_le_bytes))
    }
}

/// The little-endian bytes of F16 `values` (their bits, [`bytes_of`]).
pub fn f16_bytes(values: &[f16]) -> std::borrow::Cow<'_, [u8]> {
    bytes_of(values.reinterpret_cast(), u16::to_le_bytes)
}

/// BF16 little-endian bytes to f32 (exact), blocks of 256 Ki values on all threads.
pub fn bf16s_to_f32(bytes: &[u8]) -> Vec<f32> {
    const BLOCK: usize = 1 << 18;
    let mut out = vec![0f32; bytes.len() / 2];
    out.par_chunks_mut(BLOCK)
        .zip(bytes.par_chunks(2 * BLOCK))
        .for_each(|(out, bytes)| {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        });
    out
}

/// `bf16` values.
pub fn bf16s(bytes: &[u8]) -> impl ExactSizeIterator<Item = bf16> + '_ {
    u16s(bytes).map(bf16::from_bits)
}

/// `i64` values.
pub fn i64s(bytes: &[u8]) -> impl ExactSizeIterator<Item = i64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_little_endian_and_ignores_a_partial_tail() {
        let bytes = [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, 0xAA];
        assert_eq!(f32s(&bytes).collect::<Vec<_>>(), [1.0, -2.0]);
        assert_eq!(
            f16s(&[0x00, 0x3C, 0x00, 0xC0, 1]).collect::<Vec<_>>(),
            [f16::ONE, f16::from_f32(-2.0)]
        );
        assert_eq!(bf16s(&[0x80, 0x3F]).collect::<Vec<_>>(), [bf16::ONE]);
        assert_eq!(bf16s_to_f32(&[0x80, 0x3F, 0x00, 0xC0, 9]), [1.0, -2.0]);
        assert_eq!(
            to_le(&[1.0f32, -2.0], f32::to_le_bytes),
            [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0]
        );
        assert_eq!(to_le(&[f16::ONE], f16::to_le_bytes), [0x00, 0x3C]);
        assert_eq!(&*f16_bytes(&[f16::ONE]), [0x00, 0x3C]);
        assert_eq!(
            &*bytes_of(&[-2.0f32], f32::to_le_bytes),
            [0x00, 0x00, 0x00, 0xC0]
        );
        assert_eq!(u16s(&[0x34, 0x12]).collect::<Vec<_>>(), [0x1234]);
        let mut b = (-3i64).to_le_bytes().to_vec();
        b.extend_from_slice(&7i64.to_le_bytes());
        b.push(9);
        assert_eq!(i64s(&b).collect::<Vec<_>>(), [-3, 7]);
        // The buffered F16 -> f32 conversion over more than one chunk, with a partial tail.
        let mut h: Vec<u8> = (0..2500u16).flat_map(|i| (i * 13).to_le_bytes()).collect();
        h.push(7);
        let want: Vec<f32> = f16s(&h).map(f16::to_f32).collect();
        let got = f16s_to_f32(&h);
        assert_eq!(got.len(), 2500);
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
