//! The ternary tensor types of GGUF (spec section 18.6): ggml's TQ1_0 and TQ2_0
//! (`ggml/src/ggml-quants.c`, gguf-py `quants.py`), blocks of 256 consecutive weights of a row
//! with one f16 scale `d`, and bitnet.cpp's I2_S, the whole tensor as 2-bit codes with one f32
//! scale. Each weight is stored as the code `t + 1` of its trit `t` in {-1, 0, +1}; the
//! runtimes dequantize `d × t` (`scale × t`).
//!
//! This module packs trits that are already known (never re-quantizes values): a block's `d` is
//! given by the caller; and unpacks them, refusing a code that is not a trit (rule 8.5). It
//! does no I/O.

use half::f16;

pub use crate::gguf::types::GgmlType;
use crate::gguf::types::{I2S_BLOCK, I2S_TRAILER};

/// Weights per block (ggml's `QK_K`).
pub const BLOCK: usize = 256;

/// The ternary types a bundle is exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TernaryType {
    /// `GGML_TYPE_TQ1_0` (34): five trits per byte in base 3, 54 bytes per block (1.6875 bits
    /// per weight).
    Tq1_0,
    /// `GGML_TYPE_TQ2_0` (35): four 2-bit codes per byte, 66 bytes per block (2.0625 bits per
    /// weight).
    Tq2_0,
    /// bitnet.cpp's `GGML_TYPE_I2_S` (36): four 2-bit codes per byte in blocks of 128, one f32
    /// scale per tensor (2 bits per weight).
    I2S,
}

impl TernaryType {
    /// The `--type` name: `"tq1_0"` or `"tq2_0"`.
    pub fn name(self) -> &'static str {
        match self {
            TernaryType::Tq1_0 => "tq1_0",
            TernaryType::Tq2_0 => "tq2_0",
            TernaryType::I2S => "i2_s",
        }
    }

    /// The tensor type.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            TernaryType::Tq1_0 => GgmlType::Tq1_0,
            TernaryType::Tq2_0 => GgmlType::Tq2_0,
            TernaryType::I2S => GgmlType::I2S,
        }
    }

    /// `general.file_type`: llama.cpp's `MOSTLY_TQ1_0` 36 and `MOSTLY_TQ2_0` 37, bitnet.cpp's
    /// `MOSTLY_I2_S` 40.
    pub fn file_type(self) -> u32 {
        match self {
            TernaryType::Tq1_0 => 36,
            TernaryType::Tq2_0 => 37,
            TernaryType::I2S => 40,
        }
    }

    /// Appends one TQ block: `trits` (exactly [`BLOCK`] values in {-1, 0, 1}) and scale `d`.
    /// I2_S has no blocks of its own scale: see [`pack_i2s`].
    pub fn pack_block(self, trits: &[i8], d: f16, out: &mut Vec<u8>) {
        debug_assert_eq!(trits.len(), BLOCK);
        match self {
            TernaryType::Tq1_0 => out.extend_from_slice(&pack_tq1_0(trits, d)),
            TernaryType::Tq2_0 | TernaryType::I2S => out.extend_from_slice(&pack_tq2_0(trits, d)),
        }
    }
}

/// The code of trit `t`: `t + 1` in {0, 1, 2}.
fn code(t: i8) -> u8 {
    (t.clamp(-1, 1) + 1) as u8
}

/// Base-3 digits `codes` (first most significant), then scaled into a byte as ggml stores
/// them: `ceil(v × 256 / 243)`, so that `(byte × 3) >> 8` extracts the first digit.
fn tq1_byte(codes: impl Iterator<Item = u8>, digits: usize) -> u8 {
    let mut v: u16 = 0;
    for c in codes {
        v = v * 3 + u16::from(c);
    }
    // Fewer than five digits: the first one still goes to the most significant place.
    for _ in digits..5 {
        v *= 3;
    }
    (v * 256).div_ceil(243) as u8
}

