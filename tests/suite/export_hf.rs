//! `bundle export --format hf` and `--format hf-bitnet` (spec sections 18.4 and 18.2) through the
//! library: every tensor read back with Hugging Face's own `safetensors` crate and compared with
//! what the bundle defines (the FP16 file's bytes, f32(t × scale), its bfloat16 rounding, the
//! packed trits and their scale), sharding and its index, config.json, carried assets, the
//! refusals, and the round trip bundle -> hf-bitnet -> bundle, byte for byte.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::decoder::{model_with, random_model, spec};
use common::{bundle_trits, scale_at};
use half::{bf16, f16};
use safetensors::{Dtype as StDtype, SafeTensors};
use serde_json::Value;
use ternary_bundle::format::decoder::is_projection;
use ternary_bundle::format::manifest::ModelSpec;
use ternary_bundle::hf::bitnet::{unpack_weights, PackedBitnet};
use ternary_bundle::hf::export::{export_hf, export_hf_bitnet, HfDtype, HfExport};
use ternary_bundle::model::decoder::{DecoderSpec, Family};
use ternary_bundle::source::hf::HfModel;
use ternary_bundle::source::{AssetFile, MemorySource, TensorSource};
use ternary_bundle::{
    write_bundle, Bundle, BundlePlan, Encoding, Error, Granularity, QuantParams, WriteOptions,
};

// ---- building bundles ----

/// A decoder bundle of `s` in `tmp/name`: the projections (or `quantize`) quantized with
/// `params`, random weights (or `source`), `assets` carried.
fn decoder_bundle(
    tmp: &tempfile::TempDir,
    name: &str,
    s: &DecoderSpec,
    params: QuantParams,
    quantize: Option<BTreeSet<String>>,
    source: Option<MemorySource>,
    assets: Vec<AssetFile>,
) -> PathBuf {
    let mut plan = BundlePlan::of_decoder(s, params);
    if let Some(q) = quantize {
        plan.quantize = q;
    }
    let options = WriteOptions {
        assets,
        ..Default::default()
    };
    let dest = tmp.path().join(name);
    let source = source.unwrap_or_else(|| random_model(s));
    write_bundle(&dest, &source, &plan, &options).unwrap();
    dest
}

fn per_tensor(encoding: Encoding) -> QuantParams {
    QuantParams {
        encoding,
        granularity: Granularity::Tensor,
        ..QuantParams::default()
    }
}

/// The quantized tensors of `s`: the projections.
fn projections(s: &DecoderSpec) -> BTreeSet<String> {
    s.tensors()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| is_projection(n))
        .collect()
}

// ---- what the bundle defines, computed here independently of the exporter ----

/// f32(t × scale) of a quantized tensor, the stored F32 values of another (spec 18.4's f32).
fn expected_f32(b: &Bundle, name: &str) -> Vec<f32> {
    match b.packed(name) {
        Some(p) => {
            let t = bundle_trits(&p);
            let scales = p.scales();
            (0..p.rows * p.cols)
                .map(|i| f32::from(t[i]) * scale_at(&p, &scales, i / p.cols, i % p.cols))
                .collect()
        }
        None => b
            .passthrough_bytes(name)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    }
}

/// bfloat16 of a finite f32, rounded to nearest, ties to even: add half an ulp of bfloat16
/// (minus one when the kept part is even) and truncate.
fn bf16_rne(v: f32) -> u16 {
    let x = v.to_bits();
    let lsb = (x >> 16) & 1;
    ((x + 0x7fff + lsb) >> 16) as u16
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

// ---- reading a model directory back with Hugging Face's safetensors ----

/// One tensor as the `safetensors` crate reads it.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
    file: String,
}

/// Every tensor of the weight files of `dir` (`model.safetensors`, or the shards of the index),
/// checking each file's `__metadata__` is {"format": "pt"}.
fn read_weights(dir: &Path) -> BTreeMap<String, Read> {
    let files: BTreeSet<String> = if dir.join("model.safetensors").exists() {
        BTreeSet::from(["model.safetensors".to_string()])
    } else {
        index(dir)["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut out = BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(dir.join(&file)).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let expected = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        assert_eq!(meta.metadata().as_ref(), Some(&expected), "{file}");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let read = Read {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
                file: file.clone(),
            };
            assert!(out.insert(name.clone(), read).is_none(), "{name} twice");
        }
    }
    out
}

fn index(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).unwrap())
        .unwrap()
}

