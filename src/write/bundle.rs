//! Building a bundle: quantize tensor by tensor, write both safetensors files at offsets planned
//! up front, hash, write the manifest, then publish the directory atomically (spec sections
//! "Canonical writer layout" and "Atomic writing").
//!
//! The bundle is assembled in a sibling temporary directory `.<name>.tmp-<pid>-<n>`, every file
//! and the directory are fsynced, and only then is it renamed into place (or swapped with the
//! old bundle by `renameat2(RENAME_EXCHANGE)` when replacing). A failure at any point removes the
//! temporary directory and leaves the destination untouched. Memory is bounded by the tensors
//! being processed (one per worker thread), not by the model.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;

use half::f16;
use rayon::prelude::*;

use crate::error::{escape_name, Error, Result, Violation};
use crate::format::decoder::DecoderSpec;
use crate::format::distribution::{Form, MAX_TOP_K};
use crate::format::layout::{
    decoder_validation_layout, fp16_layout, ternary_layout, validation_layout, OriginalRecord,
    VALIDATION_DIFFICULTY, VALIDATION_INPUTS, VALIDATION_INPUT_IDS, VALIDATION_LABELS,
    VALIDATION_ORIGINAL_LABEL_LOG_PROBS, VALIDATION_ORIGINAL_LOG_PROBS,
    VALIDATION_ORIGINAL_LOG_SUM_EXP, VALIDATION_ORIGINAL_PREDICTIONS, VALIDATION_ORIGINAL_TOP_IDS,
    VALIDATION_ORIGINAL_TOP_LOG_PROBS,
};
use crate::format::le;
use crate::format::manifest::{
    AssetEntry, FileEntry, FileRole, FileTable, FormatVersion, Manifest, ManifestFacts, ModelSpec,
    OriginalForward, OriginalSpec, Provenance, QuantizationSpec, TensorSpec, FORMAT_NAME,
    MANIFEST_DIGEST_PLACEHOLDER, MANIFEST_FILE,
};
use crate::format::quantization::QuantParams;
use crate::format::rules::Rule;
use crate::format::safetensors::{plan_layout, Header};
use crate::model::distribution::Stored;
use crate::model::original::{OriginalModel, OriginalOutputs};
use crate::quant::dequantize::dequantize_tensor_f16;
use crate::quant::quantize::{pack_given, quantize, quantize_with_scales, QuantStats};
use crate::signing::{manifest_digests, sign_dir, SigningKey};
use crate::source::{AssetFile, TensorSource, ValidationSet};
use crate::write::plan::BundlePlan;
use crate::write::safetensors::{create_sized, finish_file, put};
use crate::write::staging::{check_destination, sync_dir, write_synced, Staging};
/// Where `provenance.source_sha256` comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SourceDigest {
    /// Not recorded (null).
    #[default]
    Unknown,
    /// Given by the caller (64 lowercase hex digits).
    Given(String),
    /// The SHA-256 of the source's bytes ([`TensorSource::sha256`]), computed while the
    /// tensors are quantized rather than before.
    Compute,
}

/// How to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOptions {
    /// Replace an existing bundle at the destination.
    pub force: bool,
    /// The SHA-256 of the source checkpoint recorded in provenance.
    pub source_sha256: SourceDigest,
    /// Creation timestamp to record (none by default: output stays deterministic).
    pub created: Option<String>,
    /// A validation set to embed.
    pub validation: Option<ValidationSet>,
    /// Scales to use instead of computing them, by tensor name (re-quantization with
    /// `--keep-scales`); tensors not listed get fresh absmean scales.
    pub fixed_scales: BTreeMap<String, Vec<f32>>,
    /// Files carried unchanged into the bundle (format 4.0, rule 1.6): a model directory's
    /// tokenizer and generation settings.
    pub assets: Vec<AssetFile>,
    /// The SHA-256 of the original model's file when it is not the source
    /// (`provenance.original.sha256`, rule 2.16).
    pub original_sha256: Option<String>,
    /// The original model is not the source (`--original`): the manifest must say so
    /// (`provenance.original`, format 4.0), even for a directory, whose digest is null.
    pub original_elsewhere: bool,
    /// Which form of the original model's distributions to store beside its predictions
    /// (format 5.0, rule 6.1): `None` for the writer's choice ([`Form::default_for`]),
    /// `Some(0)` for none (a bundle older readers open), `Some(k)` for the top k.
    pub original_top_k: Option<u64>,
    /// Sign the bundle with this key (`model.sig`, spec section 10.1) in the staging
    /// directory, with the digests just written, before it is published.
    pub sign_key: Option<SigningKey>,
}

