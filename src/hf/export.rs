//! `bundle export --format hf` and `--format hf-bitnet` (spec sections 18.4 and 18.2): a decoder
//! bundle written out as a model directory that transformers' `from_pretrained` loads.
//!
//! This module owns what such a directory holds: `config.json` (spec 18.4's table, and for
//! hf-bitnet its `quantization_config`), the carried asset files (rule 1.6) copied byte for
//! byte, and the weights under their rule 2.14 names, in `model.safetensors` or in shards with
//! `model.safetensors.index.json`, filled in rule 2.14's order. It decides each tensor's bytes:
//! the FP16 file's (f16), f32(t × scale) and the stored F32 values (f32), their bfloat16 rounding
//! (bf16), or for hf-bitnet transformers' `pack_weights` bytes and `weight_scale` of every
//! quantized projection with the other tensors as stored.
//!
//! A conversion is exact or it is refused (spec section 18): what does not fit the target (a
//! chain of layers, a quantized embedding, per-row scales that differ) is an error naming the
//! tensor, never an approximation. The directory is published atomically (spec section 15,
//! `write::staging`); tensors are converted one at a time, written in chunks, and their
//! mapped pages released, so memory follows one tensor, not the model. This module does not
//! re-run `bundle verify`: it checks the packed bytes it decodes (rules 4.3, 4.4) but trusts the
//! digests and the FP16 file, which `bundle verify` proves.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use half::bf16;
use serde::Serialize;
use serde_json::Value;

use crate::error::{escape_name, Error, Result};
use crate::format::decoder::{is_projection, DecoderSpec, Family};
use crate::format::manifest::json::json_type;
use crate::format::manifest::{DecoderModelSpec, FileRole, ASSET_NAMES};
use crate::format::safetensors::{plan_layout, shape_string, Dtype};
use crate::hf::bitnet::{pack_weights, BitnetQuantization};
use crate::model::reference::{tensor_f32, WeightPath};
use crate::read::{Bundle, PackedTensor};
use crate::source::hf::{CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE};
use crate::write::safetensors::create_sized;
use crate::write::staging::{check_destination_of, sync_dir, write_synced, Replaceable, Staging};

/// transformers' default shard size, 5 GB (`max_shard_size="5GB"`: decimal gigabytes).
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// transformers' default `max_position_embeddings` of a Llama config (spec 18.4).
pub const DEFAULT_MAX_POSITION_EMBEDDINGS: u64 = 2048;

/// The asset whose token ids go into config.json (spec 18.4).
const GENERATION_CONFIG: &str = "generation_config.json";

/// The `__metadata__` of every weight file: PyTorch loaders require `format: pt`.
const PT_METADATA: (&str, &str) = ("format", "pt");

/// Bytes gathered before one positioned write: bounds the memory of a converted tensor.
const WRITE_CHUNK: usize = 8 << 20;

/// The element type of an `--format hf` export (`--dtype f16|bf16|f32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HfDtype {
    /// IEEE half precision: the bytes of `fp16.safetensors` (the default).
    #[default]
    F16,
    /// bfloat16: the round-to-nearest-even rounding of the f32 values.
    Bf16,
    /// Single precision: f32(t × scale) of quantized tensors, the stored F32 values of the others.
    F32,
}

impl HfDtype {
    /// The `--dtype` name: `"f16"`, `"bf16"` or `"f32"`.
    pub fn name(self) -> &'static str {
        match self {
            HfDtype::F16 => "f16",
            HfDtype::Bf16 => "bf16",
            HfDtype::F32 => "f32",
        }
    }

    /// config.json's `torch_dtype`: `"float16"`, `"bfloat16"` or `"float32"`.
    pub fn torch_dtype(self) -> &'static str {
        match self {
            HfDtype::F16 => "float16",
            HfDtype::Bf16 => "bfloat16",
            HfDtype::F32 => "float32",
        }
    }

    /// The safetensors dtype of the weights.
    pub fn dtype(self) -> Dtype {
        match self {
            HfDtype::F16 => Dtype::F16,
            HfDtype::Bf16 => Dtype::BF16,
            HfDtype::F32 => Dtype::F32,
        }
    }
}

