//! Signed bundles (spec section 10.1): `model.sig`, an OpenSSF Model Signing v1.0 signature of
//! the `key` method over every file of the bundle directory, interchangeable with the
//! `model_signing` tool (sigstore/model-transparency) both ways.
//!
//! [`keys`] holds the ECDSA keys, [`envelope`] the bytes of `model.sig` and of the signed
//! statement. This module walks the directory, signs it ([`sign_bundle`]) and checks a
//! signature against trusted keys ([`check_signature`]). File digests the caller already
//! computed (the checksums of rules 7.1 and 7.4, which name the same bytes) are reused, so a
//! signature costs one pass over the data, not two.

pub mod envelope;
pub mod keys;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::error::{printable, Error, Result, Violation};
use crate::format::checksum::sha256_reader;
use crate::format::manifest::{FileRole, Manifest};
use crate::format::rules::Rule;
use crate::read::Bundle;
use crate::write::staging::write_file_atomic;
use envelope::{pae, Resource, SignatureFile, Statement, MAX_RESOURCES, MAX_SIGNATURE_BYTES};
pub use keys::{PublicKey, SigningKey};

/// The signature's file name in the bundle directory.
pub const SIGNATURE_FILE: &str = "model.sig";

/// The paths a signature leaves out, as model_signing does: version-control files and the
/// signature itself. Sorted, as written in `ignore_paths`.
pub const IGNORE_PATHS: [&str; 5] = [
    ".git",
    ".gitattributes",
    ".github",
    ".gitignore",
    "model.sig",
];

/// What a signature check or a signing established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signer's key hint (hex SHA-256 of its SPKI PEM).
    pub hint: String,
    /// The curve of the trusted key that verified it (or signed it).
    pub curve: &'static str,
    /// The files signed, by relative name.
    pub files: Vec<String>,
}

/// Whether `name` is `ignore` or inside it.
fn covered(name: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|p| {
        name == p
            || name
                .strip_prefix(p.as_str())
                .is_some_and(|r| r.starts_with('/'))
    })
}

/// Opens `path` without following a symbolic link, without blocking on a FIFO.
fn open_nofollow(path: &Path) -> std::io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Every regular file under `dir` that `ignore` does not cover, by relative `/`-separated
/// name, sorted by path components (the order model_signing lists them). A symbolic link, a
/// FIFO, a socket or a device is a violation of rule 9.4, named; so are names that are not
/// UTF-8 and more than [`MAX_RESOURCES`] files.
pub fn list_files(dir: &Path, ignore: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut found: Vec<(Vec<String>, PathBuf)> = Vec::new();
    let mut stack = vec![(Vec::<String>::new(), dir.to_path_buf())];
    while let Some((prefix, path)) = stack.pop() {
        let entries =
            std::fs::read_dir(&path).map_err(|e| Error::io(&path, "read directory", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&path, "read directory", e))?;
            let p = entry.path();
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                return Err(Violation::new(
                    &p,
                    Rule::SignedFiles,
                    "file names in UTF-8 (a signature lists them as JSON strings)",
                    printable(&entry.file_name().to_string_lossy()),
                )
                .into());
            };
            let mut components = prefix.clone();
            components.push(name);
            let rel = components.join("/");
            if covered(&rel, ignore) {
                continue;
            }
            let kind = entry.file_type().map_err(|e| Error::io(&p, "stat", e))?;
            if kind.is_dir() {
                stack.push((components, p));
            } else if kind.is_file() {
                if found.len() >= MAX_RESOURCES {
                    return Err(Violation::new(
                        dir,
                        Rule::SignedFiles,
                        format!("at most {MAX_RESOURCES} files"),
                        "more",
                    )
                    .into());
                }
                found.push((components, p));
            } else {
                let what = if kind.is_symlink() {
                    "a symbolic link"
                } else {
                    "not a regular file or directory"
                };
                return Err(Violation::new(
                    &p,
                    Rule::SignedFiles,
                    "regular files and directories only (a signature covers no links)",
                    what,
                )
                .into());
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(c, p)| (c.join("/"), p)).collect())
}

/// The SHA-256 of each file: from `known` (hex digests by relative name, computed by the
/// caller over the same bytes), else read now.
fn digests(files: &[(String, PathBuf)], known: &BTreeMap<String, String>) -> Result<Vec<Resource>> {
    files
        .iter()
        .map(|(name, path)| {
            let digest = match known.get(name) {
                Some(d) => d.clone(),
                None => {
                    let mut f = open_nofollow(path).map_err(|e| Error::io(path, "open", e))?;
                    sha256_reader(&mut f).map_err(|e| Error::io(path, "read", e))?
                }
            };
            Ok(Resource {
                name: name.clone(),
                digest,
            })
        })
        .collect()
}

