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
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;
use rayon::prelude::*;
use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;

use crate::error::{escape_name, Error, Result, Violation};
use crate::format::checksum::{sha256_file, sha256_hex};
use crate::format::layout::{
    fp16_layout, ternary_layout, validation_layout, VALIDATION_DIFFICULTY, VALIDATION_INPUTS,
    VALIDATION_LABELS, VALIDATION_ORIGINAL_PREDICTIONS,
};
use crate::format::manifest::{
    FileEntry, FileRole, FileTable, FormatVersion, Manifest, ModelSpec, Provenance,
    QuantizationSpec, TensorDigest, TensorSpec, FORMAT_NAME, MANIFEST_FILE,
};
use crate::format::quantization::QuantParams;
use crate::format::rules::Rule;
use crate::format::safetensors::{plan_layout, Dtype, Header};
use crate::model::reference::source_predictions;
use crate::quant::dequantize::dequantize_tensor_f16;
use crate::quant::quantize::{quantize, quantize_with_scales, QuantStats};
use crate::source::{TensorSource, ValidationSet};

/// What to build: the architecture, the quantization settings and which tensors to quantize.
#[derive(Debug, Clone, PartialEq)]
pub struct BundlePlan {
    /// The model the reference model runs (manifest `model`).
    pub model: ModelSpec,
    /// Quantization settings.
    pub params: QuantParams,
    /// Names of the source tensors to quantize; every other tensor is stored as F32/F16.
    pub quantize: BTreeSet<String>,
}