fn config(dir: &Path) -> (String, Value) {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let v = serde_json::from_str(&text).unwrap();
    (text, v)
}

/// The directory's entries, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn message(e: Error) -> String {
    match e {
        Error::InvalidArgument(m) => m,
        other => panic!("expected InvalidArgument, found {other:?}"),
    }
}

fn with_dtype(dtype: HfDtype) -> HfExport {
    HfExport {
        dtype,
        ..HfExport::default()
    }
}

// ---- --format hf ----

#[test]
fn every_tensor_holds_the_bytes_the_bundle_defines_in_each_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (Family::Llama, false, QuantParams::default()),
        (Family::Bitnet, true, QuantParams::default()),
        (
            Family::Llama,
            true,
            QuantParams {
                granularity: Granularity::Group(5),
                encoding: Encoding::Trit2,
                ..QuantParams::default()
            },
        ),
        (Family::Bitnet, false, per_tensor(Encoding::Trit5)),
    ];
    for (k, (family, tied, params)) in cases.into_iter().enumerate() {
        let s = spec(family, tied);
        let dir = decoder_bundle(&tmp, &format!("b{k}"), &s, params, None, None, vec![]);
        let b = Bundle::open(&dir).unwrap();
        for dtype in [HfDtype::F16, HfDtype::F32, HfDtype::Bf16] {
            let out = tmp.path().join(format!("hf{k}-{}", dtype.name()));
            let summary = export_hf(&b, &out, &with_dtype(dtype)).unwrap();
            let read = read_weights(&out);
            let names: Vec<String> = s.tensors().into_iter().map(|(n, _)| n).collect();
            assert_eq!(
                read.keys().cloned().collect::<BTreeSet<_>>(),
                names.iter().cloned().collect::<BTreeSet<_>>()
            );
            assert_eq!((summary.tensors, summary.shards), (names.len(), 1));
            assert_eq!(entries(&out), ["config.json", "model.safetensors"]);
            for (name, shape) in s.tensors() {
                let r = &read[&name];
                assert_eq!(r.shape, shape, "{name}");
                let f32s = expected_f32(&b, &name);
                let (st, expected) = match dtype {
                    HfDtype::F16 => (StDtype::F16, b.fp16_bytes(&name).unwrap().to_vec()),
                    HfDtype::F32 => (StDtype::F32, f32_bytes(&f32s)),
                    HfDtype::Bf16 => (
                        StDtype::BF16,
                        f32s.iter()
                            .flat_map(|&v| bf16_rne(v).to_le_bytes())
                            .collect(),
                    ),
                };
                assert_eq!(r.dtype, st, "{name}");
                assert_eq!(r.data, expected, "{name} {}", dtype.name());
                if dtype == HfDtype::F16 {
                    // The FP16 file is f16_rne of those same f32 values (rules 5.2, 5.3).
                    let from_f32: Vec<u8> = f32s
                        .iter()
                        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                        .collect();
                    assert_eq!(r.data, from_f32, "{name}");
                }
            }
            let total: u64 = read.values().map(|r| r.data.len() as u64).sum();
            assert_eq!(summary.total_size, total);
            let size = std::fs::metadata(out.join("model.safetensors"))
                .unwrap()
                .len();
            assert!(summary
                .files
                .contains(&("model.safetensors".to_string(), size)));
            // The crate's own model-directory reader takes it as the decoder it came from.
            let model = HfModel::open(&out).unwrap();
            assert_eq!(model.spec(), b.decoder().unwrap());
            assert_eq!(model.tensors().len(), names.len());
        }
    }
}

#[test]
fn bf16_is_rounded_to_nearest_even() {
    // Ties: 1 + 2^-8 (exactly between 1 and 1 + 2^-7) goes down to the even 1.0; 1 + 3 * 2^-8
    // goes up to the even 1 + 2^-6; above a tie rounds up, below down; signs are kept.
    for (bits, expected) in [
        (0x3f80_8000u32, 0x3f80u16),
        (0x3f81_8000, 0x3f82),
        (0x3f80_8001, 0x3f81),
        (0x3f80_7fff, 0x3f80),
        (0xbf81_8000, 0xbf82),
        (0x8000_0000, 0x8000),
        (0x7f7f_ffff, 0x7f80),
    ] {
        let v = f32::from_bits(bits);
        assert_eq!(bf16::from_f32(v).to_bits(), expected, "{bits:#x}");
        assert_eq!(bf16_rne(v), expected, "{bits:#x}");
    }
    for v in common::values(3, 10_000) {
        assert_eq!(bf16::from_f32(v * 37.0).to_bits(), bf16_rne(v * 37.0));
    }
}