/// The settings of an export to a model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfExport {
    /// The weights' element type (`--format hf`); hf-bitnet has fixed dtypes and takes only the
    /// default, [`HfDtype::F16`].
    pub dtype: HfDtype,
    /// The largest shard, in bytes of tensor data (>= 1; default
    /// [`DEFAULT_MAX_SHARD_SIZE`]): a model whose tensors take more is sharded.
    pub max_shard_size: u64,
    /// config.json's `max_position_embeddings` (>= 1; default
    /// [`DEFAULT_MAX_POSITION_EMBEDDINGS`]): a bundle does not record the context length.
    pub max_position_embeddings: u64,
    /// Replace an existing destination, if it is a model directory (it has a `config.json` and
    /// no `manifest.json`) or an empty directory.
    pub force: bool,
}

impl Default for HfExport {
    fn default() -> Self {
        HfExport {
            dtype: HfDtype::default(),
            max_shard_size: DEFAULT_MAX_SHARD_SIZE,
            max_position_embeddings: DEFAULT_MAX_POSITION_EMBEDDINGS,
            force: false,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Every file of the directory with its size in bytes, in the order written: config.json,
    /// the assets, the weight files, the index when sharded.
    pub files: Vec<(String, u64)>,
    /// Tensors in the state dict (for hf-bitnet, `weight_scale` tensors included).
    pub tensors: usize,
    /// Weight files: 1 for `model.safetensors`, else the number of shards.
    pub shards: usize,
    /// Bytes of tensor data over all weight files (the index's `total_size`).
    pub total_size: u64,
}

/// Writes decoder `bundle` to directory `out` as a transformers model directory (spec 18.4):
/// config.json, the carried assets, and the weights as `options.dtype`, sharded above
/// `options.max_shard_size`. A chain-of-layers bundle is refused (its state dict is
/// `bundle export --format safetensors`).
pub fn export_hf(bundle: &Bundle, out: &Path, options: &HfExport) -> Result<ExportSummary> {
    export_dir(bundle, out, options, Target::Dense(options.dtype))
}

/// Writes decoder `bundle` to directory `out` as a Hugging Face packed BitNet checkpoint
/// (spec 18.2, `autobitlinear` offline): each quantized projection as `pack_weights` U8
/// `[out / 4, in]` with its scale as `weight_scale` F32 `[1]`, every other tensor as the F32
/// values of `ternary.safetensors`, and config.json with `torch_dtype` `"float16"` and a
/// `quantization_config`. The dtypes are fixed: `options.dtype` must be the default
/// ([`HfDtype::F16`], the `torch_dtype`), anything else is refused.
///
/// Refused, naming the tensor: a quantized tensor other than the seven projections of a layer
/// (embedding, norm, head), a projection whose rows are not a multiple of 4, and channel or group
/// scales that are not all equal within a tensor (only per-tensor scales fit the format).
pub fn export_hf_bitnet(bundle: &Bundle, out: &Path, options: &HfExport) -> Result<ExportSummary> {
    if options.dtype != HfDtype::default() {
        return Err(Error::InvalidArgument(format!(
            "--dtype {}: hf-bitnet has fixed dtypes (packed U8 projections, F32 scales and other tensors, torch_dtype float16); leave the default ({})",
            options.dtype.name(),
            HfDtype::default().name()
        )));
    }
    export_dir(bundle, out, options, Target::Bitnet)
}

/// The two formats of a model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `--format hf`: every tensor dense in one dtype.
    Dense(HfDtype),
    /// `--format hf-bitnet`: quantized projections packed.
    Bitnet,
}

/// How the bytes of one output tensor are made.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Content {
    /// The tensor's bytes in `fp16.safetensors`.
    Fp16,
    /// Its f32 values (f32(t × scale), or the stored F32), as F32 or as BF16.
    Values(Dtype),
    /// Its trits as transformers' `pack_weights`.
    Packed,
    /// A per-tensor `weight_scale`.
    Scale(f32),
}

