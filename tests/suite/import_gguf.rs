//! `bundle create --from model.gguf` (spec section 18.6): export then create gives back the
//! same trits, scales and FP16 bytes for TQ1_0, TQ2_0 and I2_S, both families, every
//! granularity a type holds, and with F16 fallback tensors; a file without the bundle's scale
//! keys (a foreign file) is read from its blocks' d; the manifest records the source.
//! gguf-py's own writer makes the foreign files of `scripts/gguf_check.py` (scripts/test.sh).

use crate::common;

use std::path::{Path, PathBuf};

use common::decoder::{model_with, spec, spec256};
use ternary_bundle::gguf::container::{file_bytes, TensorInfo, Value};
use ternary_bundle::gguf::export::{export_gguf, FloatType, GgufExport, SCALE_KEY_PREFIX};
use ternary_bundle::gguf::read::GgufFile;
use ternary_bundle::gguf::ternary::TernaryType;
use ternary_bundle::model::decoder::{DecoderSpec, Family};
use ternary_bundle::{write_bundle, Bundle, BundlePlan, Granularity, QuantParams, WriteOptions};

fn bundle_of(dir: &Path, name: &str, s: &DecoderSpec, granularity: Granularity) -> PathBuf {
    let dest = dir.join(name);
    let params = QuantParams {
        granularity,
        ..QuantParams::default()
    };
    let source = model_with(s, |name, v| {
        // A block of zeros (d = 0 in TQ), and rows of different scales.
        if name == "model.layers.0.mlp.down_proj.weight" {
            v[..256].iter_mut().for_each(|x| *x *= 1e-3);
        }
    });
    write_bundle(
        &dest,
        &source,
        &BundlePlan::of_decoder(s, params),
        &WriteOptions::default(),
    )
    .unwrap();
    dest
}

fn export(bundle: &Path, out: &Path, ternary: TernaryType, fallback: bool) {
    let options = GgufExport {
        ternary,
        float_type: FloatType::F32,
        no_tokenizer: true,
        context_length: 2048,
        allow_float_fallback: fallback,
        force: false,
    };
    export_gguf(&Bundle::open(bundle).unwrap(), out, &options).unwrap();
}

fn create(from: &Path, out: &Path) -> std::process::Output {
    assert_cmd::Command::cargo_bin("bundle")
        .unwrap()
        .args([
            "create",
            "--from",
            from.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

/// The trits, scales and FP16 values of two bundles are the same bytes: the two data files
/// are identical (the writer's layout is canonical, section 14).
fn assert_same_data(a: &Path, b: &Path) {
    for f in ["ternary.safetensors", "fp16.safetensors"] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(x == y, "{f} of {} and {} differ", a.display(), b.display());
    }
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn every_type_round_trips_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (Family::Llama, Granularity::Channel, TernaryType::Tq1_0),
        (Family::Llama, Granularity::Group(256), TernaryType::Tq2_0),
        (Family::Llama, Granularity::Tensor, TernaryType::I2S),
        (Family::Bitnet, Granularity::Tensor, TernaryType::Tq1_0),
        (Family::Bitnet, Granularity::Channel, TernaryType::Tq2_0),
        (Family::Bitnet, Granularity::Tensor, TernaryType::I2S),
    ];
    for (i, (family, g, ty)) in cases.into_iter().enumerate() {
        let tied = family == Family::Bitnet || i % 2 == 0;
        let src = bundle_of(tmp.path(), &format!("b{i}"), &spec256(family, tied), g);
        let file = tmp.path().join(format!("f{i}.gguf"));
        export(&src, &file, ty, false);
        let back = tmp.path().join(format!("back{i}"));
        let r = create(&file, &back);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_same_data(&src, &back);
        let m = manifest(&back);
        assert_eq!(m["quantization"]["method"], "given");
        assert_eq!(m["quantization"]["granularity"], g.name());
        assert_eq!(m["quantization"]["source"]["format"], "gguf");
        assert_eq!(m["model"]["decoder"], manifest(&src)["model"]["decoder"]);
    }
}

#[test]
fn fallback_tensors_round_trip_as_trits() {
    // Rows of 24 and 40 columns: no projection fits a block; every one is kept as F16 and read
    // back as trits from its values and the scale keys.
    let tmp = tempfile::tempdir().unwrap();
    for (i, ty) in [TernaryType::Tq1_0, TernaryType::Tq2_0, TernaryType::I2S]
        .into_iter()
        .enumerate()
    {
        let src = bundle_of(
            tmp.path(),
            &format!("b{i}"),
            &spec(Family::Llama, false),
            Granularity::Channel,
        );
        let file = tmp.path().join(format!("f{i}.gguf"));
        export(&src, &file, ty, true);
        let back = tmp.path().join(format!("back{i}"));
        let r = create(&file, &back);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_same_data(&src, &back);
    }
}

/// `file` rewritten without the `bundle.*` keys: what a converter other than this tool writes.
fn without_bundle_keys(file: &Path, out: &Path) {
    let g = GgufFile::open(file).unwrap();
    let h = g.header();
    let kvs: Vec<(String, Value)> = h
        .kvs
        .iter()
        .filter(|(k, _)| !k.starts_with("bundle."))
        .cloned()
        .collect();
    let parts: Vec<(TensorInfo, &[u8])> = h
        .tensors
        .iter()
        .map(|t| {
            (
                TensorInfo::new(&t.name, &t.ne, t.ggml_type.id(), t.nbytes),
                g.data(t),
            )
        })
        .collect();
    let bytes = file_bytes(&kvs, &parts);
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn a_file_without_scale_keys_is_read_from_its_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    // Scales already f16 values would come back exactly; channel scales of absmean are not, so
    // the bundle read from the blocks has f32(f16(scale)) and the same FP16 bytes.
    let src = bundle_of(
        tmp.path(),
        "b",
        &spec256(Family::Llama, true),
        Granularity::Channel,
    );
    let exported = tmp.path().join("f.gguf");
    export(&src, &exported, TernaryType::Tq2_0, false);
    let foreign = tmp.path().join("foreign.gguf");
    without_bundle_keys(&exported, &foreign);
    assert!(GgufFile::open(&foreign)
        .unwrap()
        .header()
        .kvs
        .iter()
        .all(|(k, _)| !k.starts_with(SCALE_KEY_PREFIX)));
    let back = tmp.path().join("back");
    let r = create(&foreign, &back);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read(src.join("fp16.safetensors")).unwrap(),
        std::fs::read(back.join("fp16.safetensors")).unwrap(),
        "FP16 bytes"
    );
    let (a, b) = (Bundle::open(&src).unwrap(), Bundle::open(&back).unwrap());
    assert_eq!(b.params().granularity, Granularity::Channel);
    let mut differ = 0;
    for p in a.quantized() {
        let q = b.packed(&p.spec.name).unwrap();
        assert_eq!(
            common::bundle_trits(&p),
            common::bundle_trits(&q),
            "{}",
            p.spec.name
        );
        for (s, t) in p.scales().iter().zip(q.scales()) {
            assert_eq!(half::f16::from_f32(*s).to_f32().to_bits(), t.to_bits());
            differ += usize::from(s.to_bits() != t.to_bits());
        }
    }
    assert!(
        differ > 0,
        "the blocks' d is the f16 rounding: some scales must differ"
    );
    assert_eq!(manifest(&back)["quantization"]["source"]["scale_name"], "d");
}