/// How to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOptions {
    /// Replace an existing bundle at the destination.
    pub force: bool,
    /// SHA-256 of the source checkpoint, recorded in provenance.
    pub source_sha256: Option<String>,
    /// Creation timestamp to record (none by default: output stays deterministic).
    pub created: Option<String>,
    /// A validation set to embed.
    pub validation: Option<ValidationSet>,
    /// Scales to use instead of computing them, by tensor name (re-quantization with
    /// `--keep-scales`); tensors not listed get fresh absmean scales.
    pub fixed_scales: BTreeMap<String, Vec<f32>>,
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
/// count (from worker threads), so a caller can drive a progress bar.
pub fn write_bundle_with_progress(
    dest: &Path,
    source: &dyn TensorSource,
    plan: &BundlePlan,
    options: &WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteReport> {
    plan.params.check().map_err(Error::InvalidArgument)?;
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
    check_destination(dest, options.force)?;
    let manifest_path = dest.join(MANIFEST_FILE);

    // The tensors, sorted by name, and a draft manifest validated before any heavy work.
    let mut sources = source.tensors();
    sources.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let known: BTreeSet<&str> = sources.iter().map(|t| t.name.as_str()).collect();
    if let Some(missing) = plan.quantize.iter().find(|n| !known.contains(n.as_str())) {
        return Err(Error::InvalidArgument(format!(
            "{}: no tensor {} to quantize",
            source.path().display(),
            escape_name(missing)
        )));
    }
    let mut specs: Vec<TensorSpec> = sources
        .iter()
        .map(|t| {
            let q = plan.quantize.contains(&t.name);
            TensorSpec {
                name: t.name.clone(),
                shape: t.shape.clone(),
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
    // The lowest version whose rules the bundle satisfies (spec section 13): original
    // predictions, written with every validation set, need 2.0; 1.0 readers open the rest.
    let version = match options.validation {
        Some(_) => FormatVersion::V2_0,
        None => FormatVersion::V1_0,
    };
    let mut manifest = Manifest {
        format: FORMAT_NAME.into(),
        format_version: version.to_string(),
        model: plan.model.clone(),
        quantization: QuantizationSpec::from_params(&plan.params),
        tensors: specs.clone(),
        files: FileTable {
            ternary: placeholder.clone(),
            fp16: placeholder.clone(),
            validation: options.validation.as_ref().map(|_| placeholder.clone()),
        },
        provenance: Provenance {
            tool: "ternary-bundle".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            source_sha256: options.source_sha256.clone(),
            created: options.created.clone(),
        },
        extensions: Some(serde_json::Value::Object(Default::default())),
        manifest_sha256: crate::format::manifest::MANIFEST_DIGEST_PLACEHOLDER.into(),
    };
    let facts = manifest.validate(&manifest_path, version)?;
    // The original model's decisions on the validation inputs (rule 6.3): the source weights as
    // read, before quantization, run by the reference model in f32.
    let original_predictions = match &options.validation {
        Some(v) => {
            check_validation_set(v, &plan.model)?;
            Some(source_predictions(
                source,
                &plan.model,
                &facts.activations,
                &v.inputs,
            )?)
        }
        None => None,
    };

    let staging = Staging::create(dest)?;
    let ternary_path = staging.dir.join(FileRole::Ternary.file_name());
    let fp16_path = staging.dir.join(FileRole::Fp16.file_name());
    let (ternary_prefix, ternary_header) =
        plan_layout(ternary_layout(&manifest, &plan.params), &[])?;
    let (fp16_prefix, fp16_header) =
        plan_layout(fp16_layout(&manifest), &[("format".into(), "pt".into())])?;
    let ternary = create_sized(&ternary_path, &ternary_prefix, &ternary_header)?;
    let fp16 = create_sized(&fp16_path, &fp16_prefix, &fp16_header)?;

    // Quantize and write every tensor; results are collected in name order.
    let outputs: Vec<TensorOutput> = specs
        .par_iter()
        .map(|spec| {
            let done = write_tensor(
                spec,
                source,
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
    for ((t, f, report), spec) in outputs.into_iter().zip(specs.iter_mut()) {
        ternary_digests.extend(t);
        fp16_digests.extend(f);
        if let Some(s) = &report.stats {
            spec.zeros = Some(s.zeros);
            spec.scale_min = Some(s.scale_min);
            spec.scale_max = Some(s.scale_max);
        }
        reports.push(report);
    }
    manifest.tensors = specs;
    manifest.files.ternary =
        finish_file(&ternary, &ternary_path, &ternary_header, &ternary_digests)?;
    manifest.files.fp16 = finish_file(&fp16, &fp16_path, &fp16_header, &fp16_digests)?;
    if let (Some(v), Some(p)) = (&options.validation, &original_predictions) {
        manifest.files.validation =
            Some(write_validation(&staging.dir, v, p, plan.model.input_dim)?);
    }
    let mpath = staging.dir.join(MANIFEST_FILE);
    let manifest_bytes = manifest.seal();
    // Final validation of what will be published: the reader's own parser on the exact bytes
    // (every rule of section 2 and the manifest digest, rule 7.3).
    Manifest::parse(&manifest_path, &manifest_bytes)?;
    let mut mfile = File::create(&mpath).map_err(|e| Error::io(&mpath, "create", e))?;
    mfile
        .write_all(&manifest_bytes)
        .map_err(|e| Error::io(&mpath, "write", e))?;
    mfile
        .sync_all()
        .map_err(|e| Error::io(&mpath, "fsync", e))?;
    sync_dir(&staging.dir)?;
    staging.commit(dest, options.force)?;
    Ok(WriteReport {
        manifest,
        tensors: reports,
    })
}

/// Digests written to the ternary and fp16 files, and the tensor's report.
type TensorOutput = (
    HashMap<String, String>,
    HashMap<String, String>,
    TensorReport,
);

type Target<'a> = (&'a File, &'a Path, &'a Header);

/// Quantizes (or converts) one tensor and writes it to both files; returns its digests.
fn write_tensor(
    spec: &TensorSpec,
    source: &dyn TensorSource,
    params: &QuantParams,
    fixed_scales: Option<&[f32]>,
    (tfile, tpath, theader): Target<'_>,
    (ffile, fpath, fheader): Target<'_>,
) -> Result<TensorOutput> {
    let values = source.load_f32(&spec.name)?;
    let src_err = |rule, expected: &str, found: String| -> Error {
        Violation::new(source.path(), rule, expected, found)
            .tensor(&spec.name)
            .into()
    };
    let mut tdig = HashMap::new();
    let mut fdig = HashMap::new();
    let (f16_values, stats) = if spec.quantized {
        let q = match fixed_scales {
            Some(scales) => quantize_with_scales(&values, &spec.shape, params, scales),
            None => quantize(&values, &spec.shape, params),
        }
        .map_err(|e| {
            let (expected, found) = e.expected_found();
            src_err(e.rule(), &expected, found)
        })?;
        drop(values);
        let scale_name = crate::format::manifest::scale_tensor_name(&spec.name);
        let scale_bytes: Vec<u8> = q.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
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
        .expect("the quantizer produced rows of the right length");
        (h, Some(q.stats))
    } else {
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(src_err(
                Rule::SourceWeights,
                "finite values",
                format!("{v} at flat index {i}"),
            ));
        }
        let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        if let Some(i) = h.iter().position(|x| !x.is_finite()) {
            return Err(src_err(
                Rule::PassthroughRange,
                "values within the F16 range (|v| < 65520)",
                format!("{} at flat index {i}", values[i]),
            ));
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        put(tfile, tpath, theader, &spec.name, &bytes, &mut tdig)?;
        (h, None)
    };
    let bytes: Vec<u8> = f16_values.iter().flat_map(|v| v.to_le_bytes()).collect();
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

/// Writes tensor `name`'s data at its planned offset and records its digest.
fn put(
    file: &File,
    path: &Path,
    header: &Header,
    name: &str,
    data: &[u8],
    digests: &mut HashMap<String, String>,
) -> Result<()> {
    // The layout was planned from the same tensor list: a miss is a bug, reported, not a panic.
    let e = header
        .get(name)
        .filter(|e| e.byte_len() == data.len() as u64)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: tensor {} has no planned place for {} bytes",
                path.display(),
                escape_name(name),
                data.len()
            ))
        })?;
    file.write_all_at(data, header.data_start() + e.start)
        .map_err(|err| Error::io(path, "write", err))?;
    digests.insert(name.to_string(), sha256_hex(data));
    Ok(())
}

/// Creates `path` with its final size and writes the header prefix.
fn create_sized(path: &Path, prefix: &[u8], header: &Header) -> Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, "create", e))?;
    file.set_len(header.file_size())
        .map_err(|e| Error::io(path, "resize", e))?;
    file.write_all_at(prefix, 0)
        .map_err(|e| Error::io(path, "write", e))?;
    Ok(file)
}

