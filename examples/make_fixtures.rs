//! Regenerates the committed fixtures under `fixtures/` byte for byte:
//! `cargo run --release --example make_fixtures [OUT_DIR]` (default `fixtures`).
//!
//! Weights come from integer formulas, not a random generator, so the bytes are the same on
//! every machine. `tests/suite/fixtures.rs` regenerates into a temporary directory and compares.

#[allow(dead_code)]
#[path = "../tests/common/surgery.rs"]
mod surgery;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ternary_bundle::format::manifest::{LayerSpec, ModelSpec, RmsNormSpec};
use ternary_bundle::source::MemorySource;
use ternary_bundle::source::ValidationSet;
use ternary_bundle::{write_bundle, BundlePlan, Encoding, Granularity, QuantParams, WriteOptions};

/// Input width of the tiny fixture model.
pub const INPUT_DIM: u64 = 16;
/// Classes of the tiny fixture model.
pub const CLASSES: u64 = 10;

/// A value in [-1, 1) from an integer formula (deterministic, exact in f32).
fn wave(i: u64, mul: u64, modulus: u64) -> f32 {
    ((i * mul) % modulus) as f32 / modulus as f32 * 2.0 - 1.0
}

/// The tiny MLP: 16 -> 24 (relu, bias) -> 10 (rmsnorm, identity, bias).
pub fn tiny_source() -> MemorySource {
    MemorySource::new("fixtures/tiny")
        .with(
            "fc1.weight",
            vec![24, INPUT_DIM],
            (0..24 * INPUT_DIM)
                .map(|i| wave(i, 37, 101) * 0.5)
                .collect(),
        )
        .with(
            "fc1.bias",
            vec![24],
            (0..24).map(|i| wave(i, 7, 13) * 0.1).collect(),
        )
        .with(
            "fc2.norm.weight",
            vec![24],
            (0..24).map(|i| 1.0 + wave(i, 5, 11) * 0.25).collect(),
        )
        .with(
            "fc2.weight",
            vec![CLASSES, 24],
            (0..CLASSES * 24).map(|i| wave(i, 53, 97) * 0.3).collect(),
        )
        .with(
            "fc2.bias",
            vec![CLASSES],
            (0..CLASSES).map(|i| wave(i, 3, 7) * 0.05).collect(),
        )
}

/// The plan for the tiny MLP with `params`.
pub fn tiny_plan(params: QuantParams) -> BundlePlan {
    BundlePlan {
        model: ModelSpec {
            decoder: None,
            input_dim: INPUT_DIM,
            layers: vec![
                LayerSpec {
                    name: "fc1".into(),
                    weight: "fc1.weight".into(),
                    bias: Some("fc1.bias".into()),
                    in_features: INPUT_DIM,
                    out_features: 24,
                    activation: "relu".into(),
                    rmsnorm: None,
                },
                LayerSpec {
                    name: "fc2".into(),
                    weight: "fc2.weight".into(),
                    bias: Some("fc2.bias".into()),
                    in_features: 24,
                    out_features: CLASSES,
                    activation: "identity".into(),
                    rmsnorm: Some(RmsNormSpec {
                        weight: "fc2.norm.weight".into(),
                        eps: 1e-6,
                    }),
                },
            ],
        },
        params,
        quantize: BTreeSet::from(["fc1.weight".to_string(), "fc2.weight".to_string()]),
        given: None,
    }
}

/// A small labelled validation set for the tiny model.
pub fn tiny_validation() -> ValidationSet {
    let n = 32u64;
    ValidationSet {
        origin: PathBuf::from("fixtures/tiny-validation"),
        input_ids: None,
        inputs: (0..n * INPUT_DIM).map(|i| wave(i, 29, 89) * 2.0).collect(),
        labels: (0..n).map(|i| ((i * 7) % CLASSES) as i64).collect(),
        difficulty: Some((0..n).map(|i| (i % 10 + 1) as u8).collect()),
    }
}

