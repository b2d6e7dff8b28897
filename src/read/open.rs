//! Opening a bundle: the validation pipeline of spec section 11, one order for a directory and
//! for files held in memory.
//!
//! [`Bundle::open`] reads only the manifest and the safetensors headers (its cost does not
//! depend on the size of the weights), checks the rules that concern them in the spec's order,
//! and only then maps the files. Every file is opened relative to one handle on the bundle
//! directory, without following symlinks, so a concurrent replacement by the writer is seen
//! whole or not at all. [`Bundle::from_bytes`] runs the same pipeline on bytes (the fuzz targets
//! use it); only the directory rules 1.1 to 1.3 and 1.5 have nothing to check there.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result, Violation};
use crate::format::manifest::{FileRole, Manifest, ManifestFacts, MANIFEST_FILE};
use crate::format::rules::Rule;
use crate::format::safetensors::{parse_header_from_bytes, read_header};
use crate::read::bundle::{AssetData, Bundle, DataFile};
use crate::read::mmap::{self, Backing, FileBytes};
use crate::read::structure::{
    check_listing, check_model_files, check_size, check_validation_file, check_validation_presence,
};
use crate::read::OpenOptions;

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
            let opened = DirFiles::open(dir, &dirfd)
                .and_then(|mut files| assemble(dir, &mut files, options.backing));
            match opened {
                Err(e) if attempt < 3 && vanished(&e) && replaced(dir, &dirfd) => attempt += 1,
                other => return other,
            }
        }
    }

    /// Validates a bundle whose files are held in memory, with the same rules in the same order
    /// as [`Bundle::open`] except the directory rules 1.1 to 1.3 and 1.5 (there is no
    /// directory). `label` stands for the bundle directory in error messages. Used by the fuzz
    /// targets and by callers that receive bundles without a filesystem.
    pub fn from_bytes(
        label: &Path,
        manifest: &[u8],
        ternary: Vec<u8>,
        fp16: Vec<u8>,
        validation: Option<Vec<u8>>,
    ) -> Result<Bundle> {
        let mut files = MemoryFiles {
            manifest,
            ternary: Some(ternary),
            fp16: Some(fp16),
            validation,
        };
        assemble(label, &mut files, Backing::Read)
    }
}

/// One file of a bundle being opened.
enum Member {
    /// Opened in the bundle directory (rule 1.3 checked), with its `fstat` size.
    File(File, u64),
    /// Held in memory.
    Bytes(Vec<u8>),
}

/// Where the files of a bundle being opened come from.
trait Files {
    /// `manifest.json`, parsed and validated (rules 2.1 to 2.12, then 7.3), and its size.
    fn manifest(&mut self, label: &Path) -> Result<(Manifest, ManifestFacts, u64)>;
    /// Whether `validation.safetensors` exists, whatever it is (rule 1.4).
    fn validation_exists(&self) -> Result<bool>;
    /// The file of `role` (opened, rule 1.3, for a directory).
    fn take(&mut self, role: FileRole) -> Result<Member>;
    /// The asset file `name` (rule 1.6: present, a regular file), with its size.
    fn asset(&mut self, name: &str) -> Result<Member>;
    /// Undeclared entries (rule 1.5); `assets` are the declared asset names.
    fn extras(&self, assets: &[&str]) -> Result<Vec<String>>;
}

