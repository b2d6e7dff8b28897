//! Rule 7.3: the manifest's own digest. `manifest_sha256` is the SHA-256 of `manifest.json`
//! with every occurrence of that value replaced by 64 `0`s, so the manifest is covered by a
//! checksum like every other byte of a bundle.

/// The placeholder the manifest digest is computed over (rule 7.3).
pub const MANIFEST_DIGEST_PLACEHOLDER: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The manifest digest of `bytes` whose `manifest_sha256` value is `value` (rule 7.3): SHA-256
/// of `bytes` with every occurrence of `value` replaced by 64 `0`s.
pub fn manifest_digest(bytes: &[u8], value: &str) -> String {
    // A parsed manifest is UTF-8: the standard library's substring search (linear time) does the
    // replacing; other bytes take the byte-by-byte path below, with the same result.
    if let (Ok(text), false) = (std::str::from_utf8(bytes), value.is_empty()) {
        let zeroed = text.replace(value, MANIFEST_DIGEST_PLACEHOLDER);
        return crate::format::checksum::sha256_hex(zeroed.as_bytes());
    }
    let needle = value.as_bytes();
    let mut zeroed = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if !needle.is_empty() && bytes[i..].starts_with(needle) {
            zeroed.extend_from_slice(MANIFEST_DIGEST_PLACEHOLDER.as_bytes());
            i += needle.len();
        } else {
            zeroed.push(bytes[i]);
            i += 1;
        }
    }
    crate::format::checksum::sha256_hex(&zeroed)
}

/// Sets the `manifest_sha256` of serialized manifest `bytes` (written with the placeholder
/// value) to the digest of those bytes (rule 7.3).
pub fn seal_manifest_bytes(bytes: &[u8]) -> Vec<u8> {
    sealed(bytes).1
}

/// The digest of `bytes` and the bytes with it in place of the placeholder.
pub(crate) fn sealed(bytes: &[u8]) -> (String, Vec<u8>) {
    let digest = crate::format::checksum::sha256_hex(bytes);
    let text = String::from_utf8_lossy(bytes);
    let sealed = text
        .replacen(MANIFEST_DIGEST_PLACEHOLDER, &digest, 1)
        .into_bytes();
    (digest, sealed)
}