/// One tensor of the output state dict.
#[derive(Debug, Clone, PartialEq)]
struct OutTensor {
    /// The name it is written under.
    name: String,
    /// The bundle tensor it comes from.
    source: String,
    dtype: Dtype,
    shape: Vec<u64>,
    content: Content,
}

impl OutTensor {
    /// Its data bytes (shapes come from a validated manifest: no overflow).
    fn byte_len(&self) -> u64 {
        self.shape
            .iter()
            .fold(self.dtype.size(), |acc, &d| acc.saturating_mul(d))
    }
}

/// The export of both formats: checks, config.json, assets, weights, index, publication.
fn export_dir(
    bundle: &Bundle,
    out: &Path,
    options: &HfExport,
    target: Target,
) -> Result<ExportSummary> {
    let decoder = bundle.decoder().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: a chain-of-layers bundle (model.layers) has no transformers architecture: a model directory needs a decoder (model.decoder, spec section 18.4); write its state dict with `bundle export --format safetensors`",
            bundle.dir().display()
        ))
    })?;
    let model = bundle.manifest().model.decoder.as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: manifest.json: model.decoder missing from a decoder bundle",
            bundle.dir().display()
        ))
    })?;
    if options.max_shard_size == 0 {
        return Err(Error::InvalidArgument(
            "max shard size: expected at least 1 byte, found 0".into(),
        ));
    }
    if options.max_position_embeddings == 0 {
        return Err(Error::InvalidArgument(
            "max_position_embeddings: expected at least 1, found 0".into(),
        ));
    }
    check_destination(bundle, out, options.force)?;

    let (tensors, not_converted) = state_dict(bundle, decoder, target)?;

    let quantization_config = match target {
        Target::Dense(_) => None,
        Target::Bitnet => {
            let mut modules = vec!["lm_head".to_string()];
            modules.extend(not_converted);
            Some(BitnetConfig {
                quant_method: "bitnet",
                linear_class: "autobitlinear",
                quantization_mode: "offline",
                modules_to_not_convert: modules,
            })
        }
    };
    let torch_dtype = match target {
        Target::Dense(dtype) => dtype.torch_dtype(),
        Target::Bitnet => HfDtype::F16.torch_dtype(),
    };
    let config = config_json(
        bundle,
        decoder.family,
        model,
        options,
        torch_dtype,
        quantization_config,
    )?;
    if target == Target::Bitnet {
        check_converted_modules(bundle, &config, decoder)?;
    }

    let sizes: Vec<u64> = tensors.iter().map(OutTensor::byte_len).collect();
    let total_size = sizes.iter().fold(0u64, |a, &b| a.saturating_add(b));
    // A model within the size fills one shard: `model.safetensors`, no index.
    let shards = fill_shards(&sizes, options.max_shard_size);

    let staging = Staging::create(out)?;
    let mut files = Vec::new();
    files.push((
        CONFIG_FILE.to_string(),
        write_synced(&staging.dir.join(CONFIG_FILE), config.as_bytes())?,
    ));
    for asset in bundle.assets() {
        let name = asset.name();
        // Rule 2.17 proved the name is one of rule 1.6's plain file names; checked again
        // because it becomes a path here.
        if !ASSET_NAMES.contains(&name) {
            return Err(Error::InvalidArgument(format!(
                "{}: asset {}: not a file name a model directory can carry",
                bundle.dir().display(),
                escape_name(name)
            )));
        }
        let size = write_synced(&staging.dir.join(name), asset.bytes())?;
        files.push((name.to_string(), size));
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, range) in shards.iter().enumerate() {
        let file_name = if n == 1 {
            WEIGHTS_FILE.to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let part = &tensors[range.clone()];
        let size = write_weights(bundle, &staging.dir.join(&file_name), part)?;
        for t in part {
            weight_map.insert(t.name.clone(), file_name.clone());
        }
        files.push((file_name, size));
    }
    if n > 1 {
        let index = ShardIndex {
            metadata: IndexMetadata { total_size },
            weight_map,
        };
        let text = pretty(&index, INDEX_FILE)?;
        files.push((
            INDEX_FILE.to_string(),
            write_synced(&staging.dir.join(INDEX_FILE), text.as_bytes())?,
        ));
    }
    sync_dir(&staging.dir)?;
    // Published atomically (spec section 15): a no-replace rename, or with `force` an exchange
    // with the model directory checked above, which is then deleted. An ancestor of the bundle
    // was refused above, before any work, and cannot become one meanwhile.
    staging.commit_replacing(out, options.force, Replaceable::ModelDirectory)?;
    Ok(ExportSummary {
        files,
        tensors: tensors.len(),
        shards: n,
        total_size,
    })
}

