//! `bundle create --from model.gguf` (spec section 18.6): a GGUF file of a Llama or BitNet
//! decoder as a source of given trits and scales. TQ1_0, TQ2_0 and I2_S tensors become trits
//! with the scales the file states (never re-quantized); F32, F16 and BF16 tensors are carried;
//! names and hyperparameters map back to transformers' (the `llama` q/k RoPE permutation
//! undone). A file this crate exported carries the bundle's exact scales (`bundle.scale.*`
//! keys): each is checked against the blocks it covers and taken, so that the round trip gives
//! the same trits, scales and FP16 bytes; a quantized tensor kept as F16 is read back as trits
//! when its values are exactly 0 or ±f16(scale). Any other file's scales come from its blocks:
//! one per tensor when every block's `d` agrees, one per row when each row's do, else one per
//! block of 256 (groups).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use half::f16;
use serde_json::json;

use crate::error::{escape_name, Error, Result, Violation};
use crate::format::decoder::{DecoderSpec, Family};
use crate::format::le;
use crate::format::manifest::{QuantSourceSpec, ScaleConvention};
use crate::format::quantization::Granularity;
use crate::format::rules::Rule;
use crate::format::safetensors::Dtype;
use crate::gguf::container::{Array, Value};
use crate::gguf::export::{
    gguf_name, in_file, permuted_source_row, scale_key, GRANULARITY_KEY, GROUP_SIZE_KEY,
};
use crate::gguf::read::{GgufFile, GgufTensor};
use crate::gguf::ternary::{unpack_i2s, unpack_tq1_0, unpack_tq2_0, BLOCK};
use crate::gguf::types::GgmlType;
use crate::source::given::{common_granularity, GivenScales, GivenTensor};
use crate::source::{AssetFile, SourceTensor, TensorSource};

/// The `source.format` of a bundle read from GGUF.
pub const SOURCE_FORMAT: &str = "gguf";

/// One model tensor and the GGUF tensor that holds it.
#[derive(Debug, Clone)]
struct Entry {
    /// transformers' name (rule 2.14).
    name: String,
    /// Row-major shape.
    shape: Vec<u64>,
    /// Index into the file's tensors.
    index: usize,
    /// For q/k of a `llama` file: the heads whose rows llama.cpp's permutation interleaved.
    permuted: Option<usize>,
    /// Whether it becomes a quantized tensor of the bundle.
    quantized: bool,
}

/// The bundle's exact scales, when the file carries them (`bundle.granularity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exact {
    /// The file states none: scales come from the blocks.
    No,
    /// `bundle.granularity` (and `bundle.group_size`) as written by the export.
    Yes(Granularity),
}

/// A GGUF decoder as a weights source (see the module documentation).
pub struct GgufModel {
    file: GgufFile,
    arch: String,
    spec: DecoderSpec,
    entries: Vec<Entry>,
    exact: Exact,
}