#[test]
fn config_json_follows_the_table_of_section_18_4() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, tied) in [(Family::Llama, false), (Family::Bitnet, true)] {
        let s = DecoderSpec {
            rms_norm_eps: 1e-6,
            rope_theta: 500000.0,
            ..spec(family, tied)
        };
        let dir = decoder_bundle(
            &tmp,
            family.name(),
            &s,
            QuantParams::default(),
            None,
            None,
            vec![],
        );
        let b = Bundle::open(&dir).unwrap();
        for dtype in [HfDtype::F16, HfDtype::Bf16, HfDtype::F32] {
            let out = tmp
                .path()
                .join(format!("{}-{}", family.name(), dtype.name()));
            let options = HfExport {
                dtype,
                max_position_embeddings: 4096,
                ..HfExport::default()
            };
            export_hf(&b, &out, &options).unwrap();
            let (text, c) = config(&out);
            let (arch, act) = match family {
                Family::Llama => ("LlamaForCausalLM", "silu"),
                Family::Bitnet => ("BitNetForCausalLM", "relu2"),
            };
            let keys = [
                "architectures",
                "model_type",
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "rms_norm_eps",
                "rope_theta",
                "tie_word_embeddings",
                "hidden_act",
                "attention_bias",
                "mlp_bias",
                "max_position_embeddings",
                "bos_token_id",
                "eos_token_id",
                "pad_token_id",
                "torch_dtype",
            ];
            // Exactly these keys, in this order, pretty-printed, with a trailing newline.
            assert_eq!(c.as_object().unwrap().len(), keys.len(), "{text}");
            let at: Vec<usize> = keys
                .iter()
                .map(|k| {
                    text.find(&format!("\n  \"{k}\": "))
                        .unwrap_or_else(|| panic!("{k}"))
                })
                .collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
            assert!(text.starts_with("{\n  \"architectures\": [\n") && text.ends_with("}\n"));
            assert_eq!(c["architectures"], serde_json::json!([arch]));
            assert_eq!(c["model_type"], family.name());
            for (k, v) in [
                ("vocab_size", s.vocab_size),
                ("hidden_size", s.hidden_size),
                ("intermediate_size", s.intermediate_size),
                ("num_hidden_layers", s.num_hidden_layers),
                ("num_attention_heads", s.num_attention_heads),
                ("num_key_value_heads", s.num_key_value_heads),
                ("head_dim", s.head_dim),
            ] {
                assert_eq!(c[k].as_u64(), Some(v as u64), "{k}");
            }
            // The manifest's f32 values, written as the manifest writes them (the shortest
            // decimal that reads back as the same f32).
            let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
            for (k, v) in [("rms_norm_eps", 1e-6f32), ("rope_theta", 500000.0f32)] {
                assert_eq!(c[k].as_f64().unwrap() as f32, v, "{k}");
                let line = |t: &str| {
                    let start = t.find(&format!("\"{k}\": ")).unwrap();
                    t[start..]
                        .lines()
                        .next()
                        .unwrap()
                        .trim_end_matches(',')
                        .to_string()
                };
                assert_eq!(line(&text), line(&manifest), "{k}");
            }
            assert_eq!(c["tie_word_embeddings"], tied);
            assert_eq!(c["hidden_act"], act);
            assert_eq!(c["attention_bias"], false);
            assert_eq!(c["mlp_bias"], false);
            assert_eq!(c["max_position_embeddings"], 4096);
            for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
                assert_eq!(c[k], Value::Null, "{k}: no generation_config.json");
            }
            assert_eq!(c["torch_dtype"], dtype.torch_dtype());
            assert!(c.get("quantization_config").is_none());
            // transformers' defaults when not given.
            if dtype == HfDtype::F16 {
                let out = tmp.path().join(format!("{}-default", family.name()));
                export_hf(&b, &out, &HfExport::default()).unwrap();
                assert_eq!(config(&out).1["max_position_embeddings"], 2048);
            }
        }
    }
}