/// fsyncs a data file and builds its manifest entry (whole-file digest read back from disk).
fn finish_file(
    file: &File,
    path: &Path,
    header: &Header,
    digests: &HashMap<String, String>,
) -> Result<FileEntry> {
    file.sync_all().map_err(|e| Error::io(path, "fsync", e))?;
    let tensors = header
        .entries
        .iter()
        .map(|e| TensorDigest {
            name: e.name.clone(),
            sha256: digests[&e.name].clone(),
        })
        .collect();
    Ok(FileEntry {
        size: header.file_size(),
        sha256: sha256_file(path)?,
        tensors,
    })
}

fn check_validation_set(v: &ValidationSet, model: &ModelSpec) -> Result<()> {
    let d = model.input_dim as usize;
    let n = v.labels.len();
    let bad = |rule, expected: String, found: String| -> Error {
        Violation::new(&v.origin, rule, expected, found).into()
    };
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

fn write_validation(
    dir: &Path,
    v: &ValidationSet,
    original_predictions: &[usize],
    input_dim: u64,
) -> Result<FileEntry> {
    let path = dir.join(FileRole::Validation.file_name());
    let n = v.labels.len() as u64;
    let tensors = validation_layout(n, input_dim, v.difficulty.is_some(), true);
    let (prefix, header) = plan_layout(tensors, &[])?;
    let file = create_sized(&path, &prefix, &header)?;
    let mut digests = HashMap::new();
    let inputs: Vec<u8> = v.inputs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let labels: Vec<u8> = v.labels.iter().flat_map(|x| x.to_le_bytes()).collect();
    let predictions: Vec<u8> = original_predictions
        .iter()
        .flat_map(|&c| (c as i64).to_le_bytes())
        .collect();
    let mut data = vec![
        (VALIDATION_INPUTS, inputs.as_slice()),
        (VALIDATION_LABELS, labels.as_slice()),
        (VALIDATION_ORIGINAL_PREDICTIONS, predictions.as_slice()),
    ];
    if let Some(d) = &v.difficulty {
        data.push((VALIDATION_DIFFICULTY, d.as_slice()));
    }
    for (name, bytes) in data {
        put(&file, &path, &header, name, bytes, &mut digests)?;
    }
    finish_file(&file, &path, &header, &digests)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "fsync", e))
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Refuses an existing destination unless forced; never replaces something that is not a
/// bundle or an empty directory.
fn check_destination(dest: &Path, force: bool) -> Result<()> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dest, "stat", e)),
    };
    if !force {
        return Err(Error::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    // A bundle's manifest.json is a regular file (rule 1.3); a symlink by that name is not.
    let is_bundle_or_empty = meta.is_dir()
        && (fs::symlink_metadata(dest.join(MANIFEST_FILE)).is_ok_and(|m| m.is_file())
            || fs::read_dir(dest)
                .map_err(|e| Error::io(dest, "read directory", e))?
                .next()
                .is_none());
    if !is_bundle_or_empty {
        return Err(Error::InvalidArgument(format!(
            "{}: refusing to replace something that is not a bundle (no manifest.json) or an empty directory",
            dest.display()
        )));
    }
    Ok(())
}

/// Removes staging directories `.<name>.tmp-<pid>-<n>` left in `parent` by writers that were
/// killed (their process no longer exists). Best effort: failures are ignored.
fn remove_stale_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A temporary directory beside the destination, removed on drop unless committed.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

static STAGING_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Staging {
    fn create(dest: &Path) -> Result<Staging> {
        let name = dest
            .file_name()
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{}: destination has no file name", dest.display()))
            })?
            .to_string_lossy()
            .into_owned();
        let parent = parent_of(dest);
        // Like `mkdir -p`: a destination in a directory that does not exist yet is fine.
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, "create directory", e))?;
        remove_stale_staging(&parent, &name);
        loop {
            let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = parent.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Staging {
                        dir,
                        committed: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&dir, "create directory", e)),
            }
        }
    }

    /// Publishes the staged directory at `dest`: a plain no-replace rename, or an atomic
    /// exchange with the existing bundle when `force` (the old one is then deleted).
    fn commit(mut self, dest: &Path, force: bool) -> Result<()> {
        let rename_err = |e: Errno| {
            Error::io(
                dest,
                "rename",
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            )
        };
        match rustix::fs::renameat_with(CWD, &self.dir, CWD, dest, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EXIST) if force => {
                check_destination(dest, true)?;
                rustix::fs::renameat_with(CWD, &self.dir, CWD, dest, RenameFlags::EXCHANGE)
                    .map_err(rename_err)?;
                // self.dir now holds the previous bundle; dropping `self` deletes it.
                sync_dir(&parent_of(dest))?;
                return Ok(());
            }
            Err(Errno::EXIST) => {
                return Err(Error::DestinationExists {
                    path: dest.to_path_buf(),
                })
            }
            Err(e) => return Err(rename_err(e)),
        }
        self.committed = true;
        sync_dir(&parent_of(dest))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes one safetensors file atomically: a temporary file beside `dest` is filled in the
