//! `manifest.json` (spec section "Manifest", rules 2.1 to 2.12): the serde types, parsing with
//! duplicate-key detection, and the semantic validation that makes the rest of the crate able to
//! trust the manifest's numbers.
//!
//! Validation here concerns the manifest alone; how it relates to the files on disk is checked
//! by [`crate::read`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{escape_name, excerpt, Result, Violation};
use crate::format::activation::Activation;
use crate::format::encoding::Encoding;
use crate::format::limits::{
    MAX_ELEMENTS, MAX_GROUP_SIZE, MAX_LAYERS, MAX_MANIFEST_BYTES, MAX_MANIFEST_TENSORS,
    MAX_QUANTIZED_NAME_BYTES, MAX_RANK,
};
use crate::format::names::name_problem;
use crate::format::quantization::{rows_cols, Granularity, QuantParams};
use crate::format::rules::Rule;
use crate::format::safetensors::{bounded_shape, element_count, shape_string};

/// The value of `format`.
pub const FORMAT_NAME: &str = "ternary-bundle";
/// The method name of the absmean scheme.
pub const METHOD_ABSMEAN: &str = "absmean";

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

/// The placeholder the manifest digest is computed over (rule 7.3).
pub const MANIFEST_DIGEST_PLACEHOLDER: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The manifest digest of `bytes` whose `manifest_sha256` value is `value` (rule 7.3): SHA-256
/// of `bytes` with every occurrence of `value` replaced by 64 `0`s.
pub fn manifest_digest(bytes: &[u8], value: &str) -> String {
    // A parsed manifest is UTF-8: the standard library's substring search (linear time) does the
    // replacing; other bytes take the byte-by-byte path below, with the same result.
    if let (Ok(text), false) = (std::str::from_utf8(bytes), value.is_empty()) {
        let zeroed = text.replace(value, MANIFEST_DIGEST_PLACEHOLDER);
        return crate::format::checksum::sha256_hex(zeroed.as_bytes());
    }
    let needle = value.as_bytes();
    let mut zeroed = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if !needle.is_empty() && bytes[i..].starts_with(needle) {
            zeroed.extend_from_slice(MANIFEST_DIGEST_PLACEHOLDER.as_bytes());
            i += needle.len();
        } else {
            zeroed.push(bytes[i]);
            i += 1;
        }
    }
    crate::format::checksum::sha256_hex(&zeroed)
}

/// Sets the `manifest_sha256` of serialized manifest `bytes` (written with the placeholder
/// value) to the digest of those bytes (rule 7.3).
pub fn seal_manifest_bytes(bytes: &[u8]) -> Vec<u8> {
    sealed(bytes).1
}

/// The digest of `bytes` and the bytes with it in place of the placeholder.
fn sealed(bytes: &[u8]) -> (String, Vec<u8>) {
    let digest = crate::format::checksum::sha256_hex(bytes);
    let text = String::from_utf8_lossy(bytes);
    let sealed = text
        .replacen(MANIFEST_DIGEST_PLACEHOLDER, &digest, 1)
        .into_bytes();
    (digest, sealed)
}

/// `model`: input dimension and the ordered layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Width of the model's input.
    pub input_dim: u64,
    /// Layers, applied in order.
    pub layers: Vec<LayerSpec>,
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
    /// `"absmean"`.
    pub method: String,
    /// `"trit5"` or `"trit2"`.
    pub encoding: String,
    /// `"tensor"`, `"channel"` or `"group"`.
    pub granularity: String,
    /// Columns per scale for `"group"`; `None` otherwise.
    #[serde(default)]
    pub group_size: Option<u64>,
    /// Lower bound of every scale.
    #[serde(deserialize_with = "exact_f32")]
    pub epsilon: f32,
    /// `|x|` must exceed this for a non-zero trit.
    #[serde(deserialize_with = "exact_f32")]
    pub sparsity_threshold: f32,
    /// Always 0 in format 1.0.
    pub zero_point: i64,
}

