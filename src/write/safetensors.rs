//! Writing safetensors files in the canonical layout (spec section 14): the header planned up
//! front, each tensor's bytes written at its offset and hashed, the file fsynced. Used for the
//! bundle's files and, through [`write_safetensors_file`], for exports.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;

use crate::error::{escape_name, Error, Result};
use crate::format::checksum::{sha256_file, sha256_hex};
use crate::format::manifest::{FileEntry, TensorDigest};
use crate::format::safetensors::{plan_layout, Dtype, Header};
use crate::write::staging::{parent_of, sync_dir, STAGING_COUNTER};

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

/// fsyncs a data file and builds its manifest entry (whole-file digest read back from disk).
pub(crate) fn finish_file(
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
