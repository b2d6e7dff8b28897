//! The quantizing stage's own handoff (spec section 18.1): a safetensors state dict whose
//! quantized tensors hold trits, beside `quantization_metadata.json` with a scale per tensor
//! (a number, a list per row, or a list of group scales per row) and zero points that must be
//! 0. Its trits are the model that stage evaluated, so they are bundled as given (method
//! `given`, section 7.1), never re-quantized. Every count, value and name is checked when the
//! handoff is opened (rule 8.3), so the writer only packs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;

use crate::error::{escape_name, Error, Result, Violation};
use crate::format::manifest::json::NoDuplicateKeys;
use crate::format::manifest::QuantSourceSpec;
use crate::format::quantization::{rows_cols, Granularity};
use crate::format::rules::Rule;
use crate::format::safetensors::{shape_string, Dtype};
use crate::source::given::{common_granularity, trits_from_bytes, GivenScales, GivenTensor};
use crate::source::{RawTensors, SourceTensor, TensorSource};

/// The file name the stage writes beside its state dict.
pub const METADATA_FILE: &str = "quantization_metadata.json";

/// The largest metadata file read (its scale lists grow with the model's rows).
const MAX_METADATA_BYTES: u64 = 1 << 30;

/// `quantization_metadata.json`, parsed: a scale per quantized tensor, in the form given.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizationMetadata {
    /// Where it was read from.
    pub path: PathBuf,
    /// Each quantized tensor's scales, as given.
    pub scales: BTreeMap<String, ScaleValue>,
    /// `group_size`, when given.
    pub group_size: Option<u64>,
    /// Every other top-level key, as read (`quantization_scheme`, `sparsity_threshold`...).
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// One tensor's scale entry as written: a number, a list, or a list of lists.
#[derive(Debug, Clone, PartialEq)]
pub enum ScaleValue {
    /// A number.
    Number(f32),
    /// A flat list.
    List(Vec<f32>),
    /// A list of lists (one per row).
    Rows(Vec<Vec<f32>>),
}

