//! Signing and public keys of the `key` method (spec section 10.1): ECDSA on P-256 (with
//! SHA-256) and P-384 (with SHA-384), the curves OpenSSF Model Signing accepts and that we
//! write. Private keys are read from PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE
//! KEY`) PEM, public keys from SPKI PEM (`BEGIN PUBLIC KEY`), as openssl writes them. All
//! cryptography is RustCrypto's; signing is deterministic (RFC 6979), so the same key and
//! bundle give the same `model.sig`.

use std::path::Path;

use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The largest key file read (a PEM key is a few hundred bytes).
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// A private key that signs bundles.
#[derive(Clone, PartialEq, Eq)]
pub enum SigningKey {
    /// ECDSA P-256 with SHA-256.
    P256(p256::ecdsa::SigningKey),
    /// ECDSA P-384 with SHA-384.
    P384(p384::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: the curve and the public key's hint.
        write!(
            f,
            "SigningKey({}, hint {})",
            self.curve(),
            self.public().hint()
        )
    }
}

/// A public key a signature is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ECDSA P-256 with SHA-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA P-384 with SHA-384.
    P384(p384::ecdsa::VerifyingKey),
}

/// Reads a key file: at most [`MAX_KEY_BYTES`], UTF-8.
fn read_pem(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    if size > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{}: expected a PEM key (at most {MAX_KEY_BYTES} bytes), found {size} bytes",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    String::from_utf8(bytes).map_err(|_| {
        Error::InvalidArgument(format!(
            "{}: expected a PEM key (text), found bytes that are not UTF-8",
            path.display()
        ))
    })
}

impl SigningKey {
    /// Reads a PEM private key: PKCS#8 or SEC1, P-256 or P-384. An error names the file and
    /// what was found (a public key, an encrypted key, another curve or algorithm).
    pub fn read(path: &Path) -> Result<SigningKey> {
        SigningKey::from_pem(path, &read_pem(path)?)
    }

    /// Parses a PEM private key; `path` names it in errors.
    pub fn from_pem(path: &Path, pem: &str) -> Result<SigningKey> {
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::P384(k.into()));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(SigningKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(pem) {
            return Ok(SigningKey::P384(k.into()));
        }
        let found = if pem.contains("ENCRYPTED PRIVATE KEY") {
            "an encrypted private key (decrypt it first: openssl pkcs8 -in KEY -out PLAIN.pem)"
        } else if pem.contains("PUBLIC KEY") {
            "a public key (sign with the private key; verify with the public one)"
        } else if pem.contains("PRIVATE KEY") {
            "a private key of another curve or algorithm"
        } else {
            "no PEM private key"
        };
        Err(Error::InvalidArgument(format!(
            "{}: expected an EC P-256 or P-384 private key in PEM (PKCS#8 \"BEGIN PRIVATE KEY\" or SEC1 \"BEGIN EC PRIVATE KEY\"), found {found}",
            path.display()
        )))
    }

    /// A new P-256 key from the operating system's randomness (`bundle keygen`).
    pub fn generate_p256() -> SigningKey {
        SigningKey::P256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    /// The key as PKCS#8 PEM (LF line endings), what `bundle keygen` writes.
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        let pem = match self {
            SigningKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            SigningKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|p| p.to_string())
            .map_err(|e| Error::InvalidArgument(format!("encoding the private key: {e}")))
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        match self {
            SigningKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            SigningKey::P384(k) => PublicKey::P384(*k.verifying_key()),
        }
    }

    /// The curve's name.
    pub fn curve(&self) -> &'static str {
        self.public().curve()
    }

    /// The ASN.1 DER ECDSA signature of `message` (hashed with the curve's hash).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        match self {
            SigningKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
            SigningKey::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
        }
    }
}

impl PublicKey {
    /// Reads an SPKI PEM public key (`BEGIN PUBLIC KEY`), P-256 or P-384.
    pub fn read(path: &Path) -> Result<PublicKey> {
        PublicKey::from_pem(path, &read_pem(path)?)
    }

