//! `bundle create --from` on every kind of source it reads (spec sections 7 step 0, 7.1, 7.2,
//! 18.1 to 18.3 and 18.5), through the library (`CreateInputs`) and through the `bundle`
//! binary: the quantizing stage's handoff of trits with `quantization_metadata.json` (a chain
//! of layers and a model directory), Hugging Face packed BitNet directories of both scale
//! conventions, BF16 masters with online BitNet quantization, quantization-aware checkpoints
//! (effective and latent weights, `--original-forward`), the refusals of bad input, and the
//! tokenizer files a model directory carries.
//!
//! Every expectation is computed here from the files the test wrote (trits, scales, f16
//! rounding, WeightQuant, a dense f64 forward pass), not taken from the writer.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use half::{bf16, f16};
use ndarray::Array2;
use safetensors::tensor::{serialize_to_file, TensorView};
use safetensors::Dtype as StDtype;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use ternary_bundle::create::{CreateInputs, CreateRequest, Settings};
use ternary_bundle::format::manifest::OriginalSpec;
use ternary_bundle::hf::bitnet::pack_weights;
use ternary_bundle::model::decoder::{is_projection, DecoderSpec, Family};
use ternary_bundle::model::original::OriginalModel;
use ternary_bundle::read::checks::check_all;
use ternary_bundle::source::hf::{Dtypes, HfModel};
use ternary_bundle::{Bundle, Granularity, WriteReport};

use common::{bundle_trits, scale_at, values};

// ---- files: safetensors, JSON, digests ----