impl QuantizationMetadata {
    /// Reads and checks `path`: a JSON object without duplicate keys, `scales` an object of
    /// numbers or lists, every zero point 0 (rule 8.3), `group_size` an integer >= 1.
    pub fn read(path: &Path) -> Result<QuantizationMetadata> {
        let bad = |expected: &str, found: String| -> Error {
            Violation::new(path, Rule::GivenTrits, expected, found).into()
        };
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        if size > MAX_METADATA_BYTES {
            return Err(bad(
                &format!("at most {MAX_METADATA_BYTES} bytes"),
                format!("{size} bytes"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        QuantizationMetadata::from_json(path, &text)
    }

    /// Parses and checks the metadata `text` as [`QuantizationMetadata::read`] does a file's;
    /// `path` names it in errors (the Python package passes a dict as JSON, labelled).
    pub fn from_json(path: &Path, text: &str) -> Result<QuantizationMetadata> {
        let bad = |expected: &str, found: String| -> Error {
            Violation::new(path, Rule::GivenTrits, expected, found).into()
        };
        if text.len() as u64 > MAX_METADATA_BYTES {
            return Err(bad(
                &format!("at most {MAX_METADATA_BYTES} bytes"),
                format!("{} bytes", text.len()),
            ));
        }
        let dup: NoDuplicateKeys = serde_json::from_str(text)
            .map_err(|e| bad("a JSON object without duplicate keys", e.to_string()))?;
        if !dup.0 {
            return Err(bad("a JSON object", "another JSON value".into()));
        }
        let top: BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(text).map_err(|e| bad("a JSON object", e.to_string()))?;
        let scales_raw = top
            .get("scales")
            .ok_or_else(|| bad("a key \"scales\" {tensor: scale}", "none".into()))?;
        let named: BTreeMap<String, Box<RawValue>> = serde_json::from_str(scales_raw.get())
            .map_err(|e| bad("\"scales\": an object {tensor: scale}", e.to_string()))?;
        let mut scales = BTreeMap::new();
        for (name, raw) in named {
            let value = scale_value(raw.get()).map_err(|found| {
                Error::from(
                    Violation::new(
                        path,
                        Rule::GivenTrits,
                        "a scale: a number, a list of numbers, or a list of lists of numbers",
                        found,
                    )
                    .tensor(&name),
                )
            })?;
            scales.insert(name, value);
        }
        if let Some(zp) = top.get("zero_points") {
            let zp: BTreeMap<String, serde_json::Value> =
                serde_json::from_str(zp.get()).map_err(|e| {
                    bad(
                        "\"zero_points\": an object {tensor: zero point}",
                        e.to_string(),
                    )
                })?;
            for (name, v) in zp {
                if !scales.contains_key(&name) {
                    return Err(Violation::new(
                        path,
                        Rule::GivenTrits,
                        "zero points only for tensors with a scale",
                        "a zero point for a tensor without a scale",
                    )
                    .tensor(&name)
                    .into());
                }
                if !all_zero(&v) {
                    return Err(Violation::new(
                        path,
                        Rule::GivenTrits,
                        "zero point 0 (with another, the dequantized values would not be trit x scale)",
                        crate::error::excerpt(&v.to_string(), 64),
                    )
                    .tensor(&name)
                    .into());
                }
            }
        }
        // group_size matters only to scales given per group (spec 18.1: ignored otherwise).
        let grouped = scales.values().any(|v| matches!(v, ScaleValue::Rows(_)));
        let group_size = match top.get("group_size").map(|r| r.get()) {
            _ if !grouped => None,
            None | Some("null") => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .ok()
                    .filter(|&g| (1..=crate::format::limits::MAX_GROUP_SIZE).contains(&g))
                    .ok_or_else(|| {
                        bad("group_size: an integer >= 1", crate::error::excerpt(t, 32))
                    })?,
            ),
        };
        let mut details = serde_json::Map::new();
        for (k, v) in &top {
            if !["scales", "zero_points", "group_size"].contains(&k.as_str()) {
                let v: serde_json::Value =
                    serde_json::from_str(v.get()).map_err(|e| bad("JSON values", e.to_string()))?;
                details.insert(k.clone(), v);
            }
        }
        Ok(QuantizationMetadata {
            path: path.to_path_buf(),
            scales,
            group_size,
            details,
        })
    }

    /// What `quantization.source` records of it (rule 2.15).
    pub fn record(&self) -> QuantSourceSpec {
        QuantSourceSpec {
            format: "quantization-metadata".into(),
            scale_name: "scales".into(),
            scale_convention: "multiply".into(),
            details: (!self.details.is_empty())
                .then(|| serde_json::Value::Object(self.details.clone())),
        }
    }
}

/// A zero point that is 0 everywhere (a number or nested lists of numbers).
fn all_zero(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::Array(a) => a.iter().all(all_zero),
        _ => false,
    }
}

/// A JSON number's text as the f32 nearest its decimal value (rounded once, spec section 3.2).
fn number(text: &str) -> Option<f32> {
    let t = text.trim();
    t.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        .then(|| t.parse::<f32>().ok())
        .flatten()
}

/// A scale entry from its JSON text.
fn scale_value(text: &str) -> std::result::Result<ScaleValue, String> {
    let found = || crate::error::excerpt(text.trim(), 48);
    if let Some(v) = number(text) {
        return Ok(ScaleValue::Number(v));
    }
    let items: Vec<Box<RawValue>> = serde_json::from_str(text).map_err(|_| found())?;
    let flat: Option<Vec<f32>> = items.iter().map(|i| number(i.get())).collect();
    if let Some(flat) = flat {
        return Ok(ScaleValue::List(flat));
    }
    let rows: Option<Vec<Vec<f32>>> = items
        .iter()
        .map(|i| {
            serde_json::from_str::<Vec<Box<RawValue>>>(i.get())
                .ok()?
                .iter()
                .map(|x| number(x.get()))
                .collect()
        })
        .collect();
    rows.map(ScaleValue::Rows).ok_or_else(found)
}

/// A state dict of trits with its metadata: a [`TensorSource`] whose quantized tensors are
/// [`TensorSource::given`] (and, read as f32, their effective weights t × scale).
pub struct StageHandoff<'a> {
    inner: Box<dyn RawTensors + 'a>,
    scales: BTreeMap<String, GivenScales>,
    metadata: QuantizationMetadata,
}

impl<'a> StageHandoff<'a> {
    /// Matches `metadata` to the tensors of `inner` (rule 8.3): every scale names a tensor of
    /// `inner`; each quantized tensor has rank >= 1 and a scale of a form and count that fits
    /// its rows and columns; every other tensor is F32, F16 or BF16 (an integer tensor without a
    /// scale is refused). Trit values are checked when each tensor is read.
    pub fn new(inner: Box<dyn RawTensors + 'a>, metadata: QuantizationMetadata) -> Result<Self> {
        let meta_path = metadata.path.clone();
        let tensors: BTreeMap<String, SourceTensor> = inner
            .tensors()
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut scales = BTreeMap::new();
        for (name, value) in &metadata.scales {
            let t = tensors.get(name).ok_or_else(|| {
                Error::from(
                    Violation::new(
                        &meta_path,
                        Rule::GivenTrits,
                        format!("a scale for a tensor of {}", inner.path().display()),
                        "a scale for a tensor that is not there",
                    )
                    .tensor(name),
                )
            })?;
            let (rows, cols) = rows_cols(&t.shape)
                .filter(|&(r, c)| r >= 1 && c >= 1)
                .ok_or_else(|| {
                    Error::from(
                        Violation::new(
                            inner.path(),
                            Rule::GivenTrits,
                            "a quantized tensor of rank >= 1 without empty dimensions",
                            format!("shape {}", shape_string(&t.shape)),
                        )
                        .tensor(name),
                    )
                })?;
            let given = given_scales(value, rows, cols, metadata.group_size).map_err(|found| {
                Error::from(
                    Violation::new(
                        &meta_path,
                        Rule::GivenTrits,
                        format!(
                            "a number, one scale per row ({rows}) or ceil({cols} / group_size) per row (tensor shape {})",
                            shape_string(&t.shape)
                        ),
                        found,
                    )
                    .tensor(name),
                )
            })?;
            scales.insert(name.clone(), given);
        }
        for t in tensors.values() {
            if !scales.contains_key(&t.name)
                && !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
            {
                return Err(Violation::new(
                    inner.path(),
                    Rule::GivenTrits,
                    format!(
                        "a scale in {} for this {} tensor (or a float tensor)",
                        meta_path.display(),
                        t.dtype
                    ),
                    "a quantized tensor without a scale",
                )
                .tensor(&t.name)
                .into());
            }
        }
        Ok(StageHandoff {
            inner,
            scales,
            metadata,
        })
    }