    /// Parses an SPKI PEM public key; `path` names it in errors.
    pub fn from_pem(path: &Path, pem: &str) -> Result<PublicKey> {
        if let Ok(k) = p256::PublicKey::from_public_key_pem(pem) {
            return Ok(PublicKey::P256(k.into()));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_pem(pem) {
            return Ok(PublicKey::P384(k.into()));
        }
        let found = if pem.contains("PRIVATE KEY") {
            "a private key (trust the public key: openssl ec -in KEY -pubout)"
        } else if pem.contains("PUBLIC KEY") {
            "a public key of another curve or algorithm"
        } else {
            "no PEM public key"
        };
        Err(Error::InvalidArgument(format!(
            "{}: expected an EC P-256 or P-384 public key in PEM (\"BEGIN PUBLIC KEY\"), found {found}",
            path.display()
        )))
    }

    /// The SPKI PEM text: 64-character lines, LF endings, a final LF (as openssl writes it).
    pub fn to_pem(&self) -> String {
        let pem = match self {
            PublicKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::P384(k) => k.to_public_key_pem(LineEnding::LF),
        };
        // Encoding a valid point of a known curve cannot fail.
        pem.expect("an SPKI encoding of a valid public key")
    }

    /// The key's hint (spec section 10.1): the lowercase hex SHA-256 of [`PublicKey::to_pem`].
    pub fn hint(&self) -> String {
        Sha256::digest(self.to_pem().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The curve's name.
    pub fn curve(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "P-256",
            PublicKey::P384(_) => "P-384",
        }
    }

    /// Whether `der` is this key's ASN.1 DER ECDSA signature of `message`.
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        match self {
            PublicKey::P256(k) => {
                p256::ecdsa::Signature::from_der(der).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            PublicKey::P384(k) => {
                p384::ecdsa::Signature::from_der(der).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
        }
    }
}

/// Where `bundle keygen` puts the public key of `private`: `NAME.pub.pem` beside `NAME.pem`.
pub fn public_key_path(private: &Path) -> std::path::PathBuf {
    let stem = private
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    private.with_file_name(format!("{stem}.pub.pem"))
}

/// Writes `key` as PKCS#8 PEM to `private` (mode 0600: only its owner reads it) and its SPKI
/// PEM to `public`, each atomically; without `force` an existing file is an error and nothing
/// is written.
pub fn write_key_pair(key: &SigningKey, private: &Path, public: &Path, force: bool) -> Result<()> {
    use crate::write::staging::{check_file_destination, write_file_atomic};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    check_file_destination(private, force)?;
    check_file_destination(public, force)?;
    let write = |dest: &Path, text: String, mode: u32| {
        write_file_atomic(dest, force, |tmp| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(tmp)
                .map_err(|e| Error::io(tmp, "create", e))?;
            f.write_all(text.as_bytes())
                .map_err(|e| Error::io(tmp, "write", e))?;
            Ok(f)
        })
    };
    write(private, key.to_pkcs8_pem()?, 0o600)?;
    write(public, key.public().to_pem(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_only_its_public_key_verifies() {
        let k = SigningKey::generate_p256();
        let pem = k.to_pkcs8_pem().unwrap();
        let back = SigningKey::from_pem(Path::new("k.pem"), &pem).unwrap();
        assert_eq!(back.public(), k.public());
        let sig = k.sign(b"message");
        assert_eq!(sig, back.sign(b"message"), "RFC 6979: deterministic");
        assert!(k.public().verifies(b"message", &sig));
        assert!(!k.public().verifies(b"messagf", &sig));
        assert!(!SigningKey::generate_p256()
            .public()
            .verifies(b"message", &sig));
        let public = PublicKey::from_pem(Path::new("p.pem"), &k.public().to_pem()).unwrap();
        assert_eq!(public, k.public());
        assert_eq!(k.public().hint().len(), 64);
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused_naming_what_was_found() {
        let k = SigningKey::generate_p256();
        let public = k.public().to_pem();
        let e = SigningKey::from_pem(Path::new("k.pem"), &public).unwrap_err();
        assert!(
            e.to_string().contains("k.pem") && e.to_string().contains("a public key"),
            "{e}"
        );
        let e = PublicKey::from_pem(Path::new("p.pem"), &k.to_pkcs8_pem().unwrap()).unwrap_err();
        assert!(e.to_string().contains("a private key"), "{e}");
        let e = PublicKey::from_pem(Path::new("p.pem"), "hello").unwrap_err();
        assert!(e.to_string().contains("no PEM public key"), "{e}");
    }
}
