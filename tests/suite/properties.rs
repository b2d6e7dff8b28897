//! Property tests: codec round trips and validation, the quantizer against an independent
//! reference written straight from the spec's formula, exact tie handling at the threshold,
//! and exact dequantization.

use half::f16;
use proptest::prelude::*;
use proptest::sample::Index;
use ternary_bundle::quant::dequantize::dequantize_tensor_f16;
use ternary_bundle::{quantize, Encoding, Granularity, QuantParams};

// ---------------------------------------------------------------------------------------------
// Strategies and helpers
// ---------------------------------------------------------------------------------------------

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Trit5), Just(Encoding::Trit2)]
}

fn trits(len: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(-1i8..=1, len)
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::Tensor),
        Just(Granularity::Channel),
        (1u64..=8).prop_map(Granularity::Group),
        (1u64..=300).prop_map(Granularity::Group),
    ]
}

/// Column counts: the awkward ones named by the spec work plus small random ones.
fn cols() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(4),
        Just(5),
        Just(6),
        Just(241),
        1usize..=20
    ]
}

/// Weights of assorted magnitudes, with exact zeros, kept where every scale fits F16.
fn weight() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -2.0f32..2.0,
        1 => Just(0.0f32),
        1 => -1e-3f32..1e-3,
        1 => -3e3f32..3e3,
    ]
}

fn pack(enc: Encoding, trits: &[i8]) -> Vec<u8> {
    let mut out = vec![0u8; enc.bytes_per_row(trits.len() as u64) as usize];
    enc.pack_row(trits, &mut out).unwrap();
    out
}

fn unpack(enc: Encoding, packed: &[u8], cols: usize) -> Vec<i8> {
    let mut out = vec![0i8; cols];
    enc.unpack_row(packed, &mut out).unwrap();
    out
}

/// The next f32 above a finite, non-negative `x`.
fn next_up(x: f32) -> f32 {
    assert!(x >= 0.0 && x.is_finite());
    f32::from_bits(if x == 0.0 { 1 } else { x.to_bits() + 1 })
}

/// The spec's absmean quantizer, written independently of the crate: for each scale group,
/// step 0: if its values are all -a, +-0 or +a for one a >= eps (at least one non-zero), the
/// scale is a and t = sign(w); otherwise gamma = (f64 sum of |w| in increasing flat index
/// order) / (count as f64), rounded to f32; scale = max(gamma, eps); inv = 1 / scale in f32;
/// x = w * inv in f32; t = +1 if x > thr, -1 if x < -thr, else 0.
///
/// Returns the trits (row-major, `rows * cols`) and the scales in the layout of the spec
/// (`[1]`, `[R]` or `[R, ceil(C / G)]`, row-major).
fn reference(
    w: &[f32],
    rows: usize,
    cols: usize,
    granularity: Granularity,
    eps: f32,
    thr: f32,
) -> (Vec<i8>, Vec<f32>) {
    // The scale index of each element.
    let per_row = match granularity {
        Granularity::Group(g) => cols.div_ceil(g as usize),
        _ => 1,
    };
    let scale_index = |r: usize, c: usize| -> usize {
        match granularity {
            Granularity::Tensor => 0,
            Granularity::Channel => r,
            Granularity::Group(g) => r * per_row + c / g as usize,
        }
    };
    let n_scales = match granularity {
        Granularity::Tensor => 1,
        Granularity::Channel => rows,
        Granularity::Group(_) => rows * per_row,
    };
    let mut sums = vec![0f64; n_scales];
    let mut counts = vec![0u64; n_scales];
    // Step 0: the one non-zero magnitude of each group, or None once two differ.
    let mut magnitude: Vec<Option<Option<f32>>> = vec![Some(None); n_scales];
    for r in 0..rows {
        for c in 0..cols {
            let s = scale_index(r, c);
            let v = w[r * cols + c];
            sums[s] += f64::from(v.abs());
            counts[s] += 1;
            if v != 0.0 {
                magnitude[s] = match magnitude[s] {
                    Some(None) => Some(Some(v.abs())),
                    Some(Some(a)) if a == v.abs() => Some(Some(a)),
                    _ => None,
                };
            }
        }
    }
    let ternary: Vec<Option<f32>> = magnitude
        .iter()
        .map(|m| m.flatten().filter(|&a| a >= eps))
        .collect();
    let scales: Vec<f32> = sums
        .iter()
        .zip(&counts)
        .zip(&ternary)
        .map(|((&sum, &n), &a)| {
            if let Some(a) = a {
                return a;
            }
            let gamma = (sum / n as f64) as f32;
            if gamma >= eps {
                gamma
            } else {
                eps
            }
        })
        .collect();
    let mut trits = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let s = scale_index(r, c);
            let v = w[r * cols + c];
            if ternary[s].is_some() {
                trits.push((v > 0.0) as i8 - (v < 0.0) as i8);
                continue;
            }
            let inv = 1.0f32 / scales[s];
            let x = v * inv;
            trits.push(if x > thr {
                1
            } else if x < -thr {
                -1
            } else {
                0
            });
        }
    }
    (trits, scales)
}