impl GgufModel {
    /// Opens `path` (rules 8.4, 8.5), maps its architecture and hyperparameters to a decoder
    /// (section 16.2) and matches every tensor of the model to one of the file: each present
    /// with its shape, nothing else in the file.
    pub fn open(path: &Path) -> Result<GgufModel> {
        let file = GgufFile::open(path)?;
        let h = file.header();
        let bad = |expected: String, found: String| -> Error {
            Violation::new(path, Rule::GgufModel, expected, found).into()
        };
        let arch = h
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("general.architecture, a STRING".into(), "none".into()))?
            .to_string();
        let family = match arch.as_str() {
            "llama" => Family::Llama,
            "bitnet" | "bitnet-b1.58" => Family::Bitnet,
            other => {
                return Err(bad(
                    "architecture llama, bitnet or bitnet-b1.58 (the decoders of section 16.2)"
                        .into(),
                    format!("{other:?}"),
                ))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let int = |k: &str, default: Option<u64>| -> Result<u64> {
            match h.get(&key(k)) {
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| bad(format!("{}: an unsigned integer", key(k)), v.show())),
                None => {
                    default.ok_or_else(|| bad(format!("{}, an integer", key(k)), "none".into()))
                }
            }
        };
        let size = |v: u64, k: &str| -> Result<usize> {
            usize::try_from(v).map_err(|_| bad(format!("{} that fits", key(k)), v.to_string()))
        };
        let hidden = int("embedding_length", None)?;
        let heads = int("attention.head_count", None)?;
        let head_dim = int(
            "attention.key_length",
            Some(hidden.checked_div(heads).unwrap_or(0)),
        )?;
        if let Some(v) = h.get(&key("attention.value_length")) {
            if v.as_u64() != Some(head_dim) {
                return Err(bad(
                    format!(
                        "{} equal to key_length {head_dim}",
                        key("attention.value_length")
                    ),
                    v.show(),
                ));
            }
        }
        if let Some(v) = h.get(&key("rope.dimension_count")) {
            if v.as_u64() != Some(head_dim) {
                return Err(bad(
                    format!("{} equal to the head width {head_dim} (RoPE on the whole head, section 16.2)", key("rope.dimension_count")),
                    v.show(),
                ));
            }
        }
        if let Some(v) = h.get(&key("rope.scaling.type")) {
            let factor = h.get(&key("rope.scaling.factor")).and_then(Value::as_f64);
            let plain = matches!(v.as_str(), Some("none"))
                || (matches!(v.as_str(), Some("linear")) && factor.is_none_or(|f| f == 1.0));
            if !plain {
                return Err(bad(
                    format!(
                        "{}: none, or linear with factor 1 (section 16.2 has no RoPE scaling)",
                        key("rope.scaling.type")
                    ),
                    format!("{} factor {factor:?}", v.show()),
                ));
            }
        }
        let float = |k: &str, default: Option<f64>| -> Result<f64> {
            match h.get(&key(k)) {
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| bad(format!("{}: a float", key(k)), v.show())),
                None => default.ok_or_else(|| bad(format!("{}, a float", key(k)), "none".into())),
            }
        };
        let embd = h
            .tensor("token_embd.weight")
            .ok_or_else(|| bad("a tensor token_embd.weight".into(), "none".into()))?;
        let vocab = int("vocab_size", embd.ne.get(1).copied())?;
        let spec = DecoderSpec {
            family,
            vocab_size: size(vocab, "vocab_size")?,
            hidden_size: size(hidden, "embedding_length")?,
            intermediate_size: size(int("feed_forward_length", None)?, "feed_forward_length")?,
            num_hidden_layers: size(int("block_count", None)?, "block_count")?,
            num_attention_heads: size(heads, "attention.head_count")?,
            num_key_value_heads: size(
                int("attention.head_count_kv", Some(heads))?,
                "attention.head_count_kv",
            )?,
            head_dim: size(head_dim, "attention.key_length")?,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", None)? as f32,
            rope_theta: float("rope.freq_base", Some(10_000.0))?,
            tie_word_embeddings: h.tensor("output.weight").is_none(),
        };
        spec.check().map_err(|m| {
            let found = if m.contains("overflow") {
                format!(
                    "sizes whose tensors overflow: {} {}, {} {}, {} {}, {} {}, {} {}, {} {}",
                    key("block_count"),
                    spec.num_hidden_layers,
                    key("embedding_length"),
                    spec.hidden_size,
                    key("feed_forward_length"),
                    spec.intermediate_size,
                    key("attention.head_count"),
                    spec.num_attention_heads,
                    key("attention.key_length"),
                    spec.head_dim,
                    key("vocab_size"),
                    spec.vocab_size
                )
            } else {
                gguf_keys_in(&m, &arch)
            };
            bad("hyperparameters of a decoder (section 16.2)".into(), found)
        })?;
        let exact = match h.get(GRANULARITY_KEY) {
            None => Exact::No,
            Some(v) => Exact::Yes(match (v.as_str(), h.get(GROUP_SIZE_KEY).and_then(Value::as_u64)) {
                (Some("tensor"), _) => Granularity::Tensor,
                (Some("channel"), _) => Granularity::Channel,
                (Some("group"), Some(g)) if g > 0 => Granularity::Group(g),
                _ => {
                    return Err(bad(
                        format!("{GRANULARITY_KEY} \"tensor\", \"channel\" or \"group\" (with {GROUP_SIZE_KEY} >= 1)"),
                        v.show(),
                    ))
                }
            }),
        };
        let mut entries = Vec::new();
        let mut used = BTreeSet::new();
        for (name, shape) in spec.tensors() {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let gname = gguf_name(&name)
                .ok_or_else(|| bad(format!("a GGUF name for {name}"), "none".into()))?;
            let index = h.tensors.iter().position(|t| t.name == gname).ok_or_else(|| -> Error {
                Violation::new(
                    path,
                    Rule::GgufModel,
                    format!("the tensor of {name} (shape {shape:?}), which the hyperparameters need"),
                    "none",
                )
                .tensor(&gname)
                .into()
            })?;
            let t = &h.tensors[index];
            if t.shape() != shape {
                return Err(Violation::new(
                    path,
                    Rule::GgufModel,
                    format!(
                        "shape {shape:?} (ne {:?}) for {name}",
                        shape.iter().rev().collect::<Vec<_>>()
                    ),
                    format!("ne {:?}", t.ne),
                )
                .tensor(&gname)
                .into());
            }
            let permuted = match (arch.as_str(), name.rsplit('.').nth(1)) {
                ("llama", Some("q_proj")) => Some(spec.num_attention_heads),
                ("llama", Some("k_proj")) => Some(spec.num_key_value_heads),
                _ => None,
            };
            if let Some(n) = permuted {
                if shape[0] % (2 * n as u64) != 0 {
                    return Err(Violation::new(
                        path,
                        Rule::GgufModel,
                        format!("rows a multiple of 2 × {n} heads (llama.cpp's RoPE permutation)"),
                        format!("{} rows", shape[0]),
                    )
                    .tensor(&gname)
                    .into());
                }
            }
            let keyed = h.get(&scale_key(&gname)).is_some();
            let quantized = t.ggml_type.is_ternary() || (keyed && t.ggml_type == GgmlType::F16);
            if keyed && !quantized {
                return Err(Violation::new(
                    path,
                    Rule::GgufModel,
                    "scales (bundle.scale.*) only for a ternary tensor or an F16 one kept from it",
                    format!(
                        "{} for a tensor of type {}",
                        scale_key(&gname),
                        t.ggml_type.name()
                    ),
                )
                .tensor(&gname)
                .into());
            }
            if keyed && exact == Exact::No {
                return Err(Violation::new(
                    path,
                    Rule::GgufModel,
                    format!("{GRANULARITY_KEY} beside the scale keys (bundle.scale.*)"),
                    format!("{} without it", scale_key(&gname)),
                )
                .tensor(&gname)
                .into());
            }
            if quantized && exact != Exact::No && !keyed {
                return Err(Violation::new(
                    path,
                    Rule::GgufModel,
                    format!("{} (the file states {GRANULARITY_KEY})", scale_key(&gname)),
                    "none",
                )
                .tensor(&gname)
                .into());
            }
            used.insert(index);
            entries.push(Entry {
                name,
                shape,
                index,
                permuted,
                quantized,
            });
        }
        if let Some(extra) = h
            .tensors
            .iter()
            .enumerate()
            .find(|(i, _)| !used.contains(i))
        {
            return Err(Violation::new(
                path,
                Rule::GgufModel,
                format!("only the tensors of the {arch} model its hyperparameters describe"),
                "a tensor that is not part of it",
            )
            .tensor(&extra.1.name)
            .into());
        }
        Ok(GgufModel {
            file,
            arch,
            spec,
            entries,
            exact,
        })
    }

    /// The decoder.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// The architecture the file names.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The bundle tensors that are given trits.
    pub fn quantized(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .filter(|e| e.quantized)
            .map(|e| e.name.clone())
            .collect()
    }

    /// The bundle's granularity: the file's `bundle.granularity`, else the finest of its
    /// tensors' (section 7.1), which reads every ternary tensor's scales.
    pub fn granularity(&self) -> Result<Granularity> {
        if let Exact::Yes(g) = self.exact {
            return Ok(g);
        }
        let mut each = Vec::new();
        for e in self.entries.iter().filter(|e| e.quantized) {
            each.push(self.scales_of(e)?.granularity());
        }
        common_granularity(each).map_err(|m| {
            Violation::new(self.file.path(), Rule::GivenTrits, "one group size", m).into()
        })
    }

    /// `quantization.source` of the bundle (rule 2.15).
    pub fn record(&self) -> QuantSourceSpec {
        let mut types: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.entries {
            *types.entry(self.tensor(e).ggml_type.name()).or_default() += 1;
        }
        let ternary: Vec<&str> = types
            .keys()
            .copied()
            .filter(|t| matches!(*t, "TQ1_0" | "TQ2_0" | "I2_S"))
            .collect();
        let scale_name = match (ternary.contains(&"I2_S"), ternary.len()) {
            (true, 1) => "scale",
            (false, _) => "d",
            _ => "d, scale",
        };
        QuantSourceSpec {
            format: SOURCE_FORMAT.into(),
            scale_name: scale_name.into(),
            scale_convention: ScaleConvention::Multiply.name().into(),
            details: Some(json!({
                "architecture": self.arch,
                "tensor_types": types,
                "scales": match self.exact {
                    Exact::Yes(_) => "bundle.scale keys (checked against the blocks)",
                    Exact::No => "the blocks' d (I2_S: the tensor's scale)",
                },
            })),
        }
    }

    fn tensor(&self, e: &Entry) -> &GgufTensor {
        &self.file.header().tensors[e.index]
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no tensor {}",
                self.file.path().display(),
                escape_name(name)
            ))
        })
    }

    fn violation(
        &self,
        e: &Entry,
        rule: Rule,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Error {
        Violation::new(self.file.path(), rule, expected, found)
            .tensor(&self.tensor(e).name)
            .into()
    }

    /// Rows of the file's order back in transformers' order (`llama` q/k): the tensor's
    /// values, or its scales per row or per group of a row; a single per-tensor scale stays.
    fn unpermute<T: Copy>(&self, e: &Entry, file_rows: Vec<T>) -> Vec<T> {
        let rows = e.shape[0] as usize;
        let Some(heads) = e.permuted.filter(|_| file_rows.len() >= rows) else {
            return file_rows;
        };
        let cols = file_rows.len() / rows.max(1);
        let mut out = file_rows.clone();
        for r in 0..rows {
            let src = permuted_source_row(r, rows, heads);
            out[src * cols..(src + 1) * cols].copy_from_slice(&file_rows[r * cols..(r + 1) * cols]);
        }
        out
    }

    /// The trits in the file's row order and each block's `d` (TQ) or the tensor's scale
    /// (I2_S, one value); F16 fallback tensors give values instead (see [`Self::given`]).
    fn blocks(&self, e: &Entry) -> Result<(Vec<i8>, Vec<f32>)> {
        let t = self.tensor(e);
        let data = self.file.data(t);
        let n = t.elements() as usize;
        let code = |i: usize| {
            self.violation(
                e,
                Rule::GgufTensor,
                "codes 0, 1, 2 (trits -1, 0, +1)",
                format!("code 3 at weight {i}"),
            )
        };
        let out = match t.ggml_type {
            GgmlType::Tq1_0 | GgmlType::Tq2_0 => {
                let size = if t.ggml_type == GgmlType::Tq1_0 {
                    54
                } else {
                    66
                };
                let mut trits = Vec::with_capacity(n);
                let mut ds = Vec::with_capacity(n / BLOCK);
                for (b, block) in data.chunks_exact(size).enumerate() {
                    let (tr, d) = if size == 54 {
                        unpack_tq1_0(block)
                    } else {
                        unpack_tq2_0(block).map_err(|i| code(b * BLOCK + i))?
                    };
                    trits.extend_from_slice(&tr);
                    ds.push(d.to_f32());
                }
                (trits, ds)
            }
            GgmlType::I2S => {
                let (trits, s) = unpack_i2s(data, n).map_err(code)?;
                (trits, vec![s])
            }
            other => {
                return Err(self.violation(
                    e,
                    Rule::GgufTensor,
                    "a ternary type",
                    other.name().to_string(),
                ))
            }
        };
        self.file.release(data);
        Ok(out)
    }

    /// The scales of ternary tensor `e` from its blocks alone (a file without `bundle.scale`
    /// keys), in transformers' row order.
    fn scales_of(&self, e: &Entry) -> Result<GivenScales> {
        let (trits, ds) = self.blocks(e)?;
        self.block_scales(e, &trits, &ds)
    }

    fn block_scales(&self, e: &Entry, trits: &[i8], ds: &[f32]) -> Result<GivenScales> {
        let t = self.tensor(e);
        let rows = e.shape[0] as usize;
        if t.ggml_type == GgmlType::I2S {
            let s = ds[0];
            let any = trits.iter().any(|&x| x != 0);
            if any && !(s.is_finite() && s > 0.0) {
                return Err(self.violation(
                    e,
                    Rule::GgufTensor,
                    "an I2_S scale finite and > 0",
                    s.to_string(),
                ));
            }
            return Ok(GivenScales::Tensor(if s.is_finite() && s > 0.0 {
                s
            } else {
                1.0
            }));
        }
        let per_row = ds.len() / rows.max(1);
        // Blocks with a non-zero trit carry a scale; all-zero blocks (d = 0 as ggml writes
        // them) take their row's, or the tensor's.
        let mut live: Vec<Option<f32>> = Vec::with_capacity(ds.len());
        for (b, &d) in ds.iter().enumerate() {
            let block = &trits[b * BLOCK..(b + 1) * BLOCK];
            if block.iter().all(|&x| x == 0) {
                live.push(None);
            } else if d.is_finite() && d > 0.0 {
                live.push(Some(d));
            } else {
                return Err(self.violation(
                    e,
                    Rule::GgufTensor,
                    "d finite and > 0 in a block with a non-zero trit",
                    format!("d = {d} in block {b}"),
                ));
            }
        }
        let first = live.iter().flatten().next().copied().unwrap_or(1.0);
        let file_order = |v: Vec<f32>| self.unpermute(e, v);
        if live.iter().flatten().all(|&d| d == first) {
            return Ok(GivenScales::Tensor(first));
        }
        let row_scale = |r: usize| {
            live[r * per_row..(r + 1) * per_row]
                .iter()
                .flatten()
                .next()
                .copied()
        };
        let channel = (0..rows).all(|r| {
            let s = row_scale(r);
            live[r * per_row..(r + 1) * per_row]
                .iter()
                .flatten()
                .all(|&d| Some(d) == s)
        });
        if channel {
            return Ok(GivenScales::Channel(file_order(
                (0..rows).map(|r| row_scale(r).unwrap_or(first)).collect(),
            )));
        }
        let mut groups = Vec::with_capacity(live.len());
        for r in 0..rows {
            let fill = row_scale(r).unwrap_or(first);
            groups.extend(
                live[r * per_row..(r + 1) * per_row]
                    .iter()
                    .map(|d| d.unwrap_or(fill)),
            );
        }
        Ok(GivenScales::Group {
            size: BLOCK as u64,
            scales: file_order(groups),
        })
    }

    /// The exact scales of `e` from its `bundle.scale` key, in the file's row order, checked
    /// for their count (rule 8.5).
    fn keyed_scales(&self, e: &Entry, g: Granularity) -> Result<Vec<f32>> {
        let t = self.tensor(e);
        let key = scale_key(&t.name);
        let (rows, cols) = (e.shape[0], e.shape[1..].iter().product::<u64>());
        let want = match g {
            Granularity::Tensor => 1,
            Granularity::Channel => rows,
            Granularity::Group(size) => rows * cols.div_ceil(size),
        };
        match self.file.header().get(&key) {
            Some(Value::Array(Array::F32(v))) if v.len() as u64 == want => Ok(v.clone()),
            other => Err(self.violation(
                e,
                Rule::GgufTensor,
                format!("{key}: ARRAY of {want} FLOAT32 (granularity {})", g.name()),
                other.map_or("none".into(), |v| match v {
                    Value::Array(a) => format!("{} of {}", v.type_name(), a.len()),
                    v => v.type_name(),
                }),
            )),
        }
    }

    /// Trits and scales of a tensor with `bundle.scale` keys: the keyed scales, each checked
    /// against what the file holds (TQ: every block with a non-zero trit has d = f16(scale);
    /// I2_S: its scale equals every keyed scale; F16: every value is 0 or ±f16(scale)).
    fn exact(&self, e: &Entry, g: Granularity) -> Result<(Vec<i8>, GivenScales)> {
        let t = self.tensor(e);
        let scales = self.keyed_scales(e, g)?;
        let (rows, cols) = (
            e.shape[0] as usize,
            e.shape[1..].iter().product::<u64>() as usize,
        );
        let (_, group) = g.row_layout(cols);
        let scale_at = |r: usize, c: usize| g.row_scales(&scales, r, cols)[c / group.max(1)];
        let mismatch = |what: String| {
            self.violation(
                e,
                Rule::GgufTensor,
                format!("values that {} states", scale_key(&t.name)),
                what,
            )
        };
        let trits: Vec<i8> = match t.ggml_type {
            GgmlType::F16 => {
                let data = self.file.data(t);
                let mut trits = Vec::with_capacity(rows * cols);
                for (i, v) in le::f16s(data).enumerate() {
                    let s = f16::from_f32(scale_at(i / cols, i % cols));
                    let trit = if v.to_bits() == 0 {
                        0
                    } else if v == s {
                        1
                    } else if v == -s {
                        -1
                    } else {
                        return Err(mismatch(format!(
                            "F16 value {v} at row {} column {}: not 0 or ±f16(scale) = ±{s}",
                            i / cols,
                            i % cols
                        )));
                    };
                    trits.push(trit);
                }
                self.file.release(data);
                trits
            }
            GgmlType::I2S => {
                let (trits, ds) = self.blocks(e)?;
                if trits.iter().any(|&x| x != 0) {
                    if let Some(s) = scales.iter().find(|s| s.to_bits() != ds[0].to_bits()) {
                        return Err(mismatch(format!(
                            "I2_S scale {} where the key states {s}",
                            ds[0]
                        )));
                    }
                }
                trits
            }
            _ => {
                let (trits, ds) = self.blocks(e)?;
                // Every non-zero weight: d of its block = f16 of the scale covering it (one
                // block may span several groups finer than 256 columns).
                let per_row = cols / BLOCK;
                for (b, &d) in ds.iter().enumerate() {
                    let (r, c0) = (b / per_row, (b % per_row) * BLOCK);
                    let block = &trits[b * BLOCK..(b + 1) * BLOCK];
                    for (j, _) in block.iter().enumerate().filter(|(_, &x)| x != 0) {
                        let s = f16::from_f32(scale_at(r, c0 + j)).to_f32();
                        if d.to_bits() != s.to_bits() {
                            return Err(mismatch(format!(
                                "d = {d} in block {b} (row {r}, columns {c0}..{}) where f16 of the scale stated for column {} is {s}",
                                c0 + BLOCK,
                                c0 + j
                            )));
                        }
                    }
                }
                trits
            }
        };
        let trits = self.unpermute(e, trits);
        let scales = self.unpermute(e, scales);
        Ok((
            trits,
            match g {
                Granularity::Tensor => GivenScales::Tensor(scales[0]),
                Granularity::Channel => GivenScales::Channel(scales),
                Granularity::Group(size) => GivenScales::Group { size, scales },
            },
        ))
    }
}

