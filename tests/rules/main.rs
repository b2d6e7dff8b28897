//! Every numbered validation rule of the spec has a test that breaks it and checks the error,
//! one file per rule group (`r1_layout.rs` ... `r9_signature.rs`), sharing the helpers below:
//! the rule reported (`Error::rule`) and the message (the file, and the tensor when one is
//! concerned).
//!
//! Each test writes a valid bundle with `write_bundle`, breaks exactly one rule with the
//! surgery helpers of `tests/common/surgery.rs` (rehashing the manifest when the rules checked
//! before the target must keep passing), and asserts the violation. Data rules (4.3 to 4.7,
//! 5.2, 5.3, 6.2, 7.1, 7.2) are checked through the matching function of
//! `ternary_bundle::read::checks` and through `check_all`.

#[path = "../common/mod.rs"]
mod common;
mod r1_layout;
mod r2_decoder;
mod r2_manifest;
mod r3_safetensors;
mod r4_ternary;
mod r5_fp16;
mod r6_validation;
mod r7_checksums;
mod r8_gguf;
mod r8_writer;
mod r9_signature;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::surgery::{
    edit_manifest, edit_manifest_text, edit_st, edit_tensor, manifest, rehash, replace_once,
    tensor_entry, St, FP16, MANIFEST, TERNARY, VALIDATION,
};
use common::{
    bundle, f32_at, row_trits, row_with_nonzero_trit, set_f32, set_u16, t, tiny_bundle, u16_at,
};
use half::f16;
use serde_json::{json, Value};
use ternary_bundle::format::checksum::sha256_hex;
use ternary_bundle::format::manifest::FormatVersion;
use ternary_bundle::read::checks::{
    check_all, check_dequantization, check_digests, check_encoding, check_passthrough,
    check_scales, check_validation_values,
};
use ternary_bundle::source::quantization_metadata::{
    QuantizationMetadata, StageHandoff, METADATA_FILE,
};
use ternary_bundle::source::ValidationSet;
use ternary_bundle::source::{AssetFile, CheckpointSource, MemorySource, TensorSource};
use ternary_bundle::{
    write_bundle, Bundle, BundlePlan, Encoding, Error, QuantParams, Result, Rule, WriteOptions,
};

/// 4 samples of the tiny model's 7 inputs, labels in 0..5, with a difficulty.
fn validation_set() -> ValidationSet {
    common::validation_set(4)
}

/// A valid bundle with a validation set.
fn bundle_with_validation(tmp: &tempfile::TempDir) -> PathBuf {
    tiny_bundle(tmp, "v", |_, o| o.validation = Some(validation_set()))
}

/// Asserts that `result` is a violation of `rule` whose message contains every one of
/// `parts` (and the rule number); returns the message.
#[track_caller]
fn expect_violation<T: Debug>(result: Result<T>, rule: Rule, parts: &[&str]) -> String {
    let err: Error = match result {
        Ok(v) => panic!(
            "expected a violation of rule {} ({rule:?}), got Ok({v:?})",
            rule.number()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert_eq!(err.rule(), Some(rule), "wrong rule; message: {msg}");
    let number = format!("(rule {})", rule.number());
    assert!(msg.contains(&number), "message lacks {number:?}: {msg}");
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
    msg
}

/// Opening `dir` fails with `rule`; returns the message.
#[track_caller]
fn open_violation(dir: &Path, rule: Rule, parts: &[&str]) -> String {
    expect_violation(Bundle::open(dir), rule, parts)
}

/// `dir` opens, `check` reports `rule`, and so does `check_all` (every earlier check passes).
#[track_caller]
fn data_violation(
    dir: &Path,
    check: fn(&Bundle) -> Result<()>,
    rule: Rule,
    parts: &[&str],
) -> String {
    let b = Bundle::open(dir).unwrap_or_else(|e| panic!("bundle should open: {e}"));
    let msg = expect_violation(check(&b), rule, parts);
    let all = expect_violation(check_all(&b), rule, parts);
    assert_eq!(all, msg, "check_all must report the same first violation");
    msg
}

fn files_entry<'a>(m: &'a mut Value, role: &str) -> &'a mut Value {
    &mut m["files"][role]
}

/// Removes the listing of `name` from `files.<role>.tensors`.
fn unlist(m: &mut Value, role: &str, name: &str) {
    let list = files_entry(m, role)["tensors"].as_array_mut().unwrap();
    let before = list.len();
    list.retain(|t| t["name"] != name);
    assert_eq!(list.len(), before - 1, "{name} was listed once");
}