/// The output state dict: every tensor of rule 2.14 in its order (the shard filling order,
/// spec 18.4), a packed projection followed by its `weight_scale`; and for hf-bitnet the modules
/// of the projections the bundle does not quantize (`modules_to_not_convert`).
fn state_dict(
    bundle: &Bundle,
    decoder: &DecoderSpec,
    target: Target,
) -> Result<(Vec<OutTensor>, Vec<String>)> {
    let mut tensors = Vec::new();
    let mut not_converted = Vec::new();
    for (name, shape) in decoder.tensors() {
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        // Rule 2.14 proved the names; a miss is reported, not a panic.
        if bundle.tensor(&name).is_none() {
            return Err(bundle.missing_tensor(FileRole::Ternary, &name));
        }
        match target {
            Target::Dense(dtype) => tensors.push(OutTensor {
                name: name.clone(),
                source: name,
                dtype: dtype.dtype(),
                shape,
                content: match dtype {
                    HfDtype::F16 => Content::Fp16,
                    HfDtype::F32 | HfDtype::Bf16 => Content::Values(dtype.dtype()),
                },
            }),
            Target::Bitnet => match bundle.packed(&name) {
                Some(p) => {
                    let scale = bitnet_scale(bundle, &name, &p)?;
                    tensors.push(OutTensor {
                        name: name.clone(),
                        source: name.clone(),
                        dtype: Dtype::U8,
                        shape: vec![p.rows as u64 / 4, p.cols as u64],
                        content: Content::Packed,
                    });
                    tensors.push(OutTensor {
                        name: format!("{name}_scale"),
                        source: name,
                        dtype: Dtype::F32,
                        shape: vec![1],
                        content: Content::Scale(scale),
                    });
                }
                None => {
                    if is_projection(&name) {
                        not_converted.push(module_of(&name));
                    }
                    tensors.push(OutTensor {
                        name: name.clone(),
                        source: name,
                        dtype: Dtype::F32,
                        shape,
                        content: Content::Values(Dtype::F32),
                    });
                }
            },
        }
    }
    Ok((tensors, not_converted))
}

/// The module of weight `name` (`x.weight` -> `x`), as `modules_to_not_convert` names it.
fn module_of(name: &str) -> String {
    name.strip_suffix(".weight").unwrap_or(name).to_string()
}

/// The one scale of quantized tensor `name` for `weight_scale`, after the checks of spec 18.2:
/// a projection, rows a multiple of 4, all its scales equal (finite and > 0).
fn bitnet_scale(bundle: &Bundle, name: &str, p: &PackedTensor<'_>) -> Result<f32> {
    let refuse = |expected: &str, found: String| {
        Error::InvalidArgument(format!(
            "{}: tensor {}: expected {expected} (spec section 18.2), found {found}",
            bundle.dir().display(),
            escape_name(name)
        ))
    };
    if !is_projection(name) {
        return Err(refuse(
            "a quantized tensor to be one of the seven projections of a layer (hf-bitnet packs only those; its embedding, norms and lm_head are float)",
            format!("a quantized {}", shape_string(&p.spec.shape)),
        ));
    }
    if p.rows % 4 != 0 {
        return Err(refuse(
            "a number of rows (out features) that is a multiple of 4 (pack_weights stores four rows per byte)",
            format!("{} rows", p.rows),
        ));
    }
    let scales = p.scales();
    let first = scales.first().copied().unwrap_or(f32::NAN);
    if !(first.is_finite() && first > 0.0) {
        return Err(refuse(
            "a finite scale > 0 (rule 4.5)",
            format!("scale {first}"),
        ));
    }
    if let Some(other) = scales.iter().find(|&&s| s != first) {
        return Err(refuse(
            "one scale for the whole tensor: only per-tensor scales fit the format (one weight_scale [1] per module)",
            format!(
                "{} {} scales that differ ({first} and {other})",
                scales.len(),
                p.granularity.name()
            ),
        ));
    }
    Ok(first)
}