impl TensorSource for GgufModel {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.entries
            .iter()
            .map(|e| SourceTensor {
                name: e.name.clone(),
                shape: e.shape.clone(),
                dtype: match self.tensor(e).ggml_type {
                    GgmlType::F32 => Dtype::F32,
                    GgmlType::F16 => Dtype::F16,
                    GgmlType::Bf16 => Dtype::BF16,
                    _ => Dtype::U8,
                },
            })
            .collect()
    }

    /// Float tensors converted exactly to f32 (transformers' row order); a quantized one as
    /// its effective weights f32(t × scale).
    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        if let Some(g) = self.given(name)? {
            let cols = e.shape[1..].iter().product::<u64>();
            return g.values(e.shape[0], cols).map_err(|m| {
                Error::InvalidArgument(format!(
                    "{}: tensor {}: {m}",
                    self.file.path().display(),
                    escape_name(name)
                ))
            });
        }
        let t = self.tensor(e);
        let data = self.file.data(t);
        let values: Vec<f32> = match t.ggml_type {
            GgmlType::F32 => le::f32s(data).collect(),
            GgmlType::F16 => le::f16s_to_f32(data),
            GgmlType::Bf16 => le::bf16s(data).map(f32::from).collect(),
            other => {
                return Err(self.violation(
                    e,
                    Rule::GgufTensor,
                    "a float type",
                    other.name().to_string(),
                ))
            }
        };
        self.file.release(data);
        Ok(self.unpermute(e, values))
    }

    fn sha256(&self) -> Option<String> {
        Some(self.file.sha256())
    }

    fn given(&self, name: &str) -> Result<Option<GivenTensor>> {
        let e = self.entry(name)?;
        if !e.quantized {
            return Ok(None);
        }
        let (trits, scales) = match self.exact {
            Exact::Yes(g) => self.exact(e, g)?,
            Exact::No => {
                let (trits, ds) = self.blocks(e)?;
                let scales = self.block_scales(e, &trits, &ds)?;
                (self.unpermute(e, trits), scales)
            }
        };
        Ok(Some(GivenTensor { trits, scales }))
    }
}