/// The bundle-level order of spec section 11, after rules 1.1 to 1.3 for the required files:
/// the manifest, rule 1.4, then rules 3.1 to 3.7 and the layout of each file in role order.
fn assemble(label: &Path, files: &mut impl Files, backing: Backing) -> Result<Bundle> {
    let (manifest, facts, manifest_size) = files.manifest(label)?;
    let declared = manifest.files.validation.is_some();
    check_validation_presence(label, declared, files.validation_exists()?)?;
    let validation = match declared {
        true => Some(files.take(FileRole::Validation)?),
        false => None,
    };
    // Rule 1.6 (section 11, step 4): every listed asset, before the safetensors files.
    let assets = asset_files(label, files, &manifest, backing)?;
    let ternary = data_file(
        label,
        FileRole::Ternary,
        files.take(FileRole::Ternary)?,
        &manifest,
        backing,
    )?;
    let fp16 = data_file(
        label,
        FileRole::Fp16,
        files.take(FileRole::Fp16)?,
        &manifest,
        backing,
    )?;
    let ranges = check_model_files(&ternary, &fp16, &manifest, &facts)?;
    let validation = match validation {
        Some(member) => {
            let f = data_file(label, FileRole::Validation, member, &manifest, backing)?;
            let r = check_validation_file(&f, &manifest, facts.version)?;
            Some((f, r))
        }
        None => None,
    };
    let names: Vec<&str> = assets.iter().map(|a| a.name()).collect();
    let extras = files.extras(&names)?;
    Ok(Bundle {
        dir: label.to_path_buf(),
        extras,
        assets,
        manifest,
        facts,
        manifest_size,
        ternary,
        fp16,
        validation,
        ranges,
    })
}

/// Rule 1.6 for each asset file the manifest lists, in its order: present, a regular file (rule
/// 1.3), of the listed size (checked before any byte is read); then its bytes.
fn asset_files(
    label: &Path,
    files: &mut impl Files,
    manifest: &Manifest,
    backing: Backing,
) -> Result<Vec<AssetData>> {
    let Some(listed) = &manifest.files.assets else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(listed.len());
    for entry in listed {
        let path = label.join(&entry.name);
        let wrong_size = |found: u64| -> Error {
            Violation::new(
                &path,
                Rule::AssetFiles,
                format!("{} bytes (manifest files.assets)", entry.size),
                format!("{found} bytes"),
            )
            .into()
        };
        let bytes = match files.asset(&entry.name)? {
            Member::File(file, size) => {
                if size != entry.size {
                    return Err(wrong_size(size));
                }
                mmap::load(&file, size, &path, backing)?
            }
            Member::Bytes(b) => {
                if b.len() as u64 != entry.size {
                    return Err(wrong_size(b.len() as u64));
                }
                FileBytes::Owned(b)
            }
        };
        out.push(AssetData {
            path,
            entry: entry.clone(),
            bytes,
        });
    }
    Ok(out)
}

/// Rules 3.1 to 3.7 for one file (its size before any byte is read), then its bytes.
fn data_file(
    label: &Path,
    role: FileRole,
    member: Member,
    manifest: &Manifest,
    backing: Backing,
) -> Result<DataFile> {
    let path = label.join(role.file_name());
    let entry = manifest.files.get(role).ok_or_else(|| {
        Violation::new(
            &path,
            Rule::ValidationFilePresence,
            format!("a file the manifest declares (files.{})", role.key()),
            "an undeclared file",
        )
    })?;
    let (header, bytes) = match member {
        Member::File(file, size) => {
            check_size(&path, role, size, entry)?;
            let header = read_header(&path, &file, size)?;
            let listed = check_listing(&path, role, &header, entry)?;
            (header, (mmap::load(&file, size, &path, backing)?, listed))
        }
        Member::Bytes(b) => {
            check_size(&path, role, b.len() as u64, entry)?;
            let header = parse_header_from_bytes(&path, &b)?;
            let listed = check_listing(&path, role, &header, entry)?;
            (header, (FileBytes::Owned(b), listed))
        }
    };
    let (bytes, listed) = bytes;
    Ok(DataFile {
        role,
        path,
        header,
        bytes,
        sha256: entry.sha256.clone(),
        listed,
    })
}

/// A bundle directory: the required files are opened first (rules 1.2 and 1.3), so that the set
/// is one directory's even if it is replaced meanwhile.
struct DirFiles<'d> {
    dir: &'d Path,
    dirfd: &'d OwnedFd,
    manifest: Option<(File, u64)>,
    ternary: Option<(File, u64)>,
    fp16: Option<(File, u64)>,
}