/// The files a manifest lists, by name, with their digests: every data file and asset. They
/// stand for the files' digests only once checked against them (rules 7.1, 7.4) or just
/// written.
pub fn manifest_digests(m: &Manifest) -> BTreeMap<String, String> {
    FileRole::ALL
        .iter()
        .filter_map(|&r| {
            m.files
                .get(r)
                .map(|e| (r.file_name().to_string(), e.sha256.clone()))
        })
        .chain(
            m.files
                .assets
                .iter()
                .flatten()
                .map(|a| (a.name.clone(), a.sha256.clone())),
        )
        .collect()
}

/// [`manifest_digests`] of an open bundle.
pub fn checked_digests(bundle: &Bundle) -> BTreeMap<String, String> {
    manifest_digests(bundle.manifest())
}

/// Signs the directory `dir` with `key`: lists its files (rule 9.4), takes their digests
/// (`known`, or read now), and writes `model.sig` atomically (replacing one). `subject` is the
/// statement's subject name (the directory's name). Returns what was signed.
pub fn sign_dir(
    dir: &Path,
    subject: &str,
    key: &SigningKey,
    known: &BTreeMap<String, String>,
) -> Result<Signed> {
    let ignore: Vec<String> = IGNORE_PATHS.iter().map(|s| s.to_string()).collect();
    let files = list_files(dir, &ignore)?;
    let resources = digests(&files, known)?;
    let statement = Statement {
        subject: subject.to_string(),
        ignore_paths: ignore,
        resources,
    };
    let payload = statement.to_payload();
    let public = key.public();
    let file = SignatureFile {
        hint: public.hint(),
        signature: key.sign(&pae(&payload)),
        payload,
    };
    let bytes = file.to_bytes();
    write_file_atomic(&dir.join(SIGNATURE_FILE), true, |tmp| {
        use std::io::Write;
        let mut f = File::create(tmp).map_err(|e| Error::io(tmp, "create", e))?;
        f.write_all(&bytes)
            .map_err(|e| Error::io(tmp, "write", e))?;
        Ok(f)
    })?;
    Ok(Signed {
        hint: file.hint,
        curve: public.curve(),
        files: statement.resources.into_iter().map(|r| r.name).collect(),
    })
}

/// Signs the bundle in `dir`: opens it (headers, manifest, structure), checks every file and
/// tensor digest (rules 7.1, 7.2, 7.4: nothing damaged is signed), then signs its directory
/// with those digests (section 10.1).
pub fn sign_bundle(dir: &Path, key: &SigningKey) -> Result<Signed> {
    let bundle = Bundle::open(dir)?;
    crate::read::checks::check_digests(&bundle)?;
    let subject = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    sign_dir(dir, &subject, key, &checked_digests(&bundle))
}

/// Reads `model.sig` in `dir` (rule 9.1): `None` when there is none.
pub fn read_signature(dir: &Path) -> Result<Option<SignatureFile>> {
    let path = dir.join(SIGNATURE_FILE);
    let mut f = match open_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(Violation::new(
                &path,
                Rule::SignatureFile,
                "a regular file",
                "a symbolic link",
            )
            .into())
        }
        Err(e) => return Err(Error::io(&path, "open", e)),
    };
    let meta = f.metadata().map_err(|e| Error::io(&path, "stat", e))?;
    if !meta.is_file() {
        return Err(Violation::new(
            &path,
            Rule::SignatureFile,
            "a regular file",
            "not a regular file",
        )
        .into());
    }
    if meta.len() > MAX_SIGNATURE_BYTES {
        return Err(Violation::new(
            &path,
            Rule::SignatureFile,
            format!("at most {MAX_SIGNATURE_BYTES} bytes"),
            format!("{} bytes", meta.len()),
        )
        .into());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    use std::io::Read;
    (&mut f)
        .take(MAX_SIGNATURE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&path, "read", e))?;
    SignatureFile::parse(&path, &bytes).map(Some)
}