#[test]
fn assets_are_carried_byte_for_byte_and_give_the_token_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Llama, true);
    let tokenizer = std::fs::read("fixtures/tokenizer/tokenizer.json").unwrap();
    // Not pretty, several end tokens: copied as it is, ids taken as written.
    let generation = br#"{"bos_token_id":1,"eos_token_id":[2, 7],"do_sample":false}"#.to_vec();
    let assets = vec![
        AssetFile {
            name: "tokenizer.json".into(),
            bytes: tokenizer.clone(),
        },
        AssetFile {
            name: "generation_config.json".into(),
            bytes: generation.clone(),
        },
    ];
    let dir = decoder_bundle(&tmp, "b", &s, QuantParams::default(), None, None, assets);
    let b = Bundle::open(&dir).unwrap();
    let out = tmp.path().join("hf");
    let summary = export_hf(&b, &out, &HfExport::default()).unwrap();
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        tokenizer
    );
    assert_eq!(
        std::fs::read(out.join("generation_config.json")).unwrap(),
        generation
    );
    assert_eq!(
        entries(&out),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    let names: Vec<&str> = summary.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.json",
            "tokenizer.json",
            "generation_config.json",
            "model.safetensors"
        ]
    );
    for (name, size) in &summary.files {
        assert_eq!(
            std::fs::metadata(out.join(name)).unwrap().len(),
            *size,
            "{name}"
        );
    }
    let c = config(&out).1;
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], serde_json::json!([2, 7]));
    assert_eq!(c["pad_token_id"], Value::Null);

    // A generation_config.json whose ids are not ids is refused (the ids would be guessed).
    let assets = vec![AssetFile {
        name: "generation_config.json".into(),
        bytes: br#"{"eos_token_id": "</s>"}"#.to_vec(),
    }];
    let dir = decoder_bundle(&tmp, "bad", &s, QuantParams::default(), None, None, assets);
    let b = Bundle::open(&dir).unwrap();
    let m = message(export_hf(&b, &tmp.path().join("hf-bad"), &HfExport::default()).unwrap_err());
    assert!(
        m.contains("generation_config.json") && m.contains("eos_token_id"),
        "{m}"
    );
    assert!(!tmp.path().join("hf-bad").exists());
}

#[test]
fn a_small_shard_size_gives_shards_filled_in_order_and_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Bitnet, false);
    let dir = decoder_bundle(&tmp, "b", &s, QuantParams::default(), None, None, vec![]);
    let b = Bundle::open(&dir).unwrap();
    for (dtype, max) in [
        (HfDtype::F16, 1000u64),
        (HfDtype::F32, 4000),
        (HfDtype::Bf16, 1),
    ] {
        let out = tmp.path().join(format!("hf-{}", dtype.name()));
        let options = HfExport {
            dtype,
            max_shard_size: max,
            ..HfExport::default()
        };
        let summary = export_hf(&b, &out, &options).unwrap();
        let read = read_weights(&out);
        let order: Vec<(String, u64)> = s
            .tensors()
            .into_iter()
            .map(|(n, _)| {
                let len = read[&n].data.len() as u64;
                (n, len)
            })
            .collect();
        let n = summary.shards;
        assert!(n > 2, "{n} shards");
        assert!(!out.join("model.safetensors").exists());
        let shard = |i: usize| format!("model-{i:05}-of-{n:05}.safetensors");
        let mut expected_entries: Vec<String> = (1..=n).map(shard).collect();
        expected_entries.extend(["config.json".into(), "model.safetensors.index.json".into()]);
        expected_entries.sort();
        assert_eq!(entries(&out), expected_entries);

        // The index: the total of the tensors' data, every tensor mapped to its shard.
        let text = std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap();
        assert!(
            text.starts_with("{\n  \"metadata\": {\n    \"total_size\": ") && text.ends_with("}\n")
        );
        let idx = index(&out);
        let total: u64 = order.iter().map(|(_, l)| l).sum();
        assert_eq!(idx["metadata"]["total_size"].as_u64(), Some(total));
        assert_eq!(summary.total_size, total);
        let map = idx["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), order.len());
        for (name, r) in &read {
            assert_eq!(map[name], r.file.as_str(), "{name}");
        }
        // Sorted keys, as transformers writes them.
        let at: Vec<usize> = map
            .keys()
            .map(|k| text.find(&format!("\"{k}\": ")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]));

        // Filled in rule 2.14's order: shard numbers never decrease along it, each shard stays
        // within the size unless it holds one tensor, and each new shard was begun because its
        // first tensor did not fit in the previous one.
        let mut shards: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut last = 1;
        for (name, len) in &order {
            let file = &read[name].file;
            let i: usize = file[6..11].parse().unwrap();
            assert!(
                i == last || i == last + 1,
                "{name} in {file} after shard {last}"
            );
            last = i;
            shards[i - 1].push(*len);
        }
        for (i, sizes) in shards.iter().enumerate() {
            let sum: u64 = sizes.iter().sum();
            assert!(sum <= max || sizes.len() == 1, "shard {} {sizes:?}", i + 1);
            if i > 0 {
                let before: u64 = shards[i - 1].iter().sum();
                assert!(before + sizes[0] > max, "shard {} began too early", i + 1);
            }
        }
        if dtype == HfDtype::F16 {
            // The embedding (29 x 24 F16 = 1392 bytes) is larger than 1000: alone in its shard.
            assert_eq!(read["model.embed_tokens.weight"].file, shard(1));
            assert_eq!(shards[0].len(), 1);
        }
        for (name, size) in &summary.files {
            assert_eq!(
                std::fs::metadata(out.join(name)).unwrap().len(),
                *size,
                "{name}"
            );
        }
        // The crate's own reader of sharded model directories takes it.
        assert_eq!(HfModel::open(&out).unwrap().spec(), b.decoder().unwrap());
    }
    // At exactly the total size, one file.
    let total = export_hf(&b, &tmp.path().join("probe"), &HfExport::default())
        .unwrap()
        .total_size;
    let out = tmp.path().join("exact");
    let options = HfExport {
        max_shard_size: total,
        ..HfExport::default()
    };
    assert_eq!(export_hf(&b, &out, &options).unwrap().shards, 1);
    assert!(out.join("model.safetensors").exists());
    let options = HfExport {
        max_shard_size: total - 1,
        ..HfExport::default()
    };
    assert_eq!(
        export_hf(&b, &tmp.path().join("split"), &options)
            .unwrap()
            .shards,
        2
    );
}

