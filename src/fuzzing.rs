//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`), shared with the corpus replay test
//! (`tests/fuzz_replay.rs`) so that every input found by the fuzzer is replayed on stable Rust.
//!
//! Each takes arbitrary bytes and must return normally: a typed error is fine, a panic, an
//! out-of-bounds read or an over-allocation is a bug.

use std::path::Path;

use crate::checks;
use crate::encoding::Encoding;
use crate::manifest::Manifest;
use crate::reader::Bundle;

/// The manifest parser on arbitrary bytes.
pub fn manifest(data: &[u8]) {
    let _ = Manifest::parse(Path::new("fuzz/manifest.json"), data);
}

/// Splits `data` into up to four length-prefixed parts (u32 little-endian length, then bytes);
/// the last part takes whatever remains.
pub fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 3 {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let n = (u32::from_le_bytes(*len) as usize).min(tail.len());
        parts.push(&tail[..n]);
        rest = &tail[n..];
    }
    parts.push(rest);
    parts
}

/// Joins parts in the format [`split_parts`] reads (for building seed inputs).
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// A whole bundle from memory: manifest, ternary, fp16 and optional validation file split from
/// `data`; when it opens, every data check runs too.
pub fn bundle(data: &[u8]) {
    let parts = split_parts(data);
    let get = |i: usize| parts.get(i).copied().unwrap_or_default().to_vec();
    let validation = parts.get(3).filter(|v| !v.is_empty()).map(|v| v.to_vec());
    if let Ok(b) = Bundle::from_bytes(Path::new("fuzz"), parts[0], get(1), get(2), validation) {
        let _ = checks::check_all(&b);
        let _ = crate::inspect::inspect(&b);
    }
}

/// The trit codecs: validate and decode arbitrary bytes as rows, and round-trip arbitrary trits.
pub fn codecs(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let encoding = if head & 1 == 0 {
        Encoding::Trit5
    } else {
        Encoding::Trit2
    };
    let cols = (head >> 1) as usize + 1;
    let bpr = encoding.bytes_per_row(cols as u64) as usize;
    let mut trits = vec![0i8; cols];
    let mut floats = vec![0f32; cols];
    for row in rest.chunks(bpr) {
        let valid = encoding.validate_row(row, cols).is_ok();
        if row.len() == bpr {
            encoding
                .unpack_row(row, &mut trits)
                .expect("a row of bytes_per_row bytes unpacks");
            encoding
                .unpack_row_f32(row, &mut floats)
                .expect("a row of bytes_per_row bytes unpacks");
            let mut again = vec![0u8; bpr];
            encoding
                .pack_row(&trits, &mut again)
                .expect("unpacked trits pack");
            // Canonical encoding: a row is valid exactly when re-packing reproduces it.
            assert_eq!(
                valid,
                again == row,
                "validate_row disagrees with re-packing"
            );
        } else {
            assert!(!valid, "a short row cannot be valid");
        }
    }
    // Round trip of arbitrary trits.
    let trits: Vec<i8> = rest.iter().map(|&b| (b % 3) as i8 - 1).collect();
    let mut packed = vec![0u8; encoding.bytes_per_row(trits.len() as u64) as usize];
    encoding.pack_row(&trits, &mut packed).expect("trits pack");
    encoding
        .validate_row(&packed, trits.len())
        .expect("packed trits are canonical");
    let mut back = vec![0i8; trits.len()];
    encoding
        .unpack_row(&packed, &mut back)
        .expect("packed trits unpack");
    assert_eq!(back, trits, "round trip");
}

/// Structure-aware: a valid bundle (`base`, as [`join_parts`] bytes) whose tensor values,
/// scales and packed bytes are overwritten by `data` (pairs of offset and byte), then every
/// numeric check, both reference forward paths and the f64 gradients.
pub fn verify_numeric(base: &[u8], data: &[u8]) {
    let parts = split_parts(base);
    let (manifest, mut ternary, mut fp16) = (parts[0], parts[1].to_vec(), parts[2].to_vec());
    for edit in data.chunks_exact(4) {
        let target = if edit[0] & 1 == 0 {
            &mut ternary
        } else {
            &mut fp16
        };
        // Only the data buffer is mutated (headers stay valid): skip the first 8 + N bytes.
        let n = u64::from_le_bytes(target[..8].try_into().expect("8 bytes")) as usize + 8;
        if target.len() > n {
            let at = n + (u16::from_le_bytes([edit[1], edit[2]]) as usize) % (target.len() - n);
            target[at] = edit[3];
        }
    }
    let Ok(b) = Bundle::from_bytes(Path::new("fuzz"), manifest, ternary, fp16, None) else {
        return;
    };
    let _ = checks::check_scales(&b);
    let _ = checks::check_passthrough(&b);
    if checks::check_encoding(&b).is_ok() {
        let _ = checks::check_dequantization(&b);
        let x =
            ndarray::Array2::from_shape_fn((2, b.manifest().model.input_dim as usize), |(i, j)| {
                (i + j) as f32 - 1.0
            });
        let _ =
            crate::reference::forward_bundle(&b, crate::reference::WeightPath::Ternary, x.view());
        let _ = crate::reference::forward_bundle(&b, crate::reference::WeightPath::Fp16, x.view());
    }
    if let Ok(model) = crate::gradcheck::Model64::new(&b) {
        let x =
            ndarray::Array2::from_shape_fn((2, b.manifest().model.input_dim as usize), |(i, j)| {
                (i * j) as f64 - 0.5
            });
        let classes = b
            .manifest()
            .model
            .layers
            .last()
            .map_or(1, |l| l.out_features as usize);
        let _ = crate::gradcheck::gradient_flow(&model, x.view(), &[0, classes - 1]);
    }
}