/// One tensor to write: name, dtype, shape and little-endian bytes.
#[derive(Debug, Clone)]
struct Raw {
    name: String,
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_raw(name: &str, shape: &[usize], v: &[f32]) -> Raw {
    Raw {
        name: name.into(),
        dtype: StDtype::F32,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// BF16 of `v` (rounded to nearest even).
fn bf16_raw(name: &str, shape: &[usize], v: &[f32]) -> Raw {
    Raw {
        name: name.into(),
        dtype: StDtype::BF16,
        shape: shape.to_vec(),
        bytes: v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
    }
}

fn f16_raw(name: &str, shape: &[usize], v: &[f32]) -> Raw {
    Raw {
        name: name.into(),
        dtype: StDtype::F16,
        shape: shape.to_vec(),
        bytes: v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
    }
}

fn i8_raw(name: &str, shape: &[usize], t: &[i8]) -> Raw {
    Raw {
        name: name.into(),
        dtype: StDtype::I8,
        shape: shape.to_vec(),
        bytes: t.iter().map(|&x| x as u8).collect(),
    }
}

fn i32_raw(name: &str, shape: &[usize], t: &[i8]) -> Raw {
    Raw {
        name: name.into(),
        dtype: StDtype::I32,
        shape: shape.to_vec(),
        bytes: t.iter().flat_map(|&x| i32::from(x).to_le_bytes()).collect(),
    }
}

fn i64_raw(name: &str, shape: &[usize], v: &[i64]) -> Raw {
    Raw {
        name: name.into(),
        dtype: StDtype::I64,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn u8_raw(name: &str, shape: &[usize], v: Vec<u8>) -> Raw {
    Raw {
        name: name.into(),
        dtype: StDtype::U8,
        shape: shape.to_vec(),
        bytes: v,
    }
}

/// Writes `tensors` as one safetensors file with Hugging Face's own `safetensors` crate.
fn write_st(path: &Path, tensors: &[Raw]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    serialize_to_file(views, None, path).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_sha(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tokenizer_fixture(name: &str) -> PathBuf {
    root().join("fixtures/tokenizer").join(name)
}

// ---- the bundle binary ----

fn bundle_cmd() -> Command {
    let mut c = Command::cargo_bin("bundle").unwrap();
    c.env_remove("NO_COLOR");
    c
}

fn run(args: &[&str]) -> Output {
    bundle_cmd().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `bundle create ARGS` must succeed.
fn cli_create(args: &[&str]) {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "bundle {all:?}: {}",
        text(&out.stderr)
    );
}

/// `bundle create ARGS` must fail with exit code 1; its standard error.
fn cli_create_fails(args: &[&str]) -> String {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bundle {all:?} should fail with exit code 1: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// `bundle verify DIR --json EXTRA`: the exit code and the report.
fn verify_json(dir: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["verify", s(dir), "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json printed no JSON ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// The check `name` of a verify report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn retention(report: &Value) -> f64 {
    report["metrics"]["phase4_to_5/dequantization_accuracy_retention"]
        .as_f64()
        .unwrap_or_else(|| panic!("no retention in {:#}", report["metrics"]))
}

// ---- the library's create ----

fn request(from: &Path) -> CreateRequest {
    CreateRequest {
        from: from.to_path_buf(),
        ..CreateRequest::default()
    }
}

/// What `bundle create` does: open the sources, then write the bundle to `dest`.
fn create(req: &CreateRequest, dest: &Path) -> ternary_bundle::Result<WriteReport> {
    CreateInputs::open(req)?.write(dest, false, None, &|_| {})
}

/// The error `create` must give, as printed.
fn create_error(req: &CreateRequest, dest: &Path) -> String {
    match create(req, dest) {
        Ok(_) => panic!("create {:?} should fail", req.from),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `message` contains every one of `parts`.
fn assert_names(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "the error lacks {p:?}: {message}");
    }
}

// ---- what a bundle holds, read back independently of the writer ----

/// f16_rne(t × scale) as bits (rule 5.2): +0.0 for t = 0, the negated f16 of the scale for -1.
fn fp16_bits(t: i8, scale: f32) -> u16 {
    match t {
        0 => 0,
        1 => f16::from_f32(scale).to_bits(),
        _ => (-f16::from_f32(scale)).to_bits(),
    }
}

/// Asserts that quantized tensor `name` of `b` holds exactly `trits` with scale(r, c) =
/// `scale(r, c)` bit for bit, that its FP16 values are f16_rne(t × scale(r, c)) bit for bit and
/// that the manifest's `zeros` counts its zero trits.
fn assert_given(b: &Bundle, name: &str, trits: &[i8], scale: impl Fn(usize, usize) -> f32) {
    let p = b
        .packed(name)
        .unwrap_or_else(|| panic!("{name} is not quantized in the bundle"));
    assert_eq!(bundle_trits(&p), trits, "{name}: trits");
    let scales = p.scales();
    let fp16 = u16s(b.fp16_bytes(name).unwrap());
    for r in 0..p.rows {
        for c in 0..p.cols {
            let want = scale(r, c);
            let got = scale_at(&p, &scales, r, c);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{name}: scale({r}, {c}) is {got}, given {want}"
            );
            let t = trits[r * p.cols + c];
            assert_eq!(
                fp16[r * p.cols + c],
                fp16_bits(t, want),
                "{name}: fp16({r}, {c}) of trit {t} and scale {want}"
            );
        }
    }
    let zeros = trits.iter().filter(|&&t| t == 0).count() as u64;
    assert_eq!(p.spec.zeros, Some(zeros), "{name}: zeros");
}

/// Asserts that non-quantized tensor `name` of `b` holds `v` as F32 and f16_rne(v) as F16.
fn assert_float(b: &Bundle, name: &str, v: &[f32]) {
    let stored = b
        .passthrough_bytes(name)
        .unwrap_or_else(|| panic!("{name} should be kept in float"));
    assert_eq!(
        f32s(stored).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "{name}: F32 values"
    );
    let want: Vec<u16> = v.iter().map(|x| f16::from_f32(*x).to_bits()).collect();
    assert_eq!(
        u16s(b.fp16_bytes(name).unwrap()),
        want,
        "{name}: F16 values"
    );
}

/// The names of the bundle's quantized tensors.
fn quantized_names(b: &Bundle) -> BTreeSet<String> {
    b.quantized().map(|p| p.spec.name.clone()).collect()
}

/// `original_predictions` of the bundle's validation set, if it holds them.
fn stored_predictions(b: &Bundle) -> Option<Vec<i64>> {
    b.validation()
        .expect("a validation set")
        .original_predictions
        .map(i64s)
}

// ---- trits, scales and quantizers computed here ----

/// Pseudo-random trits with about a third zeros.
fn random_trits(seed: u64, n: usize) -> Vec<i8> {
    values(seed, n)
        .iter()
        .map(|v| {
            if *v > 0.33 {
                1
            } else if *v < -0.33 {
                -1
            } else {
                0
            }
        })
        .collect()
}

/// Pseudo-random scales in [0.01, 0.11).
fn random_scales(seed: u64, n: usize) -> Vec<f32> {
    values(seed, n).iter().map(|v| 0.06 + 0.05 * v).collect()
}

/// Round-clamp of each row of `w` by its absmean (how a stage makes its trits).
fn ternarize_rows(w: &[f32], cols: usize) -> Vec<i8> {
    w.chunks(cols)
        .flat_map(|row| {
            let gamma = row.iter().map(|x| x.abs()).sum::<f32>() / cols as f32;
            row.iter()
                .map(|x| (x / gamma).round_ties_even().clamp(-1.0, 1.0) as i8)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// transformers' `WeightQuant` of one tensor (spec 18.3), computed here: m = max(mean |W|,
/// 1e-5) with the mean summed in f64 in index order and rounded to f32, s = 1 / m in f32, each
/// trit round_half_even(w × s) clamped to [-1, 1]. Returns the trits and m.
fn weight_quant(w: &[f32]) -> (Vec<i8>, f32) {
    let sum = w.iter().fold(0f64, |a, &x| a + f64::from(x.abs()));
    let m = ((sum / w.len() as f64) as f32).max(1e-5);
    let s = 1.0f32 / m;
    let trits = w
        .iter()
        .map(|&x| (x * s).round_ties_even().clamp(-1.0, 1.0) as i8)
        .collect();
    (trits, m)
}

/// A decimal text that rounds to `b` when read as f32 once (spec section 3.2), and to its
/// neighbour `a` when read through f64 first: it lies a hair above the midpoint of `a` and `b`,
/// whose nearest f64 is the midpoint itself, which ties to `a` (even). Returns (text, b).
fn rounded_once_trap(near: f32) -> (String, f32) {
    let a = f32::from_bits(near.to_bits() & !1);
    let b = f32::from_bits(a.to_bits() + 1);
    let mid = (f64::from(a) + f64::from(b)) / 2.0;
    let text = format!("{mid:.60}1");
    assert_eq!(text.parse::<f32>().unwrap(), b);
    assert_eq!(text.parse::<f64>().unwrap() as f32, a);
    (text, b)
}

// ---- chains of layers ----

/// One linear layer of a chain: weight `[rows, cols]` row-major, optional bias.
#[derive(Debug, Clone)]
struct Linear {
    name: &'static str,
    rows: usize,
    cols: usize,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Linear {
    fn weight_name(&self) -> String {
        format!("{}.weight", self.name)
    }

    fn bias_name(&self) -> String {
        format!("{}.bias", self.name)
    }

    /// Its tensors in float (F32).
    fn raws(&self) -> Vec<Raw> {
        let mut out = vec![f32_raw(
            &self.weight_name(),
            &[self.rows, self.cols],
            &self.weight,
        )];
        if let Some(b) = &self.bias {
            out.push(f32_raw(&self.bias_name(), &[self.rows], b));
        }
        out
    }
}

/// The logits of the chain `layers` as `bundle create` infers it (ReLU between layers,
/// identity after the last), computed densely in f64 here, one row per input.
fn chain_logits(layers: &[Linear], inputs: &[f32]) -> Vec<Vec<f64>> {
    let d = layers[0].cols;
    inputs
        .chunks(d)
        .map(|x| {
            let mut h: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            for (k, l) in layers.iter().enumerate() {
                h = (0..l.rows)
                    .map(|r| {
                        let dot: f64 = l.weight[r * l.cols..(r + 1) * l.cols]
                            .iter()
                            .zip(&h)
                            .map(|(&w, &v)| f64::from(w) * v)
                            .sum();
                        let y = dot + l.bias.as_ref().map_or(0.0, |b| f64::from(b[r]));
                        if k + 1 < layers.len() {
                            y.max(0.0)
                        } else {
                            y
                        }
                    })
                    .collect();
            }
            h
        })
        .collect()
}

/// The predictions of the chain `layers` ([`chain_logits`]): the argmax, lowest index on ties.
fn chain_predictions(layers: &[Linear], inputs: &[f32]) -> Vec<i64> {
    chain_logits(layers, inputs)
        .iter()
        .map(|h| {
            let mut best = 0;
            for (i, v) in h.iter().enumerate() {
                if *v > h[best] {
                    best = i;
                }
            }
            best as i64
        })
        .collect()
}

/// A chain's validation file: `inputs` F32 [n, d] from `values(seed)`, labels `i % classes`.
/// Returns the inputs.
fn write_chain_validation(path: &Path, n: usize, d: usize, classes: usize, seed: u64) -> Vec<f32> {
    let inputs = values(seed, n * d);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % classes as i64).collect();
    write_st(
        path,
        &[
            f32_raw("inputs", &[n, d], &inputs),
            i64_raw("labels", &[n], &labels),
        ],
    );
    inputs
}

// ---- the quantizing stage's handoff (spec 18.1) ----

/// One quantized layer of the stage's handoff: its trits, the scale(r, c) the bundle must
/// hold, and the text of its `scales` entry in `quantization_metadata.json`.
#[derive(Debug, Clone)]
struct StageTensor {
    name: String,
    rows: usize,
    cols: usize,
    trits: Vec<i8>,
    /// Row-major `[rows, cols]`: scale(r, c).
    scale: Vec<f32>,
    entry: String,
}

impl StageTensor {
    fn scale(&self, r: usize, c: usize) -> f32 {
        self.scale[r * self.cols + c]
    }
}

/// `quantization_metadata.json` of `tensors` (their entries as written), zero points 0 in
/// both forms, and `extra` top-level members (JSON text, each followed by a comma).
fn metadata_json(tensors: &[StageTensor], extra: &str) -> String {
    let scales: Vec<String> = tensors
        .iter()
        .map(|t| format!("{:?}: {}", t.name, t.entry))
        .collect();
    let zero_points: Vec<String> = tensors
        .iter()
        .enumerate()
        .map(|(k, t)| {
            if k % 2 == 0 {
                format!("{:?}: 0", t.name)
            } else {
                format!("{:?}: {:?}", t.name, vec![0; t.rows])
            }
        })
        .collect();
    format!(
        "{{{extra}\"scales\": {{{}}}, \"zero_points\": {{{}}}, \"quantization_scheme\": \"1.58-bit\", \"sparsity_threshold\": 0.5}}",
        scales.join(", "),
        zero_points.join(", ")
    )
}

/// The files of a quantizing stage's handoff of a chain of layers 8 -> 12 -> 10 -> 6 (ReLU,
/// identity last; a bias on the first layer): the state dict of trits, its metadata, the
/// float original it was quantized from, and a validation set.
struct ChainHandoff {
    trits: PathBuf,
    meta: PathBuf,
    original: PathBuf,
    validation: PathBuf,
    /// The original (float) layers.
    layers: Vec<Linear>,
    /// The quantized weights as the bundle must hold them.
    given: Vec<StageTensor>,
    inputs: Vec<f32>,
}

/// Writes [`ChainHandoff`] into `dir`. The scale forms are mixed: fc1 one per row (a flat list
/// of 12 numbers, one of them a decimal that only rounding once gives right), fc2 a number, fc3
/// a one-element list. fc1 and fc2 are I8 trits, fc3 F16 trits with -0.0 for its zeros.
fn write_chain_handoff(dir: &Path) -> ChainHandoff {
    let dims = [("fc1", 12, 8), ("fc2", 10, 12), ("fc3", 6, 10)];
    let layers: Vec<Linear> = dims
        .iter()
        .enumerate()
        .map(|(k, &(name, rows, cols))| Linear {
            name,
            rows,
            cols,
            weight: values(40 + k as u64, rows * cols),
            bias: (k == 0).then(|| values(50, rows).iter().map(|v| v / 4.0).collect()),
        })
        .collect();
    let (trap_text, trap) = rounded_once_trap(0.02);
    let mut given = Vec::new();
    for (k, l) in layers.iter().enumerate() {
        let trits = ternarize_rows(&l.weight, l.cols);
        let (row_scales, entry): (Vec<f32>, String) = match k {
            0 => {
                let texts: Vec<String> = (0..l.rows)
                    .map(|r| {
                        if r == 0 {
                            trap_text.clone()
                        } else {
                            format!("{:.7}", 0.015 + 0.0013 * r as f64)
                        }
                    })
                    .collect();
                (
                    texts.iter().map(|t| t.parse::<f32>().unwrap()).collect(),
                    format!("[{}]", texts.join(", ")),
                )
            }
            1 => (vec![0.034f32; l.rows], "0.034".into()),
            _ => (vec![0.0517f32; l.rows], "[0.0517]".into()),
        };
        given.push(StageTensor {
            name: l.weight_name(),
            rows: l.rows,
            cols: l.cols,
            trits,
            scale: (0..l.rows * l.cols)
                .map(|i| row_scales[i / l.cols])
                .collect(),
            entry,
        });
    }
    assert_eq!(given[0].scale[0], trap);

    let trits = dir.join("trits.safetensors");
    let mut raws = vec![
        i8_raw("fc1.weight", &[12, 8], &given[0].trits),
        i8_raw("fc2.weight", &[10, 12], &given[1].trits),
        f16_raw(
            "fc3.weight",
            &[6, 10],
            &given[2]
                .trits
                .iter()
                .map(|&t| if t == 0 { -0.0 } else { f32::from(t) })
                .collect::<Vec<_>>(),
        ),
    ];
    raws.push(f32_raw("fc1.bias", &[12], layers[0].bias.as_ref().unwrap()));
    write_st(&trits, &raws);
    let meta = dir.join("quantization_metadata.json");
    std::fs::write(&meta, metadata_json(&given, "")).unwrap();
    let original = dir.join("original.safetensors");
    write_st(
        &original,
        &layers.iter().flat_map(Linear::raws).collect::<Vec<_>>(),
    );
    let validation = dir.join("val.safetensors");
    let inputs = write_chain_validation(&validation, 64, 8, 6, 60);
    ChainHandoff {
        trits,
        meta,
        original,
        validation,
        layers,
        given,
        inputs,
    }
}

// ---- decoders and model directories ----

/// A two-layer decoder whose projection rows and vocabulary are multiples of 4 (transformers'
/// `pack_weights`), with a vocabulary above the fixture tokenizer's 49 ids.
fn small_spec(family: Family, tied: bool) -> DecoderSpec {
    DecoderSpec {
        family,
        vocab_size: 56,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        tie_word_embeddings: tied,
    }
}

/// config.json of `s` in transformers' layout, with `quantization_config` when given.
fn hf_config(s: &DecoderSpec, quantization: Option<Value>) -> String {
    let (arch, act) = match s.family {
        Family::Llama => ("LlamaForCausalLM", "silu"),
        Family::Bitnet => ("BitNetForCausalLM", "relu2"),
    };
    let mut c = json!({
        "architectures": [arch],
        "model_type": s.family.name(),
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.num_hidden_layers,
        "num_attention_heads": s.num_attention_heads,
        "num_key_value_heads": s.num_key_value_heads,
        "head_dim": s.head_dim,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": s.tie_word_embeddings,
        "hidden_act": act,
    });
    if let Some(q) = quantization {
        c["quantization_config"] = q;
    }
    serde_json::to_string_pretty(&c).unwrap()
}

/// Float weights of `s` (random, norms near 1), name -> (shape, values).
fn decoder_weights(s: &DecoderSpec, seed: u64) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    s.tensors()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let mut v = values(seed + k as u64, shape.iter().product());
            if shape.len() == 1 {
                v.iter_mut().for_each(|x| *x = 1.0 + *x / 2.0);
            }
            (name, (shape, v))
        })
        .collect()
}

/// A model directory: `config` as config.json and `tensors` as model.safetensors.
fn write_model_dir(dir: &Path, config: &str, tensors: &[Raw]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    write_st(&dir.join("model.safetensors"), tensors);
}

/// A decoder's validation file: `input_ids` I64 [n, t] of pseudo-random ids below `vocab`.
fn write_token_validation(path: &Path, n: usize, t: usize, vocab: usize, seed: u64) -> Array2<i64> {
    let ids: Vec<i64> = values(seed, n * t)
        .iter()
        .map(|v| (((v + 1.0) / 2.0 * vocab as f32) as i64).min(vocab as i64 - 1))
        .collect();
    write_st(path, &[i64_raw("input_ids", &[n, t], &ids)]);
    Array2::from_shape_vec((n, t), ids).unwrap()
}

/// The seven projections of every layer of `s`.
fn projections(s: &DecoderSpec) -> BTreeSet<String> {
    s.tensors()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| is_projection(n))
        .collect()
}

// ---- 1. the quantizing stage's handoff, a chain of layers (spec 18.1) ----

/// The stage's trits (I8 and F16 with -0.0), scales in three forms (a list per row, a number,
/// a one-element list) and the float original, through `bundle create`: the bundle holds every
/// trit and every scale(r, c) as given at the finest granularity (channel), rounded once from
/// the decimal text; FP16 is exact; the source and its details are recorded; the original's
/// file digest and its dense predictions are the original model's; format 4.0.
#[test]
fn stage_handoff_chain_is_bundled_as_given_with_its_original_model() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write_chain_handoff(tmp.path());
    let out = tmp.path().join("b");
    cli_create(&[
        "--from",
        s(&h.trits),
        "--quantization-metadata",
        s(&h.meta),
        "--original",
        s(&h.original),
        "--validation",
        s(&h.validation),
        "--out",
        s(&out),
    ]);
    let b = Bundle::open(&out).unwrap();
    check_all(&b).unwrap();
    let m = b.manifest();
    assert_eq!(m.format_version, "5.0");
    let q = &m.quantization;
    assert_eq!(
        (q.method.as_str(), q.granularity.as_str(), q.group_size),
        ("given", "channel", None)
    );
    assert_eq!((q.epsilon, q.sparsity_threshold), (None, None));
    let source = q.source.as_ref().expect("quantization.source");
    assert_eq!(
        (
            source.format.as_str(),
            source.scale_name.as_str(),
            source.scale_convention.as_str()
        ),
        ("quantization-metadata", "scales", "multiply")
    );
    assert_eq!(
        source.details,
        Some(json!({"quantization_scheme": "1.58-bit", "sparsity_threshold": 0.5}))
    );
    for g in &h.given {
        assert_given(&b, &g.name, &g.trits, |r, c| g.scale(r, c));
    }
    assert_eq!(
        quantized_names(&b),
        h.given.iter().map(|g| g.name.clone()).collect()
    );
    assert_float(&b, "fc1.bias", h.layers[0].bias.as_ref().unwrap());
    assert_eq!(
        m.provenance.source_sha256.as_deref(),
        Some(file_sha(&h.trits).as_str())
    );
    assert_eq!(
        m.provenance.original,
        Some(OriginalSpec {
            forward: "dense".into(),
            sha256: Some(file_sha(&h.original)),
        })
    );
    let want = chain_predictions(&h.layers, &h.inputs);
    assert_eq!(stored_predictions(&b), Some(want.clone()));
    // The predictions are the original's, not the given trits' (which decide differently).
    let effective: Vec<Linear> = h
        .layers
        .iter()
        .zip(&h.given)
        .map(|(l, g)| Linear {
            weight: g
                .trits
                .iter()
                .zip(&g.scale)
                .map(|(&t, &s)| f32::from(t) * s)
                .collect(),
            ..l.clone()
        })
        .collect();
    assert_ne!(
        chain_predictions(&effective, &h.inputs),
        want,
        "the test needs an original that the trits do not reproduce"
    );
}

/// Without `--original` the bundle of given trits has no original predictions and no
/// `provenance.original`, and `bundle verify` skips retention saying to give `--original`
/// (retention null, never another figure).
#[test]
fn stage_handoff_without_its_original_has_unknown_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write_chain_handoff(tmp.path());
    let out = tmp.path().join("b");
    cli_create(&[
        "--from",
        s(&h.trits),
        "--quantization-metadata",
        s(&h.meta),
        "--validation",
        s(&h.validation),
        "--out",
        s(&out),
    ]);
    let b = Bundle::open(&out).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.manifest().format_version, "4.0");
    assert_eq!(stored_predictions(&b), None);
    assert_eq!(b.manifest().provenance.original, None);
    let (code, report) = verify_json(&out, &[]);
    let r = check(&report, "retention");
    assert_eq!(r["status"], "skip", "{r:#}");
    let detail = r["detail"].as_str().unwrap();
    assert!(detail.contains("--original"), "{detail}");
    assert_eq!(
        report["metrics"]["phase4_to_5/dequantization_accuracy_retention"],
        Value::Null
    );
    assert_eq!(code, Some(0), "{report:#}");
}

// ---- 2. the quantizing stage's handoff, a model directory (spec 18.1) ----

/// A decoder model directory with integer and float trits in `model.safetensors` and
/// `quantization_metadata.json` beside config.json (found without a flag), its scales in all
/// four forms (groups of 8 columns, per row, a number, a one-element list): the bundle has
/// granularity group 8 with each coarser scale repeated (scale(r, c) unchanged), every trit as
/// given, exact FP16; a float model directory as `--original` gives the original predictions
/// of that model run dense, and `provenance.original.sha256` is null (a directory).
#[test]
fn stage_handoff_model_directory_is_found_and_bundled_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Llama, false);
    let weights = decoder_weights(&spec, 300);
    let dir = tmp.path().join("stage");
    let mut given = Vec::new();
    let mut raws = Vec::new();
    for (k, (name, (shape, w))) in weights.iter().enumerate() {
        if !is_projection(name) {
            raws.push(f32_raw(name, shape, w));
            continue;
        }
        let (rows, cols) = (shape[0], shape[1]);
        let trits = ternarize_rows(w, cols);
        let kind = given.len() % 4;
        let seed = 400 + k as u64;
        let (scale, entry): (Vec<f32>, String) = match kind {
            0 => {
                let per_row = cols.div_ceil(8);
                let g = random_scales(seed, rows * per_row);
                let rows_text: Vec<String> =
                    g.chunks(per_row).map(|row| format!("{row:?}")).collect();
                (
                    (0..rows * cols)
                        .map(|i| g[(i / cols) * per_row + (i % cols) / 8])
                        .collect(),
                    format!("[{}]", rows_text.join(", ")),
                )
            }
            1 => {
                let v = random_scales(seed, rows);
                (
                    (0..rows * cols).map(|i| v[i / cols]).collect(),
                    format!("{v:?}"),
                )
            }
            2 => {
                let v = random_scales(seed, 1)[0];
                (vec![v; rows * cols], format!("{v:?}"))
            }
            _ => {
                let v = random_scales(seed, 1)[0];
                (vec![v; rows * cols], format!("[{v:?}]"))
            }
        };
        raws.push(match given.len() % 3 {
            0 => i8_raw(name, shape, &trits),
            1 => i32_raw(name, shape, &trits),
            _ => bf16_raw(
                name,
                shape,
                &trits.iter().map(|&t| f32::from(t)).collect::<Vec<_>>(),
            ),
        });
        given.push(StageTensor {
            name: name.clone(),
            rows,
            cols,
            trits,
            scale,
            entry,
        });
    }
    write_model_dir(&dir, &hf_config(&spec, None), &raws);
    std::fs::write(
        dir.join("quantization_metadata.json"),
        metadata_json(&given, "\"group_size\": 8, "),
    )
    .unwrap();
    let original = tmp.path().join("original");
    write_model_dir(
        &original,
        &hf_config(&spec, None),
        &weights
            .iter()
            .map(|(n, (shape, v))| f32_raw(n, shape, v))
            .collect::<Vec<_>>(),
    );
    let validation = tmp.path().join("tokens.safetensors");
    let ids = write_token_validation(&validation, 3, 7, spec.vocab_size, 77);

    let out = tmp.path().join("b");
    let req = CreateRequest {
        original: Some(original.clone()),
        validation: Some(validation),
        ..request(&dir)
    };
    create(&req, &out).unwrap();
    let b = Bundle::open(&out).unwrap();
    check_all(&b).unwrap();
    let m = b.manifest();
    assert_eq!(m.format_version, "5.0");
    assert_eq!(b.decoder(), Some(&spec));
    let q = &m.quantization;
    assert_eq!(
        (q.method.as_str(), q.granularity.as_str(), q.group_size),
        ("given", "group", Some(8))
    );
    assert_eq!(
        q.source.as_ref().unwrap().format.as_str(),
        "quantization-metadata"
    );
    assert_eq!(quantized_names(&b), projections(&spec));
    for g in &given {
        assert_given(&b, &g.name, &g.trits, |r, c| g.scale(r, c));
    }
    for (name, (_, v)) in &weights {
        if !is_projection(name) {
            assert_float(&b, name, v);
        }
    }
    assert_eq!(
        m.provenance.original,
        Some(OriginalSpec {
            forward: "dense".into(),
            sha256: None,
        })
    );
    let model = HfModel::open(&original).unwrap();
    let want: Vec<i64> = OriginalModel::dense(&model)
        .decoder_predictions(&spec, ids.view())
        .unwrap()
        .into_iter()
        .map(|p| p as i64)
        .collect();
    assert_eq!(stored_predictions(&b), Some(want));
}

// ---- 3. Hugging Face packed BitNet (spec 18.2) ----

/// One packed BitNet directory to write and what its bundle must be.
struct PackedCase {
    /// `quantization_config` as config.json states it.
    quantization: Value,
    /// The modules kept in float (weight names).
    float: BTreeSet<String>,
    /// The scale convention the linear class implies.
    convention: &'static str,
    /// `quantization.source.details`: the stated keys among linear_class,
    /// quantization_mode and modules_to_not_convert.
    details: Value,
}

/// The converted weights of a packed directory: name -> (trits, BF16 weight_scale).
type Converted = BTreeMap<String, (Vec<i8>, bf16)>;

/// Writes the packed BitNet directory of `case` for `spec` into `dir`: each converted module's
/// weight packed with `pack_weights` (or, for `float_trits`, an F32 matrix of trits) and its
/// `weight_scale` BF16 [1]; every other tensor F32. Returns the trits and the BF16 scale of each
/// converted weight, and the float values of the others.
fn write_packed_dir(
    dir: &Path,
    spec: &DecoderSpec,
    case: &PackedCase,
    float_trits: Option<&str>,
) -> (Converted, BTreeMap<String, Vec<f32>>) {
    let mut converted = BTreeMap::new();
    let mut floats = BTreeMap::new();
    let mut raws = Vec::new();
    for (k, (name, (shape, w))) in decoder_weights(spec, 500).into_iter().enumerate() {
        let module = is_projection(&name) || name == "lm_head.weight";
        if !module || case.float.contains(&name) {
            raws.push(f32_raw(&name, &shape, &w));
            floats.insert(name, w);
            continue;
        }
        let (rows, cols) = (shape[0], shape[1]);
        let trits = random_trits(600 + k as u64, rows * cols);
        // Scales whose inverse is not exact in f32.
        let ws = bf16::from_f32(0.3 + 0.07 * k as f32);
        if float_trits == Some(name.as_str()) {
            let v: Vec<f32> = trits.iter().map(|&t| f32::from(t)).collect();
            raws.push(f32_raw(&name, &shape, &v));
        } else {
            let packed = pack_weights(&trits, rows, cols).unwrap();
            raws.push(u8_raw(&name, &[rows / 4, cols], packed));
        }
        raws.push(Raw {
            name: format!("{name}_scale"),
            dtype: StDtype::BF16,
            shape: vec![1],
            bytes: ws.to_le_bytes().to_vec(),
        });
        converted.insert(name, (trits, ws));
    }
    write_model_dir(
        dir,
        &hf_config(spec, Some(case.quantization.clone())),
        &raws,
    );
    (converted, floats)
}

/// The bundle's scale of a BF16 weight_scale under `convention` (spec 18.2): f32(ws), or
/// 1 / f32(ws) in one f32 division.
fn bundle_scale(convention: &str, ws: bf16) -> f32 {
    match convention {
        "multiply" => f32::from(ws),
        _ => 1.0f32 / f32::from(ws),
    }
}

/// Packed BitNet directories of `autobitlinear` (multiply), `bitlinear` (divide) and no
/// `linear_class` (bitlinear's divide): every converted module's trits as packed (an F32
/// matrix of trits too), its per-tensor scale f32(ws) or 1 / ws bit for bit, granularity
/// tensor, the convention and the stated keys recorded; `modules_to_not_convert` keeps the
/// modules it matches (by suffix) in float, absent it keeps an untied `lm_head` in float, and a
/// list without `lm_head` converts it.
#[test]
fn packed_bitnet_directories_keep_their_trits_and_convert_their_scales() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Bitnet, false);
    let up: BTreeSet<String> = (0..2)
        .map(|l| format!("model.layers.{l}.mlp.up_proj.weight"))
        .collect();
    let cases = [
        PackedCase {
            quantization: json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}),
            float: BTreeSet::from(["lm_head.weight".to_string()]),
            convention: "multiply",
            details: json!({"linear_class": "autobitlinear", "quantization_mode": "offline"}),
        },
        PackedCase {
            quantization: json!({"quant_method": "bitnet", "linear_class": "bitlinear", "modules_to_not_convert": ["lm_head", "mlp.up_proj"]}),
            float: up
                .iter()
                .cloned()
                .chain(["lm_head.weight".to_string()])
                .collect(),
            convention: "divide",
            details: json!({"linear_class": "bitlinear", "modules_to_not_convert": ["lm_head", "mlp.up_proj"]}),
        },
        PackedCase {
            quantization: json!({"quant_method": "bitnet", "modules_to_not_convert": ["model.layers.1.self_attn.k_proj"]}),
            float: BTreeSet::from(["model.layers.1.self_attn.k_proj.weight".to_string()]),
            convention: "divide",
            details: json!({"modules_to_not_convert": ["model.layers.1.self_attn.k_proj"]}),
        },
    ];
    for (k, case) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("packed{k}"));
        let float_trits = (k == 0).then_some("model.layers.0.mlp.down_proj.weight");
        let (converted, floats) = write_packed_dir(&dir, &spec, case, float_trits);
        let out = tmp.path().join(format!("b{k}"));
        create(&request(&dir), &out).unwrap();
        let b = Bundle::open(&out).unwrap();
        check_all(&b).unwrap();
        let m = b.manifest();
        assert_eq!(m.format_version, "4.0", "case {k}");
        let q = &m.quantization;
        assert_eq!(
            (q.method.as_str(), q.granularity.as_str()),
            ("given", "tensor"),
            "case {k}"
        );
        let source = q.source.as_ref().unwrap();
        assert_eq!(
            (
                source.format.as_str(),
                source.scale_name.as_str(),
                source.scale_convention.as_str()
            ),
            ("hf-bitnet", "weight_scale", case.convention),
            "case {k}"
        );
        assert_eq!(source.details.as_ref(), Some(&case.details), "case {k}");
        assert_eq!(
            quantized_names(&b),
            converted.keys().cloned().collect::<BTreeSet<_>>(),
            "case {k}"
        );
        for (name, (trits, ws)) in &converted {
            let want = bundle_scale(case.convention, *ws);
            assert_given(&b, name, trits, |_, _| want);
        }
        for name in &case.float {
            assert_float(&b, name, &floats[name]);
        }
        for (name, v) in &floats {
            assert_float(&b, name, v);
        }
        assert_eq!(
            converted.contains_key("lm_head.weight"),
            k == 2,
            "case {k}: lm_head"
        );
    }
    // The same through the binary: inspect --json shows the source's convention.
    let out = tmp.path().join("cli");
    cli_create(&["--from", s(&tmp.path().join("packed1")), "--out", s(&out)]);
    let o = run(&["inspect", s(&out), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["quantization"]["method"], "given");
    assert_eq!(v["quantization"]["source"]["scale_convention"], "divide");
    assert_eq!(v["quantization"]["source"]["format"], "hf-bitnet");
}