#[test]
fn a_chain_of_layers_is_refused_pointing_to_the_safetensors_export() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Bundle::open(common::bundle(&tmp)).unwrap();
    let out = tmp.path().join("hf");
    let m = message(export_hf(&b, &out, &HfExport::default()).unwrap_err());
    assert!(
        m.contains("chain-of-layers") && m.contains("bundle export --format safetensors"),
        "{m}"
    );
    let m = message(export_hf_bitnet(&b, &out, &HfExport::default()).unwrap_err());
    assert!(m.contains("bundle export --format safetensors"), "{m}");
    assert!(!out.exists());
}

#[test]
fn an_existing_destination_is_replaced_only_when_forced_and_only_if_a_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Llama, true);
    let dir = decoder_bundle(&tmp, "b", &s, QuantParams::default(), None, None, vec![]);
    let b = Bundle::open(&dir).unwrap();
    let out = tmp.path().join("hf");
    export_hf(&b, &out, &HfExport::default()).unwrap();
    let again = export_hf(&b, &out, &with_dtype(HfDtype::F32)).unwrap_err();
    assert!(
        matches!(again, Error::DestinationExists { .. }),
        "{again:?}"
    );
    assert_eq!(config(&out).1["torch_dtype"], "float16");
    // Forced: the previous export (a model directory) is replaced, nothing of it is left.
    std::fs::write(out.join("stale.txt"), b"old").unwrap();
    let forced = HfExport {
        dtype: HfDtype::F32,
        force: true,
        ..HfExport::default()
    };
    export_hf(&b, &out, &forced).unwrap();
    assert_eq!(config(&out).1["torch_dtype"], "float32");
    assert_eq!(entries(&out), ["config.json", "model.safetensors"]);
    // An empty directory is replaced too.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    export_hf(&b, &empty, &forced).unwrap();
    assert!(empty.join("config.json").exists());
    // Never a bundle (not even the one exported), nor a directory that is not a model's.
    for (dest, what) in [
        (dir.clone(), "holds the bundle"),
        (tmp.path().to_path_buf(), "holds the bundle"),
    ] {
        let m = message(export_hf(&b, &dest, &forced).unwrap_err());
        assert!(m.contains(what), "{m}");
    }
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"keep").unwrap();
    let m = message(export_hf(&b, &other, &forced).unwrap_err());
    assert!(m.contains("not a model directory"), "{m}");
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"keep");
    Bundle::open(&dir).unwrap();
    // No staging directory is left behind.
    assert!(
        entries(tmp.path()).iter().all(|e| !e.starts_with('.')),
        "{:?}",
        entries(tmp.path())
    );
}