/// The scale of element (r, c) given all scales of a tensor.
fn scale_of(scales: &[f32], granularity: Granularity, r: usize, c: usize, cols: usize) -> f32 {
    match granularity {
        Granularity::Tensor => scales[0],
        Granularity::Channel => scales[r],
        Granularity::Group(g) => scales[r * cols.div_ceil(g as usize) + c / g as usize],
    }
}

/// A quantization problem: shape, weights, settings.
#[derive(Debug, Clone)]
struct Case {
    rows: usize,
    cols: usize,
    shape: Vec<u64>,
    weights: Vec<f32>,
    params: QuantParams,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=4, cols(), any::<bool>())
        .prop_flat_map(|(rows, cols, rank3)| {
            let shape = if rank3 && cols % 2 == 0 {
                vec![rows as u64, 2, cols as u64 / 2]
            } else {
                vec![rows as u64, cols as u64]
            };
            (
                Just((rows, cols, shape)),
                proptest::collection::vec(weight(), rows * cols),
                encoding(),
                granularity(),
                prop_oneof![Just(1e-5f32), 1e-6f32..1e-1],
                prop_oneof![Just(0.5f32), Just(0.0f32), 0.0f32..1.0],
            )
        })
        .prop_map(
            |((rows, cols, shape), weights, encoding, granularity, epsilon, thr)| Case {
                rows,
                cols,
                shape,
                weights,
                params: QuantParams {
                    encoding,
                    granularity,
                    epsilon,
                    sparsity_threshold: thr,
                },
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Codecs
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pack_unpack_round_trips(enc in encoding(), t in trits(0..300)) {
        let packed = pack(enc, &t);
        prop_assert_eq!(packed.len(), t.len().div_ceil(enc.trits_per_byte()));
        prop_assert_eq!(enc.validate_row(&packed, t.len()), Ok(()));
        prop_assert_eq!(enc.first_invalid_byte(&packed), None);
        prop_assert_eq!(unpack(enc, &packed, t.len()), t.clone());
        let mut f = vec![9.0f32; t.len()];
        enc.unpack_row_f32(&packed, &mut f).unwrap();
        prop_assert!(f.iter().zip(&t).all(|(&v, &t)| v == f32::from(t)));
    }

    /// For arbitrary bytes, a row is valid and canonical exactly when packing its decoded
    /// trits gives the same bytes back (the encoding is a bijection onto canonical rows).
    #[test]
    fn validate_row_accepts_exactly_the_canonical_rows(
        enc in encoding(),
        (cols, bytes) in (0usize..40).prop_flat_map(|cols| {
            (Just(cols), proptest::collection::vec(any::<u8>(), cols.div_ceil(4)))
        }),
    ) {
        // cols.div_ceil(4) bytes is enough for either encoding.
        let bytes = &bytes[..enc.bytes_per_row(cols as u64) as usize];
        let ok = enc.validate_row(bytes, cols).is_ok();
        let repacked = pack(enc, &unpack(enc, bytes, cols));
        prop_assert_eq!(ok, repacked == bytes, "bytes {:02x?}, cols {}", bytes, cols);
    }

    /// Mutating one byte of a valid row: validate_row accepts the result exactly when it is
    /// the canonical packing of what it decodes to, and then it decodes to different trits
    /// whenever the byte changed.
    #[test]
    fn single_byte_mutations_are_caught_or_decode_differently(
        enc in encoding(),
        t in trits(1..300),
        at in any::<Index>(),
        new in any::<u8>(),
    ) {
        let mut packed = pack(enc, &t);
        let i = at.index(packed.len());
        let old = packed[i];
        packed[i] = new;
        let ok = enc.validate_row(&packed, t.len()).is_ok();
        let decoded = unpack(enc, &packed, t.len());
        prop_assert_eq!(ok, pack(enc, &decoded) == packed);
        if ok {
            prop_assert_eq!(decoded == t, new == old);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Quantizer and dequantization
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn quantize_matches_the_independent_reference(c in case()) {
        let q = quantize(&c.weights, &c.shape, &c.params).unwrap();
        let p = &c.params;
        let (want_trits, want_scales) =
            reference(&c.weights, c.rows, c.cols, p.granularity, p.epsilon, p.sparsity_threshold);
        prop_assert_eq!((q.rows, q.cols), (c.rows, c.cols));
        let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&q.scales), bits(&want_scales));
        let bpr = p.encoding.bytes_per_row(c.cols as u64) as usize;
        prop_assert_eq!(q.packed.len(), c.rows * bpr);
        let mut got = Vec::with_capacity(c.rows * c.cols);
        for r in 0..c.rows {
            let row = &q.packed[r * bpr..(r + 1) * bpr];
            prop_assert_eq!(p.encoding.validate_row(row, c.cols), Ok(()));
            got.extend(unpack(p.encoding, row, c.cols));
        }
        prop_assert_eq!(&got, &want_trits);
        let zeros = want_trits.iter().filter(|&&t| t == 0).count() as u64;
        prop_assert_eq!(q.stats.zeros, zeros);
        prop_assert_eq!(q.stats.elements, (c.rows * c.cols) as u64);
        let lo = want_scales.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = want_scales.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        prop_assert_eq!(q.stats.scale_min.to_bits(), lo.to_bits());
        prop_assert_eq!(q.stats.scale_max.to_bits(), hi.to_bits());
    }

    /// For every quantized tensor, the F16 dequantization is f16_rne(f32(t) * scale).
    #[test]
    fn dequantization_of_quantized_tensors_is_exact(c in case()) {
        let q = quantize(&c.weights, &c.shape, &c.params).unwrap();
        let p = &c.params;
        let h = dequantize_tensor_f16(p.encoding, p.granularity, &q.packed, &q.scales, q.rows, q.cols)
            .unwrap();
        let (trits, _) =
            reference(&c.weights, c.rows, c.cols, p.granularity, p.epsilon, p.sparsity_threshold);
        prop_assert_eq!(h.len(), c.rows * c.cols);
        for r in 0..c.rows {
            for col in 0..c.cols {
                let i = r * c.cols + col;
                let s = scale_of(&q.scales, p.granularity, r, col, c.cols);
                let want = f16::from_f32(f32::from(trits[i]) * s);
                prop_assert_eq!(h[i].to_bits(), want.to_bits(), "element ({}, {})", r, col);
            }
        }
    }

    /// Dequantization of arbitrary packed trits and scales (including scales whose F16 is
    /// zero, subnormal or infinite) is f16_rne(f32(t) * scale) bit for bit.
    #[test]
    fn dequantization_of_arbitrary_trits_is_exact(
        (enc, granularity, rows, cols, t, scales) in (encoding(), granularity(), 1usize..=4, cols())
            .prop_flat_map(|(enc, granularity, rows, cols)| {
                let n_scales = match granularity {
                    Granularity::Tensor => 1,
                    Granularity::Channel => rows,
                    Granularity::Group(g) => rows * cols.div_ceil(g as usize),
                };
                (
                    Just(enc),
                    Just(granularity),
                    Just(rows),
                    Just(cols),
                    trits(rows * cols),
                    proptest::collection::vec(
                        prop_oneof![1e-9f32..1e-4, 1e-4f32..10.0, 6e4f32..7e4],
                        n_scales,
                    ),
                )
            }),
    ) {
        let packed: Vec<u8> = t.chunks(cols).flat_map(|row| pack(enc, row)).collect();
        let h = dequantize_tensor_f16(enc, granularity, &packed, &scales, rows, cols).unwrap();
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                let s = scale_of(&scales, granularity, r, c, cols);
                let want = f16::from_f32(f32::from(t[i]) * s);
                prop_assert_eq!(h[i].to_bits(), want.to_bits(), "element ({}, {})", r, c);
                if t[i] == 0 {
                    prop_assert_eq!(h[i].to_bits(), 0x0000, "t = 0 must give +0.0");
                }
                if t[i] == -1 {
                    prop_assert_eq!(h[i].to_bits(), f16::from_f32(s).to_bits() ^ 0x8000);
                }
            }
        }
    }

    /// Ties: with a power-of-two scale (here eps, above every gamma) x = w * (1 / scale) is
    /// exact, so |x| == thr exactly is reachable: it gives 0, and the next f32 above gives +-1.
    #[test]
    fn threshold_ties_give_zero_and_just_above_gives_sign(
        thr in prop_oneof![Just(0.5f32), Just(0.0f32), 0.0f32..1.0],
        k in -8i32..=3,
        enc in encoding(),
    ) {
        // next_up(0) is the smallest subnormal: keep eps >= 1 so that it times eps is exact.
        let k = if thr == 0.0 { k.rem_euclid(4) } else { k };
        let eps = 2f32.powi(k);
        let up = next_up(thr);
        let (a, b) = (thr * eps, up * eps);
        // Multiplying by a power of two is exact unless it underflows.
        prop_assume!(a / eps == thr && b / eps == up && up < 1.0);
        let w = [a, -a, b, -b, 0.0];
        let p = QuantParams {
            encoding: enc,
            granularity: Granularity::Channel,
            epsilon: eps,
            sparsity_threshold: thr,
        };
        let q = quantize(&w, &[1, 5], &p).unwrap();
        prop_assert_eq!(q.scales[0], eps, "gamma < eps, so the scale is eps");
        prop_assert_eq!(unpack(enc, &q.packed, 5), vec![0, 0, 1, -1, 0]);
        let (reference_trits, _) = reference(&w, 1, 5, Granularity::Channel, eps, thr);
        prop_assert_eq!(reference_trits, vec![0, 0, 1, -1, 0]);
    }
}

