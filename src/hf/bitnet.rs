//! transformers' BitNet quantization (spec sections 18.2 and 18.3): the `quantization_config` of
//! a config.json (`quant_method` "bitnet"), which modules it converts, the packing of
//! `pack_weights` (four 2-bit codes per byte along the rows, in planes of out / 4 rows), and the
//! scale conventions of its two linear classes (`bitlinear` divides by `weight_scale`,
//! `autobitlinear` multiplies). Reading a packed checkpoint turns it into given trits and a
//! per-tensor scale ([`PackedBitnet`]); online quantization becomes the writer's default
//! settings and the original model's forward pass (`online_original`).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::error::{escape_name, Error, Result, Violation};
use crate::format::decoder::{DecoderSpec, PROJECTIONS};
use crate::format::manifest::{QuantSourceSpec, ScaleConvention};
use crate::format::rules::Rule;
use crate::format::safetensors::{shape_string, Dtype};
use crate::source::given::{trits_from_bytes, GivenScales, GivenTensor};
use crate::source::hf::HfModel;
use crate::source::{to_f32, RawTensors, SourceTensor, TensorSource};

/// `linear_class`: which module transformers puts in place of each converted linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearClass {
    /// `BitLinear` (the default): packed weights, output divided by `weight_scale`.
    BitLinear,
    /// `AutoBitLinear`: output multiplied by `weight_scale` (offline), or weights ternarized
    /// on every forward pass (online).
    AutoBitLinear,
}

impl LinearClass {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            LinearClass::BitLinear => "bitlinear",
            LinearClass::AutoBitLinear => "autobitlinear",
        }
    }

    /// How its forward pass applies `weight_scale` (spec section 18.2).
    pub fn convention(self) -> ScaleConvention {
        match self {
            LinearClass::BitLinear => ScaleConvention::Divide,
            LinearClass::AutoBitLinear => ScaleConvention::Multiply,
        }
    }
}

/// A config.json's BitNet `quantization_config`, checked (spec section 18.2).
#[derive(Debug, Clone, PartialEq)]
pub struct BitnetQuantization {
    /// The linear class.
    pub linear_class: LinearClass,
    /// `quantization_mode` "online" (weights ternarized on the fly); else offline (packed).
    pub online: bool,
    /// `modules_to_not_convert`, or `None` for transformers' default (`lm_head`).
    pub not_convert: Option<Vec<String>>,
    /// The keys of the three above that the config states, as read (`quantization.source.details`).
    pub stated: serde_json::Map<String, Value>,
}