/// Every valid fixture bundle: (directory under fixtures/bundles, params, with validation set).
pub fn bundle_fixtures() -> Vec<(&'static str, QuantParams, bool)> {
    let p = |encoding, granularity| QuantParams {
        encoding,
        granularity,
        ..QuantParams::default()
    };
    vec![
        (
            "tiny-trit5-channel",
            p(Encoding::Trit5, Granularity::Channel),
            false,
        ),
        (
            "tiny-trit2-channel",
            p(Encoding::Trit2, Granularity::Channel),
            false,
        ),
        (
            "tiny-trit5-tensor",
            p(Encoding::Trit5, Granularity::Tensor),
            false,
        ),
        (
            "tiny-trit2-tensor",
            p(Encoding::Trit2, Granularity::Tensor),
            false,
        ),
        (
            "tiny-trit5-group5",
            p(Encoding::Trit5, Granularity::Group(5)),
            false,
        ),
        (
            "tiny-trit2-group5",
            p(Encoding::Trit2, Granularity::Group(5)),
            false,
        ),
        (
            "tiny-validation",
            p(Encoding::Trit5, Granularity::Channel),
            true,
        ),
    ]
}

fn write(dest: &Path, params: QuantParams, validation: bool) {
    // Predictions only (no distributions): these fixtures keep the version of their rules.
    let options = WriteOptions {
        validation: validation.then(tiny_validation),
        original_top_k: Some(0),
        ..WriteOptions::default()
    };
    write_bundle(dest, &tiny_source(), &tiny_plan(params), &options)
        .unwrap_or_else(|e| panic!("writing fixture {}: {e}", dest.display()));
}

/// The decoder fixture (format 3.0) under fixtures/bundles.
pub const DECODER_FIXTURE: &str = "tiny-decoder";

/// The fixtures of format 5.0 under fixtures/bundles: a chain of layers with the original
/// model's full distributions, and the decoder with its top 3.
pub const DISTRIBUTION_FIXTURES: [&str; 2] = ["tiny-distributions", "tiny-decoder-top-k"];

/// A one-layer BitNet decoder (vocab 11, hidden 8, intermediate 12, 2 heads of 4, 1 KV head,
/// tied embeddings), its projections quantized, with 3 sequences of 5 tokens; its original
/// predictions only (format 3.0).
pub fn write_decoder(dest: &Path) {
    write_decoder_with(dest, Some(0));
}

/// [`write_decoder`] with the original model's distributions in the form `top_k` asks for
/// (`WriteOptions::original_top_k`).
pub fn write_decoder_with(dest: &Path, top_k: Option<u64>) {
    use ternary_bundle::model::decoder::{DecoderSpec, Family};
    use ternary_bundle::source::TokenIds;
    let spec = DecoderSpec {
        family: Family::Bitnet,
        vocab_size: 11,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 500000.0,
        tie_word_embeddings: true,
    };
    let mut src = MemorySource::new("tiny-decoder.safetensors");
    let mut offset = 0u64;
    for (name, shape) in spec.tensors() {
        let n = shape.iter().product::<usize>() as u64;
        let values = (offset..offset + n)
            .map(|i| {
                let w = wave(i, 37, 61);
                if shape.len() == 1 {
                    1.0 + w / 4.0
                } else {
                    w
                }
            })
            .collect();
        offset += n;
        src = src.with(&name, shape.iter().map(|&d| d as u64).collect(), values);
    }
    let plan = BundlePlan::of_decoder(&spec, QuantParams::default());
    let ids: Vec<i64> = (0..15).map(|i| (i * 4 + 1) % 11).collect();
    let labels = ids.chunks(5).flat_map(|r| r[1..].to_vec()).collect();
    let options = WriteOptions {
        validation: Some(ValidationSet {
            origin: PathBuf::from("fixtures/tiny-decoder-validation"),
            inputs: Vec::new(),
            input_ids: Some(TokenIds { tokens: 5, ids }),
            labels,
            difficulty: Some(vec![1, 5, 10]),
        }),
        original_top_k: top_k,
        ..WriteOptions::default()
    };
    write_bundle(dest, &src, &plan, &options)
        .unwrap_or_else(|e| panic!("writing fixture {}: {e}", dest.display()));
}

/// The given-trits fixture (format 4.0) under fixtures/bundles.
pub const GIVEN_FIXTURE: &str = "tiny-given";