// ---- 4. BitNet master weights with online quantization (spec 18.3) ----

/// A BF16 master directory with `quantization_mode` online: the bundle quantizes the seven
/// projections per tensor with transformers' settings (absmean, epsilon 1e-5, threshold 0.5;
/// each trit and scale equal to WeightQuant computed here), keeps the rest in float, and its
/// original predictions are transformers' online model (`bitnet-online`: ternarized weights
/// and 8-bit activations), which decides differently from the dense master weights.
#[test]
fn online_bitnet_master_is_quantized_as_transformers_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Bitnet, false);
    let weights = decoder_weights(&spec, 700);
    let dir = tmp.path().join("master");
    let quantization = json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"});
    write_model_dir(
        &dir,
        &hf_config(&spec, Some(quantization)),
        &weights
            .iter()
            .map(|(n, (shape, v))| bf16_raw(n, shape, v))
            .collect::<Vec<_>>(),
    );
    let validation = tmp.path().join("tokens.safetensors");
    let ids = write_token_validation(&validation, 4, 12, spec.vocab_size, 78);
    let out = tmp.path().join("b");
    let req = CreateRequest {
        validation: Some(validation),
        ..request(&dir)
    };
    create(&req, &out).unwrap();
    let b = Bundle::open(&out).unwrap();
    check_all(&b).unwrap();
    let m = b.manifest();
    let q = &m.quantization;
    assert_eq!(
        (q.method.as_str(), q.granularity.as_str()),
        ("absmean", "tensor")
    );
    assert_eq!((q.epsilon, q.sparsity_threshold), (Some(1e-5), Some(0.5)));
    assert!(q.source.is_none());
    assert_eq!(m.format_version, "5.0");
    assert_eq!(
        m.provenance.original,
        Some(OriginalSpec {
            forward: "bitnet-online".into(),
            sha256: None,
        })
    );
    let converted = projections(&spec);
    assert_eq!(quantized_names(&b), converted);
    for (name, (_, v)) in &weights {
        // The master as read: BF16 converted exactly to f32.
        let w: Vec<f32> = v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect();
        if converted.contains(name) {
            let (trits, m) = weight_quant(&w);
            assert_given(&b, name, &trits, |_, _| m);
        } else {
            assert_float(&b, name, &w);
        }
    }
    let model = HfModel::open_with(&dir, Dtypes::Float, false).unwrap();
    let online: Vec<i64> = OriginalModel::bitnet_online(&model, converted)
        .unwrap()
        .decoder_predictions(&spec, ids.view())
        .unwrap()
        .into_iter()
        .map(|p| p as i64)
        .collect();
    let dense: Vec<i64> = OriginalModel::dense(&model)
        .decoder_predictions(&spec, ids.view())
        .unwrap()
        .into_iter()
        .map(|p| p as i64)
        .collect();
    let stored = stored_predictions(&b).unwrap();
    assert_eq!(stored, online);
    let differ = stored.iter().zip(&dense).filter(|(a, z)| a != z).count();
    assert!(
        differ > 0,
        "the online original decides like the dense master weights on all {} positions",
        dense.len()
    );
}