/// What was written, per tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Quantization figures, for quantized tensors.
    pub stats: Option<QuantStats>,
}

/// The result of [`write_bundle`].
#[derive(Debug, Clone, PartialEq)]
pub struct WriteReport {
    /// The manifest as written.
    pub manifest: Manifest,
    /// Per-tensor figures, sorted by name.
    pub tensors: Vec<TensorReport>,
}

/// Writes a bundle of `source`'s tensors to directory `dest` according to `plan`.
///
/// Fails with [`Error::DestinationExists`] if `dest` exists and `options.force` is false. With
/// `force`, `dest` must be a bundle (it holds a `manifest.json`) or an empty directory; it is
/// replaced atomically.
pub fn write_bundle(
    dest: &Path,
    source: &dyn TensorSource,
    plan: &BundlePlan,
    options: &WriteOptions,
) -> Result<WriteReport> {
    write_bundle_with_progress(dest, source, plan, options, &|_| {})
}

/// [`write_bundle`], calling `progress(n)` after each tensor is written with its element
/// count (from worker threads), so a caller can drive a progress bar. The original model is
/// the source run dense; a plan of given trits has none (no `original_predictions`).
pub fn write_bundle_with_progress(
    dest: &Path,
    source: &dyn TensorSource,
    plan: &BundlePlan,
    options: &WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    let dense = OriginalModel::dense(source);
    let original = plan.given.is_none().then_some(&dense);
    write_bundle_from(dest, source, original, plan, options, progress)
}

/// [`write_bundle_with_progress`] for the latent weights of quantization-aware training: the
/// original model is the source's own ternary forward pass (every tensor the plan quantizes
/// as t × scale of this quantization, `provenance.original.forward` `"ternary"`, spec section
/// 7.2), the model that training ran. The built-in demos are such models.
pub fn write_bundle_qat(
    dest: &Path,
    source: &dyn TensorSource,
    plan: &BundlePlan,
    options: &WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    let original = OriginalModel::ternary(source, plan.quantize.clone(), plan.params)?;
    write_bundle_from(dest, source, Some(&original), plan, options, progress)
}

/// Writes a bundle of `source`'s tensors to `dest` according to `plan`, with the original
/// model's decisions on the validation set (`original_predictions`, rule 6.3) computed by
/// `original` (spec rule 2.16: the source dense, through the quantizer, transformers' online
/// BitNet, or another model beside given trits); `None` writes no original predictions (given
/// trits without their full-precision weights: retention is then unknown).
pub fn write_bundle_from(
    dest: &Path,
    source: &dyn TensorSource,
    original: Option<&OriginalModel<'_>>,
    plan: &BundlePlan,
    options: &WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    check_plan(source, plan, options)?;
    check_destination(dest, options.force)?;
    // A draft manifest, validated before any heavy work; then the original model's decisions on
    // the validation inputs (rule 6.3), run by the reference model in f32.
    let forward = original.map(OriginalModel::forward);
    let (mut manifest, facts) = draft_manifest(dest, source, plan, options, forward)?;
    let original_outputs = match (&options.validation, original) {
        (Some(v), Some(o)) => Some(original_outputs(o, plan, &facts, v, options)?),
        (Some(v), None) => {
            check_validation_fits(v, plan, &facts)?;
            None
        }
        (None, _) => None,
    };

    let staging = Staging::create(dest)?;
    // The source's digest, when asked for, is hashed on one thread while the others quantize.
    let (digest, reports) = rayon::join(
        || match options.source_sha256 {
            SourceDigest::Compute => source.sha256(),
            _ => None,
        },
        || write_model_files(&staging.dir, &mut manifest, source, plan, options, progress),
    );
    let reports = reports?;
    if let Some(d) = digest {
        manifest.provenance.source_sha256 = Some(d);
    }
    if let Some(v) = &options.validation {
        manifest.files.validation = Some(write_validation(
            &staging.dir,
            v,
            original_outputs.as_ref(),
            &plan.model,
        )?);
    }
    write_assets(&staging.dir, &options.assets)?;
    write_manifest(&staging.dir, &dest.join(MANIFEST_FILE), &mut manifest)?;
    if let Some(key) = &options.sign_key {
        let subject = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        sign_dir(&staging.dir, &subject, key, &manifest_digests(&manifest))?;
    }
    sync_dir(&staging.dir)?;
    staging.commit(dest, options.force)?;
    Ok(WriteReport {
        manifest,
        tensors: reports,
    })
}

