//! Shared helpers for the integration tests: small deterministic models and bundle surgery.
#![allow(dead_code)]

pub mod decoder;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ternary_bundle::format::manifest::{LayerSpec, ModelSpec, RmsNormSpec};
use ternary_bundle::source::{MemorySource, ValidationSet};
use ternary_bundle::{write_bundle, Bundle, BundlePlan, QuantParams, WriteOptions};

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG; no dependency on rand).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The plan of the two-layer MLP the tests use: `input -> hidden` (`fc1`, relu, bias `fc1.bias`)
/// then `hidden -> out` (`fc2`, RMSNorm `fc2.norm.weight` with eps 1e-6, identity, no bias),
/// both weights quantized with the default parameters.
pub fn two_layer_plan(input: u64, hidden: u64, out: u64) -> BundlePlan {
    let model = ModelSpec {
        decoder: None,
        input_dim: input,
        layers: vec![
            LayerSpec {
                name: "fc1".into(),
                weight: "fc1.weight".into(),
                bias: Some("fc1.bias".into()),
                in_features: input,
                out_features: hidden,
                activation: "relu".into(),
                rmsnorm: None,
            },
            LayerSpec {
                name: "fc2".into(),
                weight: "fc2.weight".into(),
                bias: None,
                in_features: hidden,
                out_features: out,
                activation: "identity".into(),
                rmsnorm: Some(RmsNormSpec {
                    weight: "fc2.norm.weight".into(),
                    eps: 1e-6,
                }),
            },
        ],
    };
    BundlePlan {
        model,
        params: QuantParams::default(),
        quantize: BTreeSet::from(["fc1.weight".to_string(), "fc2.weight".to_string()]),
        given: None,
    }
}

/// A tiny MLP ([`two_layer_plan`] 7 -> 13 -> 5) with deterministic values from `seed`.
pub fn tiny_model(seed: u64) -> (MemorySource, BundlePlan) {
    let src = MemorySource::new("tiny.safetensors")
        .with("fc1.weight", vec![13, 7], values(seed, 91))
        .with("fc1.bias", vec![13], values(seed + 1, 13))
        .with(
            "fc2.norm.weight",
            vec![13],
            values(seed + 2, 13).iter().map(|v| 1.0 + v / 4.0).collect(),
        )
        .with("fc2.weight", vec![5, 13], values(seed + 3, 65));
    (src, two_layer_plan(7, 13, 5))
}

/// All files of a directory, name -> bytes.
pub fn read_dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A valid bundle of the tiny model (seed 7; trit5, channel unless `f` changes the plan) in
/// `tmp/name`.
pub fn tiny_bundle(
    tmp: &tempfile::TempDir,
    name: &str,
    f: impl FnOnce(&mut BundlePlan, &mut WriteOptions),
) -> PathBuf {
    let (src, mut plan) = tiny_model(7);
    let mut options = WriteOptions::default();
    f(&mut plan, &mut options);
    let dest = tmp.path().join(name);
    write_bundle(&dest, &src, &plan, &options).unwrap();
    dest
}

/// The default valid bundle: tiny model, trit5, channel, no validation set, in `tmp/b`.
pub fn bundle(tmp: &tempfile::TempDir) -> PathBuf {
    tiny_bundle(tmp, "b", |_, _| {})
}

/// `tensor "name"`, as violations print the tensor concerned.
pub fn t(name: &str) -> String {
    format!("tensor \"{name}\"")
}

/// Element `i` of little-endian f32 bytes.
pub fn f32_at(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap())
}

/// Overwrites element `i` of little-endian f32 bytes.
pub fn set_f32(bytes: &mut [u8], i: usize, v: f32) {
    bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
}

/// Element `i` of little-endian u16 (F16 bit pattern) bytes.
pub fn u16_at(bytes: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
}

/// Overwrites element `i` of little-endian u16 (F16 bit pattern) bytes.
pub fn set_u16(bytes: &mut [u8], i: usize, v: u16) {
    bytes[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
}

/// The trits of row `r` of quantized tensor `name`.
pub fn row_trits(dir: &Path, name: &str, r: usize) -> Vec<i8> {
    let b = Bundle::open(dir).unwrap();
    let p = b.packed(name).unwrap();
    let mut trits = vec![0i8; p.cols];
    p.encoding.unpack_row(p.row(r), &mut trits).unwrap();
    trits
}

/// A row of the tiny model's fc1.weight with at least one non-zero trit.
pub fn row_with_nonzero_trit(dir: &Path) -> usize {
    (0..13)
        .find(|&r| row_trits(dir, "fc1.weight", r).iter().any(|&t| t != 0))
        .expect("the tiny model has non-zero trits")
}

pub mod surgery;

/// `n` samples of the tiny model's 7 inputs (from `values(9, ..)`), labels `i % 5`, difficulty
/// `i % 4`, named `val.safetensors` in errors.
pub fn validation_set(n: usize) -> ValidationSet {
    ValidationSet {
        input_ids: None,
        origin: PathBuf::from("val.safetensors"),
        inputs: values(9, n * 7),
        labels: (0..n as i64).map(|i| i % 5).collect(),
        difficulty: Some((0..n).map(|i| (i % 4) as u8).collect()),
    }
}

/// The trits of quantized tensor `p`, row after row, decoded here with the encoding's row
/// codec (independently of the writers under test).
pub fn bundle_trits(p: &ternary_bundle::read::PackedTensor<'_>) -> Vec<i8> {
    let mut out = vec![0i8; p.rows * p.cols];
    for (r, row) in out.chunks_exact_mut(p.cols).enumerate() {
        p.encoding.unpack_row(p.row(r), row).unwrap();
    }
    out
}

/// scale(r, c) of spec section 6 for quantized tensor `p` with its `scales`.
pub fn scale_at(
    p: &ternary_bundle::read::PackedTensor<'_>,
    scales: &[f32],
    r: usize,
    c: usize,
) -> f32 {
    match p.granularity {
        ternary_bundle::Granularity::Tensor => scales[0],
        ternary_bundle::Granularity::Channel => scales[r],
        ternary_bundle::Granularity::Group(g) => {
            let g = g as usize;
            scales[r * p.cols.div_ceil(g) + c / g]
        }
    }
}

/// The names of the entries of `dir`, sorted (to prove a failed write left nothing behind, not
/// even a temporary file).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
