//! The ggml tensor types a GGUF file may declare (`enum ggml_type` of `ggml/include/ggml.h`,
//! gguf-py's `GGMLQuantizationType`, and bitnet.cpp's I2_S), the ones this crate reads and
//! writes, and how many bytes a tensor of each takes (spec section 18.6, rule 8.5).

/// Weights per TQ1_0 / TQ2_0 block (ggml's `QK_K`).
pub const TQ_BLOCK: u64 = 256;
/// Weights per I2_S block (bitnet.cpp's `QK_I2_S` on x86): 128 values in 32 bytes.
pub const I2S_BLOCK: u64 = 128;
/// Bytes after an I2_S tensor's codes: its f32 scale and 28 bytes of padding.
pub const I2S_TRAILER: u64 = 32;

/// A tensor type this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// `F32` (0).
    F32,
    /// `F16` (1).
    F16,
    /// `BF16` (30).
    Bf16,
    /// `TQ1_0` (34): blocks of 256 weights of a row in 54 bytes.
    Tq1_0,
    /// `TQ2_0` (35): blocks of 256 weights of a row in 66 bytes.
    Tq2_0,
    /// bitnet.cpp's `I2_S` (36): the whole tensor as 2-bit codes in blocks of 128, then one
    /// f32 scale (and padding to 32 bytes).
    I2S,
}

impl GgmlType {
    /// The type with number `id`, if it is one this crate reads.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            30 => GgmlType::Bf16,
            34 => GgmlType::Tq1_0,
            35 => GgmlType::Tq2_0,
            36 => GgmlType::I2S,
            _ => return None,
        })
    }

    /// The type's number in a tensor info.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Bf16 => 30,
            GgmlType::Tq1_0 => 34,
            GgmlType::Tq2_0 => 35,
            GgmlType::I2S => 36,
        }
    }

    /// The name ggml gives it (`"TQ1_0"`).
    pub fn name(self) -> &'static str {
        type_name(self.id())
    }

    /// Whether its values are trits (the ternary types).
    pub fn is_ternary(self) -> bool {
        matches!(self, GgmlType::Tq1_0 | GgmlType::Tq2_0 | GgmlType::I2S)
    }

    /// The bytes of a tensor of this type with dimensions `ne` (innermost first), or why it
    /// cannot have them (rule 8.5): a ternary tensor is a matrix, TQ rows are whole blocks of
    /// 256, I2_S rows whole blocks of 128. `ne` has been checked (no zero, no overflow).
    pub fn nbytes(self, ne: &[u64]) -> Result<u64, String> {
        let n = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let n = n.ok_or_else(|| "an element count that fits 64 bits".to_string())?;
        let cols = ne.first().copied().unwrap_or(1);
        let matrix = || {
            if ne.len() == 2 {
                Ok(())
            } else {
                Err(format!(
                    "a matrix (2 dimensions) of {} values, found {} dimensions",
                    self.name(),
                    ne.len()
                ))
            }
        };
        let whole = |block: u64| {
            if cols % block == 0 {
                Ok(())
            } else {
                Err(format!(
                    "rows of a multiple of {block} values for {}, found ne[0] = {cols}",
                    self.name()
                ))
            }
        };
        let bytes = |per: u64| {
            n.checked_mul(per)
                .ok_or_else(|| "a byte count that fits 64 bits".to_string())
        };
        Ok(match self {
            GgmlType::F32 => bytes(4)?,
            GgmlType::F16 | GgmlType::Bf16 => bytes(2)?,
            GgmlType::Tq1_0 | GgmlType::Tq2_0 => {
                matrix()?;
                whole(TQ_BLOCK)?;
                let per = if self == GgmlType::Tq1_0 { 54 } else { 66 };
                n / TQ_BLOCK * per
            }
            GgmlType::I2S => {
                matrix()?;
                whole(I2S_BLOCK)?;
                n / 4 + I2S_TRAILER
            }
        })
    }
}

/// The name of ggml type `id` (as `ggml_type_name` and gguf-py spell it), `"I2_S"` for
/// bitnet.cpp's 36, or `"unknown"`.
pub fn type_name(id: u32) -> &'static str {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "I2_S",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    NAMES.get(id as usize).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_follow_the_blocks() {
        for t in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Bf16,
            GgmlType::Tq1_0,
            GgmlType::Tq2_0,
            GgmlType::I2S,
        ] {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(12), None);
        assert_eq!(type_name(12), "Q4_K");
        assert_eq!(type_name(36), "I2_S");
        assert_eq!(type_name(1000), "unknown");
        assert_eq!(GgmlType::Tq1_0.nbytes(&[512, 3]), Ok(6 * 54));
        assert_eq!(GgmlType::Tq2_0.nbytes(&[256, 2]), Ok(2 * 66));
        assert_eq!(GgmlType::I2S.nbytes(&[128, 3]), Ok(96 + 32));
        assert_eq!(GgmlType::F16.nbytes(&[5, 7]), Ok(70));
        assert!(GgmlType::Tq1_0
            .nbytes(&[96, 4])
            .unwrap_err()
            .contains("256"));
        assert!(GgmlType::I2S.nbytes(&[64, 4]).unwrap_err().contains("128"));
        assert!(GgmlType::Tq2_0
            .nbytes(&[256])
            .unwrap_err()
            .contains("matrix"));
        assert!(GgmlType::F32.nbytes(&[u64::MAX, 2]).is_err());
    }
}
