//! The worked examples of the spec (section "Encodings" and the small tensor example), as
//! tests: if the code and the spec's numbers ever disagree, one of them is wrong.

use half::f16;
use ternary_bundle::format::encoding::RowError;
use ternary_bundle::format::quantization::rows_cols;
use ternary_bundle::quant::dequantize::{dequantize_f16, dequantize_tensor_f16};
use ternary_bundle::quant::quantize::{absmean_scale, already_ternary};
use ternary_bundle::{quantize, Encoding, Granularity, QuantParams};

fn pack(enc: Encoding, trits: &[i8]) -> Vec<u8> {
    let mut out = vec![0u8; enc.bytes_per_row(trits.len() as u64) as usize];
    enc.pack_row(trits, &mut out).unwrap();
    enc.validate_row(&out, trits.len()).unwrap();
    let mut back = vec![9i8; trits.len()];
    enc.unpack_row(&out, &mut back).unwrap();
    assert_eq!(back, trits, "{enc} round trip of {trits:?}");
    out
}

// ---- trit5 ----

#[test]
fn trit5_mixed_byte_is_0xa7() {
    // digits [2, 1, 0, 0, 2] -> 2 + 1*3 + 0*9 + 0*27 + 2*81 = 167
    assert_eq!(pack(Encoding::Trit5, &[1, 0, -1, -1, 1]), [0xA7]);
}

#[test]
fn trit5_all_minus_one_is_0x00() {
    assert_eq!(pack(Encoding::Trit5, &[-1; 5]), [0x00]);
}

#[test]
fn trit5_all_zero_is_0x79() {
    // 1 + 3 + 9 + 27 + 81 = 121
    assert_eq!(pack(Encoding::Trit5, &[0; 5]), [0x79]);
}

#[test]
fn trit5_all_plus_one_is_0xf2() {
    assert_eq!(pack(Encoding::Trit5, &[1; 5]), [0xF2]);
    assert_eq!(0xF2, 242);
}

#[test]
fn trit5_row_of_seven() {
    // The second byte holds columns 5 and 6: digits [0, 2] -> 0 + 2*3 = 6.
    assert_eq!(pack(Encoding::Trit5, &[1, 1, 1, 1, 1, -1, 1]), [0xF2, 0x06]);
}

#[test]
fn trit5_row_of_one() {
    assert_eq!(pack(Encoding::Trit5, &[0]), [0x01]);
    assert_eq!(pack(Encoding::Trit5, &[1]), [0x02]);
    assert_eq!(pack(Encoding::Trit5, &[-1]), [0x00]);
}

#[test]
fn trit5_byte_0x03_for_one_column_is_non_canonical() {
    // 0x03 = digit 0 at position 0 and digit 1 at the unused position 1.
    assert_eq!(
        Encoding::Trit5.validate_row(&[0x03], 1),
        Err(RowError::NonCanonicalPadding {
            index: 0,
            byte: 0x03,
            max: 0x02
        })
    );
    assert_eq!(Encoding::Trit5.max_last_byte(1), 0x02);
}

#[test]
fn trit5_byte_0xf3_is_invalid() {
    assert_eq!(
        Encoding::Trit5.validate_row(&[0xF3], 5),
        Err(RowError::InvalidByte {
            index: 0,
            byte: 0xF3
        })
    );
    assert_eq!(Encoding::Trit5.first_invalid_byte(&[0xF2, 0xF3]), Some(1));
    assert_eq!(Encoding::Trit5.validate_row(&[0xF2], 5), Ok(()));
}

// ---- trit2 ----

#[test]
fn trit2_mixed_byte_is_0x06() {
    // codes [2, 1, 0, 0] -> 2 | 1 << 2 = 6
    assert_eq!(pack(Encoding::Trit2, &[1, 0, -1, -1]), [0x06]);
}

