//! Rules 2.6 to 2.12: the semantic validation that makes the rest of the crate able to trust
//! the manifest's numbers (names, the tensor list, quantization, the model, the file table,
//! provenance, extensions).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::{escape_name, excerpt, Result, Violation};
use crate::format::activation::Activation;
use crate::format::decoder::{DecoderSpec, Family};
use crate::format::encoding::Encoding;
use crate::format::limits::{
    MAX_ELEMENTS, MAX_GROUP_SIZE, MAX_LAYERS, MAX_MANIFEST_TENSORS, MAX_QUANTIZED_NAME_BYTES,
    MAX_RANK,
};
use crate::format::manifest::json::json_type;
use crate::format::manifest::{
    scale_tensor_name, DecoderModelSpec, FileRole, FormatVersion, Manifest, ManifestFacts,
    OriginalForward, ScaleConvention, TensorSpec, ASSET_NAMES, METHOD_ABSMEAN, METHOD_GIVEN,
};
use crate::format::names::name_problem;
use crate::format::quantization::{rows_cols, Granularity, QuantMethod, QuantParams};
use crate::format::rfc3339::is_rfc3339_utc;
use crate::format::rules::Rule;
use crate::format::safetensors::{element_count, shape_string};

impl Manifest {
    /// Semantic validation (rules 2.6 to 2.17).
    pub fn validate(&self, path: &Path, version: FormatVersion) -> Result<ManifestFacts> {
        let (params, method) = self.validate_quantization(path, version)?;
        let by_name = self.validate_tensors(path)?;
        let (activations, decoder) = match &self.model.decoder {
            Some(d) => (Vec::new(), Some(self.validate_decoder(path, version, d)?)),
            None => (self.validate_model(path, &by_name)?, None),
        };
        self.validate_files(path)?;
        self.validate_assets(path)?;
        self.validate_provenance(path)?;
        self.validate_original(path)?;
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
            method,
            activations,
            decoder,
            tensor_index,
        })
    }

    fn validate_quantization(
        &self,
        path: &Path,
        version: FormatVersion,
    ) -> Result<(QuantParams, QuantMethod)> {
        let q = &self.quantization;
        let bad = |expected: &str, found: String| {
            Violation::new(path, Rule::Quantization, expected, found)
        };
        let method = match q.method.as_str() {
            METHOD_ABSMEAN => QuantMethod::Absmean,
            METHOD_GIVEN if version.allows_given_and_assets() => QuantMethod::Given,
            METHOD_GIVEN => {
                return Err(bad(
                    &format!("method \"absmean\" in format {version} (\"given\" needs 4.0)"),
                    excerpt(&q.method, 32),
                )
                .into())
            }
            other => return Err(bad("method \"absmean\" or \"given\"", excerpt(other, 32)).into()),
        };
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
        let defaults = QuantParams::default();
        let (epsilon, sparsity_threshold) =
            match (method, q.epsilon, q.sparsity_threshold) {
                (QuantMethod::Absmean, Some(e), Some(t)) => (e, t),
                (QuantMethod::Absmean, e, t) => {
                    return Err(bad(
                        "epsilon and sparsity_threshold numbers for method \"absmean\"",
                        format!("epsilon {e:?}, sparsity_threshold {t:?}"),
                    )
                    .into())
                }
                // No quantizer ran: the settings are null, and the defaults stand in internally.
                (QuantMethod::Given, None, None) => (defaults.epsilon, defaults.sparsity_threshold),
                (QuantMethod::Given, e, t) => return Err(bad(
                    "epsilon and sparsity_threshold null for method \"given\" (no quantizer ran)",
                    format!("epsilon {e:?}, sparsity_threshold {t:?}"),
                )
                .into()),
            };
        let params = QuantParams {
            encoding,
            granularity,
            epsilon,
            sparsity_threshold,
        };
        params
            .check()
            .map_err(|m| bad("valid epsilon and sparsity_threshold", m))?;
        self.validate_source(path, method)?;
        Ok((params, method))
    }

    /// Rule 2.15: `quantization.source` exactly for method `given`, with its keys.
    fn validate_source(&self, path: &Path, method: QuantMethod) -> Result<()> {
        let bad = |expected: &str, found: String| {
            Violation::new(path, Rule::QuantizationSource, expected, found)
        };
        let source = match (method, &self.quantization.source) {
            (QuantMethod::Absmean, None) => return Ok(()),
            (QuantMethod::Absmean, Some(_)) => {
                return Err(bad(
                    "no quantization.source for method \"absmean\"",
                    "a source object".into(),
                )
                .into())
            }
            (QuantMethod::Given, None) => {
                return Err(bad(
                    "quantization.source (where the given trits came from)",
                    "none".into(),
                )
                .into())
            }
            (QuantMethod::Given, Some(s)) => s,
        };
        for (key, value) in [
            ("format", &source.format),
            ("scale_name", &source.scale_name),
        ] {
            if value.is_empty() || value.len() > 64 || value.chars().any(char::is_control) {
                return Err(bad(
                    &format!("quantization.source.{key}: 1 to 64 bytes without control characters"),
                    excerpt(value, 80),
                )
                .into());
            }
        }
        if ScaleConvention::from_name(&source.scale_convention).is_none() {
            return Err(bad(
                "quantization.source.scale_convention \"multiply\" or \"divide\"",
                excerpt(&source.scale_convention, 32),
            )
            .into());
        }
        match &source.details {
            None | Some(serde_json::Value::Null | serde_json::Value::Object(_)) => Ok(()),
            Some(other) => Err(bad(
                "quantization.source.details: an object or null",
                json_type(other),
            )
            .into()),
        }
    }

    /// Rule 2.17: the asset table.
    fn validate_assets(&self, path: &Path) -> Result<()> {
        let Some(assets) = &self.files.assets else {
            return Ok(());
        };
        let bad = |expected: String, found: String| {
            Violation::new(
                path,
                Rule::Assets,
                format!("files.assets: {expected}"),
                found,
            )
        };
        if assets.len() > ASSET_NAMES.len() {
            return Err(bad(
                format!("at most {} entries (one per asset name)", ASSET_NAMES.len()),
                format!("{}", assets.len()),
            )
            .into());
        }
        let mut seen = HashSet::new();
        for a in assets {
            if !ASSET_NAMES.contains(&a.name.as_str()) {
                return Err(bad(
                    format!("a name among {}", ASSET_NAMES.join(", ")),
                    escape_name(&a.name),
                )
                .into());
            }
            if !seen.insert(a.name.as_str()) {
                return Err(bad("each name once".into(), format!("{} twice", a.name)).into());
            }
            if !is_sha256_hex(&a.sha256) {
                return Err(bad(
                    format!("{}: sha256 of 64 lowercase hex digits", a.name),
                    excerpt(&a.sha256, 80),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Rule 2.16: `provenance.original`.
    fn validate_original(&self, path: &Path) -> Result<()> {
        let Some(original) = &self.provenance.original else {
            return Ok(());
        };
        let bad = |expected: &str, found: String| {
            Violation::new(path, Rule::OriginalModel, expected, found)
        };
        if OriginalForward::from_name(&original.forward).is_none() {
            return Err(bad(
                "provenance.original.forward \"dense\", \"ternary\" or \"bitnet-online\"",
                excerpt(&original.forward, 32),
            )
            .into());
        }
        if let Some(d) = &original.sha256 {
            if !is_sha256_hex(d) {
                return Err(bad(
                    "provenance.original.sha256 of 64 lowercase hex digits or null",
                    excerpt(d, 80),
                )
                .into());
            }
        }
        Ok(())
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

    /// Rules 2.13 (the decoder's numbers make a model, in a format 3.x bundle) and 2.14 (the
    /// tensors are exactly the decoder's, each with its shape).
    fn validate_decoder(
        &self,
        path: &Path,
        version: FormatVersion,
        d: &DecoderModelSpec,
    ) -> Result<DecoderSpec> {
        let bad = |expected: String, found: String| {
            Violation::new(path, Rule::DecoderModel, expected, found)
        };
        if !version.allows_decoder() {
            return Err(bad(
                "a decoder model only in a format 3.0 or later bundle".into(),
                format!("model.decoder in a format {version} bundle"),
            )
            .into());
        }
        let family = match d.family.as_str() {
            "llama" => Family::Llama,
            "bitnet" => Family::Bitnet,
            other => {
                return Err(bad(
                    "model.decoder.family \"llama\" or \"bitnet\"".into(),
                    excerpt(other, 32),
                )
                .into())
            }
        };
        let size = |key: &str, v: u64| {
            usize::try_from(v).map_err(|_| {
                bad(
                    format!("model.decoder.{key} that fits in memory"),
                    v.to_string(),
                )
            })
        };
        let spec = DecoderSpec {
            family,
            vocab_size: size("vocab_size", d.vocab_size)?,
            hidden_size: size("hidden_size", d.hidden_size)?,
            intermediate_size: size("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: size("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: size("num_attention_heads", d.num_attention_heads)?,
            num_key_value_heads: size("num_key_value_heads", d.num_key_value_heads)?,
            head_dim: size("head_dim", d.head_dim)?,
            rms_norm_eps: d.rms_norm_eps,
            rope_theta: d.rope_theta as f64,
            tie_word_embeddings: d.tie_word_embeddings,
        };
        spec.check().map_err(|e| {
            // check() says "key: expected X, found Y".
            let (key, problem) = e.split_once(": ").unwrap_or(("", &e));
            let (want, found) = problem
                .rsplit_once(", found ")
                .unwrap_or(("sizes whose element counts fit in 64 bits", problem));
            let want = want.strip_prefix("expected ").unwrap_or(want);
            let at = if key == "sizes" {
                "model.decoder".to_string()
            } else {
                format!("model.decoder.{key}")
            };
            bad(format!("{at}: {want}"), found.to_string())
        })?;
        // Rule 2.14: the same names with the same shapes, nothing missing, nothing extra.
        let expected = spec.tensors();
        let by_name: HashMap<&str, &TensorSpec> =
            self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let bad_tensor = |name: &str, expected: String, found: String| {
            Violation::new(path, Rule::DecoderTensors, expected, found).tensor(name)
        };
        for (name, shape) in &expected {
            let want: Vec<u64> = shape.iter().map(|&x| x as u64).collect();
            match by_name.get(name.as_str()) {
                None => {
                    return Err(bad_tensor(
                        name,
                        format!("a tensor of shape {} (the decoder's)", shape_string(&want)),
                        "no such tensor".into(),
                    )
                    .into())
                }
                Some(t) if t.shape != want => {
                    return Err(bad_tensor(
                        name,
                        format!("shape {} (from model.decoder)", shape_string(&want)),
                        format!("shape {}", shape_string(&t.shape)),
                    )
                    .into())
                }
                Some(_) => {}
            }
        }
        if self.tensors.len() != expected.len() {
            let names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
            let extra = self
                .tensors
                .iter()
                .find(|t| !names.contains(t.name.as_str()))
                .map(|t| t.name.as_str())
                .unwrap_or("?");
            return Err(bad_tensor(
                extra,
                format!("only the decoder's {} tensors", expected.len()),
                "a tensor the decoder does not have".into(),
            )
            .into());
        }
        Ok(spec)
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