/// The packed checkpoint reader's view of our config must convert exactly the bundle's quantized
/// tensors, so that reading the directory back gives the same bundle (spec 18.2).
fn check_converted_modules(bundle: &Bundle, config: &str, decoder: &DecoderSpec) -> Result<()> {
    let bad = |m: String| {
        Error::InvalidArgument(format!(
            "{}: the quantization_config written for it does not describe it: {m}",
            bundle.dir().display()
        ))
    };
    let converted = BitnetQuantization::from_config(config)
        .map_err(bad)?
        .ok_or_else(|| bad("no quantization_config".into()))?
        .converted(decoder)
        .map_err(bad)?;
    let quantized: BTreeSet<String> = bundle.quantized().map(|p| p.spec.name.clone()).collect();
    if converted != quantized {
        let diff: Vec<&String> = converted.symmetric_difference(&quantized).collect();
        return Err(bad(format!(
            "converted and quantized modules differ at {diff:?}"
        )));
    }
    Ok(())
}

/// config.json of spec 18.4 in the table's key order (hf-bitnet adds `quantization_config`).
#[derive(Serialize)]
struct HfConfig<'a> {
    architectures: [&'a str; 1],
    model_type: &'a str,
    vocab_size: u64,
    hidden_size: u64,
    intermediate_size: u64,
    num_hidden_layers: u64,
    num_attention_heads: u64,
    num_key_value_heads: u64,
    head_dim: u64,
    // f32 fields: serde_json writes the shortest decimal that reads back as the same f32, as
    // the manifest does (section 3.2).
    rms_norm_eps: f32,
    rope_theta: f32,
    tie_word_embeddings: bool,
    hidden_act: &'a str,
    attention_bias: bool,
    mlp_bias: bool,
    max_position_embeddings: u64,
    bos_token_id: Value,
    eos_token_id: Value,
    pad_token_id: Value,
    torch_dtype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantization_config: Option<BitnetConfig>,
}

/// hf-bitnet's `quantization_config` (spec 18.2).
#[derive(Serialize)]
struct BitnetConfig {
    quant_method: &'static str,
    linear_class: &'static str,
    quantization_mode: &'static str,
    modules_to_not_convert: Vec<String>,
}

/// `model.safetensors.index.json` as transformers writes it (keys sorted).
#[derive(Serialize)]
struct ShardIndex {
    metadata: IndexMetadata,
    weight_map: BTreeMap<String, String>,
}

/// The index's `metadata`.
#[derive(Serialize)]
struct IndexMetadata {
    total_size: u64,
}