/// One TQ1_0 block (`block_tq1_0`): `qs[48]`, `qh[4]`, `d`.
///
/// - bytes 0-31: byte `j` holds weights `j + 32k`, k = 0..5 (weights 0-159);
/// - bytes 32-47: byte `32 + j` holds weights `160 + j + 16k`, k = 0..5 (weights 160-239);
/// - bytes 48-51: byte `48 + j` holds weights `240 + j + 4k`, k = 0..4 (weights 240-255);
/// - bytes 52-53: `d` as little-endian f16.
pub fn pack_tq1_0(trits: &[i8], d: f16) -> [u8; 54] {
    let mut b = [0u8; 54];
    for j in 0..32 {
        b[j] = tq1_byte((0..5).map(|k| code(trits[j + 32 * k])), 5);
    }
    for j in 0..16 {
        b[32 + j] = tq1_byte((0..5).map(|k| code(trits[160 + j + 16 * k])), 5);
    }
    for j in 0..4 {
        b[48 + j] = tq1_byte((0..4).map(|k| code(trits[240 + j + 4 * k])), 4);
    }
    b[52..54].copy_from_slice(&d.to_le_bytes());
    b
}

/// One TQ2_0 block (`block_tq2_0`): `qs[64]`, `d`. Weight `e` is in byte
/// `(e / 128) × 32 + e % 32` at bit `2 × ((e % 128) / 32)`; bytes 64-65 are `d`.
pub fn pack_tq2_0(trits: &[i8], d: f16) -> [u8; 66] {
    let mut b = [0u8; 66];
    for (e, &t) in trits.iter().enumerate().take(BLOCK) {
        b[(e / 128) * 32 + e % 32] |= code(t) << (2 * ((e % 128) / 32));
    }
    b[64..66].copy_from_slice(&d.to_le_bytes());
    b
}

/// The scale `d` of a block of trits whose weights are `t × s` in FP16: `f16(s)`, the block's
/// absolute maximum, as ggml's own quantizer (and gguf-py's) computes it from those values; a
/// block of zeros has absmax 0, so its `d` is 0 as theirs is.
pub fn block_scale(trits: &[i8], s: f32) -> f16 {
    if trits.iter().any(|&t| t != 0) {
        f16::from_f32(s)
    } else {
        f16::ZERO
    }
}

/// The trits and `d` of a TQ1_0 block (54 bytes), as ggml's `dequantize_row_tq1_0` reads them:
/// the base-3 digit `k` of byte `q` is `((q × 3^k mod 256) × 3) >> 8`. Every byte gives digits
/// in {0, 1, 2}, so every block is a block of trits.
pub fn unpack_tq1_0(block: &[u8]) -> ([i8; BLOCK], f16) {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let digit = |q: u8, k: usize| ((u16::from(q.wrapping_mul(POW3[k])) * 3) >> 8) as i8 - 1;
    let mut t = [0i8; BLOCK];
    for k in 0..5 {
        for m in 0..32 {
            t[32 * k + m] = digit(block[m], k);
        }
        for m in 0..16 {
            t[160 + 16 * k + m] = digit(block[32 + m], k);
        }
    }
    for k in 0..4 {
        for j in 0..4 {
            t[240 + 4 * k + j] = digit(block[48 + j], k);
        }
    }
    (t, f16::from_le_bytes([block[52], block[53]]))
}