impl QuantizationSpec {
    /// The block describing `params`.
    pub fn from_params(params: &QuantParams) -> Self {
        QuantizationSpec {
            method: METHOD_ABSMEAN.into(),
            encoding: params.encoding.name().into(),
            granularity: params.granularity.name().into(),
            group_size: params.granularity.group_size(),
            epsilon: params.epsilon,
            sparsity_threshold: params.sparsity_threshold,
            zero_point: 0,
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
}

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
    /// The newest version this crate knows. It reads every MAJOR from 1 to this one's (rule
    /// 2.4), and writes the lowest version whose rules a bundle satisfies (spec section 13).
    pub const LATEST: FormatVersion = FormatVersion::V2_0;

    /// Whether this reader opens bundles of this version: MAJOR 1 or 2, any MINOR (rule 2.4).
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
    /// Quantization settings.
    pub params: QuantParams,
    /// Layer activations, in layer order.
    pub activations: Vec<Activation>,
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
                    "format version 1.x or 2.x (this reader supports 1.0 and {}, and newer minor versions of either)",
                    FormatVersion::LATEST
                ),
                format!("format version {version}"),
            )
            .into());
        }
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| {
            Violation::new(
                path,
                Rule::ManifestSchema,
                "the fields of spec section 3",
                e.to_string(),
            )
        })?;
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
        let (digest, sealed) = sealed(&v);
        self.manifest_sha256 = digest;
        sealed
    }

    /// The spec of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Semantic validation (rules 2.6 to 2.12).
    pub fn validate(&self, path: &Path, version: FormatVersion) -> Result<ManifestFacts> {
        let params = self.validate_quantization(path)?;
        let by_name = self.validate_tensors(path)?;
        let activations = self.validate_model(path, &by_name)?;
        self.validate_files(path)?;
        self.validate_provenance(path)?;
        if let Some(ext) = &self.extensions {
            if !ext.is_object() && !ext.is_null() {
                return Err(
                    Violation::new(path, Rule::Extensions, "an object", json_type(ext)).into(),
                );
            }
        }
        let tensor_index = self
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(ManifestFacts {
            version,
            params,
            activations,
            tensor_index,
        })
    }

    fn validate_quantization(&self, path: &Path) -> Result<QuantParams> {
        let q = &self.quantization;
        let bad = |expected: &str, found: String| {
            Violation::new(path, Rule::Quantization, expected, found)
        };
        if q.method != METHOD_ABSMEAN {
            return Err(bad("method \"absmean\"", excerpt(&q.method, 32)).into());
        }
        let encoding = Encoding::from_name(&q.encoding)
            .ok_or_else(|| bad("encoding \"trit5\" or \"trit2\"", excerpt(&q.encoding, 32)))?;
        let granularity = match (q.granularity.as_str(), q.group_size) {
            ("tensor", None) => Granularity::Tensor,
            ("channel", None) => Granularity::Channel,
            ("group", Some(g)) if (1..=MAX_GROUP_SIZE).contains(&g) => Granularity::Group(g),
            ("group", g) => {
                return Err(bad(
                    &format!("group_size in 1..={MAX_GROUP_SIZE} for granularity \"group\""),
                    format!("{g:?}"),
                )
                .into())
            }
            ("tensor" | "channel", Some(g)) => {
                return Err(bad(
                    "group_size null unless granularity is \"group\"",
                    format!("{g}"),
                )
                .into())
            }
            (other, _) => {
                return Err(bad(
                    "granularity \"tensor\", \"channel\" or \"group\"",
                    excerpt(other, 32),
                )
                .into())
            }
        };
        if q.zero_point != 0 {
            return Err(bad("zero_point 0", q.zero_point.to_string()).into());
        }
        let params = QuantParams {
            encoding,
            granularity,
            epsilon: q.epsilon,
            sparsity_threshold: q.sparsity_threshold,
        };
        params
            .check()
            .map_err(|m| bad("valid epsilon and sparsity_threshold", m))?;
        Ok(params)
    }

    fn validate_tensors(&self, path: &Path) -> Result<HashMap<&str, &TensorSpec>> {
        let bad = |tensor: &str, expected: String, found: String| {
            Violation::new(path, Rule::TensorList, expected, found).tensor(tensor)
        };
        let n = self.tensors.len();
        if n == 0 || n > MAX_MANIFEST_TENSORS {
            return Err(Violation::new(
                path,
                Rule::TensorList,
                format!("1..={MAX_MANIFEST_TENSORS} tensors"),
                format!("{n}"),
            )
            .into());
        }
        let mut by_name = HashMap::with_capacity(n);
        for t in &self.tensors {
            check_name(path, &t.name, "tensors")?;
            if by_name.insert(t.name.as_str(), t).is_some() {
                return Err(Violation::new(
                    path,
                    Rule::Names,
                    "unique tensor names",
                    "a duplicate",
                )
                .tensor(&t.name)
                .into());
            }
            if t.shape.len() > MAX_RANK {
                return Err(bad(
                    &t.name,
                    format!("rank at most {MAX_RANK}"),
                    format!("rank above {MAX_RANK}"),
                )
                .into());
            }
            let count = element_count(&t.shape).filter(|&c| c <= MAX_ELEMENTS);
            if count.is_none() {
                return Err(bad(
                    &t.name,
                    format!("at most {MAX_ELEMENTS} elements"),
                    format!("shape {}", shape_string(&t.shape)),
                )
                .into());
            }
            let stats = (t.zeros, t.scale_min, t.scale_max);
            if t.quantized && t.name.len() > MAX_QUANTIZED_NAME_BYTES {
                return Err(Violation::new(
                    path,
                    Rule::Names,
                    format!("a quantized tensor name of at most {MAX_QUANTIZED_NAME_BYTES} bytes (its scale tensor adds \".scale\")"),
                    format!("{} bytes", t.name.len()),
                )
                .tensor(&t.name)
                .into());
            }
            if t.quantized {
                let ok_shape = matches!(rows_cols(&t.shape), Some((r, c)) if r >= 1 && c >= 1);
                if !ok_shape {
                    return Err(bad(
                        &t.name,
                        "a quantized shape [R, ...] with R >= 1 and C >= 1".into(),
                        format!("shape {}", shape_string(&t.shape)),
                    )
                    .into());
                }
                let (Some(zeros), Some(lo), Some(hi)) = stats else {
                    return Err(bad(
                        &t.name,
                        "zeros, scale_min and scale_max for a quantized tensor".into(),
                        format!(
                            "zeros {:?}, scale_min {:?}, scale_max {:?}",
                            stats.0, stats.1, stats.2
                        ),
                    )
                    .into());
                };
                let valid = zeros <= t.elements()
                    && lo.is_finite()
                    && hi.is_finite()
                    && lo > 0.0
                    && lo <= hi;
                if !valid {
                    return Err(bad(
                        &t.name,
                        format!(
                            "zeros <= {} and 0 < scale_min <= scale_max, finite",
                            t.elements()
                        ),
                        format!("zeros {zeros}, scale_min {lo}, scale_max {hi}"),
                    )
                    .into());
                }
            } else if stats != (None, None, None) {
                return Err(bad(
                    &t.name,
                    "no zeros/scale_min/scale_max on a tensor that is not quantized".into(),
                    "statistics".into(),
                )
                .into());
            }
        }
        for t in self.tensors.iter().filter(|t| t.quantized) {
            let scale_name = scale_tensor_name(&t.name);
            if by_name.contains_key(scale_name.as_str()) {
                return Err(bad(
                    &scale_name,
                    format!(
                        "no tensor named like the scales of quantized tensor {}",
                        escape_name(&t.name)
                    ),
                    "a name collision in ternary.safetensors".into(),
                )
                .into());
            }
        }
        Ok(by_name)
    }

    fn validate_model(
        &self,
        path: &Path,
        tensors: &HashMap<&str, &TensorSpec>,
    ) -> Result<Vec<Activation>> {
        let m = &self.model;
        let bad =
            |expected: String, found: String| Violation::new(path, Rule::Model, expected, found);
        if m.input_dim == 0 {
            return Err(bad("input_dim >= 1".into(), "0".into()).into());
        }
        if m.layers.is_empty() || m.layers.len() > MAX_LAYERS {
            return Err(bad(
                format!("1..={MAX_LAYERS} layers"),
                m.layers.len().to_string(),
            )
            .into());
        }
        let mut names = HashSet::new();
        let mut width = m.input_dim;
        let mut activations = Vec::with_capacity(m.layers.len());
        for (i, l) in m.layers.iter().enumerate() {
            check_name(path, &l.name, "model.layers")?;
            if !names.insert(l.name.as_str()) {
                return Err(Violation::new(
                    path,
                    Rule::Names,
                    "unique layer names",
                    format!("layer {} twice", escape_name(&l.name)),
                )
                .into());
            }
            let at = format!("layer {} ({})", i, escape_name(&l.name));
            if l.in_features == 0 || l.out_features == 0 {
                return Err(bad(
                    format!("{at}: in_features and out_features >= 1"),
                    format!("{} and {}", l.in_features, l.out_features),
                )
                .into());
            }
            if l.in_features != width {
                let source = if i == 0 {
                    "input_dim".to_string()
                } else {
                    format!("out_features of layer {}", i - 1)
                };
                return Err(bad(
                    format!("{at}: in_features {width} ({source})"),
                    l.in_features.to_string(),
                )
                .into());
            }
            let act = Activation::from_name(&l.activation).ok_or_else(|| {
                bad(
                    format!("{at}: activation relu, gelu, silu, tanh or identity"),
                    excerpt(&l.activation, 32),
                )
            })?;
            activations.push(act);
            let expect_shape = |name: &str, shape: &[u64], role: &str| -> Result<()> {
                check_name(path, name, "model.layers")?;
                let t = tensors.get(name).ok_or_else(|| {
                    bad(
                        format!(
                            "{at}: {role} tensor {} declared in tensors",
                            escape_name(name)
                        ),
                        "no such tensor".into(),
                    )
                })?;
                if t.shape != shape {
                    return Err(bad(
                        format!(
                            "{at}: {role} {} of shape {}",
                            escape_name(name),
                            shape_string(shape)
                        ),
                        shape_string(&t.shape),
                    )
                    .into());
                }
                Ok(())
            };
            expect_shape(&l.weight, &[l.out_features, l.in_features], "weight")?;
            if let Some(b) = &l.bias {
                expect_shape(b, &[l.out_features], "bias")?;
            }
            if let Some(n) = &l.rmsnorm {
                expect_shape(&n.weight, &[l.in_features], "rmsnorm weight")?;
                if !(n.eps.is_finite() && n.eps > 0.0) {
                    return Err(bad(
                        format!("{at}: rmsnorm eps finite and > 0"),
                        n.eps.to_string(),
                    )
                    .into());
                }
            }
            width = l.out_features;
        }
        Ok(activations)
    }

    fn validate_files(&self, path: &Path) -> Result<()> {
        for role in FileRole::ALL {
            let Some(entry) = self.files.get(role) else {
                continue;
            };
            let bad = |expected: String, found: String| {
                Violation::new(
                    path,
                    Rule::FileTable,
                    format!("files.{}: {expected}", role.key()),
                    found,
                )
            };
            if !is_sha256_hex(&entry.sha256) {
                return Err(bad(
                    "sha256 of 64 lowercase hex digits".into(),
                    excerpt(&entry.sha256, 80),
                )
                .into());
            }
            let mut seen = HashSet::new();
            for t in &entry.tensors {
                check_name(path, &t.name, "files")?;
                if !seen.insert(t.name.as_str()) {
                    return Err(Violation::new(
                        path,
                        Rule::Names,
                        format!("unique names in files.{}.tensors", role.key()),
                        "a duplicate",
                    )
                    .tensor(&t.name)
                    .into());
                }
                if !is_sha256_hex(&t.sha256) {
                    return Err(Violation::new(
                        path,
                        Rule::FileTable,
                        "sha256 of 64 lowercase hex digits",
                        excerpt(&t.sha256, 80),
                    )
                    .tensor(&t.name)
                    .into());
                }
            }
        }
        Ok(())
    }

    fn validate_provenance(&self, path: &Path) -> Result<()> {
        if !is_sha256_hex(&self.manifest_sha256) {
            return Err(Violation::new(
                path,
                Rule::ManifestDigest,
                "manifest_sha256 of 64 lowercase hex digits",
                excerpt(&self.manifest_sha256, 80),
            )
            .into());
        }
        if let Some(c) = &self.provenance.created {
            if !is_rfc3339_utc(c) {
                return Err(Violation::new(
                    path,
                    Rule::Provenance,
                    "created as YYYY-MM-DDTHH:MM:SS[.fraction]Z (a valid UTC date-time) or null",
                    excerpt(c, 40),
                )
                .into());
            }
        }
        if let Some(d) = &self.provenance.source_sha256 {
            if !is_sha256_hex(d) {
                return Err(Violation::new(
                    path,
                    Rule::Provenance,
                    "source_sha256 of 64 lowercase hex digits or null",
                    excerpt(d, 80),
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Name of the scale tensor of quantized tensor `name` in `ternary.safetensors`.
pub fn scale_tensor_name(name: &str) -> String {
    format!("{name}.scale")
}

/// Is `s` a UTC RFC 3339 date-time written `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with a valid date
/// and time (rule 2.11)?
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u32, |a, &d| a * 10 + (d - b'0') as u32))
    };
    let seps = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':';
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    let tail = &b[19..];
    let tail_ok = match tail {
        [b'Z'] => true,
        [b'.', frac @ .., b'Z'] => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    seps && tail_ok
        && (1..=12).contains(&mo)
        && d >= 1
        && d <= days[(mo.max(1) - 1) as usize]
        && h <= 23
        && mi <= 59
        && sec <= 60
}

/// Is `s` 64 lowercase hex digits?
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_name(path: &Path, name: &str, list: &str) -> Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(Violation::new(
            path,
            Rule::Names,
            format!("a valid name in {list}"),
            problem,
        )
        .tensor(name)
        .into()),
    }
}