/// The plan's settings are valid, every tensor it names exists, fixed scales are for quantized
/// tensors only, given trits are not re-quantized, assets have their fixed names.
fn check_plan(source: &dyn TensorSource, plan: &BundlePlan, options: &WriteOptions) -> Result<()> {
    plan.params.check().map_err(Error::InvalidArgument)?;
    if plan.given.is_some() && !options.fixed_scales.is_empty() {
        return Err(Error::InvalidArgument(
            "fixed scales re-quantize real weights; given trits keep their own scales".into(),
        ));
    }
    let mut names = BTreeSet::new();
    for a in &options.assets {
        if !crate::format::manifest::ASSET_NAMES.contains(&a.name.as_str())
            || !names.insert(&a.name)
        {
            return Err(Error::InvalidArgument(format!(
                "asset {}: expected one of {} (each once)",
                escape_name(&a.name),
                crate::format::manifest::ASSET_NAMES.join(", ")
            )));
        }
    }
    if let Some(name) = options
        .fixed_scales
        .keys()
        .find(|n| !plan.quantize.contains(*n))
    {
        return Err(Error::InvalidArgument(format!(
            "fixed scales given for {}, which is not quantized",
            escape_name(name)
        )));
    }
    let known: BTreeSet<String> = source.tensors().into_iter().map(|t| t.name).collect();
    if let Some(missing) = plan.quantize.iter().find(|n| !known.contains(*n)) {
        return Err(Error::InvalidArgument(format!(
            "{}: no tensor {} to quantize",
            source.path().display(),
            escape_name(missing)
        )));
    }
    Ok(())
}

/// The manifest before the files exist: every tensor (sorted by name), placeholders for sizes,
/// digests and statistics, validated with the rules of section 2.
fn draft_manifest(
    dest: &Path,
    source: &dyn TensorSource,
    plan: &BundlePlan,
    options: &WriteOptions,
    forward: Option<OriginalForward>,
) -> Result<(Manifest, ManifestFacts)> {
    let mut sources = source.tensors();
    sources.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let tensors = sources
        .into_iter()
        .map(|t| {
            let q = plan.quantize.contains(&t.name);
            TensorSpec {
                name: t.name,
                shape: t.shape,
                quantized: q,
                zeros: q.then_some(0),
                scale_min: q.then_some(1.0),
                scale_max: q.then_some(1.0),
            }
        })
        .collect();
    let placeholder = FileEntry {
        size: 0,
        sha256: "0".repeat(64),
        tensors: Vec::new(),
    };
    // The lowest version whose rules the bundle satisfies (spec section 13): the original
    // model's distributions need 5.0; given trits,
    // assets, or an original model other than the source run dense need 4.0; a decoder needs
    // 3.0; original predictions need 2.0; 1.0 readers open the rest.
    let predictions = options.validation.is_some() && forward.is_some();
    let distributions = predictions && options.original_top_k != Some(0);
    let other_original = predictions
        && (forward != Some(OriginalForward::Dense)
            || options.original_sha256.is_some()
            || options.original_elsewhere);
    let version = if distributions {
        FormatVersion::V5_0
    } else if plan.given.is_some() || !options.assets.is_empty() || other_original {
        FormatVersion::V4_0
    } else if plan.model.decoder.is_some() {
        FormatVersion::V3_0
    } else if predictions {
        FormatVersion::V2_0
    } else {
        FormatVersion::V1_0
    };
    let original = match forward {
        Some(f) if predictions && version >= FormatVersion::V4_0 => Some(OriginalSpec {
            forward: f.name().into(),
            sha256: options.original_sha256.clone(),
        }),
        _ => None,
    };
    let assets = (!options.assets.is_empty()).then(|| {
        options
            .assets
            .iter()
            .map(|a| AssetEntry {
                name: a.name.clone(),
                size: a.bytes.len() as u64,
                sha256: crate::format::checksum::sha256_hex(&a.bytes),
            })
            .collect()
    });
    let quantization = match &plan.given {
        Some(s) => QuantizationSpec::given(&plan.params, s.clone()),
        None => QuantizationSpec::from_params(&plan.params),
    };
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        format_version: version.to_string(),
        model: plan.model.clone(),
        quantization,
        tensors,
        files: FileTable {
            ternary: placeholder.clone(),
            fp16: placeholder.clone(),
            validation: options.validation.as_ref().map(|_| placeholder),
            assets,
        },
        provenance: Provenance {
            tool: "ternary-bundle".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            source_sha256: match &options.source_sha256 {
                SourceDigest::Given(d) => Some(d.clone()),
                SourceDigest::Unknown | SourceDigest::Compute => None,
            },
            created: options.created.clone(),
            original,
        },
        extensions: Some(serde_json::Value::Object(Default::default())),
        manifest_sha256: MANIFEST_DIGEST_PLACEHOLDER.into(),
    };
    let facts = manifest.validate(&dest.join(MANIFEST_FILE), version)?;
    Ok((manifest, facts))
}