#[test]
fn trit2_all_zero_is_0x55_and_all_plus_one_is_0xaa() {
    assert_eq!(pack(Encoding::Trit2, &[0; 4]), [0x55]);
    assert_eq!(pack(Encoding::Trit2, &[1; 4]), [0xAA]);
    assert_eq!(pack(Encoding::Trit2, &[-1; 4]), [0x00]);
}

#[test]
fn trit2_row_of_six() {
    // The second byte holds columns 4 and 5: codes [2, 0] -> 2 | 0 << 2 = 2.
    assert_eq!(pack(Encoding::Trit2, &[0, 0, 0, 0, 1, -1]), [0x55, 0x02]);
}

#[test]
fn trit2_byte_0x03_is_invalid() {
    // Code 3 in field 0.
    assert_eq!(
        Encoding::Trit2.validate_row(&[0x03], 4),
        Err(RowError::InvalidByte {
            index: 0,
            byte: 0x03
        })
    );
    assert_eq!(
        Encoding::Trit2.validate_row(&[0x55, 0x03], 6),
        Err(RowError::InvalidByte {
            index: 1,
            byte: 0x03
        })
    );
}

#[test]
fn trit2_unused_field_must_be_zero() {
    // C = 6: the last byte uses two fields, canonical max 0x0f.
    assert_eq!(Encoding::Trit2.max_last_byte(2), 0x0F);
    assert_eq!(
        Encoding::Trit2.validate_row(&[0x55, 0x12], 6),
        Err(RowError::NonCanonicalPadding {
            index: 1,
            byte: 0x12,
            max: 0x0F
        })
    );
}

#[test]
fn trit2_byte_0x14_for_two_columns_is_non_canonical() {
    // 0x14 = 0b00010100: code 1 in the unused field 2 (0x14 >= 4^2).
    assert_eq!(
        Encoding::Trit2.validate_row(&[0x14], 2),
        Err(RowError::NonCanonicalPadding {
            index: 0,
            byte: 0x14,
            max: 0x0F
        })
    );
}

#[test]
fn canonical_padding_bounds_table() {
    // The last byte of a row with k used positions is < 3^k (trit5) or < 4^k (trit2).
    for (k, bound) in [(1, 3u16), (2, 9), (3, 27), (4, 81)] {
        assert_eq!(
            u16::from(Encoding::Trit5.max_last_byte(k)) + 1,
            bound,
            "trit5 k={k}"
        );
    }
    for (k, bound) in [(1, 4u16), (2, 16), (3, 64)] {
        assert_eq!(
            u16::from(Encoding::Trit2.max_last_byte(k)) + 1,
            bound,
            "trit2 k={k}"
        );
    }
}

#[test]
fn ternary_shape_examples_table() {
    // (W shape, encoding, granularity, packed shape, scale shape)
    type Row<'a> = (&'a [u64], Encoding, Granularity, [u64; 2], &'a [u64]);
    let cases: [Row; 4] = [
        (
            &[16, 8],
            Encoding::Trit5,
            Granularity::Channel,
            [16, 2],
            &[16],
        ),
        (
            &[4, 3, 7],
            Encoding::Trit5,
            Granularity::Group(8),
            [4, 5],
            &[4, 3],
        ),
        (&[10], Encoding::Trit2, Granularity::Tensor, [10, 1], &[1]),
        (&[3, 6], Encoding::Trit2, Granularity::Channel, [3, 2], &[3]),
    ];
    for (shape, enc, gran, packed, scale) in cases {
        let (r, c) = rows_cols(shape).unwrap();
        assert_eq!([r, enc.bytes_per_row(c)], packed, "{shape:?}");
        assert_eq!(gran.scale_shape(r, c), scale, "{shape:?}");
    }
}

// ---- the small tensor example ----

const W: [f32; 6] = [0.9, -0.05, -0.4, 2.0, 0.0, -2.0];

fn example_params(encoding: Encoding) -> QuantParams {
    QuantParams {
        encoding,
        granularity: Granularity::Channel,
        epsilon: 1e-5,
        sparsity_threshold: 0.5,
    }
}