#[test]
fn an_invalid_packed_byte_is_refused_and_nothing_is_left_behind() {
    // Opening reads headers only: a packed byte 0xff (not trit5, rule 4.3) is found when the
    // trits are decoded, after staging began.
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Llama, true);
    let dir = decoder_bundle(
        &tmp,
        "b",
        &s,
        per_tensor(Encoding::Trit5),
        None,
        None,
        vec![],
    );
    let path = dir.join("ternary.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let (n, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let name = "model.layers.1.mlp.up_proj.weight";
    let start = meta.info(name).unwrap().data_offsets.0;
    bytes[8 + n + start] = 0xff;
    std::fs::write(&path, bytes).unwrap();
    let b = Bundle::open(&dir).unwrap();
    for (k, result) in [
        export_hf(&b, &tmp.path().join("out"), &with_dtype(HfDtype::F32)),
        export_hf(&b, &tmp.path().join("out"), &with_dtype(HfDtype::Bf16)),
        export_hf_bitnet(&b, &tmp.path().join("out"), &HfExport::default()),
    ]
    .into_iter()
    .enumerate()
    {
        let e = result.unwrap_err();
        let v = e.violation().unwrap_or_else(|| panic!("{k}: {e:?}"));
        assert_eq!(v.rule.number(), "4.3", "{k}: {e}");
        assert_eq!(v.tensor.as_deref(), Some(name), "{k}: {e}");
    }
    assert_eq!(entries(tmp.path()), ["b"]);
}

// ---- --format hf-bitnet ----

#[test]
fn hf_bitnet_packs_each_projection_with_its_scale() {
    let tmp = tempfile::tempdir().unwrap();
    for (k, (family, tied, encoding)) in [
        (Family::Bitnet, true, Encoding::Trit5),
        (Family::Llama, false, Encoding::Trit2),
    ]
    .into_iter()
    .enumerate()
    {
        let s = spec(family, tied);
        // Layer 1's k_proj and up_proj stay float: they are listed as not converted.
        let mut quantize = projections(&s);
        for kept in [
            "model.layers.1.self_attn.k_proj.weight",
            "model.layers.1.mlp.up_proj.weight",
        ] {
            quantize.remove(kept);
        }
        let dir = decoder_bundle(
            &tmp,
            &format!("b{k}"),
            &s,
            per_tensor(encoding),
            Some(quantize.clone()),
            None,
            vec![],
        );
        let b = Bundle::open(&dir).unwrap();
        let out = tmp.path().join(format!("bitnet{k}"));
        let summary = export_hf_bitnet(&b, &out, &HfExport::default()).unwrap();
        let read = read_weights(&out);
        assert_eq!(summary.tensors, s.tensors().len() + quantize.len());
        assert_eq!(read.len(), summary.tensors);
        for (name, shape) in s.tensors() {
            let r = &read[&name];
            match b.packed(&name) {
                Some(p) => {
                    assert_eq!(
                        (r.dtype, r.shape.clone()),
                        (StDtype::U8, vec![shape[0] / 4, shape[1]]),
                        "{name}"
                    );
                    let unpacked = unpack_weights(&r.data, shape[0], shape[1]).unwrap();
                    assert_eq!(unpacked, bundle_trits(&p), "{name}");
                    let scale = &read[&format!("{name}_scale")];
                    assert_eq!((scale.dtype, scale.shape.clone()), (StDtype::F32, vec![1]));
                    assert_eq!(scale.data, p.scale_bytes, "{name}");
                    // Loaded in float16: t × f16(s) is the bundle's FP16 value, bit for bit.
                    let s16 = f16::from_f32(p.scales()[0]);
                    let loaded: Vec<u8> = unpacked
                        .iter()
                        .flat_map(|&t| {
                            let v = match t {
                                1 => s16,
                                -1 => -s16,
                                _ => f16::ZERO,
                            };
                            v.to_le_bytes()
                        })
                        .collect();
                    assert_eq!(loaded, b.fp16_bytes(&name).unwrap(), "{name}");
                }
                None => {
                    let shape: Vec<usize> = shape.clone();
                    assert_eq!((r.dtype, r.shape.clone()), (StDtype::F32, shape), "{name}");
                    assert_eq!(r.data, b.passthrough_bytes(&name).unwrap(), "{name}");
                    assert!(!read.contains_key(&format!("{name}_scale")));
                }
            }
        }
        let (text, c) = config(&out);
        assert_eq!(c["torch_dtype"], "float16");
        assert_eq!(
            c["quantization_config"],
            serde_json::json!({
                "quant_method": "bitnet",
                "linear_class": "autobitlinear",
                "quantization_mode": "offline",
                "modules_to_not_convert": [
                    "lm_head",
                    "model.layers.1.self_attn.k_proj",
                    "model.layers.1.mlp.up_proj"
                ]
            })
        );
        assert!(
            text.find("\"torch_dtype\"").unwrap() < text.find("\"quantization_config\"").unwrap()
        );
        // Sharded too.
        let out = tmp.path().join(format!("bitnet{k}-sharded"));
        let options = HfExport {
            max_shard_size: 500,
            ..HfExport::default()
        };
        let sharded = export_hf_bitnet(&b, &out, &options).unwrap();
        assert!(sharded.shards > 1);
        assert_eq!(
            read_weights(&out)
                .into_iter()
                .map(|(n, r)| (n, r.data))
                .collect::<BTreeMap<_, _>>(),
            read.into_iter()
                .map(|(n, r)| (n, r.data))
                .collect::<BTreeMap<_, _>>()
        );
    }
}

