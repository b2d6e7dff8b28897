//! File contents as bytes: memory-mapped, or read into memory. The crate's only `unsafe`.
//!
//! Mapping hazard (spec "Security considerations"): if another process truncates a mapped file,
//! touching the lost pages raises SIGBUS. The reader therefore proves every file's length
//! against the manifest and the header *before* mapping, never writes through a map, and the
//! writer never modifies a published file in place (it replaces whole directories). Callers who
//! cannot rule out concurrent truncation (network filesystems, files still being written) use
//! [`Backing::Read`].

use std::fs::File;
use std::ops::{Deref, Range};
use std::path::Path;

use memmap2::{Mmap, UncheckedAdvice};

use crate::error::{Error, Result};

/// How file contents are brought into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// Memory-map the file (zero-copy; the default).
    #[default]
    Map,
    /// Read the file into a heap buffer (safe against concurrent truncation).
    Read,
}

/// The bytes of a file, mapped or owned.
#[derive(Debug)]
pub enum FileBytes {
    /// A read-only memory map.
    Mapped(Mmap),
    /// A heap copy.
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl FileBytes {
    /// Where `part` lies within these bytes, if it is a sub-slice of them.
    pub fn range_of(&self, part: &[u8]) -> Option<Range<usize>> {
        let start = (part.as_ptr() as usize).checked_sub(self.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.len()).then_some(start..end)
    }

    /// Tells the kernel this process is done with `part` (a sub-slice of these bytes) for now:
    /// the whole pages of a mapped part leave the process's resident set. They stay in the page
    /// cache, and touching them again maps them back from it. Owned bytes are unaffected; so is
    /// a slice that is not part of these bytes.
    pub fn release(&self, part: &[u8]) {
        let FileBytes::Mapped(map) = self else {
            return;
        };
        let Some(range) = self.range_of(part) else {
            return;
        };
        let page = rustix::param::page_size();
        let start = range.start.div_ceil(page) * page;
        let end = range.end / page * page;
        if start < end {
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping drops this process's page
            // table entries for the range; the next access maps the same page of the file again
            // (from the page cache or the disk), so every slice borrowed from the map keeps
            // reading the file's bytes. It never discards data: the map is never written. The
            // range is within the map (checked above). Failure only means the pages stay.
            let _ = unsafe {
                map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

/// Brings the `len` bytes of `file` into memory. `len` must be the length already validated
/// against the manifest and header; a file that changed length since is an I/O error.
pub fn load(file: &File, len: u64, path: &Path, backing: Backing) -> Result<FileBytes> {
    let changed = || {
        Error::io(
            path,
            "map",
            std::io::Error::other("file changed size while the bundle was being opened"),
        )
    };
    let size = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    if size != len {
        return Err(changed());
    }
    let bytes = match backing {
        Backing::Map if len > 0 => {
            // SAFETY: the map is read-only and private to this process. Its length equals the
            // file length just checked, so every page is backed by the file at this moment. The
            // remaining risk is another process truncating the file while it is mapped (SIGBUS);
            // this crate never does that to a published bundle, the hazard is documented in the
            // spec, and `Backing::Read` exists for callers who cannot rule it out.
            let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io(path, "mmap", e))?;
            FileBytes::Mapped(map)
        }
        // An empty file cannot be mapped; an empty buffer is the same thing.
        Backing::Map => FileBytes::Owned(Vec::new()),
        Backing::Read => {
            use std::os::unix::fs::FileExt;
            // The size is real (fstat) but may be huge (a sparse file): fail cleanly, not abort,
            // when it cannot be allocated.
            let len = usize::try_from(len).map_err(|_| changed())?;
            let mut buf = Vec::new();
            buf.try_reserve_exact(len).map_err(|_| {
                Error::io(
                    path,
                    "read",
                    std::io::Error::new(
                        std::io::ErrorKind::OutOfMemory,
                        format!(
                            "cannot allocate {len} bytes to read the file (try without --no-mmap)"
                        ),
                    ),
                )
            })?;
            buf.resize(len, 0);
            file.read_exact_at(&mut buf, 0)
                .map_err(|e| Error::io(path, "read", e))?;
            FileBytes::Owned(buf)
        }
    };
    if bytes.len() as u64 != len {
        return Err(changed());
    }
    Ok(bytes)
}