/// Renames tensor `from` to `to` in the header of `file` and in the manifest's listing.
fn rename_in_file(dir: &Path, file: &str, role: &str, from: &str, to: &str) {
    edit_st(dir, file, |st| {
        st.edit_json(|v| {
            let o = v.as_object_mut().unwrap();
            let e = o.remove(from).unwrap();
            o.insert(to.into(), e);
        })
    });
    edit_manifest(dir, |m| {
        let list = m["files"][role]["tensors"].as_array_mut().unwrap();
        let e = list.iter_mut().find(|e| e["name"] == from).unwrap();
        e["name"] = json!(to);
    });
    rehash(dir);
}

/// Adds an empty U8 tensor `name` at the end of `file` and lists it in the manifest.
fn add_empty_tensor(dir: &Path, file: &str, role: &str, name: &str) {
    edit_st(dir, file, |st| {
        let end = st.data.len();
        st.edit_json(|v| {
            v[name] = json!({"dtype": "U8", "shape": [0], "data_offsets": [end, end]});
        })
    });
    edit_manifest(dir, |m| {
        m["files"][role]["tensors"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "sha256": sha256_hex(b"")}));
    });
    rehash(dir);
}

/// A copy of `src` with tensor `name`'s values replaced.
fn rebuild_source(src: &MemorySource, name: &str, values: Vec<f32>) -> MemorySource {
    let mut out = MemorySource::new(src.path());
    for tensor in src.tensors() {
        let v = if tensor.name == name {
            values.clone()
        } else {
            src.load_f32(&tensor.name).unwrap()
        };
        out.push(tensor.name, tensor.shape, v).unwrap();
    }
    out
}

/// The asset file the format 4.0 tests carry (rule 1.6).
const TOKENIZER: &str = "tokenizer.json";
/// Its bytes (asset files are carried byte for byte, never interpreted).
const TOKENIZER_BYTES: &[u8] =
    br#"{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}}}"#;

/// An asset file to carry.
fn asset(name: &str, bytes: &[u8]) -> AssetFile {
    AssetFile {
        name: name.into(),
        bytes: bytes.to_vec(),
    }
}

/// A valid bundle of the tiny model carrying `tokenizer.json` (so of format 4.0), in
/// `tmp/name`.
fn bundle_with_assets(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    let dir = tiny_bundle(tmp, name, |_, o| {
        o.assets = vec![asset(TOKENIZER, TOKENIZER_BYTES)]
    });
    assert_eq!(manifest(&dir)["format_version"], "4.0");
    dir
}

/// The checkpoint file of a [`Handoff`], as violations name it.
const STAGE_FILE: &str = "stage.safetensors";

/// The quantizing stage's handoff (spec section 18.1) of the tiny model (7 -> 13 -> 5): a
/// state dict whose `fc1.weight` [13, 7] and `fc2.weight` [5, 13] hold I8 trits, with F32
/// `fc1.bias` and `fc2.norm.weight`, and `quantization_metadata.json` giving `fc1.weight` one
/// scale per row and `fc2.weight` one scale, zero points 0. Tests edit either part, then write
/// a bundle of it with the library ([`Handoff::write_bundle`]).
struct Handoff {
    /// (name, dtype, shape, little-endian bytes), in file order.
    tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    /// The text of `quantization_metadata.json`.
    metadata: String,
}