/// The 2B4T workflow (`bundle create --from bitnet-b1.58-2B-4T --original
/// bitnet-b1.58-2B-4T-bf16`): a packed checkpoint of the master's WeightQuant trits, with its
/// online BF16 master as `--original`, through the binary: the bundle holds the packed trits as
/// given, its original predictions are the online model's (`bitnet-online`, sha256 null for a
/// directory), and `bundle verify` measures retention against them.
#[test]
fn packed_checkpoint_with_its_online_master_as_original() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Bitnet, false);
    let weights = decoder_weights(&spec, 720);
    let master = tmp.path().join("master");
    write_model_dir(
        &master,
        &hf_config(
            &spec,
            Some(
                json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}),
            ),
        ),
        &weights
            .iter()
            .map(|(n, (shape, v))| bf16_raw(n, shape, v))
            .collect::<Vec<_>>(),
    );
    let packed = tmp.path().join("packed");
    let mut raws = Vec::new();
    let mut given = BTreeMap::new();
    for (name, (shape, v)) in &weights {
        let w: Vec<f32> = v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect();
        if !is_projection(name) {
            raws.push(f32_raw(name, shape, &w));
            continue;
        }
        let (trits, m) = weight_quant(&w);
        let ws = bf16::from_f32(m);
        raws.push(u8_raw(
            name,
            &[shape[0] / 4, shape[1]],
            pack_weights(&trits, shape[0], shape[1]).unwrap(),
        ));
        raws.push(Raw {
            name: format!("{name}_scale"),
            dtype: StDtype::BF16,
            shape: vec![1],
            bytes: ws.to_le_bytes().to_vec(),
        });
        given.insert(name.clone(), (trits, f32::from(ws)));
    }
    write_model_dir(
        &packed,
        &hf_config(
            &spec,
            Some(
                json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}),
            ),
        ),
        &raws,
    );
    let validation = tmp.path().join("tokens.safetensors");
    let ids = write_token_validation(&validation, 3, 10, spec.vocab_size, 79);
    let out = tmp.path().join("b");
    cli_create(&[
        "--from",
        s(&packed),
        "--original",
        s(&master),
        "--validation",
        s(&validation),
        "--out",
        s(&out),
    ]);
    let b = Bundle::open(&out).unwrap();
    check_all(&b).unwrap();
    let m = b.manifest();
    assert_eq!(m.quantization.method, "given");
    assert_eq!(
        m.provenance.original,
        Some(OriginalSpec {
            forward: "bitnet-online".into(),
            sha256: None,
        })
    );
    for (name, (trits, scale)) in &given {
        assert_given(&b, name, trits, |_, _| *scale);
    }
    let model = HfModel::open_with(&master, Dtypes::Float, false).unwrap();
    let online: Vec<i64> = OriginalModel::bitnet_online(&model, projections(&spec))
        .unwrap()
        .decoder_predictions(&spec, ids.view())
        .unwrap()
        .into_iter()
        .map(|p| p as i64)
        .collect();
    assert_eq!(stored_predictions(&b), Some(online));
    let (_, report) = verify_json(&out, &["--only", "retention"]);
    let r = check(&report, "retention");
    assert_ne!(r["status"], "skip", "{r:#}");
    assert_eq!(r["figures"]["original"], "original_predictions", "{r:#}");
    assert!(retention(&report) > 0.0);
}

