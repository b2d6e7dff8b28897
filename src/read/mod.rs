//! Opening a bundle: the validation pipeline of spec section "Validation order", then
//! borrowed, zero-copy views of the tensors.
//!
//! [`Bundle::open`] reads only the manifest and the safetensors headers (its cost does not
//! depend on the size of the weights), checks rules 1.1 to 6.1 that concern them, in order, and
//! only then maps the files. The data rules (digests, trit validity, exact dequantization) read
//! every byte and live in [`crate::read::checks`].
//!
//! Every file is opened relative to one handle on the bundle directory, without following
//! symlinks, so a concurrent replacement by the writer is seen whole or not at all.

pub mod checks;
pub mod inspect;
pub mod mmap;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use half::f16;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{escape_name, Error, Result, Violation};
use crate::format::encoding::Encoding;
use crate::format::layout::{
    fp16_layout, ternary_layout, validation_layout, Layout, VALIDATION_DIFFICULTY,
    VALIDATION_INPUTS, VALIDATION_ORIGINAL_PREDICTIONS,
};
use crate::format::manifest::{
    scale_tensor_name, FileRole, FormatVersion, Manifest, ManifestFacts, TensorSpec, MANIFEST_FILE,
};
use crate::format::quantization::{rows_cols, Granularity, QuantParams};
use crate::format::rules::Rule;
use crate::format::safetensors::{read_header, shape_string, Header};
use mmap::{Backing, FileBytes};

/// Options for [`Bundle::open_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Map the files (default) or read them into memory.
    pub backing: Backing,
}

/// One data file of an open bundle: its validated header and its bytes.
#[derive(Debug)]
pub struct DataFile {
    role: FileRole,
    path: PathBuf,
    header: Header,
    bytes: FileBytes,
}

