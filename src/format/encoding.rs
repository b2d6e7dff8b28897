//! Trit codecs: `trit5` (five trits per byte, base 3) and `trit2` (four 2-bit codes per byte).
//!
//! Owns the byte-level packing of one row of trits (spec section "Encodings", rules 4.3 and
//! 4.4). It knows nothing about scales or files: [`crate::quant::dequantize`] applies scales and
//! [`crate::read`] finds the rows. Decoding is table-driven: one 256-entry table per encoding
//! maps a byte straight to its trits, so the inner loop is a copy the compiler vectorizes.

use std::fmt;

use crate::format::rules::Rule;

/// How trits are packed into bytes (the manifest's `quantization.encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Five trits per byte: `byte = sum (t_i + 1) * 3^i`, 1.6 bits per weight (the default).
    #[default]
    Trit5,
    /// Four trits per byte: code `t_i + 1` in bits `2i..2i+1`, 2 bits per weight.
    Trit2,
}

/// Why a packed row is not a valid canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowError {
    /// Rule 4.3: the byte at this index of the row is not a valid code.
    InvalidByte {
        /// Byte index within the row.
        index: usize,
        /// The byte found.
        byte: u8,
    },
    /// Rule 4.4: the last byte of the row has non-zero unused positions.
    NonCanonicalPadding {
        /// Byte index within the row (always the last byte).
        index: usize,
        /// The byte found.
        byte: u8,
        /// The largest canonical value for that byte.
        max: u8,
    },
    /// The row buffer does not have [`Encoding::bytes_per_row`] bytes.
    Length {
        /// Bytes expected for the row's column count.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// Dequantization was given fewer scales than the granularity needs (rule 4.2).
    ScaleCount {
        /// Scales the tensor's shape and granularity need.
        expected: usize,
        /// Scales given.
        found: usize,
    },
    /// A value to pack is not -1, 0 or +1.
    InvalidTrit {
        /// Column index of the value.
        index: usize,
        /// The value found.
        value: i8,
    },
}

impl RowError {
    /// The spec rule a bundle breaks when one of its rows fails this way.
    pub fn rule(&self) -> Rule {
        match self {
            RowError::InvalidByte { .. } | RowError::InvalidTrit { .. } => Rule::PackedByteValid,
            RowError::NonCanonicalPadding { .. } => Rule::CanonicalPadding,
            RowError::Length { .. } | RowError::ScaleCount { .. } => Rule::TernaryShapes,
        }
    }

    /// What the rule requires and what row `row` of an `encoding` tensor holds instead, for a
    /// violation message.
    pub fn expected_found(&self, encoding: Encoding, row: usize) -> (String, String) {
        match *self {
            RowError::InvalidByte { index, byte } => (
                match encoding {
                    Encoding::Trit5 => "bytes 0..=242 (trit5)".into(),
                    Encoding::Trit2 => "no 2-bit code 3 (trit2)".into(),
                },
                format!("byte 0x{byte:02x} at row {row}, byte {index}"),
            ),
            RowError::NonCanonicalPadding { index, byte, max } => (
                format!(
                    "a last byte <= 0x{max:02x} ({} used positions, unused ones zero)",
                    (1..encoding.trits_per_byte())
                        .find(|&k| encoding.max_last_byte(k) == max)
                        .unwrap_or(0)
                ),
                format!("byte 0x{byte:02x} at row {row}, byte {index}"),
            ),
            _ => (
                "a row of the tensor's shape".into(),
                format!("row {row}: {self}"),
            ),
        }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RowError::InvalidByte { index, byte } => {
                write!(f, "invalid byte 0x{byte:02x} at row byte {index}")
            }
            RowError::NonCanonicalPadding { index, byte, max } => write!(
                f,
                "last byte 0x{byte:02x} at row byte {index} sets unused positions (canonical maximum 0x{max:02x})"
            ),
            RowError::Length { expected, found } => {
                write!(f, "row of {found} bytes where {expected} are needed")
            }
            RowError::ScaleCount { expected, found } => {
                write!(f, "{found} scales where {expected} are needed")
            }
            RowError::InvalidTrit { index, value } => {
                write!(f, "value {value} at column {index} is not a trit (-1, 0, +1)")
            }
        }
    }
}

