//! Shared helpers for the integration tests: small deterministic models and bundle surgery.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;

use ternary_bundle::manifest::{LayerSpec, ModelSpec, RmsNormSpec};
use ternary_bundle::source::MemorySource;
use ternary_bundle::{BundlePlan, QuantParams};

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

/// A tiny MLP: 7 -> 13 (relu, bias) -> 5 (rmsnorm, identity, no bias).
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
    let model = ModelSpec {
        input_dim: 7,
        layers: vec![
            LayerSpec {
                name: "fc1".into(),
                weight: "fc1.weight".into(),
                bias: Some("fc1.bias".into()),
                in_features: 7,
                out_features: 13,
                activation: "relu".into(),
                rmsnorm: None,
            },
            LayerSpec {
                name: "fc2".into(),
                weight: "fc2.weight".into(),
                bias: None,
                in_features: 13,
                out_features: 5,
                activation: "identity".into(),
                rmsnorm: Some(RmsNormSpec {
                    weight: "fc2.norm.weight".into(),
                    eps: 1e-6,
                }),
            },
        ],
    };
    let plan = BundlePlan {
        model,
        params: QuantParams::default(),
        quantize: BTreeSet::from(["fc1.weight".to_string(), "fc2.weight".to_string()]),
    };
    (src, plan)
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

pub mod surgery;
