//! `manifest.json` (spec section 3, rules 2.1 to 2.12, and 7.3): the serde types and the
//! parsing pipeline ([`Manifest::parse`]: size, strict JSON, format and version, schema,
//! semantic rules, digest, in that order). The parts live beside it: the strict JSON of rule
//! 2.2 (`json`), the semantic rules 2.6 to 2.12 (`validate`), the manifest digest of rule 7.3
//! (`digest`).
//!
//! Validation here concerns the manifest alone; how it relates to the files on disk is checked
//! by [`crate::read`].

mod digest;
pub(crate) mod json;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{excerpt, Result, Violation};
use crate::format::activation::Activation;
use crate::format::decoder::DecoderSpec;
use crate::format::limits::MAX_MANIFEST_BYTES;
use crate::format::quantization::{QuantMethod, QuantParams};
use crate::format::rules::Rule;
use crate::format::safetensors::{bounded_shape, element_count};
use json::{describe, exact_f32, exact_f32_opt, lenient, required_nullable, Head, NoDuplicateKeys};

pub use digest::{manifest_digest, seal_manifest_bytes, MANIFEST_DIGEST_PLACEHOLDER};
pub use validate::is_sha256_hex;

/// The value of `format`.
pub const FORMAT_NAME: &str = "ternary-bundle";
/// The method name of the absmean scheme.
pub const METHOD_ABSMEAN: &str = "absmean";
/// The method name of trits and scales taken as the source gave them (format 4.0, section 7.1).
pub const METHOD_GIVEN: &str = "given";

/// The parsed `manifest.json`. Field order is the order the writer emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `"ternary-bundle"` (rule 2.3).
    pub format: String,
    /// `"MAJOR.MINOR"` (rule 2.4).
    pub format_version: String,
    /// The architecture the reference model runs (rule 2.9).
    pub model: ModelSpec,
    /// Quantization settings shared by every quantized tensor (rule 2.8).
    pub quantization: QuantizationSpec,
    /// Every tensor of the model, sorted by name (rule 2.7).
    pub tensors: Vec<TensorSpec>,
    /// Sizes and digests of the data files (rule 2.10).
    pub files: FileTable,
    /// Who wrote the bundle from what (rule 2.11).
    pub provenance: Provenance,
    /// Free-form additions (rule 2.12); the writer emits `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Value>,
    /// SHA-256 of this file with this value's 64 digits replaced by `0`s (rule 7.3), so that
    /// the manifest itself is covered by a checksum.
    pub manifest_sha256: String,
}

/// `model`: either a chain of dense layers (`input_dim` and `layers`, rule 2.9) or a
/// decoder-only language model (`decoder`, rules 2.13 and 2.14, format 3.0). For a decoder,
/// `input_dim` is 0 and `layers` is empty; the JSON holds the one form or the other, never both.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Width of the model's input (a chain of layers; 0 for a decoder).
    pub input_dim: u64,
    /// Layers, applied in order (empty for a decoder).
    pub layers: Vec<LayerSpec>,
    /// The decoder-only language model, when the bundle holds one.
    pub decoder: Option<DecoderModelSpec>,
}

/// `model.decoder`: a decoder-only transformer of the Llama or BitNet b1.58 family, with the
/// keys and meaning of transformers' config.json (rule 2.13). Its tensors are those of rule 2.14.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderModelSpec {
    /// `"llama"` or `"bitnet"`.
    pub family: String,
    /// Tokens in the vocabulary.
    pub vocab_size: u64,
    /// Width of the residual stream.
    pub hidden_size: u64,
    /// Width of the gated MLP.
    pub intermediate_size: u64,
    /// Decoder layers.
    pub num_hidden_layers: u64,
    /// Query heads.
    pub num_attention_heads: u64,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: u64,
    /// Width of one head.
    pub head_dim: u64,
    /// RMSNorm epsilon (an f32, finite, > 0).
    #[serde(deserialize_with = "exact_f32")]
    pub rms_norm_eps: f32,
    /// RoPE base (an f32, finite, > 0).
    #[serde(deserialize_with = "exact_f32")]
    pub rope_theta: f32,
    /// Whether the output head is `model.embed_tokens.weight`.
    pub tie_word_embeddings: bool,
}

impl ModelSpec {
    /// The `model` of a decoder: `decoder` only.
    pub fn of_decoder(spec: &DecoderSpec) -> Self {
        ModelSpec {
            input_dim: 0,
            layers: Vec::new(),
            decoder: Some(DecoderModelSpec::from_spec(spec)),
        }
    }
}