impl std::error::Error for RowError {}

/// Powers of three used by `trit5`.
const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Largest valid `trit5` byte (all five trits +1).
pub const TRIT5_MAX_BYTE: u8 = 242;

/// `TRIT5_TRITS[b]` = the five trits of byte `b` (zeros for the invalid bytes 243..=255).
static TRIT5_TRITS: [[i8; 5]; 256] = {
    let mut table = [[0i8; 5]; 256];
    let mut b = 0;
    while b <= TRIT5_MAX_BYTE as usize {
        let mut v = b;
        let mut i = 0;
        while i < 5 {
            table[b][i] = (v % 3) as i8 - 1;
            v /= 3;
            i += 1;
        }
        b += 1;
    }
    table
};

/// `TRIT2_TRITS[b]` = the four trits of byte `b` (code 3 maps to 0; validate first).
static TRIT2_TRITS: [[i8; 4]; 256] = {
    let mut table = [[0i8; 4]; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 4 {
            let code = (b >> (2 * i)) & 3;
            table[b][i] = if code == 3 { 0 } else { code as i8 - 1 };
            i += 1;
        }
        b += 1;
    }
    table
};

/// Same tables as f32, so decoding to floats is a copy and a multiply.
static TRIT5_F32: [[f32; 5]; 256] = {
    let mut table = [[0f32; 5]; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 5 {
            table[b][i] = TRIT5_TRITS[b][i] as f32;
            i += 1;
        }
        b += 1;
    }
    table
};

static TRIT2_F32: [[f32; 4]; 256] = {
    let mut table = [[0f32; 4]; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 4 {
            table[b][i] = TRIT2_TRITS[b][i] as f32;
            i += 1;
        }
        b += 1;
    }
    table
};

impl Encoding {
    /// Every encoding, default first.
    pub const ALL: [Encoding; 2] = [Encoding::Trit5, Encoding::Trit2];