/// Pretty JSON (2-space indent) with a trailing newline.
fn pretty(value: &impl Serialize, file: &str) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidArgument(format!("{file}: cannot serialize: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// The text of config.json.
fn config_json(
    bundle: &Bundle,
    family: Family,
    model: &DecoderModelSpec,
    options: &HfExport,
    torch_dtype: &str,
    quantization_config: Option<BitnetConfig>,
) -> Result<String> {
    let (architecture, hidden_act) = match family {
        Family::Llama => ("LlamaForCausalLM", "silu"),
        Family::Bitnet => ("BitNetForCausalLM", "relu2"),
    };
    let [bos_token_id, eos_token_id, pad_token_id] = token_ids(bundle)?;
    let config = HfConfig {
        architectures: [architecture],
        model_type: family.name(),
        vocab_size: model.vocab_size,
        hidden_size: model.hidden_size,
        intermediate_size: model.intermediate_size,
        num_hidden_layers: model.num_hidden_layers,
        num_attention_heads: model.num_attention_heads,
        num_key_value_heads: model.num_key_value_heads,
        head_dim: model.head_dim,
        rms_norm_eps: model.rms_norm_eps,
        rope_theta: model.rope_theta,
        tie_word_embeddings: model.tie_word_embeddings,
        hidden_act,
        attention_bias: false,
        mlp_bias: false,
        max_position_embeddings: options.max_position_embeddings,
        bos_token_id,
        eos_token_id,
        pad_token_id,
        torch_dtype,
        quantization_config,
    };
    pretty(&config, CONFIG_FILE)
}

/// `bos_token_id`, `eos_token_id`, `pad_token_id` of the carried generation_config.json, each
/// null when it is absent there or when there is no such asset. A value is kept as written when
/// it is an integer or a list of integers (transformers allows several end tokens); a file that
/// is not a JSON object, or another value, is refused: the ids would be guessed.
fn token_ids(bundle: &Bundle) -> Result<[Value; 3]> {
    let Some(asset) = bundle.asset(GENERATION_CONFIG) else {
        return Ok([Value::Null, Value::Null, Value::Null]);
    };
    let bad = |m: String| {
        Error::InvalidArgument(format!(
            "{}: {m} (config.json takes its token ids from it, spec section 18.4)",
            asset.path().display()
        ))
    };
    let v: Value = serde_json::from_slice(asset.bytes())
        .map_err(|e| bad(format!("expected a JSON object, found invalid JSON: {e}")))?;
    let object = v
        .as_object()
        .ok_or_else(|| bad(format!("expected a JSON object, found {}", json_type(&v))))?;
    let is_id = |x: &Value| x.is_i64() || x.is_u64();
    let id = |key: &str| -> Result<Value> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(x) if is_id(x) => Ok(x.clone()),
            Some(Value::Array(a)) if a.iter().all(is_id) => Ok(Value::Array(a.clone())),
            Some(other) => Err(bad(format!(
                "{key}: expected a token id (an integer), a list of them or null, found {other}"
            ))),
        }
    };
    Ok([
        id("bos_token_id")?,
        id("eos_token_id")?,
        id("pad_token_id")?,
    ])
}

/// Consecutive shards of the tensors of `sizes` (spec 18.4): filled in order, a new shard begun
/// when the next tensor would take the current one past `max`; a tensor larger than `max` is
/// therefore alone in its shard.
fn fill_shards(sizes: &[u64], max: u64) -> Vec<std::ops::Range<usize>> {
    let mut shards = Vec::new();
    let (mut start, mut size) = (0usize, 0u64);
    for (i, &bytes) in sizes.iter().enumerate() {
        if i > start && size.saturating_add(bytes) > max {
            shards.push(start..i);
            (start, size) = (i, 0);
        }
        size = size.saturating_add(bytes);
    }
    shards.push(start..sizes.len());
    shards
}

/// Writes one weight file in the canonical layout (spec section 14) with `__metadata__`
/// {"format": "pt"}, the tensors converted one at a time; returns its size.
fn write_weights(bundle: &Bundle, path: &Path, tensors: &[OutTensor]) -> Result<u64> {
    let list = tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
        .collect();
    let metadata = [(PT_METADATA.0.to_string(), PT_METADATA.1.to_string())];
    let (prefix, header) = plan_layout(list, &metadata)?;
    let file = create_sized(path, &prefix, &header)?;
    for t in tensors {
        let e = header.get(&t.name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: tensor {} has no planned place",
                path.display(),
                escape_name(&t.name)
            ))
        })?;
        let mut sink = Sink {
            file: &file,
            path,
            name: &t.name,
            at: header.data_start() + e.start,
            end: header.data_start() + e.end,
            buffer: Vec::new(),
        };
        write_tensor(bundle, t, &mut sink)?;
        sink.finish()?;
    }
    file.sync_all().map_err(|e| Error::io(path, "fsync", e))?;
    Ok(header.file_size())
}

/// The bytes of one tensor, written sequentially from its planned offset.
struct Sink<'a> {
    file: &'a File,
    path: &'a Path,
    name: &'a str,
    /// Next file offset.
    at: u64,
    /// One past the tensor's last byte.
    end: u64,
    buffer: Vec<u8>,
}