#[test]
fn hf_bitnet_takes_equal_channel_scales_as_the_tensor_scale() {
    // Already-ternary weights (±a or 0, one a per tensor) keep a as every row's scale (section 7
    // step 0): channel scales that are all equal fit one weight_scale.
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Bitnet, true);
    let source = model_with(&s, |name, v| {
        if is_projection(name) {
            let a = 0.25 + (name.len() % 7) as f32 / 16.0;
            v.iter_mut().for_each(|x| {
                *x = if *x > 0.3 {
                    a
                } else if *x < -0.3 {
                    -a
                } else {
                    0.0
                }
            });
        }
    });
    let dir = decoder_bundle(
        &tmp,
        "b",
        &s,
        QuantParams::default(),
        None,
        Some(source),
        vec![],
    );
    let b = Bundle::open(&dir).unwrap();
    let out = tmp.path().join("bitnet");
    export_hf_bitnet(&b, &out, &HfExport::default()).unwrap();
    let read = read_weights(&out);
    for p in b.quantized() {
        let scales = p.scales();
        assert_eq!(scales.len(), p.rows);
        let scale = &read[&format!("{}_scale", p.spec.name)];
        assert_eq!(scale.data, scales[0].to_le_bytes(), "{}", p.spec.name);
    }
    // Read back, the bundle has per-tensor scales (another ternary.safetensors), and the same
    // FP16 model.
    let back = tmp.path().join("back");
    bundle_from_hf_bitnet(&out, Encoding::Trit5, &back);
    assert_eq!(
        std::fs::read(back.join("fp16.safetensors")).unwrap(),
        std::fs::read(dir.join("fp16.safetensors")).unwrap()
    );
}

#[test]
fn hf_bitnet_refuses_what_the_format_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Bitnet, false);
    let out = tmp.path().join("bitnet");

    // Channel scales that differ.
    let dir = decoder_bundle(
        &tmp,
        "channel",
        &s,
        QuantParams::default(),
        None,
        None,
        vec![],
    );
    let b = Bundle::open(&dir).unwrap();
    let m = message(export_hf_bitnet(&b, &out, &HfExport::default()).unwrap_err());
    assert!(
        m.contains("model.layers.0.self_attn.q_proj.weight")
            && m.contains("only per-tensor scales fit the format")
            && m.contains("channel"),
        "{m}"
    );
    // Group scales that differ.
    let group = QuantParams {
        granularity: Granularity::Group(8),
        ..QuantParams::default()
    };
    let dir = decoder_bundle(&tmp, "group", &s, group, None, None, vec![]);
    let b = Bundle::open(&dir).unwrap();
    let m = message(export_hf_bitnet(&b, &out, &HfExport::default()).unwrap_err());
    assert!(
        m.contains("only per-tensor scales fit the format") && m.contains("group"),
        "{m}"
    );

    // A projection of 42 rows (intermediate size 42): not four rows per byte.
    let s42 = DecoderSpec {
        intermediate_size: 42,
        ..s.clone()
    };
    let dir = decoder_bundle(
        &tmp,
        "rows",
        &s42,
        per_tensor(Encoding::Trit5),
        None,
        None,
        vec![],
    );
    let b = Bundle::open(&dir).unwrap();
    let m = message(export_hf_bitnet(&b, &out, &HfExport::default()).unwrap_err());
    assert!(
        m.contains("model.layers.0.mlp.gate_proj.weight")
            && m.contains("multiple of 4")
            && m.contains("42 rows"),
        "{m}"
    );
    // ... which --format hf writes.
    export_hf(&b, &tmp.path().join("hf42"), &HfExport::default()).unwrap();

    // A quantized embedding, and a quantized head.
    for extra in ["model.embed_tokens.weight", "lm_head.weight"] {
        let mut quantize = projections(&s);
        quantize.insert(extra.to_string());
        let name = format!("q-{extra}");
        let dir = decoder_bundle(
            &tmp,
            &name,
            &s,
            per_tensor(Encoding::Trit5),
            Some(quantize),
            None,
            vec![],
        );
        let b = Bundle::open(&dir).unwrap();
        let m = message(export_hf_bitnet(&b, &out, &HfExport::default()).unwrap_err());
        assert!(m.contains(extra) && m.contains("seven projections"), "{m}");
    }

    // dtypes are fixed.
    let dir = decoder_bundle(
        &tmp,
        "tensor",
        &s,
        per_tensor(Encoding::Trit5),
        None,
        None,
        vec![],
    );
    let b = Bundle::open(&dir).unwrap();
    let m = message(export_hf_bitnet(&b, &out, &with_dtype(HfDtype::F32)).unwrap_err());
    assert!(m.contains("--dtype f32"), "{m}");
    assert!(!out.exists());
    assert!(entries(tmp.path()).iter().all(|e| !e.starts_with('.')));
}