/// Quantizes and writes every tensor to `ternary.safetensors` and `fp16.safetensors` in `dir`,
/// in parallel; fills in the manifest's statistics and file entries; returns the per-tensor
/// reports in name order.
fn write_model_files(
    dir: &Path,
    manifest: &mut Manifest,
    source: &dyn TensorSource,
    plan: &BundlePlan,
    options: &WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<TensorReport>> {
    let ternary_path = dir.join(FileRole::Ternary.file_name());
    let fp16_path = dir.join(FileRole::Fp16.file_name());
    let (ternary_prefix, ternary_header) = plan_layout(
        ternary_layout(manifest, &plan.params, &dir.join(MANIFEST_FILE))?,
        &[],
    )?;
    let (fp16_prefix, fp16_header) =
        plan_layout(fp16_layout(manifest), &[("format".into(), "pt".into())])?;
    let ternary = create_sized(&ternary_path, &ternary_prefix, &ternary_header)?;
    let fp16 = create_sized(&fp16_path, &fp16_prefix, &fp16_header)?;
    let outputs: Vec<TensorOutput> = manifest
        .tensors
        .par_iter()
        .map(|spec| {
            let done = write_tensor(
                spec,
                source,
                plan.given.is_some(),
                &plan.params,
                options.fixed_scales.get(&spec.name).map(Vec::as_slice),
                (&ternary, &ternary_path, &ternary_header),
                (&fp16, &fp16_path, &fp16_header),
            );
            progress(spec.elements());
            done
        })
        .collect::<Result<_>>()?;
    let mut ternary_digests = HashMap::new();
    let mut fp16_digests = HashMap::new();
    let mut reports = Vec::with_capacity(outputs.len());
    for ((t, f, report), spec) in outputs.into_iter().zip(manifest.tensors.iter_mut()) {
        ternary_digests.extend(t);
        fp16_digests.extend(f);
        if let Some(s) = &report.stats {
            spec.zeros = Some(s.zeros);
            spec.scale_min = Some(s.scale_min);
            spec.scale_max = Some(s.scale_max);
        }
        reports.push(report);
    }
    // Both files synced and hashed at once: the FP16 file alone is over 3 s of one core at scale.
    let (t, f) = rayon::join(
        || finish_file(&ternary, &ternary_path, &ternary_header, &ternary_digests),
        || finish_file(&fp16, &fp16_path, &fp16_header, &fp16_digests),
    );
    manifest.files.ternary = t?;
    manifest.files.fp16 = f?;
    Ok(reports)
}

/// Seals the manifest (rule 7.3), validates the exact bytes with the reader's own parser (every
/// rule of section 2 and the digest), and writes them to `dir` with an fsync. `final_path` is
/// where the manifest will be published, for error messages.
fn write_manifest(dir: &Path, final_path: &Path, manifest: &mut Manifest) -> Result<()> {
    let bytes = manifest.seal();
    Manifest::parse(final_path, &bytes)?;
    write_synced(&dir.join(MANIFEST_FILE), &bytes).map(|_| ())
}

/// Digests written to the ternary and fp16 files, and the tensor's report.
type TensorOutput = (
    HashMap<String, String>,
    HashMap<String, String>,
    TensorReport,
);

type Target<'a> = (&'a File, &'a Path, &'a Header);