impl BitnetQuantization {
    /// The `quantization_config` of config.json `text`: `None` when there is none; an error
    /// naming the key for any other `quant_method`, an unknown `linear_class` or
    /// `quantization_mode`, `use_rms_norm` true, online with `bitlinear`, or an entry of
    /// `modules_to_not_convert` that is a regular expression.
    pub fn from_config(text: &str) -> std::result::Result<Option<BitnetQuantization>, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let q = match v.get("quantization_config") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(q)) => q,
            Some(other) => {
                return Err(format!(
                    "quantization_config: expected an object, found {other}"
                ))
            }
        };
        match q.get("quant_method").and_then(Value::as_str) {
            Some("bitnet") => {}
            other => {
                return Err(format!(
                    "quantization_config.quant_method: expected \"bitnet\" (the only quantization this tool reads: spec section 18), found {}",
                    other.map_or("none".to_string(), |m| format!("{m:?}"))
                ))
            }
        }
        let linear_class = match q.get("linear_class") {
            None | Some(Value::Null) => LinearClass::BitLinear,
            Some(Value::String(s)) if s == "bitlinear" => LinearClass::BitLinear,
            Some(Value::String(s)) if s == "autobitlinear" => LinearClass::AutoBitLinear,
            Some(other) => {
                return Err(format!(
                    "quantization_config.linear_class: expected \"bitlinear\" or \"autobitlinear\", found {other}"
                ))
            }
        };
        let online = match q.get("quantization_mode") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "offline" => false,
            Some(Value::String(s)) if s == "online" => true,
            Some(other) => {
                return Err(format!(
                    "quantization_config.quantization_mode: expected \"offline\" or \"online\", found {other}"
                ))
            }
        };
        if online && linear_class == LinearClass::BitLinear {
            return Err("quantization_config: quantization_mode \"online\" needs linear_class \"autobitlinear\" (bitlinear is offline only)".into());
        }
        if q.get("use_rms_norm").and_then(Value::as_bool) == Some(true) {
            return Err("quantization_config.use_rms_norm: expected false (an RMSNorm inside every linear layer is not part of the reference model)".into());
        }
        let not_convert = match q.get("modules_to_not_convert") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for e in a {
                    let s = e.as_str().ok_or_else(|| {
                        format!("quantization_config.modules_to_not_convert: expected strings, found {e}")
                    })?;
                    if s.is_empty() || s.contains(['*', '+', '?', '[', ']', '(', ')', '{', '}', '|', '^', '$', '\\']) {
                        return Err(format!(
                            "quantization_config.modules_to_not_convert: {s:?}: expected a module name or suffix (regular expressions are not read)"
                        ));
                    }
                    out.push(s.to_string());
                }
                Some(out)
            }
            Some(other) => {
                return Err(format!(
                    "quantization_config.modules_to_not_convert: expected a list of module names, found {other}"
                ))
            }
        };
        let stated = [
            "linear_class",
            "quantization_mode",
            "modules_to_not_convert",
        ]
        .iter()
        .filter_map(|k| q.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
        Ok(Some(BitnetQuantization {
            linear_class,
            online,
            not_convert,
            stated,
        }))
    }

    /// Whether transformers keeps module `name` in float: it equals an entry, starts with an
    /// entry followed by `.`, or ends with an entry (spec section 18.2).
    pub fn keeps_float(&self, name: &str) -> bool {
        let default = ["lm_head".to_string()];
        let entries = self.not_convert.as_deref().unwrap_or(&default);
        entries.iter().any(|e| {
            name == e
                || name.ends_with(e.as_str())
                || name
                    .strip_prefix(e.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
    }

    /// The weight names of the modules it converts: the seven projections of every layer and an
    /// untied `lm_head`, but those kept in float. A converted tied head is refused.
    pub fn converted(&self, spec: &DecoderSpec) -> std::result::Result<BTreeSet<String>, String> {
        let mut modules: Vec<String> = (0..spec.num_hidden_layers)
            .flat_map(|l| {
                PROJECTIONS
                    .iter()
                    .map(move |p| format!("model.layers.{l}.{}", p.trim_end_matches(".weight")))
            })
            .collect();
        modules.push("lm_head".into());
        let mut out = BTreeSet::new();
        for m in modules {
            if self.keeps_float(&m) {
                continue;
            }
            if m == "lm_head" && spec.tie_word_embeddings {
                return Err("quantization_config.modules_to_not_convert: lm_head would be converted, but it is tied to the embedding (not read)".into());
            }
            out.insert(format!("{m}.weight"));
        }
        Ok(out)
    }

    /// The modules transformers' default (`modules_to_not_convert` null) converts in `spec`'s
    /// model: the seven projections of every layer.
    pub fn default_converted(spec: &DecoderSpec) -> std::result::Result<BTreeSet<String>, String> {
        BitnetQuantization {
            linear_class: LinearClass::AutoBitLinear,
            online: true,
            not_convert: None,
            stated: serde_json::Map::new(),
        }
        .converted(spec)
    }

    /// What `quantization.source` records of a packed checkpoint (rule 2.15).
    pub fn record(&self) -> QuantSourceSpec {
        QuantSourceSpec {
            format: "hf-bitnet".into(),
            scale_name: "weight_scale".into(),
            scale_convention: self.linear_class.convention().name().into(),
            details: (!self.stated.is_empty()).then(|| Value::Object(self.stated.clone())),
        }
    }
}

/// Packs the trits of a `[rows, cols]` matrix as transformers' `pack_weights` (spec section
/// 18.2): `[rows / 4, cols]` bytes, the byte at [r, c] holding rows r, r + P, r + 2P, r + 3P
/// (P = rows / 4) in bits 0-1, 2-3, 4-5, 6-7, each as t + 1. `None` unless `rows` is a multiple
/// of 4 and `trits` holds rows x cols values.
pub fn pack_weights(trits: &[i8], rows: usize, cols: usize) -> Option<Vec<u8>> {
    if rows % 4 != 0 || trits.len() != rows.checked_mul(cols)? {
        return None;
    }
    let p = rows / 4;
    let mut out = vec![0u8; p * cols];
    for (i, plane) in trits.chunks(p * cols.max(1)).enumerate() {
        for (o, &t) in out.iter_mut().zip(plane) {
            *o |= ((t + 1) as u8 & 3) << (2 * i);
        }
    }
    Some(out)
}

/// Unpacks `[rows / 4, cols]` bytes of `pack_weights` into the trits of a `[rows, cols]`
/// matrix. Fails, saying what was expected, when `rows` is not a multiple of 4, the bytes are
/// not `rows / 4 * cols`, or a byte holds the code 3 (not a trit: the flat index of the byte).
pub fn unpack_weights(
    packed: &[u8],
    rows: usize,
    cols: usize,
) -> std::result::Result<Vec<i8>, String> {
    let p = rows / 4;
    if rows % 4 != 0 || Some(packed.len()) != p.checked_mul(cols) {
        return Err(format!(
            "{} packed bytes for {rows} rows of {cols} (expected rows a multiple of 4 and rows / 4 x cols bytes)",
            packed.len()
        ));
    }
    let mut out = vec![0i8; rows * cols];
    for (i, plane) in out.chunks_mut(p * cols.max(1)).enumerate() {
        for (k, (o, &b)) in plane.iter_mut().zip(packed).enumerate() {
            let code = (b >> (2 * i)) & 3;
            if code == 3 {
                return Err(format!("code 3 in packed byte {k} ({b:#04x})"));
            }
            *o = code as i8 - 1;
        }
    }
    Ok(out)
}

/// A Hugging Face packed BitNet checkpoint (spec section 18.2) as a source of given trits: each
/// converted module's `weight` (packed U8 or float trits) and `weight_scale` (turned into the
/// bundle's per-tensor scale by the linear class's convention), every other tensor as stored.
pub struct PackedBitnet {
    model: HfModel,
    quantization: BitnetQuantization,
    converted: BTreeSet<String>,
    tensors: Vec<SourceTensor>,
}

impl PackedBitnet {
    /// Opens the model directory `dir` whose config.json has an offline BitNet
    /// `quantization_config`, and matches every tensor: a converted module's weight packed
    /// `[out / 4, in]` U8 (out a multiple of 4) or float `[out, in]`, its `weight_scale` `[1]`
    /// F32, F16 or BF16; every other tensor float with its rule 2.14 shape; nothing else.
    pub fn open(dir: &Path) -> Result<PackedBitnet> {
        let model = HfModel::open_with(dir, crate::source::hf::Dtypes::Unchecked, false)?;
        let config = dir.join(crate::source::hf::CONFIG_FILE);
        let bad_config = |m: String| Error::InvalidArgument(format!("{}: {m}", config.display()));
        let quantization = BitnetQuantization::from_config(model.config_text())
            .map_err(bad_config)?
            .ok_or_else(|| bad_config("expected a quantization_config (quant_method \"bitnet\") for a packed checkpoint".into()))?;
        if quantization.online {
            return Err(bad_config("quantization_mode \"online\": float master weights, not a packed checkpoint (read them as a model directory)".into()));
        }
        let spec = model.spec().clone();
        let converted = quantization.converted(&spec).map_err(bad_config)?;
        let present: BTreeSet<String> = model.tensors().into_iter().map(|t| t.name).collect();
        let mut tensors = Vec::new();
        for (name, shape) in spec.tensors() {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let (dtype, found, _) = model.raw(&name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: tensor {name} missing: the config needs it with shape {}",
                    dir.display(),
                    shape_string(&shape)
                ))
            })?;
            let float = matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16);
            let ok = if converted.contains(&name) {
                (dtype == Dtype::U8 && shape[0] % 4 == 0 && found == [shape[0] / 4, shape[1]])
                    || (float && found == shape.as_slice())
            } else {
                float && found == shape.as_slice()
            };
            if !ok {
                let expected = if converted.contains(&name) {
                    format!(
                        "U8 [{}, {}] (packed, {} rows a multiple of 4) or a float {} of trits",
                        shape[0] / 4,
                        shape[1],
                        shape[0],
                        shape_string(&shape)
                    )
                } else {
                    format!("F32, F16 or BF16 {}", shape_string(&shape))
                };
                return Err(Error::InvalidArgument(format!(
                    "{}: tensor {name}: expected {expected} (from {}), found {dtype} {}",
                    dir.display(),
                    crate::source::hf::CONFIG_FILE,
                    shape_string(found)
                )));
            }
            tensors.push(SourceTensor { name, shape, dtype });
        }
        for name in &converted {
            let scale = scale_name(name);
            match model.raw(&scale) {
                Some((d, s, _)) if matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16) && s == [1] => {}
                found => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: tensor {scale}: expected F32, F16 or BF16 [1] (the per-tensor weight_scale of a converted module), found {}",
                        dir.display(),
                        found.map_or("none".into(), |(d, s, _)| format!("{d} {}", shape_string(s)))
                    )))
                }
            }
        }
        let known: BTreeSet<String> = tensors
            .iter()
            .map(|t| t.name.clone())
            .chain(converted.iter().map(|n| scale_name(n)))
            .collect();
        if let Some(extra) = present.iter().find(|n| !known.contains(*n)) {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {} is not part of the packed {} model the config describes",
                dir.display(),
                escape_name(extra),
                spec.family.name()
            )));
        }
        Ok(PackedBitnet {
            model,
            quantization,
            converted,
            tensors,
        })
    }

    /// The decoder.
    pub fn spec(&self) -> &DecoderSpec {
        self.model.spec()
    }

    /// The quantization it declares.
    pub fn quantization(&self) -> &BitnetQuantization {
        &self.quantization
    }

    /// The weights of the converted modules (the bundle's quantized tensors).
    pub fn converted(&self) -> &BTreeSet<String> {
        &self.converted
    }

    /// The bundle's scale of converted weight `name` (spec section 18.2: f32(s), or 1 / f32(s)
    /// for bitlinear).
    fn bundle_scale(&self, name: &str) -> Result<f32> {
        let scale = scale_name(name);
        let (dtype, _, bytes) = self.model.raw(&scale).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: no tensor {scale}", self.model.dir().display()))
        })?;
        let s = to_f32(dtype, bytes)
            .and_then(|v| v.first().copied())
            .unwrap_or(f32::NAN);
        let b = self.quantization.linear_class.convention().bundle_scale(s);
        if !(s.is_finite() && s > 0.0 && b.is_finite() && b > 0.0) {
            return Err(Violation::new(
                self.model.dir(),
                Rule::GivenTrits,
                "weight_scale finite and > 0 (its bundle scale too)",
                format!("{s} (bundle scale {b})"),
            )
            .tensor(&scale)
            .into());
        }
        Ok(b)
    }
}