impl Sink<'_> {
    /// Writes `bytes` at the current offset (after anything buffered).
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.flush()?;
        self.write_at(bytes)
    }

    /// Buffers `bytes`, writing once a chunk has gathered.
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let buffer = std::mem::take(&mut self.buffer);
        self.write_at(&buffer)?;
        self.buffer = buffer;
        self.buffer.clear();
        Ok(())
    }

    fn write_at(&mut self, bytes: &[u8]) -> Result<()> {
        let next = self.at + bytes.len() as u64;
        if next > self.end {
            return Err(self.length_error(next));
        }
        self.file
            .write_all_at(bytes, self.at)
            .map_err(|e| Error::io(self.path, "write", e))?;
        self.at = next;
        Ok(())
    }

    /// Flushes, and checks that the tensor's planned bytes were all written.
    fn finish(mut self) -> Result<()> {
        self.flush()?;
        if self.at != self.end {
            return Err(self.length_error(self.at));
        }
        Ok(())
    }

    fn length_error(&self, reached: u64) -> Error {
        Error::InvalidArgument(format!(
            "{}: tensor {}: data would end at byte {reached}, its planned place ends at {}",
            self.path.display(),
            escape_name(self.name),
            self.end
        ))
    }
}

/// Converts and writes the bytes of tensor `t`.
fn write_tensor(bundle: &Bundle, t: &OutTensor, sink: &mut Sink<'_>) -> Result<()> {
    let name = t.source.as_str();
    match t.content {
        Content::Fp16 => {
            let bytes = bundle
                .fp16_bytes(name)
                .ok_or_else(|| bundle.missing_tensor(FileRole::Fp16, name))?;
            sink.write(bytes)?;
            bundle.release(bytes);
        }
        Content::Scale(s) => sink.write(&s.to_le_bytes())?,
        Content::Packed => {
            let p = bundle
                .packed(name)
                .ok_or_else(|| bundle.missing_tensor(FileRole::Ternary, name))?;
            let trits = p.trits().map_err(|(r, e)| bundle.row_error(name, r, e))?;
            bundle.release(p.packed);
            let bytes = pack_weights(&trits, p.rows, p.cols).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: tensor {}: expected rows a multiple of 4 to pack, found {}",
                    bundle.dir().display(),
                    escape_name(name),
                    p.rows
                ))
            })?;
            sink.write(&bytes)?;
        }
        Content::Values(dtype) => {
            // The ternary path's values (f32(t × scale), or the stored F32), as the
            // safetensors export and the reference model read them.
            let values = tensor_f32(bundle, name, WeightPath::Ternary)?;
            let mut bytes = Vec::with_capacity(WRITE_CHUNK);
            for chunk in values.chunks(WRITE_CHUNK / 4) {
                bytes.clear();
                encode_values(dtype, chunk.iter().copied(), &mut bytes);
                sink.push(&bytes)?;
            }
        }
    }
    Ok(())
}

/// Appends f32 `values` as little-endian F32, or as BF16 rounded to nearest even
/// (`half::bf16::from_f32`).
fn encode_values(dtype: Dtype, values: impl Iterator<Item = f32>, out: &mut Vec<u8>) {
    if dtype == Dtype::BF16 {
        out.extend(values.flat_map(|v| bf16::from_f32(v).to_le_bytes()));
    } else {
        out.extend(values.flat_map(f32::to_le_bytes));
    }
}

/// Refuses an existing `dest` unless `force`; with it, replaces only an empty directory or a
/// model directory (a regular `config.json`, no `manifest.json`: never a bundle), and never a
/// directory that holds the bundle being exported.
fn check_destination(bundle: &Bundle, dest: &Path, force: bool) -> Result<()> {
    if let (Ok(d), Ok(b)) = (fs::canonicalize(dest), fs::canonicalize(bundle.dir())) {
        if force && b.starts_with(&d) {
            return Err(Error::InvalidArgument(format!(
                "{}: refusing to replace the directory that holds the bundle being exported",
                dest.display()
            )));
        }
    }
    check_destination_of(dest, force, Replaceable::ModelDirectory)
}