/// canonical layout, fsynced and renamed into place. `data(name)` supplies each tensor's bytes,
/// one at a time, in data order. An existing `dest` is replaced only with `force`, and only if
/// it is a regular file.
pub fn write_safetensors_file(
    dest: &Path,
    tensors: Vec<(String, Dtype, Vec<u64>)>,
    metadata: &[(String, String)],
    force: bool,
    mut data: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(_) if !force => {
            return Err(Error::DestinationExists {
                path: dest.to_path_buf(),
            })
        }
        Ok(m) if !m.is_file() => {
            return Err(Error::InvalidArgument(format!(
                "{}: refusing to replace something that is not a regular file",
                dest.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dest, "stat", e)),
    }
    let (prefix, header) = plan_layout(tensors, metadata)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_of(dest).join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = create_sized(&tmp, &prefix, &header)?;
        for e in &header.entries {
            let bytes = data(&e.name)?;
            if bytes.len() as u64 != e.byte_len() {
                return Err(Error::InvalidArgument(format!(
                    "tensor {}: {} bytes where {} are needed",
                    escape_name(&e.name),
                    bytes.len(),
                    e.byte_len()
                )));
            }
            file.write_all_at(&bytes, header.data_start() + e.start)
                .map_err(|err| Error::io(&tmp, "write", err))?;
        }
        file.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
        let flags = if force {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(CWD, &tmp, CWD, dest, flags).map_err(|e| match e {
            Errno::EXIST => Error::DestinationExists {
                path: dest.to_path_buf(),
            },
            e => Error::io(
                dest,
                "rename",
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            ),
        })?;
        sync_dir(&parent_of(dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