/// A tiny tokenizer (Hugging Face `tokenizers` WordLevel), carried as an asset of the
/// given-trits fixture.
pub const TINY_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2},"unk_token":"[UNK]"}}"#;

/// The tiny model's trits as an already-ternary source gives them: `fc1.weight` with a scale
/// per row, `fc2.weight` with one per tensor (spec section 7.1: the bundle repeats it per row).
struct TinyGiven {
    floats: MemorySource,
    given: std::collections::BTreeMap<String, ternary_bundle::source::given::GivenTensor>,
}

impl ternary_bundle::source::TensorSource for TinyGiven {
    fn path(&self) -> &Path {
        Path::new("fixtures/tiny-given")
    }
    fn tensors(&self) -> Vec<ternary_bundle::source::SourceTensor> {
        self.floats.tensors()
    }
    fn load_f32(&self, name: &str) -> ternary_bundle::Result<Vec<f32>> {
        self.floats.load_f32(name)
    }
    fn given(
        &self,
        name: &str,
    ) -> ternary_bundle::Result<Option<ternary_bundle::source::given::GivenTensor>> {
        Ok(self.given.get(name).cloned())
    }
}

/// A bundle of given trits (method given, mixed given granularities), with a carried
/// tokenizer and original predictions of the tiny model's float weights (`provenance.original`).
pub fn write_given(dest: &Path) {
    use ternary_bundle::format::manifest::QuantSourceSpec;
    use ternary_bundle::model::original::OriginalModel;
    use ternary_bundle::source::given::{GivenScales, GivenTensor};
    use ternary_bundle::source::{AssetFile, TensorSource};
    let floats = tiny_source();
    let mut given = std::collections::BTreeMap::new();
    for (name, rows, cols, per_row) in [
        ("fc1.weight", 24, INPUT_DIM, true),
        ("fc2.weight", CLASSES, 24, false),
    ] {
        let w = floats.load_f32(name).unwrap();
        let trits: Vec<i8> = w
            .iter()
            .map(|&v| (v > 0.2) as i8 - (v < -0.2) as i8)
            .collect();
        let scales = if per_row {
            GivenScales::Channel((0..rows).map(|r| 0.25 + r as f32 / 64.0).collect())
        } else {
            GivenScales::Tensor(0.375)
        };
        assert_eq!(trits.len() as u64, rows * cols);
        given.insert(name.to_string(), GivenTensor { trits, scales });
    }
    let source = TinyGiven { floats, given };
    let mut plan = tiny_plan(QuantParams::default());
    plan.given = Some(QuantSourceSpec {
        format: "quantization-metadata".into(),
        scale_name: "scales".into(),
        scale_convention: "multiply".into(),
        details: Some(serde_json::json!({"quantization_scheme": "1.58-bit"})),
    });
    let options = WriteOptions {
        validation: Some(tiny_validation()),
        assets: vec![AssetFile {
            name: "tokenizer.json".into(),
            bytes: TINY_TOKENIZER.as_bytes().to_vec(),
        }],
        original_top_k: Some(0),
        ..WriteOptions::default()
    };
    let original_weights = tiny_source();
    let original = OriginalModel::dense(&original_weights);
    ternary_bundle::write::bundle::write_bundle_from(
        dest,
        &source,
        Some(&original),
        &plan,
        &options,
        &|_| {},
    )
    .unwrap_or_else(|e| panic!("writing fixture {}: {e}", dest.display()));
}

/// Rewrites `dir/manifest.json` after `edit` changes its JSON value.
fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    surgery::edit_manifest(dir, edit);
}

/// A deliberately broken bundle: how it is broken and the error it must produce.
pub struct Broken {
    /// Directory under `fixtures/broken`.
    pub name: &'static str,
    /// What was done to a valid bundle.
    pub damage: &'static str,
    /// The spec rule the error cites.
    pub rule: &'static str,
    /// The file the error names.
    pub file: &'static str,
    /// The tensor the error names, if any.
    pub tensor: Option<&'static str>,
    /// Whether the valid bundle it starts from has a validation set.
    pub validation: bool,
    edit: fn(&Path),
}