impl DataFile {
    /// Which file this is.
    pub fn role(&self) -> FileRole {
        self.role
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The data bytes of tensor `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        let e = self.header.get(name)?;
        let start = self.header.data_start() + e.start;
        // In bounds: rule 3.6 proved the ranges tile the data buffer and `mmap::load` proved
        // the buffer has the file's validated length.
        self.bytes
            .get(start as usize..(start + e.byte_len()) as usize)
    }
}

/// An open, structurally valid bundle.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    facts: ManifestFacts,
    manifest_size: u64,
    ternary: DataFile,
    fp16: DataFile,
    validation: Option<DataFile>,
    extras: Vec<String>,
}

/// A quantized tensor of `ternary.safetensors`: packed rows and scales, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct PackedTensor<'a> {
    /// The manifest's description.
    pub spec: &'a TensorSpec,
    /// Rows (first dimension).
    pub rows: usize,
    /// Columns (product of the other dimensions).
    pub cols: usize,
    /// Encoding of the rows.
    pub encoding: Encoding,
    /// Scale layout.
    pub granularity: Granularity,
    /// `rows * bytes_per_row` packed bytes.
    pub packed: &'a [u8],
    /// The scales as little-endian f32 bytes.
    pub scale_bytes: &'a [u8],
}

impl<'a> PackedTensor<'a> {
    /// Bytes per packed row.
    pub fn bytes_per_row(&self) -> usize {
        self.encoding.bytes_per_row(self.cols as u64) as usize
    }

    /// Packed bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.bytes_per_row();
        &self.packed[r * n..(r + 1) * n]
    }

    /// The scales, decoded from little-endian f32.
    pub fn scales(&self) -> Vec<f32> {
        crate::format::le::f32s(self.scale_bytes).collect()
    }

    /// Dequantizes the whole tensor to F16 (rule 5.2). The rows must be valid (rule 4.3).
    pub fn dequantize_f16(&self) -> Vec<f16> {
        crate::quant::dequantize::dequantize_tensor_f16(
            self.encoding,
            self.granularity,
            self.packed,
            &self.scales(),
            self.rows,
            self.cols,
        )
        .expect("shapes were validated when the bundle was opened")
    }
}

impl Bundle {
    /// Opens the bundle in directory `dir`, memory-mapping its files.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle> {
        Bundle::open_with(dir, &OpenOptions::default())
    }

    /// Opens the bundle in directory `dir` with `options`.
    ///
    /// If the directory is replaced by a concurrent writer while it is being opened (a file
    /// vanishes), opening starts again on the new directory, up to three times.
    pub fn open_with(dir: impl AsRef<Path>, options: &OpenOptions) -> Result<Bundle> {
        let dir = dir.as_ref();
        let mut attempt = 0;
        loop {
            let dirfd = open_dir(dir)?;
            match open_in(dir, &dirfd, options) {
                Err(e) if attempt < 3 && vanished(&e) && replaced(dir, &dirfd) => attempt += 1,
                other => return other,
            }
        }
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Typed facts validated from the manifest (version, quantization settings, activations).
    pub fn facts(&self) -> &ManifestFacts {
        &self.facts
    }

    /// Quantization settings.
    pub fn params(&self) -> &QuantParams {
        &self.facts.params
    }

    /// Size of manifest.json in bytes.
    pub fn manifest_size(&self) -> u64 {
        self.manifest_size
    }

    /// The data file of `role`, if the bundle has it.
    pub fn file(&self, role: FileRole) -> Option<&DataFile> {
        match role {
            FileRole::Ternary => Some(&self.ternary),
            FileRole::Fp16 => Some(&self.fp16),
            FileRole::Validation => self.validation.as_ref(),
        }
    }

    /// The error for tensor `name` missing from the `role` file of this (validated) bundle:
    /// the manifest lists it, the file does not have it (rule 3.7).
    pub fn missing_tensor(&self, role: FileRole, name: &str) -> Error {
        Violation::new(
            self.dir.join(role.file_name()),
            Rule::HeaderMatchesManifest,
            "a tensor the manifest lists",
            "no such tensor",
        )
        .tensor(name)
        .into()
    }

    /// The error for row `row` of packed tensor `name` failing to decode (rules 4.2 to 4.4).
    pub fn row_error(&self, name: &str, row: usize, e: crate::format::encoding::RowError) -> Error {
        use crate::format::encoding::RowError;
        let rule = match e {
            RowError::InvalidByte { .. } | RowError::InvalidTrit { .. } => Rule::PackedByteValid,
            RowError::NonCanonicalPadding { .. } => Rule::CanonicalPadding,
            RowError::Length { .. } | RowError::ScaleCount { .. } => Rule::TernaryShapes,
        };
        Violation::new(
            self.dir.join(FileRole::Ternary.file_name()),
            rule,
            "a valid, canonical packed row",
            format!("row {row}: {e}"),
        )
        .tensor(name)
        .into()
    }

    /// The data files present, in role order.
    pub fn files(&self) -> impl Iterator<Item = &DataFile> {
        [
            Some(&self.ternary),
            Some(&self.fp16),
            self.validation.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// Directory entries that are not bundle files (rule 1.5), sorted.
    pub fn extras(&self) -> &[String] {
        &self.extras
    }

    /// The packed form of quantized tensor `name`.
    pub fn packed(&self, name: &str) -> Option<PackedTensor<'_>> {
        let spec = self.tensor(name).filter(|t| t.quantized)?;
        let (rows, cols) = rows_cols(&spec.shape)?;
        Some(PackedTensor {
            spec,
            rows: rows as usize,
            cols: cols as usize,
            encoding: self.facts.params.encoding,
            granularity: self.facts.params.granularity,
            packed: self.ternary.tensor_bytes(name)?,
            scale_bytes: self.ternary.tensor_bytes(&scale_tensor_name(name))?,
        })
    }

    /// The manifest's description of tensor `name` (indexed: O(1)).
    pub fn tensor(&self, name: &str) -> Option<&TensorSpec> {
        self.facts
            .tensor_index
            .get(name)
            .map(|&i| &self.manifest.tensors[i])
    }

    /// The F32 little-endian bytes of passthrough (not quantized) tensor `name`.
    pub fn passthrough_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).filter(|t| !t.quantized)?;
        self.ternary.tensor_bytes(name)
    }

    /// The F16 little-endian bytes of tensor `name` in `fp16.safetensors`.
    pub fn fp16_bytes(&self, name: &str) -> Option<&[u8]> {
        self.fp16.tensor_bytes(name)
    }
}

fn errno_io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT | Errno::NOTDIR => Violation::new(
            dir,
            Rule::BundleIsDirectory,
            "a bundle directory",
            if e == Errno::NOENT {
                "nothing at this path"
            } else {
                "something that is not a directory"
            },
        )
        .into(),
        e => Error::io(dir, "open", errno_io(e)),
    })
}

/// Did opening fail because a file disappeared (as when a writer swaps the directory)?
fn vanished(e: &Error) -> bool {
    match e {
        Error::Invalid(v) => {
            v.rule == Rule::RequiredFiles || v.rule == Rule::ValidationFilePresence
        }
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Does `dir` now name a different directory than `dirfd`?
fn replaced(dir: &Path, dirfd: &OwnedFd) -> bool {
    match (rustix::fs::stat(dir), rustix::fs::fstat(dirfd)) {
        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino),
        _ => false,
    }
}

/// Opens `name` in the bundle directory without following symlinks (rules 1.2 and 1.3).
/// `Ok(None)` when it does not exist.
fn open_member(dir: &Path, dirfd: &OwnedFd, name: &str) -> Result<Option<(File, u64)>> {
    let path = dir.join(name);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dirfd, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(Violation::new(
                &path,
                Rule::RegularFile,
                "a regular file",
                "a symbolic link",
            )
            .into())
        }
        Err(e) => return Err(Error::io(&path, "open", errno_io(e))),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io(&path, "stat", errno_io(e)))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        let found = match kind {
            FileType::Directory => "a directory",
            FileType::Fifo => "a FIFO",
            FileType::Socket => "a socket",
            FileType::CharacterDevice | FileType::BlockDevice => "a device",
            _ => "not a regular file",
        };
        return Err(Violation::new(&path, Rule::RegularFile, "a regular file", found).into());
    }
    Ok(Some((File::from(fd), stat.st_size as u64)))
}

fn require_member(dir: &Path, dirfd: &OwnedFd, name: &str) -> Result<(File, u64)> {
    open_member(dir, dirfd, name)?.ok_or_else(|| {
        Violation::new(
            dir.join(name),
            Rule::RequiredFiles,
            "this required bundle file",
            "no such file",
        )
        .into()
    })
}

/// Reads and validates only the manifest of the bundle in `dir` (rules 1.1, 1.2 and 1.3 for
/// `manifest.json`, then 2.1 to 2.12), without touching the data files.
pub fn open_manifest(dir: impl AsRef<Path>) -> Result<(Manifest, ManifestFacts)> {
    let dir = dir.as_ref();
    let dirfd = open_dir(dir)?;
    let file = require_member(dir, &dirfd, MANIFEST_FILE)?;
    read_manifest_file(dir, file)
}

fn read_manifest_file(dir: &Path, (file, size): (File, u64)) -> Result<(Manifest, ManifestFacts)> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if size > crate::format::limits::MAX_MANIFEST_BYTES {
        return Err(Violation::new(
            &manifest_path,
            Rule::ManifestSize,
            format!(
                "at most {} bytes",
                crate::format::limits::MAX_MANIFEST_BYTES
            ),
            format!("{size} bytes"),
        )
        .into());
    }
    let bytes = mmap::load(&file, size, &manifest_path, Backing::Read)?;
    Manifest::parse(&manifest_path, &bytes)
}

/// Opens `role`'s file of the bundle in `dir` without following symlinks (rule 1.3) and returns
/// it with its size, or `None` if it does not exist. For checks that must read a file whose
/// header may be damaged (whole-file checksums).
pub fn open_data_file_raw(dir: &Path, role: FileRole) -> Result<Option<(File, u64)>> {
    let dirfd = open_dir(dir)?;
    open_member(dir, &dirfd, role.file_name())
}

fn open_in(dir: &Path, dirfd: &OwnedFd, options: &OpenOptions) -> Result<Bundle> {
    // Rules 1.2 and 1.3: open every file first, so the set is one directory's.
    let manifest_file = require_member(dir, dirfd, MANIFEST_FILE)?;
    let ternary_file = require_member(dir, dirfd, FileRole::Ternary.file_name())?;
    let fp16_file = require_member(dir, dirfd, FileRole::Fp16.file_name())?;

    // Rules 2.1 to 2.12.
    let size = manifest_file.1;
    let (manifest, facts) = read_manifest_file(dir, manifest_file)?;

    // Rule 1.4 (whether the entry exists at all, whatever it is), then rule 1.3 for it.
    let declared = manifest.files.validation.is_some();
    let name = FileRole::Validation.file_name();
    let exists = match rustix::fs::statat(dirfd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => true,
        Err(Errno::NOENT) => false,
        Err(e) => return Err(Error::io(dir.join(name), "stat", errno_io(e))),
    };
    check_validation_presence(dir, declared, exists)?;
    let validation_file = if declared {
        Some(require_member(dir, dirfd, name)?)
    } else {
        None
    };

    let ternary = open_data_file(dir, FileRole::Ternary, ternary_file, &manifest, options)?;
    check_ternary_layout(&ternary, &manifest, &facts)?;
    let fp16 = open_data_file(dir, FileRole::Fp16, fp16_file, &manifest, options)?;
    check_fp16_layout(&fp16, &manifest)?;
    let validation = match validation_file {
        Some(f) => {
            let v = open_data_file(dir, FileRole::Validation, f, &manifest, options)?;
            check_validation_layout(&v, &manifest, facts.version)?;
            Some(v)
        }
        None => None,
    };
    let extras = list_extras(dir, dirfd)?;
    Ok(Bundle {
        dir: dir.to_path_buf(),
        manifest,
        facts,
        manifest_size: size,
        ternary,
        fp16,
        validation,
        extras,
    })
}

impl Bundle {
    /// Validates a bundle whose files are held in memory, with the same rules in the same order
    /// as [`Bundle::open`] except the directory rules 1.1 to 1.3 (there is no directory).
    /// `label` stands for the bundle directory in error messages. Used by the fuzz targets and
    /// by callers that receive bundles without a filesystem.
    pub fn from_bytes(
        label: &Path,
        manifest: &[u8],
        ternary: Vec<u8>,
        fp16: Vec<u8>,
        validation: Option<Vec<u8>>,
    ) -> Result<Bundle> {
        let (m, facts) = Manifest::parse(&label.join(MANIFEST_FILE), manifest)?;
        check_validation_presence(label, m.files.validation.is_some(), validation.is_some())?;
        let load = |role: FileRole, bytes: Vec<u8>| -> Result<DataFile> {
            let path = label.join(role.file_name());
            check_size(&path, role, bytes.len() as u64, &m)?;
            let header = crate::format::safetensors::parse_header_from_bytes(&path, &bytes)?;
            check_listing(&path, role, &header, &m)?;
            Ok(DataFile {
                role,
                path,
                header,
                bytes: FileBytes::Owned(bytes),
            })
        };
        let ternary = load(FileRole::Ternary, ternary)?;
        check_ternary_layout(&ternary, &m, &facts)?;
        let fp16 = load(FileRole::Fp16, fp16)?;
        check_fp16_layout(&fp16, &m)?;
        let validation = match validation {
            Some(v) => {
                let v = load(FileRole::Validation, v)?;
                check_validation_layout(&v, &m, facts.version)?;
                Some(v)
            }
            None => None,
        };
        Ok(Bundle {
            dir: label.to_path_buf(),
            manifest: m,
            facts,
            manifest_size: manifest.len() as u64,
            ternary,
            fp16,
            validation,
            extras: Vec::new(),
        })
    }
}

/// Rules 3.1 to 3.7 for one file, then loads its bytes.
fn open_data_file(
    dir: &Path,
    role: FileRole,
    (file, size): (File, u64),
    manifest: &Manifest,
    options: &OpenOptions,
) -> Result<DataFile> {
    let path = dir.join(role.file_name());
    check_size(&path, role, size, manifest)?;
    let header = read_header(&path, &file, size)?;
    check_listing(&path, role, &header, manifest)?;
    let bytes = mmap::load(&file, size, &path, options.backing)?;
    Ok(DataFile {
        role,
        path,
        header,
        bytes,
    })
}

/// Rule 3.7: the header's tensors are exactly the manifest's listing for this file.
fn check_listing(path: &Path, role: FileRole, header: &Header, manifest: &Manifest) -> Result<()> {
    let entry = manifest
        .files
        .get(role)
        .expect("rule 1.4 matched files to the manifest");
    let listed: HashMap<&str, ()> = entry
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), ()))
        .collect();
    if let Some(e) = header
        .entries
        .iter()
        .find(|e| !listed.contains_key(e.name.as_str()))
    {
        return Err(Violation::new(
            path,
            Rule::HeaderMatchesManifest,
            format!(
                "only the tensors listed in manifest files.{}.tensors",
                role.key()
            ),
            "an unlisted tensor",
        )
        .tensor(&e.name)
        .into());
    }
    if let Some(t) = entry.tensors.iter().find(|t| header.get(&t.name).is_none()) {
        return Err(Violation::new(
            path,
            Rule::HeaderMatchesManifest,
            format!(
                "every tensor listed in manifest files.{}.tensors",
                role.key()
            ),
            "no such tensor in the file",
        )
        .tensor(&t.name)
        .into());
    }
    Ok(())
}

/// Rule 3.1 for a file of `size` bytes.
fn check_size(path: &Path, role: FileRole, size: u64, manifest: &Manifest) -> Result<()> {
    let entry = manifest
        .files
        .get(role)
        .expect("rule 1.4 matched files to the manifest");
    if size != entry.size {
        return Err(Violation::new(
            path,
            Rule::FileSize,
            format!("{} bytes (manifest files.{})", entry.size, role.key()),
            format!("{size} bytes"),
        )
        .into());
    }
    Ok(())
}

/// Compares a file's header with the tensors the manifest implies: `(name, dtype, shape)`.
fn check_tensor_set(
    file: &DataFile,
    expected: &Layout,
    set_rule: Rule,
    shape_rule: Rule,
) -> Result<()> {
    let path = &file.path;
    for (name, dtype, shape) in expected {
        let Some(e) = file.header.get(name) else {
            return Err(Violation::new(
                path,
                set_rule,
                format!("a {dtype} tensor of shape {}", shape_string(shape)),
                "no such tensor",
            )
            .tensor(name)
            .into());
        };
        if e.dtype != *dtype || e.shape != *shape {
            return Err(Violation::new(
                path,
                shape_rule,
                format!("{dtype} of shape {}", shape_string(shape)),
                format!("{} of shape {}", e.dtype, shape_string(&e.shape)),
            )
            .tensor(name)
            .into());
        }
    }
    if file.header.entries.len() != expected.len() {
        let known: HashMap<&str, ()> = expected.iter().map(|(n, _, _)| (n.as_str(), ())).collect();
        let extra = file
            .header
            .entries
            .iter()
            .find(|e| !known.contains_key(e.name.as_str()));
        let found = extra
            .map(|e| format!("unexpected tensor {}", escape_name(&e.name)))
            .unwrap_or_default();
        return Err(Violation::new(
            path,
            set_rule,
            format!("exactly {} tensors", expected.len()),
            found,
        )
        .into());
    }
    Ok(())
}

fn check_ternary_layout(file: &DataFile, manifest: &Manifest, facts: &ManifestFacts) -> Result<()> {
    check_tensor_set(
        file,
        &ternary_layout(manifest, &facts.params),
        Rule::TernaryTensorSet,
        Rule::TernaryShapes,
    )
}

fn check_fp16_layout(file: &DataFile, manifest: &Manifest) -> Result<()> {
    check_tensor_set(
        file,
        &fp16_layout(manifest),
        Rule::Fp16TensorSet,
        Rule::Fp16TensorSet,
    )
}

/// Rule 6.1: the validation file holds `inputs` F32 [N, input_dim], `labels` I64 [N], and
/// optionally `difficulty` U8 [N] and (from format 2.0) `original_predictions` I64 [N].
fn check_validation_layout(
    file: &DataFile,
    manifest: &Manifest,
    version: FormatVersion,
) -> Result<()> {
    let bad = |expected: String, found: String| {
        Violation::new(&file.path, Rule::ValidationTensors, expected, found)
    };
    let n = match file.header.get(VALIDATION_INPUTS) {
        Some(e) if e.shape.len() == 2 && e.shape[0] >= 1 => e.shape[0],
        Some(e) => {
            return Err(bad(
                format!("inputs of shape [N >= 1, {}]", manifest.model.input_dim),
                shape_string(&e.shape),
            )
            .tensor(VALIDATION_INPUTS)
            .into())
        }
        None => return Err(bad("a tensor named inputs".into(), "none".into()).into()),
    };
    let has = |name| file.header.get(name).is_some();
    if has(VALIDATION_ORIGINAL_PREDICTIONS) && !version.allows_original_predictions() {
        // A 1.x reader refuses this tensor, so a 1.x bundle cannot carry it.
        return Err(bad(
            format!(
                "no original_predictions in a format {version} bundle (needs format 2.0 or later)"
            ),
            "a tensor named original_predictions".into(),
        )
        .tensor(VALIDATION_ORIGINAL_PREDICTIONS)
        .into());
    }
    let expected = validation_layout(
        n,
        manifest.model.input_dim,
        has(VALIDATION_DIFFICULTY),
        has(VALIDATION_ORIGINAL_PREDICTIONS),
    );
    check_tensor_set(
        file,
        &expected,
        Rule::ValidationTensors,
        Rule::ValidationTensors,
    )
}

/// Rule 1.4: `validation.safetensors` exists exactly when the manifest declares it.
fn check_validation_presence(dir: &Path, declared: bool, exists: bool) -> Result<()> {
    if declared == exists {
        return Ok(());
    }
    let (expected, found) = if declared {
        (
            "the validation file declared in manifest files.validation",
            "no such file",
        )
    } else {
        (
            "no validation file (manifest files.validation is absent)",
            "an undeclared validation file",
        )
    };
    Err(Violation::new(
        dir.join(FileRole::Validation.file_name()),
        Rule::ValidationFilePresence,
        expected,
        found,
    )
    .into())
}

fn list_extras(dir: &Path, dirfd: &OwnedFd) -> Result<Vec<String>> {
    let known = [
        MANIFEST_FILE,
        FileRole::Ternary.file_name(),
        FileRole::Fp16.file_name(),
        FileRole::Validation.file_name(),
    ];
    let entries = rustix::fs::Dir::read_from(dirfd)
        .map_err(|e| Error::io(dir, "read directory", errno_io(e)))?;
    let mut extras = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, "read directory", errno_io(e)))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." && !known.contains(&name.as_str()) {
            extras.push(name);
        }
    }
    extras.sort();
    Ok(extras)
}