// ---- 5. quantization-aware checkpoints (spec 7 step 0, 7.2) ----

/// A chain's layers, and the trits and per-row scales each weight was made from.
type QatChain = (Vec<Linear>, Vec<(Vec<i8>, Vec<f32>)>);

/// A chain 16 -> 32 -> 10 (ReLU, a bias on the first layer) whose weights are `weight(r, c, t,
/// s_r)` of pseudo-random trits t and per-row scales s_r.
fn qat_chain(weight: impl Fn(usize, usize, i8, f32) -> f32) -> QatChain {
    let dims = [("fc1", 32, 16), ("fc2", 10, 32)];
    let mut layers = Vec::new();
    let mut ternary = Vec::new();
    for (k, &(name, rows, cols)) in dims.iter().enumerate() {
        let trits = random_trits(800 + k as u64, rows * cols);
        let scales = random_scales(810 + k as u64, rows);
        let w = (0..rows * cols)
            .map(|i| weight(k, i, trits[i], scales[i / cols]))
            .collect();
        layers.push(Linear {
            name,
            rows,
            cols,
            weight: w,
            bias: (k == 0).then(|| values(820, rows).iter().map(|v| v / 8.0).collect()),
        });
        ternary.push((trits, scales));
    }
    (layers, ternary)
}

/// The effective weights of a quantization-aware checkpoint (t × s per row, already ternary):
/// the bundle holds exactly those trits and the scales s (step 0, not absmean's gamma = s ×
/// share of non-zeros) and keeps every decision of the original (retention 100%).
#[test]
fn effective_weights_keep_their_trits_scales_and_every_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let (layers, ternary) = qat_chain(|_, _, t, s| f32::from(t) * s);
    let ckpt = tmp.path().join("effective.safetensors");
    write_st(
        &ckpt,
        &layers.iter().flat_map(Linear::raws).collect::<Vec<_>>(),
    );
    let validation = tmp.path().join("val.safetensors");
    let inputs = write_chain_validation(&validation, 200, 16, 10, 830);
    let out = tmp.path().join("b");
    cli_create(&[
        "--from",
        s(&ckpt),
        "--validation",
        s(&validation),
        "--out",
        s(&out),
    ]);
    let b = Bundle::open(&out).unwrap();
    check_all(&b).unwrap();
    let q = &b.manifest().quantization;
    assert_eq!(
        (q.method.as_str(), q.granularity.as_str()),
        ("absmean", "channel")
    );
    for (l, (trits, scales)) in layers.iter().zip(&ternary) {
        assert!(trits.contains(&0), "step 0 matters only with zeros");
        assert_given(&b, &l.weight_name(), trits, |r, _| scales[r]);
    }
    assert_eq!(
        stored_predictions(&b),
        Some(chain_predictions(&layers, &inputs))
    );
    let (code, report) = verify_json(&out, &[]);
    assert_eq!(retention(&report), 1.0, "{:#}", check(&report, "retention"));
    assert_eq!(code, Some(0), "{report:#}");
}