/// A decoder check's message with transformers' field names replaced by the GGUF keys of
/// `arch` they are read from.
fn gguf_keys_in(message: &str, arch: &str) -> String {
    const KEYS: [(&str, &str); 9] = [
        ("vocab_size", "vocab_size"),
        ("hidden_size", "embedding_length"),
        ("intermediate_size", "feed_forward_length"),
        ("num_hidden_layers", "block_count"),
        ("num_attention_heads", "attention.head_count"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("head_dim", "attention.key_length"),
        ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
        ("rope_theta", "rope.freq_base"),
    ];
    let mut out = message.to_string();
    for (field, key) in KEYS {
        out = out.replace(field, &format!("{arch}.{key}"));
    }
    out
}

/// Whether `path` is a GGUF file (its first four bytes are the magic).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == crate::gguf::container::MAGIC
}

/// The asset files of a GGUF file's tokenizer, for `create` (empty when it has none or it is
/// not converted: `notes` says why).
pub fn tokenizer_assets(model: &GgufModel, notes: &mut Vec<String>) -> Result<Vec<AssetFile>> {
    use crate::gguf::tokenizer::{from_gguf, TokenizerImport};
    let path = model.file.path();
    Ok(
        match from_gguf(&model.file.header().kvs, model.spec.vocab_size)
            .map_err(|e| in_file(&path.display().to_string(), e))?
        {
            TokenizerImport::Carried(assets) => assets,
            TokenizerImport::NotConverted(why) => {
                notes.push(format!("{}: tokenizer not carried: {why}", path.display()));
                Vec::new()
            }
            TokenizerImport::None => Vec::new(),
        },
    )
}
