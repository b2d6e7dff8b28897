//! Atomic publication (spec section 15): a bundle is assembled in a sibling temporary
//! directory `.<name>.tmp-<pid>-<n>`, fsynced, and only then renamed into place, or swapped
//! with the old bundle by `renameat2(RENAME_EXCHANGE)` when replacing. A failure at any point
//! removes the temporary directory and leaves the destination untouched.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::format::manifest::MANIFEST_FILE;

/// fsyncs a directory (its entries are then durable).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "fsync", e))
}

/// The directory `dest` is created in (`.` for a bare name).
pub(crate) fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What an existing destination directory may be for `--force` to replace it: a writer never
/// deletes a directory of another kind (a mistyped path must not lose unrelated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replaceable {
    /// A bundle (it has a regular `manifest.json`) or an empty directory.
    Bundle,
    /// A model directory (a regular `config.json`, no `manifest.json`: never a bundle) or an
    /// empty directory.
    ModelDirectory,
}

/// Refuses an existing destination unless `force`; with `force`, refuses anything `kind` does
/// not allow replacing.
pub(crate) fn check_destination(dest: &Path, force: bool) -> Result<()> {
    check_destination_of(dest, force, Replaceable::Bundle)
}

/// [`check_destination`] for a destination of `kind`.
pub(crate) fn check_destination_of(dest: &Path, force: bool, kind: Replaceable) -> Result<()> {
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
    let regular = |name: &str| fs::symlink_metadata(dest.join(name)).is_ok_and(|m| m.is_file());
    let empty = || -> Result<bool> {
        Ok(fs::read_dir(dest)
            .map_err(|e| Error::io(dest, "read directory", e))?
            .next()
            .is_none())
    };
    let (allowed, what) = match kind {
        Replaceable::Bundle => (
            meta.is_dir() && (regular(MANIFEST_FILE) || empty()?),
            "a bundle (no manifest.json) or an empty directory",
        ),
        Replaceable::ModelDirectory => (
            meta.is_dir()
                && fs::symlink_metadata(dest.join(MANIFEST_FILE)).is_err()
                && (regular("config.json") || empty()?),
            "a model directory (config.json, and no manifest.json: never a bundle) or an empty directory",
        ),
    };
    if !allowed {
        return Err(Error::InvalidArgument(format!(
            "{}: refusing to replace something that is not {what}",
            dest.display()
        )));
    }
    Ok(())
}

/// Refuses an existing file destination unless forced; never replaces something that is not
/// a regular file.
/// Creates `path` (it must not exist yet: files are written into a fresh staging directory),
/// writes `bytes` and fsyncs; returns the size written.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<u64> {
    use std::io::Write;
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, "create", e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(path, "write", e))?;
    file.sync_all().map_err(|e| Error::io(path, "fsync", e))?;
    Ok(bytes.len() as u64)
}

pub(crate) fn check_file_destination(dest: &Path, force: bool) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(_) if !force => Err(Error::DestinationExists {
            path: dest.to_path_buf(),
        }),
        Ok(m) if !m.is_file() => Err(Error::InvalidArgument(format!(
            "{}: refusing to replace something that is not a regular file",
            dest.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dest, "stat", e)),
    }
}

/// Publishes one file atomically: `fill(tmp)` creates and writes a temporary file beside
/// `dest` (`.<name>.tmp-<pid>-<n>`), which is fsynced and renamed into place (without `force`,
/// a no-replace rename, so a file that appeared meanwhile is not lost). On any failure the
/// temporary file is removed and `dest` is untouched.
pub(crate) fn write_file_atomic(
    dest: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<File>,
) -> Result<()> {
    check_file_destination(dest, force)?;
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
        let file = fill(&tmp)?;
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
pub(crate) struct Staging {
    /// The temporary directory.
    pub dir: PathBuf,
    committed: bool,
}

/// Numbers temporary names within this process.
pub(crate) static STAGING_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Staging {
    /// Creates `.<name>.tmp-<pid>-<n>` beside `dest` (and `dest`'s parent if missing).
    pub fn create(dest: &Path) -> Result<Staging> {
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
    pub fn commit(self, dest: &Path, force: bool) -> Result<()> {
        self.commit_replacing(dest, force, Replaceable::Bundle)
    }

    /// [`Staging::commit`] over a destination of `kind` (a model directory for exports).
    pub fn commit_replacing(mut self, dest: &Path, force: bool, kind: Replaceable) -> Result<()> {
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
                check_destination_of(dest, true, kind)?;
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