impl DecoderModelSpec {
    /// The manifest form of `spec`.
    pub fn from_spec(spec: &DecoderSpec) -> Self {
        DecoderModelSpec {
            family: spec.family.name().into(),
            vocab_size: spec.vocab_size as u64,
            hidden_size: spec.hidden_size as u64,
            intermediate_size: spec.intermediate_size as u64,
            num_hidden_layers: spec.num_hidden_layers as u64,
            num_attention_heads: spec.num_attention_heads as u64,
            num_key_value_heads: spec.num_key_value_heads as u64,
            head_dim: spec.head_dim as u64,
            rms_norm_eps: spec.rms_norm_eps,
            rope_theta: spec.rope_theta as f32,
            tie_word_embeddings: spec.tie_word_embeddings,
        }
    }
}

impl Serialize for ModelSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Chain<'a> {
            input_dim: u64,
            layers: &'a [LayerSpec],
        }
        #[derive(Serialize)]
        struct Decoder<'a> {
            decoder: &'a DecoderModelSpec,
        }
        match &self.decoder {
            Some(decoder) => Decoder { decoder }.serialize(s),
            None => Chain {
                input_dim: self.input_dim,
                layers: &self.layers,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    /// The form is chosen by the presence of `decoder` (rule 2.5 then applies to that form's
    /// keys); `model` of a decoder with `input_dim` or `layers` as well is a schema error.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{Error as _, IgnoredAny};
        #[derive(Deserialize)]
        struct Kind {
            #[serde(default)]
            decoder: Option<IgnoredAny>,
            #[serde(default)]
            input_dim: Option<IgnoredAny>,
            #[serde(default)]
            layers: Option<IgnoredAny>,
        }
        #[derive(Deserialize)]
        struct Chain {
            input_dim: u64,
            layers: Vec<LayerSpec>,
        }
        #[derive(Deserialize)]
        struct Decoder {
            decoder: DecoderModelSpec,
        }
        let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
        let text = raw.get();
        let in_model = |e: serde_json::Error| D::Error::custom(format_args!("model: {e}"));
        let kind: Kind = serde_json::from_str(text).map_err(in_model)?;
        if kind.decoder.is_none() {
            let c: Chain = serde_json::from_str(text).map_err(in_model)?;
            return Ok(ModelSpec {
                input_dim: c.input_dim,
                layers: c.layers,
                decoder: None,
            });
        }
        if kind.input_dim.is_some() || kind.layers.is_some() {
            return Err(D::Error::custom(
                "model: a decoder model (key decoder) has no input_dim or layers",
            ));
        }
        let dec: Decoder = serde_json::from_str(text).map_err(in_model)?;
        Ok(ModelSpec {
            input_dim: 0,
            layers: Vec::new(),
            decoder: Some(dec.decoder),
        })
    }
}

/// One linear layer: `y = act(W . norm(x) + b)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// Layer name (unique).
    pub name: String,
    /// Name of the weight tensor, shape `[out_features, in_features]`.
    pub weight: String,
    /// Name of the bias tensor, shape `[out_features]`, or `None` (the key is required).
    #[serde(deserialize_with = "required_nullable")]
    pub bias: Option<String>,
    /// Input width.
    pub in_features: u64,
    /// Output width.
    pub out_features: u64,
    /// Activation name (`relu`, `gelu`, `silu`, `tanh`, `identity`).
    pub activation: String,
    /// RMSNorm applied to the layer's input, or `None` (the key is required).
    #[serde(deserialize_with = "required_nullable")]
    pub rmsnorm: Option<RmsNormSpec>,
}

/// An RMSNorm before a layer: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmsNormSpec {
    /// Name of the norm weight, shape `[in_features]`.
    pub weight: String,
    /// The epsilon (an f32, finite, > 0).
    #[serde(deserialize_with = "exact_f32")]
    pub eps: f32,
}

