//! SHA-256 digests as lowercase hex (spec section "Checksums", rules 7.1 and 7.2).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// SHA-256 of `bytes` as 64 lowercase hex digits (what `sha256sum` prints).
///
/// ```
/// assert_eq!(
///     ternary_bundle::format::checksum::sha256_hex(b"abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// SHA-256 of `bytes` as [`sha256_hex`], hashed in blocks of 64 MiB; `done(block)` is called
/// after each block (to release the pages of a mapped file, for instance).
pub fn sha256_hex_blocks(bytes: &[u8], mut done: impl FnMut(&[u8])) -> String {
    let mut hasher = Sha256::new();
    for block in bytes.chunks(64 << 20) {
        hasher.update(block);
        done(block);
    }
    format!("{:x}", hasher.finalize())
}

/// SHA-256 of the file at `path`, read sequentially in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    sha256_reader(&mut file).map_err(|e| Error::io(path, "read", e))
}

/// SHA-256 of everything `reader` yields.
pub fn sha256_reader(reader: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}