#[test]
fn tensor_example_scales_and_trits() {
    let q = quantize(&W, &[2, 3], &example_params(Encoding::Trit5)).unwrap();
    // row 0: gamma = (0.9 + 0.05 + 0.4) / 3 = 0.45; row 1 is already ternary (only -2, 0, +2):
    // step 0 keeps its scale 2.0 (absmean would give 4 / 3 and the same trits).
    assert_eq!(q.scales.len(), 2);
    assert_eq!(q.scales[0].to_bits(), 0.45f32.to_bits());
    assert_eq!(q.scales[1].to_bits(), 0x40000000);
    assert_eq!(already_ternary(&W[3..], 1e-5), Some(2.0));
    assert_eq!(already_ternary(&W[..3], 1e-5), None);
    assert_eq!(absmean_scale(&W[3..], 1e-5).to_bits(), 0x3FAAAAAB);
    // The spec's table, bit for bit.
    let w_bits: Vec<u32> = W.iter().map(|w| w.to_bits()).collect();
    assert_eq!(
        w_bits,
        [0x3F666666, 0xBD4CCCCD, 0xBECCCCCD, 0x40000000, 0x00000000, 0xC0000000]
    );
    let sum0: f64 = W[..3].iter().map(|w| f64::from(w.abs())).sum();
    assert!((sum0 - 1.349_999_982_863_664_6).abs() < 1e-15, "{sum0}");
    assert_eq!(q.scales[0].to_bits(), 0x3EE66666);
    // inv = 1 / scale (f32): 2.2222223; x = w * inv (f32): [2.0, -0.11111112, -0.88888896].
    let inv0 = 1.0f32 / q.scales[0];
    assert_eq!(inv0.to_bits(), 0x400E38E4);
    let x: Vec<f32> = W[..3].iter().map(|w| w * inv0).collect();
    assert_eq!(x, [2.0, -0.111_111_12, -0.888_888_96]);
    // Both rows are [+1, 0, -1] -> trit5 byte 2 + 1*3 + 0*9 = 5.
    assert_eq!(q.packed, vec![0x05, 0x05]);
    assert_eq!(q.stats.zeros, 2);
    for r in 0..2 {
        let mut trits = [9i8; 3];
        Encoding::Trit5
            .unpack_row(&q.packed[r..r + 1], &mut trits)
            .unwrap();
        assert_eq!(trits, [1, 0, -1]);
    }
}

#[test]
fn tensor_example_in_trit2() {
    // Same trits in trit2: codes [2, 1, 0] -> 2 | 1 << 2 = 0x06 per row.
    let q = quantize(&W, &[2, 3], &example_params(Encoding::Trit2)).unwrap();
    assert_eq!(q.packed, vec![0x06, 0x06]);
}

#[test]
fn tensor_example_fp16_bits() {
    // Checked with numpy: np.float32(0.45).astype(np.float16).view(np.uint16) == 0x3733 and
    // np.float32(2).astype(np.float16).view(np.uint16) == 0x4000.
    let q = quantize(&W, &[2, 3], &example_params(Encoding::Trit5)).unwrap();
    let h = dequantize_tensor_f16(
        Encoding::Trit5,
        Granularity::Channel,
        &q.packed,
        &q.scales,
        2,
        3,
    )
    .unwrap();
    let bits: Vec<u16> = h.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, [0x3733, 0x0000, 0xB733, 0x4000, 0x0000, 0xC000]);
    let values: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    assert_eq!(values, [0.449_951_17, 0.0, -0.449_951_17, 2.0, 0.0, -2.0]);
    assert_eq!(f16::from_f32(0.45).to_bits(), 0x3733);
    assert_eq!(f16::from_f32(1.333_333_4).to_bits(), 0x3D55);
    // t = 0 dequantizes to +0.0 and t = -1 to the negated F16 of the scale.
    assert_eq!(dequantize_f16(0, 0.45, 0).to_bits(), 0x0000);
    assert_eq!(dequantize_f16(-1, 1.333_333_4, 0).to_bits(), 0xBD55);
}
