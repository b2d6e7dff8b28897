//! Little-endian element decoding of tensor data: every multi-byte value in a bundle is
//! little-endian (spec section 1, "Conventions"). A trailing partial element is ignored; callers
//! have already checked that byte lengths are whole multiples of the element size.

use half::{bf16, f16};

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
        assert_eq!(u16s(&[0x34, 0x12]).collect::<Vec<_>>(), [0x1234]);
        let mut b = (-3i64).to_le_bytes().to_vec();
        b.extend_from_slice(&7i64.to_le_bytes());
        b.push(9);
        assert_eq!(i64s(&b).collect::<Vec<_>>(), [-3, 7]);
    }
}