/// The name of the scale tensor of converted weight `name` (`x.weight` -> `x.weight_scale`).
fn scale_name(weight: &str) -> String {
    format!("{}_scale", weight)
}

impl TensorSource for PackedBitnet {
    fn path(&self) -> &Path {
        self.model.dir()
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.tensors.clone()
    }

    /// Float tensors as stored; a converted weight as its effective weights f32(t × scale).
    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        match self.given(name)? {
            None => self.model.load_f32(name),
            Some(g) => {
                let t = self.tensors.iter().find(|t| t.name == name);
                let (rows, cols) = t.map_or((0, 0), |t| (t.shape[0], t.shape[1]));
                g.values(rows, cols).map_err(|m| {
                    Error::InvalidArgument(format!(
                        "{}: tensor {}: {m}",
                        self.model.dir().display(),
                        escape_name(name)
                    ))
                })
            }
        }
    }

    fn sha256(&self) -> Option<String> {
        None
    }

    fn given(&self, name: &str) -> Result<Option<GivenTensor>> {
        if !self.converted.contains(name) {
            return Ok(None);
        }
        let shape = &self
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::InvalidArgument(format!("no tensor {name}")))?
            .shape;
        let (rows, cols) = (shape[0] as usize, shape[1] as usize);
        let (dtype, _, bytes) = self.model.raw(name).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: no tensor {name}", self.model.dir().display()))
        })?;
        let bad = |found: String| -> Error {
            Violation::new(
                self.model.dir(),
                Rule::GivenTrits,
                "trits: codes 0, 1, 2 (-1, 0, +1)",
                found,
            )
            .tensor(name)
            .into()
        };
        let trits = if dtype == Dtype::U8 {
            unpack_weights(bytes, rows, cols).map_err(bad)?
        } else {
            trits_from_bytes(dtype, bytes)
                .map_err(|(i, v)| bad(format!("{v} at flat index {i}")))?
        };
        RawTensors::release(&self.model, bytes);
        Ok(Some(GivenTensor {
            trits,
            scales: GivenScales::Tensor(self.bundle_scale(name)?),
        }))
    }
}