/// `quantization`: the scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationSpec {
    /// `"absmean"`, or `"given"` (format 4.0).
    pub method: String,
    /// `"trit5"` or `"trit2"`.
    pub encoding: String,
    /// `"tensor"`, `"channel"` or `"group"`.
    pub granularity: String,
    /// Columns per scale for `"group"`; `None` otherwise.
    #[serde(default)]
    pub group_size: Option<u64>,
    /// Lower bound of every scale (`absmean`); null for `given` (the key is required).
    #[serde(deserialize_with = "exact_f32_opt")]
    pub epsilon: Option<f32>,
    /// `|x|` must exceed this for a non-zero trit (`absmean`); null for `given` (the key is
    /// required).
    #[serde(deserialize_with = "exact_f32_opt")]
    pub sparsity_threshold: Option<f32>,
    /// Always 0.
    pub zero_point: i64,
    /// Where given trits came from (format 4.0, rule 2.15); `None` for `absmean`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub source: Option<QuantSourceSpec>,
}

impl QuantizationSpec {
    /// The block describing `params` (method `absmean`).
    pub fn from_params(params: &QuantParams) -> Self {
        QuantizationSpec {
            method: METHOD_ABSMEAN.into(),
            encoding: params.encoding.name().into(),
            granularity: params.granularity.name().into(),
            group_size: params.granularity.group_size(),
            epsilon: Some(params.epsilon),
            sparsity_threshold: Some(params.sparsity_threshold),
            zero_point: 0,
            source: None,
        }
    }

    /// The block of a bundle of given trits (method `given`, section 7.1): `params`' encoding
    /// and granularity, no quantizer settings, and where the trits came from.
    pub fn given(params: &QuantParams, source: QuantSourceSpec) -> Self {
        QuantizationSpec {
            method: METHOD_GIVEN.into(),
            epsilon: None,
            sparsity_threshold: None,
            source: Some(source),
            ..QuantizationSpec::from_params(params)
        }
    }
}

/// `quantization.source` (format 4.0, rule 2.15): where given trits and scales came from, and how
/// the source's scale became the bundle's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantSourceSpec {
    /// The kind of source: `"quantization-metadata"`, `"hf-bitnet"` (spec section 18) or
    /// another.
    pub format: String,
    /// What the source called the scale (`"scales"`, `"weight_scale"`).
    pub scale_name: String,
    /// `"multiply"` (the source computes t × s: the bundle's scale is s) or `"divide"` (t / s:
    /// the bundle's scale is 1 / s, one f32 division).
    pub scale_convention: String,
    /// What else the source stated (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// How a source model applies its stored scale s to its trits t (rule 2.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleConvention {
    /// W = t × s: the bundle's scale is s.
    Multiply,
    /// W = t / s: the bundle's scale is 1 / s (one f32 division).
    Divide,
}

impl ScaleConvention {
    /// The manifest name.
    pub fn name(self) -> &'static str {
        match self {
            ScaleConvention::Multiply => "multiply",
            ScaleConvention::Divide => "divide",
        }
    }

    /// Parses a manifest name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "multiply" => Some(ScaleConvention::Multiply),
            "divide" => Some(ScaleConvention::Divide),
            _ => None,
        }
    }

    /// The bundle's scale for a source scale `s` (exact for multiply; one f32 division for
    /// divide).
    pub fn bundle_scale(self, s: f32) -> f32 {
        match self {
            ScaleConvention::Multiply => s,
            ScaleConvention::Divide => 1.0 / s,
        }
    }
}

/// One tensor of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Tensor name, as in the source checkpoint.
    pub name: String,
    /// Original shape.
    #[serde(deserialize_with = "bounded_shape")]
    pub shape: Vec<u64>,
    /// Whether it is stored as trits and scales (otherwise as F32).
    pub quantized: bool,
    /// Quantized only: number of zero trits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeros: Option<u64>,
    /// Quantized only: smallest scale.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exact_f32_opt"
    )]
    pub scale_min: Option<f32>,
    /// Quantized only: largest scale.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exact_f32_opt"
    )]
    pub scale_max: Option<f32>,
}

impl TensorSpec {
    /// Number of elements (valid after validation).
    pub fn elements(&self) -> u64 {
        element_count(&self.shape).unwrap_or(0)
    }
}

/// `files`: one entry per data file, keyed by role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileTable {
    /// `ternary.safetensors`.
    pub ternary: FileEntry,
    /// `fp16.safetensors`.
    pub fp16: FileEntry,
    /// `validation.safetensors`, when the bundle has one.
    #[serde(default)]
    pub validation: Option<FileEntry>,
    /// The carried asset files (format 4.0, rules 1.6 and 2.17), in the order listed; `None`
    /// when there are none (and always for a manifest below 4.0, whose unknown keys are
    /// ignored).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub assets: Option<Vec<AssetEntry>>,
}