/// Latent weights of quantization-aware training (t × s plus noise that changes the dense
/// model's decisions): with the default `--original-forward dense` the handoff loses more than
/// 0.5% of the dense model's decisions and `bundle verify` exits 1; with `--original-forward
/// ternary` the original is the model the training ran (its quantized tensors as t × scale of
/// this quantization), retention is at least 99.5%, verify exits 0, and the manifest records
/// forward "ternary" of the source itself (sha256 null).
#[test]
fn latent_weights_are_judged_against_their_ternary_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let noise: Vec<Vec<f32>> = (0..2).map(|k| values(840 + k, 32 * 32)).collect();
    let (layers, _) = qat_chain(|k, i, t, s| f32::from(t) * s + 0.45 * s * noise[k][i]);
    let ckpt = tmp.path().join("latent.safetensors");
    write_st(
        &ckpt,
        &layers.iter().flat_map(Linear::raws).collect::<Vec<_>>(),
    );
    let validation = tmp.path().join("val.safetensors");
    let inputs = write_chain_validation(&validation, 400, 16, 10, 850);

    let dense = tmp.path().join("dense");
    cli_create(&[
        "--from",
        s(&ckpt),
        "--validation",
        s(&validation),
        "--out",
        s(&dense),
    ]);
    let b = Bundle::open(&dense).unwrap();
    assert_eq!(
        stored_predictions(&b),
        Some(chain_predictions(&layers, &inputs))
    );
    assert_eq!(b.manifest().format_version, "5.0");
    let (code, report) = verify_json(&dense, &[]);
    let r = retention(&report);
    assert!(
        r < 0.995,
        "dense retention {r}: the noise changes no decision"
    );
    assert_eq!(check(&report, "retention")["status"], "fail");
    assert_eq!(code, Some(1));

    let ternary = tmp.path().join("ternary");
    cli_create(&[
        "--from",
        s(&ckpt),
        "--validation",
        s(&validation),
        "--original-forward",
        "ternary",
        "--out",
        s(&ternary),
    ]);
    let b = Bundle::open(&ternary).unwrap();
    check_all(&b).unwrap();
    let m = b.manifest();
    assert_eq!(m.format_version, "5.0");
    assert_eq!(
        m.provenance.original,
        Some(OriginalSpec {
            forward: "ternary".into(),
            sha256: None,
        })
    );
    // The ternary original: each quantized weight replaced by f32(t × scale) of the bundle's own
    // quantization, run densely here.
    let ternarized: Vec<Linear> = layers
        .iter()
        .map(|l| {
            let p = b.packed(&l.weight_name()).unwrap();
            let (t, sc) = (bundle_trits(&p), p.scales());
            Linear {
                weight: (0..l.rows * l.cols)
                    .map(|i| f32::from(t[i]) * scale_at(&p, &sc, i / l.cols, i % l.cols))
                    .collect(),
                ..l.clone()
            }
        })
        .collect();
    assert_eq!(
        stored_predictions(&b),
        Some(chain_predictions(&ternarized, &inputs))
    );
    let (code, report) = verify_json(&ternary, &[]);
    let r = retention(&report);
    assert!(r >= 0.995, "ternary retention {r}");
    assert_eq!(code, Some(0), "{report:#}");
}

// ---- 6. bad input: clear errors naming the file and the tensor ----

/// The stage's handoff refused at create (rule 8.3), each error naming the file and the
/// tensor: a trit outside {-1, 0, 1} (integer and float), a scale list of the wrong length, a
/// zero, negative or infinite scale, a scale whose F16 rounding is zero or infinite (rule 4.5),
/// a scale for a tensor that is not there, an integer tensor without a scale, a non-zero zero
/// point, a list of lists without group_size, and an `--original` whose tensors are not the
/// trits' (another shape, one missing).
#[test]
fn bad_stage_handoffs_are_refused_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write_chain_handoff(tmp.path());
    let out = tmp.path().join("never");
    let meta = tmp.path().join("bad_metadata.json");
    let req = CreateRequest {
        quantization_metadata: Some(meta.clone()),
        ..request(&h.trits)
    };
    let with_entry = |name: &str, entry: &str| -> Vec<StageTensor> {
        let mut g = h.given.clone();
        let t = g.iter_mut().find(|t| t.name == name).unwrap();
        t.entry = entry.into();
        g
    };
    let meta_name = "bad_metadata.json";

    // Scales that fit no granularity or are not finite and > 0.
    for (entry, found) in [
        ("[0.1, 0.2, 0.3, 0.4, 0.5]", "a list of 5 numbers"),
        ("0", "scale 0"),
        ("-0.5", "scale -0.5"),
        ("1e39", "scale inf"),
        ("[[0.1, 0.2], [0.3, 0.4]]", "group_size"),
    ] {
        std::fs::write(&meta, metadata_json(&with_entry("fc2.weight", entry), "")).unwrap();
        let e = create_error(&req, &out);
        assert_names(&e, &[meta_name, "\"fc2.weight\"", "rule 8.3", found]);
    }
    // A scale for a tensor that is not there.
    let mut extra = h.given.clone();
    extra.push(StageTensor {
        name: "fc9.weight".into(),
        entry: "0.1".into(),
        ..h.given[1].clone()
    });
    std::fs::write(&meta, metadata_json(&extra, "")).unwrap();
    let e = create_error(&req, &out);
    assert_names(&e, &[meta_name, "\"fc9.weight\"", "rule 8.3", "not there"]);
    // Scales whose F16 rounding is zero or infinite, governing non-zero trits (rule 4.5).
    for entry in ["1e-10", "70000"] {
        std::fs::write(&meta, metadata_json(&with_entry("fc2.weight", entry), "")).unwrap();
        let e = create_error(&req, &out);
        assert_names(&e, &["\"fc2.weight\"", "rule 8.3", "rule 4.5"]);
    }
    // A non-zero zero point.
    let text = metadata_json(&h.given, "").replace("\"fc3.weight\": 0", "\"fc3.weight\": 1");
    assert!(text.contains("\"fc3.weight\": 1"));
    std::fs::write(&meta, text).unwrap();
    let e = create_error(&req, &out);
    assert_names(&e, &[meta_name, "\"fc3.weight\"", "zero point"]);
    // An integer tensor without a scale (fc1 is I8).
    std::fs::write(&meta, metadata_json(&h.given[1..], "")).unwrap();
    let e = create_error(&req, &out);
    assert_names(
        &e,
        &[
            "trits.safetensors",
            "\"fc1.weight\"",
            "rule 8.3",
            "without a scale",
        ],
    );
    std::fs::write(&meta, metadata_json(&h.given, "")).unwrap();

    // Trits outside {-1, 0, 1}: an integer 2, a float 0.5.
    let mut raws = vec![f32_raw(
        "fc1.bias",
        &[12],
        h.layers[0].bias.as_ref().unwrap(),
    )];
    let mut bad = h.given[0].trits.clone();
    bad[17] = 2;
    raws.push(i8_raw("fc1.weight", &[12, 8], &bad));
    raws.push(i8_raw("fc2.weight", &[10, 12], &h.given[1].trits));
    let mut f = h.given[2]
        .trits
        .iter()
        .map(|&t| f32::from(t))
        .collect::<Vec<_>>();
    let bad_trits = tmp.path().join("bad_trits.safetensors");
    raws.push(f32_raw("fc3.weight", &[6, 10], &f));
    write_st(&bad_trits, &raws);
    let bad_req = CreateRequest {
        from: bad_trits.clone(),
        ..req.clone()
    };
    let e = create_error(&bad_req, &out);
    assert_names(
        &e,
        &[
            "bad_trits.safetensors",
            "\"fc1.weight\"",
            "rule 8.3",
            "2 at flat index 17",
        ],
    );
    raws[1] = i8_raw("fc1.weight", &[12, 8], &h.given[0].trits);
    f[33] = 0.5;
    raws[3] = f32_raw("fc3.weight", &[6, 10], &f);
    write_st(&bad_trits, &raws);
    let e = create_error(&bad_req, &out);
    assert_names(
        &e,
        &[
            "bad_trits.safetensors",
            "\"fc3.weight\"",
            "rule 8.3",
            "flat index 33",
        ],
    );

    // An original that is not the model the trits were quantized from: a tensor of another
    // shape, a tensor missing.
    let orig = tmp.path().join("other_original.safetensors");
    let mut raws: Vec<Raw> = h.layers.iter().flat_map(Linear::raws).collect();
    let k = raws.iter().position(|r| r.name == "fc2.weight").unwrap();
    raws[k] = f32_raw("fc2.weight", &[10, 11], &values(1, 110));
    write_st(&orig, &raws);
    let with_original = CreateRequest {
        original: Some(orig.clone()),
        validation: Some(h.validation.clone()),
        from: h.trits.clone(),
        quantization_metadata: Some(h.meta.clone()),
        ..CreateRequest::default()
    };
    let e = create_error(&with_original, &out);
    assert_names(&e, &["other_original.safetensors", "\"fc2.weight\""]);
    raws.remove(k);
    write_st(&orig, &raws);
    let e = create_error(&with_original, &out);
    assert_names(&e, &["other_original.safetensors", "\"fc2.weight\""]);
    assert!(!out.exists());
}