// ---- the round trip ----

/// A bundle in `dest` of the packed BitNet checkpoint `hf`, its trits and scales as given
/// (`encoding`, per-tensor scales, spec section 18.2); the checkpoint as read.
fn bundle_from_hf_bitnet(hf: &Path, encoding: Encoding, dest: &Path) -> PackedBitnet {
    let p = PackedBitnet::open(hf).unwrap();
    let plan = BundlePlan {
        model: ModelSpec::of_decoder(p.spec()),
        params: QuantParams {
            granularity: Granularity::Tensor,
            ..per_tensor(encoding)
        },
        quantize: p.converted().clone(),
        given: Some(p.quantization().record()),
    };
    write_bundle(dest, &p, &plan, &WriteOptions::default()).unwrap();
    p
}

#[test]
fn bundle_to_hf_bitnet_and_back_gives_the_same_model_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (Family::Bitnet, true, Encoding::Trit5, false, u64::MAX),
        (Family::Llama, false, Encoding::Trit2, false, 2000),
        (Family::Bitnet, false, Encoding::Trit5, true, u64::MAX),
    ];
    for (k, (family, tied, encoding, partial, shard)) in cases.into_iter().enumerate() {
        let s = spec(family, tied);
        let mut quantize = projections(&s);
        if partial {
            quantize.remove("model.layers.0.mlp.down_proj.weight");
        }
        let original = decoder_bundle(
            &tmp,
            &format!("orig{k}"),
            &s,
            per_tensor(encoding),
            Some(quantize.clone()),
            None,
            vec![],
        );
        let b = Bundle::open(&original).unwrap();
        let hf = tmp.path().join(format!("hf{k}"));
        let options = HfExport {
            max_shard_size: shard,
            ..HfExport::default()
        };
        export_hf_bitnet(&b, &hf, &options).unwrap();

        let back = tmp.path().join(format!("back{k}"));
        let p = bundle_from_hf_bitnet(&hf, encoding, &back);
        assert_eq!(p.spec(), b.decoder().unwrap());
        assert_eq!(p.converted(), &quantize);
        for file in ["ternary.safetensors", "fp16.safetensors"] {
            let a = std::fs::read(original.join(file)).unwrap();
            let z = std::fs::read(back.join(file)).unwrap();
            assert!(a == z, "case {k}: {file} differs after the round trip");
        }
        // Same model, tensors and statistics; only how the trits were made differs.
        let (mo, mb) = (
            Bundle::open(&original).unwrap(),
            Bundle::open(&back).unwrap(),
        );
        assert_eq!(mo.manifest().model, mb.manifest().model);
        assert_eq!(mo.manifest().tensors, mb.manifest().tensors);
        let q = &mb.manifest().quantization;
        assert_eq!(q.method, "given");
        let source = q.source.as_ref().unwrap();
        assert_eq!(
            (source.format.as_str(), source.scale_convention.as_str()),
            ("hf-bitnet", "multiply")
        );
        // The source holds nothing else.
        assert_eq!(
            p.tensors().len(),
            s.tensors().len(),
            "{:?}",
            p.tensors().iter().map(|t| &t.name).collect::<Vec<_>>()
        );
    }
}