/// One carried asset file (format 4.0, rule 2.17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetEntry {
    /// Its file name in the bundle directory, one of [`ASSET_NAMES`].
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// The file names an asset may have (rule 1.6): a model directory's tokenizer and generation
/// files.
pub const ASSET_NAMES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "generation_config.json",
];

/// Size and digests of one data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// SHA-256 of every tensor's data bytes, in the file's data order.
    pub tensors: Vec<TensorDigest>,
}

/// The digest of one tensor's data bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorDigest {
    /// Tensor name within the file.
    pub name: String,
    /// SHA-256 of its data bytes, lowercase hex.
    pub sha256: String,
}

/// `provenance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Name of the writing tool.
    pub tool: String,
    /// Its version.
    pub tool_version: String,
    /// SHA-256 of the source checkpoint file, when there was one (the key is required).
    #[serde(deserialize_with = "required_nullable")]
    pub source_sha256: Option<String>,
    /// Creation time (RFC 3339 UTC), only when the user asked for one (the key is required).
    #[serde(deserialize_with = "required_nullable")]
    pub created: Option<String>,
    /// Which model `original_predictions` come from (format 4.0, rule 2.16); `None` means the
    /// source run dense, as in earlier versions.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub original: Option<OriginalSpec>,
}

/// `provenance.original` (format 4.0, rule 2.16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalSpec {
    /// `"dense"`, `"ternary"` or `"bitnet-online"` ([`OriginalForward`]).
    pub forward: String,
    /// SHA-256 of the original model's file when it is not the source of the weights.
    #[serde(deserialize_with = "required_nullable")]
    pub sha256: Option<String>,
}

/// How the original model computes `original_predictions` from its weights (rule 2.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OriginalForward {
    /// The weights as read (every bundle before format 4.0).
    #[default]
    Dense,
    /// Every quantized tensor replaced by f32(t × scale) of the writer's quantization (the
    /// model quantization-aware training runs, spec section 7.2).
    Ternary,
    /// transformers' BitNet online quantization: projections ternarized per tensor (absmean,
    /// epsilon 1e-5), their inputs quantized to 8 bits per token (spec section 18.3).
    BitnetOnline,
}

impl OriginalForward {
    /// The manifest name.
    pub fn name(self) -> &'static str {
        match self {
            OriginalForward::Dense => "dense",
            OriginalForward::Ternary => "ternary",
            OriginalForward::BitnetOnline => "bitnet-online",
        }
    }

    /// Parses a manifest name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            OriginalForward::Dense,
            OriginalForward::Ternary,
            OriginalForward::BitnetOnline,
        ]
        .into_iter()
        .find(|f| f.name() == name)
    }
}

/// The three data files of a bundle, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileRole {
    /// `ternary.safetensors`: packed trits, scales, F32 passthrough tensors.
    Ternary,
    /// `fp16.safetensors`: every tensor as F16.
    Fp16,
    /// `validation.safetensors`: optional labelled inputs.
    Validation,
}

impl FileRole {
    /// Every role.
    pub const ALL: [FileRole; 3] = [FileRole::Ternary, FileRole::Fp16, FileRole::Validation];

    /// The fixed file name.
    pub fn file_name(self) -> &'static str {
        match self {
            FileRole::Ternary => "ternary.safetensors",
            FileRole::Fp16 => "fp16.safetensors",
            FileRole::Validation => "validation.safetensors",
        }
    }

    /// The key in `files`.
    pub fn key(self) -> &'static str {
        match self {
            FileRole::Ternary => "ternary",
            FileRole::Fp16 => "fp16",
            FileRole::Validation => "validation",
        }
    }
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The file name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

impl FileTable {
    /// The entry of `role`, if present.
    pub fn get(&self, role: FileRole) -> Option<&FileEntry> {
        match role {
            FileRole::Ternary => Some(&self.ternary),
            FileRole::Fp16 => Some(&self.fp16),
            FileRole::Validation => self.validation.as_ref(),
        }
    }
}

/// A parsed `format_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FormatVersion {
    /// Incompatible changes.
    pub major: u32,
    /// Backward-compatible additions.
    pub minor: u32,
}