    /// The manifest name: `"trit5"` or `"trit2"`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Trit5 => "trit5",
            Encoding::Trit2 => "trit2",
        }
    }

    /// Parses a manifest name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "trit5" => Some(Encoding::Trit5),
            "trit2" => Some(Encoding::Trit2),
            _ => None,
        }
    }

    /// Trits stored in one byte (5 or 4).
    pub fn trits_per_byte(self) -> usize {
        match self {
            Encoding::Trit5 => 5,
            Encoding::Trit2 => 4,
        }
    }

    /// Storage cost of one trit in a long row (1.6 or 2.0 bits).
    pub fn bits_per_weight(self) -> f64 {
        8.0 / self.trits_per_byte() as f64
    }

    /// Bytes that hold a row of `cols` trits: `ceil(cols / trits_per_byte)` (rule 4.2).
    pub fn bytes_per_row(self, cols: u64) -> u64 {
        cols.div_ceil(self.trits_per_byte() as u64)
    }

    /// The largest canonical value of a row's last byte when it holds `used` trits (1..=n),
    /// rule 4.4: unused positions hold digit 0 (trit5) or bits 00 (trit2).
    pub fn max_last_byte(self, used: usize) -> u8 {
        match self {
            Encoding::Trit5 if used >= 5 => TRIT5_MAX_BYTE,
            Encoding::Trit5 => POW3[used] - 1,
            Encoding::Trit2 if used >= 4 => 0xFF,
            Encoding::Trit2 => ((1u16 << (2 * used)) - 1) as u8,
        }
    }

    /// Packs one row of trits (each -1, 0 or +1) into `out`, which must hold exactly
    /// [`bytes_per_row`](Self::bytes_per_row)`(trits.len())` bytes.
    ///
    /// ```
    /// use ternary_bundle::Encoding;
    /// let mut out = [0u8; 1];
    /// Encoding::Trit5.pack_row(&[1, 0, -1, -1, 1], &mut out).unwrap();
    /// assert_eq!(out, [0xA7]); // 2 + 1*3 + 0*9 + 0*27 + 2*81 = 167
    /// ```
    pub fn pack_row(self, trits: &[i8], out: &mut [u8]) -> Result<(), RowError> {
        let expected = self.bytes_per_row(trits.len() as u64) as usize;
        if out.len() != expected {
            return Err(RowError::Length {
                expected,
                found: out.len(),
            });
        }
        if let Some(index) = trits.iter().position(|&t| !(-1..=1).contains(&t)) {
            return Err(RowError::InvalidTrit {
                index,
                value: trits[index],
            });
        }
        let n = self.trits_per_byte();
        let full = trits.len() / n;
        let (body, tail) = trits.split_at(full * n);
        match self {
            Encoding::Trit5 => {
                for (o, c) in out.iter_mut().zip(body.chunks_exact(5)) {
                    *o = pack5(c);
                }
            }
            Encoding::Trit2 => {
                for (o, c) in out.iter_mut().zip(body.chunks_exact(4)) {
                    *o = pack4(c);
                }
            }
        }
        if !tail.is_empty() {
            // Unused positions are the digit 0 / bits 00: they add nothing (rule 4.4).
            out[full] = tail
                .iter()
                .enumerate()
                .map(|(i, &t)| match self {
                    Encoding::Trit5 => (t + 1) as u8 * POW3[i],
                    Encoding::Trit2 => ((t + 1) as u8) << (2 * i),
                })
                .sum();
        }
        Ok(())
    }

    /// Checks that a packed row of `cols` trits is valid (rule 4.3) and canonical (rule 4.4).
    pub fn validate_row(self, packed: &[u8], cols: usize) -> Result<(), RowError> {
        let expected = self.bytes_per_row(cols as u64) as usize;
        if packed.len() != expected {
            return Err(RowError::Length {
                expected,
                found: packed.len(),
            });
        }
        if let Some(index) = self.first_invalid_byte(packed) {
            return Err(RowError::InvalidByte {
                index,
                byte: packed[index],
            });
        }
        let used = cols % self.trits_per_byte();
        if used != 0 {
            let index = packed.len() - 1;
            let max = self.max_last_byte(used);
            if packed[index] > max {
                return Err(RowError::NonCanonicalPadding {
                    index,
                    byte: packed[index],
                    max,
                });
            }
        }
        Ok(())
    }

    /// Index of the first byte that is not a valid code anywhere in a row (rule 4.3), or `None`.
    /// Branch-free over the whole slice in the common case that all bytes are valid.
    pub fn first_invalid_byte(self, bytes: &[u8]) -> Option<usize> {
        let is_bad = |b: u8| match self {
            Encoding::Trit5 => b > TRIT5_MAX_BYTE,
            // A field holds code 3 when both of its bits are set.
            Encoding::Trit2 => (b & (b >> 1) & 0x55) != 0,
        };
        let any_bad = bytes.iter().fold(false, |acc, &b| acc | is_bad(b));
        if any_bad {
            bytes.iter().position(|&b| is_bad(b))
        } else {
            None
        }
    }

    /// Unpacks a row of `out.len()` trits. The row must be valid (see
    /// [`validate_row`](Self::validate_row)); invalid codes decode as 0.
    pub fn unpack_row(self, packed: &[u8], out: &mut [i8]) -> Result<(), RowError> {
        self.check_len(packed, out.len())?;
        match self {
            Encoding::Trit5 => decode_table(packed, out, &TRIT5_TRITS),
            Encoding::Trit2 => decode_table(packed, out, &TRIT2_TRITS),
        }
        Ok(())
    }

    /// Unpacks a row of `out.len()` trits as floats -1.0, 0.0, +1.0 (the row must be valid).
    pub fn unpack_row_f32(self, packed: &[u8], out: &mut [f32]) -> Result<(), RowError> {
        self.check_len(packed, out.len())?;
        match self {
            Encoding::Trit5 => decode_table(packed, out, &TRIT5_F32),
            Encoding::Trit2 => decode_table(packed, out, &TRIT2_F32),
        }
        Ok(())
    }

    fn check_len(self, packed: &[u8], cols: usize) -> Result<(), RowError> {
        let expected = self.bytes_per_row(cols as u64) as usize;
        if packed.len() != expected {
            return Err(RowError::Length {
                expected,
                found: packed.len(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[inline(always)]
fn pack5(c: &[i8]) -> u8 {
    let d = |i: usize| (c[i] + 1) as u8;
    d(0) + 3 * d(1) + 9 * d(2) + 27 * d(3) + 81 * d(4)
}

#[inline(always)]
fn pack4(c: &[i8]) -> u8 {
    let d = |i: usize| (c[i] + 1) as u8;
    d(0) | (d(1) << 2) | (d(2) << 4) | (d(3) << 6)
}

/// Table decode: full bytes are a fixed-size copy each; the last partial byte copies a prefix.
#[inline(always)]
fn decode_table<T: Copy, const N: usize>(packed: &[u8], out: &mut [T], table: &[[T; N]; 256]) {
    let full = out.len() / N;
    let (body, tail) = out.split_at_mut(full * N);
    for (o, &b) in body.chunks_exact_mut(N).zip(packed) {
        o.copy_from_slice(&table[b as usize]);
    }
    if !tail.is_empty() {
        let entry = &table[packed[full] as usize];
        tail.copy_from_slice(&entry[..tail.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(enc: Encoding, trits: &[i8]) {
        let mut packed = vec![0u8; enc.bytes_per_row(trits.len() as u64) as usize];
        enc.pack_row(trits, &mut packed).unwrap();
        enc.validate_row(&packed, trits.len()).unwrap();
        let mut back = vec![0i8; trits.len()];
        enc.unpack_row(&packed, &mut back).unwrap();
        assert_eq!(back, trits);
        let mut f = vec![9f32; trits.len()];
        enc.unpack_row_f32(&packed, &mut f).unwrap();
        assert!(f.iter().zip(trits).all(|(&a, &t)| a == t as f32));
    }

    #[test]
    fn tables_invert_packing_for_every_valid_byte() {
        for b in 0..=TRIT5_MAX_BYTE {
            assert_eq!(pack5(&TRIT5_TRITS[b as usize]), b);
        }
        for b in 0..=255u8 {
            if Encoding::Trit2.first_invalid_byte(&[b]).is_none() {
                assert_eq!(pack4(&TRIT2_TRITS[b as usize]), b);
            }
        }
    }

    #[test]
    fn trit2_invalid_detection_matches_definition() {
        for b in 0..=255u8 {
            let has_code3 = (0..4).any(|i| (b >> (2 * i)) & 3 == 3);
            assert_eq!(
                Encoding::Trit2.first_invalid_byte(&[b]).is_some(),
                has_code3,
                "{b:#x}"
            );
        }
    }

    #[test]
    fn awkward_row_lengths_roundtrip() {
        for enc in Encoding::ALL {
            for cols in [0usize, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 241, 256, 1000] {
                let trits: Vec<i8> = (0..cols).map(|i| ((i * 7 + cols) % 3) as i8 - 1).collect();
                roundtrip(enc, &trits);
            }
        }
    }

    #[test]
    fn pack_rejects_non_trits_and_wrong_lengths() {
        let mut out = [0u8; 1];
        assert_eq!(
            Encoding::Trit5.pack_row(&[0, 2], &mut out),
            Err(RowError::InvalidTrit { index: 1, value: 2 })
        );
        let mut out = [0u8; 2];
        assert!(matches!(
            Encoding::Trit2.pack_row(&[0; 4], &mut out),
            Err(RowError::Length {
                expected: 1,
                found: 2
            })
        ));
    }
}
