//! The ternary block types of ggml (`ggml/src/ggml-quants.c`, gguf-py `quants.py`): TQ1_0 and
//! TQ2_0, blocks of 256 consecutive weights of a row with one f16 scale `d`, each weight stored
//! as the code `t + 1` of its trit `t` in {-1, 0, +1}; ggml dequantizes `d × t`.
//!
//! This module packs trits that are already known (never re-quantizes values): a block's `d` is
//! given by the caller. It does no I/O.

use half::f16;

/// Weights per block (ggml's `QK_K`).
pub const BLOCK: usize = 256;

/// The two ternary block types of ggml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TernaryType {
    /// `GGML_TYPE_TQ1_0` (34): five trits per byte in base 3, 54 bytes per block (1.6875 bits
    /// per weight).
    Tq1_0,
    /// `GGML_TYPE_TQ2_0` (35): four 2-bit codes per byte, 66 bytes per block (2.0625 bits per
    /// weight).
    Tq2_0,
}

impl TernaryType {
    /// The `--type` name: `"tq1_0"` or `"tq2_0"`.
    pub fn name(self) -> &'static str {
        match self {
            TernaryType::Tq1_0 => "tq1_0",
            TernaryType::Tq2_0 => "tq2_0",
        }
    }

    /// `GGMLQuantizationType` of a tensor.
    pub fn ggml_type(self) -> u32 {
        match self {
            TernaryType::Tq1_0 => 34,
            TernaryType::Tq2_0 => 35,
        }
    }

    /// `LlamaFileType` (`general.file_type`): `MOSTLY_TQ1_0` 36, `MOSTLY_TQ2_0` 37.
    pub fn file_type(self) -> u32 {
        match self {
            TernaryType::Tq1_0 => 36,
            TernaryType::Tq2_0 => 37,
        }
    }

    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            TernaryType::Tq1_0 => 54,
            TernaryType::Tq2_0 => 66,
        }
    }

    /// Appends one block: `trits` (exactly [`BLOCK`] values in {-1, 0, 1}) and scale `d`.
    pub fn pack_block(self, trits: &[i8], d: f16, out: &mut Vec<u8>) {
        debug_assert_eq!(trits.len(), BLOCK);
        match self {
            TernaryType::Tq1_0 => out.extend_from_slice(&pack_tq1_0(trits, d)),
            TernaryType::Tq2_0 => out.extend_from_slice(&pack_tq2_0(trits, d)),
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