/// Quantizes (or converts, or packs as given) one tensor and writes it to both files; returns
/// its digests.
fn write_tensor(
    spec: &TensorSpec,
    source: &dyn TensorSource,
    given: bool,
    params: &QuantParams,
    fixed_scales: Option<&[f32]>,
    (tfile, tpath, theader): Target<'_>,
    (ffile, fpath, fheader): Target<'_>,
) -> Result<TensorOutput> {
    let src_err = |rule, expected: &str, found: String| -> Error {
        Violation::new(source.path(), rule, expected, found)
            .tensor(&spec.name)
            .into()
    };
    let mut tdig = HashMap::new();
    let mut fdig = HashMap::new();
    let (f16_values, stats) = if spec.quantized {
        let q = if given {
            let g = source.given(&spec.name)?.ok_or_else(|| {
                src_err(
                    Rule::GivenTrits,
                    "trits and scales (the source's own, spec section 7.1)",
                    "real values".into(),
                )
            })?;
            let (rows, cols) =
                crate::format::quantization::rows_cols(&spec.shape).ok_or_else(|| {
                    src_err(
                        Rule::TensorList,
                        "a quantizable shape",
                        format!("{:?}", spec.shape),
                    )
                })?;
            let scales = g
                .scales
                .layout(params.granularity, rows, cols)
                .map_err(|m| src_err(Rule::GivenTrits, "scales that fit the tensor", m))?;
            pack_given(&g.trits, &spec.shape, params, scales)
        } else {
            let values = source.load_f32(&spec.name)?;
            match fixed_scales {
                Some(scales) => quantize_with_scales(&values, &spec.shape, params, scales),
                None => quantize(&values, &spec.shape, params),
            }
        }
        .map_err(|e| {
            let (expected, found) = e.expected_found();
            src_err(e.rule(), &expected, found)
        })?;
        let scale_name = crate::format::manifest::scale_tensor_name(&spec.name);
        let scale_bytes = le::to_le(&q.scales, f32::to_le_bytes);
        put(tfile, tpath, theader, &spec.name, &q.packed, &mut tdig)?;
        put(tfile, tpath, theader, &scale_name, &scale_bytes, &mut tdig)?;
        let h = dequantize_tensor_f16(
            params.encoding,
            params.granularity,
            &q.packed,
            &q.scales,
            q.rows,
            q.cols,
        )
        .map_err(|e| {
            let (expected, found) = e.expected_found(params.encoding, 0);
            src_err(e.rule(), &expected, found)
        })?;
        (h, Some(q.stats))
    } else {
        let values = source.load_f32(&spec.name)?;
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(src_err(
                Rule::SourceWeights,
                "finite values",
                format!("{v} at flat index {i}"),
            ));
        }
        // Half's slice conversion: F16C, 8 values an instruction, where the CPU has it.
        let mut h = vec![f16::ZERO; values.len()];
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut h[..], &values);
        if let Some(i) = h.iter().position(|x| !x.is_finite()) {
            return Err(src_err(
                Rule::PassthroughRange,
                "values within the F16 range (|v| < 65520)",
                format!("{} at flat index {i}", values[i]),
            ));
        }
        let bytes = le::bytes_of(&values, f32::to_le_bytes);
        put(tfile, tpath, theader, &spec.name, &bytes, &mut tdig)?;
        (h, None)
    };
    let bytes = le::f16_bytes(&f16_values);
    put(ffile, fpath, fheader, &spec.name, &bytes, &mut fdig)?;
    Ok((
        tdig,
        fdig,
        TensorReport {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            stats,
        },
    ))
}