impl FormatVersion {
    /// Version 1.0: the first version of the format.
    pub const V1_0: FormatVersion = FormatVersion { major: 1, minor: 0 };
    /// Version 2.0: the validation file may carry `original_predictions` (rules 6.1, 6.3).
    pub const V2_0: FormatVersion = FormatVersion { major: 2, minor: 0 };
    /// Version 3.0: `model` may describe a decoder-only language model (rules 2.13, 2.14, and
    /// its validation set, rule 6.1).
    pub const V3_0: FormatVersion = FormatVersion { major: 3, minor: 0 };
    /// Version 4.0: given trits (method `given`, rule 2.15), the original model's forward pass
    /// (rule 2.16), asset files (rules 1.6, 2.17, 7.4).
    pub const V4_0: FormatVersion = FormatVersion { major: 4, minor: 0 };
    /// Version 5.0: the validation file may carry the original model's distributions (rules
    /// 6.1, 6.4).
    pub const V5_0: FormatVersion = FormatVersion { major: 5, minor: 0 };
    /// The newest version this crate knows. It reads every MAJOR from 1 to this one's (rule
    /// 2.4), and writes the lowest version whose rules a bundle satisfies (spec section 13).
    pub const LATEST: FormatVersion = FormatVersion::V5_0;

    /// Whether this reader opens bundles of this version: MAJOR 1 to 5, any MINOR (rule 2.4).
    pub fn is_supported(self) -> bool {
        (1..=FormatVersion::LATEST.major).contains(&self.major)
    }

    /// Whether the bundle was written by a newer MINOR version of its MAJOR than this reader
    /// knows (its unknown keys are ignored, section 13).
    pub fn is_newer_minor(self) -> bool {
        // Every MAJOR this crate knows is at MINOR 0.
        self.is_supported() && self.minor > 0
    }

    /// Whether the validation file may hold `original_predictions` (format 2.0 and later).
    pub fn allows_original_predictions(self) -> bool {
        self.major >= 2
    }

    /// Whether `model` may describe a decoder (format 3.0 and later, rule 2.13).
    pub fn allows_decoder(self) -> bool {
        self.major >= 3
    }

    /// Whether the keys of format 4.0 have a meaning: method `given`, `quantization.source`,
    /// `provenance.original`, `files.assets` (rules 2.8, 2.15 to 2.17).
    pub fn allows_given_and_assets(self) -> bool {
        self.major >= 4
    }

    /// Whether the validation file may hold the original model's distributions (format 5.0,
    /// rules 6.1 and 6.4).
    pub fn allows_distributions(self) -> bool {
        self.major >= 5
    }

    /// Parses `"MAJOR.MINOR"`: decimal, no sign, no leading zeros, at most 9 digits each.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        let num = |p: &str| -> Option<u32> {
            let ok = !p.is_empty()
                && p.len() <= 9
                && p.bytes().all(|c| c.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            ok.then(|| p.parse().ok()).flatten()
        };
        Some(FormatVersion {
            major: num(a)?,
            minor: num(b)?,
        })
    }
}

impl fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The typed facts validation derives from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestFacts {
    /// The parsed version (MAJOR is supported; MINOR may be newer).
    pub version: FormatVersion,
    /// Quantization settings (for method `given`, the encoding and granularity; its epsilon and
    /// threshold are the defaults and mean nothing: no quantizer ran).
    pub params: QuantParams,
    /// The quantization method (rule 2.8).
    pub method: QuantMethod,
    /// Layer activations, in layer order (empty for a decoder).
    pub activations: Vec<Activation>,
    /// The decoder the manifest describes (rule 2.13), or `None` for a chain of layers.
    pub decoder: Option<DecoderSpec>,
    /// Position of each tensor in `tensors`, by name: lookups stay O(1) on manifests of many
    /// tensors (a linear search per tensor would make the data checks quadratic).
    pub tensor_index: HashMap<String, usize>,
}