/// Checks the signature of the directory `dir` (rules 9.1 to 9.4): `model.sig` is made by
/// one of `trusted` over a statement whose files are exactly those of the directory, with
/// their digests (`known`, or read now). `required` names the files the signature must not
/// leave out. Every changed, missing and extra file is named.
pub fn check_dir(
    dir: &Path,
    file: &SignatureFile,
    trusted: &[PublicKey],
    known: &BTreeMap<String, String>,
    required: &BTreeSet<String>,
) -> Result<Signed> {
    let path = dir.join(SIGNATURE_FILE);
    let Some(key) = trusted.iter().find(|k| k.hint() == file.hint) else {
        let hints: Vec<String> = trusted.iter().map(|k| k.hint()).collect();
        return Err(Violation::new(
            &path,
            Rule::SignatureKey,
            format!("a signature by a trusted key (hint {})", hints.join(" or ")),
            format!("a signature by the key of hint {}", file.hint),
        )
        .into());
    };
    if !key.verifies(&pae(&file.payload), &file.signature) {
        return Err(Violation::new(
            &path,
            Rule::SignatureKey,
            format!(
                "a valid {} ECDSA signature by the trusted key {} over the payload",
                key.curve(),
                file.hint
            ),
            "a signature that does not verify (the payload or the signature was changed)",
        )
        .into());
    }
    let statement = Statement::parse(&path, &file.payload)?;
    if let Some(left_out) = required
        .iter()
        .find(|n| covered(n, &statement.ignore_paths))
    {
        return Err(Violation::new(
            &path,
            Rule::SignedFiles,
            "a signature over every bundle file",
            format!("ignore_paths leaves out {}", printable(left_out.as_str())),
        )
        .into());
    }
    let mut ignore = statement.ignore_paths.clone();
    ignore.push(SIGNATURE_FILE.into());
    let files = list_files(dir, &ignore)?;
    let on_disk: BTreeMap<&str, &PathBuf> = files.iter().map(|(n, p)| (n.as_str(), p)).collect();
    let signed: BTreeMap<&str, &str> = statement
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.digest.as_str()))
        .collect();
    let missing: Vec<&str> = signed
        .keys()
        .filter(|n| !on_disk.contains_key(*n))
        .copied()
        .collect();
    let extra: Vec<&str> = on_disk
        .keys()
        .filter(|n| !signed.contains_key(*n))
        .copied()
        .collect();
    let present: Vec<(String, PathBuf)> = files
        .iter()
        .filter(|(n, _)| signed.contains_key(n.as_str()))
        .cloned()
        .collect();
    let changed: Vec<String> = digests(&present, known)?
        .into_iter()
        .filter(|r| signed.get(r.name.as_str()) != Some(&r.digest.as_str()))
        .map(|r| r.name)
        .collect();
    if !(missing.is_empty() && extra.is_empty() && changed.is_empty()) {
        let list = |what: &str, names: Vec<String>| {
            (!names.is_empty()).then(|| {
                let shown: Vec<String> = names
                    .iter()
                    .take(8)
                    .map(|n| printable(n).into_owned())
                    .collect();
                let more = names.len().saturating_sub(8);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                format!("{what}: {}{tail}", shown.join(", "))
            })
        };
        let found: Vec<String> = [
            list("changed", changed),
            list("missing", missing.into_iter().map(String::from).collect()),
            list("extra", extra.into_iter().map(String::from).collect()),
        ]
        .into_iter()
        .flatten()
        .collect();
        return Err(Violation::new(
            dir,
            Rule::SignedFiles,
            format!("the {} files signed, unchanged", signed.len()),
            found.join("; "),
        )
        .into());
    }
    Ok(Signed {
        hint: file.hint.clone(),
        curve: key.curve(),
        files: statement.resources.into_iter().map(|r| r.name).collect(),
    })
}

/// Checks `file`, the `model.sig` of the bundle in `dir`, against `trusted` keys
/// ([`check_dir`]). `bundle` is the bundle when it opened: its manifest and every file the
/// manifest lists must be signed (rule 9.4), and with `digests_checked` (its file digests were
/// just verified against its files, rules 7.1 and 7.4) the manifest's digests stand for the
/// files instead of reading them again.
pub fn check_bundle_signature(
    dir: &Path,
    file: &SignatureFile,
    bundle: Option<&Bundle>,
    trusted: &[PublicKey],
    digests_checked: bool,
) -> Result<Signed> {
    let listed = bundle.map(checked_digests).unwrap_or_default();
    let mut required: BTreeSet<String> = listed.keys().cloned().collect();
    required.insert("manifest.json".into());
    let known = if digests_checked {
        listed
    } else {
        BTreeMap::new()
    };
    check_dir(dir, file, trusted, &known, &required)
}

/// Reads and checks the signature of the open `bundle` in `dir` ([`check_bundle_signature`]).
/// `Ok(None)` when the bundle is not signed.
pub fn check_signature(
    dir: &Path,
    bundle: &Bundle,
    trusted: &[PublicKey],
    digests_checked: bool,
) -> Result<Option<Signed>> {
    let Some(file) = read_signature(dir)? else {
        return Ok(None);
    };
    check_bundle_signature(dir, &file, Some(bundle), trusted, digests_checked).map(Some)
}