/// The validation set fits the model (rules 6.1 and 6.2): N >= 1 rows of `input_dim` inputs and
/// labels of the last layer's outputs for a chain of layers; N >= 1 sequences of T >= 2 tokens,
/// T - 1 labels each, every id and label a token for a decoder.
fn check_validation_fits(
    v: &ValidationSet,
    plan: &BundlePlan,
    facts: &ManifestFacts,
) -> Result<()> {
    match &facts.decoder {
        Some(spec) => check_token_sequences(v, spec),
        None => check_validation_set(v, &plan.model),
    }
}

/// The original model's predictions (rule 6.3) and distributions (rule 6.4) on the validation
/// set, after checking that the set fits the model.
fn original_outputs(
    original: &OriginalModel<'_>,
    plan: &BundlePlan,
    facts: &ManifestFacts,
    v: &ValidationSet,
    options: &WriteOptions,
) -> Result<OriginalOutputs> {
    check_validation_fits(v, plan, facts)?;
    let form = distribution_form(options, &plan.model, facts, v)?;
    match (&facts.decoder, &v.input_ids) {
        (Some(spec), Some(ids)) => {
            let ids = ndarray::ArrayView2::from_shape((v.samples(), ids.tokens), &ids.ids)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", v.origin.display())))?;
            original.decoder_outputs(spec, ids, &v.labels, form)
        }
        _ => original.chain_outputs(&plan.model, &facts.activations, &v.inputs, &v.labels, form),
    }
}

/// The classes of the model's output: a decoder's vocabulary, a chain's last `out_features`.
fn classes(model: &ModelSpec) -> u64 {
    match &model.decoder {
        Some(d) => d.vocab_size,
        None => model.layers.last().map_or(0, |l| l.out_features),
    }
}

/// The form of the distributions stored beside original predictions on `v` (section 9.1):
/// the writer's choice, none (`--original-top-k 0`), or the top k (1 <= k <= min(classes,
/// 1024), rule 6.1).
fn distribution_form(
    options: &WriteOptions,
    model: &ModelSpec,
    facts: &ManifestFacts,
    v: &ValidationSet,
) -> Result<Option<Form>> {
    let classes = classes(model);
    let scored = v.labels.len() as u64;
    match options.original_top_k {
        None => Ok(Some(Form::default_for(scored, classes))),
        Some(0) => Ok(None),
        Some(k) if k <= classes.min(MAX_TOP_K) => Ok(Some(Form::TopK(k))),
        Some(k) => Err(Error::InvalidArgument(format!(
            "--original-top-k {k}: the model has {classes} {}, and K may be at most {} (spec rule 6.1)",
            if facts.decoder.is_some() { "tokens" } else { "classes" },
            classes.min(MAX_TOP_K)
        ))),
    }
}

fn check_validation_set(v: &ValidationSet, model: &ModelSpec) -> Result<()> {
    let d = model.input_dim as usize;
    let n = v.labels.len();
    let bad = |rule, expected: String, found: String| -> Error {
        Violation::new(&v.origin, rule, expected, found).into()
    };
    if v.input_ids.is_some() {
        return Err(bad(
            Rule::ValidationTensors,
            format!("inputs F32 [N, {d}] for a chain of layers"),
            "token sequences (input_ids) of a language model".into(),
        ));
    }
    if n == 0 || v.inputs.len() != n.saturating_mul(d) {
        return Err(bad(
            Rule::ValidationTensors,
            format!("N >= 1 samples with inputs [N, {d}]"),
            format!("{} labels and {} input values", n, v.inputs.len()),
        ));
    }
    if let Some(diff) = &v.difficulty {
        if diff.len() != n {
            return Err(bad(
                Rule::ValidationTensors,
                format!("difficulty of shape [{n}]"),
                format!("[{}]", diff.len()),
            ));
        }
    }
    crate::read::checks::validation_values(
        &v.origin,
        v.inputs.iter().copied(),
        v.labels.iter().copied(),
        model.layers.last().map_or(0, |l| l.out_features),
    )
}