impl Manifest {
    /// Parses and validates manifest bytes read from `path` (rules 2.1 to 2.12).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Manifest, ManifestFacts)> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Violation::new(
                path,
                Rule::ManifestSize,
                format!("at most {MAX_MANIFEST_BYTES} bytes"),
                format!("{} bytes", bytes.len()),
            )
            .into());
        }
        let json_err = |found: String| {
            Violation::new(
                path,
                Rule::ManifestJson,
                "a UTF-8 JSON object without duplicate keys",
                found,
            )
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| json_err(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        // Pass 1 (rule 2.2): syntax, duplicate keys, nesting (serde_json's recursion limit).
        let top: NoDuplicateKeys =
            serde_json::from_str(text).map_err(|e| json_err(e.to_string()))?;
        if !top.0 {
            return Err(json_err("a JSON value that is not an object".into()).into());
        }
        // Rules 2.3 and 2.4 come before the typed parse, so that a future MAJOR with a different
        // structure is reported as a version problem, not as a missing field.
        let head: Head = serde_json::from_str(text).map_err(|e| json_err(e.to_string()))?;
        if head.format.as_ref().and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
            return Err(Violation::new(
                path,
                Rule::FormatName,
                format!("format \"{FORMAT_NAME}\""),
                describe(&head.format),
            )
            .into());
        }
        let version = head
            .format_version
            .as_ref()
            .and_then(|v| v.as_str())
            .and_then(FormatVersion::parse)
            .ok_or_else(|| {
                Violation::new(
                    path,
                    Rule::FormatVersion,
                    "format_version \"MAJOR.MINOR\"",
                    describe(&head.format_version),
                )
            })?;
        if !version.is_supported() {
            return Err(Violation::new(
                path,
                Rule::FormatVersion,
                format!(
                    "format version 1.x, 2.x, 3.x, 4.x or 5.x (this reader supports 1.0, 2.0, 3.0, 4.0 and {}, and newer minor versions of each)",
                    FormatVersion::LATEST
                ),
                format!("format version {version}"),
            )
            .into());
        }
        let schema_err = |e: serde_json::Error| {
            Violation::new(
                path,
                Rule::ManifestSchema,
                "the fields of spec section 3",
                e.to_string(),
            )
        };
        let mut manifest: Manifest = serde_json::from_str(text).map_err(schema_err)?;
        if version.allows_given_and_assets() {
            // The keys of format 4.0 were parsed leniently (below 4.0 they are unknown keys,
            // ignored whatever they hold); here they must have their types (rule 2.5).
            serde_json::from_str::<json::V4Keys>(text).map_err(schema_err)?;
        } else {
            manifest.quantization.source = None;
            manifest.files.assets = None;
            manifest.provenance.original = None;
        }
        let facts = manifest.validate(path, version)?;
        // Rule 7.3, last: the other rules give the more specific message for a damaged field.
        let found = manifest_digest(bytes, &manifest.manifest_sha256);
        if found != manifest.manifest_sha256 {
            return Err(Violation::new(
                path,
                Rule::ManifestDigest,
                format!("manifest_sha256 {}", excerpt(&manifest.manifest_sha256, 80)),
                format!("sha256 {found} (of the manifest with that value zeroed)"),
            )
            .into());
        }
        Ok((manifest, facts))
    }

    /// Computes `manifest_sha256` for the writer's serialization, stores it, and returns the
    /// bytes of `manifest.json` (pretty JSON, 2-space indent, trailing newline).
    pub fn seal(&mut self) -> Vec<u8> {
        self.manifest_sha256 = MANIFEST_DIGEST_PLACEHOLDER.into();
        let mut v = serde_json::to_vec_pretty(self).expect("manifest types always serialize");
        v.push(b'\n');
        let (digest, sealed) = digest::sealed(&v);
        self.manifest_sha256 = digest;
        sealed
    }

    /// The spec of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Name of the scale tensor of quantized tensor `name` in `ternary.safetensors`.
pub fn scale_tensor_name(name: &str) -> String {
    format!("{name}.scale")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_7_3_digest_replaces_every_occurrence_on_both_paths() {
        let v = "ab".repeat(32);
        let zeros = MANIFEST_DIGEST_PLACEHOLDER;
        let text = format!(
            "{{\"a\": \"{v}\", \"b\": \"{v}{v}x\", \"c\": \"{}\"}}",
            &v[..63]
        );
        let expected = text.replace(&v, zeros);
        assert_eq!(expected.matches(zeros).count(), 3);
        // UTF-8 bytes (the fast path).
        assert_eq!(
            manifest_digest(text.as_bytes(), &v),
            crate::format::checksum::sha256_hex(expected.as_bytes())
        );
        // The same with a byte that is not UTF-8 (the byte-by-byte path).
        let mut raw = text.clone().into_bytes();
        raw.push(0xFF);
        let mut want = expected.into_bytes();
        want.push(0xFF);
        assert_eq!(
            manifest_digest(&raw, &v),
            crate::format::checksum::sha256_hex(&want)
        );
    }
}