impl<'d> DirFiles<'d> {
    fn open(dir: &'d Path, dirfd: &'d OwnedFd) -> Result<Self> {
        Ok(DirFiles {
            dir,
            dirfd,
            manifest: Some(require_member(dir, dirfd, MANIFEST_FILE)?),
            ternary: Some(require_member(dir, dirfd, FileRole::Ternary.file_name())?),
            fp16: Some(require_member(dir, dirfd, FileRole::Fp16.file_name())?),
        })
    }
}

impl Files for DirFiles<'_> {
    fn manifest(&mut self, _label: &Path) -> Result<(Manifest, ManifestFacts, u64)> {
        let member = match self.manifest.take() {
            Some(m) => m,
            None => require_member(self.dir, self.dirfd, MANIFEST_FILE)?,
        };
        let size = member.1;
        let (m, facts) = read_manifest_file(self.dir, member)?;
        Ok((m, facts, size))
    }

    fn validation_exists(&self) -> Result<bool> {
        let name = FileRole::Validation.file_name();
        match rustix::fs::statat(self.dirfd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io(self.dir.join(name), "stat", errno_io(e))),
        }
    }

    fn take(&mut self, role: FileRole) -> Result<Member> {
        let opened = match role {
            FileRole::Ternary => self.ternary.take(),
            FileRole::Fp16 => self.fp16.take(),
            FileRole::Validation => None,
        };
        let (file, size) = match opened {
            Some(f) => f,
            None => require_member(self.dir, self.dirfd, role.file_name())?,
        };
        Ok(Member::File(file, size))
    }

    fn asset(&mut self, name: &str) -> Result<Member> {
        let (file, size) = open_member(self.dir, self.dirfd, name)?.ok_or_else(|| {
            Error::from(Violation::new(
                self.dir.join(name),
                Rule::AssetFiles,
                "the asset file the manifest lists (files.assets)",
                "no such file",
            ))
        })?;
        Ok(Member::File(file, size))
    }

    fn extras(&self, assets: &[&str]) -> Result<Vec<String>> {
        list_extras(self.dir, self.dirfd, assets)
    }
}

/// A bundle's files held in memory.
struct MemoryFiles<'m> {
    manifest: &'m [u8],
    ternary: Option<Vec<u8>>,
    fp16: Option<Vec<u8>>,
    validation: Option<Vec<u8>>,
}

impl Files for MemoryFiles<'_> {
    fn manifest(&mut self, label: &Path) -> Result<(Manifest, ManifestFacts, u64)> {
        let (m, facts) = Manifest::parse(&label.join(MANIFEST_FILE), self.manifest)?;
        Ok((m, facts, self.manifest.len() as u64))
    }

    fn validation_exists(&self) -> Result<bool> {
        Ok(self.validation.is_some())
    }

    fn take(&mut self, role: FileRole) -> Result<Member> {
        let bytes = match role {
            FileRole::Ternary => self.ternary.take(),
            FileRole::Fp16 => self.fp16.take(),
            FileRole::Validation => self.validation.take(),
        };
        Ok(Member::Bytes(bytes.unwrap_or_default()))
    }

    fn asset(&mut self, name: &str) -> Result<Member> {
        Err(Violation::new(
            Path::new("<in memory>").join(name),
            Rule::AssetFiles,
            "the asset file the manifest lists (files.assets)",
            "a bundle held in memory, which has no asset files",
        )
        .into())
    }

    fn extras(&self, _assets: &[&str]) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
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

fn list_extras(dir: &Path, dirfd: &OwnedFd, assets: &[&str]) -> Result<Vec<String>> {
    let known = [
        MANIFEST_FILE,
        FileRole::Ternary.file_name(),
        FileRole::Fp16.file_name(),
        FileRole::Validation.file_name(),
        crate::signing::SIGNATURE_FILE,
    ];
    let entries = rustix::fs::Dir::read_from(dirfd)
        .map_err(|e| Error::io(dir, "read directory", errno_io(e)))?;
    let mut extras = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, "read directory", errno_io(e)))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "."
            && name != ".."
            && !known.contains(&name.as_str())
            && !assets.contains(&name.as_str())
        {
            extras.push(name);
        }
    }
    extras.sort();
    Ok(extras)
}