/// A decoder's validation set fits its model (rules 6.1 and 6.2: N >= 1 sequences of T >= 2
/// tokens, T - 1 labels each, every id and label a token).
fn check_token_sequences(v: &ValidationSet, spec: &DecoderSpec) -> Result<()> {
    let bad = |expected: String, found: String| -> Error {
        Violation::new(&v.origin, Rule::ValidationTensors, expected, found).into()
    };
    let Some(ids) = &v.input_ids else {
        return Err(bad(
            "token sequences input_ids I64 [N, T] for a language model".into(),
            "inputs of a chain of layers".into(),
        ));
    };
    let (t, n) = (ids.tokens, v.samples());
    if t < 2 || n == 0 || ids.ids.len() != n * t || v.labels.len() != n * (t - 1) {
        return Err(bad(
            "N >= 1 sequences of T >= 2 tokens, T - 1 labels each".into(),
            format!(
                "{} ids and {} labels in sequences of {t}",
                ids.ids.len(),
                v.labels.len()
            ),
        ));
    }
    if let Some(d) = v.difficulty.as_ref().filter(|d| d.len() != n) {
        return Err(bad(
            format!("difficulty of shape [{n}]"),
            format!("[{}]", d.len()),
        ));
    }
    crate::read::checks::token_values(&v.origin, &ids.ids, &v.labels, spec.vocab_size as u64)
}

/// Writes each asset file into the staging directory `dir`, fsynced.
fn write_assets(dir: &Path, assets: &[AssetFile]) -> Result<()> {
    for a in assets {
        write_synced(&dir.join(&a.name), &a.bytes)?;
    }
    Ok(())
}

fn write_validation(
    dir: &Path,
    v: &ValidationSet,
    original: Option<&OriginalOutputs>,
    model: &ModelSpec,
) -> Result<FileEntry> {
    let path = dir.join(FileRole::Validation.file_name());
    let n = v.samples() as u64;
    let record = match original {
        None => OriginalRecord::Nothing,
        Some(OriginalOutputs {
            distributions: None,
            ..
        }) => OriginalRecord::Predictions,
        Some(OriginalOutputs {
            distributions: Some(d),
            ..
        }) => OriginalRecord::Distributions {
            form: d.form(),
            classes: d.classes as u64,
        },
    };
    let (tensors, first) = match &v.input_ids {
        Some(ids) => (
            decoder_validation_layout(n, ids.tokens as u64, v.difficulty.is_some(), record),
            VALIDATION_INPUT_IDS,
        ),
        None => (
            validation_layout(n, model.input_dim, v.difficulty.is_some(), record),
            VALIDATION_INPUTS,
        ),
    };
    let (prefix, header) = plan_layout(tensors, &[])?;
    let file = create_sized(&path, &prefix, &header)?;
    let mut digests = HashMap::new();
    let le = |x: &[i64]| le::to_le(x, i64::to_le_bytes);
    let le32 = |x: &[f32]| le::to_le(x, f32::to_le_bytes);
    let inputs: Vec<u8> = match &v.input_ids {
        Some(ids) => le(&ids.ids),
        None => le32(&v.inputs),
    };
    let mut data: Vec<(&str, Vec<u8>)> = vec![(first, inputs), (VALIDATION_LABELS, le(&v.labels))];
    if let Some(o) = original {
        data.push((
            VALIDATION_ORIGINAL_PREDICTIONS,
            o.predictions
                .iter()
                .flat_map(|&c| (c as i64).to_le_bytes())
                .collect(),
        ));
        match o.distributions.as_ref().map(|d| &d.stored) {
            Some(Stored::Full { log_probs }) => {
                data.push((VALIDATION_ORIGINAL_LOG_PROBS, le32(log_probs)))
            }
            Some(Stored::TopK {
                ids,
                log_probs,
                log_sum_exp,
                label_log_probs,
                ..
            }) => data.extend([
                (VALIDATION_ORIGINAL_TOP_IDS, le(ids)),
                (VALIDATION_ORIGINAL_TOP_LOG_PROBS, le32(log_probs)),
                (VALIDATION_ORIGINAL_LOG_SUM_EXP, le32(log_sum_exp)),
                (VALIDATION_ORIGINAL_LABEL_LOG_PROBS, le32(label_log_probs)),
            ]),
            None => {}
        }
    }
    if let Some(d) = &v.difficulty {
        data.push((VALIDATION_DIFFICULTY, d.clone()));
    }
    for (name, bytes) in data {
        put(&file, &path, &header, name, &bytes, &mut digests)?;
    }
    finish_file(&file, &path, &header, &digests)
}