fn json_type(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
    .into()
}

/// `format` and `format_version`, read before anything else with any JSON type, so that a
/// missing or mistyped value breaks rule 2.3 / 2.4 rather than the schema rule 2.5.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    format: Option<serde_json::Value>,
    #[serde(default)]
    format_version: Option<serde_json::Value>,
}

/// Describes a JSON value for an error message (strings excerpted and escaped).
fn describe(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "no such key".into(),
        Some(serde_json::Value::String(s)) => excerpt(s, 64),
        Some(other) => json_type(other),
    }
}

/// An f32 field: the f32 nearest to the JSON number's exact decimal value (spec section 3.2),
/// parsed from the number's own text so that it is rounded once, not via f64.
fn exact_f32<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
    let text = raw.get();
    let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    match text.parse::<f32>() {
        Ok(v) if is_number => Ok(v),
        _ => Err(de::Error::custom(format_args!(
            "expected a number, found {}",
            excerpt(text, 32)
        ))),
    }
}

/// [`exact_f32`] for an optional field (absent or null is `None`).
fn exact_f32_opt<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f32>, D::Error> {
    let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
    if raw.get() == "null" {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    exact_f32(&mut de).map(Some).map_err(de::Error::custom)
}

/// An `Option` field whose key must be present (its value may be null): serde treats an
/// `Option` with a `deserialize_with` as required.
fn required_nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// Walks any JSON value and fails on a duplicate key in any object; `.0` tells whether the
/// top-level value is an object.
struct NoDuplicateKeys(bool);

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NoDuplicateKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
                Ok(NoDuplicateKeys(false))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format_args!(
                            "duplicate key {}",
                            excerpt(&key, 64)
                        )));
                    }
                    map.next_value::<NoDuplicateKeys>()?;
                }
                Ok(NoDuplicateKeys(true))
            }
        }
        d.deserialize_any(V)
    }
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
