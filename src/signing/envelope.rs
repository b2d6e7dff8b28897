//! The bytes of `model.sig` (spec section 10.1): a Sigstore bundle v0.3 of OpenSSF Model
//! Signing's `key` method, whose DSSE envelope carries an in-toto statement listing every
//! file of the directory with its SHA-256. Written in one layout; read strictly: every member
//! named by the spec and no other, exact type strings, canonical base64 (rules 9.1, 9.2).

use std::collections::BTreeSet;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, Violation};
use crate::format::manifest::json::NoDuplicateKeys;
use crate::format::rules::Rule;

/// `mediaType` of the Sigstore bundle.
pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// `payloadType` of the DSSE envelope.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The in-toto statement's `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The model_signing predicate's `predicateType`.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The largest `model.sig` read (section 12).
pub const MAX_SIGNATURE_BYTES: u64 = 16 << 20;
/// The most resources a statement lists (section 12).
pub const MAX_RESOURCES: usize = 65_536;
/// The longest resource name, in bytes (section 12).
pub const MAX_NAME_BYTES: usize = 4096;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigstoreBundle {
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "verificationMaterial")]
    verification_material: VerificationMaterial,
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: DsseEnvelope,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerificationMaterial {
    #[serde(rename = "publicKey")]
    public_key: KeyHint,
    #[serde(rename = "tlogEntries")]
    tlog_entries: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyHint {
    hint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DsseEnvelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<DsseSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DsseSignature {
    sig: String,
    #[serde(default)]
    keyid: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementJson {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subject {
    name: String,
    digest: SubjectDigest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectDigest {
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<ResourceJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Serialization {
    method: String,
    hash_type: String,
    allow_symlinks: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ignore_paths: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceJson {
    name: String,
    algorithm: String,
    digest: String,
}

/// One signed file: its name relative to the directory (`/`-separated) and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Relative name, `/`-separated.
    pub name: String,
    /// SHA-256, 64 lowercase hex digits.
    pub digest: String,
}

/// What a signature says: the directory's name, the paths it leaves out, and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The subject's name (the directory's name when signed; not compared by readers).
    pub subject: String,
    /// Paths not signed (the signature itself, version-control files).
    pub ignore_paths: Vec<String>,
    /// Every signed file, in the order listed.
    pub resources: Vec<Resource>,
}

/// `model.sig` as read: the key hint, the exact payload bytes and the DER signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// The hint of the signer's public key (hex SHA-256 of its SPKI PEM).
    pub hint: String,
    /// The payload bytes exactly as signed.
    pub payload: Vec<u8>,
    /// The ASN.1 DER ECDSA signature.
    pub signature: Vec<u8>,
}

/// The DSSE pre-authentication encoding of `payload`: what is signed.
pub fn pae(payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {PAYLOAD_TYPE} {} ",
        PAYLOAD_TYPE.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The SHA-256 over the concatenated raw digests of `resources`, in their order: the
/// subject's digest. `None` if a digest is not 64 lowercase hex digits.
pub fn subject_digest(resources: &[Resource]) -> Option<String> {
    let mut h = Sha256::new();
    for r in resources {
        h.update(hex32(&r.digest)?);
    }
    Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The 32 bytes of 64 lowercase hex digits.
fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let v = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
        out[i] = v(pair[0]) << 4 | v(pair[1]);
    }
    Some(out)
}

/// `bytes` as one JSON object of type `T` (whose unknown members serde refuses), refusing
/// duplicate keys first, as the manifest's are refused (serde would keep the last silently);
/// `bad(expected, found)` makes the error of the caller's rule.
fn strict_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    bad: &dyn Fn(&str, String) -> Error,
) -> Result<T> {
    let dup: NoDuplicateKeys = serde_json::from_slice(bytes)
        .map_err(|e| bad("a JSON object without duplicate keys", e.to_string()))?;
    if !dup.0 {
        return Err(bad("a JSON object", "another JSON value".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| bad(what, e.to_string()))
}

/// Whether `name` is a relative `/`-separated path of non-empty components, none `.` or
/// `..`, without NUL and at most [`MAX_NAME_BYTES`] long (rule 9.2).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Statement {
    /// The payload: the in-toto statement as JSON (2-space indent, the members in the order
    /// of section 10.1, no final newline).
    pub fn to_payload(&self) -> Vec<u8> {
        let digest = subject_digest(&self.resources).expect("digests computed by the writer");
        let json = StatementJson {
            type_: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: self.subject.clone(),
                digest: SubjectDigest { sha256: digest },
            }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Predicate {
                serialization: Serialization {
                    method: "files".into(),
                    hash_type: "sha256".into(),
                    allow_symlinks: false,
                    ignore_paths: self.ignore_paths.clone(),
                },
                resources: self
                    .resources
                    .iter()
                    .map(|r| ResourceJson {
                        name: r.name.clone(),
                        algorithm: "sha256".into(),
                        digest: r.digest.clone(),
                    })
                    .collect(),
            },
        };
        serde_json::to_vec_pretty(&json).expect("a statement serializes")
    }

    /// Reads and checks a payload (rule 9.2); `path` names the signature file in errors.
    pub fn parse(path: &Path, payload: &[u8]) -> Result<Statement> {
        let bad = |expected: &str, found: String| -> Error {
            Violation::new(path, Rule::SignatureStatement, expected, found).into()
        };
        let json: StatementJson = strict_json(
            payload,
            "an in-toto statement of the model_signing predicate (JSON, only the members of section 10.1)",
            &bad,
        )?;
        if json.type_ != STATEMENT_TYPE {
            return Err(bad(
                &format!("_type {STATEMENT_TYPE:?}"),
                format!("{:?}", json.type_),
            ));
        }
        if json.predicate_type != PREDICATE_TYPE {
            return Err(bad(
                &format!("predicateType {PREDICATE_TYPE:?}"),
                format!("{:?}", json.predicate_type),
            ));
        }
        let [subject] = json.subject.as_slice() else {
            return Err(bad(
                "exactly one subject",
                format!("{}", json.subject.len()),
            ));
        };
        let s = &json.predicate.serialization;
        if s.method != "files" || s.hash_type != "sha256" || s.allow_symlinks {
            return Err(bad(
                "serialization method \"files\", hash_type \"sha256\", allow_symlinks false",
                format!(
                    "method {:?}, hash_type {:?}, allow_symlinks {}",
                    s.method, s.hash_type, s.allow_symlinks
                ),
            ));
        }
        if let Some(p) = s.ignore_paths.iter().find(|p| !valid_name(p)) {
            return Err(bad(
                "ignore_paths: relative paths inside the directory",
                format!("{p:?}"),
            ));
        }
        let list = &json.predicate.resources;
        if list.len() > MAX_RESOURCES {
            return Err(bad(
                &format!("at most {MAX_RESOURCES} resources"),
                format!("{}", list.len()),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut resources = Vec::with_capacity(list.len());
        for r in list {
            if !valid_name(&r.name) {
                return Err(bad(
                    "resource names: relative paths inside the directory (no empty, \".\" or \"..\" component)",
                    format!("{:?}", r.name),
                ));
            }
            if !seen.insert(r.name.as_str()) {
                return Err(bad("each resource once", format!("{:?} twice", r.name)));
            }
            if r.algorithm != "sha256" || hex32(&r.digest).is_none() {
                return Err(bad(
                    "algorithm \"sha256\" and a digest of 64 lowercase hex digits",
                    format!("{:?} {:?} for {:?}", r.algorithm, r.digest, r.name),
                ));
            }
            resources.push(Resource {
                name: r.name.clone(),
                digest: r.digest.clone(),
            });
        }
        let digest = subject_digest(&resources).expect("digests checked above");
        if subject.digest.sha256 != digest {
            return Err(bad(
                &format!("subject digest {digest} (SHA-256 of the resources' digests in order)"),
                subject.digest.sha256.clone(),
            ));
        }
        Ok(Statement {
            subject: subject.name.clone(),
            ignore_paths: s.ignore_paths.clone(),
            resources,
        })
    }
}

impl SignatureFile {
    /// The bytes of `model.sig` (compact JSON, no final newline, as model_signing writes it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let json = SigstoreBundle {
            media_type: MEDIA_TYPE.into(),
            verification_material: VerificationMaterial {
                public_key: KeyHint {
                    hint: self.hint.clone(),
                },
                tlog_entries: Vec::new(),
            },
            dsse_envelope: DsseEnvelope {
                payload: STANDARD.encode(&self.payload),
                payload_type: PAYLOAD_TYPE.into(),
                signatures: vec![DsseSignature {
                    sig: STANDARD.encode(&self.signature),
                    keyid: String::new(),
                }],
            },
        };
        serde_json::to_vec(&json).expect("a signature file serializes")
    }

    /// Reads and checks `model.sig`'s bytes (rule 9.1); `path` names it in errors. The
    /// statement inside is read by [`Statement::parse`] once the signature over it holds.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SignatureFile> {
        let bad = |expected: &str, found: String| -> Error {
            Violation::new(path, Rule::SignatureFile, expected, found).into()
        };
        if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
            return Err(bad(
                &format!("at most {MAX_SIGNATURE_BYTES} bytes"),
                format!("{} bytes", bytes.len()),
            ));
        }
        let json: SigstoreBundle = strict_json(
            bytes,
            "a Sigstore bundle of the key method (only the members of section 10.1)",
            &bad,
        )?;
        if json.media_type != MEDIA_TYPE {
            return Err(bad(
                &format!("mediaType {MEDIA_TYPE:?}"),
                format!("{:?}", json.media_type),
            ));
        }
        let hint = json.verification_material.public_key.hint;
        if hex32(&hint).is_none() {
            return Err(bad(
                "publicKey.hint: 64 lowercase hex digits (SHA-256 of the key's PEM)",
                format!("{hint:?}"),
            ));
        }
        if !json.verification_material.tlog_entries.is_empty() {
            return Err(bad(
                "no tlogEntries (the key method has no transparency log)",
                format!("{} entries", json.verification_material.tlog_entries.len()),
            ));
        }
        let env = json.dsse_envelope;
        if env.payload_type != PAYLOAD_TYPE {
            return Err(bad(
                &format!("payloadType {PAYLOAD_TYPE:?}"),
                format!("{:?}", env.payload_type),
            ));
        }
        let [sig] = env.signatures.as_slice() else {
            return Err(bad(
                "exactly one signature",
                format!("{}", env.signatures.len()),
            ));
        };
        let decode = |what: &str, s: &str| {
            STANDARD.decode(s).map_err(|e| {
                bad(
                    &format!("{what}: canonical base64 (standard alphabet, padded)"),
                    e.to_string(),
                )
            })
        };
        let payload = decode("payload", &env.payload)?;
        let signature = decode("sig", &sig.sig)?;
        if signature.is_empty() || signature.len() > 256 {
            return Err(bad(
                "sig: an ASN.1 DER ECDSA signature",
                format!("{} bytes", signature.len()),
            ));
        }
        Ok(SignatureFile {
            hint,
            payload,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Statement {
        Statement {
            subject: "bundle".into(),
            ignore_paths: vec!["model.sig".into()],
            resources: vec![
                Resource {
                    name: "a".into(),
                    digest: "ab".repeat(32),
                },
                Resource {
                    name: "d/b".into(),
                    digest: "01".repeat(32),
                },
            ],
        }
    }

    #[test]
    fn statements_and_signature_files_read_back() {
        let s = statement();
        let payload = s.to_payload();
        assert_eq!(Statement::parse(Path::new("x"), &payload).unwrap(), s);
        let f = SignatureFile {
            hint: "cd".repeat(32),
            payload,
            signature: vec![0x30, 1, 2],
        };
        assert_eq!(
            SignatureFile::parse(Path::new("x"), &f.to_bytes()).unwrap(),
            f
        );
        assert!(pae(b"ab").starts_with(b"DSSEv1 28 application/vnd.in-toto+json 2 ab"));
    }

    #[test]
    fn subject_digest_covers_the_raw_digests_in_order() {
        let s = statement();
        let mut raw = hex32(&s.resources[0].digest).unwrap().to_vec();
        raw.extend(hex32(&s.resources[1].digest).unwrap());
        let want: String = Sha256::digest(&raw)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(subject_digest(&s.resources).unwrap(), want);
        assert_eq!(
            hex32(&"AB".repeat(32)),
            None,
            "uppercase is not the digest's form"
        );
    }

    #[test]
    fn names_outside_the_directory_are_not_names() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["a", "a/b", ".hidden", "a..b", "ü é.txt"] {
            assert!(valid_name(good), "{good:?}");
        }
    }
}
