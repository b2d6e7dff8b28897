//! Writing safetensors files in the canonical layout (spec section 14): the header planned up
//! front, each tensor's bytes written at its offset and hashed, the file fsynced. Used for the
//! bundle's files and, through [`write_safetensors_file`], for exports.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{escape_name, Error, Result};
use crate::format::checksum::{sha256_file, sha256_hex};
use crate::format::manifest::{FileEntry, TensorDigest};
use crate::format::safetensors::{plan_layout, Dtype, Header};
use crate::write::staging::write_file_atomic;

/// Writes tensor `name`'s data at its planned offset and records its digest.
pub(crate) fn put(
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
pub(crate) fn create_sized(path: &Path, prefix: &[u8], header: &Header) -> Result<File> {
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

/// fsyncs a data file and builds its manifest entry (whole-file digest read back from the
/// page cache while the fsync runs).
pub(crate) fn finish_file(
    file: &File,
    path: &Path,
    header: &Header,
    digests: &HashMap<String, String>,
) -> Result<FileEntry> {
    let (synced, sha256) = rayon::join(|| file.sync_all(), || sha256_file(path));
    synced.map_err(|e| Error::io(path, "fsync", e))?;
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
        sha256: sha256?,
        tensors,
    })
}

/// Writes one safetensors file atomically (`write_file_atomic`) in the canonical layout.
/// `data(name)` supplies each tensor's bytes, one at a time, in data order. An existing `dest`
/// is replaced only with `force`, and only if it is a regular file.
pub fn write_safetensors_file(
    dest: &Path,
    tensors: Vec<(String, Dtype, Vec<u64>)>,
    metadata: &[(String, String)],
    force: bool,
    mut data: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<()> {
    write_safetensors_streamed(dest, tensors, metadata, force, |out| {
        let names: Vec<String> = out.header.entries.iter().map(|e| e.name.clone()).collect();
        for name in names {
            let bytes = data(&name)?;
            let need = out.byte_len(&name)?;
            if bytes.len() as u64 != need {
                return Err(Error::InvalidArgument(format!(
                    "tensor {}: {} bytes where {need} are needed",
                    escape_name(&name),
                    bytes.len(),
                )));
            }
            out.write(&name, 0, &bytes)?;
        }
        Ok(())
    })
}

/// A safetensors file being written, its layout planned: tensors are filled in pieces, at
/// any offset inside their planned range ([`write_safetensors_streamed`]).
pub struct TensorFile<'a> {
    file: &'a File,
    path: &'a Path,
    header: &'a Header,
}

impl TensorFile<'_> {
    /// The planned byte length of tensor `name`.
    pub fn byte_len(&self, name: &str) -> Result<u64> {
        self.header.get(name).map(|e| e.byte_len()).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no tensor {} planned",
                self.path.display(),
                escape_name(name)
            ))
        })
    }

    /// Writes `bytes` at byte `offset` of tensor `name`'s data; the range must lie inside it.
    pub fn write(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<()> {
        let e = self.header.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no tensor {} planned",
                self.path.display(),
                escape_name(name)
            ))
        })?;
        let end = offset.checked_add(bytes.len() as u64);
        if end.is_none_or(|end| end > e.byte_len()) {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {}: {} bytes at offset {offset} overrun its {} bytes",
                self.path.display(),
                escape_name(name),
                bytes.len(),
                e.byte_len()
            )));
        }
        self.file
            .write_all_at(bytes, self.header.data_start() + e.start + offset)
            .map_err(|err| Error::io(self.path, "write", err))
    }
}

/// The size of the safetensors file of `tensors` and `metadata` in the canonical layout.
pub fn planned_size(
    tensors: Vec<(String, Dtype, Vec<u64>)>,
    metadata: &[(String, String)],
) -> Result<u64> {
    Ok(plan_layout(tensors, metadata)?.1.file_size())
}

/// Writes one safetensors file atomically in the canonical layout, its tensors filled in
/// pieces by `fill` (so that no tensor need be held whole in memory); every byte of the
/// planned data must be written by `fill` (the file is created at its final size, zeros
/// elsewhere). On any error nothing is left at `dest`.
pub fn write_safetensors_streamed(
    dest: &Path,
    tensors: Vec<(String, Dtype, Vec<u64>)>,
    metadata: &[(String, String)],
    force: bool,
    fill: impl FnOnce(&TensorFile<'_>) -> Result<()>,
) -> Result<()> {
    let (prefix, header) = plan_layout(tensors, metadata)?;
    write_file_atomic(dest, force, |tmp| {
        let file = create_sized(tmp, &prefix, &header)?;
        fill(&TensorFile {
            file: &file,
            path: tmp,
            header: &header,
        })?;
        Ok(file)
    })
}