/// Packed BitNet directories refused naming the file and the tensor or key: packed shapes
/// that disagree with config.json, an unknown `linear_class`, a NaN or zero `weight_scale`, a
/// `quantization_config` of another `quant_method` (named), and `--original-forward ternary`
/// on an online master.
#[test]
fn bad_bitnet_directories_are_refused_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Bitnet, false);
    let case = PackedCase {
        quantization: json!({"quant_method": "bitnet", "linear_class": "autobitlinear"}),
        float: BTreeSet::from(["lm_head.weight".to_string()]),
        convention: "multiply",
        details: Value::Null,
    };
    let dir = tmp.path().join("packed");
    write_packed_dir(&dir, &spec, &case, None);
    let out = tmp.path().join("never");
    create(&request(&dir), &tmp.path().join("good")).unwrap();

    // Rewrites one tensor of the directory's model.safetensors.
    let st = dir.join("model.safetensors");
    let original = std::fs::read(&st).unwrap();
    let rewrite = |name: &str, raw: Raw| {
        let parsed = safetensors::SafeTensors::deserialize(&original).unwrap();
        let raws: Vec<Raw> = parsed
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                if n == name {
                    raw.clone()
                } else {
                    Raw {
                        name: n.clone(),
                        dtype: v.dtype(),
                        shape: v.shape().to_vec(),
                        bytes: v.data().to_vec(),
                    }
                }
            })
            .collect();
        write_st(&st, &raws);
    };
    let q = "model.layers.0.self_attn.q_proj.weight";
    rewrite(q, u8_raw(q, &[3, 16], vec![0x55; 48]));
    let e = create_error(&request(&dir), &out);
    assert_names(&e, &["packed", q, "config.json", "U8 [4, 16]", "[3, 16]"]);

    let scale = "model.layers.1.mlp.down_proj.weight_scale";
    for (v, found) in [(f32::NAN, "NaN"), (0.0, "0")] {
        rewrite(scale, bf16_raw(scale, &[1], &[v]));
        let e = create_error(&request(&dir), &out);
        assert_names(&e, &["packed", &format!("\"{scale}\""), "rule 8.3", found]);
    }
    std::fs::write(&st, &original).unwrap();

    let config =
        |q: Value| std::fs::write(dir.join("config.json"), hf_config(&spec, Some(q))).unwrap();
    config(json!({"quant_method": "bitnet", "linear_class": "bitlinear2"}));
    let e = create_error(&request(&dir), &out);
    assert_names(&e, &["config.json", "linear_class", "bitlinear2"]);
    config(json!({"quant_method": "gptq", "bits": 4}));
    let e = create_error(&request(&dir), &out);
    assert_names(&e, &["config.json", "quant_method", "\"gptq\""]);
    // The CLI says the same, with exit code 1.
    let stderr = cli_create_fails(&["--from", s(&dir), "--out", s(&out)]);
    assert_names(&stderr, &["config.json", "\"gptq\""]);

    // An online master: its original model is transformers', not --original-forward ternary.
    let master = tmp.path().join("master");
    write_model_dir(
        &master,
        &hf_config(
            &spec,
            Some(
                json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}),
            ),
        ),
        &decoder_weights(&spec, 900)
            .iter()
            .map(|(n, (shape, v))| bf16_raw(n, shape, v))
            .collect::<Vec<_>>(),
    );
    let req = CreateRequest {
        ternary_original: true,
        ..request(&master)
    };
    let e = create_error(&req, &out);
    assert_names(&e, &["master", "--original-forward ternary", "online"]);
    assert!(!out.exists());
}

/// A model directory whose tokenizer.json does not parse is refused naming the file, and a
/// `--validation-text` shorter than one sequence is refused naming the text.
#[test]
fn bad_tokenizers_and_short_texts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Llama, true);
    let dir = tmp.path().join("model");
    write_model_dir(
        &dir,
        &hf_config(&spec, None),
        &decoder_weights(&spec, 950)
            .iter()
            .map(|(n, (shape, v))| f32_raw(n, shape, v))
            .collect::<Vec<_>>(),
    );
    let out = tmp.path().join("never");
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"model": {"type": "nonsense"}}"#,
    )
    .unwrap();
    let e = create_error(&request(&dir), &out);
    assert_names(&e, &["tokenizer.json", "tokenizers"]);
    let stderr = cli_create_fails(&["--from", s(&dir), "--out", s(&out)]);
    assert_names(&stderr, &["tokenizer.json"]);

    std::fs::copy(
        tokenizer_fixture("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "the cat").unwrap();
    let req = CreateRequest {
        validation_text: Some((short.clone(), 64)),
        ..request(&dir)
    };
    let e = create_error(&req, &out);
    assert_names(&e, &["short.txt", "fewer than one sequence of 64"]);
    let stderr = cli_create_fails(&[
        "--from",
        s(&dir),
        "--validation-text",
        s(&short),
        "--seq-len",
        "64",
        "--out",
        s(&out),
    ]);
    assert_names(&stderr, &["short.txt", "fewer than one sequence"]);
    assert!(!out.exists());
}

/// Quantizer flags on given trits are refused by `bundle create` (exit code 1), saying why:
/// `--granularity` (and `--epsilon`), `--quantize`, `--original-forward ternary`; the library
/// refuses the same requests.
#[test]
fn quantizer_flags_on_given_trits_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write_chain_handoff(tmp.path());
    let out = tmp.path().join("never");
    let base = [
        "--from",
        s(&h.trits),
        "--quantization-metadata",
        s(&h.meta),
        "--out",
        s(&out),
    ];
    for (extra, words) in [
        (
            vec!["--granularity", "tensor"],
            vec!["--granularity", "given"],
        ),
        (vec!["--epsilon", "0.001"], vec!["--epsilon", "given"]),
        (
            vec!["--quantize", "fc1.weight"],
            vec!["--quantize", "given"],
        ),
        (
            vec!["--original-forward", "ternary"],
            vec!["--original-forward ternary", "--original"],
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let stderr = cli_create_fails(&args);
        assert_names(&stderr, &words);
    }
    let given = CreateRequest {
        quantization_metadata: Some(h.meta.clone()),
        ..request(&h.trits)
    };
    for req in [
        CreateRequest {
            settings: Settings {
                granularity: Some(Granularity::Tensor),
                ..Settings::default()
            },
            ..given.clone()
        },
        CreateRequest {
            quantize: vec!["fc1.weight".into()],
            ..given.clone()
        },
        CreateRequest {
            ternary_original: true,
            ..given.clone()
        },
    ] {
        assert!(CreateInputs::open(&req).is_err(), "{req:?}");
    }
    assert!(!out.exists());
}

// ---- 7. the tokenizer travels (spec 18.5, rules 1.6, 2.17, 7.4) ----

/// A model directory with the fixture's tokenizer files: the bundle lists each in
/// `files.assets` with its size and sha256, carries it byte for byte, `bundle inspect --json`
/// shows it; `--validation-text --seq-len 16` gives the ids Python's tokenizers gave, cut into
/// rows of 16; one changed byte of an asset makes `bundle verify` fail the checksums check
/// naming rule 7.4.
#[test]
fn the_tokenizer_travels_with_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Llama, false);
    let dir = tmp.path().join("model");
    write_model_dir(
        &dir,
        &hf_config(&spec, None),
        &decoder_weights(&spec, 990)
            .iter()
            .map(|(n, (shape, v))| f32_raw(n, shape, v))
            .collect::<Vec<_>>(),
    );
    let assets = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ];
    for a in assets {
        std::fs::copy(tokenizer_fixture(a), dir.join(a)).unwrap();
    }
    let out = tmp.path().join("b");
    let t = 16;
    cli_create(&[
        "--from",
        s(&dir),
        "--validation-text",
        s(&tokenizer_fixture("corpus.txt")),
        "--seq-len",
        "16",
        "--out",
        s(&out),
    ]);
    let b = Bundle::open(&out).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.manifest().format_version, "5.0");
    let listed = b.manifest().files.assets.clone().expect("files.assets");
    assert_eq!(
        listed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        assets
    );
    for entry in &listed {
        let fixture = std::fs::read(tokenizer_fixture(&entry.name)).unwrap();
        assert_eq!(entry.size, fixture.len() as u64, "{}", entry.name);
        assert_eq!(entry.sha256, sha256_hex(&fixture), "{}", entry.name);
        assert!(
            std::fs::read(out.join(&entry.name)).unwrap() == fixture,
            "{} is not carried byte for byte",
            entry.name
        );
    }
    // The validation set: the fixture's ids cut into rows of T, the rest dropped.
    let expected: Value =
        serde_json::from_slice(&std::fs::read(tokenizer_fixture("expected_ids.json")).unwrap())
            .unwrap();
    let ids: Vec<i64> = expected["corpus.txt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let n = ids.len() / t;
    assert_ne!(ids.len() % t, 0, "the test should drop a remainder");
    let v = b.validation().unwrap();
    assert_eq!((v.samples, v.tokens), (n, t));
    assert_eq!(i64s(v.inputs), ids[..n * t]);
    let labels: Vec<i64> = ids[..n * t]
        .chunks(t)
        .flat_map(|row| row[1..].to_vec())
        .collect();
    assert_eq!(i64s(v.labels), labels);

    // inspect --json lists the asset files with their digests.
    let o = run(&["inspect", s(&out), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    for entry in &listed {
        let f = report["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == entry.name.as_str())
            .unwrap_or_else(|| panic!("inspect lacks {}: {report:#}", entry.name));
        assert_eq!(f["sha256"], entry.sha256.as_str());
        assert_eq!(f["size"], entry.size);
    }

    // One changed byte (the size unchanged): the checksums check fails naming rule 7.4.
    let (code, report) = verify_json(&out, &["--only", "checksums"]);
    assert_eq!(code, Some(0), "{report:#}");
    let path = out.join("tokenizer_config.json");
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.iter().position(|&c| c == b'<').unwrap();
    bytes[i] = b'[';
    std::fs::write(&path, &bytes).unwrap();
    let (code, report) = verify_json(&out, &["--only", "checksums"]);
    assert_eq!(code, Some(1), "{report:#}");
    let c = check(&report, "checksums");
    assert_eq!(c["status"], "fail", "{c:#}");
    let detail = c["detail"].as_str().unwrap();
    assert_names(detail, &["7.4", "tokenizer_config.json"]);
}

// ---- 8. the original model's distributions (--original-top-k, spec 9.1, rule 6.1) ----

/// A dense chain 16 -> 32 -> `classes` (ReLU, a bias on the first layer) of pseudo-random
/// float weights, written to `dir/chain.safetensors` with a validation file of `n` rows
/// (`dir/val.safetensors`); returns the request to bundle it, the layers and the inputs.
fn dense_chain(dir: &Path, classes: usize, n: usize) -> (CreateRequest, Vec<Linear>, Vec<f32>) {
    let layers = vec![
        Linear {
            name: "fc1",
            rows: 32,
            cols: 16,
            weight: values(1010, 32 * 16).iter().map(|v| v / 2.0).collect(),
            bias: Some(values(1011, 32).iter().map(|v| v / 8.0).collect()),
        },
        Linear {
            name: "fc2",
            rows: classes,
            cols: 32,
            weight: values(1012, classes * 32),
            bias: None,
        },
    ];
    std::fs::create_dir_all(dir).unwrap();
    let ckpt = dir.join("chain.safetensors");
    write_st(
        &ckpt,
        &layers.iter().flat_map(Linear::raws).collect::<Vec<_>>(),
    );
    let validation = dir.join("val.safetensors");
    let inputs = write_chain_validation(&validation, n, 16, classes, 1013);
    let req = CreateRequest {
        validation: Some(validation),
        ..request(&ckpt)
    };
    (req, layers, inputs)
}

/// The tensor names of a bundle's validation file.
fn validation_names(b: &Bundle) -> BTreeSet<String> {
    b.file(ternary_bundle::FileRole::Validation)
        .expect("a validation file")
        .header()
        .entries
        .iter()
        .map(|e| e.name.clone())
        .collect()
}

/// The stored form of a bundle's distributions: `None`, `Some(None)` for the full form,
/// `Some(Some(k))` for the top k.
fn stored_form(b: &Bundle) -> Option<Option<usize>> {
    use ternary_bundle::read::DistributionView;
    b.validation()
        .expect("a validation set")
        .distributions
        .map(|d| match d {
            DistributionView::Full { .. } => None,
            DistributionView::TopK { k, .. } => Some(k),
        })
}

/// A chain of layers: by default the full log-softmax ([200, 10]); `--original-top-k 0` no
/// distributions and format 2.0 (the lowest version of its other rules: original predictions);
/// `--original-top-k 4` the top 4, whose log-probabilities are the full form's at its ids,
/// the 4 largest of each row, ties to the lower id; K = 10 (every class) is allowed, 11 is
/// refused naming the flag and the classes.
#[test]
fn original_top_k_chooses_the_stored_distributions_of_a_chain() {
    use ternary_bundle::read::DistributionView;
    let tmp = tempfile::tempdir().unwrap();
    let (req, layers, inputs) = dense_chain(&tmp.path().join("src"), 10, 200);
    let with_k = |k: Option<u64>| CreateRequest {
        original_top_k: k,
        ..req.clone()
    };
    let default = tmp.path().join("default");
    create(&req, &default).unwrap();
    let b = Bundle::open(&default).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.manifest().format_version, "5.0");
    assert_eq!(stored_form(&b), Some(None));
    let full = match b.validation().unwrap().distributions.unwrap() {
        DistributionView::Full { log_probs } => f32s(log_probs),
        _ => unreachable!(),
    };
    assert_eq!(full.len(), 200 * 10);
    let layers_predictions = stored_predictions(&b).unwrap();
    assert_eq!(layers_predictions, chain_predictions(&layers, &inputs));
    // The log-softmax of the dense model's logits, recomputed here in f64 (the writer runs
    // it in f32: its logits differ in the last bits).
    for (r, (row, logits)) in full
        .chunks(10)
        .zip(chain_logits(&layers, &inputs))
        .enumerate()
    {
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + logits.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        for c in 0..10 {
            let want = logits[c] - lse;
            assert!(
                (f64::from(row[c]) - want).abs() < 1e-5,
                "row {r} class {c}: {} vs {want}",
                row[c]
            );
        }
        let best = (0..10).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        assert_eq!(best as i64, layers_predictions[r], "row {r}");
    }

    let none = tmp.path().join("none");
    create(&with_k(Some(0)), &none).unwrap();
    let b = Bundle::open(&none).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.manifest().format_version, "2.0");
    assert_eq!(stored_form(&b), None);
    assert_eq!(
        validation_names(&b),
        ["inputs", "labels", "original_predictions"]
            .map(String::from)
            .into()
    );
    assert_eq!(stored_predictions(&b).unwrap(), layers_predictions);

    let top = tmp.path().join("top4");
    create(&with_k(Some(4)), &top).unwrap();
    let b = Bundle::open(&top).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.manifest().format_version, "5.0");
    assert_eq!(stored_form(&b), Some(Some(4)));
    let DistributionView::TopK {
        ids,
        log_probs,
        log_sum_exp,
        label_log_probs,
        ..
    } = b.validation().unwrap().distributions.unwrap()
    else {
        unreachable!()
    };
    let (ids, lp, lse, label_lp) = (
        i64s(ids),
        f32s(log_probs),
        f32s(log_sum_exp),
        f32s(label_log_probs),
    );
    assert_eq!((ids.len(), lp.len(), lse.len()), (800, 800, 200));
    for (r, row) in full.chunks(10).enumerate() {
        let mut order: Vec<usize> = (0..10).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let want: Vec<i64> = order[..4].iter().map(|&c| c as i64).collect();
        assert_eq!(&ids[r * 4..r * 4 + 4], want.as_slice(), "row {r}");
        for k in 0..4 {
            assert_eq!(lp[r * 4 + k], row[order[k]], "row {r}");
        }
        assert_eq!(label_lp[r], row[r % 10], "row {r}: label {}", r % 10);
        assert!(lse[r].is_finite());
    }
    assert_eq!(stored_predictions(&b).unwrap(), layers_predictions);

    // K may be every class, not more.
    create(&with_k(Some(10)), &tmp.path().join("top10")).unwrap();
    let err = create_error(&with_k(Some(11)), &tmp.path().join("top11"));
    assert_names(&err, &["--original-top-k 11", "10 classes", "at most 10"]);
    assert!(!tmp.path().join("top11").exists());
}