/// Every broken fixture. Where the damage is to data, the manifest is re-hashed so that the
/// intended rule, not a checksum, catches it.
pub fn broken_fixtures() -> Vec<Broken> {
    use surgery::*;
    vec![
        Broken {
            name: "missing-file",
            damage: "fp16.safetensors deleted",
            rule: "1.2",
            file: FP16,
            tensor: None,
            validation: false,
            edit: |d| std::fs::remove_file(d.join(FP16)).unwrap(),
        },
        Broken {
            name: "manifest-not-json",
            damage: "manifest.json cut in half",
            rule: "2.2",
            file: MANIFEST,
            tensor: None,
            validation: false,
            edit: |d| {
                let m = std::fs::read(d.join(MANIFEST)).unwrap();
                std::fs::write(d.join(MANIFEST), &m[..m.len() / 2]).unwrap();
            },
        },
        Broken {
            name: "unknown-major",
            damage: "format_version 6.0",
            rule: "2.4",
            file: MANIFEST,
            tensor: None,
            validation: false,
            edit: |d| edit_manifest(d, |m| m["format_version"] = "6.0".into()),
        },
        Broken {
            name: "unknown-encoding",
            damage: "quantization.encoding trit3",
            rule: "2.8",
            file: MANIFEST,
            tensor: None,
            validation: false,
            edit: |d| edit_manifest(d, |m| m["quantization"]["encoding"] = "trit3".into()),
        },
        Broken {
            name: "truncated-file",
            damage: "last byte of fp16.safetensors removed",
            rule: "3.1",
            file: FP16,
            tensor: None,
            validation: false,
            edit: |d| {
                let b = std::fs::read(d.join(FP16)).unwrap();
                std::fs::write(d.join(FP16), &b[..b.len() - 1]).unwrap();
            },
        },
        Broken {
            name: "header-length-overflow",
            damage: "ternary.safetensors header length set to 2^63 (re-hashed)",
            rule: "3.2",
            file: TERNARY,
            tensor: None,
            validation: false,
            edit: |d| {
                let mut b = std::fs::read(d.join(TERNARY)).unwrap();
                b[..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
                std::fs::write(d.join(TERNARY), b).unwrap();
                rehash(d);
            },
        },
        Broken {
            name: "shape-mismatch",
            damage: "fp16 fc1.weight declared [16, 24] instead of [24, 16] (re-hashed)",
            rule: "5.1",
            file: FP16,
            tensor: Some("fc1.weight"),
            validation: false,
            edit: |d| {
                edit_st(d, FP16, |st| {
                    let t = st
                        .header_text()
                        .replace("\"shape\":[24,16]", "\"shape\":[16,24]");
                    st.set_header_text(&t)
                });
                rehash(d);
            },
        },
        Broken {
            name: "bad-digest",
            damage: "one byte of fp16 fc2.weight flipped (manifest not updated)",
            rule: "7.2",
            file: FP16,
            tensor: Some("fc2.weight"),
            validation: false,
            edit: |d| edit_tensor(d, FP16, "fc2.weight", |b| b[3] ^= 0x40),
        },
        Broken {
            name: "invalid-trit-byte",
            damage: "packed byte of fc1.weight set to 243 (re-hashed)",
            rule: "4.3",
            file: TERNARY,
            tensor: Some("fc1.weight"),
            validation: false,
            edit: |d| {
                edit_tensor(d, TERNARY, "fc1.weight", |b| b[1] = 243);
                rehash(d);
            },
        },
        Broken {
            name: "non-canonical-padding",
            damage: "unused trit position of fc2.weight's last byte set (re-hashed)",
            rule: "4.4",
            file: TERNARY,
            tensor: Some("fc2.weight"),
            validation: false,
            edit: |d| {
                // fc2.weight has C = 24 columns: 5 bytes per row, the last holding 4 trits (max 80).
                edit_tensor(d, TERNARY, "fc2.weight", |b| b[4] += 81);
                rehash(d);
            },
        },
        Broken {
            name: "nan-scale",
            damage: "first scale of fc1.weight set to NaN (re-hashed)",
            rule: "4.5",
            file: TERNARY,
            tensor: Some("fc1.weight"),
            validation: false,
            edit: |d| {
                edit_tensor(d, TERNARY, "fc1.weight.scale", |b| {
                    b[..4].copy_from_slice(&f32::NAN.to_le_bytes())
                });
                rehash(d);
            },
        },
        Broken {
            name: "fp16-not-dequantized",
            damage: "one fp16 value of fc1.weight changed by one ulp (re-hashed)",
            rule: "5.2",
            file: FP16,
            tensor: Some("fc1.weight"),
            validation: false,
            edit: |d| {
                edit_tensor(d, FP16, "fc1.weight", |b| b[0] ^= 1);
                rehash(d);
            },
        },
        Broken {
            name: "original-predictions-in-1.0",
            damage: "format_version set to 1.0 in a bundle with original_predictions (re-hashed)",
            rule: "6.1",
            file: VALIDATION,
            tensor: Some("original_predictions"),
            validation: true,
            edit: |d| edit_manifest(d, |m| m["format_version"] = "1.0".into()),
        },
        Broken {
            name: "original-prediction-out-of-range",
            damage: "original_predictions[3] set to 10, past the 10 classes (re-hashed)",
            rule: "6.3",
            file: VALIDATION,
            tensor: Some("original_predictions"),
            validation: true,
            edit: |d| {
                edit_tensor(d, VALIDATION, "original_predictions", |b| {
                    b[24..32].copy_from_slice(&10i64.to_le_bytes())
                });
                rehash(d);
            },
        },
    ]
}

/// Writes every fixture under `root` (which must not hold them yet).
pub fn generate(root: &Path) {
    let broken = root.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let mut expected = Vec::new();
    for b in broken_fixtures() {
        let dir = broken.join(b.name);
        write(&dir, QuantParams::default(), b.validation);
        (b.edit)(&dir);
        expected.push(serde_json::json!({
            "name": b.name, "damage": b.damage, "rule": b.rule, "file": b.file, "tensor": b.tensor,
        }));
    }
    let mut table = serde_json::to_vec_pretty(&expected).unwrap();
    table.push(b'\n');
    std::fs::write(broken.join("expected.json"), table).unwrap();

    let bundles = root.join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    for (name, params, validation) in bundle_fixtures() {
        write(&bundles.join(name), params, validation);
    }
    write_decoder(&bundles.join(DECODER_FIXTURE));
    write_given(&bundles.join(GIVEN_FIXTURE));
    let [chain, decoder] = DISTRIBUTION_FIXTURES;
    write_bundle(
        &bundles.join(chain),
        &tiny_source(),
        &tiny_plan(QuantParams::default()),
        &WriteOptions {
            validation: Some(tiny_validation()),
            ..WriteOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("writing fixture {chain}: {e}"));
    write_decoder_with(&bundles.join(decoder), Some(3));
    // Versioning (spec section 13): a newer MINOR with keys this reader does not know opens...
    let newer = root.join("versions/newer-minor");
    std::fs::create_dir_all(newer.parent().unwrap()).unwrap();
    write(&newer, QuantParams::default(), false);
    edit_manifest(&newer, |m| {
        m["format_version"] = "1.7".into();
        m["future_top_level_key"] = serde_json::json!({"added_in": "1.7"});
        m["quantization"]["future_quantization_key"] = true.into();
        m["tensors"][0]["future_tensor_key"] = 1.into();
    });
    // ...and another MAJOR is refused, naming both versions.
    let major = root.join("versions/unknown-major");
    write(&major, QuantParams::default(), false);
    edit_manifest(&major, |m| m["format_version"] = "6.0".into());
}

/// Fixtures that are never regenerated: written by an earlier version of the writer and kept
/// byte for byte, so that later readers are tested against what was really written
/// (`versions/written-by-1.0`: the 1.0 writer's `tiny-validation`, without
/// `original_predictions`).
pub const FROZEN: [&str; 1] = ["versions/written-by-1.0"];

#[allow(dead_code)]
fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "fixtures".into());
    let out = PathBuf::from(out);
    for sub in [
        "bundles",
        "versions/newer-minor",
        "versions/unknown-major",
        "broken",
    ] {
        let p = out.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
    generate(&out);
    println!("fixtures written under {}", out.display());
}