/// Deterministic trits from `values(seed, n)`: +1 above 0.3, -1 below -0.3, else 0.
fn trits(seed: u64, n: usize) -> Vec<i8> {
    common::values(seed, n)
        .into_iter()
        .map(|v| {
            if v > 0.3 {
                1
            } else if v < -0.3 {
                -1
            } else {
                0
            }
        })
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Handoff {
    /// The scales `fc1.weight`'s rows are given: (r + 1) / 64, exact in f32.
    fn fc1_scales() -> Vec<f32> {
        (1..=13).map(|r| r as f32 / 64.0).collect()
    }

    /// The one scale `fc2.weight` is given.
    const FC2_SCALE: f32 = 0.03125;

    fn tiny() -> Self {
        use safetensors::Dtype as D;
        let i8s = |t: Vec<i8>| t.into_iter().map(|v| v as u8).collect::<Vec<u8>>();
        let norm: Vec<f32> = common::values(9, 13)
            .iter()
            .map(|v| 1.0 + v / 4.0)
            .collect();
        let metadata = json!({
            "scales": {"fc1.weight": Self::fc1_scales(), "fc2.weight": Self::FC2_SCALE},
            "zero_points": {"fc1.weight": 0, "fc2.weight": 0},
            "quantization_scheme": "1.58-bit",
            "sparsity_threshold": 0.5
        });
        Handoff {
            tensors: vec![
                (
                    "fc1.bias".into(),
                    D::F32,
                    vec![13],
                    f32_bytes(&common::values(8, 13)),
                ),
                ("fc1.weight".into(), D::I8, vec![13, 7], i8s(trits(7, 91))),
                ("fc2.norm.weight".into(), D::F32, vec![13], f32_bytes(&norm)),
                ("fc2.weight".into(), D::I8, vec![5, 13], i8s(trits(10, 65))),
            ],
            metadata: serde_json::to_string_pretty(&metadata).unwrap(),
        }
    }

    /// Replaces tensor `name`'s dtype and bytes (its shape stays).
    fn set_tensor(&mut self, name: &str, dtype: safetensors::Dtype, bytes: Vec<u8>) {
        let t = self.tensors.iter_mut().find(|t| t.0 == name).unwrap();
        t.1 = dtype;
        t.3 = bytes;
    }

    /// Edits the metadata as a JSON value.
    fn edit_metadata(&mut self, f: impl FnOnce(&mut Value)) {
        let mut v: Value = serde_json::from_str(&self.metadata).unwrap();
        f(&mut v);
        self.metadata = serde_json::to_string_pretty(&v).unwrap();
    }

    /// Writes the state dict ([`STAGE_FILE`]) and the metadata into `dir`; returns their paths.
    fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        use safetensors::tensor::TensorView;
        std::fs::create_dir_all(dir).unwrap();
        let ckpt = dir.join(STAGE_FILE);
        let views: Vec<(&str, TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &ckpt).unwrap();
        let meta = dir.join(METADATA_FILE);
        std::fs::write(&meta, &self.metadata).unwrap();
        (ckpt, meta)
    }

    /// Writes a bundle of the handoff to `tmp/name` as `bundle create` does for a state dict of
    /// trits (section 18.1): metadata read and matched to the state dict (rule 8.3), the
    /// finest given granularity, the trits and scales taken as given (method `given`).
    fn write_bundle(
        &self,
        tmp: &tempfile::TempDir,
        name: &str,
        options: &WriteOptions,
    ) -> Result<PathBuf> {
        let (ckpt, meta) = self.write(&tmp.path().join(format!("{name}.src")));
        let metadata = QuantizationMetadata::read(&meta)?;
        let stage = StageHandoff::new(Box::new(CheckpointSource::open(&ckpt)?), metadata)?;
        let plan = BundlePlan {
            model: common::two_layer_plan(7, 13, 5).model,
            params: QuantParams {
                granularity: stage.granularity()?,
                ..QuantParams::default()
            },
            quantize: stage.quantized(),
            given: Some(stage.metadata().record()),
        };
        let dest = tmp.path().join(name);
        write_bundle(&dest, &stage, &plan, options)?;
        Ok(dest)
    }
}

/// A valid bundle of given trits ([`Handoff::tiny`], format 4.0) in `tmp/name`.
fn given_bundle(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    let dir = Handoff::tiny()
        .write_bundle(tmp, name, &WriteOptions::default())
        .unwrap_or_else(|e| panic!("the tiny handoff is valid: {e}"));
    assert_eq!(manifest(&dir)["format_version"], "4.0");
    dir
}

/// Every rule of `Rule::ALL` has a test named `rule_<number>_...` in one of the group files.
#[test]
fn every_rule_has_a_test() {
    let src = [
        include_str!("r1_layout.rs"),
        include_str!("r2_decoder.rs"),
        include_str!("r2_manifest.rs"),
        include_str!("r3_safetensors.rs"),
        include_str!("r4_ternary.rs"),
        include_str!("r5_fp16.rs"),
        include_str!("r6_validation.rs"),
        include_str!("r7_checksums.rs"),
        include_str!("r8_writer.rs"),
        include_str!("r8_gguf.rs"),
        include_str!("r9_signature.rs"),
    ]
    .concat();
    for rule in Rule::ALL {
        let prefix = format!("fn rule_{}_", rule.number().replace('.', "_"));
        assert!(
            src.contains(&prefix),
            "no test for rule {} ({rule:?}): add a `{prefix}...` test",
            rule.number()
        );
    }
}