/// A decoder model directory: `--original-top-k 0` keeps format 3.0 (a decoder with original
/// predictions of the dense source), the default stores the full form [n, t - 1, vocab];
/// a K above the vocabulary is refused naming the flag and the tokens.
#[test]
fn original_top_k_chooses_the_stored_distributions_of_a_decoder() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec(Family::Llama, false);
    let dir = tmp.path().join("model");
    write_model_dir(
        &dir,
        &hf_config(&spec, None),
        &decoder_weights(&spec, 1020)
            .iter()
            .map(|(n, (shape, v))| f32_raw(n, shape, v))
            .collect::<Vec<_>>(),
    );
    let validation = tmp.path().join("tokens.safetensors");
    write_token_validation(&validation, 3, 9, spec.vocab_size, 1021);
    let req = |k| CreateRequest {
        validation: Some(validation.clone()),
        original_top_k: k,
        ..request(&dir)
    };
    let none = tmp.path().join("none");
    create(&req(Some(0)), &none).unwrap();
    let b = Bundle::open(&none).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.manifest().format_version, "3.0");
    assert_eq!(stored_form(&b), None);
    assert!(stored_predictions(&b).is_some());

    let full = tmp.path().join("full");
    create(&req(None), &full).unwrap();
    let b = Bundle::open(&full).unwrap();
    check_all(&b).unwrap();
    assert_eq!(b.manifest().format_version, "5.0");
    assert_eq!(stored_form(&b), Some(None));
    let header = b
        .file(ternary_bundle::FileRole::Validation)
        .unwrap()
        .header();
    let e = header.get("original_log_probs").unwrap();
    assert_eq!(e.shape, vec![3, 8, 56]);

    let top = tmp.path().join("top");
    create(&req(Some(56)), &top).unwrap();
    assert_eq!(stored_form(&Bundle::open(&top).unwrap()), Some(Some(56)));
    let err = create_error(&req(Some(57)), &tmp.path().join("top57"));
    assert_names(&err, &["--original-top-k 57", "56 tokens", "at most 56"]);

    // Through the binary: the flag reaches the writer, and its refusal exits 1.
    let cli = tmp.path().join("cli");
    let args = |k: &'static str, out: &Path| {
        [
            "--from".to_string(),
            s(&dir).into(),
            "--validation".into(),
            s(&validation).into(),
            "--original-top-k".into(),
            k.into(),
            "--out".into(),
            s(out).into(),
        ]
    };
    let a = args("3", &cli);
    cli_create(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(stored_form(&Bundle::open(&cli).unwrap()), Some(Some(3)));
    let a = args("57", &tmp.path().join("cli57"));
    let stderr = cli_create_fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_names(&stderr, &["--original-top-k 57", "56 tokens"]);
}

/// The writer's default (spec section 9.1): the full form while samples × classes <= 2^21
/// values, above that the top min(64, classes). 16384 samples of 128 classes are exactly
/// 2^21; one more sample tips it.
#[test]
fn the_default_form_is_full_up_to_2_pow_21_values_then_the_top_64() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, form) in [(16384, None), (16385, Some(64))] {
        let (req, ..) = dense_chain(&tmp.path().join(format!("src{n}")), 128, n);
        let out = tmp.path().join(format!("b{n}"));
        create(&req, &out).unwrap();
        let b = Bundle::open(&out).unwrap();
        assert_eq!(stored_form(&b), Some(form), "{n} samples");
        assert_eq!(b.manifest().format_version, "5.0");
    }
}