    /// The quantized tensors (the names of `scales`).
    pub fn quantized(&self) -> BTreeSet<String> {
        self.scales.keys().cloned().collect()
    }

    /// The bundle's one granularity (the finest given, section 7.1).
    pub fn granularity(&self) -> Result<Granularity> {
        common_granularity(self.scales.values().map(GivenScales::granularity)).map_err(|m| {
            Error::from(Violation::new(
                &self.metadata.path,
                Rule::GivenTrits,
                "one group size",
                m,
            ))
        })
    }

    /// The metadata as read.
    pub fn metadata(&self) -> &QuantizationMetadata {
        &self.metadata
    }
}

/// The scales of a tensor of `rows` x `cols` from its entry (spec section 18.1).
fn given_scales(
    value: &ScaleValue,
    rows: u64,
    cols: u64,
    group_size: Option<u64>,
) -> std::result::Result<GivenScales, String> {
    let scales = match value {
        ScaleValue::Number(s) => GivenScales::Tensor(*s),
        ScaleValue::List(v) if v.len() == 1 => GivenScales::Tensor(v[0]),
        ScaleValue::List(v) if v.len() as u64 == rows => GivenScales::Channel(v.clone()),
        ScaleValue::List(v) => return Err(format!("a list of {} numbers", v.len())),
        ScaleValue::Rows(r) => {
            let g = group_size.ok_or("a list of lists without a top-level group_size")?;
            let per_row = cols.div_ceil(g);
            if r.len() as u64 != rows || r.iter().any(|row| row.len() as u64 != per_row) {
                return Err(format!(
                    "{} lists of {:?} numbers (group_size {g})",
                    r.len(),
                    r.iter().map(Vec::len).collect::<BTreeSet<_>>()
                ));
            }
            GivenScales::Group {
                size: g,
                scales: r.concat(),
            }
        }
    };
    let values: &[f32] = match &scales {
        GivenScales::Tensor(s) => std::slice::from_ref(s),
        GivenScales::Channel(v) | GivenScales::Group { scales: v, .. } => v,
    };
    if let Some((i, s)) = values
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        return Err(format!(
            "scale {s} at index {i} (scales must be finite and > 0)"
        ));
    }
    Ok(scales)
}

impl TensorSource for StageHandoff<'_> {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.inner.tensors()
    }

    /// Real-valued tensors as stored; a quantized tensor as its effective weights f32(t ×
    /// scale).
    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let Some(g) = self.given(name)? else {
            return self.inner.load_f32(name);
        };
        let shape = self
            .inner
            .raw(name)
            .map(|(_, s, _)| s.to_vec())
            .unwrap_or_default();
        let (rows, cols) = rows_cols(&shape).unwrap_or((0, 0));
        g.values(rows, cols).map_err(|m| {
            Error::InvalidArgument(format!(
                "{}: tensor {}: {m}",
                self.path().display(),
                escape_name(name)
            ))
        })
    }

    fn sha256(&self) -> Option<String> {
        self.inner.sha256()
    }

    fn given(&self, name: &str) -> Result<Option<GivenTensor>> {
        let Some(scales) = self.scales.get(name) else {
            return Ok(None);
        };
        let (dtype, _, bytes) = self.inner.raw(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no tensor {}",
                self.inner.path().display(),
                escape_name(name)
            ))
        })?;
        let trits = trits_from_bytes(dtype, bytes).map_err(|(i, v)| {
            Error::from(
                Violation::new(
                    self.inner.path(),
                    Rule::GivenTrits,
                    "trits: -1, 0 or 1",
                    format!("{v} at flat index {i} ({dtype})"),
                )
                .tensor(name),
            )
        })?;
        self.inner.release(bytes);
        Ok(Some(GivenTensor {
            trits,
            scales: scales.clone(),
        }))
    }
}