/// The original model of a model directory with online BitNet quantization (spec section 18.3):
/// the weights of the modules it converts, for [`crate::model::original::OriginalModel::bitnet_online`].
pub fn online_converted(model: &HfModel) -> Result<Option<BTreeSet<String>>> {
    let config = model.dir().join(crate::source::hf::CONFIG_FILE);
    let bad = |m: String| Error::InvalidArgument(format!("{}: {m}", config.display()));
    match BitnetQuantization::from_config(model.config_text()).map_err(bad)? {
        Some(q) if q.online => Ok(Some(q.converted(model.spec()).map_err(bad)?)),
        Some(_) => Err(bad(
            "quantization_mode \"offline\": a packed checkpoint, not float master weights".into(),
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_transformers_planes_of_rows() {
        // 8 rows of 1 column: P = 2, byte 0 holds rows 0, 2, 4, 6; byte 1 rows 1, 3, 5, 7.
        let t: Vec<i8> = vec![-1, 0, 1, -1, 0, 1, 1, 0];
        let p = pack_weights(&t, 8, 1).unwrap();
        // Codes t + 1: rows 0, 2, 4, 6 are -1, 1, 0, 1 -> 0, 2, 1, 2.
        assert_eq!(p[0], 0b10_01_10_00);
        // Rows 1, 3, 5, 7 are 0, -1, 1, 0 -> 1, 0, 2, 1.
        assert_eq!(p[1], 0b01_10_00_01);
        assert_eq!(unpack_weights(&p, 8, 1).unwrap(), t);
        assert_eq!(pack_weights(&t[..6], 6, 1), None);
        assert_eq!(
            unpack_weights(&[3], 4, 1).unwrap_err(),
            "code 3 in packed byte 0 (0x03)"
        );
        assert!(unpack_weights(&[0], 8, 1)
            .unwrap_err()
            .contains("1 packed bytes for 8 rows"));
    }

    #[test]
    fn the_config_decides_the_convention_and_what_is_converted() {
        let q = BitnetQuantization::from_config(
            r#"{"quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(q.linear_class.convention(), ScaleConvention::Multiply);
        assert!(q.keeps_float("lm_head"));
        assert!(!q.keeps_float("model.layers.0.self_attn.q_proj"));
        let q = BitnetQuantization::from_config(r#"{"quantization_config": {"quant_method": "bitnet", "modules_to_not_convert": ["q_proj", "model.layers.1"]}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(q.linear_class.convention(), ScaleConvention::Divide);
        assert!(q.keeps_float("model.layers.0.self_attn.q_proj"));
        assert!(q.keeps_float("model.layers.1.mlp.up_proj"));
        assert!(!q.keeps_float("model.layers.11.mlp.up_proj"));
        assert!(!q.keeps_float("lm_head"));
        for bad in [
            r#"{"quantization_config": {"quant_method": "gptq"}}"#,
            r#"{"quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear2"}}"#,
            r#"{"quantization_config": {"quant_method": "bitnet", "quantization_mode": "online"}}"#,
            r#"{"quantization_config": {"quant_method": "bitnet", "use_rms_norm": true}}"#,
            r#"{"quantization_config": {"quant_method": "bitnet", "modules_to_not_convert": ["layers.*"]}}"#,
        ] {
            assert!(BitnetQuantization::from_config(bad).is_err(), "{bad}");
        }
        assert_eq!(BitnetQuantization::from_config("{}").unwrap(), None);
    }
}