/// The RoundClip case: a row whose mean |w| is exactly 1.0, so x = w and 0.5 is a tie.
#[test]
fn threshold_half_is_round_half_to_zero_for_ternary() {
    let p = QuantParams::default(); // threshold 0.5, eps 1e-5, channel
    let q = quantize(&[1.0, 1.0, 0.5, -0.5, 2.0], &[1, 5], &p).unwrap();
    assert_eq!(q.scales, vec![1.0]);
    assert_eq!(unpack(p.encoding, &q.packed, 5), vec![1, 1, 0, 0, 1]);
    // Just above the tie: gamma still rounds to 1.0 in f32, x = w, and |x| > 0.5.
    let above = next_up(0.5);
    let q = quantize(&[1.0, 1.0, above, -above, 2.0], &[1, 5], &p).unwrap();
    assert_eq!(q.scales, vec![1.0]);
    assert_eq!(unpack(p.encoding, &q.packed, 5), vec![1, 1, 1, -1, 1]);
}

/// Group sizes that do not divide C: the last group is short and has its own mean.
#[test]
fn short_last_group_has_its_own_mean() {
    let p = QuantParams {
        granularity: Granularity::Group(4),
        ..QuantParams::default()
    };
    let w = [1.0, -1.0, 1.0, -1.0, 0.25, -0.75];
    let q = quantize(&w, &[1, 6], &p).unwrap();
    assert_eq!(q.scales, vec![1.0, 0.5]);
    assert_eq!(unpack(p.encoding, &q.packed, 6), vec![1, -1, 1, -1, 0, -1]);
    let (t, s) = reference(&w, 1, 6, p.granularity, p.epsilon, p.sparsity_threshold);
    assert_eq!((t, s), (vec![1, -1, 1, -1, 0, -1], vec![1.0, 0.5]));
}