/// The trits and `d` of a TQ2_0 block (66 bytes), or the index of a weight whose code is 3
/// (ggml would dequantize it to `2 d`, which is not a trit).
pub fn unpack_tq2_0(block: &[u8]) -> Result<([i8; BLOCK], f16), usize> {
    let mut t = [0i8; BLOCK];
    for (e, slot) in t.iter_mut().enumerate() {
        let code = (block[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        if code == 3 {
            return Err(e);
        }
        *slot = code as i8 - 1;
    }
    Ok((t, f16::from_le_bytes([block[64], block[65]])))
}

/// Where weight `e` of an I2_S tensor is: its byte and the shift of its 2 bits. Blocks of 128
/// values take 32 bytes; value `j` of a block is in byte `j % 32` at bits `6 - 2 (j / 32)`.
fn i2s_position(e: usize) -> (usize, u32) {
    let (block, j) = (e / I2S_BLOCK as usize, e % I2S_BLOCK as usize);
    (block * 32 + j % 32, 6 - 2 * (j / 32) as u32)
}

/// An I2_S tensor: `trits` (a multiple of 128 of them, in ggml order) as codes, then `scale`
/// as little-endian f32 at byte `n / 4`, then 28 zero bytes, as bitnet.cpp's
/// `quantize_i2_s` lays it out on x86.
pub fn pack_i2s(trits: &[i8], scale: f32) -> Vec<u8> {
    let codes = trits.len() / 4;
    let mut out = vec![0u8; codes + I2S_TRAILER as usize];
    for (e, &t) in trits.iter().enumerate() {
        let (byte, shift) = i2s_position(e);
        out[byte] |= code(t) << shift;
    }
    out[codes..codes + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// The `n` trits and the scale of an I2_S tensor's bytes (`n / 4 + 32` of them, checked by the
/// caller), or the index of a weight whose code is 3 (not a trit).
pub fn unpack_i2s(bytes: &[u8], n: usize) -> Result<(Vec<i8>, f32), usize> {
    let mut trits = Vec::with_capacity(n);
    for e in 0..n {
        let (byte, shift) = i2s_position(e);
        let c = (bytes[byte] >> shift) & 3;
        if c == 3 {
            return Err(e);
        }
        trits.push(c as i8 - 1);
    }
    let s = &bytes[n / 4..n / 4 + 4];
    Ok((trits, f32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trits from a small linear congruential generator: every code, in every position.
    fn trits(n: usize, seed: u64) -> Vec<i8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) % 3) as i8 - 1
            })
            .collect()
    }

    #[test]
    fn tq_blocks_unpack_to_what_was_packed() {
        for seed in 0..20 {
            let t = trits(BLOCK, seed);
            let d = f16::from_f32(0.01 * (seed + 1) as f32);
            assert_eq!(
                unpack_tq1_0(&pack_tq1_0(&t, d)),
                (t.clone().try_into().unwrap(), d)
            );
            assert_eq!(
                unpack_tq2_0(&pack_tq2_0(&t, d)),
                Ok((t.try_into().unwrap(), d))
            );
        }
    }

    #[test]
    fn a_tq2_0_code_3_is_not_a_trit() {
        let mut b = pack_tq2_0(&[0; BLOCK], f16::ONE);
        // Weight 37: byte 5 at bits 2-3.
        b[5] |= 0b11 << 2;
        assert_eq!(unpack_tq2_0(&b), Err(37));
    }

    #[test]
    fn i2s_places_each_value_as_bitnet_cpp_does() {
        let mut t = vec![0i8; 256];
        t[0] = 1; // block 0, j 0: byte 0, bits 6-7, code 2
        t[33] = -1; // block 0, j 33: byte 1, bits 4-5, code 0
        t[128 + 127] = 1; // block 1, j 127: byte 32 + 31, bits 0-1, code 2
        let b = pack_i2s(&t, 0.5);
        assert_eq!(b.len(), 64 + 32);
        assert_eq!(b[0], (2 << 6) | (1 << 4) | (1 << 2) | 1);
        assert_eq!(b[1], (1 << 6) | (1 << 2) | 1); // value 33 is code 0 at bits 4-5
        assert_eq!(b[63] & 3, 2);
        assert_eq!(&b[64..68], &0.5f32.to_le_bytes());
        assert!(b[68..].iter().all(|&x| x == 0));
        let r = trits(384, 7);
        assert_eq!(unpack_i2s(&pack_i2s(&r, 0.25), 384), Ok((r, 0.25)));
        let mut bad = pack_i2s(&t, 0.5);
        bad[2] |= 0b11; // value 98 of block 0 (j = 98: byte 2, bits 0-1)
        assert_eq!(unpack_i2s(&bad, 256), Err(98));
    }
}
